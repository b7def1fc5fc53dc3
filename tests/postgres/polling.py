"""Polling for the PostgreSQL tests: notifications and other replicas' changes arrive
asynchronously, so a test waits for them, bounded in time and in count."""

from __future__ import annotations

import time
from collections.abc import Callable

NOTIFY_WAIT = 2.0  # seconds an asynchronous notification may take to arrive


def wait_until(pred: Callable[[], object], timeout: float = NOTIFY_WAIT,
               interval: float = 0.02) -> bool:
    """Poll ``pred`` until it is true or ``timeout`` passes (bounded in time and count)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        if pred():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return bool(pred())
