"""Plain, frozen records passed between the manager, the backends and the edges."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One version of a secret: never the value."""

    version: int
    created_at: datetime
    created_by: str | None = None
    destroyed: bool = False
    key_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        return d


@dataclass(frozen=True, slots=True)
class SecretMetadata:
    """What may be shown about a secret to anyone allowed to see it exists."""

    path: str
    current_version: int
    created_at: datetime
    updated_at: datetime
    created_by: str | None = None
    updated_by: str | None = None
    description: str | None = None
    secret_type: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    deleted_at: datetime | None = None
    last_rotated: datetime | None = None
    rotation_days: int | None = None
    expires_at: datetime | None = None
    versions: int = 0

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in self.__slots__:
            v = getattr(self, k)
            out[k] = v.isoformat() if isinstance(v, datetime) else v
        out["deleted"] = self.deleted
        return out


@dataclass(frozen=True, slots=True)
class MetadataUpdate:
    """Fields a write may set on the secret's metadata; None leaves a field as it is."""

    description: str | None = None
    secret_type: str | None = None
    tags: dict[str, str] | None = None
    rotation_days: int | None = None
    expires_at: datetime | None = None
    last_rotated: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit record. ``detail`` holds names and numbers only, never a value."""

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
    detail: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = ""
    hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ts"] = self.ts.isoformat()
        return d
