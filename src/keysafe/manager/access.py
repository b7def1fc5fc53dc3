"""Access patterns from the audit log (``keysafe audit report``): who read and changed
what over a window, and what deserves a look (spec 000's "alerts for secret access
patterns"): repeated denials, an identity reading an unusual number of secrets, an
identity never seen before, integrity failures, and secrets nobody read.

Counting happens in the audit store (one ``GROUP BY`` per question on SQLite and
PostgreSQL), so a report over millions of records moves a few rows. Reads a process
served from its own cache are not records (they are counted in metrics), so "read" here
means "read from the store": a secret read at least once in the window shows as read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from keysafe.manager.audit import AuditFilter

if TYPE_CHECKING:
    from keysafe.manager.manager import SecretManager

__all__ = ["READS", "WRITES", "AccessReport", "ActorActivity", "Finding", "access_report"]

#: Actions that hand out a value (the library's read, the API's value read), and the
#: outcomes with which they do (a stale read hands out the cached value).
READS = ("read", "read_value")
READ_OUTCOMES = ("ok", "stale")
#: Actions that change a secret.
WRITES = ("write", "delete", "purge", "destroy", "restore", "rollback", "update_metadata",
          "rotate", "rotation")
DENIED = ("denied", "permission_denied", "rate_limited")


def _failures() -> frozenset[str]:
    """Outcomes that are failures: every error code but not_found and the denials, and
    the rotation engine's failed steps (its other outcomes, like a key check's
    ``valid`` or a rotation's ``reminder``, are not)."""
    from keysafe import errors

    codes = {c.code for c in vars(errors).values()
             if isinstance(c, type) and issubclass(c, errors.KeysafeError)}
    return frozenset(codes - {"not_found", *DENIED}
                     | {"failed", "retire_failed", "promoted_hook_failed", "linked_failed"})


FAILURES = _failures()


def _dt(us: int | None) -> datetime | None:
    return None if us is None else datetime.fromtimestamp(us / 1e6, UTC)


@dataclass(frozen=True)
class ActorActivity:
    """One identity's records in the window."""

    actor: str
    records: int
    reads: int
    writes: int
    denied: int
    not_found: int
    failed: int
    secrets_read: int
    first: datetime | None
    last: datetime | None
    new: bool

    def to_dict(self) -> dict[str, Any]:
        return {"actor": self.actor, "records": self.records, "reads": self.reads,
                "writes": self.writes, "denied": self.denied, "not_found": self.not_found,
                "failed": self.failed,
                "secrets_read": self.secrets_read,
                "first": self.first.isoformat() if self.first else None,
                "last": self.last.isoformat() if self.last else None, "new": self.new}


#: Every kind of finding, in the order a report lists them.
KINDS = ("integrity", "denials", "not_found", "breadth", "new_actor", "unread")


@dataclass(frozen=True)
class Finding:
    """Something worth a look: ``kind`` is integrity, denials, not_found, breadth,
    new_actor or unread; never a value."""

    kind: str
    message: str
    actor: str | None = None
    count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "actor": self.actor,
                "count": self.count}


@dataclass(frozen=True)
class AccessReport:
    since: datetime
    until: datetime
    org: str | None
    actors: tuple[ActorActivity, ...]
    findings: tuple[Finding, ...]
    unread: tuple[str, ...] | None = None  # None: not asked
    secrets: int | None = None  # live secrets in scope, when unread was asked

    @property
    def totals(self) -> dict[str, int]:
        """The identities' counts added up."""
        return {k: sum(getattr(a, k) for a in self.actors)
                for k in ("records", "reads", "writes", "denied", "not_found", "failed")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccessReport:
        """The report ``to_dict`` (or ``GET /api/audit/report``) gave; ValueError,
        KeyError or TypeError when ``data`` is not one."""
        def when(v: Any) -> datetime | None:
            return None if v is None else datetime.fromisoformat(str(v)).astimezone(UTC)

        def actor(a: dict[str, Any]) -> ActorActivity:
            counts = {k: int(a[k]) for k in ("records", "reads", "writes", "denied",
                                             "not_found", "failed", "secrets_read")}
            return ActorActivity(actor=str(a["actor"]), first=when(a.get("first")),
                                 last=when(a.get("last")), new=bool(a.get("new")), **counts)

        unread = data.get("unread")
        since, until = when(data["since"]), when(data["until"])
        if since is None or until is None:
            raise ValueError("a report has a since and an until")
        return cls(
            since=since, until=until, org=data.get("org"),
            actors=tuple(actor(a) for a in data["actors"]),
            # Fields a newer server adds are left out, not refused.
            findings=tuple(Finding(kind=str(f["kind"]), message=str(f["message"]),
                                   actor=f.get("actor"), count=int(f.get("count") or 0))
                           for f in data["findings"]),
            unread=None if unread is None else tuple(str(u) for u in unread),
            secrets=None if data.get("secrets") is None else int(data["secrets"]))

    def to_dict(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(),
                "org": self.org, "totals": self.totals,
                "actors": [a.to_dict() for a in self.actors],
                "findings": [f.to_dict() for f in self.findings],
                "secrets": self.secrets,
                "unread": list(self.unread) if self.unread is not None else None}


def access_report(mgr: SecretManager, *, since: datetime, until: datetime | None = None,
                  org: str | None = None, max_denied: int = 5, max_not_found: int = 20,
                  max_secrets: int = 100, unread: bool = True) -> AccessReport:
    """The window's activity per identity, and its findings: ``max_denied`` or more
    denials by one identity, ``max_not_found`` or more reads of names that do not
    exist, ``max_secrets`` or more distinct secrets read, an identity with no record
    before the window (other than ``mgr.actor``, who runs the report), any integrity
    failure, and (``unread``) the live secrets in scope no record shows read in the
    window. An identity whose earlier records were all archived counts as new."""
    until = until or datetime.now(UTC)
    mgr.audit.flush()
    store = mgr.audit.store
    window = AuditFilter(org=org, since=since, until=until)
    per: dict[str, dict[str, Any]] = {}
    integrity = 0
    for actor, action, outcome, n, _paths, lo, hi in store.activity(
            window, ("actor", "action", "outcome"), paths=False):
        a = per.setdefault(actor, {"records": 0, "reads": 0, "writes": 0, "denied": 0,
                                   "not_found": 0, "failed": 0, "first": lo, "last": hi})
        a["records"] += n
        a["first"], a["last"] = min(a["first"], lo), max(a["last"], hi)
        if action in READS and outcome in READ_OUTCOMES:
            a["reads"] += n
        elif action in WRITES and outcome == "ok":
            a["writes"] += n
        elif outcome in DENIED:
            a["denied"] += n
        elif outcome == "not_found":
            a["not_found"] += n
        elif outcome in FAILURES:
            a["failed"] += n
            if outcome == "integrity_error":
                integrity += n
    breadth = {row[0]: row[2] for row in store.activity(
        window, ("actor",), actions=READS, outcomes=READ_OUTCOMES)}
    known = {row[0] for row in store.activity(AuditFilter(org=org, until=since), ("actor",),
                                              paths=False)}
    actors = sorted((ActorActivity(
        actor, a["records"], a["reads"], a["writes"], a["denied"], a["not_found"],
        a["failed"], breadth.get(actor, 0), _dt(a["first"]), _dt(a["last"]),
        actor not in known) for actor, a in per.items()), key=lambda x: (-x.records, x.actor))
    findings: list[Finding] = []
    if integrity:
        findings.append(Finding("integrity", f"{integrity} read(s) failed an integrity "
                                "check: a stored record was altered or moved (run keysafe "
                                "audit verify, and compare with a backup)", count=integrity))
    for act in actors:
        if act.denied >= max_denied:
            findings.append(Finding("denials", f"{act.actor} was denied {act.denied} time(s)",
                                    act.actor, act.denied))
        if act.not_found >= max_not_found:
            findings.append(Finding("not_found", f"{act.actor} asked {act.not_found} time(s) "
                                    "for secrets that do not exist: guessing names?",
                                    act.actor, act.not_found))
        if act.secrets_read >= max_secrets:
            findings.append(Finding("breadth", f"{act.actor} read {act.secrets_read} distinct "
                                    f"secrets (threshold {max_secrets})", act.actor,
                                    act.secrets_read))
        if act.new and act.actor != mgr.actor:  # the identity running the report is known
            findings.append(Finding("new_actor", f"{act.actor} first appears in this window "
                                    f"({act.records} record(s))", act.actor, act.records))
    never: tuple[str, ...] | None = None
    live: int | None = None
    if unread:
        read = {row[0] for row in store.activity(window, ("path",), actions=READS,
                                                 outcomes=READ_OUTCOMES, paths=False)}
        paths = [m.path for m in mgr.list(org) if not m.deleted]
        live = len(paths)
        never = tuple(sorted(p for p in paths if p not in read))
        if never:
            findings.append(Finding("unread", f"{len(never)} of {live} secret(s) were not "
                                    "read in this window: still needed?", count=len(never)))
    return AccessReport(since, until, org, tuple(actors), tuple(findings), never, live)

