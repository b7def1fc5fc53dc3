"""``keysafe audit report``'s counting (keysafe.manager.access) on the memory and
embedded stores, and the command itself. PostgreSQL's is in tests/postgres."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keysafe import NotFound, SecretManager
from keysafe.cli.app import app
from keysafe.manager.access import access_report

CANARY = "canary-report-" + "9f8e7d6c5b4a"


@pytest.fixture(params=["memory", "sqlite"])
def mgrs(request: pytest.FixtureRequest, tmp_home: Path) -> Iterator[dict[str, SecretManager]]:
    """Managers for three identities on one store (the memory store: one backend)."""
    first = SecretManager.from_env(backend=request.param)
    made = {"ops": first}
    for actor in ("svc-a", "intruder", "old-job"):
        made[actor] = (SecretManager(first.backend, audit=first.audit, actor=actor)
                       if request.param == "memory"
                       else SecretManager.from_env(backend="sqlite"))
        made[actor].actor = actor
    first.actor = "ops"
    yield made
    for m in made.values():
        m.close()


def busy_window(m: dict[str, SecretManager]) -> datetime:
    """old-job reads before the window; then, in it, svc-a reads three of four secrets,
    asks three times for names that do not exist and checks a key (not a failure);
    old-job reads one and is served the fourth stale; intruder is denied six times,
    and one read fails an integrity check."""
    for i in range(4):
        m["ops"].put(f"s{i}", f"{CANARY}-{i}", "acme")
    m["old-job"].get("s0", "acme", fresh=True)
    m["old-job"].audit.flush()
    time.sleep(0.01)
    since = datetime.now(UTC)
    time.sleep(0.01)
    for i in range(3):
        m["svc-a"].get(f"s{i}", "acme", fresh=True)
    m["svc-a"].get("s1", "acme", fresh=True)
    for i in range(3):
        with pytest.raises(NotFound):
            m["svc-a"].get(f"nope{i}", "acme")
    m["svc-a"].record("check_key", m["ops"].path("s0", "acme"), "valid", org="acme")
    m["old-job"].get("s0", "acme", fresh=True)
    path = m["ops"].path("s3", "acme")
    m["old-job"].record("read", path, "stale", org="acme")  # a stale read hands it out
    for _ in range(6):
        m["intruder"].record("read_value", path, "denied", org="acme")
    m["intruder"].record("read", path, "integrity_error", org="acme")
    for actor in ("svc-a", "old-job", "intruder"):
        m[actor].audit.flush()  # records of reads are written in batches
    return since


def test_counts_and_findings(mgrs: dict[str, SecretManager]) -> None:
    since = busy_window(mgrs)
    rep = access_report(mgrs["ops"], since=since, org="acme", max_denied=5,
                        max_not_found=3, max_secrets=3)
    by = {a.actor: a for a in rep.actors}
    assert set(by) == {"svc-a", "intruder", "old-job"}
    svc = by["svc-a"]
    assert (svc.reads, svc.secrets_read, svc.not_found, svc.failed, svc.new) == (
        4, 3, 3, 0, True)
    assert (by["intruder"].denied, by["intruder"].failed, by["intruder"].reads) == (6, 1, 0)
    assert (by["old-job"].reads, by["old-job"].secrets_read, by["old-job"].new) == (2, 2, False)
    kinds = {(f.kind, f.actor) for f in rep.findings}
    assert kinds == {("integrity", None), ("denials", "intruder"), ("not_found", "svc-a"),
                     ("breadth", "svc-a"), ("new_actor", "svc-a"), ("new_actor", "intruder")}
    assert rep.unread == ()  # s3 was served stale: handed out all the same
    assert rep.secrets == 4
    assert rep.totals["denied"] == 6
    assert CANARY not in json.dumps(rep.to_dict())
    # Another org's window is empty; higher thresholds drop those findings; the
    # identity running the report is never new to itself.
    assert access_report(mgrs["ops"], since=since, org="globex").actors == ()
    calm = access_report(mgrs["ops"], since=since, org="acme", max_denied=7,
                         max_secrets=4, unread=False)
    assert {f.kind for f in calm.findings} == {"integrity", "new_actor"}
    assert calm.unread is None
    itself = access_report(mgrs["svc-a"], since=since, org="acme", unread=False)
    assert ("new_actor", "svc-a") not in {(f.kind, f.actor) for f in itself.findings}


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_the_command(tmp_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYSAFE_ACTOR", "tester")
    for n in ("a", "b"):
        assert run("put", n, "--org", "acme", "--value", f"{CANARY}-{n}")[0] == 0
    assert run("get", "a", "--org", "acme")[0] == 0
    code, out, err = run("audit", "report", "--json")
    assert code == 0, err
    body = json.loads(out)
    assert [a["actor"] for a in body["actors"]] == ["tester"]
    assert body["unread"] == ["keysafe/local/acme/shared/b"]
    assert {f["kind"] for f in body["findings"]} == {"unread"}  # tester runs it: not new
    code, out, err = run("audit", "report")
    assert code == 0
    assert "worth a look" in out
    assert "keysafe/local/acme/shared/b" in err
    assert run("audit", "report", "--check")[0] == 1
    assert run("audit", "report", "--check", "--ignore", "unread")[0] == 0
    for args, words in ((("--ignore", "nope"), "unknown kind 'nope'"),
                        (("--since", "1h", "--until", "2h"), "--until must be after"),
                        (("--since", "2099-01-01"), "must be after"),
                        (("--max-denied", "0"), "--max-denied"),
                        (("--since", "yesterday"), "--since")):
        code, out, err = run("audit", "report", *args)
        assert code == 2, args
        assert words in err, (args, err)
    for text in (out, err):
        assert CANARY not in text
