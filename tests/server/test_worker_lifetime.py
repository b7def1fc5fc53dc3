"""A ``keysafe serve`` killed with SIGKILL (by hand: ``kill -9 PID``) takes its workers
with it: they must not keep serving the port with nobody left to stop them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
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


_WORKER = textwrap.dedent("""
    import os, signal, sys, time
    from keysafe.server import run
    # What a granian worker inherits from the server's main process: a handler that only
    # flags the (dead) main process's state.
    signal.signal(signal.SIGTERM, lambda *a: None)
    os.environ[run.PARENT_ENV] = str(os.getppid())
    run.die_with_parent()
    print(os.getpid(), flush=True)
    time.sleep(60)  # still building the app when the server dies
""")

_SERVER = textwrap.dedent("""
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=sys.stdout)
    child.wait()
""")


def _kill_server_then_wait(worker_script: str, message: str, *,
                           alive_at_first: float | None = None) -> None:
    """Start a server running ``worker_script``, SIGKILL the server, and require the
    worker to end within 10 s (``alive_at_first``: and to be alive that long after)."""
    server = subprocess.Popen([sys.executable, "-c", _SERVER, worker_script],
                              stdout=subprocess.PIPE, text=True)
    worker = 0
    try:
        assert server.stdout is not None
        worker = int(server.stdout.readline())
        assert _alive(worker)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        if alive_at_first is not None:
            time.sleep(alive_at_first)
            assert _alive(worker), "ended before its grace was over"
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), message
    finally:
        with contextlib.suppress(ProcessLookupError, ValueError):
            if worker:
                os.kill(worker, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            server.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG (Linux)")
def test_a_worker_still_building_its_app_ends_with_its_server() -> None:
    _kill_server_then_wait(_WORKER, "the worker outlived its server")


_STUCK_WORKER = textwrap.dedent("""
    import os, signal, sys, time
    from keysafe.server import run
    run.ORPHAN_GRACE = 1.0
    os.environ[run.PARENT_ENV] = str(os.getppid())
    run.die_with_parent()
    # A graceful shutdown that never ends: the SIGTERM at the server's death is taken
    # and nothing follows.
    signal.signal(signal.SIGTERM, lambda *a: None)
    print(os.getpid(), flush=True)
    time.sleep(60)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG (Linux)")
def test_a_worker_whose_shutdown_hangs_still_ends_after_its_server() -> None:
    _kill_server_then_wait(_STUCK_WORKER, "a worker whose shutdown hangs outlived its server",
                           alive_at_first=0.3)
