"""A chain of backends: reads try each in order, writes go to the first (the primary).

The usual chain is the store, then ``.env`` as a fallback for local work::

    [keysafe.profiles.local]
    backend = "chain"
    backends = ["sqlite", "env"]

    [keysafe.profiles.local.env]       # options for the member named "env"
    files = [".env", ".env.local"]

Reads (get, describe, list) take the first answer: a NotFound falls through to the
next backend, and so does a BackendUnavailable, unless no backend has the secret, in
which case the first BackendUnavailable is raised (a secret that might be in an
unreachable store is not "not found"). Other errors (PermissionDenied,
IntegrityError, ...) stop the chain. A secret soft-deleted in the primary is
not found there, so a fallback's value shows through.

Capabilities (Versioned, Recoverable, ...) are those of the primary and act on it
only: a chain over a store that keeps versions is Versioned, one over the env backend
is not. The class of each chain is built from the primary's capabilities
(``ChainBackend([...])`` returns an instance of it), so ``isinstance`` checks in the
manager see exactly what the primary offers, never a stub that raises.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from keysafe.backends.base import (
    BulkWritable,
    Destroyable,
    MetadataWritable,
    Progress,
    Recoverable,
    Rekeyable,
    SecretBackend,
    Versioned,
    WriteContext,
    check_cas,
)
from keysafe.errors import BackendUnavailable, ConfigError, KeysafeError, NotFound
from keysafe.models import MetadataUpdate, SecretMetadata, VersionInfo

if TYPE_CHECKING:
    from keysafe.config import Settings

__all__ = ["ChainBackend"]

T = TypeVar("T")


class ChainBackend:
    """Several backends as one. ``backends[0]`` is the primary: it takes every write
    and provides the capabilities. ``labels`` name the members in messages."""

    name = "chain"

    def __new__(cls, backends: Sequence[SecretBackend], *,
                labels: Sequence[str] | None = None) -> ChainBackend:
        if cls is ChainBackend and backends:
            cls = _class_for(_capabilities(backends[0]))
        return object.__new__(cls)

    def __init__(self, backends: Sequence[SecretBackend], *,
                 labels: Sequence[str] | None = None) -> None:
        if not backends:
            raise ConfigError("a chain needs at least one backend")
        self.backends: tuple[SecretBackend, ...] = tuple(backends)
        self.primary: SecretBackend = self.backends[0]
        self.labels = tuple(labels) if labels is not None else tuple(
            b.name for b in self.backends)
        if len(self.labels) != len(self.backends):
            raise ConfigError("a chain needs one label per backend")
        # The manager takes a store's own recovery window as the authority.
        own = getattr(self.primary, "recovery_window_days", None)
        if isinstance(own, int):
            self.recovery_window_days = own

    @classmethod
    def from_settings(cls, settings: Settings) -> ChainBackend:
        """Members from the profile's ``backends`` list; each member's options are the
        profile's sub-table named after it, whose ``backend`` key (default: the member's
        name) says which backend it is. Raises ConfigError for a bad list, an unknown
        option or table, or a nested chain."""
        from keysafe.backends.registry import open_store

        opts = dict(settings.backend_options)
        labels = opts.pop("backends", None)
        if (not isinstance(labels, builtins.list) or not labels
                or not all(isinstance(x, str) and x for x in labels)):
            raise ConfigError('chain backend: set backends = ["sqlite", "env"] (a list of '
                              "backend names, the primary first) in the profile")
        if len(set(labels)) != len(labels):
            raise ConfigError("chain backend: a member is named twice in backends; give "
                              "the second its own name and a sub-table with backend = ...")
        tables: dict[str, dict[str, Any]] = {}
        for label in labels:
            table = opts.pop(label, {})
            if not isinstance(table, dict):
                raise ConfigError(f"chain backend: options for member {label!r} must be a "
                                  "table")
            tables[label] = dict(table)
        if opts:
            extra = sorted(opts)[0]
            raise ConfigError(f"chain backend: unknown option {extra!r}; the chain takes "
                              "backends and one sub-table per member named in backends")
        members: builtins.list[SecretBackend] = []
        try:
            for label in labels:
                table = tables[label]
                kind = table.pop("backend", label)
                if not isinstance(kind, str) or kind == "chain":
                    raise ConfigError(f"chain backend: member {label!r} must name a backend "
                                      "other than chain")
                # The chain's state database (if any) is the registry's, around it.
                store = open_store(settings.with_overrides(backend=kind,
                                                           backend_options=table,
                                                           state_database_url=None))
                # The chain keeps one audit log (opened by the registry around it).
                store.audit.close()
                members.append(store.backend)
        except BaseException:
            for b in members:
                b.close()
            raise
        return cls(members, labels=labels)

    def __repr__(self) -> str:
        return f"ChainBackend({', '.join(self.labels)})"

    # -- reads ------------------------------------------------------------------------
    def _first(self, path: str, call: Callable[[SecretBackend], T],
               authoritative: Callable[[SecretBackend], bool] | None = None) -> T:
        """The first member's answer. NotFound and BackendUnavailable fall through;
        ``authoritative(b)`` says whether a NotFound from ``b`` is final after all."""
        missing: NotFound | None = None
        down: BackendUnavailable | None = None
        for b in self.backends:
            try:
                return call(b)
            except NotFound as exc:
                if authoritative is not None and authoritative(b):
                    raise
                missing = missing or exc
            except BackendUnavailable as exc:
                down = down or exc
        if down is not None:
            raise down
        assert missing is not None  # at least one member, and each raised
        raise missing

    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        """The first member holding the secret answers; a version it lacks is NotFound
        (not another member's version of the same name)."""
        def holds(b: SecretBackend) -> bool:
            if version is None:
                return False
            try:
                b.describe(path)
            except KeysafeError:
                return False
            return True

        return self._first(path, lambda b: b.get(path, version), holds)

    def describe(self, path: str, *, include_deleted: bool = False) -> SecretMetadata:
        return self._first(path, lambda b: b.describe(path, include_deleted=include_deleted))

    def list(self, prefix: str, *,
             include_deleted: bool = False) -> builtins.list[SecretMetadata]:
        """Every member's secrets, the first member's entry winning for a path. An
        unreachable member raises BackendUnavailable: a partial listing would look like
        secrets had gone."""
        seen: dict[str, SecretMetadata] = {}
        for b in self.backends:
            for meta in b.list(prefix, include_deleted=include_deleted):
                seen.setdefault(meta.path, meta)
        return [seen[p] for p in sorted(seen)]

    # -- writes -----------------------------------------------------------------------
    def put(self, path: str, value: str, *, ctx: WriteContext,
            expected_version: int | None = None,
            meta: MetadataUpdate | None = None) -> VersionInfo:
        """Write to the primary. ``expected_version`` n >= 1 is checked against the
        version the chain shows (a fallback's, when the primary lacks the secret);
        0 means the primary does not hold it yet, so a value a fallback serves can be
        copied into the store with a create-only write."""
        if expected_version:
            try:
                self.primary.describe(path, include_deleted=True)
            except NotFound:
                check_cas(path, expected_version, self._fallback_version(path))
                expected_version = 0
        return self.primary.put(path, value, ctx=ctx, expected_version=expected_version,
                                meta=meta)

    def _fallback_version(self, path: str) -> int:
        for b in self.backends[1:]:
            try:
                return b.describe(path).current_version
            except NotFound:
                continue
        return 0

    def delete(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        """Delete from the primary. A fallback's value for the path shows through."""
        return self.primary.delete(path, ctx=ctx)

    # -- upkeep -----------------------------------------------------------------------
    def ping(self) -> None:
        """Every member must answer: the chain is degraded if one cannot."""
        for label, b in zip(self.labels, self.backends, strict=True):
            try:
                b.ping()
            except BackendUnavailable as exc:
                raise BackendUnavailable(f"chain member {label}: {exc.message}") from exc

    def close(self) -> None:
        first: BaseException | None = None
        for b in reversed(self.backends):
            try:
                b.close()
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first


# -- capabilities: one mixin per protocol, all acting on the primary -------------------------
class _VersionedChain(ChainBackend):
    def versions(self, path: str) -> builtins.list[VersionInfo]:
        return cast(Versioned, self.primary).versions(path)


class _DestroyableChain(ChainBackend):
    def destroy(self, path: str, versions: builtins.list[int], *,
                ctx: WriteContext) -> builtins.list[int]:
        return cast(Destroyable, self.primary).destroy(path, versions, ctx=ctx)


class _RecoverableChain(ChainBackend):
    def restore(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        return cast(Recoverable, self.primary).restore(path, ctx=ctx)

    def purge(self, path: str, *, ctx: WriteContext) -> None:
        cast(Recoverable, self.primary).purge(path, ctx=ctx)

    def deleted_before(self, cutoff: datetime) -> builtins.list[str]:
        return cast(Recoverable, self.primary).deleted_before(cutoff)


class _MetadataWritableChain(ChainBackend):
    def update_metadata(self, path: str, meta: MetadataUpdate, *,
                        ctx: WriteContext) -> SecretMetadata:
        return cast(MetadataWritable, self.primary).update_metadata(path, meta, ctx=ctx)


class _RekeyableChain(ChainBackend):
    def rewrap_all(self, progress: Progress | None = None) -> int:
        return cast(Rekeyable, self.primary).rewrap_all(progress)

    def key_ids_in_use(self) -> set[str]:
        return cast(Rekeyable, self.primary).key_ids_in_use()


class _BulkWritableChain(ChainBackend):
    def put_many(self, items: Iterator[tuple[str, str]] | builtins.list[tuple[str, str]], *,
                 ctx: WriteContext) -> int:
        return cast(BulkWritable, self.primary).put_many(items, ctx=ctx)


# Transactional is left out on purpose: the manager opens a transaction to commit a write
# with its audit record, and a chain's audit log is not kept in the primary's database.
_MIXINS: tuple[tuple[type, type[ChainBackend]], ...] = (
    (Versioned, _VersionedChain),
    (Destroyable, _DestroyableChain),
    (Recoverable, _RecoverableChain),
    (MetadataWritable, _MetadataWritableChain),
    (Rekeyable, _RekeyableChain),
    (BulkWritable, _BulkWritableChain),
)


def _capabilities(primary: SecretBackend) -> frozenset[type]:
    return frozenset(proto for proto, _ in _MIXINS if isinstance(primary, proto))


@functools.cache
def _class_for(caps: frozenset[type]) -> type[ChainBackend]:
    bases = tuple(mixin for proto, mixin in _MIXINS if proto in caps)
    if not bases:
        return ChainBackend
    label = "+".join(proto.__name__ for proto, _ in _MIXINS if proto in caps)
    name = f"ChainBackend[{label}]"
    return cast(type[ChainBackend], type(name, bases, {"__module__": __name__,
                                                      "__qualname__": name}))
