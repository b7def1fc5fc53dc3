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
        bad = [u for u in urls if not u.startswith(("https://", "http://"))]
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
            except (urllib.error.URLError, OSError) as exc:
                self.failed += 1
                log.warning("event webhook %s failed: %s", url_origin(url),
                            type(exc).__name__)
