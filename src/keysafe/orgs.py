"""Organisations as a whole: what each holds, and a tenant's offboarding (every secret
of an org deleted, or purged, and the tokens that covered only that org revoked) and
its undoing within the recovery window. Values never leave the store."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from keysafe.errors import Conflict, KeysafeError

if TYPE_CHECKING:
    from keysafe.manager.manager import SecretManager
    from keysafe.models import SecretMetadata
    from keysafe.naming import SecretRef


@dataclass(frozen=True)
class OrgSummary:
    org: str
    secrets: int       # live
    deleted: int       # soft-deleted, restorable
    domains: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"org": self.org, "secrets": self.secrets, "deleted": self.deleted,
                "domains": list(self.domains)}


@dataclass(frozen=True)
class Step:
    """One secret's outcome: deleted, purged, restored, would_* (a dry run), failed."""

    path: str
    outcome: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "outcome": self.outcome, "detail": self.detail}


def tally(steps: Iterable[Any]) -> dict[str, int]:
    """How many steps (anything with an ``outcome``) ended in each outcome."""
    counts: dict[str, int] = {}
    for s in steps:
        counts[s.outcome] = counts.get(s.outcome, 0) + 1
    return counts


def _each(mgr: SecretManager, metas: list[SecretMetadata], act: Callable[..., object],
          done: str, dry_run: bool,
          progress: Callable[[int, int], None] | None) -> list[Step]:
    """``act(name, org, domain=)`` on each secret (``would_<done>`` in a dry run); a
    failure is a step of its own, not raised."""
    out = []
    for i, meta in enumerate(metas):
        ref = mgr.parse(meta.path)
        if dry_run:
            out.append(Step(meta.path, f"would_{done.removesuffix('d')}"))
        else:
            try:
                act(ref.name, ref.org, domain=ref.domain)
                out.append(Step(meta.path, done))
            except KeysafeError as exc:
                out.append(Step(meta.path, "failed", exc.message))
        if progress:
            progress(i + 1, len(metas))
    return out


def summaries(mgr: SecretManager, keep: Callable[[SecretRef], bool] | None = None,
              orgs: Iterable[str] | None = None) -> list[OrgSummary]:
    """Every org the store holds secrets for (in this environment), by name; only
    ``orgs`` when given (the store lists those alone), counting only the secrets
    ``keep`` accepts (a caller's scopes)."""
    per: dict[str, dict[str, Any]] = {}
    metas = (mgr.list(None, include_deleted=True) if orgs is None else
             [m for o in sorted(set(orgs)) for m in mgr.list(o, include_deleted=True)])
    for meta in metas:
        ref = mgr.parse(meta.path)
        if keep is not None and not keep(ref):
            continue
        s = per.setdefault(ref.org, {"secrets": 0, "deleted": 0, "domains": set()})
        s["deleted" if meta.deleted else "secrets"] += 1
        s["domains"].add(ref.domain)
    return [OrgSummary(org, s["secrets"], s["deleted"], tuple(sorted(s["domains"])))
            for org, s in sorted(per.items())]


def recoverable(mgr: SecretManager) -> bool:
    """Whether the store deletes softly (SSM Parameter Store, for one, does not)."""
    from keysafe.backends.base import Recoverable

    return isinstance(mgr.backend, Recoverable)


_BUSY: set[tuple[str, str]] = set()
_BUSY_LOCK = threading.Lock()


@contextmanager
def _alone(mgr: SecretManager, org: str, dry_run: bool) -> Iterator[None]:
    """One removal or restore of an org at a time in this process (a restore running
    beside the removal it undoes would take the removal's later deletes for deliberate
    ones); Conflict for the second. A dry run changes nothing and never waits."""
    key = (mgr.env, org)
    if dry_run:
        yield
        return
    with _BUSY_LOCK:
        if key in _BUSY:
            raise Conflict(f"org {org!r} is being removed or restored right now: try again "
                           "when that ends")
        _BUSY.add(key)
    try:
        yield
    finally:
        with _BUSY_LOCK:
            _BUSY.discard(key)


def remove_org(mgr: SecretManager, org: str, *, purge: bool = False, dry_run: bool = False,
               progress: Callable[[int, int], None] | None = None) -> list[Step]:
    """Delete every secret of ``org`` in every domain: soft (restorable with
    ``restore_org`` within the recovery window), or with ``purge`` (or on a store
    without soft delete) destroyed now, soft-deleted ones included. Each is audited,
    and the removal itself (``org_remove``, which ``restore_org`` starts from); a
    failure is reported, not raised."""
    purge = purge or not recoverable(mgr)

    def delete(name: str, org: str, *, domain: str) -> None:
        mgr.delete(name, org, domain=domain, force=purge)

    with _alone(mgr, org, dry_run):
        metas = [m for m in mgr.list(org, include_deleted=purge) if purge or not m.deleted]
        if not dry_run:
            mgr.record("org_remove", None, "ok", org=org, durable=True,
                       detail={"purge": purge, "secrets": len(metas)})
        return _each(mgr, metas, delete, "purged" if purge else "deleted", dry_run,
                     progress)


def restore_org(mgr: SecretManager, org: str, *, dry_run: bool = False,
                progress: Callable[[int, int], None] | None = None) -> list[Step]:
    """Restore the secrets of ``org`` the last ``remove_org`` deleted, as long as their
    recovery window lasts: those deleted between that removal and the first restore
    after it (secrets deleted on purpose before the removal, or after it was undone,
    stay deleted; a second restore retries what the first could not). NotFound when
    the org was never removed; Conflict while the org is being removed or restored in
    this process. The restore itself is audited (``org_restore``)."""
    from keysafe.errors import NotFound
    from keysafe.manager.audit import AuditFilter

    with _alone(mgr, org, dry_run):
        last = mgr.audit_query(AuditFilter(org=org, action="org_remove", limit=1,
                                           newest_first=True))
        if not last:
            raise NotFound(f"org {org!r} has no removal to undo (keysafe org rm)")
        since = last[0].ts
        undone = mgr.audit_query(AuditFilter(org=org, action="org_restore", since=since,
                                             limit=1))
        until = undone[0].ts if undone else None
        now = datetime.now(UTC)
        metas = [m for m in mgr.list(org, include_deleted=True)
                 if m.deleted and m.deleted_at is not None and m.deleted_at >= since
                 and (until is None or m.deleted_at < until)
                 and m.deleted_at + mgr.recovery_window > now]
        if not dry_run:
            mgr.record("org_restore", None, "ok", org=org, durable=True,
                       detail={"secrets": len(metas)})
        return _each(mgr, metas, mgr.restore, "restored", dry_run, progress)


def tokens_only_for(tokens: Any, org: str) -> list[Any]:
    """The live tokens of this environment whose every scope lies in ``org`` (``org`` or
    ``org/domain``): the ones an offboarding revokes. Tokens that also cover other
    orgs stay, and so do other environments' (a shared database holds them too);
    tokens from before the binding (no environment) work everywhere and go."""
    from keysafe.server.auth import orgs_of

    now = datetime.now(UTC)
    here = getattr(tokens, "env", None)
    return [t for t in tokens.list()
            if t.revoked_at is None and (t.expires_at is None or t.expires_at > now)
            and t.orgs is not None and orgs_of(t.orgs) == {org}
            and (t.env is None or here is None or t.env == here)]
