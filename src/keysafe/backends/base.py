"""The backend protocol and its optional capabilities.

A backend translates one store to these few calls and nothing more: naming, caching,
policy and audit live in the manager. Paths are full store paths produced by the
naming template. Optional features are separate protocols, checked with
``isinstance``; a backend without one simply does not offer it (no stubs that raise).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

from keysafe.errors import Conflict, NotFound
from keysafe.models import MetadataUpdate, SecretMetadata, VersionInfo

Progress = Callable[[int, int], None]


class WriteContext(NamedTuple):
    """Who writes and when; backends store it as created_by/updated_by."""

    actor: str
    now: datetime

    @classmethod
    def make(cls, actor: str) -> WriteContext:
        return cls(actor, datetime.now(UTC))


@runtime_checkable
class SecretBackend(Protocol):
    """The calls every store supports."""

    name: str

    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        """(value, version) of the current or given version. NotFound if absent,
        deleted or destroyed; IntegrityError if stored data fails verification."""
        ...

    def put(self, path: str, value: str, *, ctx: WriteContext,
            expected_version: int | None = None,
            meta: MetadataUpdate | None = None) -> VersionInfo:
        """Write a new version. ``expected_version`` (0 = must not exist) gives
        check-and-set; a mismatch raises Conflict and writes nothing."""
        ...

    def describe(self, path: str, *, include_deleted: bool = False) -> SecretMetadata:
        """Metadata; NotFound if absent (or deleted, unless include_deleted)."""
        ...

    def list(self, prefix: str, *,
             include_deleted: bool = False) -> builtins.list[SecretMetadata]:
        """Every secret whose path starts with ``prefix``, sorted by path."""
        ...

    def delete(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        """Soft delete where the store can recover, else permanent. NotFound if absent."""
        ...

    def ping(self) -> None:
        """Raise BackendUnavailable if the store cannot be reached."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Versioned(Protocol):
    """Keeps old versions and lists them."""

    def versions(self, path: str) -> builtins.list[VersionInfo]: ...


@runtime_checkable
class Destroyable(Protocol):
    """Can crypto-shred chosen versions (Vault KV v2's destroy)."""

    def destroy(self, path: str, versions: builtins.list[int], *,
                ctx: WriteContext) -> builtins.list[int]:
        """Crypto-shred the given versions; returns those destroyed now."""
        ...


@runtime_checkable
class Recoverable(Protocol):
    """Soft delete with restore, and purge (delete now, unrecoverably)."""

    def restore(self, path: str, *, ctx: WriteContext) -> SecretMetadata: ...

    def purge(self, path: str, *, ctx: WriteContext) -> None: ...

    def deleted_before(self, cutoff: datetime) -> builtins.list[str]:
        """Paths soft-deleted before ``cutoff`` (their recovery window has ended)."""
        ...


@runtime_checkable
class MetadataWritable(Protocol):
    def update_metadata(self, path: str, meta: MetadataUpdate, *,
                        ctx: WriteContext) -> SecretMetadata: ...


@runtime_checkable
class Transactional(Protocol):
    """Several calls (a write and its audit record) commit together or not at all."""

    def transaction(self) -> AbstractContextManager[None]: ...


@runtime_checkable
class Rekeyable(Protocol):
    """Re-wraps every stored data key with the key ring's active master key."""

    def rewrap_all(self, progress: Progress | None = None) -> int: ...

    def key_ids_in_use(self) -> set[str]:
        """Master key ids that wrap at least one stored data key."""
        ...


@runtime_checkable
class BulkWritable(Protocol):
    """Many new secrets in one transaction (imports, benchmarks)."""

    def put_many(self, items: Iterator[tuple[str, str]] | builtins.list[tuple[str, str]], *,
                 ctx: WriteContext) -> int: ...


@runtime_checkable
class ForeignReadable(Protocol):
    """Reads secrets by the store's own names, as other tools wrote them
    (``aragora/production/api-keys`` in AWS, ``aragora-anthropic-key`` in GCP), for
    ``keysafe import --from-store``. Read-only: keysafe never writes such a name."""

    def foreign_names(self, prefix: str) -> builtins.list[str]:
        """The store's names starting with ``prefix`` (deleted ones left out), sorted."""
        ...

    def read_foreign(self, name: str) -> str:
        """The current value of the store's secret ``name``, as text; NotFound if none."""
        ...

    def close(self) -> None: ...


class NamesArePaths:
    """ForeignReadable for a store whose names are keysafe paths as they are (AWS
    Secrets Manager, SSM Parameter Store, Vault KV): its own list and get serve."""

    def foreign_names(self: SecretBackend, prefix: str) -> builtins.list[str]:
        return [m.path for m in self.list(prefix)]

    def read_foreign(self: SecretBackend, name: str) -> str:
        return self.get(name)[0]


@runtime_checkable
class Watchable(Protocol):
    """Shared by several processes, and announces what any of them changes (PostgreSQL's
    LISTEN/NOTIFY), so each can drop what it cached at once."""

    def watch(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(path)`` after each committed change; ``"*"`` means anything
        may have changed (drop everything)."""
        ...


#: A "last rotated" before this (seconds since the epoch) is the mark of an exposed value
#: (rotation/policy.py's EXPOSED_AT, 1970-01-01): due at once, whatever its period.
EXPOSED_BEFORE = 86400.0


class DueWindow(NamedTuple):
    """The secrets a scan for due rotations (or coming expiry) has to look at: a superset,
    which the rotation policy then judges one by one. Times are seconds since the epoch.

    - ``by``: a secret with its own period (``rotation_days`` > 0) is in if that period
      has run out by then;
    - ``unowned_before``: a secret without one is in if last rotated (else created) at or
      before then: ``by`` less the shortest period any policy rule gives (None: no rule
      gives one, so none of these is in);
    - ``expiring_by``: any secret whose expiry comes by then is in (None: not asked).
    """

    by: float
    unowned_before: float | None
    expiring_by: float | None = None

    def matches(self, meta: SecretMetadata) -> bool:
        """The same test as ``sql``, for stores without a query language."""
        last = (meta.last_rotated or meta.created_at).timestamp()
        if meta.last_rotated is not None and last < EXPOSED_BEFORE:
            return True  # an exposed value (rotation/policy.py): due whatever its period
        days = meta.rotation_days
        if days is None:
            if self.unowned_before is not None and last <= self.unowned_before:
                return True
        elif days > 0 and last + days * 86400.0 <= self.by:
            return True
        return (self.expiring_by is not None and meta.expires_at is not None
                and meta.expires_at.timestamp() <= self.expiring_by)

    def sql(self, ph: str) -> tuple[str, tuple[float | None, ...]]:
        """A condition on ``secrets s`` (``ph``: the driver's placeholder) and its
        parameters. A NULL bound makes its comparison false, as ``matches`` skips it."""
        last = "COALESCE(s.last_rotated, s.created_at)"
        return (f"(s.last_rotated < {EXPOSED_BEFORE!r}"
                f" OR (s.rotation_days IS NULL AND {last} <= {ph})"
                f" OR (s.rotation_days > 0 AND {last}"
                f" + s.rotation_days * CAST(86400 AS double precision) <= {ph})"
                f" OR s.expires_at <= {ph})",
                (self.unowned_before, self.by, self.expiring_by))


@runtime_checkable
class DueListing(Protocol):
    """Finds the secrets a ``DueWindow`` asks for itself (in the store, not by listing
    every secret): what keeps an hourly rotation scan cheap at a million secrets."""

    def list_due(self, prefix: str, window: DueWindow) -> builtins.list[SecretMetadata]:
        """Live (not deleted) secrets under ``prefix`` in ``window``, in path order."""
        ...


@runtime_checkable
class Leasing(Protocol):
    """Runs a scheduled job on one process at a time, once per period, across every
    process sharing the store."""

    def run_exclusive(self, job: str, every: float, fn: Callable[[], object], *,
                      holder: str) -> bool:
        """Run ``fn`` if ``job`` is due and nobody else is running it; whether it ran."""
        ...


class UndoHooks:
    """What to run if a transaction's work is undone (buffered audit records that a
    write's record took into its transaction go back to the buffer). Each hook belongs
    to the savepoint depth it was added at: rolling back to a savepoint runs the hooks
    added inside it, rolling back the whole transaction runs them all, newest first;
    a commit drops them. Hooks added with ``after`` run once the whole transaction has
    committed (the audit sinks: what is told of a record must have happened), and are
    dropped with the work they belong to if it is rolled back."""

    __slots__ = ("_after", "_hooks")

    def __init__(self) -> None:
        self._hooks: builtins.list[tuple[int, Callable[[], object]]] = []
        self._after: builtins.list[tuple[int, Callable[[], object]]] = []

    def add(self, depth: int, fn: Callable[[], object]) -> None:
        self._hooks.append((depth, fn))

    def after(self, depth: int, fn: Callable[[], object]) -> None:
        self._after.append((depth, fn))

    def released(self, outer: int) -> None:
        """A savepoint at depth ``outer + 1`` was released: its work is now the work of
        the level around it, and goes (or stays) with that level's fate; a sibling
        savepoint rolled back later must not take it along."""
        for hooks in (self._hooks, self._after):
            if hooks and hooks[-1][0] > outer:
                hooks[:] = [(min(d, outer), fn) for d, fn in hooks]

    def committed(self) -> None:
        """The transaction committed: run the ``after`` hooks, in order; drop the rest."""
        if self._hooks:
            self._hooks = []
        if not self._after:
            return  # the usual case: a commit with no sink to tell
        after, self._after = self._after, []
        for _, fn in after:
            _run_hook(fn, "commit")

    def undone(self, above: int = 0) -> None:
        """The work at depths greater than ``above`` was rolled back."""
        if self._after:
            self._after = [h for h in self._after if h[0] <= above]
        if not self._hooks:
            return
        run = [fn for d, fn in self._hooks if d > above]
        self._hooks = [h for h in self._hooks if h[0] <= above]
        for fn in reversed(run):
            _run_hook(fn, "undo")


def _run_hook(fn: Callable[[], object], kind: str) -> None:
    try:
        fn()
    except Exception:  # never mask the transaction's own outcome
        import logging

        logging.getLogger("keysafe").exception("%s hook %r failed", kind, fn)


def remove_now(backend: Any, path: str, *, ctx: WriteContext) -> None:
    """``path`` gone for good: purged where the store keeps deleted secrets for a
    recovery window, deleted elsewhere. NotFound if there is nothing there."""
    if isinstance(backend, Recoverable):
        backend.purge(path, ctx=ctx)
    else:
        backend.delete(path, ctx=ctx)


def check_cas(path: str, expected: int | None, current: int) -> None:
    """Raise Conflict unless ``expected`` is None or equals ``current`` (0 = absent)."""
    if expected is not None and expected != current:
        if expected == 0:
            msg = f"{path} already exists (version {current}); expected it not to"
        elif current == 0:
            msg = f"{path} does not exist; expected version {expected}"
        else:
            msg = f"{path} is at version {current}, not the expected {expected}"
        raise Conflict(msg, path=path, current_version=current)


def not_found(path: str, version: int | None = None) -> NotFound:
    if version is None:
        return NotFound(f"secret {path} not found", path=path)
    return NotFound(f"secret {path} has no version {version}", path=path)


def utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)
