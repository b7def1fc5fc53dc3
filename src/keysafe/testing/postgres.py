"""A throwaway PostgreSQL server for tests and benchmarks: the Debian package's
binaries, a fresh cluster in a temporary directory, run as the ``postgres`` user when
started by root, listening on 127.0.0.1 only (and a Unix socket inside that directory),
with password authentication over TCP.

    server = start_pg()          # raises PgUnavailable if PostgreSQL is not installed
    url = server.url(server.create_db())
    ...
    stop_pg(server)
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class PgUnavailable(RuntimeError):
    """PostgreSQL's binaries are not on this machine."""


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    """Run as the postgres user when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass
class PgServer:
    port: int
    password: str
    datadir: Path
    proc: subprocess.Popen[bytes]

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{db}"

    def admin(self) -> Any:
        import psycopg

        return psycopg.connect(self.url(), autocommit=True)

    def create_db(self) -> str:
        name = f"ks_{uuid.uuid4().hex[:12]}"
        with self.admin() as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_db(self, name: str) -> None:
        with self.admin() as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_pg(base_dir: Path | None = None, *, settings: dict[str, str] | None = None
             ) -> PgServer:
    """Initialise and start a cluster in a new directory under ``base_dir`` (default: the
    system temporary directory); ``settings`` are extra ``postgres -c`` options."""
    bindir = pg_bin()
    if bindir is None:
        raise PgUnavailable("PostgreSQL is not installed (on Debian: apt-get install "
                            "postgresql; keysafe's scripts/setup does it)")
    root = Path(tempfile.mkdtemp(prefix="keysafe-pg-", dir=base_dir))
    data = root / "data"
    pwfile = root / "pw"
    password = secrets.token_urlsafe(16)
    pwfile.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    root.chmod(0o700)
    subprocess.run(
        _as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                      "--auth-local=trust", "--auth-host=scram-sha-256",
                      f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]),
        check=True, capture_output=True)
    pwfile.unlink()
    port = _free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        _as_postgres([str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                      "-c", "listen_addresses=127.0.0.1",
                      "-c", f"unix_socket_directories={root}",
                      "-c", "max_connections=200", "-c", "shared_buffers=64MB",
                      "-c", "fsync=on", "-c", "synchronous_commit=on",
                      *[a for k, v in (settings or {}).items() for a in ("-c", f"{k}={v}")]]),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = PgServer(port, password, data, proc)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited: {(root / 'server.log').read_text()[-2000:]}")
        try:
            with server.admin():
                break
        except Exception:
            if time.monotonic() > deadline:
                stop_pg(server)
                raise RuntimeError("postgres did not start within 60 s") from None
            time.sleep(0.1)
    return server


def stop_pg(server: PgServer) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGINT)  # fast shutdown
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
    shutil.rmtree(server.datadir.parent, ignore_errors=True)


