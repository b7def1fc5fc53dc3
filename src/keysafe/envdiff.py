"""Which secrets one environment has that another lacks: ``keysafe diff``.

Specs 002-004 list the secrets each environment needs and separate them per
environment; promoting an app from staging to production fails at start-up when
production lacks one. Only metadata is compared (names by org, domain and name, as the
naming template reads each path, and each side's version, type and last update): no
value is read, so the check needs no more than listing, and is audited as two listings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keysafe.errors import InvalidName

if TYPE_CHECKING:
    from keysafe.manager.manager import SecretManager
    from keysafe.models import SecretMetadata


@dataclass(frozen=True, slots=True)
class Entry:
    """One secret (org/domain/name) and what each environment holds of it."""

    org: str
    domain: str
    name: str
    here: SecretMetadata | None
    there: SecretMetadata | None

    @property
    def state(self) -> str:
        """``missing`` (only in the other environment), ``extra`` (only in this one),
        ``type differs`` or ``same``."""
        if self.here is None:
            return "missing"
        if self.there is None:
            return "extra"
        if (self.here.secret_type or None) != (self.there.secret_type or None):
            return "type differs"
        return "same"

    def to_dict(self) -> dict[str, Any]:
        def side(m: SecretMetadata | None) -> dict[str, Any] | None:
            if m is None:
                return None
            return {"path": m.path, "version": m.current_version, "type": m.secret_type,
                    "updated_at": m.updated_at.isoformat() if m.updated_at else None}

        return {"org": self.org, "domain": self.domain, "name": self.name,
                "state": self.state, "here": side(self.here), "there": side(self.there)}


@dataclass(frozen=True, slots=True)
class EnvDiff:
    env: str
    other_env: str
    entries: list[Entry]  # every secret of either side, by org, domain and name

    def differences(self, *, missing_only: bool = False) -> list[Entry]:
        """Entries that are not ``same`` (``missing_only``: only what ``env`` lacks)."""
        return [e for e in self.entries
                if (e.state == "missing" if missing_only else e.state != "same")]

    def count(self, side: str) -> int:
        return sum(1 for e in self.entries
                   if (e.here if side == "here" else e.there) is not None)

    def to_dict(self, *, missing_only: bool = False, everything: bool = False
                ) -> dict[str, Any]:
        shown = self.entries if everything else self.differences(missing_only=missing_only)
        return {"env": self.env, "other_env": self.other_env,
                "secrets": self.count("here"), "other_secrets": self.count("there"),
                "entries": [e.to_dict() for e in shown]}


def diff_envs(mine: SecretManager, other: SecretManager, *, org: str | None = None,
              domain: str | None = None) -> EnvDiff:
    """Every live secret of ``mine`` and ``other`` in the scope (``org``/``domain``,
    else all), matched by org, domain and name."""
    def keyed(mgr: SecretManager) -> dict[tuple[str, str, str], SecretMetadata]:
        out = {}
        for meta in mgr.list(org, domain=domain):
            if meta.deleted:
                continue
            try:
                ref = mgr.parse(meta.path)
            except InvalidName:  # not a secret of this naming template: not compared
                continue
            out[(ref.org, ref.domain, ref.name)] = meta
        return out

    here, there = keyed(mine), keyed(other)
    entries = [Entry(*key, here.get(key), there.get(key))
               for key in sorted(here.keys() | there.keys())]
    return EnvDiff(mine.env, other.env, entries)
