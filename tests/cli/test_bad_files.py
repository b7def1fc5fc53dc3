"""Files keysafe cannot use: not UTF-8 text, in a directory that does not exist, or a
KEYSAFE_HOME that is a file. Each is one ``keysafe: error:`` line naming the file and
the problem, with the documented exit status (2 for input, 8 for a setting), never an
"unexpected" exit 1 (which ``scan`` uses for "secrets found"), and nothing is changed.
The real console script, in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli.conftest import Ks, Run

from keysafe.cli import exitcodes
from keysafe.config import load_settings
from keysafe.errors import ConfigError

NOT_UTF8 = b"\xff\xfe not text \x80\n"


def error_line(r: Run) -> str:
    """The one error line: no traceback, not an unexpected error."""
    lines = r.err.strip().splitlines()
    assert lines, r
    assert "Traceback" not in r.err
    assert "unexpected" not in r.err
    return lines[-1]


def json_error(r: Run) -> dict[str, object]:
    doc = json.loads(r.err.strip().splitlines()[-1])
    assert isinstance(doc, dict)
    return doc


@pytest.fixture
def store(ks: Ks, home: Path) -> Ks:
    """``keysafe init`` and one secret, as in the reports."""
    assert ks("init").code == 0
    r = ks("put", "foo", "--org", "acme", input="sk\n")
    assert r.code == 0, r.err
    return ks


def audit_count(ks: Ks) -> int:
    r = ks("audit", "--json")
    assert r.code == 0, r.err
    return len([line for line in r.out.splitlines() if line.strip()])


# -- A. files that are not UTF-8 text ------------------------------------------------


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_run_with_a_mapping_file_that_is_not_utf8_exits_2(store: Ks, tmp_path: Path,
                                                          suffix: str) -> None:
    mapping = tmp_path / f"f{suffix}"
    mapping.write_bytes(b"\xff")
    marker = tmp_path / "ran"
    r = store("run", "--org", "acme", "--map", str(mapping), "--",
              "sh", "-c", f"touch {marker}")
    assert r.code == exitcodes.USAGE, r
    line = error_line(r)
    assert str(mapping) in line
    assert "not UTF-8 text" in line
    assert not marker.exists()  # the command never ran
    assert mapping.read_bytes() == b"\xff"


def test_export_with_a_mapping_file_that_is_not_utf8_exits_2(store: Ks,
                                                             tmp_path: Path) -> None:
    mapping = tmp_path / "f.toml"
    mapping.write_bytes(b'foo = "FOO"\n' + NOT_UTF8)
    r = store("export", "--org", "acme", "--format", "dotenv", "--map", str(mapping))
    assert r.code == exitcodes.USAGE, r
    line = error_line(r)
    assert str(mapping) in line
    assert "not UTF-8 text (line 2)" in line
    assert r.out == ""  # nothing exported, no value shown
    r = store("export", "--org", "acme", "--format", "dotenv", "--map", str(mapping),
              "--json")
    assert r.code == exitcodes.USAGE
    assert json_error(r)["exit_code"] == exitcodes.USAGE


def test_a_mapping_file_with_windows_newlines_still_reads(store: Ks,
                                                          tmp_path: Path) -> None:
    mapping = tmp_path / "f.toml"
    mapping.write_bytes(b'foo = "MY_FOO"\r\n')
    r = store("export", "--org", "acme", "--format", "dotenv", "--map", str(mapping))
    assert r.code == 0, r.err
    assert "MY_FOO=" in r.out


def test_scan_with_a_baseline_that_is_not_utf8_exits_2_not_1(ks: Ks, home: Path,
                                                             tmp_path: Path) -> None:
    baseline = tmp_path / "f"
    baseline.write_bytes(NOT_UTF8)
    r = ks("scan", ".", "--baseline", str(baseline))
    assert r.code == exitcodes.USAGE, r
    line = error_line(r)
    assert str(baseline) in line
    assert "not UTF-8 text" in line
    assert baseline.read_bytes() == NOT_UTF8


def test_audit_verify_with_an_archive_that_is_not_utf8_exits_2(store: Ks,
                                                               tmp_path: Path) -> None:
    bad = tmp_path / "f"
    bad.write_bytes(b"\xff")
    before = audit_count(store)
    r = store("audit", "verify", "--archive", str(bad))
    assert r.code == exitcodes.USAGE, r
    line = error_line(r)
    assert f"{bad} line 1 is not UTF-8 text" in line
    assert audit_count(store) == before


def test_audit_verify_names_the_line_of_an_archive_that_is_not_utf8(
        store: Ks, tmp_path: Path) -> None:
    dest = tmp_path / "a.jsonl"
    r = store("audit", "archive", "--before", "0s", "--to", str(dest))
    assert r.code == 0, r.err
    good = store("audit", "verify", "--archive", str(dest))
    assert good.code == 0, good.err
    n = len(dest.read_bytes().splitlines())
    with dest.open("ab") as fh:
        fh.write(NOT_UTF8)
    r = store("audit", "verify", "--archive", str(dest), "--json")
    assert r.code == exitcodes.USAGE, r
    err = json_error(r)
    assert err["exit_code"] == exitcodes.USAGE
    assert f"{dest} line {n + 1} is not UTF-8 text" in str(err["message"])


def trust_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "trust.yaml"
    path.write_text("trusts:\n"
                    "  - name: ci\n"
                    "    issuer: https://issuer.invalid\n"
                    "    audience: keysafe\n"
                    "    subject: repo:acme/app:ref:refs/heads/main\n"
                    "    roles: [service]\n"
                    "    scopes: [acme]\n")
    return path


def test_trust_check_with_a_token_file_that_is_not_utf8_exits_2(ks: Ks, home: Path,
                                                                tmp_path: Path) -> None:
    trust = trust_yaml(tmp_path)
    tok = tmp_path / "tok"
    tok.write_bytes(b"eyJ\xff\xfe.secret-part")
    r = ks("trust", "check", str(tok), "--file", str(trust))
    assert r.code == exitcodes.USAGE, r
    line = error_line(r)
    assert str(tok) in line
    assert "not UTF-8 text" in line
    assert "secret-part" not in r.err + r.out
    assert "0xff" not in r.err  # not even one byte of the token


def test_trust_check_with_stdin_that_is_not_utf8_exits_2(ks: Ks, home: Path,
                                                         tmp_path: Path) -> None:
    trust = trust_yaml(tmp_path)
    for env in ({}, {"LC_ALL": "C"}):  # strict, and surrogateescape, stdin decoding
        r = ks("trust", "check", "-", "--file", str(trust), "--json",
               input=b"eyJ\xff.secret-part", env=env)
        assert r.code == exitcodes.USAGE, r
        err = json_error(r)
        assert err["error"] == "invalid_value"
        assert "stdin is not UTF-8 text" in str(err["message"])
        assert "secret-part" not in r.err + r.out


# -- B. file-system errors -----------------------------------------------------------


def test_scan_report_into_a_missing_directory_exits_2_not_1(ks: Ks, home: Path,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "missing-dir" / "report.json"
    r = ks("scan", ".", "-o", str(out))
    assert r.code == exitcodes.USAGE, r
    line = error_line(r)
    assert str(out) in line
    assert "does not exist" in line
    assert not out.parent.exists()


def test_scan_report_under_a_file_exits_2(ks: Ks, home: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "f"
    blocker.write_text("x\n")
    r = ks("scan", ".", "-o", str(blocker / "report.json"), "--json")
    assert r.code == exitcodes.USAGE, r
    err = json_error(r)
    assert err["exit_code"] == exitcodes.USAGE
    assert f"{blocker} is not a directory" in str(err["message"])
    assert blocker.read_text() == "x\n"


def test_scan_report_that_cannot_be_written_exits_2(ks: Ks, home: Path,
                                                     tmp_path: Path) -> None:
    """The directory exists, but the file cannot be written (here, a link to a place
    that does not exist): caught when writing, still exit 2 and naming the file."""
    link = tmp_path / "report.json"
    link.symlink_to(tmp_path / "gone" / "report.json")
    r = ks("scan", ".", "-o", str(link))
    assert r.code == exitcodes.USAGE, r
    line = error_line(r)
    assert f"cannot write the report to {link}" in line
    assert not (tmp_path / "gone").exists()


def test_update_baseline_under_a_file_exits_2(ks: Ks, home: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "f"
    blocker.write_text("x\n")
    target = blocker / "baseline.json"
    r = ks("scan", ".", "--baseline", str(target), "--update-baseline")
    assert r.code == exitcodes.USAGE, r
    line = error_line(r)
    assert str(target) in line
    assert f"{blocker} is not a directory" in line
    assert blocker.read_text() == "x\n"


@pytest.mark.parametrize("argv", [
    ("init",),
    ("ls", "--org", "acme"),
    ("get", "foo", "--org", "acme"),  # the fast path
    ("audit", "verify"),
])
def test_keysafe_home_that_is_a_file_exits_8(ks: Ks, tmp_path: Path,
                                             argv: tuple[str, ...]) -> None:
    hf = tmp_path / "hf"
    hf.write_text("x\n")
    r = ks(*argv, env={"KEYSAFE_HOME": str(hf)})
    assert r.code == exitcodes.CONFIG, r
    line = error_line(r)
    assert f"KEYSAFE_HOME {hf} is not a directory" in line
    assert hf.read_text() == "x\n"
    r = ks(*argv, "--json", env={"KEYSAFE_HOME": str(hf)})
    assert r.code == exitcodes.CONFIG
    assert json_error(r)["error"] == "config_error"


def test_keysafe_home_under_a_file_exits_8(ks: Ks, tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    hf.write_text("x\n")
    r = ks("init", env={"KEYSAFE_HOME": str(hf / "sub")})
    assert r.code == exitcodes.CONFIG, r
    line = error_line(r)
    assert f"KEYSAFE_HOME {hf / 'sub'} cannot be created: {hf} is not a directory" in line
    assert hf.read_text() == "x\n"


def test_a_home_is_not_checked_through_a_server(ks: Ks, tmp_path: Path) -> None:
    """With KEYSAFE_SERVER_URL the CLI never opens the home: a bad one does not stop
    it (the unreachable server does: exit 7, not 8)."""
    hf = tmp_path / "hf"
    hf.write_text("x\n")
    r = ks("get", "foo", "--org", "acme", env={
        "KEYSAFE_HOME": str(hf), "KEYSAFE_SERVER_URL": "http://127.0.0.1:9",
        "KEYSAFE_TOKEN": "ks_abc_def"})
    assert r.code == exitcodes.UNAVAILABLE, r


def test_load_settings_refuses_a_home_that_is_a_file(home: Path, tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    hf.write_text("x\n")
    with pytest.raises(ConfigError, match=r"KEYSAFE_HOME .* is not a directory"):
        load_settings({"KEYSAFE_HOME": str(hf)})
    # A home that does not exist yet is fine: it is created on first use.
    s = load_settings({"KEYSAFE_HOME": str(tmp_path / "new" / "home")})
    assert s.home == tmp_path / "new" / "home"
    assert not (tmp_path / "new").exists()


def test_put_still_works_after_the_checks(store: Ks) -> None:
    """The happy path is untouched: the secret the fixture stored reads back."""
    r = store("get", "foo", "--org", "acme")
    assert r.code == 0, r.err
    assert r.out.strip() == "sk"

