"""``keysafe run --watch`` on the PostgreSQL store: a change another process commits
(NOTIFY) brings the next version check forward, so the command restarts with the new
value in about a second although ``--interval`` is an hour. A real keysafe process, a
child that reports what it got, and a real PostgreSQL on loopback."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from keysafe import SecretManager, load_settings

KEYSAFE = str(Path(sys.executable).parent / "keysafe")
FIRST, SECOND = "sk-" + "a1" * 16, "sk-" + "b2" * 16
CHILD = r"""
import os, signal, sys, time
log = sys.argv[1]
def note(text):
    with open(log, "a") as fh:
        fh.write(text + "\n")
def on(sig, frame):
    note("got " + signal.Signals(sig).name)
    sys.exit(40 + sig)
signal.signal(signal.SIGTERM, on)
note("start " + os.environ.get("OPENAI_API_KEY", "-"))
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(99)
"""


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def wait_for(cond: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_a_committed_change_restarts_the_command_without_waiting_for_the_interval(
        pg_url: str, tmp_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("KEYSAFE_DATABASE_URL", pg_url)
    monkeypatch.setenv("KEYSAFE_DB_AUTO_UPGRADE", "1")
    monkeypatch.setenv("KEYSAFE_ACTOR", "tester")
    monkeypatch.setenv("KEYSAFE_MASTER_KEY", "k1:" + base64.b64encode(os.urandom(32)).decode())
    with SecretManager.from_settings(load_settings()) as mgr:
        mgr.put("openai_api_key", FIRST, "acme")
    log = tmp_path / "child.log"
    env = dict(os.environ, PYTHONPYCACHEPREFIX=str(tmp_path_factory.getbasetemp() / "pyc"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    p = subprocess.Popen([KEYSAFE, "run", "--org", "acme", "--watch", "--interval", "3600",
                          "--grace", "5", "--", sys.executable, "-c", CHILD, str(log)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        wait_for(lambda: lines(log) == [f"start {FIRST}"])
        with SecretManager.from_settings(load_settings()) as mgr:
            mgr.put("openai_api_key", "sk-" + "c3" * 16, "globex")
            mgr.put("openai_api_key", SECOND, "acme")
        wait_for(lambda: f"start {SECOND}" in lines(log))
        assert lines(log) == [f"start {FIRST}", "got SIGTERM", f"start {SECOND}"]
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 40 + signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = p.stderr.read().decode() if p.stderr else ""
    assert "restarting the command" in err
    assert FIRST not in err
    assert SECOND not in err
