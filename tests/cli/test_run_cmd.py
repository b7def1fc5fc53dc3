"""``keysafe run``: the child's environment is exactly the inherited one plus the scope's
secrets (references resolved), its exit status and signals come through, ``--watch``
restarts it on a change. The real console script in a subprocess (its fast path) and,
where said, the typer command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keysafe import SecretManager, load_settings

KEYSAFE = str(Path(sys.executable).parent / "keysafe")
Ks = Callable[..., Any]  # the conftest fixtures' runners, returning Run
Run = Any

OPENAI = "sk-" + "a1" * 16
OPENAI_2 = "sk-" + "b2" * 16
CANARY = "canary-\u00e9\u2603-7f3a9c"
HOSTILE = f"it's \"quoted\" $HOME `x` \\n\\\\ {CANARY}\nsecond line\n# not a comment\n  "
PY = sys.executable


def child_env(r: Run) -> dict[str, str]:
    """The environment ``env -0`` printed."""
    assert r.code == 0, r.err
    out: dict[str, str] = {}
    for item in r.out.split("\0"):
        if item:
            k, _, v = item.partition("=")
            out[k] = v
    return out


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """What the ``ks`` fixture gives the keysafe process (so: what the child inherits)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra or {})
    return env


def without(env: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in names}


@pytest.fixture
def scope(put: Callable[..., Run]) -> None:
    put("openai_api_key", OPENAI)
    put("db-pass.x", HOSTILE)
    put("other_secret", "in another domain", "--domain", "billing")
    put("openai_api_key", "sk-" + "c3" * 16, org="globex")


def test_child_gets_exactly_the_scope(ks: Ks, scope: None) -> None:
    r = ks("run", "--org", "acme", "--", "env", "-0")
    got = child_env(r)
    inherited = subprocess_env()
    inherited["PYTHONPYCACHEPREFIX"] = got["PYTHONPYCACHEPREFIX"]
    # Python may coerce a C locale by setting LC_CTYPE before os.environ is read.
    ignore = ["LC_CTYPE"] if "LC_CTYPE" not in inherited else []
    assert without(got, *ignore) == {**inherited, "OPENAI_API_KEY": OPENAI,
                                     "DB_PASS_X": HOSTILE}
    assert CANARY not in r.err


def test_domain_scope(ks: Ks, scope: None) -> None:
    got = child_env(ks("run", "--org", "acme", "--domain", "billing", "--", "env", "-0"))
    assert got["OTHER_SECRET"] == "in another domain"
    assert "OPENAI_API_KEY" not in got or got["OPENAI_API_KEY"] == os.environ.get(
        "OPENAI_API_KEY")


def test_exit_status_passes_through(ks: Ks, scope: None) -> None:
    assert ks("run", "--org", "acme", "--", "sh", "-c", "exit 7").code == 7
    assert ks("run", "--org", "acme", "--", "true").code == 0
    # Killed by a signal: 128 + N, like a shell.
    assert ks("run", "--org", "acme", "--", "sh", "-c", "kill -TERM $$").code == 143
    assert ks("run", "--", "sh", "-c", "kill -KILL $$").code == 137


def test_command_not_found_and_not_executable(ks: Ks, tmp_path: Path) -> None:
    r = ks("run", "--", "no-such-command-here")
    assert r.code == 127
    assert "command not found: no-such-command-here" in r.err
    f = tmp_path / "plain.txt"
    f.write_text("not a program")
    assert ks("run", "--", str(f)).code == 126


def test_only_and_mapping_files(ks: Ks, scope: None, tmp_path: Path) -> None:
    got = child_env(ks("run", "--org", "acme", "--only", "db-pass.x", "--", "env", "-0"))
    assert got["DB_PASS_X"] == HOSTILE
    assert got.get("OPENAI_API_KEY") == os.environ.get("OPENAI_API_KEY")

    toml = tmp_path / "map.toml"
    toml.write_text('openai_api_key = "LLM_KEY"\n"db-pass.x" = false\n')
    got = child_env(ks("run", "--org", "acme", "--map", str(toml), "--", "env", "-0"))
    assert got["LLM_KEY"] == OPENAI
    assert "DB_PASS_X" not in got

    yml = tmp_path / "map.yaml"
    yml.write_text("db-pass.x: DATABASE_PASSWORD\n")
    got = child_env(ks("run", "--org", "acme", "--map", str(yml), "--", "env", "-0"))
    assert got["DATABASE_PASSWORD"] == HOSTILE
    assert got["OPENAI_API_KEY"] == OPENAI

    bad = tmp_path / "bad.toml"
    bad.write_text('openai_api_key = "not a var"\n')
    r = ks("run", "--org", "acme", "--map", str(bad), "--", "true")
    assert r.code == 2
    assert "not an environment variable name" in r.err


def test_missing_only_name_is_not_found(ks: Ks, scope: None) -> None:
    r = ks("run", "--org", "acme", "--only", "nope", "--", "true")
    assert r.code == 3


def test_two_secrets_one_variable_is_refused(ks: Ks, put: Callable[..., Run]) -> None:
    put("a-b", CANARY)
    put("a_b", CANARY + "2")
    r = ks("run", "--org", "acme", "--", "true")
    assert r.code == 2
    assert "A_B" in r.err
    assert CANARY not in r.err


def test_references_in_environment_and_env_file(ks: Ks, scope: None,
                                                tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("FROM_FILE=keysafe://acme/shared/db-pass.x\n"
                      "PLAIN='kept as written ${HOME}'\n"
                      "GLOBEX=keysafe://globex/openai_api_key\n")
    got = child_env(ks("run", "--env-file", str(dotenv), "--", "env", "-0",
                       env={"MY_KEY": "keysafe://acme/openai_api_key",
                            "NOT_A_REF": "xkeysafe://acme/openai_api_key"}))
    assert got["MY_KEY"] == OPENAI
    assert got["FROM_FILE"] == HOSTILE
    assert got["PLAIN"] == "kept as written ${HOME}"
    assert got["GLOBEX"] == "sk-" + "c3" * 16
    assert got["NOT_A_REF"] == "xkeysafe://acme/openai_api_key"


def test_a_reference_to_one_field_of_a_json_secret(ks: Ks, scope: None) -> None:
    """Spec 003 keeps several keys in one JSON secret and reads one with ESO's
    ``property: SECRET_KEY`` or ``jq -r .SECRET_KEY``: ``keysafe://org/app#SECRET_KEY``."""
    app = '{"SECRET_KEY": "sk-field-' + CANARY + '", "PORT": 5432, "NESTED": {"a": 1}}'
    assert ks("put", "app", "--org", "acme", "--credentials", input=app).code == 0
    got = child_env(ks("run", "--", "env", "-0", env={
        "SECRET_KEY": "keysafe://acme/app#SECRET_KEY",
        "DB_PORT": "keysafe://acme/shared/app#PORT", "WHOLE": "keysafe://acme/app"}))
    assert got["SECRET_KEY"] == "sk-field-" + CANARY
    assert got["DB_PORT"] == "5432"
    assert json.loads(got["WHOLE"])["PORT"] == 5432
    refused = []
    for ref, code, message in [
            ("app#NOPE", 3, "app has no credential field 'NOPE'"),
            ("app#NESTED", 2, "is not a single value"),
            ("openai_api_key#k", 2, "does not hold JSON credentials"),
            ("app#", 2, "the field after '#' is empty")]:
        r = ks("run", "--", "true", env={"X": f"keysafe://acme/{ref}"})
        assert (r.code, message in r.err) == (code, True), (ref, r.err)
        refused.append(r)
    for r in refused:
        assert CANARY not in r.err


def test_bad_and_missing_references(ks: Ks, scope: None) -> None:
    r = ks("run", "--", "true", env={"X": "keysafe://acme/a/b/c"})
    assert r.code == 2
    assert "environment variable X" in r.err
    r = ks("run", "--", "true", env={"X": "keysafe://acme/nope"})
    assert r.code == 3
    r = ks("run", "--env-file", "/nonexistent/.env", "--", "true")
    assert r.code == 2


def test_usage_errors(kc: Ks) -> None:
    """In process: each is refused before anything starts."""
    assert kc("run", "--org", "acme").code == 2  # no command
    assert kc("run", "--interval", "0", "--org", "a", "--watch", "--", "true").code == 2
    assert kc("run", "--only", "x", "--", "true").code == 2  # --only needs --org
    assert kc("run", "--on-change", "SIGNOPE", "--org", "a", "--", "true").code == 2
    assert kc("run", "--token-env", "T", "--", "true").code == 2  # needs --via-server
    r = kc("run", "--help")
    assert r.code == 0
    assert "--watch" in r.out


def test_typer_path_same_behaviour(typer_path: Ks, scope: None) -> None:
    r = typer_path("run", "--org", "acme", "--", "sh", "-c",
                   'test "$OPENAI_API_KEY" = "$0" && exit 5', OPENAI)
    assert r.code == 5, r.err
    # Without `--`, the command starts at the first argument that is not an option.
    assert typer_path("run", "--org", "acme", "sh", "-c", "exit 4").code == 4


# -- signals and --watch: a real keysafe process and a child that reports ----------------

CHILD = r"""
import os, signal, sys, time
log = sys.argv[1]
def note(text):
    with open(log, "a") as fh:
        fh.write(text + "\n")
def on(sig, frame):
    note("got " + signal.Signals(sig).name)
    if sig != signal.SIGHUP:
        sys.exit(40 + sig)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, on)
note("start " + os.environ.get("OPENAI_API_KEY", "-"))
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(99)
"""


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def wait_for(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def start(home: Path, pycache: str, *args: str) -> subprocess.Popen[bytes]:
    env = subprocess_env({"PYTHONPYCACHEPREFIX": pycache})
    return subprocess.Popen([KEYSAFE, "run", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_are_forwarded(home: Path, pycache: str, scope: None, tmp_path: Path,
                               sig: signal.Signals) -> None:
    log = tmp_path / "child.log"
    p = start(home, pycache, "--org", "acme", "--", PY, "-c", CHILD, str(log))
    try:
        wait_for(lambda: any(x.startswith("start") for x in lines(log)))
        p.send_signal(sig)
        wait_for(lambda: f"got {sig.name}" in lines(log))
        if sig == signal.SIGHUP:  # the child keeps running; stop it
            p.send_signal(signal.SIGTERM)
            expected = 40 + signal.SIGTERM
        else:
            expected = 40 + sig
        assert p.wait(timeout=30) == expected
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert lines(log)[0] == f"start {OPENAI}"


def restarted_on_change(home: Path, pycache: str, log: Path, interval: str,
                        change: Callable[[SecretManager], object], *scope: str) -> None:
    """``run --watch`` (with ``scope``'s options) of the reporting child: ``change``
    (given a manager on the same store) puts OPENAI_2, and the child is restarted with
    it; no value on stderr."""
    p = start(home, pycache, "--org", "acme", *scope, "--watch", "--interval", interval,
              "--grace", "5", "--", PY, "-c", CHILD, str(log))
    try:
        wait_for(lambda: lines(log) == [f"start {OPENAI}"])
        with SecretManager.from_settings(load_settings()) as mgr:
            change(mgr)
        wait_for(lambda: f"start {OPENAI_2}" in lines(log), timeout=60)
        assert lines(log) == [f"start {OPENAI}", "got SIGTERM", f"start {OPENAI_2}"]
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 40 + signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = p.stderr.read().decode() if p.stderr else ""
    assert "secrets changed (openai_api_key); restarting the command" in err
    assert OPENAI_2 not in err
    assert OPENAI not in err


def test_watch_restarts_on_change(home: Path, pycache: str, scope: None,
                                  tmp_path: Path) -> None:
    restarted_on_change(home, pycache, tmp_path / "child.log", "0.5",
                        lambda mgr: mgr.put("openai_api_key", OPENAI_2, "acme"))


def test_watch_with_shared_restarts_when_the_domain_takes_a_name_over(
        home: Path, pycache: str, scope: None, tmp_path: Path) -> None:
    """``--with-shared``: OPENAI_API_KEY comes from the shared domain until the billing
    domain gets its own (version 1 too): the snapshot tells the two apart by domain."""
    restarted_on_change(home, pycache, tmp_path / "child.log", "0.5",
                        lambda mgr: mgr.put("openai_api_key", OPENAI_2, "acme",
                                            domain="billing"),
                        "--domain", "billing", "--with-shared")


def test_watch_on_change_signal(home: Path, pycache: str, scope: None,
                                tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    p = start(home, pycache, "--org", "acme", "--watch", "--interval", "0.5",
              "--on-change", "SIGHUP", "--", PY, "-c", CHILD, str(log))
    try:
        wait_for(lambda: lines(log) == [f"start {OPENAI}"])
        with SecretManager.from_settings(load_settings()) as mgr:
            mgr.put("db-pass.x", "changed", "acme")
        wait_for(lambda: "got SIGHUP" in lines(log))
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 40 + signal.SIGTERM
        assert lines(log) == [f"start {OPENAI}", "got SIGHUP", "got SIGTERM"]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_destroyed_current_version_is_left_out_not_fatal(ks: Ks, scope: None,
                                                           put: Callable[..., Run]) -> None:
    """One secret whose current version was destroyed (a value that can never be read
    again) must not stop every workload of the org: it is left out, by name."""
    from keysafe import SecretManager

    put("gone", "old-value")
    put("gone", "shredded-value")
    with SecretManager.from_env() as mgr:  # the library allows it, as Vault does; the CLI not
        mgr.destroy("gone", [2], "acme")
    r = ks("run", "--org", "acme", "--", "env", "-0")
    assert r.code == 0, r.err
    got = child_env(r)
    assert got["OPENAI_API_KEY"] == OPENAI
    assert "GONE" not in got
    assert "left out gone: no current value to read" in r.err
    # Asked for by name, it is an error.
    assert ks("run", "--org", "acme", "--only", "gone", "--", "true").code == 3


def test_watch_on_postgresql_is_told_without_waiting_for_the_interval(
        home: Path, pycache: str, tmp_path: Path, pg_server: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL a committed change (NOTIFY) brings the version check forward: the
    command restarts with the new value although --interval is an hour. Another org's
    change is not the command's (it would restart it with nothing new)."""
    import base64

    db = pg_server.create_db()
    try:
        monkeypatch.setenv("KEYSAFE_DATABASE_URL", pg_server.url(db))
        monkeypatch.setenv("KEYSAFE_DB_AUTO_UPGRADE", "1")
        monkeypatch.setenv("KEYSAFE_MASTER_KEY",
                           "k1:" + base64.b64encode(os.urandom(32)).decode())
        with SecretManager.from_settings(load_settings()) as mgr:
            mgr.put("openai_api_key", OPENAI, "acme")

        def change(mgr: SecretManager) -> None:
            mgr.put("openai_api_key", "sk-" + "c3" * 16, "globex")
            mgr.put("openai_api_key", OPENAI_2, "acme")

        restarted_on_change(home, pycache, tmp_path / "child.log", "3600", change)
    finally:
        pg_server.drop_db(db)
