"""A canary value written through the CLI appears nowhere but on `get`'s stdout."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

CANARY = "canary-" + secrets.token_hex(12)


def test_canary_only_on_get_stdout(ks, kc, home: Path, monkeypatch, caplog):
    """Writes and failures run as real processes; the many read-only commands run in
    process (same app, faster), where log records are checked too."""
    audit_file = home.parent / "audit.jsonl"
    monkeypatch.setenv("KEYSAFE_AUDIT_FILE", str(audit_file))
    seen = []

    def run(*args, input=None, real=True):
        r = (ks if real else kc)(*args, input=input)
        seen.append((args, r))
        return r

    assert run("init").code == 0
    assert run("put", "k", "--org", "acme", "--description", "canary test",
               input=CANARY).code == 0
    assert run("put", "k", "--org", "acme", "--value", CANARY + "-2").code == 0
    assert run("put", "k", "--org", "acme", input=CANARY + "-3").code == 0
    assert run("put", "creds", "--org", "acme", "--credentials",
               input=json.dumps({"token": CANARY})).code == 0
    assert run("put", "creds", "--org", "acme", "--credentials", "--merge",
               input=json.dumps({"other": CANARY + "-4"})).code == 0
    # Failures that hold the value in hand: none may echo it.
    assert run("put", "k", "--org", "acme", "--expected-version", "1",
               input=CANARY).code == 5
    assert run("put", "openai_api_key", "--org", "acme", input=CANARY).code == 2
    assert run("put", "creds", "--org", "acme", "--credentials",
               input='{"token": "' + CANARY + '", broken').code == 2
    assert run("put", "creds", "--org", "acme", "--credentials",
               input=json.dumps([CANARY])).code == 2
    assert run("put", "bad name", "--org", "acme", "--value", CANARY).code == 2
    assert run("put", "big", "--org", "acme", input=CANARY * 5000).code == 2
    assert run("put", "k", "--org", "acme", "--json", input=CANARY + "-5").code == 0

    for args in (["status", "k", "--org", "acme"], ["status", "k", "--org", "acme", "--json"],
                 ["ls"], ["ls", "--json", "--deleted"], ["versions", "k", "--org", "acme"],
                 ["versions", "k", "--org", "acme", "--json"],
                 ["rollback", "k", "1", "--org", "acme"],
                 ["rollback", "k", "2", "--org", "acme", "--json"],
                 ["rm", "k", "--org", "acme"], ["restore", "k", "--org", "acme", "--json"],
                 ["destroy", "k", "--org", "acme", "--versions", "1", "--yes"],
                 ["get", "k", "--org", "acme", "--version", "1"],  # destroyed: error path
                 ["get", "creds", "--org", "acme", "--field", "missing"],
                 ["audit"], ["audit", "--json"], ["audit", "verify"], ["doctor"],
                 ["doctor", "--json"], ["rekey"], ["rekey", "--json"],
                 ["test-secrets", "--cleanup"], ["test-secrets", "--json"]):
        r = run(*args, real=args[0] in ("get", "rekey"))
        assert r.code in (0, 3), (args, r.err)

    leaks = [(args, "stdout" if CANARY in r.out else "stderr")
             for args, r in seen if CANARY in r.out + r.err]
    assert leaks == []

    # get is the one path that shows it, on stdout only.
    for args in (["get", "k", "--org", "acme"], ["get", "k", "--org", "acme", "--json"],
                 ["get", "creds", "--org", "acme", "--field", "token"]):
        r = ks(*args)
        assert r.code == 0
        assert CANARY in r.out
        assert CANARY not in r.err

    assert CANARY not in caplog.text
    assert CANARY not in audit_file.read_text()
    assert CANARY not in ks("audit", "--json").out
    for f in home.iterdir():
        assert CANARY.encode() not in f.read_bytes(), f


def test_canary_via_prompt_is_not_echoed(cli, monkeypatch):
    from keysafe.cli import output

    monkeypatch.setattr(output, "stdin_is_tty", lambda: True)
    r = cli("put", "k", "--org", "acme", input=f"{CANARY}\n{CANARY}\n")
    assert r.exit_code == 0
    assert CANARY not in r.stdout + r.stderr
