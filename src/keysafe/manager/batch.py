"""Group commit for writes: concurrent writes share one transaction and one fsync.

Each write runs in its own savepoint inside the batch's transaction, so one failing
write (a check-and-set conflict, say) leaves the others alone. Callers are answered
only after the batch commits: an acknowledged write is a durable write.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from keysafe.backends.base import Transactional
from keysafe.manager.manager import SecretManager

_Job = tuple[Callable[[], Any], "Future[Any]", str | None]


class WriteBatcher:
    def __init__(self, manager: SecretManager, *, max_batch: int = 256) -> None:
        self.manager = manager
        self.max_batch = max_batch
        self._q: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0
        self.writes = 0

    def submit(self, fn: Callable[[], Any], path: str | None = None) -> Future[Any]:
        """Run ``fn`` (a manager write to ``path``) in the next batch; the future
        resolves after the batch commits, with ``fn``'s result or its exception."""
        fut: Future[Any] = Future()
        if not isinstance(self.manager.backend, Transactional):
            # Nothing to share: run it directly in the caller's thread.
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)
            return fut
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, daemon=True,
                                                    name="keysafe-writes")
                    self._thread.start()
        self._q.put((fn, fut, path))
        return fut

    def _run(self) -> None:
        backend = self.manager.backend
        assert isinstance(backend, Transactional)
        while True:
            first = self._q.get()
            if first is None:
                return
            jobs = [first]
            while len(jobs) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)
                    break
                jobs.append(nxt)
            results: list[tuple[bool, Any]] = []
            try:
                with backend.transaction():
                    for fn, _, _ in jobs:
                        try:
                            results.append((True, fn()))
                        except BaseException as exc:
                            results.append((False, exc))
            except BaseException as exc:
                for _, fut, _ in jobs:
                    fut.set_exception(exc)
                self.manager.cache.clear()
                continue
            # The writes invalidated their paths before the commit; a read in between
            # could have cached the old committed value again, so invalidate after too.
            for _, _, path in jobs:
                if path is not None:
                    self.manager.cache.invalidate(path)
            for (_, fut, _), (ok, val) in zip(jobs, results, strict=True):
                if ok:
                    fut.set_result(val)
                else:
                    fut.set_exception(val)
            self.batches += 1
            self.writes += len(jobs)

    def close(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout=5)
