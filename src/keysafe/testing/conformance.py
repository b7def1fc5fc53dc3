"""The backend contract as a test suite, shipped so that any store can prove it conforms.

A backend's test is a subclass with one factory method (keyring's ``testing/backend``
pattern)::

    from keysafe.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        def make_backend(self, *, max_versions: int = 10) -> SecretBackend:
            return MyBackend(max_versions=max_versions)

Every test gets a fresh ``self.backend`` from the factory and closes it afterwards.
The semantics are those of the in-memory reference backend
(``keysafe.backends.memory``) and of the protocol docstrings in
``keysafe.backends.base``. Optional capabilities (Versioned, Recoverable,
MetadataWritable, Transactional) are detected with ``isinstance``; their tests are
skipped for a backend without them.

Each test writes under its own random prefix and removes what it wrote, so the suite
also runs against a shared, long-lived server. A factory that cannot honour
``max_versions`` should call ``pytest.skip``. A store that stamps its own times
rather than taking ``WriteContext.now`` sets ``clock_tolerance``.
"""

from __future__ import annotations

import builtins
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keysafe.backends.base import (
    Destroyable,
    DueListing,
    DueWindow,
    MetadataWritable,
    Recoverable,
    SecretBackend,
    Transactional,
    Versioned,
    WriteContext,
)
from keysafe.errors import Conflict, KeysafeError, NotFound, ValueTooLarge
from keysafe.models import MetadataUpdate, SecretMetadata, VersionInfo

__all__ = ["BackendConformance"]

#: Values that must come back byte for byte.
ROUND_TRIP_VALUES = {
    "ascii": "s3cr3t-value",
    "unicode": "pässwörd ✓ 🔑 中文 ключ",
    "newlines": "line one\nline two\r\nline three\n\n",
    "whitespace": "  leading and trailing\t ",
    "json": json.dumps({"client_id": "abc", "client_secret": "x\"y\\z", "n": [1, 2]}),
    "pem": "-----BEGIN PRIVATE KEY-----\nMIIBVAIBADANBgkqhkiG9w0BAQEFAAS=\n"
           "-----END PRIVATE KEY-----\n",
}


class BackendConformance:
    """Mixin of contract tests; subclass it as ``Test<YourBackend>`` and add the factory."""

    #: How far a stored time may be from the ``WriteContext.now`` it was written with.
    clock_tolerance = timedelta(0)
    #: The largest value the store accepts (one byte more must raise ValueTooLarge).
    max_value_bytes = 64 * 1024
    #: Whether metadata can be updated while a secret is soft-deleted (Vault: yes;
    #: AWS Secrets Manager, Azure: no, they answer Conflict and change nothing).
    metadata_writable_while_deleted = True
    #: Whether the store honours max_versions exactly (SSM always keeps 100).
    honours_max_versions = True
    #: Whether each version records keysafe's actor (SSM keeps only the IAM user).
    records_version_authors = True
    #: Whether versions can be listed while soft-deleted (Key Vault: no).
    versions_while_deleted = True

    backend: SecretBackend
    #: A fresh directory per test, for factories that need files.
    tmp_path: Path

    def make_backend(self, *, max_versions: int = 10) -> SecretBackend:
        """Return a new, empty-enough backend keeping ``max_versions`` versions."""
        raise NotImplementedError("subclasses of BackendConformance define make_backend")

    # -- fixtures and helpers -----------------------------------------------------
    @pytest.fixture(autouse=True)
    def _conformance_backend(self, tmp_path: Path) -> Iterator[None]:
        self.tmp_path = tmp_path
        self.prefix = f"keysafe-conformance/{uuid.uuid4().hex[:16]}/"
        self._backends: builtins.list[SecretBackend] = []
        self.backend = self.new_backend()
        yield
        for b in self._backends:
            self._clean(b)
            with suppress(Exception):
                b.close()

    def new_backend(self, *, max_versions: int = 10) -> SecretBackend:
        """A backend from the factory, closed (and cleaned) after the test."""
        b = self.make_backend(max_versions=max_versions)
        self._backends.append(b)
        return b

    def _clean(self, b: SecretBackend) -> None:
        with suppress(Exception):
            for meta in b.list(self.prefix, include_deleted=True):
                with suppress(KeysafeError):
                    if isinstance(b, Recoverable):
                        b.purge(meta.path, ctx=self.ctx())
                    else:
                        b.delete(meta.path, ctx=self.ctx())

    def path(self, name: str = "secret") -> str:
        """A path unique to this test."""
        return self.prefix + name

    @staticmethod
    def ctx(actor: str = "conformance@test", *, offset_ms: int = 0) -> WriteContext:
        return WriteContext(actor, datetime.now(UTC) + timedelta(milliseconds=offset_ms))

    def assert_time(self, actual: datetime | None, expected: datetime) -> None:
        assert actual is not None
        assert actual.tzinfo is not None, "stored times must be timezone-aware"
        assert abs(actual - expected) <= self.clock_tolerance, (actual, expected)

    def put(self, path: str, value: str, *, backend: SecretBackend | None = None,
            expected_version: int | None = None,
            meta: MetadataUpdate | None = None) -> VersionInfo:
        b = backend or self.backend
        return b.put(path, value, ctx=self.ctx(), expected_version=expected_version,
                     meta=meta)

    def versioned(self) -> Versioned:
        b = self.backend
        if not isinstance(b, Versioned):
            pytest.skip(f"{b.name} does not keep versions (no Versioned capability)")
        return b

    def destroyable(self) -> Destroyable:
        b = self.backend
        if not isinstance(b, Destroyable):
            pytest.skip(f"{b.name} cannot destroy single versions (no Destroyable capability)")
        return b

    def soft_deleting(self) -> None:
        """Skip unless delete is soft (restorable): stores without Recoverable delete for good."""
        if not isinstance(self.backend, Recoverable):
            pytest.skip(f"{self.backend.name} deletes permanently (no Recoverable capability)")

    def recoverable(self) -> Recoverable:
        b = self.backend
        if not isinstance(b, Recoverable):
            pytest.skip(f"{b.name} cannot restore or purge (no Recoverable capability)")
        return b

    def metadata_writable(self) -> MetadataWritable:
        b = self.backend
        if not isinstance(b, MetadataWritable):
            pytest.skip(f"{b.name} cannot update metadata (no MetadataWritable capability)")
        return b

    def transactional(self) -> Transactional:
        b = self.backend
        if not isinstance(b, Transactional):
            pytest.skip(f"{b.name} has no transactions (no Transactional capability)")
        return b

    # -- the protocol itself ------------------------------------------------------
    def test_is_a_secret_backend(self) -> None:
        assert isinstance(self.backend, SecretBackend)
        assert isinstance(self.backend.name, str)
        assert self.backend.name

    def test_ping(self) -> None:
        self.backend.ping()  # raises BackendUnavailable if the store is unreachable

    @pytest.mark.parametrize("kind", sorted(ROUND_TRIP_VALUES))
    def test_put_get_round_trip(self, kind: str) -> None:
        value = ROUND_TRIP_VALUES[kind]
        p = self.path(kind)
        info = self.put(p, value)
        assert info.version == 1
        got = self.backend.get(p)
        assert got == (value, 1)
        assert type(got[0]) is str

    def test_largest_value_round_trips(self) -> None:
        n = self.max_value_bytes
        value = (uuid.uuid4().hex * (n // 32 + 1))[:n]
        assert len(value.encode()) == n
        self.put(self.path(), value)
        assert self.backend.get(self.path()) == (value, 1)

    def test_one_byte_over_the_limit_is_refused(self) -> None:
        if self.max_value_bytes >= 64 * 1024:
            pytest.skip("keysafe's own 64 KiB limit applies before this store's")
        p = self.path()
        with pytest.raises(ValueTooLarge):
            self.put(p, "x" * (self.max_value_bytes + 1))
        with pytest.raises(NotFound):
            self.backend.describe(p, include_deleted=True)

    def test_put_returns_version_info(self) -> None:
        ctx = self.ctx("writer@test")
        info = self.backend.put(self.path(), "v", ctx=ctx)
        assert isinstance(info, VersionInfo)
        assert info.version == 1
        assert info.created_by == "writer@test"
        assert info.destroyed is False
        self.assert_time(info.created_at, ctx.now)

    def test_versions_count_up_without_gaps(self) -> None:
        p = self.path()
        got = [self.put(p, f"value {i}").version for i in range(1, 4)]
        assert got == [1, 2, 3]
        assert self.backend.get(p) == ("value 3", 3)
        meta = self.backend.describe(p)
        assert meta.current_version == 3
        assert meta.versions == 3

    def test_get_old_versions(self) -> None:
        p = self.path()
        for i in range(1, 4):
            self.put(p, f"value {i}")
        for i in range(1, 4):
            assert self.backend.get(p, version=i) == (f"value {i}", i)

    @pytest.mark.parametrize("version", [0, -1, 4, 10_000])
    def test_get_missing_version_is_not_found(self, version: int) -> None:
        p = self.path()
        for i in range(3):
            self.put(p, f"value {i}")
        with pytest.raises(NotFound):
            self.backend.get(p, version=version)

    def test_same_value_twice_makes_two_versions(self) -> None:
        p = self.path()
        self.put(p, "same")
        assert self.put(p, "same").version == 2
        assert self.backend.get(p) == ("same", 2)

    def test_paths_are_independent(self) -> None:
        a, b = self.path("a"), self.path("b")
        self.put(a, "A1")
        self.put(a, "A2")
        self.put(b, "B1")
        assert self.backend.get(a) == ("A2", 2)
        assert self.backend.get(b) == ("B1", 1)

    # -- check-and-set ------------------------------------------------------------
    def test_cas_zero_creates_when_absent(self) -> None:
        info = self.put(self.path(), "first", expected_version=0)
        assert info.version == 1
        assert self.backend.get(self.path()) == ("first", 1)

    def test_cas_zero_conflicts_when_present(self) -> None:
        p = self.path()
        self.put(p, "first")
        with pytest.raises(Conflict) as exc_info:
            self.put(p, "second", expected_version=0)
        assert exc_info.value.current_version == 1
        assert exc_info.value.path == p
        assert self.backend.get(p) == ("first", 1)
        assert self.backend.describe(p).current_version == 1

    def test_cas_matching_version_writes(self) -> None:
        p = self.path()
        self.put(p, "one")
        self.put(p, "two")
        assert self.put(p, "three", expected_version=2).version == 3
        assert self.backend.get(p) == ("three", 3)

    def test_cas_mismatch_conflicts_and_writes_nothing(self) -> None:
        p = self.path()
        self.put(p, "one", meta=MetadataUpdate(description="before"))
        self.put(p, "two")
        before = self.backend.describe(p)
        for stale in (1, 3, 99):
            with pytest.raises(Conflict) as exc_info:
                self.put(p, "lost", expected_version=stale,
                         meta=MetadataUpdate(description="after"))
            assert exc_info.value.current_version == 2
        assert self.backend.get(p) == ("two", 2)
        after = self.backend.describe(p)
        assert after == before
        assert after.description == "before"
        with pytest.raises(NotFound):
            self.backend.get(p, version=3)

    def test_cas_on_absent_path_conflicts_and_creates_nothing(self) -> None:
        p = self.path()
        with pytest.raises(Conflict) as exc_info:
            self.put(p, "x", expected_version=1)
        assert exc_info.value.current_version == 0
        with pytest.raises(NotFound):
            self.backend.describe(p, include_deleted=True)
        assert self.backend.list(self.prefix, include_deleted=True) == []

    def test_cas_with_concurrent_writers_loses_nothing(self) -> None:
        p = self.path()
        threads, per_thread = 4, 8
        won: builtins.list[int] = []
        lock = threading.Lock()
        errors: builtins.list[BaseException] = []

        def writer(n: int) -> None:
            try:
                for i in range(per_thread):
                    while True:
                        try:
                            current = self.backend.describe(p).current_version
                        except NotFound:
                            current = 0
                        try:
                            info = self.put(p, f"w{n}-{i}", expected_version=current)
                        except Conflict:
                            continue
                        with lock:
                            won.append(info.version)
                        break
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(timeout=60)
        assert not errors, errors
        total = threads * per_thread
        assert sorted(won) == list(range(1, total + 1))
        assert self.backend.describe(p).current_version == total

    # -- metadata -----------------------------------------------------------------
    def test_describe_records_who_and_when(self) -> None:
        p = self.path()
        first = self.ctx("alice@test")
        second = self.ctx("bob@test", offset_ms=5)
        self.backend.put(p, "one", ctx=first)
        meta = self.backend.describe(p)
        assert isinstance(meta, SecretMetadata)
        assert meta.path == p
        assert meta.current_version == 1
        assert meta.versions == 1
        assert (meta.created_by, meta.updated_by) == ("alice@test", "alice@test")
        self.assert_time(meta.created_at, first.now)
        self.assert_time(meta.updated_at, first.now)
        assert meta.deleted_at is None
        assert meta.deleted is False
        assert self.backend.describe(p, include_deleted=True) == meta

        self.backend.put(p, "two", ctx=second)
        meta = self.backend.describe(p)
        assert (meta.created_by, meta.updated_by) == ("alice@test", "bob@test")
        self.assert_time(meta.created_at, first.now)
        self.assert_time(meta.updated_at, second.now)
        assert meta.current_version == 2
        assert meta.versions == 2

    def test_describe_fresh_secret_has_empty_metadata(self) -> None:
        self.put(self.path(), "v")
        meta = self.backend.describe(self.path())
        assert meta.description is None
        assert meta.secret_type is None
        assert meta.tags == {}
        assert meta.rotation_days is None
        assert meta.expires_at is None
        assert meta.last_rotated is None

    def test_put_sets_metadata(self) -> None:
        p = self.path()
        expires = datetime(2031, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
        rotated = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
        self.put(p, "v", meta=MetadataUpdate(
            description="Stripe key for billing", secret_type="api_key",
            tags={"team": "billing", "tier": "gold"}, rotation_days=90,
            expires_at=expires, last_rotated=rotated))
        meta = self.backend.describe(p)
        assert meta.description == "Stripe key for billing"
        assert meta.secret_type == "api_key"
        assert meta.tags == {"team": "billing", "tier": "gold"}
        assert meta.rotation_days == 90
        assert meta.expires_at == expires
        assert meta.last_rotated == rotated

    def test_put_keeps_metadata_it_does_not_set(self) -> None:
        p = self.path()
        self.put(p, "one", meta=MetadataUpdate(description="d", secret_type="password",
                                               tags={"a": "1"}))
        self.put(p, "two")
        meta = self.backend.describe(p)
        assert (meta.description, meta.secret_type, meta.tags) == ("d", "password", {"a": "1"})
        self.put(p, "three", meta=MetadataUpdate(description="new", tags={"b": "2"}))
        meta = self.backend.describe(p)
        assert (meta.description, meta.secret_type, meta.tags) == ("new", "password", {"b": "2"})

    def test_tags_are_copied_in_and_out(self) -> None:
        # Neither the caller's dict nor the one handed back may alias stored state.
        p = self.path()
        tags = {"team": "billing"}
        self.put(p, "v", meta=MetadataUpdate(tags=tags))
        tags["injected"] = "by-caller"
        shown = self.backend.describe(p)
        assert shown.tags == {"team": "billing"}
        shown.tags["mutated"] = "by-reader"
        assert self.backend.describe(p).tags == {"team": "billing"}
        assert self.backend.list(self.prefix)[0].tags == {"team": "billing"}

    def test_empty_tags_clear_tags(self) -> None:
        p = self.path()
        self.put(p, "one", meta=MetadataUpdate(tags={"a": "1"}))
        self.put(p, "two", meta=MetadataUpdate(tags={}))
        assert self.backend.describe(p).tags == {}

    def test_update_metadata(self) -> None:
        b = self.metadata_writable()
        p = self.path()
        self.backend.put(p, "v", ctx=self.ctx("alice@test"),
                         meta=MetadataUpdate(description="old", secret_type="token"))
        later = self.ctx("bob@test", offset_ms=5)
        meta = b.update_metadata(p, MetadataUpdate(description="new", tags={"k": "v"},
                                                   rotation_days=30), ctx=later)
        assert meta.description == "new"
        assert meta.secret_type == "token"
        assert meta.tags == {"k": "v"}
        assert meta.rotation_days == 30
        assert meta.updated_by == "bob@test"
        self.assert_time(meta.updated_at, later.now)
        assert meta.created_by == "alice@test"
        assert meta.current_version == 1
        assert self.backend.describe(p) == meta
        assert self.backend.get(p) == ("v", 1)

    def test_update_metadata_on_soft_deleted_secret(self) -> None:
        # The reference backend keeps metadata writable while a secret is soft-deleted
        # (as Vault KV v2 does), and leaves it deleted.
        b = self.metadata_writable()
        self.soft_deleting()
        p = self.path()
        self.put(p, "v")
        self.backend.delete(p, ctx=self.ctx())
        if not self.metadata_writable_while_deleted:
            with pytest.raises(Conflict):
                b.update_metadata(p, MetadataUpdate(description="while deleted"),
                                  ctx=self.ctx())
            assert self.backend.describe(p, include_deleted=True).description is None
            return
        meta = b.update_metadata(p, MetadataUpdate(description="while deleted"),
                                 ctx=self.ctx())
        assert meta.description == "while deleted"
        assert meta.deleted_at is not None
        with pytest.raises(NotFound):
            self.backend.describe(p)

    # -- list ---------------------------------------------------------------------
    def test_list_by_prefix_sorted(self) -> None:
        names = ["b/two", "a/one", "a/three", "C/upper", "a-dash", "a/one/deeper"]
        for n in names:
            self.put(self.path(n), "v")
        listed = self.backend.list(self.prefix)
        assert [m.path for m in listed] == sorted(self.path(n) for n in names)
        assert all(isinstance(m, SecretMetadata) for m in listed)
        assert [m.path for m in self.backend.list(self.path("a/"))] == [
            self.path("a/one"), self.path("a/one/deeper"), self.path("a/three")]

    def test_list_prefix_is_a_raw_string_prefix(self) -> None:
        for n in ("org1/x", "org10/x", "org1/y", "org2/x", "org"):
            self.put(self.path(n), "v")
        assert [m.path for m in self.backend.list(self.path("org1/"))] == [
            self.path("org1/x"), self.path("org1/y")]
        assert [m.path for m in self.backend.list(self.path("org1"))] == [
            self.path("org1/x"), self.path("org1/y"), self.path("org10/x")]
        assert [m.path for m in self.backend.list(self.path("org1/x"))] == [
            self.path("org1/x")]

    def test_list_unknown_prefix_is_empty(self) -> None:
        self.put(self.path("x"), "v")
        assert self.backend.list(self.path("nothing-here/")) == []

    def test_list_carries_metadata(self) -> None:
        p = self.path()
        self.put(p, "one", meta=MetadataUpdate(description="d", tags={"t": "1"}))
        self.put(p, "two")
        [meta] = self.backend.list(self.prefix)
        assert meta == self.backend.describe(p)
        assert meta.current_version == 2
        assert meta.versions == 2

    def test_list_excludes_deleted_unless_asked(self) -> None:
        self.soft_deleting()
        live, gone = self.path("live"), self.path("gone")
        self.put(live, "v")
        self.put(gone, "v")
        self.backend.delete(gone, ctx=self.ctx())
        assert [m.path for m in self.backend.list(self.prefix)] == [live]
        listed = self.backend.list(self.prefix, include_deleted=True)
        assert [m.path for m in listed] == [gone, live]
        assert listed[0].deleted_at is not None
        assert listed[1].deleted_at is None

    def test_list_due_returns_what_the_window_matches(self) -> None:
        """A store that finds due secrets itself (DueListing) returns exactly the live
        secrets under the prefix that ``DueWindow.matches`` accepts, in path order."""
        b = self.backend
        if not isinstance(b, DueListing):
            pytest.skip(f"{b.name} has no list_due (the manager filters its list instead)")
        now = datetime.now(UTC)
        day = timedelta(days=1)
        cases = {  # name: (last rotated days ago, own rotation_days, expires in days)
            "fresh": (0, None, None), "old": (40, None, None), "ancient": (400, None, None),
            "own-due": (6, 5, None), "own-not-due": (4, 5, None), "own-never": (400, 0, None),
            "own-long": (40, 365, None), "expiring": (0, None, 3), "expired": (0, 0, -1),
            "expiring-late": (0, None, 30),
        }
        for name, (ago, days, expires) in cases.items():
            self.put(self.path(name), "v", meta=MetadataUpdate(
                last_rotated=now - ago * day, rotation_days=days,
                expires_at=None if expires is None else now + expires * day))
        self.put(self.path("deleted"), "v", meta=MetadataUpdate(last_rotated=now - 400 * day))
        self.backend.delete(self.path("deleted"), ctx=self.ctx())
        windows = [DueWindow(by=now.timestamp(), unowned_before=(now - 30 * day).timestamp()),
                   DueWindow(by=now.timestamp(), unowned_before=None),
                   DueWindow(by=(now + 7 * day).timestamp(),
                             unowned_before=(now - 23 * day).timestamp(),
                             expiring_by=(now + 7 * day).timestamp())]
        for w in windows:
            every = b.list(self.prefix)
            assert [m.path for m in b.list_due(self.prefix, w)] == [
                m.path for m in every if w.matches(m)], w
        first = [m.path.removeprefix(self.prefix) for m in b.list_due(self.prefix, windows[0])]
        assert first == ["ancient", "old", "own-due"]
        third = [m.path.removeprefix(self.prefix) for m in b.list_due(self.prefix, windows[2])]
        assert third == ["ancient", "expired", "expiring", "old", "own-due", "own-not-due"]
        assert b.list_due(self.path("nothing-here/"), windows[0]) == []

    # -- delete, restore, purge ---------------------------------------------------
    def test_delete_is_soft(self) -> None:
        self.soft_deleting()
        p = self.path()
        self.put(p, "one")
        self.put(p, "two")
        ctx = self.ctx("deleter@test", offset_ms=5)
        meta = self.backend.delete(p, ctx=ctx)
        assert isinstance(meta, SecretMetadata)
        self.assert_time(meta.deleted_at, ctx.now)
        assert meta.deleted is True
        with pytest.raises(NotFound):
            self.backend.get(p)
        with pytest.raises(NotFound):
            self.backend.get(p, version=1)
        with pytest.raises(NotFound):
            self.backend.describe(p)
        shown = self.backend.describe(p, include_deleted=True)
        assert shown.deleted is True
        self.assert_time(shown.deleted_at, ctx.now)
        assert shown.current_version == 2
        assert shown.versions == 2

    def test_permanent_delete_removes_the_secret(self) -> None:
        if isinstance(self.backend, Recoverable):
            pytest.skip(f"{self.backend.name} deletes softly (see test_delete_is_soft)")
        p = self.path()
        self.put(p, "one")
        self.backend.delete(p, ctx=self.ctx())
        for call in (lambda: self.backend.get(p),
                     lambda: self.backend.describe(p, include_deleted=True)):
            with pytest.raises(NotFound):
                call()
        assert self.backend.list(self.prefix, include_deleted=True) == []

    def test_delete_twice_is_not_found(self) -> None:
        p = self.path()
        self.put(p, "v")
        self.backend.delete(p, ctx=self.ctx())
        with pytest.raises(NotFound):
            self.backend.delete(p, ctx=self.ctx())

    def test_put_revives_a_deleted_secret_with_a_new_version(self) -> None:
        self.soft_deleting()
        p = self.path()
        self.put(p, "one")
        self.put(p, "two")
        self.backend.delete(p, ctx=self.ctx())
        assert self.put(p, "three").version == 3
        assert self.backend.get(p) == ("three", 3)
        assert self.backend.get(p, version=1) == ("one", 1)
        meta = self.backend.describe(p)
        assert meta.deleted_at is None
        assert meta.current_version == 3
        assert meta.versions == 3

    def test_cas_sees_a_deleted_secrets_version(self) -> None:
        self.soft_deleting()
        p = self.path()
        self.put(p, "one")
        self.backend.delete(p, ctx=self.ctx())
        with pytest.raises(Conflict) as exc_info:
            self.put(p, "again", expected_version=0)
        assert exc_info.value.current_version == 1
        assert self.put(p, "again", expected_version=1).version == 2

    def test_restore_brings_back_the_same_version(self) -> None:
        b = self.recoverable()
        p = self.path()
        self.put(p, "one")
        self.put(p, "two")
        self.backend.delete(p, ctx=self.ctx())
        meta = b.restore(p, ctx=self.ctx())
        assert isinstance(meta, SecretMetadata)
        assert meta.deleted_at is None
        assert meta.current_version == 2
        assert self.backend.get(p) == ("two", 2)
        assert self.backend.get(p, version=1) == ("one", 1)
        assert self.backend.describe(p) == meta
        assert [m.path for m in self.backend.list(self.prefix)] == [p]

    def test_restore_of_a_live_secret_changes_nothing(self) -> None:
        b = self.recoverable()
        p = self.path()
        self.put(p, "one")
        before = self.backend.describe(p)
        assert b.restore(p, ctx=self.ctx()) == before
        assert self.backend.get(p) == ("one", 1)

    def test_purge_removes_everything(self) -> None:
        b = self.recoverable()
        p = self.path()
        self.put(p, "one")
        self.put(p, "two")
        self.backend.delete(p, ctx=self.ctx())
        b.purge(p, ctx=self.ctx())
        with pytest.raises(NotFound):
            self.backend.describe(p, include_deleted=True)
        with pytest.raises(NotFound):
            self.backend.get(p, version=1)
        with pytest.raises(NotFound):
            b.restore(p, ctx=self.ctx())
        assert self.backend.list(self.prefix, include_deleted=True) == []
        if isinstance(b, Versioned):
            with pytest.raises(NotFound):
                b.versions(p)

    def test_purge_of_a_live_secret(self) -> None:
        b = self.recoverable()
        p = self.path()
        self.put(p, "one")
        b.purge(p, ctx=self.ctx())
        with pytest.raises(NotFound):
            self.backend.get(p)
        with pytest.raises(NotFound):
            self.backend.describe(p, include_deleted=True)

    def test_versions_restart_at_one_after_purge(self) -> None:
        b = self.recoverable()
        p = self.path()
        for i in range(3):
            self.put(p, f"old {i}", meta=MetadataUpdate(description="old"))
        b.purge(p, ctx=self.ctx())
        assert self.put(p, "new", expected_version=0).version == 1
        assert self.backend.get(p) == ("new", 1)
        meta = self.backend.describe(p)
        assert meta.current_version == 1
        assert meta.versions == 1
        assert meta.description is None
        with pytest.raises(NotFound):
            self.backend.get(p, version=2)

    def test_deleted_before(self) -> None:
        b = self.recoverable()
        gone, live, back = self.path("gone"), self.path("live"), self.path("back")
        for p in (gone, live, back):
            self.put(p, "v")
        deleted_at = self.backend.delete(gone, ctx=self.ctx()).deleted_at
        assert deleted_at is not None
        self.backend.delete(back, ctx=self.ctx())
        b.restore(back, ctx=self.ctx())
        after = deleted_at + timedelta(seconds=1) + self.clock_tolerance
        before = deleted_at - timedelta(seconds=1) - self.clock_tolerance
        found = [x for x in b.deleted_before(after) if x.startswith(self.prefix)]
        assert found == [gone]
        assert [x for x in b.deleted_before(before) if x.startswith(self.prefix)] == []

    # -- versions and destroy -----------------------------------------------------
    def test_versions_lists_every_version(self) -> None:
        b = self.versioned()
        p = self.path()
        ctxs = [self.ctx(f"user{i}@test", offset_ms=i) for i in range(3)]
        for i, c in enumerate(ctxs):
            self.backend.put(p, f"value {i}", ctx=c)
        infos = b.versions(p)
        assert [i.version for i in infos] == [1, 2, 3]
        assert all(isinstance(i, VersionInfo) for i in infos)
        if self.records_version_authors:
            assert [i.created_by for i in infos] == ["user0@test", "user1@test", "user2@test"]
        assert [i.destroyed for i in infos] == [False, False, False]
        for info, c in zip(infos, ctxs, strict=True):
            self.assert_time(info.created_at, c.now)

    def test_versions_of_a_soft_deleted_secret(self) -> None:
        b = self.versioned()
        self.soft_deleting()
        if not self.versions_while_deleted:
            pytest.skip("this store cannot list a soft-deleted secret's versions")
        p = self.path()
        self.put(p, "one")
        self.put(p, "two")
        self.backend.delete(p, ctx=self.ctx())
        assert [i.version for i in b.versions(p)] == [1, 2]

    def test_destroy_shreds_chosen_versions(self) -> None:
        b = self.versioned()
        d = self.destroyable()
        p = self.path()
        for i in range(1, 4):
            self.put(p, f"value {i}")
        assert d.destroy(p, [1], ctx=self.ctx()) == [1]
        with pytest.raises(NotFound):
            self.backend.get(p, version=1)
        assert self.backend.get(p) == ("value 3", 3)
        assert self.backend.get(p, version=2) == ("value 2", 2)
        assert [(i.version, i.destroyed) for i in b.versions(p)] == [
            (1, True), (2, False), (3, False)]
        meta = self.backend.describe(p)
        assert meta.current_version == 3
        assert meta.versions == 3

    def test_destroy_the_current_version(self) -> None:
        self.versioned()
        d = self.destroyable()
        p = self.path()
        self.put(p, "one")
        self.put(p, "two")
        assert d.destroy(p, [2], ctx=self.ctx()) == [2]
        with pytest.raises(NotFound):
            self.backend.get(p)
        with pytest.raises(NotFound):
            self.backend.get(p, version=2)
        assert self.backend.get(p, version=1) == ("one", 1)
        assert self.backend.describe(p).current_version == 2
        assert self.put(p, "three").version == 3
        assert self.backend.get(p) == ("three", 3)

    def test_destroy_reports_only_what_it_destroyed_now(self) -> None:
        b = self.versioned()
        d = self.destroyable()
        p = self.path()
        for i in range(3):
            self.put(p, f"value {i}")
        assert d.destroy(p, [1, 3], ctx=self.ctx()) == [1, 3]
        assert d.destroy(p, [1, 2, 99], ctx=self.ctx()) == [2]
        assert d.destroy(p, [1, 2, 3], ctx=self.ctx()) == []
        assert [i.destroyed for i in b.versions(p)] == [True, True, True]

    def test_destroy_a_soft_deleted_secrets_versions(self) -> None:
        b = self.versioned()
        d = self.destroyable()
        self.soft_deleting()
        p = self.path()
        self.put(p, "one")
        self.put(p, "two")
        self.backend.delete(p, ctx=self.ctx())
        assert d.destroy(p, [1], ctx=self.ctx()) == [1]
        assert [(i.version, i.destroyed) for i in b.versions(p)] == [(1, True), (2, False)]

    # -- max_versions -------------------------------------------------------------
    def test_max_versions_prunes_the_oldest(self) -> None:
        if not self.honours_max_versions:
            pytest.skip("this store keeps its own number of versions")
        backend = self.new_backend(max_versions=3)
        p = self.path()
        for i in range(1, 6):
            assert self.put(p, f"value {i}", backend=backend).version == i
        assert backend.get(p) == ("value 5", 5)
        for gone in (1, 2):
            with pytest.raises(NotFound):
                backend.get(p, version=gone)
        for kept in (3, 4, 5):
            assert backend.get(p, version=kept) == (f"value {kept}", kept)
        meta = backend.describe(p)
        assert (meta.current_version, meta.versions) == (5, 3)
        if isinstance(backend, Versioned):
            assert [i.version for i in backend.versions(p)] == [3, 4, 5]

    def test_max_versions_one_overwrite_drops_the_old_value(self) -> None:
        if not self.honours_max_versions:
            pytest.skip("this store keeps its own number of versions")
        backend = self.new_backend(max_versions=1)
        p = self.path()
        self.put(p, "old", backend=backend)
        assert self.put(p, "new", backend=backend).version == 2
        assert backend.get(p) == ("new", 2)
        with pytest.raises(NotFound):
            backend.get(p, version=1)
        meta = backend.describe(p)
        assert (meta.current_version, meta.versions) == (2, 1)
        if isinstance(backend, Versioned):
            assert [i.version for i in backend.versions(p)] == [2]

    def test_max_versions_counts_destroyed_versions(self) -> None:
        if not self.honours_max_versions:
            pytest.skip("this store keeps its own number of versions")
        backend = self.new_backend(max_versions=2)
        if not isinstance(backend, Versioned) or not isinstance(backend, Destroyable):
            pytest.skip(f"{backend.name} does not keep and destroy versions")
        p = self.path()
        self.put(p, "one", backend=backend)
        self.put(p, "two", backend=backend)
        backend.destroy(p, [2], ctx=self.ctx())
        self.put(p, "three", backend=backend)
        assert [(i.version, i.destroyed) for i in backend.versions(p)] == [
            (2, True), (3, False)]

    # -- transactions -------------------------------------------------------------
    def test_transaction_commits_its_writes(self) -> None:
        t = self.transactional()
        a, b = self.path("a"), self.path("b")
        with t.transaction():
            self.put(a, "A")
            with t.transaction():  # nested calls join the outer transaction
                self.put(b, "B")
        assert self.backend.get(a) == ("A", 1)
        assert self.backend.get(b) == ("B", 1)

    def test_transaction_rolls_back_on_error(self) -> None:
        t = self.transactional()
        a, b = self.path("a"), self.path("b")
        self.put(a, "kept")

        class Boom(Exception):
            pass

        def write_then_fail() -> None:
            with t.transaction():
                self.put(a, "lost")
                self.put(b, "lost")
                raise Boom

        with pytest.raises(Boom):
            write_then_fail()
        assert self.backend.get(a) == ("kept", 1)
        with pytest.raises(NotFound):
            self.backend.describe(b, include_deleted=True)

    # -- errors -------------------------------------------------------------------
    def test_missing_path_is_not_found_in_every_verb(self) -> None:
        p = self.path("never-written")
        b = self.backend
        calls: dict[str, Callable[[], object]] = {
            "get": lambda: b.get(p),
            "get(version)": lambda: b.get(p, version=1),
            "describe": lambda: b.describe(p),
            "describe(include_deleted)": lambda: b.describe(p, include_deleted=True),
            "delete": lambda: b.delete(p, ctx=self.ctx()),
        }
        if isinstance(b, Versioned):
            calls["versions"] = lambda: b.versions(p)
        if isinstance(b, Destroyable):
            calls["destroy"] = lambda: b.destroy(p, [1], ctx=self.ctx())
        if isinstance(b, Recoverable):
            calls["restore"] = lambda: b.restore(p, ctx=self.ctx())
            calls["purge"] = lambda: b.purge(p, ctx=self.ctx())
        if isinstance(b, MetadataWritable):
            calls["update_metadata"] = lambda: b.update_metadata(
                p, MetadataUpdate(description="x"), ctx=self.ctx())
        for verb, call in calls.items():
            with pytest.raises(NotFound) as exc_info:
                call()
            assert exc_info.value.path == p, verb
            assert p in str(exc_info.value), verb
        assert b.list(self.prefix, include_deleted=True) == []

    def test_value_never_shows_in_metadata_reprs_or_errors(self) -> None:
        canary = f"canary-{uuid.uuid4().hex}"
        p = self.path()
        self.put(p, canary)
        self.put(p, canary + "-2")
        shown = [repr(self.backend), str(self.backend), repr(self.backend.describe(p)),
                 repr(self.backend.list(self.prefix)),
                 json.dumps(self.backend.describe(p).to_dict())]
        if isinstance(self.backend, Versioned):
            shown.append(repr(self.backend.versions(p)))
        try:
            self.put(p, canary, expected_version=0)
        except Conflict as exc:
            shown += [str(exc), repr(exc)]
        try:
            self.backend.get(p, version=99)
        except NotFound as exc:
            shown += [str(exc), repr(exc)]
        assert not [s for s in shown if "canary-" in s]
