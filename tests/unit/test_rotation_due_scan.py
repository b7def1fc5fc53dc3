"""The scheduled scans (``rotate due`` and the reminders) ask the store for the secrets
the policy's window can hold instead of judging every secret: they must pick exactly
what judging every secret picks, whatever the periods' sources (the secret's own, an
override, the catalog, the type, 0 for never), and they must not list the whole store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keysafe.backends.base import DueWindow, WriteContext
from keysafe.backends.memory import MemoryBackend
from keysafe.backends.sqlite import SQLiteBackend
from keysafe.crypto.keys import KeyRing
from keysafe.manager.audit import AuditLog, SQLiteAuditStore
from keysafe.manager.manager import SecretManager
from keysafe.models import MetadataUpdate, SecretMetadata
from keysafe.rotation.engine import RotationEngine
from keysafe.rotation.policy import Policy, parse_overrides

ORG, OTHER = "acme", "globex"
DAY = timedelta(days=1)
NOW = datetime.now(UTC)

#: (name, org, secret_type, own rotation_days, last rotated days ago, expires in days)
SECRETS = [
    ("openai_api_key", ORG, None, None, 29, None),      # catalog: api_key, 30 days
    ("anthropic_api_key", ORG, None, None, 31, None),
    ("jwt_secret", ORG, None, None, 179, None),         # catalog: jwt, 180 days
    ("session_secret", OTHER, None, None, 181, None),
    ("custom_token", ORG, "api_key", None, 26, None),   # type period, due within a week
    ("custom_plain", ORG, None, None, 900, None),       # no period anywhere
    ("custom_own", ORG, None, 3, 4, None),              # its own period, overdue
    ("custom_own_ok", OTHER, None, 10, 4, None),
    ("custom_never", ORG, "api_key", 0, 900, None),     # 0: never
    ("custom_expiring", ORG, None, None, 0, 5),
    ("custom_expired", OTHER, "generic", None, 0, -2),
    ("custom_expires_late", ORG, None, None, 0, 40),
    ("database_url", OTHER, None, None, 95, None),      # catalog: 90 days
]

POLICIES = {
    "default": "",
    "overrides": "acme:api_key=60, *:jwt=2, globex:database_url=0, acme:custom_plain=400",
    "short": "*:generic=1",
}


def _fill(m: SecretManager) -> None:
    for name, org, stype, own, ago, expires in SECRETS:
        m.put(name, f"value-of-{name}-" + "x" * 40, org, secret_type=stype,
              rotation_days=own, check_format=False,
              expires_at=None if expires is None else NOW + expires * DAY)
        m.backend.update_metadata(  # type: ignore[attr-defined]
            m.path(name, org), MetadataUpdate(last_rotated=NOW - ago * DAY),
            ctx=WriteContext.make("test"))


@pytest.fixture(params=["memory", "sqlite"])
def mgr(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SecretManager]:
    if request.param == "memory":
        m = SecretManager(MemoryBackend(), env="test")
    else:
        b = SQLiteBackend(tmp_path / "s.db", KeyRing.generate())
        m = SecretManager(b, audit=AuditLog(SQLiteAuditStore(b)), env="test")
    _fill(m)
    yield m
    m.close()


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("at", [0, 3, 8, 45, 200])
def test_due_picks_what_judging_every_secret_picks(mgr: SecretManager, policy: str,
                                                   at: int) -> None:
    eng = RotationEngine(mgr, policy=Policy(mgr.catalog, parse_overrides(POLICIES[policy])))
    now = NOW + at * DAY
    every = [s.path for s in eng.states(now=now) if s.status == "overdue"]
    assert [s.path for s in eng.due(now=now)] == every
    for org in (ORG, OTHER):
        assert [s.path for s in eng.due(org, now=now)] == [
            s.path for s in eng.states(org, now=now) if s.status == "overdue"]


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("at", [0, 3, 30])
def test_reminders_pick_what_judging_every_secret_picks(mgr: SecretManager, policy: str,
                                                        at: int) -> None:
    eng = RotationEngine(mgr, policy=Policy(mgr.catalog, parse_overrides(POLICIES[policy])))
    now = NOW + at * DAY
    metas = {m.path: m for m in mgr.list()}
    expected = [s.path for s in eng.states(now=now)
                if s.status in ("overdue", "due_soon")
                or (metas[s.path].expires_at is not None
                    and metas[s.path].expires_at - now <= 7 * DAY)]  # type: ignore[operator]
    assert [s.path for s in eng.remind(now=now)] == expected
    assert eng.overdue == sum(1 for s in eng.states(now=now) if s.status == "overdue")


def test_the_store_is_not_listed_whole(mgr: SecretManager,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """On a store that finds due secrets itself, neither scan lists every secret nor
    describes them one by one (what made the hourly scan take minutes at 1,000,000)."""
    if not isinstance(mgr.backend, SQLiteBackend):
        pytest.skip("the memory store filters its own list")
    eng = RotationEngine(mgr)
    overdue = [s.name for s in eng.due()]
    assert overdue[0] == "database_url"  # most overdue first
    assert sorted(overdue) == ["anthropic_api_key", "custom_own", "database_url",
                               "session_secret"]

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("the scan read every secret")

    monkeypatch.setattr(mgr.backend, "list", refuse)
    monkeypatch.setattr(mgr.backend, "describe", refuse)
    assert [s.name for s in eng.due()] == overdue
    assert {s.name for s in eng.remind()} >= set(overdue) | {"custom_expiring"}
    planned = eng.run("due", dry_run=True)
    assert [o.name for o in planned] == overdue


def test_window_is_a_superset_of_what_is_due() -> None:
    """DueWindow.matches never leaves out a secret the policy finds due (the bound is the
    shortest period of any rule, widened by a second)."""
    pol = Policy(RotationEngine(SecretManager(MemoryBackend())).policy.catalog,
                 parse_overrides("*:api_key=7"))
    assert pol.shortest_period() == 7
    w = pol.window(NOW)
    assert w.unowned_before is not None
    assert w.unowned_before == pytest.approx(NOW.timestamp() + 1 - 7 * 86400)

    def meta(ago: float, own: int | None) -> SecretMetadata:
        t = NOW - timedelta(days=ago)
        return SecretMetadata(path="p", current_version=1, created_at=t, updated_at=t,
                              last_rotated=t, rotation_days=own)

    assert w.matches(meta(7, None))
    assert not w.matches(meta(6.99, None))
    assert w.matches(meta(2, 2))
    assert not w.matches(meta(1.99, 2))
    assert not w.matches(meta(1000, 0))
    none = DueWindow(by=NOW.timestamp(), unowned_before=None)
    assert not none.matches(meta(1000, None))
