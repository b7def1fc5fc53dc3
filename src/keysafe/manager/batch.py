"""Group commit for writes: concurrent writes share one transaction and one fsync.

Each write runs in its own savepoint inside the batch's transaction, so one failing
write (a check-and-set conflict, say) leaves the others alone. Callers are answered
only after the batch commits: an acknowledged write is a durable write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keysafe.backends.base import Transactional
from keysafe.manager.manager import SecretManager

#: A write job: the manager call to run, and the path whose cache it touches.
WriteJob = tuple[Callable[[], Any], str | None]


def run_write_batch(manager: SecretManager, jobs: list[WriteJob]) -> list[tuple[bool, Any]]:
    """Run ``jobs`` in one transaction (each in a savepoint); (ok, result-or-error) each.

    Raises if the commit itself fails (then no job happened). Without a transactional
    store the jobs simply run one after another.
    """
    backend = manager.backend
    results: list[tuple[bool, Any]] = []
    tx = backend.transaction() if isinstance(backend, Transactional) else None
    if tx is None:
        for fn, _ in jobs:
            try:
                results.append((True, fn()))
            except Exception as exc:
                results.append((False, exc))
        return results
    try:
        with tx:
            for fn, _ in jobs:
                try:
                    results.append((True, fn()))
                except Exception as exc:
                    results.append((False, exc))
    finally:
        # The writes invalidated their paths before the commit; a read in between could
        # have cached the old committed value again, so invalidate after it too.
        for _, path in jobs:
            if path is not None:
                manager.cache.invalidate(path)
    return results
