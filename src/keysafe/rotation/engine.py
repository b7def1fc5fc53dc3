"""The rotation protocol, the same for every rotator (AWS Secrets Manager's four steps).

1. **create**: the rotator generates the new value; it is stored as the *pending* record
   (a sibling of the secret, never current).
2. **apply**: the rotator sets it in the target system (``applying`` is recorded first, so
   a crash inside is recognised).
3. **test**: the rotator proves the new value works there.
4. **promote**: the new value becomes the secret's current version (check-and-set on the
   version the rotation started from); the old value is kept as the *previous* record for
   a grace period, after which the rotator retires it.

A failure at any step leaves the current version untouched: the rotator's ``rollback``
undoes ``apply``, the pending record is discarded, the audit log says which step failed
and why, and RotationError is raised. A run that finds a pending record (a crash) resumes
it from its recorded step or rolls it back; it is never left half-done.

Pending and previous records live beside the secrets at ``_rotation/<path>/pending`` and
``.../previous`` (outside every naming template, so never listed), sealed like any value.
"""

from __future__ import annotations

import builtins
import contextlib
import secrets as _secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from keysafe.backends.base import Transactional, WriteContext, remove_now
from keysafe.errors import Conflict, KeysafeError, NotFound, RotationBusy, RotationError
from keysafe.models import MetadataUpdate, SecretMetadata
from keysafe.rotation.policy import DUE_SOON, Policy, RotationState, select, sort_states
from keysafe.rotation.rotators import (
    ManualRotation,
    RotationContext,
    Rotator,
    load_rotator,
    options_of,
)

if TYPE_CHECKING:
    from keysafe.manager.manager import SecretManager
    from keysafe.naming import SecretRef
    from keysafe.rotation.events import Events

STEPS = ("created", "applying", "applied", "tested", "promoting")
#: How many times a linked secret is read, followed and written when other writers keep
#: changing it under a store without transactions.
LINK_TRIES = 3
_PREFIX = "_rotation"


#: What record paths start with, for relative and for absolute (``/...``) secret paths.
_RELATIVE, _ABSOLUTE = f"{_PREFIX}/", f"/{_PREFIX}"


def record_path(path: str, kind: str) -> str:
    """Where a secret's pending or previous record lives."""
    return f"{_ABSOLUTE if path.startswith('/') else _RELATIVE}{path}/{kind}"


def secret_path_of(rpath: str) -> tuple[str, str]:
    """(secret path, kind) of a record path."""
    lead = _ABSOLUTE if rpath.startswith("/") else _RELATIVE
    path, _, kind = rpath[len(lead):].rpartition("/")
    return path, kind


@dataclass
class Outcome:
    path: str
    name: str
    org: str
    outcome: str            # rotated, failed, reminder, waiting, planned, resumed, busy,
    #                         skipped
    version: int | None = None
    step: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "org": self.org,
                "outcome": self.outcome, "version": self.version, "step": self.step,
                "detail": self.detail}


@dataclass
class Stats:
    rotated: int = 0
    failed: int = 0
    reminders: int = 0
    retired: int = 0
    resumed: int = 0
    counts: dict[str, int] = field(default_factory=dict)


class RotationEngine:
    """Rotations through one manager (its store, naming, audit and cache)."""

    def __init__(self, manager: SecretManager, *, policy: Policy | None = None,
                 grace: timedelta = timedelta(hours=24), events: Events | None = None,
                 rotator_factory: Callable[[str], Rotator] = load_rotator) -> None:
        self.mgr = manager
        self.policy = policy or Policy(manager.catalog)
        self.grace = grace
        self.events = events
        self.load = rotator_factory
        self.stats = Stats()
        self.overdue = 0  # at the last remind()
        # Shared by every engine of this manager and its per-request copies (as_actor),
        # so two rotations of one secret in this process take turns.
        locks = getattr(manager, "_rotation_locks", None)
        self._locks: dict[str, threading.Lock] = locks if locks is not None else {}

    @classmethod
    def from_settings(cls, manager: SecretManager, settings: Any) -> RotationEngine:
        from keysafe.rotation.events import Events

        return cls(manager, policy=Policy.from_settings(manager.catalog, settings),
                   grace=timedelta(hours=settings.rotation_grace_hours),
                   events=Events.from_settings(settings))

    # -- status -----------------------------------------------------------------------
    def states(self, org: str | None = None, domain: str | None = None,
               now: datetime | None = None) -> builtins.list[RotationState]:
        """Every secret's rotation state, overdue first."""
        return sort_states(st for st, _ in self._judge(self.mgr.list(org, domain=domain), now))

    def due(self, org: str | None = None, domain: str | None = None,
            now: datetime | None = None) -> builtins.list[RotationState]:
        """The overdue secrets' states: only those the store finds in the policy's window
        are judged, so an hourly scan of a large store reads a handful of rows, not all."""
        now = now or datetime.now(UTC)
        metas = self.mgr.list_due(self.policy.window(now), org, domain=domain)
        return select(sort_states(st for st, _ in self._judge(metas, now)), "due")

    def _judge(self, metas: Iterable[SecretMetadata], now: datetime | None
               ) -> Iterator[tuple[RotationState, SecretMetadata]]:
        for meta in metas:
            ref = self.mgr.parse(meta.path)
            yield self.policy.state(meta, ref.org, ref.domain, ref.name, now), meta

    # -- running ------------------------------------------------------------------------
    def read_by(self, actor: str, since: datetime, org: str | None = None) -> set[str]:
        """The paths whose values ``actor`` read or wrote since then, by the audit log
        (spec 004's "offboarding" and "permission changes" triggers: what someone who
        leaves, or loses access, knows: what they read, and what they pasted in)."""
        from keysafe.manager.access import READ_OUTCOMES, READS
        from keysafe.manager.audit import AuditFilter

        self.mgr.audit.flush()
        rows = self.mgr.audit.store.activity(
            AuditFilter(org=org, actor=actor, since=since), ("path",),
            actions=(*READS, "write"), outcomes=READ_OUTCOMES, paths=False)
        return {row[0] for row in rows if row[0]}

    def records_by(self, actor: str, since: datetime, org: str | None = None) -> int:
        """How many audit records ``actor`` has since then (0: a misspelt identity?)."""
        from keysafe.manager.audit import AuditFilter

        self.mgr.audit.flush()
        rows = self.mgr.audit.store.activity(
            AuditFilter(org=org, actor=actor, since=since), ("actor",), paths=False)
        return sum(int(row[1]) for row in rows)

    def run(self, which: str, *, org: str | None = None, domain: str | None = None,
            dry_run: bool = False, read_by: tuple[str, datetime] | None = None,
            progress: Callable[[int, int], None] | None = None,
            remind: bool = True) -> builtins.list[Outcome]:
        """Rotate a selection (all, due, symmetric, api-keys, database) or one NAME
        (which then needs ``org``). Failures are reported per secret, not raised.
        ``due`` is the scheduled run: a secret that needs the maintenance window is
        reported as ``waiting`` outside it; a person naming a secret or a category
        chooses the moment. ``read_by`` (actor, since) keeps only the secrets of the
        selection that actor read since then. ``remind`` False: a secret only a person
        can issue (the ``manual`` rotator) is reported as ``reminder`` without a
        reminder record or event (the scheduled run sends those), as a run asked for
        over HTTP is, so that asking again and again floods nobody."""
        now = datetime.now(UTC)
        if which == "due":
            chosen = self.due(org, domain, now)
        elif which in ("all", "symmetric", "api-keys", "database"):
            states = self.states(org, domain)
            # Offboarding: all that identity knows, scheduled or not.
            chosen = (states if which == "all" and read_by is not None
                      else select(states, which))
        else:
            if org is None:
                raise RotationError(f"rotating {which!r} needs --org")
            meta = self.mgr.describe(which, org, domain=domain)
            ref = self.mgr.parse(meta.path)
            chosen = [self.policy.state(meta, ref.org, ref.domain, ref.name)]
        if read_by is not None:
            seen = self.read_by(read_by[0], read_by[1], org)
            chosen = [st for st in chosen if st.path in seen]
        results = []
        for i, st in enumerate(chosen):
            waits = self.policy.waits(st, now) if which == "due" else None
            if waits is not None:
                results.append(Outcome(st.path, st.name, st.org, "waiting", st.version,
                                       None, waits))
            elif dry_run:
                results.append(Outcome(st.path, st.name, st.org, "planned",
                                       st.version, None, f"rotator {st.rotator}; {st.status}"))
            elif not remind and st.rotator == "manual":
                results.append(Outcome(st.path, st.name, st.org, "reminder", st.version,
                                       "create", "only a person can issue a new value: "
                                       "issue one with its provider and save it"))
            else:
                results.append(self._rotate_reporting(st))
            if progress:
                progress(i + 1, len(chosen))
        return results

    def _rotate_reporting(self, st: RotationState) -> Outcome:
        try:
            return self.rotate(st.name, st.org, domain=st.domain, selected=st.version)
        except RotationBusy as exc:
            return Outcome(st.path, st.name, st.org, "busy", st.version, None, exc.message)
        except ManualRotation as exc:
            return Outcome(st.path, st.name, st.org, "reminder", st.version, "create",
                           exc.message)
        except KeysafeError as exc:
            return Outcome(st.path, st.name, st.org, "failed", st.version,
                           getattr(exc, "step", None), exc.message)

    def rotate(self, name: str, org: str, *, domain: str | None = None,
               selected: int | None = None) -> Outcome:
        """Rotate one secret now (resuming a crashed rotation first). Raises
        RotationError (ManualRotation for a reminder) if it cannot, RotationBusy if
        another process is rotating it. ``selected``: the version a run chose it at;
        if it has changed by the time this rotation may start (another rotation took
        its turn first), it is left alone (outcome ``skipped``)."""
        path = self.mgr.path(name, org, domain=domain)
        lock = self._locks.setdefault(path, threading.Lock())
        with lock, self._hold(path) as held:
            if not held:
                # Another process is rotating it: its pending value is not a crash's.
                raise RotationBusy(f"a rotation of {path} is running in another "
                                   "process; try again when it has finished", path=path)
            if selected is not None:
                now_at = self.mgr.backend.describe(path).current_version
                if now_at != selected:
                    ref = self.mgr.parse(path)
                    return Outcome(path, ref.name, ref.org, "skipped", now_at, None,
                                   f"changed since it was selected (version {selected})")
            return self._rotate(path)

    def _hold(self, path: str) -> AbstractContextManager[bool]:
        """The secret held against other processes for one rotation: an advisory lock
        in the shared database (PostgreSQL, or the state database in front of a cloud
        store), else a file lock in KEYSAFE_HOME (the processes of one machine)."""
        for shared in (self.mgr.state, self.mgr.backend):
            hold = getattr(shared, "hold", None)
            if hold is not None:
                held: AbstractContextManager[bool] = hold(f"rotate:{path}")
                return held
        settings = self.mgr._settings
        if settings is not None and getattr(self.mgr.backend, "name", None) != "memory":
            from keysafe.scheduler import hold_locally

            return hold_locally(settings.home / "jobs", f"rotate:{path}")
        return nullcontext(True)

    def _rotate(self, path: str) -> Outcome:
        ref = self.mgr.parse(path)
        meta = self.mgr.backend.describe(path)
        st = self.policy.state(meta, ref.org, ref.domain, ref.name)
        rotator = self.load(st.rotator)
        ctx = self._context(path, meta.tags)
        resumed = self._resume(path, rotator, ctx)
        if resumed is not None:
            return resumed
        ctx.current, base = self._current(path)
        rid = _secrets.token_hex(6)
        step = "create"
        new: str | None = None
        try:
            try:
                new = rotator.generate(ctx)
            except ManualRotation as exc:
                self._audit(path, ref.org, "reminder", base, {"rotator": st.rotator})
                self.stats.reminders += 1
                self._event("rotation.reminder", path, ref.org, base, exc.message)
                raise
            if not isinstance(new, str) or not new:
                raise RotationError(f"rotator {st.rotator} produced no value")
            # Before apply: a value of the wrong shape goes nowhere else. Its own step, so
            # a failure is rolled back: a rotator may have made the value live already in
            # generate (a webhook's new key).
            step = "check"
            entry = self.mgr.catalog.get(ref.name)
            problem = entry.check_format(new) if entry is not None else None
            if problem:
                raise RotationError(f"rotator {st.rotator} made a value that does not fit "
                                    f"{ref.name}: {problem}")
            if self._atomic(rotator):
                self._check_key(st.rotator, ref, new)
                # Nothing outside keysafe to keep in step: one transaction, no journal.
                with self.mgr.backend.transaction():  # type: ignore[attr-defined]
                    step = "apply"
                    rotator.apply(ctx, new)
                    step = "test"
                    rotator.test(ctx, new)
                    step = "promote"
                    version = self._promote(path, ref.org, rotator, ctx, new, base, rid,
                                            journal=False)
                # The promote invalidated the cache before this commit; a read in between
                # (on another connection) could have cached the old state again.
                self.mgr.cache.invalidate(path)
            else:
                self._put_record(path, "pending", new, {
                    "rotation.id": rid, "rotation.step": "created",
                    "rotation.base_version": str(base), "rotation.rotator": st.rotator})
                self._audit(path, ref.org, "pending_created", base, {"rotation": rid})
                # Journaled first: a crash while the provider is asked leaves a record
                # whose key the next run has the rotator revoke.
                self._check_key(st.rotator, ref, new)
                step = "apply"
                self._mark(path, "applying")
                rotator.apply(ctx, new)
                self._mark(path, "applied")
                step = "test"
                rotator.test(ctx, new)
                self._mark(path, "tested")
                step = "promote"
                version = self._promote(path, ref.org, rotator, ctx, new, base, rid)
        except ManualRotation:
            raise
        except Exception as exc:
            self._fail(path, ref.org, rotator, ctx, new, base, step, exc)
            raise _step_error(exc, step, path) from None
        self.stats.rotated += 1
        self._event("rotation.succeeded", path, ref.org, version, "")
        return Outcome(path, ref.name, ref.org, "rotated", version, None, f"rotator "
                       f"{st.rotator}")

    # -- steps ----------------------------------------------------------------------------
    def _check_key(self, rotator: str, ref: SecretRef, new: str) -> None:
        """Spec 004's "validation after rotation": a key its provider refuses is never
        applied (docs/key-checks.md). No verdict (the provider unreachable) does not stop
        the rotation: the rotator's own test step still runs."""
        verdict = self.mgr.check_key(ref.name, new, ref.org, domain=ref.domain,
                                     check_format=False)
        if verdict.rejected:
            raise RotationError(f"rotator {rotator} made a key its provider refused: "
                                f"{verdict.detail}")


    def _atomic(self, rotator: Rotator) -> bool:
        """A rotator whose secret lives only in keysafe (``local = True``: nothing to set
        in another system) rotates in one store transaction: the steps commit together or
        not at all, so a crash leaves nothing to resume and no pending record is needed.
        Others record each step as it happens (the journal)."""
        return bool(getattr(rotator, "local", False)) and isinstance(self.mgr.backend,
                                                                     Transactional)

    def _context(self, path: str, tags: dict[str, str]) -> RotationContext:
        ref = self.mgr.parse(path)

        def read(other: str) -> str:
            return self.mgr.get(other, ref.org, domain=ref.domain, fresh=True)

        return RotationContext(path, ref.name, ref.org, ref.domain, options_of(tags), read)

    def _current(self, path: str) -> tuple[str, int]:
        value, version = self.mgr.backend.get(path)
        return value, version

    def _put_record(self, path: str, kind: str, value: str, tags: dict[str, str]) -> None:
        rpath = record_path(path, kind)
        b = self.mgr.backend
        self._drop(rpath)
        b.put(rpath, value, ctx=WriteContext.make(self.mgr.actor),
              meta=MetadataUpdate(tags=tags, secret_type="generic"))

    def _record(self, path: str, kind: str) -> tuple[str, dict[str, str]] | None:
        rpath = record_path(path, kind)
        try:
            meta = self.mgr.backend.describe(rpath)
            value, _ = self.mgr.backend.get(rpath)
        except NotFound:
            return None
        return value, dict(meta.tags)

    def _mark(self, path: str, step: str) -> None:
        rpath = record_path(path, "pending")
        b = self.mgr.backend
        tags = dict(b.describe(rpath).tags)
        tags["rotation.step"] = step
        b.update_metadata(rpath, MetadataUpdate(tags=tags),  # type: ignore[attr-defined]
                          ctx=WriteContext.make(self.mgr.actor))

    def _drop(self, rpath: str) -> None:
        with contextlib.suppress(NotFound):
            remove_now(self.mgr.backend, rpath, ctx=WriteContext.make(self.mgr.actor))

    def _promote(self, path: str, org: str, rotator: Rotator, ctx: RotationContext,
                 new: str, base: int, rid: str, *, journal: bool = True) -> int:
        if journal:
            self._mark(path, "promoting")
        ref = self.mgr.parse(path)
        # On a store with transactions the linked secrets are read now and written with
        # the promotion; without, after it (the new value must be current first).
        together = isinstance(self.mgr.backend, Transactional)
        linked = self._linked(rotator, ctx, new) if together else []
        with (self.mgr.backend.transaction() if together and linked  # type: ignore[attr-defined]
              else nullcontext()):
            # No tags: a put keeps them as they are at that moment (one passed from an
            # earlier describe would undo a `keysafe tag` made in between).
            info = self.mgr.put(ref.name, new, ref.org, domain=ref.domain,
                                expected_version=base, check_format=False)
            if together:
                # In the promotion's transaction: a linked secret changed since it was
                # read fails the promotion, and the target is rolled back.
                self._write_linked(ref, linked)
        if together:
            for name, *_ in linked:
                self.mgr.cache.invalidate(self.mgr.path(name, ref.org, domain=ref.domain))
            names = [name for name, *_ in linked]
        else:
            names = self._sync_linked(path, ref, rotator, ctx, new, info.version)
        self._finish(path, org, rotator, ctx, new, ctx.current, info.version, rid,
                     journal=journal, linked=names)
        return info.version

    # -- linked secrets (the same credential in another shape) -------------------------------
    def _linked(self, rotator: Rotator, ctx: RotationContext, new: str,
                only: str | None = None) -> builtins.list[tuple[str, str, int]]:
        """(name, value, version it replaces) of each linked secret the new value changes:
        the rotator's ``linked(ctx)`` names them, its ``follow(ctx, new, held, name)``
        says what each becomes (and raises for one it cannot keep in step)."""
        names = getattr(rotator, "linked", None)
        follow = getattr(rotator, "follow", None)
        if names is None or follow is None:
            return []
        out = []
        for name in names(ctx) if only is None else [only]:
            lpath = self.mgr.path(name, ctx.org, domain=ctx.domain)
            held, version = self.mgr.backend.get(lpath)
            value = follow(ctx, new, held, name)
            if value != held:
                out.append((name, value, version))
        return out

    def _write_linked(self, ref: SecretRef, linked: Iterable[tuple[str, str, int]]
                      ) -> None:
        for name, value, version in linked:
            self.mgr.put(name, value, ref.org, domain=ref.domain, expected_version=version,
                         check_format=False)

    def _sync_linked(self, path: str, ref: SecretRef, rotator: Rotator,
                     ctx: RotationContext, new: str, version: int) -> builtins.list[str]:
        """Linked secrets written after the promotion, on a store without transactions
        (and when resuming one a crash interrupted), each on its own; the names written.
        A link another writer changed meanwhile (its check-and-set lost) is read and
        followed again, up to ``LINK_TRIES`` times. The new value is current and works:
        a link that still cannot be written is audited (``linked_failed``, naming it)
        and the others are still written; nothing is undone in the target."""
        names = getattr(rotator, "linked", None)
        if names is None or getattr(rotator, "follow", None) is None:
            return []
        done = []
        for name in names(ctx):
            for attempt in range(1, LINK_TRIES + 1):
                try:
                    one = self._linked(rotator, ctx, new, only=name)
                    self._write_linked(ref, one)
                except Conflict:
                    if attempt < LINK_TRIES:
                        continue
                    self._audit(path, ref.org, "linked_failed", version,
                                {"linked": name, "reason": f"changed by another writer "
                                                          f"{LINK_TRIES} times"})
                except Exception as exc:
                    reason = (exc.message if isinstance(exc, KeysafeError)
                              else type(exc).__name__)
                    self._audit(path, ref.org, "linked_failed", version,
                                {"linked": name, "reason": reason})
                else:
                    done += [n for n, *_ in one]
                break
        return done

    def _finish(self, path: str, org: str, rotator: Rotator, ctx: RotationContext,
                new: str, old: str | None, version: int, rid: str, *,
                journal: bool = True, linked: builtins.list[str] | None = None) -> None:
        promoted = getattr(rotator, "promoted", None)
        if promoted is not None:
            # The new value is current and tested: a failing notification must not undo
            # it (rolling the target back now would leave current a dead credential).
            try:
                promoted(ctx, new)
            except Exception as exc:
                reason = exc.message if isinstance(exc, KeysafeError) else type(exc).__name__
                self._audit(path, org, "promoted_hook_failed", version, {"reason": reason})
        if old is not None:
            until = datetime.now(UTC) + self.grace
            self._put_record(path, "previous", old, {
                "rotation.id": rid, "rotation.expires": until.isoformat(),
                "rotation.rotator": getattr(rotator, "name", "?"),
                "rotation.version": str(version - 1)})
        if journal:
            self._drop(record_path(path, "pending"))
        detail: dict[str, Any] = {"rotation": rid,
                                  "grace_hours": self.grace.total_seconds() / 3600}
        if linked:
            detail["linked"] = linked
        self._audit(path, org, "ok", version, detail)

    def _fail(self, path: str, org: str, rotator: Rotator, ctx: RotationContext,
              new: str | None, base: int, step: str, exc: BaseException) -> None:
        """Undo what the failed rotation did in the target, discard the pending record."""
        undone = "nothing to undo"
        if new is not None and step != "create":
            try:
                rotator.rollback(ctx, new)
                undone = "rolled back in the target"
            except Exception as rb:  # the audit log says so; an operator must look
                undone = f"ROLLBACK FAILED ({type(rb).__name__})"
        self._drop(record_path(path, "pending"))
        reason = exc.message if isinstance(exc, KeysafeError) else type(exc).__name__
        self.stats.failed += 1
        self._audit(path, org, "failed", base, {"step": step, "reason": reason,
                                                "undo": undone}, durable=True)
        self._event("rotation.failed", path, org, base, f"step {step}: {reason}; {undone}")

    def _resume(self, path: str, rotator: Rotator, ctx: RotationContext) -> Outcome | None:
        """Finish or roll back a rotation a crash interrupted. None: nothing pending (or
        it was discarded), go on with a new rotation."""
        rec = self._record(path, "pending")
        if rec is None:
            return None
        new, tags = rec
        step = tags.get("rotation.step", "created")
        base = int(tags.get("rotation.base_version", "0") or 0)
        rid = tags.get("rotation.id", "?")
        ref = self.mgr.parse(path)
        current, version = self._current(path)
        ctx.current = current
        self.stats.resumed += 1
        if step == "promoting" and version > base and current == new:
            # Promoted before the crash: only the clean-up was lost.
            old = self._version_value(path, base)
            linked = self._sync_linked(path, ref, rotator, ctx, new, version)
            self._finish(path, ref.org, rotator, ctx, new, old, version, rid, linked=linked)
            self._audit(path, ref.org, "resumed", version, {"rotation": rid, "from": step,
                                                            "result": "completed"})
            return Outcome(path, ref.name, ref.org, "resumed", version, step,
                           "completed an interrupted promotion")
        if version != base:
            # Someone wrote the secret since: the pending value lost; undo it in the target.
            self._fail(path, ref.org, rotator, ctx, new, base, "apply", Conflict(
                f"{path} changed during an interrupted rotation"))
            return None
        if step == "created":
            # Never applied, but generate may have made it live (a key the provider
            # issued through a webhook, then a crash while it was being checked): the
            # rotator revokes it, as after a failure at that step.
            undone = "rolled back in the target"
            try:
                rotator.rollback(ctx, new)
            except Exception as rb:  # the audit log says so; an operator must look
                undone = f"ROLLBACK FAILED ({type(rb).__name__})"
            self._drop(record_path(path, "pending"))
            self._audit(path, ref.org, "resumed", base, {"rotation": rid, "from": step,
                                                         "result": "discarded",
                                                         "undo": undone})
            return None
        try:
            rotator.test(ctx, new)  # applying/applied/tested/promoting: does it work?
            if step == "applying":
                self._mark(path, "applied")
            v = self._promote(path, ref.org, rotator, ctx, new, base, rid)
        except Exception as exc:
            self._fail(path, ref.org, rotator, ctx, new, base, "test", exc)
            self._audit(path, ref.org, "resumed", base, {"rotation": rid, "from": step,
                                                         "result": "rolled back"})
            raise _step_error(exc, "test", path) from None
        self._audit(path, ref.org, "resumed", v, {"rotation": rid, "from": step,
                                                  "result": "completed"})
        self.stats.rotated += 1
        return Outcome(path, ref.name, ref.org, "resumed", v, step,
                       "completed an interrupted rotation")

    def _version_value(self, path: str, version: int) -> str | None:
        try:
            return self.mgr.backend.get(path, version)[0]
        except KeysafeError:
            return None

    # -- grace period -------------------------------------------------------------------
    def previous(self, name: str, org: str, *, domain: str | None = None,
                 now: datetime | None = None) -> str | None:
        """The value a rotation replaced, while its grace period lasts."""
        return previous_value(self.mgr.backend, self.mgr.path(name, org, domain=domain), now)

    def retire_expired(self, now: datetime | None = None, *,
                       dry_run: bool = False) -> builtins.list[str]:
        """Retire every previous value whose grace period has ended: the rotator revokes
        it in the target, then the record is purged. Returns the secret paths (with
        ``dry_run``: those it would retire, changing nothing)."""
        done = []
        for rpath in self._records("previous"):
            path, _ = secret_path_of(rpath)
            rec = self._record(path, "previous")
            if rec is None or not _expired(rec[1], now):
                continue
            if dry_run:
                done.append(path)
                continue
            # Held as a rotation holds it: a rotation finishing meanwhile writes a new
            # previous value, which must not be the one dropped (nor one retired twice).
            lock = self._locks.setdefault(path, threading.Lock())
            with lock, self._hold(path) as held:
                if not held:
                    continue  # being rotated elsewhere: the next retire takes it
                rec = self._record(path, "previous")
                if rec is None or not _expired(rec[1], now):
                    continue
                if self._retire_one(path, rpath, *rec):
                    done.append(path)
        return done

    def _retire_one(self, path: str, rpath: str, old: str, tags: dict[str, str]) -> bool:
        """Revoke ``old`` in the target and drop its record (the secret held)."""
        org = self.mgr.parse(path).org if self.mgr.naming.matches(path) else None
        try:
            meta = self.mgr.backend.describe(path, include_deleted=True)
            rotator = self.load(tags.get("rotation.rotator", "manual"))
            ctx = self._context(path, meta.tags)
            ctx.current = self._version_value(path, meta.current_version)
            rotator.retire(ctx, old)
        except Exception as exc:  # one bad target must not stop the others
            reason = exc.message if isinstance(exc, KeysafeError) else type(exc).__name__
            self._audit(path, org, "retire_failed", None, {"reason": reason})
            return False
        self._drop(rpath)
        self.stats.retired += 1
        self._audit(path, org, "retired", None, {"rotation": tags.get("rotation.id")})
        return True

    def _records(self, kind: str) -> Iterator[str]:
        for prefix in (_RELATIVE, f"{_ABSOLUTE}/"):
            for meta in self.mgr.backend.list(prefix):
                if meta.path.endswith(f"/{kind}"):
                    yield meta.path

    # -- audit and events -----------------------------------------------------------------
    def _audit(self, path: str, org: str | None, outcome: str, version: int | None,
               detail: dict[str, Any], *, durable: bool = True) -> None:
        self.mgr.record("rotate", path, outcome, org=org, version=version, detail=detail,
                        durable=durable)

    def _event(self, kind: str, path: str, org: str, version: int | None, detail: str) -> None:
        if self.events is not None:
            self.events.emit(kind, {"path": path, "org": org, "version": version,
                                    "detail": detail})

    def remind(self, org: str | None = None, now: datetime | None = None
               ) -> builtins.list[RotationState]:
        """Send a reminder event for each secret due within a week, overdue, or expiring
        within a week; returns their states."""
        now = now or datetime.now(UTC)
        out = []
        soon = now + DUE_SOON
        window = self.policy.window(soon, expiring_by=now + timedelta(days=7))
        metas = {m.path: m for m in self.mgr.list_due(window, org)}
        states = sort_states(st for st, _ in self._judge(metas.values(), now))
        self.overdue = sum(1 for st in states if st.status == "overdue")
        for st in states:
            meta = metas[st.path]
            expiring = meta.expires_at is not None and meta.expires_at - now <= timedelta(days=7)
            if st.status in ("overdue", "due_soon") or expiring:
                out.append(st)
                due = st.next_due.isoformat() if st.next_due else "-"
                self._event("rotation.due" if not expiring else "secret.expiring", st.path,
                            st.org, st.version,
                            "exposed: rotate it now" if st.exposed
                            else f"{st.status}; next due {due}")
        return out


def previous_value(backend: Any, path: str, now: datetime | None = None) -> str | None:
    """The previous value of ``path`` while its grace period lasts, else None."""
    got = previous_record(backend, path, now)
    return None if got is None else got[0]


def previous_record(backend: Any, path: str, now: datetime | None = None
                    ) -> tuple[str, int | None] | None:
    """(value, the version it was) of ``path``'s previous value while its grace period
    lasts, else None."""
    rpath = record_path(path, "previous")
    try:
        tags = backend.describe(rpath).tags
        if _expired(tags, now):
            return None
        value: str = backend.get(rpath)[0]
    except NotFound:
        return None
    was = tags.get("rotation.version", "")
    return value, int(was) if was.isdigit() else None


def _expired(tags: dict[str, str], now: datetime | None) -> bool:
    until = tags.get("rotation.expires")
    if not until:
        return True
    try:
        return datetime.fromisoformat(until) <= (now or datetime.now(UTC))
    except ValueError:
        return True


def _step_error(exc: BaseException, step: str, path: str) -> RotationError:
    reason = exc.message if isinstance(exc, KeysafeError) else type(exc).__name__
    err = RotationError(f"rotation of {path} failed at step {step}: {reason}; the current "
                        "version is unchanged", path=path)
    err.step = step  # type: ignore[attr-defined]
    return err
