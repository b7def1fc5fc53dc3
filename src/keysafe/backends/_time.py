"""Timestamps as the cloud stores carry them (ISO strings in tags and annotations)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def iso(d: datetime) -> str:
    return d.astimezone(UTC).isoformat(timespec="microseconds")


def parse_iso(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


def aware(d: Any) -> datetime:
    """An SDK timestamp (a datetime, maybe naive) as an aware datetime; the epoch if absent."""
    if isinstance(d, datetime):
        return d if d.tzinfo else d.replace(tzinfo=UTC)
    return datetime.fromtimestamp(0, UTC)
