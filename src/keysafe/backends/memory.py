"""In-memory reference backend: the semantics every other backend matches.

Not persistent and not encrypted (it never leaves the process); used by tests and as
the executable definition of the protocol.
"""

from __future__ import annotations

import builtins
import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from keysafe.backends.base import DueWindow, WriteContext, check_cas, not_found
from keysafe.models import MetadataUpdate, SecretMetadata, VersionInfo


@dataclass
class _Secret:
    meta: SecretMetadata
    values: dict[int, str | None] = field(default_factory=dict)
    info: dict[int, VersionInfo] = field(default_factory=dict)


def _apply(meta: SecretMetadata, upd: MetadataUpdate | None) -> SecretMetadata:
    if upd is None:
        return meta
    changes = {k: getattr(upd, k) for k in upd._fields if getattr(upd, k) is not None}
    if "tags" in changes:
        changes["tags"] = dict(changes["tags"])
    return meta._replace(**changes)


class MemoryBackend:
    """Versions, soft delete, restore, destroy and check-and-set, in a dict."""

    name = "memory"

    def __init__(self, *, max_versions: int = 10) -> None:
        self.max_versions = max_versions
        self._data: dict[str, _Secret] = {}
        self._lock = threading.RLock()

    # -- protocol ---------------------------------------------------------------
    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        s = self._data.get(path)
        if s is None or s.meta.deleted_at is not None:
            raise not_found(path)
        v = s.meta.current_version if version is None else version
        value = s.values.get(v)
        if value is None:
            raise not_found(path, version)
        return value, v

    def put(self, path: str, value: str, *, ctx: WriteContext,
            expected_version: int | None = None,
            meta: MetadataUpdate | None = None) -> VersionInfo:
        with self._lock:
            s = self._data.get(path)
            current = s.meta.current_version if s else 0
            check_cas(path, expected_version, current)
            new = current + 1
            info = VersionInfo(new, ctx.now, ctx.actor)
            if s is None:
                s = _Secret(SecretMetadata(path, 0, ctx.now, ctx.now, ctx.actor, ctx.actor))
                self._data[path] = s
            s.values[new] = value
            s.info[new] = info
            self._prune(s, new)
            s.meta = _apply(s.meta._replace(current_version=new, updated_at=ctx.now,
                                    updated_by=ctx.actor, deleted_at=None,
                                    versions=len(s.values)), meta)
            return info

    def _prune(self, s: _Secret, newest: int) -> None:
        if self.max_versions > 0:
            for old in [v for v in s.values if v <= newest - self.max_versions]:
                del s.values[old]
                del s.info[old]

    def describe(self, path: str, *, include_deleted: bool = False) -> SecretMetadata:
        s = self._data.get(path)
        if s is None or (s.meta.deleted_at is not None and not include_deleted):
            raise not_found(path)
        return s.meta._replace(tags=dict(s.meta.tags))

    def list(self, prefix: str, *,
             include_deleted: bool = False) -> builtins.list[SecretMetadata]:
        with self._lock:
            return [s.meta for p, s in sorted(self._data.items())
                    if p.startswith(prefix) and (include_deleted or s.meta.deleted_at is None)]

    def list_due(self, prefix: str, window: DueWindow) -> builtins.list[SecretMetadata]:
        return [m for m in self.list(prefix) if window.matches(m)]

    def delete(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        with self._lock:
            meta = self.describe(path)
            self._data[path].meta = meta._replace(deleted_at=ctx.now)
            return self._data[path].meta

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None

    # -- capabilities -----------------------------------------------------------
    def versions(self, path: str) -> builtins.list[VersionInfo]:
        s = self._data.get(path)
        if s is None:
            raise not_found(path)
        return [s.info[v] for v in sorted(s.info)]

    def destroy(self, path: str, versions: builtins.list[int], *,
                ctx: WriteContext) -> builtins.list[int]:
        with self._lock:
            s = self._data.get(path)
            if s is None:
                raise not_found(path)
            done = []
            for v in versions:
                if v in s.values and s.values[v] is not None:
                    s.values[v] = None
                    s.info[v] = s.info[v]._replace(destroyed=True)
                    done.append(v)
            return done

    def restore(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        with self._lock:
            meta = self.describe(path, include_deleted=True)
            self._data[path].meta = meta._replace(deleted_at=None)
            return self._data[path].meta

    def purge(self, path: str, *, ctx: WriteContext) -> None:
        with self._lock:
            if self._data.pop(path, None) is None:
                raise not_found(path)

    def update_metadata(self, path: str, meta: MetadataUpdate, *,
                        ctx: WriteContext) -> SecretMetadata:
        with self._lock:
            s = self._data.get(path)
            if s is None:
                raise not_found(path)
            s.meta = _apply(s.meta._replace(updated_at=ctx.now, updated_by=ctx.actor), meta)
            return s.meta

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing: on error the store goes back to how it was (nested calls too)."""
        with self._lock:
            snapshot = copy.deepcopy(self._data)
            try:
                yield
            except BaseException:
                self._data = snapshot
                raise

    def deleted_before(self, cutoff: datetime) -> builtins.list[str]:
        return [p for p, s in self._data.items()
                if s.meta.deleted_at is not None and s.meta.deleted_at < cutoff]
