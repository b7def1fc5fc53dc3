"""The rotation protocol on the embedded store: policy and due dates, the four steps,
a failure at each step leaving the current version untouched, an interruption at each
step resumed or rolled back by the next run, the grace period, JWTs signed with the old
key still verifying during it, and SecretManager.use retrying with a rotated value."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from keysafe.backends.base import WriteContext
from keysafe.backends.sqlite import SQLiteBackend
from keysafe.crypto.keys import KeyRing
from keysafe.errors import ConfigError, CredentialRejected, NotFound, RotationError
from keysafe.manager.audit import AuditFilter, AuditLog, SQLiteAuditStore
from keysafe.manager.manager import SecretManager
from keysafe.models import MetadataUpdate
from keysafe.rotation.engine import RotationEngine, record_path
from keysafe.rotation.policy import Policy, Window, parse_overrides, parse_window
from keysafe.rotation.rotators import RandomRotator, RotationContext, verify_signature

ORG = "acme"
JWT = "jwt_secret"


@pytest.fixture
def mgr(tmp_path: Path) -> Iterator[SecretManager]:
    ring = KeyRing.generate()
    ring.save(tmp_path / "master.key")
    b = SQLiteBackend(tmp_path / "s.db", ring)
    m = SecretManager(b, audit=AuditLog(SQLiteAuditStore(b)), env="test")
    yield m
    m.close()


def rotate_events(m: SecretManager) -> list[tuple[str, dict[str, Any]]]:
    m.audit.flush()
    return [(e.outcome, e.detail) for e in m.audit_query(AuditFilter(action="rotate"))]


# -- policy ------------------------------------------------------------------------------

def test_periods_come_from_secret_then_override_then_catalog(mgr: SecretManager) -> None:
    mgr.put("openai_api_key", "sk-" + "a1" * 16, ORG)
    mgr.put(JWT, "x" * 64, ORG)
    mgr.put("my_custom", "v", ORG, rotation_days=5)
    pol = Policy(mgr.catalog, parse_overrides("acme:api_key=60, *:jwt=90"))
    by = {s.name: s for s in RotationEngine(mgr, policy=pol).states(ORG)}
    assert (by["openai_api_key"].period_days, by["openai_api_key"].period_source) == \
        (60, "override acme:api_key")
    assert by[JWT].period_days == 90
    assert (by["my_custom"].period_days, by["my_custom"].period_source) == (5, "secret")
    default = {s.name: s for s in RotationEngine(mgr).states(ORG)}
    assert default["openai_api_key"].period_days == 30  # spec 004
    assert default[JWT].period_days == 180
    assert default[JWT].rotator == "random"
    assert default["openai_api_key"].rotator == "manual"


def test_status_lists_overdue_first(mgr: SecretManager) -> None:
    mgr.put(JWT, "x" * 64, ORG)
    mgr.put("session_secret", "y" * 64, ORG)
    mgr.backend.update_metadata(  # type: ignore[attr-defined]
        mgr.path("session_secret", ORG),
        MetadataUpdate(last_rotated=datetime.now(UTC) - timedelta(days=400)),
        ctx=WriteContext.make("t"))
    states = RotationEngine(mgr).states(ORG)
    assert states[0].status == "overdue"
    assert states[0].name == "session_secret"
    assert states[1].status == "ok"


@pytest.mark.parametrize("bad", ["acme=3", "acme:jwt=x", ":jwt=3", "acme:jwt=-1"])
def test_bad_override_is_named(bad: str) -> None:
    with pytest.raises(ConfigError, match="rotation override"):
        parse_overrides(bad)


# -- the protocol ----------------------------------------------------------------------------

def test_symmetric_rotation_keeps_previous_for_the_grace_period(mgr: SecretManager) -> None:
    old = "o" * 64
    mgr.put(JWT, old, ORG)
    eng = RotationEngine(mgr, grace=timedelta(hours=1))
    out = eng.rotate(JWT, ORG)
    assert out.outcome == "rotated"
    assert out.version == 2
    new = mgr.get(JWT, ORG)
    assert new != old
    assert len(new) == 64
    assert eng.previous(JWT, ORG) == old
    assert mgr.verification_values(JWT, ORG) == [new, old]
    later = datetime.now(UTC) + timedelta(hours=2)
    assert eng.previous(JWT, ORG, now=later) is None
    assert eng.retire_expired(now=later) == [mgr.path(JWT, ORG)]
    assert mgr.verification_values(JWT, ORG) == [new]
    outcomes = [o for o, _ in rotate_events(mgr)]
    assert outcomes == ["ok", "retired"]  # one transaction: no journal records
    assert not mgr.list(ORG)[0].path.startswith("_rotation")


def test_retire_holds_the_secret_and_keeps_a_newer_previous_value(mgr: SecretManager
                                                                  ) -> None:
    """A retire that waits for a rotation of the same secret (in this process: its
    lock) reads the previous value again once it has the secret: the rotation's new
    previous value is not yet past its grace period, so it is kept, not dropped."""
    mgr.put(JWT, "o" * 64, ORG)
    eng = RotationEngine(mgr, grace=timedelta(hours=1))
    eng.rotate(JWT, ORG)
    later = datetime.now(UTC) + timedelta(hours=2)  # the first previous value: expired
    path = mgr.path(JWT, ORG)
    lock = eng._locks.setdefault(path, threading.Lock())
    done: list[list[str]] = []
    with lock:  # a rotation of the secret is running
        t = threading.Thread(target=lambda: done.append(eng.retire_expired(now=later)))
        t.start()
        t.join(0.3)
        assert t.is_alive()  # the retire waits for the secret
        # The rotation finishes, with a new previous value of its own (a longer grace
        # period: not over at `later`); the lock is held, as a rotation holds it, so
        # this one runs without taking it again.
        eng.grace = timedelta(days=1)
        eng._rotate(path)
        fresh = eng.previous(JWT, ORG)
    t.join(10)
    assert done == [[]]  # nothing past its grace period once the secret was free
    assert eng.previous(JWT, ORG) == fresh is not None


def test_a_current_value_with_non_ascii_characters_rotates(mgr: SecretManager) -> None:
    """The random rotator's "new differs from current" check compares bytes:
    hmac.compare_digest raises TypeError on str with non-ASCII characters, which failed
    the rotation (a 500 through the server)."""
    mgr.put(JWT, "caf\u00e9-" + "o" * 40, ORG)
    assert RotationEngine(mgr).rotate(JWT, ORG).outcome == "rotated"
    assert verify_signature(b"{}", "t=1,v1=\u00e9", "s" * 32, now=1) is False


def test_reading_the_previous_value_is_audited(mgr: SecretManager) -> None:
    """Invariant 2: every value read is audited, the previous one too (with its
    version and ``stage``); ``get_previous`` names its absence."""
    mgr.put(JWT, "o" * 64, ORG)
    path = mgr.path(JWT, ORG)

    def reads() -> list[tuple[str, int | None, dict | None]]:
        return [(e.outcome, e.version, e.detail) for e in mgr.audit_query(
            AuditFilter(action="read", path=path))]

    with pytest.raises(NotFound, match="no previous value"):
        mgr.get_previous(JWT, ORG)
    assert mgr.verification_values(JWT, ORG) == ["o" * 64]  # nothing to add, no failure
    assert reads() == [("not_found", None, {"error": "NotFound"}), ("ok", 1, {})]
    RotationEngine(mgr, grace=timedelta(hours=1)).rotate(JWT, ORG)
    assert mgr.get_previous(JWT, ORG) == ("o" * 64, 1)
    assert mgr.verification_values(JWT, ORG)[1] == "o" * 64
    assert reads()[-3:] == [("ok", 1, {"stage": "previous"}), ("ok", 2, {}),
                            ("ok", 1, {"stage": "previous"})]
    assert [m.path for m in mgr.list(ORG)] == [mgr.path(JWT, ORG)]  # records never listed


def test_a_read_during_a_one_transaction_rotation_is_not_cached_past_its_commit(
        mgr: SecretManager) -> None:
    """The promote invalidates the cache inside the rotation's transaction; a read in
    another thread before the commit sees (and may cache) the old value: the commit must
    drop it again."""
    old = "o" * 64
    mgr.put(JWT, old, ORG)
    seen: list[str] = []

    class ReadsBeforeCommit(RandomRotator):
        def promoted(self, ctx: RotationContext, new: str) -> None:
            t = threading.Thread(target=lambda: seen.append(mgr.get(JWT, ORG)))
            t.start()
            t.join(30)

    out = RotationEngine(mgr, rotator_factory=lambda name: ReadsBeforeCommit()).rotate(
        JWT, ORG)
    assert out.outcome == "rotated"
    assert seen == [old]
    assert mgr.get(JWT, ORG) == mgr.get(JWT, ORG, fresh=True) != old


def test_jwts_signed_with_the_old_key_verify_during_the_grace_period(mgr: SecretManager
                                                                     ) -> None:
    mgr.put(JWT, "k" * 64, ORG)
    token = jwt.encode({"sub": "user-1"}, mgr.get(JWT, ORG), algorithm="HS256")
    eng = RotationEngine(mgr, grace=timedelta(hours=1))
    eng.rotate(JWT, ORG)

    def verify(tok: str, now: datetime | None = None) -> dict[str, Any]:
        keys = [mgr.get(JWT, ORG)]
        old = eng.previous(JWT, ORG, now=now)
        keys += [old] if old else []
        for k in keys:
            try:
                return dict(jwt.decode(tok, k, algorithms=["HS256"]))
            except jwt.InvalidSignatureError:
                continue
        raise jwt.InvalidSignatureError("no key verifies it")

    assert verify(token)["sub"] == "user-1"  # old key, inside the grace period
    fresh = jwt.encode({"sub": "user-2"}, mgr.get(JWT, ORG), algorithm="HS256")
    assert verify(fresh)["sub"] == "user-2"
    with pytest.raises(jwt.InvalidSignatureError):
        verify(token, now=datetime.now(UTC) + timedelta(hours=2))


class Faulty(RandomRotator):
    """Fails (Exception) or is interrupted (KeyboardInterrupt: not caught by the engine,
    so it leaves the state a crash would) at one step. Not ``local``: it stands for a
    rotator with a target system, whose steps are recorded one by one."""

    local = False

    def __init__(self, step: str, exc: type[BaseException] = RuntimeError) -> None:
        self.step, self.exc = step, exc
        self.rolled_back: list[str] = []

    def generate(self, ctx: RotationContext) -> str:
        if self.step == "generate":
            raise self.exc("injected at generate")
        return super().generate(ctx)

    def apply(self, ctx: RotationContext, new: str) -> None:
        if self.step == "apply":
            raise self.exc("injected at apply")

    def test(self, ctx: RotationContext, new: str) -> None:
        if self.step == "test":
            raise self.exc("injected at test")
        super().test(ctx, new)

    def promoted(self, ctx: RotationContext, new: str) -> None:
        if self.step == "promoted":
            raise self.exc("injected after promotion")

    def rollback(self, ctx: RotationContext, new: str) -> None:
        self.rolled_back.append(new)


@pytest.mark.parametrize("step", ["generate", "apply", "test"])
def test_a_failure_at_each_step_leaves_current_untouched(mgr: SecretManager,
                                                         step: str) -> None:
    mgr.put(JWT, "o" * 64, ORG)
    rot = Faulty(step)
    eng = RotationEngine(mgr, rotator_factory=lambda name: rot)
    with pytest.raises(RotationError, match=f"step {_step(step)}") as info:
        eng.rotate(JWT, ORG)
    assert info.value.code == "rotation_error"
    assert mgr.get(JWT, ORG, fresh=True) == "o" * 64
    assert mgr.describe(JWT, ORG).current_version == 1
    assert mgr.backend.list("_rotation/") == []
    failed = [d for o, d in rotate_events(mgr) if o == "failed"]
    assert failed[0]["step"] == _step(step)
    assert rot.rolled_back == ([] if step == "generate" else [rot.rolled_back[0]])


def test_a_failure_at_promotion_leaves_current_untouched(mgr: SecretManager) -> None:
    """Someone writes the secret while the rotation runs: check-and-set refuses."""
    mgr.put(JWT, "o" * 64, ORG)

    class Racer(Faulty):
        def test(self, ctx: RotationContext, new: str) -> None:
            mgr.put(JWT, "w" * 64, ORG)  # a concurrent writer wins

    rot = Racer("none")
    eng = RotationEngine(mgr, rotator_factory=lambda name: rot)
    with pytest.raises(RotationError, match="step promote"):
        eng.rotate(JWT, ORG)
    assert mgr.get(JWT, ORG, fresh=True) == "w" * 64
    assert mgr.describe(JWT, ORG).current_version == 2
    assert rot.rolled_back
    assert mgr.backend.list("_rotation/") == []


def _step(step: str) -> str:
    return {"generate": "create", "apply": "apply", "test": "test"}[step]


@pytest.mark.parametrize("step", ["apply", "test", "promoted"])
def test_an_interrupted_rotation_is_finished_by_the_next_run(mgr: SecretManager,
                                                             step: str) -> None:
    mgr.put(JWT, "o" * 64, ORG)
    crash = RotationEngine(mgr, rotator_factory=lambda n: Faulty(step, KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        crash.rotate(JWT, ORG)
    assert mgr.backend.describe(record_path(mgr.path(JWT, ORG), "pending"))
    out = RotationEngine(mgr).rotate(JWT, ORG)
    assert out.outcome == "resumed"
    assert mgr.describe(JWT, ORG).current_version == 2
    assert mgr.get(JWT, ORG, fresh=True) != "o" * 64
    assert mgr.backend.list("_rotation/") != []  # the previous record, for the grace period
    assert all(m.path.endswith("/previous") for m in mgr.backend.list("_rotation/"))
    resumed = [d for o, d in rotate_events(mgr) if o == "resumed"]
    assert resumed[0]["result"] == "completed"


def test_a_rotation_interrupted_before_apply_is_discarded(mgr: SecretManager) -> None:
    mgr.put(JWT, "o" * 64, ORG)

    class CrashAfterCreate(Faulty):
        def apply(self, ctx: RotationContext, new: str) -> None:
            raise KeyboardInterrupt

    eng = RotationEngine(mgr, rotator_factory=lambda n: CrashAfterCreate("none"))
    with pytest.raises(KeyboardInterrupt):
        eng.rotate(JWT, ORG)
    # Recorded as "applying": the next run cannot know whether the target changed, so it
    # tests the new value (random secrets test locally) and completes.
    out = RotationEngine(mgr).rotate(JWT, ORG)
    assert out.outcome == "resumed"


def test_manual_rotation_opens_a_reminder(mgr: SecretManager) -> None:
    mgr.put("openai_api_key", "sk-" + "a1" * 16, ORG)
    res = RotationEngine(mgr).run("all", org=ORG)
    assert [r.outcome for r in res] == ["reminder"]
    assert mgr.describe("openai_api_key", ORG).current_version == 1
    assert [o for o, _ in rotate_events(mgr)] == ["reminder"]


def test_dry_run_changes_nothing(mgr: SecretManager) -> None:
    mgr.put(JWT, "o" * 64, ORG)
    res = RotationEngine(mgr).run("symmetric", dry_run=True)
    assert [r.outcome for r in res] == ["planned"]
    assert mgr.describe(JWT, ORG).current_version == 1
    assert rotate_events(mgr) == []


def test_use_retries_once_with_a_rotated_value(mgr: SecretManager) -> None:
    mgr.put(JWT, "o" * 64, ORG)
    assert mgr.get(JWT, ORG) == "o" * 64  # cached
    # Another process rotates it: simulate by writing straight to the store.
    mgr.backend.put(mgr.path(JWT, ORG), "n" * 64, ctx=WriteContext.make("elsewhere"))
    seen: list[str] = []

    def call(value: str) -> str:
        seen.append(value)
        if value != "n" * 64:
            raise CredentialRejected("401")
        return "ok"

    assert mgr.use(JWT, call, ORG) == "ok"
    assert seen == ["o" * 64, "n" * 64]

    def always(value: str) -> str:
        raise CredentialRejected("401")

    with pytest.raises(CredentialRejected):
        mgr.use(JWT, always, ORG)


def test_unknown_rotator_is_a_config_error(mgr: SecretManager) -> None:
    mgr.put(JWT, "o" * 64, ORG, tags={"rotator": "nope"})
    with pytest.raises(ConfigError, match="unknown rotator 'nope'"):
        RotationEngine(mgr).rotate(JWT, ORG)
    assert mgr.describe(JWT, ORG).current_version == 1


def test_a_tag_never_chooses_a_module_to_import(mgr: SecretManager) -> None:
    import sys

    sys.modules.pop("this", None)
    mgr.put(JWT, "o" * 64, ORG, tags={"rotator": "this:s"})
    with pytest.raises(ConfigError, match="unknown rotator 'this:s'"):
        RotationEngine(mgr).rotate(JWT, ORG)
    assert "this" not in sys.modules


# -- kill -9 at each step ----------------------------------------------------------------------

_CHILD = """
import os, signal, sys
from pathlib import Path
from keysafe.backends.base import WriteContext
from keysafe.backends.sqlite import SQLiteBackend
from keysafe.crypto.keys import KeyRing
from keysafe.manager.audit import AuditLog, SQLiteAuditStore
from keysafe.manager.manager import SecretManager
from keysafe.rotation.engine import RotationEngine
from keysafe.rotation.rotators import RandomRotator

home, step = Path(sys.argv[1]), sys.argv[2]

class Killer(RandomRotator):
    local = len(sys.argv) > 3  # "local": all four steps in one transaction
    def _die(self, where):
        if where == step:
            os.kill(os.getpid(), signal.SIGKILL)
    def generate(self, ctx):
        self._die("generate"); return super().generate(ctx)
    def apply(self, ctx, new):
        self._die("apply")
    def test(self, ctx, new):
        self._die("test"); super().test(ctx, new)
    def promoted(self, ctx, new):
        self._die("promote")

b = SQLiteBackend(home / "s.db", KeyRing.from_file(home / "master.key"))
m = SecretManager(b, audit=AuditLog(SQLiteAuditStore(b)), env="test")
RotationEngine(m, rotator_factory=lambda n: Killer()).rotate("jwt_secret", "acme")
"""


@pytest.mark.parametrize("local", [False, True], ids=["target", "local"])
@pytest.mark.parametrize("step", ["generate", "apply", "test", "promote"])
def test_kill_9_at_each_step_then_a_second_run(tmp_path: Path, step: str,
                                               local: bool) -> None:
    ring = KeyRing.generate()
    ring.save(tmp_path / "master.key")
    b = SQLiteBackend(tmp_path / "s.db", ring)
    m = SecretManager(b, audit=AuditLog(SQLiteAuditStore(b)), env="test")
    m.put(JWT, "o" * 64, ORG)
    m.close()
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(_CHILD), str(tmp_path), step,
                        *(["local"] if local else [])], timeout=60, capture_output=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    b = SQLiteBackend(tmp_path / "s.db", KeyRing.from_file(tmp_path / "master.key"))
    m = SecretManager(b, audit=AuditLog(SQLiteAuditStore(b)), env="test")
    try:
        out = RotationEngine(m).rotate(JWT, ORG)
        # Consistent: exactly one new version, no pending record, the value rotated.
        meta = m.describe(JWT, ORG)
        assert meta.current_version == 2
        assert m.get(JWT, ORG, fresh=True) != "o" * 64
        assert not [x for x in b.list("_rotation/") if x.path.endswith("/pending")]
        events = rotate_events(m)
        if step == "generate" or local:
            # Nothing was recorded before the kill, or the one transaction rolled back.
            assert out.outcome == "rotated"
        else:
            assert out.outcome == "resumed"
            assert any(o == "resumed" for o, _ in events)
        assert m.audit_verify().ok
    finally:
        m.close()
    assert os.path.exists(tmp_path / "s.db")


def test_a_local_rotation_is_one_transaction(mgr: SecretManager) -> None:
    """Interrupted anywhere, a keysafe-only secret is left exactly as it was."""
    mgr.put(JWT, "o" * 64, ORG)

    class Local(Faulty):
        local = True

    with pytest.raises(KeyboardInterrupt):
        RotationEngine(mgr, rotator_factory=lambda n: Local("test", KeyboardInterrupt)
                       ).rotate(JWT, ORG)
    assert mgr.describe(JWT, ORG).current_version == 1
    assert mgr.backend.list("_rotation/") == []
    assert RotationEngine(mgr).rotate(JWT, ORG).outcome == "rotated"


# -- what a schedule may rotate ---------------------------------------------------------

def _overdue(m: SecretManager, name: str) -> None:
    m.backend.update_metadata(  # type: ignore[attr-defined]
        m.path(name, ORG), MetadataUpdate(last_rotated=datetime.now(UTC) - timedelta(days=400)),
        ctx=WriteContext.make("t"))


def test_provider_issued_signing_secrets_get_a_reminder_not_a_made_up_value(
        mgr: SecretManager) -> None:
    """Stripe and Slack issue their webhook signing secrets: a random value would verify
    nothing, so they default to a reminder; a webhook secret of your own still rotates."""
    mgr.put("stripe_webhook_secret", "whsec_" + "A1b2" * 8, ORG)
    mgr.put("slack_signing_secret", "f" * 32, ORG)
    mgr.put("own_webhook_secret", "x" * 40, ORG, secret_type="webhook_secret")
    eng = RotationEngine(mgr)
    by = {s.name: s.rotator for s in eng.states(ORG)}
    assert by == {"stripe_webhook_secret": "manual", "slack_signing_secret": "manual",
                  "own_webhook_secret": "random"}
    out = {r.name: r.outcome for r in eng.run("symmetric", org=ORG)}
    assert out == {"stripe_webhook_secret": "reminder", "slack_signing_secret": "reminder",
                   "own_webhook_secret": "rotated"}
    assert mgr.describe("stripe_webhook_secret", ORG).current_version == 1


def test_a_value_that_does_not_fit_the_catalog_is_refused_before_apply(
        mgr: SecretManager) -> None:
    mgr.put("stripe_webhook_secret", "whsec_" + "A1b2" * 8, ORG)
    mgr.backend.update_metadata(  # type: ignore[attr-defined]
        mgr.path("stripe_webhook_secret", ORG), MetadataUpdate(tags={"rotator": "random"}),
        ctx=WriteContext.make("t"))
    with pytest.raises(RotationError, match=r"does not fit stripe_webhook_secret.*whsec_") as e:
        RotationEngine(mgr).rotate("stripe_webhook_secret", ORG)
    assert e.value.step == "check"  # type: ignore[attr-defined]
    assert mgr.describe("stripe_webhook_secret", ORG).current_version == 1
    assert mgr.get("stripe_webhook_secret", ORG) == "whsec_" + "A1b2" * 8
    assert [o for o, _ in rotate_events(mgr)] == ["failed"]


def test_a_misshapen_value_is_rolled_back_where_generate_made_it_live(
        mgr: SecretManager) -> None:
    """A rotator whose generate already created the value at its target (a webhook's
    new key) gets rollback when the value then fails the catalog's format."""
    calls: list[str] = []

    class Issuer:
        name = "issuer"

        def generate(self, ctx: RotationContext) -> str:
            calls.append("generate")
            return "not-a-stripe-secret"

        def rollback(self, ctx: RotationContext, new: str) -> None:
            calls.append("rollback")

    mgr.put("stripe_webhook_secret", "whsec_" + "A1b2" * 8, ORG, tags={"rotator": "issuer"})
    eng = RotationEngine(mgr, rotator_factory=lambda name: Issuer())  # type: ignore[arg-type,return-value]
    with pytest.raises(RotationError, match="does not fit"):
        eng.rotate("stripe_webhook_secret", ORG)
    assert calls == ["generate", "rollback"]
    assert mgr.describe("stripe_webhook_secret", ORG).current_version == 1


@pytest.mark.parametrize(("text", "inside", "outside"), [
    ("02:00-04:00", "03:59", "04:00"),
    ("23:00-01:30", "00:10", "12:00"),   # wraps past midnight
    (" 22:15 - 23:45 ", "22:15", "22:14"),
])
def test_maintenance_window_parses_and_holds(text: str, inside: str, outside: str) -> None:
    w = parse_window(text)
    assert w is not None
    day = "2026-11-23T{}:00+00:00"
    assert w.holds(datetime.fromisoformat(day.format(inside)))
    assert not w.holds(datetime.fromisoformat(day.format(outside)))
    assert parse_window("") is None


@pytest.mark.parametrize("bad", ["2am-4am", "02:00", "25:00-01:00", "03:00-03:00", "-",
                                 "02:00Z-04:00Z", "02:00+01:00-04:00"])
def test_a_bad_maintenance_window_is_named(bad: str) -> None:
    with pytest.raises(ConfigError, match="rotation window"):
        parse_window(bad)


def test_a_scheduled_run_rotates_jwt_secrets_only_inside_the_window(
        mgr: SecretManager) -> None:
    """spec 002: never rotate the JWT secret without a maintenance window (every session
    signs out). Other due secrets rotate as before; a person naming it chooses the time."""
    mgr.put(JWT, "o" * 64, ORG)
    mgr.put("encryption_key", "e" * 64, ORG, tags={"rotator": "random"})
    mgr.put("secret_key", "s" * 64, ORG)
    mgr.put("other_jwt", "j" * 64, ORG, secret_type="jwt", tags={"maintenance_window": "no"})
    for name in (JWT, "encryption_key", "secret_key", "other_jwt"):
        _overdue(mgr, name)
    now = datetime.now(UTC)
    closed = Window((now + timedelta(hours=2)).time().replace(tzinfo=None),
                    (now + timedelta(hours=3)).time().replace(tzinfo=None))
    first = None
    for maintenance in (None, closed):
        eng = RotationEngine(mgr, policy=Policy(mgr.catalog, maintenance=maintenance))
        assert {s.name for s in eng.states(ORG) if s.needs_window} == {JWT, "secret_key"}
        out = {r.name: (r.outcome, r.detail) for r in eng.run("due")}
        first = first or out
        assert out[JWT][0] == out["secret_key"][0] == "waiting"
        assert ("set KEYSAFE_ROTATION_WINDOW" if maintenance is None
                else f"maintenance window, {closed}") in out[JWT][1]
        assert mgr.describe(JWT, ORG).current_version == 1
    assert first is not None
    assert (first["encryption_key"][0], first["other_jwt"][0]) == ("rotated", "rotated")
    opened = Window((now - timedelta(minutes=30)).time().replace(tzinfo=None),
                    (now + timedelta(minutes=30)).time().replace(tzinfo=None))
    eng = RotationEngine(mgr, policy=Policy(mgr.catalog, maintenance=opened))
    assert {r.name: r.outcome for r in eng.run("due")} == {JWT: "rotated",
                                                           "secret_key": "rotated"}
    # By hand, outside any window: the person running it chose the moment.
    assert RotationEngine(mgr).rotate(JWT, ORG).outcome == "rotated"
    assert mgr.describe(JWT, ORG).current_version == 3


def test_the_window_comes_from_settings(mgr: SecretManager) -> None:
    from keysafe.config import load_settings

    s = load_settings({"KEYSAFE_ROTATION_WINDOW": "02:00-04:00"})
    assert str(RotationEngine.from_settings(mgr, s).policy.maintenance) == "02:00-04:00 UTC"
    with pytest.raises(ConfigError, match="rotation window 'soon'"):
        RotationEngine.from_settings(mgr, load_settings({"KEYSAFE_ROTATION_WINDOW": "soon"}))


def test_the_manager_rotates_one_secret(mgr: SecretManager) -> None:
    """spec 004's ``new_version = await rotate_secret(...)``: the library verb."""
    mgr.put(JWT, "o" * 64, ORG)
    out = mgr.rotate(JWT, ORG)
    assert (out.outcome, out.version) == ("rotated", 2)
    assert mgr.get(JWT, ORG) != "o" * 64
    mgr.put("openai_api_key", "sk-" + "a1" * 16, ORG)
    with pytest.raises(RotationError, match="openai_api_key"):
        mgr.rotate("openai_api_key", ORG)  # only a person can issue it: a reminder
    assert mgr.describe("openai_api_key", ORG).current_version == 1


def test_the_async_manager_rotates_with_the_settings_grace(tmp_path: Path) -> None:
    import asyncio

    from keysafe import AsyncSecretManager
    from keysafe.config import load_settings
    from keysafe.rotation.engine import previous_value

    settings = load_settings({"KEYSAFE_HOME": str(tmp_path), "KEYSAFE_BACKEND": "sqlite",
                              "KEYSAFE_ROTATION_GRACE_HOURS": "0"})

    async def go() -> None:
        m = AsyncSecretManager(SecretManager.from_settings(settings))
        try:
            await m.put(JWT, "o" * 64, ORG)
            out = await m.rotate(JWT, ORG)
            assert (out.outcome, out.version) == ("rotated", 2)
            # A grace of 0 hours: the previous value is already past it.
            assert previous_value(m.sync.backend, m.sync.path(JWT, ORG)) is None
        finally:
            await m.aclose()

    asyncio.run(go())


def test_an_encryption_key_is_rotated_only_when_opted_in(mgr: SecretManager) -> None:
    """Data encrypted under the old key must stay readable: a due encryption key gets a
    reminder until its owner opts in (rotator=random), and decryption_keys hands out
    every kept version, newest first, for the application to decrypt with."""
    from keysafe.errors import ManualRotation

    mgr.put("encryption_key", "v1-" + "a" * 40, ORG)
    _overdue(mgr, "encryption_key")
    out = {r.name: r.outcome for r in RotationEngine(mgr).run("due")}
    assert out == {"encryption_key": "reminder"}
    with pytest.raises(ManualRotation):
        mgr.rotate("encryption_key", ORG)
    assert mgr.describe("encryption_key", ORG).current_version == 1
    mgr.update_tags("encryption_key", ORG, set_tags={"rotator": "random"})
    assert mgr.rotate("encryption_key", ORG).version == 2
    mgr.put("encryption_key", "v3-" + "c" * 40, ORG)
    mgr.destroy("encryption_key", [2], ORG)
    keys = mgr.decryption_keys("encryption_key", ORG)
    assert [v for v, _ in keys] == [3, 1]
    assert dict(keys)[1] == "v1-" + "a" * 40
    assert keys[0][1] == mgr.get("encryption_key", ORG)
    reads = [e.version for e in mgr.audit_query(AuditFilter(action="read"))
             if e.path == mgr.path("encryption_key", ORG)]
    assert sorted(v for v in reads if v is not None) >= [1, 3]


def test_a_session_secret_waits_for_the_window_like_a_jwt(mgr: SecretManager) -> None:
    mgr.put("session_secret", "s" * 64, ORG)
    _overdue(mgr, "session_secret")
    [state] = RotationEngine(mgr).states(ORG)
    assert state.needs_window


def test_a_previous_value_goes_with_its_secret_or_version(mgr: SecretManager) -> None:
    """The previous-value record is a copy of a value: destroying that version, or
    purging the secret, takes it too, and a soft-deleted secret's is not served (a
    reviewer read a destroyed value back through ``stage=previous``)."""
    from keysafe.rotation.engine import record_path

    eng = RotationEngine(mgr, grace=timedelta(hours=1))
    for name in (JWT, "session_secret"):
        mgr.put(name, f"old-{name}-" + "o" * 40, ORG)
        eng.rotate(name, ORG)
        assert mgr.get_previous(name, ORG)[1] == 1
    mgr.destroy(JWT, [1], ORG, keep_current=True)
    with pytest.raises(NotFound):
        mgr.get_previous(JWT, ORG)
    with pytest.raises(NotFound):  # the record itself is gone
        mgr.backend.describe(record_path(mgr.path(JWT, ORG), "previous"))
    mgr.delete("session_secret", ORG)  # soft: restorable, but nothing served meanwhile
    with pytest.raises(NotFound):
        mgr.get_previous("session_secret", ORG)
    assert mgr.verification_values(JWT, ORG) == [mgr.get(JWT, ORG)]
    mgr.restore("session_secret", ORG)
    assert mgr.get_previous("session_secret", ORG)[1] == 1
    mgr.delete("session_secret", ORG, force=True)
    with pytest.raises(NotFound):
        mgr.backend.describe(record_path(mgr.path("session_secret", ORG), "previous"))
