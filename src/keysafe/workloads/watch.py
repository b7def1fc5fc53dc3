"""Noticing that a scope's secrets changed between passes (``sync kubernetes --watch``).

A store that announces changes (PostgreSQL's LISTEN/NOTIFY, which also keeps the
server replicas' caches coherent) tells the watch at once: a change under the scope's
path prefix, or ``*`` (the listener reconnected, so anything may have changed), wakes
it. Any other store is asked every ``poll`` seconds for the scope's metadata (one
audited listing, never a value) and compared with what the last pass listed: a new,
changed, re-tagged or deleted secret wakes it.

Either way the watch then waits until the changes have paused for ``SETTLE`` seconds
(at most ``SETTLE_MAX`` in all), so a burst of writes (``rotate --all``, an import)
becomes one pass rather than one per secret. While the store's listener is not
connected (PostgreSQL down), its ``*`` notices wake nothing: the pass waits until it
is connected again, and then runs once, since anything may have changed meanwhile.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from keysafe.backends.base import Watchable
from keysafe.errors import KeysafeError

if TYPE_CHECKING:
    from keysafe.manager.manager import SecretManager
    from keysafe.models import SecretMetadata

#: A pass follows a change once the changes have paused this many seconds...
SETTLE = 1.0
#: ... or this many seconds after the first of them, whichever comes first.
SETTLE_MAX = 10.0
#: How often to look whether a lost change listener is back.
RECONNECT_CHECK = 0.5
#: Longest wait for a store's change listener to connect before the first pass.
LISTEN_WAIT = 5.0


class ScopeWatch:
    """Wakes the loop early when the scope changes. ``wake`` is the event the loop
    sleeps on; a stop signal sets ``stopped`` and then ``wake``."""

    def __init__(self, mgr: SecretManager, org: str, domain: str | None, env: str | None,
                 *, poll: float, wake: threading.Event, stopped: threading.Event) -> None:
        domain = domain or mgr.default_domain
        self._mgr, self._org, self._domain, self._env = mgr, org, domain, env
        self._wake = wake
        self._stopped = stopped
        self._changed = threading.Event()
        self._seen: dict[str, SecretMetadata] | None = None
        backend = mgr.backend
        self.told = isinstance(backend, Watchable)
        self.poll: float | None = None if self.told else poll
        self._prefix = mgr.prefix(org, domain, env)
        listening = getattr(backend, "listening", None)
        self._listening = listening if isinstance(listening, threading.Event) else None
        if isinstance(backend, Watchable):
            backend.watch(self._heard)
            if self._listening is not None:
                # The listener announces "*" when it connects; let that come before the
                # first pass so it does not cause a second one.
                self._listening.wait(LISTEN_WAIT)

    @property
    def how(self) -> str:
        """How changes are noticed, for the start-up line."""
        if self.told:
            return "told of changes by the store at once"
        return f"checking the scope's versions every {self.poll:g} s"

    def _heard(self, path: str) -> None:
        if path == "*" or path.startswith(self._prefix):
            self._changed.set()
            self._wake.set()

    def begin_pass(self) -> None:
        """Called as a pass starts: changes made before now are the pass's to read."""
        self._changed.clear()

    def passed(self, listing: list[SecretMetadata]) -> None:
        """What the pass listed: the next polls compare with it."""
        self._seen = {m.path: m for m in listing}

    def wait(self, timeout: float) -> str:
        """Sleep until the next pass is due (``"due"``), the scope changed and settled
        (``"change"``), or the loop is to stop (``"stop"``)."""
        deadline = time.monotonic() + timeout
        while not self._stopped.is_set():
            if self._changed.is_set():
                if not self._connected(deadline):
                    return "stop" if self._stopped.is_set() else "due"
                self._settle()
                return "stop" if self._stopped.is_set() else "change"
            now = time.monotonic()
            if now >= deadline:
                return "due"
            if self.poll is None:
                self._sleep(deadline)
            else:
                self._sleep(min(deadline, now + self.poll))
                if time.monotonic() < deadline and not self._stopped.is_set() \
                        and self._differs():
                    self._changed.set()
        return "stop"

    def _connected(self, deadline: float) -> bool:
        """Wait (to ``deadline``) for the store's change listener to be connected; a
        notice heard while it was not is its own lost connection, not a change."""
        while self._listening is not None and not self._listening.is_set():
            if self._stopped.is_set() or time.monotonic() >= deadline:
                return False
            self._stopped.wait(RECONNECT_CHECK)
        return True

    def _settle(self) -> None:
        """Until the changes pause for SETTLE seconds (at most SETTLE_MAX in all)."""
        last = time.monotonic() + SETTLE_MAX
        while not self._stopped.is_set():
            self._changed.clear()
            until = min(time.monotonic() + SETTLE, last)
            self._sleep(until)
            if not self._changed.is_set() or time.monotonic() >= last:
                return

    def _sleep(self, until: float) -> None:
        """Until ``until``, a stop, or a change. Flags are set before the event, so
        clearing the event after waking never loses one."""
        while not self._stopped.is_set():
            left = until - time.monotonic()
            if left <= 0 or self._changed.is_set():
                return
            self._wake.wait(left)
            self._wake.clear()

    def _differs(self) -> bool:
        try:
            now = {m.path: m for m in self._mgr.list(self._org, domain=self._domain,
                                                      env=self._env)}
        except KeysafeError:
            return False  # an outage: the next pass reports it
        return self._seen is not None and now != self._seen
