"""Rotation policy: how often each secret rotates, when it last did, when it is due.

The period comes from, in order: the secret's own ``rotation_days`` metadata; an org
override (``KEYSAFE_ROTATION_OVERRIDES``: ``org:type_or_name=days`` entries, ``*`` for
every org); the catalog entry for its name; spec 004's period for its secret type.
0 days means "never scheduled". Last rotated is the secret's ``last_rotated`` (every
write sets it), else its creation time.

Some secrets wait for a maintenance window when a schedule finds them due: rotating a
JWT signing secret signs every user out (spec 002: "never rotate JWT secret without a
maintenance window"). ``KEYSAFE_ROTATION_WINDOW`` is that window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal

from keysafe.backends.base import DueWindow
from keysafe.catalog import ROTATION_DAYS, Catalog, WellKnownSecret
from keysafe.errors import ConfigError
from keysafe.models import SecretMetadata

Status = Literal["overdue", "due_soon", "ok", "unscheduled"]

#: spec 004's script categories -> the secret types each rotates.
CATEGORIES: Mapping[str, frozenset[str]] = {
    "symmetric": frozenset({"jwt", "encryption_key", "webhook_secret"}),
    "api-keys": frozenset({"api_key", "oauth_token", "cloud_credential"}),
    "database": frozenset({"database", "password", "connection_url"}),
}

#: Reminders go out this long before a secret is due.
DUE_SOON = timedelta(days=7)

#: Secret types a scheduled run rotates only inside the maintenance window: a new JWT
#: signing secret invalidates every session signed with the old one. A secret's
#: ``maintenance_window`` tag (``required`` or ``no``) overrides its type.
WINDOW_TYPES = frozenset({"jwt"})
WINDOW_TAG = "maintenance_window"


def is_rotation_tag(key: str) -> bool:
    """Tags that choose what a rotation does (``rotator``, its ``rotator.*`` options,
    the protocol's own ``rotation.*``, ``maintenance_window``): set only by
    ``keysafe rotate configure`` or library code, never through the HTTP API, where a
    write-only identity could otherwise point a rotator at a URL of its own."""
    return key in ("rotator", WINDOW_TAG) or is_rotation_detail(key)


def is_rotation_detail(key: str) -> bool:
    """A rotator's options (a URL, the secret that signs for it) and the protocol's
    bookkeeping: not shown through the API, which shows only which rotator it is."""
    return key.startswith(("rotator.", "rotation."))


@dataclass(frozen=True, slots=True)
class Window:
    """A daily maintenance window in UTC; ``end`` before ``start`` wraps past midnight."""

    start: time
    end: time

    def holds(self, now: datetime) -> bool:
        t = now.astimezone(UTC).time().replace(tzinfo=None)
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} UTC"


def parse_window(text: str) -> Window | None:
    """``"02:00-04:00"`` (UTC) -> Window; ``""`` -> None (no window)."""
    text = text.strip()
    if not text:
        return None
    start, sep, end = text.partition("-")
    try:
        if not sep:
            raise ValueError
        w = Window(time.fromisoformat(start.strip()), time.fromisoformat(end.strip()))
    except ValueError:
        raise ConfigError(f"rotation window {text!r} is not HH:MM-HH:MM (UTC, e.g. "
                          "02:00-04:00; it may wrap past midnight)") from None
    if w.start.tzinfo is not None or w.end.tzinfo is not None:
        raise ConfigError(f"rotation window {text!r}: give UTC times without an offset "
                          "(02:00-04:00)")
    if w.start == w.end:
        raise ConfigError(f"rotation window {text!r} is empty: its start and end are "
                          "the same time")
    return w


def parse_overrides(text: str) -> dict[tuple[str, str], int]:
    """``"acme:api_key=60, *:jwt=90, acme:openai_api_key=14"`` -> {(org, key): days}."""
    out: dict[tuple[str, str], int] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        scope, _, days = item.partition("=")
        org, _, key = scope.partition(":")
        try:
            n = int(days)
        except ValueError:
            n = -1
        if not org or not key or n < 0:
            raise ConfigError(f"rotation override {item!r} is not ORG:TYPE_OR_NAME=DAYS "
                              "(ORG may be *, DAYS a whole number, 0 for never)")
        out[(org.strip(), key.strip())] = n
    return out


@dataclass(frozen=True, slots=True)
class RotationState:
    path: str
    name: str
    org: str
    domain: str
    secret_type: str | None
    period_days: int | None
    period_source: str
    last_rotated: datetime
    next_due: datetime | None
    status: Status
    rotator: str
    version: int
    needs_window: bool = False
    exposed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "org": self.org, "domain": self.domain,
                "secret_type": self.secret_type, "period_days": self.period_days,
                "period_source": self.period_source,
                "last_rotated": self.last_rotated.isoformat(),
                "next_due": self.next_due.isoformat() if self.next_due else None,
                "status": self.status, "rotator": self.rotator, "version": self.version,
                "needs_window": self.needs_window, "exposed": self.exposed}


#: Where a value was found in the open (``keysafe scan --fix``, ``import --exposed``).
EXPOSED_TAG = "exposed"
#: An exposed value's "last rotated": long before any secret's creation, so it is due at once
#: for every scan (by time, as the stores select them); a new value replaces it.
EXPOSED_AT = datetime(1970, 1, 1, tzinfo=UTC)


def is_exposed(meta: SecretMetadata) -> bool:
    """The current value was found in the open and not replaced since: its "last
    rotated" is still the mark (a store may round it; no secret is older than 1970)."""
    return (meta.last_rotated is not None
            and meta.last_rotated < EXPOSED_AT + timedelta(days=1))


#: Symmetric types keysafe does not replace on its own: data encrypted with the old key
#: must stay readable, which takes an application that decrypts with every kept version
#: (``SecretManager.decryption_keys``). Such a secret opts in with ``rotator=random``.
MANUAL_SYMMETRIC = frozenset({"encryption_key"})


def default_rotator(secret_type: str | None, provider: str | None = None) -> str:
    """Signing secrets keysafe can make itself (JWT and webhook signing secrets: the old
    one keeps verifying for the grace period); everything else needs a person (or a
    configured rotator, set with the ``rotator`` tag). So does a symmetric secret that a
    provider issues (Stripe's or Slack's webhook signing secret): a value keysafe made
    up would not verify anything. So does a data encryption key (MANUAL_SYMMETRIC)."""
    if (secret_type in CATEGORIES["symmetric"] and secret_type not in MANUAL_SYMMETRIC
            and provider is None):
        return "random"
    return "manual"


def rotator_for(meta: SecretMetadata, entry: WellKnownSecret | None) -> str:
    """The rotator a secret has: its ``rotator`` tag, else the default for its type (the
    stored one, else its catalog entry's), as ``Policy.state`` decides."""
    stype = meta.secret_type or (entry.secret_type if entry is not None else None)
    return meta.tags.get("rotator") or default_rotator(
        stype, entry.provider if entry is not None else None)


class Policy:
    def __init__(self, catalog: Catalog, overrides: Mapping[tuple[str, str], int] | None = None,
                 maintenance: Window | None = None) -> None:
        self.catalog = catalog
        self.overrides = dict(overrides or {})
        self.maintenance = maintenance

    @classmethod
    def from_settings(cls, catalog: Catalog, settings: Any) -> Policy:
        """The policy the settings give: KEYSAFE_ROTATION_OVERRIDES and
        KEYSAFE_ROTATION_WINDOW over the catalog's periods."""
        return cls(catalog, parse_overrides(settings.rotation_overrides),
                   parse_window(settings.rotation_window))

    def waits(self, st: RotationState, now: datetime) -> str | None:
        """Why a scheduled run must not rotate ``st`` at ``now`` (None: it may)."""
        if not st.needs_window:
            return None
        if self.maintenance is None:
            return ("waits for a maintenance window (rotating it signs every session out): "
                    "set KEYSAFE_ROTATION_WINDOW, or rotate it by hand at a quiet time")
        if self.maintenance.holds(now):
            return None
        return f"waits for the maintenance window, {self.maintenance}"

    def secret_type(self, meta: SecretMetadata, name: str) -> str | None:
        """The stored type, else the catalog entry's for the name."""
        entry = self.catalog.get(name)
        return meta.secret_type or (entry.secret_type if entry else None)

    def shortest_period(self) -> int | None:
        """The fewest days any rule but a secret's own ``rotation_days`` can give (None:
        no rule gives any): a secret without its own period, rotated more recently than
        this, cannot be due."""
        days = [d for d in self.overrides.values() if d]
        days += [d for e in self.catalog if (d := e.effective_rotation_days)]
        days += [d for d in ROTATION_DAYS.values() if d]
        return min(days) if days else None

    def window(self, by: datetime, *, expiring_by: datetime | None = None) -> DueWindow:
        """What a store must return for a scan of secrets due by ``by`` (a superset,
        widened by a second against rounding; ``state`` then judges each)."""
        shortest = self.shortest_period()
        t = by.timestamp() + 1.0
        return DueWindow(by=t,
                         unowned_before=None if shortest is None else t - shortest * 86400.0,
                         expiring_by=None if expiring_by is None else
                         expiring_by.timestamp() + 1.0)

    def period(self, meta: SecretMetadata, org: str, name: str) -> tuple[int | None, str]:
        """(days or None, where the figure came from)."""
        if meta.rotation_days is not None:
            return meta.rotation_days or None, "secret"
        entry = self.catalog.get(name)
        stype = self.secret_type(meta, name)
        for o in (org, "*"):
            for key in (name, stype):
                if key is not None and (o, key) in self.overrides:
                    return self.overrides[(o, key)] or None, f"override {o}:{key}"
        if entry is not None:
            return entry.effective_rotation_days, "catalog"
        if stype is not None:
            return ROTATION_DAYS.get(stype), f"type {stype}"
        return None, "none"

    def state(self, meta: SecretMetadata, org: str, domain: str, name: str,
              now: datetime | None = None) -> RotationState:
        now = now or datetime.now(UTC)
        days, source = self.period(meta, org, name)
        last = meta.last_rotated or meta.created_at
        stype = self.secret_type(meta, name)
        exposed = is_exposed(meta)
        if exposed:
            # Due since it was stored, whatever its period (or none).
            last, due, status = meta.created_at, meta.created_at, "overdue"
        elif days is None:
            due, status = None, "unscheduled"
        else:
            due = last + timedelta(days=days)
            status = ("overdue" if due <= now else "due_soon" if due - now <= DUE_SOON
                      else "ok")
        entry = self.catalog.get(name)
        rotator = rotator_for(meta, entry)
        tag = meta.tags.get(WINDOW_TAG)
        window = tag == "required" if tag in ("required", "no") else stype in WINDOW_TYPES
        return RotationState(meta.path, name, org, domain, stype, days, source, last, due,
                             status, rotator, meta.current_version,  # type: ignore[arg-type]
                             window, exposed)


_ORDER = {"overdue": 0, "due_soon": 1, "ok": 2, "unscheduled": 3}


def sort_states(states: Iterable[RotationState]) -> list[RotationState]:
    """Overdue first (exposed ones first, then most overdue first), then due soon, ok,
    unscheduled."""
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(states, key=lambda s: (_ORDER[s.status], not s.exposed,
                                         s.next_due or far, s.path))


def select(states: Iterable[RotationState], which: str) -> list[RotationState]:
    """spec 004's selectors: all, symmetric, api-keys, database, due (overdue only)."""
    states = list(states)
    if which == "all":
        return [s for s in states
                if s.period_days is not None or s.rotator != "manual" or s.exposed]
    if which == "due":
        return [s for s in states if s.status == "overdue"]
    if which in CATEGORIES:
        return [s for s in states if s.secret_type in CATEGORIES[which]]
    raise ConfigError(f"unknown selection {which!r}: use all, due, "
                      f"{', '.join(CATEGORIES)} or a secret name")
