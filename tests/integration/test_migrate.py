"""Migration from the embedded store to another store, through two SecretManagers:
to memory (fast), to a real OpenBao dev server and to a real moto server (AWS Secrets
Manager), each verified value by value and field by field; dry runs, resuming after an
interruption or a failure without duplicates, --overwrite, scope, templates.

Each test uses its own ``app``, so tests share the module's servers without seeing
each other's secrets (the reference, app included, is the same on both sides).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aws_fixtures import MotoAws, aws  # noqa: F401 - aws: module fixture
from bao_fixtures import BaoServer, bao  # noqa: F401 - bao: module fixture

from keysafe import SecretManager, load_settings
from keysafe.backends.memory import MemoryBackend
from keysafe.errors import BackendUnavailable, ConfigError, Conflict
from keysafe.migration import (
    MAX_CONSECUTIVE_UNAVAILABLE,
    MigrationInterrupted,
    MigrationResult,
    migrate,
    verify,
)

CANARY = "canary-migrate-" + uuid.uuid4().hex
LAST_ROTATED = datetime(2024, 3, 1, 12, 30, tzinfo=UTC)
EXPIRES = datetime(2031, 1, 15, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Spec:
    name: str
    org: str
    domain: str | None
    value: str
    meta: dict[str, Any]


SPECS = [
    Spec("openai_api_key", "acme-corp", "card-services", "sk-proj-" + "A1b2C3d4" * 4,
         {"description": "OpenAI key for card services", "tags": {"team": "cards",
                                                                   "tier": "gold"},
          "rotation_days": 90}),
    Spec("db_credentials", "acme-corp", "ledger",
         json.dumps({"host": "db.internal", "password": "pw-" + "x" * 12, "port": 5432,
                     "user": "ledger"}, sort_keys=True),
         {"description": "ledger database", "secret_type": "database"}),
    Spec("webhook_secret", "globex", None, CANARY,
         {"secret_type": "webhook_secret", "expires_at": EXPIRES}),
    Spec("unicode_note", "globex", "ops", "päss wörd ✓ 🗝 — ünïcode", {}),
    Spec("multiline", "globex", "ops", "line one\nline two\n", {"tags": {"kind": "pem"}}),
    *[Spec(f"key_{i:02d}", "initech", None, f"value-{i:02d}-" + "q" * 20, {})
      for i in range(12)],
]
#: Written, then soft-deleted at the source: never migrated.
DELETED = ("old_key", "acme-corp")


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _settings(home: Path, app: str, **kw: Any) -> Any:
    # environ is explicit so that the developer's KEYSAFE_* variables cannot leak in.
    return load_settings(environ={"KEYSAFE_HOME": str(home)}, home=home, app=app,
                         actor="migrator", **kw)


@pytest.fixture
def app() -> str:
    return "mig" + uuid.uuid4().hex[:10]


@pytest.fixture
def src(tmp_path: Path, app: str) -> Iterator[SecretManager]:
    """The embedded store (SQLite, encrypted) holding SPECS and one deleted secret."""
    mgr = SecretManager.from_settings(_settings(tmp_path / "src", app, master_key=_key()))
    for s in SPECS:
        mgr.put(s.name, s.value, s.org, domain=s.domain, check_format=False, **s.meta)
    mgr.update_metadata("openai_api_key", "acme-corp", domain="card-services",
                        last_rotated=LAST_ROTATED)
    mgr.put(*DELETED[:1], "gone-" + CANARY, DELETED[1])
    mgr.delete(*DELETED[:1], DELETED[1])
    yield mgr
    mgr.close()


DESTINATIONS = ["memory", "vault", "aws-sm"]


class Dst:
    """Destination managers on one store: ``dst()`` opens a new manager each call, as
    a re-run in a new process would (the memory store is kept between calls)."""

    def __init__(self, kind: str, app: str, home: Path, server: Any) -> None:
        self.kind, self.app, self.home, self.server = kind, app, home, server
        self.memory = MemoryBackend()
        self.opened: list[SecretManager] = []

    def __call__(self, **kw: Any) -> SecretManager:
        if self.kind == "memory":
            mgr = SecretManager(self.memory, app=self.app, actor="migrator", **kw)
        else:
            if self.kind == "vault":
                options = {"url": self.server.url, "token": self.server.token,
                           "timeout": 5}
            else:
                options = {"endpoint_url": self.server.url}
            mgr = SecretManager.from_settings(_settings(
                self.home, self.app, backend=self.kind, backend_options=options, **kw))
        self.opened.append(mgr)
        return mgr


@pytest.fixture(params=DESTINATIONS)
def make_dst(request: pytest.FixtureRequest, tmp_path: Path, app: str) -> Iterator[Dst]:
    kind = request.param
    server = (request.getfixturevalue("bao") if kind == "vault"
              else request.getfixturevalue("aws") if kind == "aws-sm" else None)
    d = Dst(kind, app, tmp_path / "dst", server)
    yield d
    for mgr in d.opened:
        mgr.close()


def same_as_source(src: SecretManager, dst: SecretManager, name: str, org: str) -> None:
    """Write at the destination what the source holds (value and last_rotated)."""
    dst.put(name, src.get(name, org), org)
    dst.update_metadata(name, org, last_rotated=src.describe(name, org).last_rotated)


def src_paths(src: SecretManager) -> list[str]:
    return [m.path for m in src.list()]


def dst_versions(dst: SecretManager, src: SecretManager) -> dict[str, int]:
    out = {}
    for path in src_paths(src):
        ref = src.parse(path)
        out[path] = dst.describe(ref.name, ref.org, domain=ref.domain).current_version
    return out


def assert_fully_copied(src: SecretManager, dst: SecretManager) -> None:
    report = verify(src, dst, src_paths(src))
    assert report.ok, report.to_dict()
    assert report.checked == len(SPECS)
    for s in SPECS:
        meta = dst.describe(s.name, s.org, domain=s.domain)
        for k, v in s.meta.items():
            got = getattr(meta, k)
            if isinstance(v, datetime):
                assert abs((got - v).total_seconds()) < 1, (s.name, k)
            else:
                assert got == v, (s.name, k, got)
        assert dst.get(s.name, s.org, domain=s.domain, fresh=True) == s.value
    rotated = dst.describe("openai_api_key", "acme-corp", domain="card-services")
    assert rotated.last_rotated is not None
    assert abs((rotated.last_rotated - LAST_ROTATED).total_seconds()) < 1
    assert not dst.has(*DELETED)


def no_canary(result: MigrationResult) -> None:
    text = json.dumps(result.to_dict()) + repr(result)
    assert CANARY not in text


# -- copying ---------------------------------------------------------------------------
def test_everything_copied_and_verified(src: SecretManager,
                                        make_dst: Dst) -> None:
    dst = make_dst()
    result = migrate(src, dst)
    assert result.ok, result.to_dict()
    assert result.total == len(SPECS)
    assert {i.reason for i in result.moved} == {"created"}
    assert len(result.moved) == len(SPECS)
    assert not result.skipped
    assert all(i.version == 1 for i in result.moved)
    assert all(i.target == i.path for i in result.items)  # same template both sides
    assert_fully_copied(src, dst)
    assert set(dst_versions(dst, src).values()) == {1}
    no_canary(result)
    # And the store's own tools see them at the documented places.
    kind = make_dst.kind
    path = src.path("webhook_secret", "globex")
    if kind == "vault":
        server = make_dst.server
        out = server.cli("kv", "get", "-field=value", f"secret/{path}").stdout
        assert out.rstrip("\n") == CANARY
        creds = server.cli_json("kv", "get", "-format=json",
                                "secret/" + src.path("db_credentials", "acme-corp",
                                                     domain="ledger"))
        assert creds["data"]["data"]["user"] == "ledger"  # JSON credentials are the map
    elif kind == "aws-sm":
        client = make_dst.server.client("secretsmanager")
        assert client.get_secret_value(SecretId=path)["SecretString"] == CANARY


def test_dry_run_changes_nothing(src: SecretManager, make_dst: Dst,
                                 tmp_path: Path) -> None:
    dst = make_dst()
    same_as_source(src, dst, "key_00", "initech")
    dst.put("key_01", "something else", "initech")  # differs
    state = tmp_path / "state" / "m.state"
    result = migrate(src, dst, dry_run=True, state_path=state)
    assert result.dry_run
    assert result.ok
    by = {i.path: i for i in result.items}
    assert by[src.path("key_00", "initech")].reason == "same_value"
    assert by[src.path("key_01", "initech")].reason == "exists"
    assert by[src.path("key_02", "initech")].outcome == "moved"
    assert by[src.path("key_02", "initech")].message == "would be created"
    assert len(result.moved) == len(SPECS) - 2
    assert sorted(m.path for m in dst.list()) == sorted(
        [src.path("key_00", "initech"), src.path("key_01", "initech")])
    assert dst.describe("key_01", "initech").current_version == 1
    assert not state.exists()
    again = migrate(src, dst, dry_run=True, overwrite=True)
    assert again.counts()["moved_by_reason"] == {"created": len(SPECS) - 2, "overwritten": 1}
    assert sorted(m.path for m in dst.list()) == sorted(
        [src.path("key_00", "initech"), src.path("key_01", "initech")])
    no_canary(result)


def test_rerun_after_completion_changes_nothing(
        src: SecretManager, make_dst: Dst, tmp_path: Path) -> None:
    state = tmp_path / "m.state"
    first = migrate(src, make_dst(), state_path=state)
    assert first.ok
    assert not state.exists()
    dst = make_dst()
    again = migrate(src, dst, state_path=state)
    assert again.ok
    assert {i.reason for i in again.items} == {"same_value"}
    assert not [i for i in again.items if i.message]
    assert set(dst_versions(dst, src).values()) == {1}


# -- resuming --------------------------------------------------------------------------
def interrupt_after(n: int) -> Callable[[int, int], None]:
    def progress(done: int, total: int) -> None:
        if done == n:
            raise KeyboardInterrupt

    return progress


def test_resume_after_interrupt(src: SecretManager, make_dst: Dst,
                                tmp_path: Path) -> None:
    state = tmp_path / "m.state"
    with pytest.raises(MigrationInterrupted) as info:
        migrate(src, make_dst(), state_path=state, progress=interrupt_after(4))
    partial = info.value.result
    assert isinstance(info.value, KeyboardInterrupt)
    assert partial.interrupted
    assert len(partial.items) == 4
    assert partial.state_kept
    assert partial.not_attempted == len(SPECS) - 4
    assert state.is_file()
    assert CANARY not in state.read_text()
    done_before = [i.path for i in partial.items]

    dst = make_dst()
    result = migrate(src, dst, state_path=state)
    assert result.ok, result.to_dict()
    by = {i.path: i for i in result.items}
    assert all(by[p].reason == "done" for p in done_before)
    assert len(result.moved) == len(SPECS) - 4
    assert not state.exists()
    assert set(dst_versions(dst, src).values()) == {1}
    assert_fully_copied(src, dst)


def test_resume_when_interrupted_inside_a_write(
        src: SecretManager, make_dst: Dst, tmp_path: Path) -> None:
    """Ctrl-C after the destination took the value but before the run recorded it
    (and before it set last_rotated back): the re-run finds its own copy, adds no
    version and finishes the metadata."""
    state = tmp_path / "m.state"
    dst = make_dst()
    real_put, calls = dst.put, []

    def put(*a: Any, **kw: Any) -> Any:
        info = real_put(*a, **kw)
        calls.append(a[0])
        if len(calls) == 1:  # the first secret listed: openai_api_key (has last_rotated)
            raise KeyboardInterrupt
        return info

    dst.put = put  # type: ignore[method-assign]
    with pytest.raises(MigrationInterrupted) as info:
        migrate(src, dst, state_path=state)
    assert calls == ["openai_api_key"]
    assert info.value.result.items == []

    dst2 = make_dst()
    result = migrate(src, dst2, state_path=state)
    assert result.ok
    first = result.items[0]
    assert (first.outcome, first.reason) == ("moved", "metadata")
    assert "last_rotated" in (first.message or "")
    assert set(dst_versions(dst2, src).values()) == {1}
    assert_fully_copied(src, dst2)


def test_failure_midway_then_rerun(src: SecretManager, make_dst: Dst,
                                   tmp_path: Path) -> None:
    state = tmp_path / "m.state"
    dst = make_dst()
    real_put, n = dst.put, [0]

    def flaky(*a: Any, **kw: Any) -> Any:
        n[0] += 1
        if n[0] in (3, 5):
            raise BackendUnavailable("store unreachable (injected)")
        return real_put(*a, **kw)

    dst.put = flaky  # type: ignore[method-assign]
    result = migrate(src, dst, state_path=state)
    assert not result.ok
    assert len(result.failed) == 2
    assert {i.reason for i in result.failed} == {"backend_unavailable"}
    assert all(i.message == "store unreachable (injected)" for i in result.failed)
    assert len(result.moved) == len(SPECS) - 2
    assert result.state_kept
    assert state.is_file()
    failed = {i.path for i in result.failed}

    dst2 = make_dst()
    again = migrate(src, dst2, state_path=state)
    assert again.ok
    assert {i.path for i in again.moved} == failed
    assert {i.reason for i in again.skipped} == {"done"}
    assert set(dst_versions(dst2, src).values()) == {1}
    assert_fully_copied(src, dst2)


def test_overwrite(src: SecretManager, make_dst: Dst) -> None:
    dst = make_dst()
    same_as_source(src, dst, "key_00", "initech")
    dst.put("key_01", "stale value", "initech", description="old")
    dst.put("key_02", "stale value", "initech")
    dst.delete("key_02", "initech")
    first = migrate(src, dst)
    by = {src.parse(i.path).name: i for i in first.items}
    assert by["key_00"].reason == "same_value"
    assert (by["key_01"].reason, by["key_01"].message) == (
        "exists", "holds a different value at the destination")
    assert by["key_02"].reason == "exists"
    assert "deleted" in (by["key_02"].message or "")
    assert dst.get("key_01", "initech", fresh=True) == "stale value"
    assert not verify(src, dst, src_paths(src)).ok

    second = migrate(src, dst, overwrite=True)
    assert second.ok
    by = {src.parse(i.path).name: i for i in second.items}
    assert (by["key_01"].reason, by["key_01"].version) == ("overwritten", 2)
    assert by["key_02"].reason == "overwritten"
    assert by["key_00"].reason == "same_value"
    assert dst.describe("key_01", "initech").description == "old"  # nothing to carry
    report = verify(src, dst, src_paths(src))
    assert report.ok, report.to_dict()
    assert dst.get("key_02", "initech", fresh=True) == "value-02-" + "q" * 20


# -- memory only: behaviour that does not depend on the store -------------------------------
@pytest.fixture
def mem(app: str) -> SecretManager:
    return SecretManager(MemoryBackend(), app=app, actor="migrator")


def test_scope_org_and_domain(src: SecretManager, mem: SecretManager) -> None:
    r = migrate(src, mem, org="globex", domain="ops")
    assert r.ok
    assert sorted(src.parse(i.path).name for i in r.moved) == [
        "multiline", "unicode_note"]
    assert r.scope == src.naming.prefix(app=src.app, env="local", org="globex", domain="ops")
    r = migrate(src, mem, domain="ledger")
    assert [src.parse(i.path).name for i in r.moved] == ["db_credentials"]
    assert len(mem.list()) == 3


def test_destination_template_may_differ(src: SecretManager, app: str) -> None:
    dst = SecretManager(MemoryBackend(), app=app, naming="/{app}/{env}/org-{org}/{domain}/{name}")
    r = migrate(src, dst)
    assert r.ok
    item = next(i for i in r.items if i.path.endswith("/openai_api_key"))
    assert item.target == f"/{app}/local/org-acme-corp/card-services/openai_api_key"
    assert verify(src, dst, src_paths(src)).ok


def test_unsupported_secrets_are_skipped_with_the_reason(src: SecretManager,
                                                         app: str) -> None:
    dst = SecretManager(MemoryBackend(), app=app, max_value_bytes=39)
    r = migrate(src, dst)
    unsupported = [i for i in r.skipped if i.reason == "unsupported"]
    too_big = {s.name for s in SPECS if len(s.value.encode()) > 39}
    assert {"openai_api_key", "db_credentials", "webhook_secret"} <= too_big
    assert {src.parse(i.path).name for i in unsupported} == too_big
    assert all("limit is 39" in (i.message or "") for i in unsupported)
    assert len(r.moved) == len(SPECS) - len(too_big)
    assert r.ok  # skipped, not failed: the destination cannot hold them as they are
    no_canary(r)


def test_stops_when_the_destination_stays_unavailable(src: SecretManager,
                                                      mem: SecretManager) -> None:
    def down(*a: Any, **kw: Any) -> Any:
        raise BackendUnavailable("store unreachable (injected)")

    mem.put = down  # type: ignore[method-assign]
    r = migrate(src, mem)
    assert len(r.failed) == MAX_CONSECUTIVE_UNAVAILABLE
    assert r.stopped
    assert "unavailable" in r.stopped
    assert r.not_attempted == len(SPECS) - MAX_CONSECUTIVE_UNAVAILABLE
    assert not r.ok


def test_foreign_errors_are_reported_by_type_only(src: SecretManager,
                                                  mem: SecretManager) -> None:
    def boom(name: str, value: str, *a: Any, **kw: Any) -> Any:
        raise RuntimeError(f"driver said: {value}")

    mem.put = boom  # type: ignore[method-assign]
    r = migrate(src, mem)
    assert {i.message for i in r.failed} == {"unexpected RuntimeError"}
    no_canary(r)


def test_refuses_mismatched_managers(src: SecretManager) -> None:
    with pytest.raises(ConfigError, match="same app"):
        migrate(src, SecretManager(MemoryBackend(), app="other"))
    with pytest.raises(ConfigError, match="same manager"):
        migrate(src, src)


def test_state_file_of_another_scope_is_refused(src: SecretManager, mem: SecretManager,
                                                tmp_path: Path) -> None:
    state = tmp_path / "m.state"
    with pytest.raises(MigrationInterrupted):
        migrate(src, mem, org="initech", state_path=state, progress=interrupt_after(1))
    with pytest.raises(ConfigError, match="belongs to another migration"):
        migrate(src, mem, org="globex", state_path=state)
    assert migrate(src, mem, org="initech", state_path=state).ok


def test_state_file_is_private_and_locked(src: SecretManager, mem: SecretManager,
                                          tmp_path: Path) -> None:
    state = tmp_path / "deeper" / "m.state"
    with pytest.raises(MigrationInterrupted):
        migrate(src, mem, state_path=state, progress=interrupt_after(2))
    assert state.stat().st_mode & 0o777 == 0o600
    lines = state.read_text().splitlines()
    assert json.loads(lines[0])["keysafe_migration"] == 1
    import fcntl

    with state.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        with pytest.raises(Conflict, match="another migration"):
            migrate(src, mem, state_path=state)


def test_verify_reports_paths_not_values(src: SecretManager, mem: SecretManager) -> None:
    assert migrate(src, mem).ok
    mem.put("webhook_secret", "tampered-" + CANARY, "globex")
    mem.update_metadata("multiline", "globex", domain="ops", tags={"kind": "other"})
    mem.delete("key_03", "initech")
    report = verify(src, mem, src_paths(src))
    assert not report.ok
    assert report.mismatched == [src.path("webhook_secret", "globex")]
    assert report.metadata == [(src.path("multiline", "globex", domain="ops"), ["tags"])]
    assert report.missing == [src.path("key_03", "initech")]
    assert CANARY not in json.dumps(report.to_dict())


def test_last_rotated_is_kept_even_when_recent(src: SecretManager, mem: SecretManager) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=400)
    src.update_metadata("key_05", "initech", last_rotated=long_ago)
    assert migrate(src, mem).ok
    got = mem.describe("key_05", "initech").last_rotated
    assert got is not None
    assert abs((got - long_ago).total_seconds()) < 1


def test_to_ssm_with_the_spec_000_template(src: SecretManager, aws: MotoAws,  # noqa: F811
                                           tmp_path: Path, app: str) -> None:
    """AWS SSM Parameter Store (moto) under another naming template: the reference
    stays, the path follows the destination's template; SSM cannot update metadata
    alone, so last_rotated is not carried, and the result says so once."""
    dst = SecretManager.from_settings(_settings(
        tmp_path / "ssm", app, backend="aws-ssm", backend_options={"endpoint_url": aws.url},
        naming_template="/{app}/{env}/org-{org}/{domain}/{name}"))
    try:
        r = migrate(src, dst)
        assert r.ok, r.to_dict()
        assert len(r.moved) == len(SPECS)
        item = next(i for i in r.items if i.path.endswith("/openai_api_key"))
        assert item.target == f"/{app}/local/org-acme-corp/card-services/openai_api_key"
        assert item.message == "last_rotated not carried"
        assert len(r.notes) == 1
        assert "last rotation" in r.notes[0]
        report = verify(src, dst, src_paths(src))
        assert report.missing == []
        assert report.mismatched == []
        assert report.errors == []
        assert {tuple(f) for _, f in report.metadata} <= {("last_rotated",)}
        ssm = aws.client("ssm")
        got = ssm.get_parameter(Name=item.target, WithDecryption=True)["Parameter"]["Value"]
        assert got == SPECS[0].value
        no_canary(r)
    finally:
        dst.close()


def test_check_reuse_across_stores(src: SecretManager, aws: MotoAws,  # noqa: F811
                                   tmp_path: Path, app: str) -> None:
    """Production on AWS Secrets Manager (moto's server), development on the embedded
    store: a production value the development store also holds is found, by keyed
    digest, and named without its value."""
    from keysafe.reuse import find_reuse

    prod = SecretManager.from_settings(_settings(
        tmp_path / "prod", app, env="production", backend="aws-sm",
        backend_options={"endpoint_url": aws.url}))
    try:
        shared = SPECS[0]
        prod.put(shared.name, shared.value, shared.org, domain=shared.domain,
                 check_format=False)
        prod.put("only_in_prod", "p-" + "z" * 30, shared.org, check_format=False)
        report = find_reuse(prod, src)
        assert [(f.path, f.other_path, f.same_name) for f in report.found] == [
            (prod.path(shared.name, shared.org, domain=shared.domain),
             src.path(shared.name, shared.org, domain=shared.domain), True)]
        assert report.checked == 2
        assert shared.value not in repr(report)
    finally:
        prod.close()
