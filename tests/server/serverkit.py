"""Helpers for the server tests: in-process apps over a scratch store, tokens, and a
real ``keysafe serve`` subprocess on loopback. (Fixtures live in conftest.py.)"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from keysafe.config import load_settings
from keysafe.server.app import KeysafeApp, create_app

PYTHON = sys.executable
OPENAI = "openai_api_key"
# Values that pass the catalog's format check for openai_api_key.
VALUE_1 = "sk-" + "a1" * 16
VALUE_2 = "sk-" + "b2" * 16


def settings_for(home: Path, **env: Any) -> Any:
    """Settings from an explicit environment only: KEYSAFE_HOME plus ``env`` (given as
    setting names, e.g. ``cors_origins=...``). Nothing leaks in from os.environ."""
    environ = {"KEYSAFE_HOME": str(home)}
    environ.update({f"KEYSAFE_{k.upper()}": str(v) for k, v in env.items()})
    return load_settings(environ)


def build_app(home: Path, **env: Any) -> KeysafeApp:
    home.mkdir(parents=True, exist_ok=True)
    return create_app(settings_for(home, **env))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_token(app: KeysafeApp, name: str, roles: list[str], orgs: list[str] | None) -> str:
    token, _ = app.keysafe.tokens.create(name=name, roles=roles, orgs=orgs,
                                         created_by="test")
    return token


# -- a real server -----------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RealServer:
    """``keysafe serve`` in a subprocess; its output is captured for inspection."""

    home: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    token: str = ""
    #: False for a replica joining a store that already has tokens (prints none).
    expect_token: bool = True
    workers: int = 1
    proc: subprocess.Popen[bytes] | None = None
    out: list[bytes] = field(default_factory=list)
    err: list[bytes] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return (b"".join(self.out) + b"".join(self.err)).decode("utf-8", "replace")

    def start(self, timeout: float = 20.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("KEYSAFE_") and k != "ENVIRONMENT"}
        # Live key checks off unless a test routes them to a loopback stand-in: a server
        # in a subprocess is outside tests/conftest.py's guard, and no test leaves loopback.
        env.update({"KEYSAFE_HOME": str(self.home), "PYTHONUNBUFFERED": "1",
                    "KEYSAFE_KEY_CHECKS": "off", **self.env})
        code = (f"from keysafe.server.run import serve; "
                f"serve(port={self.port}, workers={self.workers})")
        # Its own process group: the ASGI server's workers are child processes, and a
        # kill -9 of the replica (kill9) must take them too, as a container's end does.
        self.proc = subprocess.Popen([PYTHON, "-c", code], env=env, cwd=str(self.home),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        got_token = threading.Event()

        def pump(stream: Any, sink: list[bytes], watch: bool) -> None:
            armed = False
            for line in iter(stream.readline, b""):
                sink.append(line)
                if watch:
                    text = line.decode("utf-8", "replace").strip()
                    if "first admin token" in text:
                        armed = True
                    elif armed and text.startswith("ks_") and not self.token:
                        self.token = text
                        got_token.set()

        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        for stream, sink, watch in ((self.proc.stdout, self.out, True),
                                    (self.proc.stderr, self.err, False)):
            t = threading.Thread(target=pump, args=(stream, sink, watch), daemon=True)
            t.start()
            self._threads.append(t)
        deadline = time.monotonic() + timeout
        if self.expect_token and not got_token.wait(timeout):
            self.stop()
            raise RuntimeError(f"no admin token from keysafe serve:\n{self.output()}")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"keysafe serve did not become healthy:\n{self.output()}")

    def kill9(self) -> None:
        """SIGKILL the whole replica at once (server process and its workers), as the
        end of a container or machine does; then wait for it."""
        p = self.proc
        assert p is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)

    def stop(self) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        # Nothing of the replica outlives it (a worker whose parent died keeps serving).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        for t in self._threads:
            t.join(timeout=2)
        self.proc = None


@contextlib.contextmanager
def real_server(home: Path, **env: str) -> Iterator[RealServer]:
    srv = RealServer(home, dict(env))
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
