"""Durations written the way operators write them: ``1h``, ``15m``, ``90s``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from keysafe.errors import InvalidValue

_PART = re.compile(r"(\d+)(h|m|s)")
_UNITS = {"h": 3600, "m": 60, "s": 1}


def parse_interval(text: str, what: str = "interval") -> float:
    """``1h``, ``15m``, ``90s``, ``1h30m`` as seconds (at least 1); InvalidValue else,
    naming ``what``."""
    s = text.strip().lower()
    parts = _PART.findall(s)
    if not parts or "".join(n + u for n, u in parts) != s or len({u for _, u in parts}) \
            != len(parts):
        raise InvalidValue(f"{what} {text!r} is not a duration like 1h, 15m, 90s or 1h30m")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds < 1:
        raise InvalidValue(f"the {what} must be at least 1s")
    return float(seconds)


def future_expiry(when: datetime, now: datetime | None = None, *,
                  given: str | None = None) -> datetime:
    """A secret's expiry as given to a write: UTC (a naive time is taken as UTC), and
    after ``now``; InvalidValue otherwise (an expiry in the past would read as expired
    from the start), naming it as ``given`` (default ``expires_at <the time>``)."""
    given = given or f"expires_at {when.isoformat()}"
    try:
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except OverflowError:  # an offset at the very edge of the calendar
        raise InvalidValue(f"{given} is outside the dates keysafe can keep") from None
    if when <= (now or datetime.now(UTC)):
        raise InvalidValue(f"{given} is not in the future")
    return when
