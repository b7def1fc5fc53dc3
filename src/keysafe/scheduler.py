"""Periodic jobs (purging soft deletes whose recovery window has ended; rotation runs
here too), run once per period across every process sharing the store.

A store that can lease (PostgreSQL: ``run_exclusive`` with an advisory lock) decides
across replicas. Otherwise the processes share one machine (the embedded store), and an
exclusive ``flock`` on a file in KEYSAFE_HOME decides; the kernel releases it if the
holder dies, so a job is never run twice at once and never left undone.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keysafe.backends.base import Leasing

log = logging.getLogger("keysafe.scheduler")


@dataclass(frozen=True)
class Job:
    name: str
    every: float          # seconds between runs
    fn: Callable[[], object]


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[int | None]:
    """The file's descriptor while this process holds an exclusive ``flock`` on it
    (released by the kernel if the holder dies), or None if another one holds it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield fd
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def hold_locally(lock_dir: Path, name: str) -> Iterator[bool]:
    """Try to hold ``name`` against every process on this machine; yields whether it
    is held."""
    import hashlib

    key = hashlib.sha256(name.encode()).hexdigest()[:32]
    with _flocked(lock_dir / f"hold-{key}.lock") as fd:
        yield fd is not None


def run_locally_exclusive(lock_dir: Path, job: str, every: float,
                          fn: Callable[[], object]) -> bool:
    """Run ``fn`` if due, holding an exclusive lock on ``lock_dir/<job>.lock``; the file
    holds the time the job is next due."""
    with _flocked(lock_dir / f"{job}.lock") as fd:
        if fd is None:
            return False
        raw = os.pread(fd, 64, 0).decode(errors="replace").strip()
        with contextlib.suppress(ValueError):
            if raw and float(raw) > time.time():
                return False
        fn()
        data = f"{time.time() + every:.3f}\n".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        return True


class Scheduler:
    """Checks its jobs every ``tick`` seconds in a daemon thread."""

    def __init__(self, backend: object, jobs: list[Job], *, lock_dir: Path,
                 tick: float = 30.0, first_delay: float = 5.0) -> None:
        self.backend = backend
        self.jobs = jobs
        self.lock_dir = lock_dir
        self.tick = tick
        self.first_delay = first_delay
        self.holder = holder_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs: dict[str, int] = {j.name: 0 for j in jobs}
        #: The rotation engine of the rotate-due job, if any (its figures go to /metrics).
        self.rotation: Any = None
        #: The access-report job's watch, if any (its findings go to /metrics).
        self.access: Any = None

    def run_pending(self) -> list[str]:
        """Run every due job this process wins; the names of those that ran."""
        ran = []
        for job in self.jobs:
            try:
                if isinstance(self.backend, Leasing):
                    done = self.backend.run_exclusive(job.name, job.every, job.fn,
                                                      holder=self.holder)
                else:
                    done = run_locally_exclusive(self.lock_dir, job.name, job.every, job.fn)
            except Exception as exc:  # a failed run stays due; the next tick retries
                log.warning("scheduled job %s failed: %s", job.name, type(exc).__name__)
                continue
            if done:
                self.runs[job.name] += 1
                ran.append(job.name)
        return ran

    def start(self) -> None:
        if self._thread is None and self.jobs:
            self._thread = threading.Thread(target=self._loop, name="keysafe-scheduler",
                                            daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        if self._stop.wait(self.first_delay):
            return
        while not self._stop.is_set():
            self.run_pending()
            self._stop.wait(self.tick)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
