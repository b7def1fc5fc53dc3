"""Plain, frozen records passed between the manager, the backends and the edges.

They are ``typing.NamedTuple`` classes rather than dataclasses: this module is on the
import path of every ``keysafe`` process, and the ``dataclasses`` module (with the
``inspect`` it imports) and the code it generates per class cost a fresh process
more than a fifth of its start-up. Build changed copies with ``_replace``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple


class VersionInfo(NamedTuple):
    """One version of a secret: never the value."""

    version: int
    created_at: datetime
    created_by: str | None = None
    destroyed: bool = False
    key_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = self._asdict()
        d["created_at"] = self.created_at.isoformat()
        return d


class _SecretMetadata(NamedTuple):
    path: str
    current_version: int
    created_at: datetime
    updated_at: datetime
    created_by: str | None = None
    updated_by: str | None = None
    description: str | None = None
    secret_type: str | None = None
    tags: dict[str, str] = None  # type: ignore[assignment]  # a new dict: see __new__
    deleted_at: datetime | None = None
    last_rotated: datetime | None = None
    rotation_days: int | None = None
    expires_at: datetime | None = None
    versions: int = 0


class SecretMetadata(_SecretMetadata):
    """What may be shown about a secret to anyone allowed to see it exists."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kw: Any) -> SecretMetadata:
        if len(args) <= _TAGS and kw.get("tags") is None:
            kw["tags"] = {}  # each record its own (a reader may change its copy)
        return super().__new__(cls, *args, **kw)

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in zip(self._fields, self, strict=True):
            out[k] = v.isoformat() if isinstance(v, datetime) else v
        out["deleted"] = self.deleted
        return out


_TAGS = _SecretMetadata._fields.index("tags")


class MetadataUpdate(NamedTuple):
    """Fields a write may set on the secret's metadata; None leaves a field as it is."""

    description: str | None = None
    secret_type: str | None = None
    tags: dict[str, str] | None = None
    rotation_days: int | None = None
    expires_at: datetime | None = None
    last_rotated: datetime | None = None


class _AuditEvent(NamedTuple):
    seq: int
    ts: datetime
    actor: str
    action: str
    path: str | None
    version: int | None
    outcome: str
    org: str | None = None
    client: str | None = None
    request_id: str | None = None
    detail: dict[str, Any] = None  # type: ignore[assignment]  # a new dict: see __new__
    prev_hash: str = ""
    hash: str = ""


class AuditEvent(_AuditEvent):
    """One audit record. ``detail`` holds names and numbers only, never a value."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kw: Any) -> AuditEvent:
        if len(args) <= _DETAIL and kw.get("detail") is None:
            kw["detail"] = {}
        return super().__new__(cls, *args, **kw)

    def to_dict(self) -> dict[str, Any]:
        d = self._asdict()
        d["ts"] = self.ts.isoformat()
        d["detail"] = dict(self.detail)
        return d


_DETAIL = _AuditEvent._fields.index("detail")
