"""Rotation events and reminders to the team's webhooks, signed so receivers can verify
them (``X-Keysafe-Signature``, see ``rotators.verify_signature``). Delivery is best
effort with a short timeout: a webhook that is down is logged and counted, and never
fails a rotation. Events carry paths, orgs, versions and outcomes, never values."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

from keysafe.config import url_origin
from keysafe.rotation.rotators import sign

log = logging.getLogger("keysafe.rotation")


class Events:
    def __init__(self, urls: list[str], secret: str | None, *, timeout: float = 5.0) -> None:
        self.urls = urls
        self.secret = secret
        self.timeout = timeout
        self.sent = 0
        self.failed = 0
        self.counts: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> Events:
        from keysafe.errors import ConfigError

        urls = [u.strip() for u in str(settings.event_webhooks or "").split(",") if u.strip()]
        bad = [u for u in urls if not u.startswith(("https://", "http://"))
               or not u.isprintable() or " " in u]
        if bad:
            raise ConfigError("event_webhooks must be http(s) URLs; got one that is not")
        return cls(urls, settings.event_webhook_secret)

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if not self.urls:
            return
        body = json.dumps({"type": kind, "time": time.time(), **data},
                          sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "keysafe"}
        if self.secret:
            headers["X-Keysafe-Signature"] = sign(body, self.secret, int(time.time()))
        for url in self.urls:
            req = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - http(s)
                                         headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                    resp.read(4096)
                self.sent += 1
            except Exception as exc:
                # (InvalidURL is a ValueError) as well as a network error; the log names
                # the origin only, the path may be the webhook's credential.
                self.failed += 1
                log.warning("event webhook %s failed: %s", url_origin(url),
                            type(exc).__name__)


#: Audit actions that change a secret -> the event each sends (``KEYSAFE_EVENT_CHANGES``).
CHANGE_EVENTS = {
    "write": "secret.written",
    "delete": "secret.deleted",
    "purge": "secret.purged",
    "restore": "secret.restored",
    "destroy": "secret.destroyed",
    "rollback": "secret.rolled_back",
    "update_metadata": "secret.updated",
}


class ChangeEvents:
    """An audit sink (``AuditLog(sinks=...)``) that sends an event for every change the
    audit log commits (``CHANGE_EVENTS``, outcome ok): path, org, version, actor, audit
    seq and the record's detail (a destroy's versions), never a value. The committing
    thread only queues; one daemon thread delivers, so a webhook that is slow or down
    never holds up a write. The queue is bounded:
    past ``limit`` undelivered events the oldest are dropped and counted. ``close``
    waits up to ``drain`` seconds for the queue (a CLI's last write)."""

    def __init__(self, events: Events, *, limit: int = 10_000, drain: float = 5.0) -> None:
        import collections
        import threading

        self.events = events
        self.limit = limit
        self.drain = drain
        self.dropped = 0
        self._queue: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self._ready = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._deliver, name="keysafe-events",
                                        daemon=True)
        self._thread.start()

    def write(self, rows: Any) -> None:
        from keysafe.manager.audit import row_event

        picked = []
        for r in rows:
            kind = CHANGE_EVENTS.get(r[3])
            if kind is None or r[6] != "ok":
                continue
            e = row_event(r)
            picked.append((kind, {"path": e.path, "org": e.org, "version": e.version,
                                  "actor": e.actor, "seq": e.seq, "at": e.ts.isoformat(),
                                  **({"detail": e.detail} if e.detail else {})}))
        if not picked:
            return
        with self._ready:
            self._queue.extend(picked)
            while len(self._queue) > self.limit:
                self._queue.popleft()
                self.dropped += 1
            self._ready.notify_all()

    def _deliver(self) -> None:
        while True:
            with self._ready:
                self._busy = False
                self._ready.notify_all()
                while not self._queue and not self._closed:
                    self._ready.wait()
                if not self._queue:
                    return
                kind, data = self._queue.popleft()
                self._busy = True
            try:
                self.events.emit(kind, data)
            except Exception:
                log.warning("change event %s not delivered", kind)

    def close(self) -> None:
        """Deliver what is queued (up to ``drain`` seconds), then stop."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
            self._ready.wait_for(lambda: not self._queue and not self._busy,
                                 timeout=self.drain)
            if self._queue:
                log.warning("%d change events not delivered at close", len(self._queue))
