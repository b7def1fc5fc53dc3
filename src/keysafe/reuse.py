"""Values shared between environments: ``keysafe check-reuse``.

Spec 003: "Never use production secrets in development"; specs 002 and 004: separate
secrets per environment. Every current value of one environment (production, say) is
compared with every current value of another (development), by name and across
names: a production database URL pasted into development's ``analytics_db_url`` is
found too. Values are compared as keyed digests (HMAC-SHA256 with a key made for this
run and never stored), so the index in memory holds no value; each value read is an
audited read in its store. Findings name secrets, never values.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keysafe.errors import KeysafeError, NotFound

if TYPE_CHECKING:
    from keysafe.manager.manager import SecretManager
    from keysafe.models import SecretMetadata

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Reuse:
    """One value found in both environments."""

    path: str  # in the checked environment (production)
    other_path: str  # in the other one
    same_name: bool

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "other_path": self.other_path,
                "same_name": self.same_name}


@dataclass(frozen=True, slots=True)
class ReuseReport:
    env: str
    other_env: str
    checked: int  # values of the checked environment compared
    other_checked: int
    found: list[Reuse]
    #: Secrets whose value could not be read (denied, unavailable, failed integrity):
    #: not compared, so the check is not complete.
    unreadable: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "other_env": self.other_env, "checked": self.checked,
                "other_checked": self.other_checked,
                "found": [r.to_dict() for r in self.found], "unreadable": self.unreadable}


def _values(mgr: SecretManager, metas: list[SecretMetadata], key: bytes,
            progress: Progress | None, start: int, total: int, unreadable: list[str]
            ) -> Iterator[tuple[SecretMetadata, bytes]]:
    """(metadata, keyed digest of its current value), read past the cache (which would
    keep the value); a secret deleted meanwhile is skipped, one that cannot be read
    is added to ``unreadable``."""
    for i, meta in enumerate(metas, 1):
        try:
            value = mgr.read(meta.path)[0]
        except NotFound:
            continue
        except KeysafeError:
            unreadable.append(meta.path)
            continue
        finally:
            if progress is not None and (i % 200 == 0 or i == len(metas)):
                progress(start + i, total)
        yield meta, hmac.new(key, value.encode(), hashlib.sha256).digest()


def find_reuse(checked: SecretManager, other: SecretManager, *, org: str | None = None,
               domain: str | None = None, progress: Progress | None = None) -> ReuseReport:
    """Every current value of ``checked``'s secrets (of ``org``/``domain``, else all)
    that is also the current value of some secret of ``other`` (same scope)."""
    key = os.urandom(32)
    mine = [m for m in checked.list(org, domain=domain) if not m.deleted]
    theirs = [m for m in other.list(org, domain=domain) if not m.deleted]
    total = len(mine) + len(theirs)
    index: dict[bytes, list[str]] = {}
    unreadable: list[str] = []
    other_n = 0
    for meta, digest in _values(other, theirs, key, progress, 0, total, unreadable):
        other_n += 1
        index.setdefault(digest, []).append(meta.path)
    found: list[Reuse] = []
    checked_n = 0
    for meta, digest in _values(checked, mine, key, progress, len(theirs), total,
                                unreadable):
        checked_n += 1
        name = checked.parse(meta.path).name
        for other_path in index.get(digest, ()):
            found.append(Reuse(meta.path, other_path, other.parse(other_path).name == name))
    found.sort(key=lambda r: (not r.same_name, r.path, r.other_path))
    return ReuseReport(checked.env, other.env, checked_n, other_n, found, unreadable)
