"""A ``keysafe serve`` killed with SIGKILL (by hand: ``kill -9 PID``) takes its workers
with it: they must not keep serving the port with nobody left to stop them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from .serverkit import RealServer


def _children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # ppid
            out.add(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc (Linux)")
@pytest.mark.parametrize("workers", [1, 2])
def test_workers_end_when_the_server_is_killed(tmp_path: Path, workers: int) -> None:
    srv = RealServer(tmp_path / "home", workers=workers)
    srv.start()
    try:
        assert srv.proc is not None
        assert httpx.get(srv.url + "/healthz", timeout=5).status_code == 200
        kids = _children(srv.proc.pid)
        assert len(kids) >= workers, kids
        os.kill(srv.proc.pid, signal.SIGKILL)  # the server process only, not its group
        srv.proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (any(_alive(k) for k in kids)
                                               or _accepts(srv.port)):
            time.sleep(0.1)
        assert not [k for k in kids if _alive(k)], "workers outlived their server"
        assert not _accepts(srv.port), "the port is still served"
    finally:
        srv.stop()
        if srv.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(srv.proc.pid, signal.SIGKILL)
