"""Group commit inside the event loop: many requests, one batch, one thread hop.

Requests ``await pump.submit(item)``; a single task takes everything pending, runs it as
one batch in the pump's own worker thread (one transaction, one commit), and answers
every waiting request from the loop itself. While a batch commits, the next one forms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")
#: What a batch runner returns per item: (True, result) or (False, exception).
Outcome = tuple[bool, Any]


class BatchPump(Generic[T]):
    def __init__(self, run_batch: Callable[[list[T]], list[Outcome]], *, name: str,
                 max_batch: int = 256) -> None:
        self._run = run_batch
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[Any]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((item, fut))
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._pump())
        assert self._wake is not None
        self._wake.set()
        return await fut

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[: self._max], self._pending[self._max:]
                items = [i for i, _ in batch]
                try:
                    outcomes = await loop.run_in_executor(self._pool, self._run, items)
                except BaseException as exc:
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(exc)
                    continue
                self.batches += 1
                self.items += len(batch)
                for (_, f), (ok, val) in zip(batch, outcomes, strict=True):
                    if f.done():
                        continue
                    if ok:
                        f.set_result(val)
                    else:
                        f.set_exception(val)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._pool.shutdown(wait=True, cancel_futures=False)
