"""Each documented exit code, from the real console script (and the error format)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import typer

from keysafe.cli import exitcodes, output
from keysafe.errors import (
    AuditError,
    BackendUnavailable,
    ConfigError,
    Conflict,
    IntegrityError,
    InvalidName,
    InvalidValue,
    KeysafeError,
    NotFound,
    PermissionDenied,
    RotationError,
    Unsupported,
    ValueTooLarge,
)


@pytest.fixture
def initialised(home: Path) -> Path:
    """A store made beforehand, so first use's key-file notice is not in stderr."""
    from keysafe.config import load_settings
    from keysafe.maintenance import initialise

    initialise(load_settings())
    return home


@pytest.mark.parametrize(("exc", "code"), [
    (InvalidName("x"), 2), (InvalidValue("x"), 2), (ValueTooLarge("x"), 2),
    (NotFound("x"), 3), (PermissionDenied("x"), 4), (Conflict("x"), 5),
    (IntegrityError("x"), 6), (BackendUnavailable("x"), 7), (ConfigError("x"), 8),
    (Unsupported("x"), 9), (AuditError("x"), 10), (RotationError("x"), 11),
    (KeysafeError("x"), 1), (RuntimeError("x"), 1),
])
def test_exit_code_table(exc, code):
    assert exitcodes.exit_code_for(exc) == code


def test_subclass_with_its_own_code_falls_back_along_its_mro():
    class Throttled(BackendUnavailable):
        code = "throttled"

    assert exitcodes.exit_code_for(Throttled("slow down")) == exitcodes.UNAVAILABLE


def test_every_code_is_documented():
    documented = dict(exitcodes.TABLE)
    assert set(exitcodes.BY_ERROR_CODE.values()) <= set(documented)
    docs = (Path(__file__).parents[2] / "docs" / "cli.md").read_text()
    for code, _ in exitcodes.TABLE:
        assert f"| {code} |" in docs


def test_ok_0(ks, put):
    put("k", "v")
    assert ks("get", "k", "--org", "acme").code == 0


def test_usage_2(initialised, ks):
    bad_name = ks("get", "bad name!", "--org", "acme")
    assert bad_name.code == 2
    assert bad_name.err.startswith("keysafe: error: ")
    assert "Traceback" not in bad_name.err
    no_org = ks("put", "k", input="v")
    assert no_org.code == 2
    assert "needs an org" in no_org.err
    unknown = ks("ls", "--bogus")
    assert unknown.code == 2
    assert "keysafe: error: No such option: --bogus" in unknown.err
    assert ks("get").code == 2  # missing argument
    assert ks("get", "k", "--org", "acme", "--version", "zero").code == 2
    assert ks("destroy", "k", "--org", "acme", "--versions", "x", "--yes").code == 2
    assert ks("put", "k", "--org", "acme", "--tag", "novalue", input="v").code == 2
    assert ks("put", "k", "--org", "acme", "--type", "nonsense", input="v").code == 2
    assert ks("audit", "--since", "yesterday-ish").code == 2
    empty = ks("put", "k", "--org", "acme", input="")
    assert empty.code == 2
    assert "empty" in empty.err


def test_out_of_range_and_empty_input_is_2_and_changes_nothing(initialised, kc, put,
                                                                tmp_path: Path):
    """Numbers past what a version, count or date can be, and empty or relative
    segments, are usage errors naming the option, not "unexpected" errors (exit 1),
    and an empty --domain never quietly means the default one."""
    put("k", "v")
    huge = "99999999999999999999999"
    cases = [
        (("get", "k", "--org", "acme", "--version", huge), "--version"),
        (("rollback", "k", huge, "--org", "acme"), "VERSION"),
        (("destroy", "k", "--org", "acme", "--versions", huge, "--yes"), "--versions"),
        (("audit", "--since", "99999999999d"), "--since"),
        (("audit", "--limit", "9223372036854775808"), "--limit"),
        (("audit", "archive", "--before", "99999999999d", "--to",
          str(tmp_path / "a.jsonl")), "--before"),
        (("put", "k2", "--org", "acme", "--domain", ""), "--domain"),
        (("get", "k", "--org", "acme", "--domain", ""), "--domain"),
        (("ls", "--domain", ".."), "--domain"),
        (("audit", "--org", ".."), "--org"),
        (("doctor", "--env", ".."), "--env"),
        (("export", "--org", "acme", "--format", "dotenv", "--output", str(tmp_path)),
         "--output"),
        (("export", "--org", "acme", "--format", "dotenv", "--output",
          str(tmp_path / "no" / "x.env")), "--output"),
    ]
    for args, option in cases:
        r = kc(*args, input="v2")
        assert r.code == 2, (args, r.err)
        assert option in r.err, (args, r.err)
        assert "unexpected" not in r.err
    assert kc("get", "k", "--org", "acme", "--json").out.count('"version": 1') == 1
    assert kc("get", "k2", "--org", "acme").code == 3


def test_value_too_large_2(ks):
    r = ks("put", "big", "--org", "acme", input="x" * (64 * 1024 + 1))
    assert r.code == 2
    assert "the limit is 65536" in r.err


def test_format_check_2_and_opt_out(ks):
    r = ks("put", "openai_api_key", "--org", "acme", input="definitely not a key")
    assert r.code == 2
    assert "OpenAI" in r.err
    ok = ks("put", "openai_api_key", "--org", "acme", "--no-format-check",
            input="definitely not a key")
    assert ok.code == 0


def test_not_found_3(initialised, ks):
    r = ks("get", "nope", "--org", "acme")
    assert r.code == 3
    assert r.err == "keysafe: error: secret keysafe/local/acme/shared/nope not found\n"
    assert r.out == ""
    for cmd in (["status", "nope", "--org", "acme"], ["rm", "nope", "--org", "acme"],
                ["versions", "nope", "--org", "acme"],
                ["rollback", "nope", "1", "--org", "acme"]):
        assert ks(*cmd).code == 3, cmd


def test_permission_denied_4(initialised, cli, monkeypatch):
    # No CLI path denies yet (policy arrives with the server); the mapping must hold.
    from keysafe.manager.manager import SecretManager

    def deny(self, *a, **k):
        raise PermissionDenied("acme may not read this")

    monkeypatch.setattr(SecretManager, "describe", deny)
    r = cli("status", "k", "--org", "acme")
    assert r.exit_code == 4
    assert r.stderr == "keysafe: error: acme may not read this\n"


def test_conflict_5(ks, put):
    put("k", "v")
    r = ks("put", "k", "--org", "acme", "--expected-version", "0", input="w")
    assert r.code == 5
    assert "already exists" in r.err
    restore = ks("restore", "k", "--org", "acme")
    assert restore.code == 5
    assert "not deleted" in restore.err


def test_integrity_6(ks, put, home: Path):
    put("k", "v")
    with sqlite3.connect(home / "keysafe.db") as db:
        ct = db.execute("SELECT ciphertext FROM secrets").fetchone()[0]
        db.execute("UPDATE secrets SET ciphertext = ?",
                   (ct[:-1] + bytes([ct[-1] ^ 1]),))
    r = ks("get", "k", "--org", "acme")
    assert r.code == 6
    assert r.out == ""
    assert "failed verification" in r.err


def test_backend_unavailable_7(ks, home: Path):
    ks("init")
    (home / "keysafe.db").unlink()
    (home / "keysafe.db").mkdir()  # SQLite cannot open a directory
    r = ks("get", "k", "--org", "acme")
    assert r.code == 7
    assert "cannot open SQLite store" in r.err


def test_config_8(ks):
    bad_key = ks("get", "k", "--org", "acme", env={"KEYSAFE_MASTER_KEY": "not base64!"})
    assert bad_key.code == 8
    assert "KEYSAFE_MASTER_KEY" in bad_key.err
    # Outside local/test no key file is made implicitly.
    prod = ks("get", "k", "--org", "acme", env={"KEYSAFE_ENV": "production"})
    assert prod.code == 8
    assert "no master key" in prod.err
    bad_setting = ks("ls", env={"KEYSAFE_MAX_VERSIONS": "many"})
    assert bad_setting.code == 8
    assert "max_versions" in bad_setting.err


def test_unsupported_9(ks):
    r = ks("rekey", env={"KEYSAFE_BACKEND": "memory"})
    assert r.code == 9
    assert "memory backend" in r.err


def test_unexpected_1_reports_type_only(cli, monkeypatch):
    from keysafe.manager.manager import SecretManager

    def boom(self, *a, **k):
        raise RuntimeError("something with a secret-ish detail")

    monkeypatch.setattr(SecretManager, "describe", boom)
    r = cli("status", "k", "--org", "acme")
    assert r.exit_code == 1
    assert "unexpected RuntimeError" in r.stderr
    assert "secret-ish" not in r.stderr
    assert "Traceback" not in r.stderr


def test_json_errors_are_objects_on_stderr(initialised, ks):
    r = ks("get", "nope", "--org", "acme", "--json")
    assert r.code == 3
    assert r.out == ""
    assert json.loads(r.err) == {
        "error": "not_found", "message": "secret keysafe/local/acme/shared/nope not found",
        "exit_code": 3}
    s = ks("status", "nope", "--org", "acme", "--json")
    assert json.loads(s.err)["error"] == "not_found"
    u = ks("ls", "--bogus", "--json")
    assert u.code == 2
    assert json.loads(u.err)["error"] == "usage"


def test_declined_confirmation_1_changes_nothing(ks, put):
    put("k", "v")
    r = ks("rm", "k", "--org", "acme", "--force", input="n\n")
    assert r.code == 1
    assert "cancelled" in r.err
    no_input = ks("rm", "k", "--org", "acme", "--force")  # EOF at the prompt
    assert no_input.code == 1
    assert ks("get", "k", "--org", "acme").out == "v"


def test_decorator_passes_typer_exits_through():
    @output.command
    def body(as_json: bool = False) -> None:
        raise typer.Exit(7)

    with pytest.raises(typer.Exit) as info:
        body()
    assert info.value.exit_code == 7
