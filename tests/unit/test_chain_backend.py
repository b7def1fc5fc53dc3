"""ChainBackend (keysafe.backends.chain): reads in order with fall-through, writes to the
primary, capabilities exactly those of the primary, and configuration from keysafe.toml
(the store, then .env as a fallback for local work)."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from keysafe import (
    BackendUnavailable,
    ConfigError,
    Conflict,
    NotFound,
    PermissionDenied,
    SecretManager,
    Unsupported,
)
from keysafe.backends.base import (
    BulkWritable,
    Destroyable,
    MetadataWritable,
    Recoverable,
    Rekeyable,
    Transactional,
    Versioned,
    WriteContext,
)
from keysafe.backends.chain import ChainBackend
from keysafe.backends.env import EnvBackend
from keysafe.backends.memory import MemoryBackend
from keysafe.backends.sqlite import SQLiteBackend
from keysafe.models import SecretMetadata

P = "keysafe/local/acme/shared/"
OPENAI_STORE = "sk-" + "S1t2O3r4E5" * 3
OPENAI_FILE = "sk-" + "F1i2L3e4E5" * 3
CTX = WriteContext.make("tester")


class Flaky(MemoryBackend):
    """A memory backend that can be switched off (an outage) or refuse everything."""

    def __init__(self, name: str = "flaky") -> None:
        super().__init__()
        self.name = name
        self.down = False
        self.denied = False
        self.closed = False

    def _check(self) -> None:
        if self.down:
            raise BackendUnavailable(f"{self.name} is down")
        if self.denied:
            raise PermissionDenied(f"{self.name} says no")

    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        self._check()
        return super().get(path, version)

    def describe(self, path: str, *, include_deleted: bool = False) -> SecretMetadata:
        self._check()
        return super().describe(path, include_deleted=include_deleted)

    def list(self, prefix: str, *,
             include_deleted: bool = False) -> builtins.list[SecretMetadata]:
        self._check()
        return super().list(prefix, include_deleted=include_deleted)

    def ping(self) -> None:
        self._check()

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def pair() -> tuple[Flaky, Flaky]:
    return Flaky("store"), Flaky("fallback")


def chain_of(*backends: object) -> ChainBackend:
    return ChainBackend(list(backends))  # type: ignore[arg-type]


# -- reads ----------------------------------------------------------------------------------
def test_first_backend_with_the_secret_wins(pair: tuple[Flaky, Flaky]):
    store, fallback = pair
    fallback.put(P + "a", "from-fallback", ctx=CTX)
    fallback.put(P + "b", "fallback-b", ctx=CTX)
    store.put(P + "b", "store-b", ctx=CTX)
    c = chain_of(store, fallback)
    assert c.get(P + "a") == ("from-fallback", 1)
    assert c.get(P + "b") == ("store-b", 1)
    assert c.describe(P + "a").path == P + "a"
    with pytest.raises(NotFound):
        c.get(P + "nowhere")
    with pytest.raises(NotFound):
        c.describe(P + "nowhere")


def test_an_outage_falls_through_but_is_not_reported_as_not_found(pair: tuple[Flaky, Flaky]):
    store, fallback = pair
    fallback.put(P + "a", "from-fallback", ctx=CTX)
    store.down = True
    c = chain_of(store, fallback)
    assert c.get(P + "a") == ("from-fallback", 1)
    # Absent from the fallback, and the store cannot say: that is an outage.
    with pytest.raises(BackendUnavailable, match="store is down"):
        c.get(P + "b")
    fallback.down = True
    with pytest.raises(BackendUnavailable, match="store is down"):  # the first one
        c.get(P + "a")


def test_other_errors_stop_the_chain(pair: tuple[Flaky, Flaky]):
    store, fallback = pair
    fallback.put(P + "a", "from-fallback", ctx=CTX)
    store.denied = True
    with pytest.raises(PermissionDenied):
        chain_of(store, fallback).get(P + "a")


def test_a_missing_version_of_a_held_secret_is_not_taken_from_the_fallback(
        pair: tuple[Flaky, Flaky]):
    store, fallback = pair
    store.put(P + "a", "v1", ctx=CTX)
    fallback.put(P + "a", "f1", ctx=CTX)
    fallback.put(P + "a", "f2", ctx=CTX)
    c = chain_of(store, fallback)
    assert c.get(P + "a", version=1) == ("v1", 1)
    with pytest.raises(NotFound, match="no version 2"):
        c.get(P + "a", version=2)
    # The fallback's versions are reachable for names only it holds.
    fallback.put(P + "only", "o1", ctx=CTX)
    fallback.put(P + "only", "o2", ctx=CTX)
    assert c.get(P + "only", version=1) == ("o1", 1)


def test_list_merges_with_the_first_backend_winning(pair: tuple[Flaky, Flaky]):
    store, fallback = pair
    store.put(P + "b", "sb", ctx=CTX)
    store.put(P + "b", "sb2", ctx=CTX)
    fallback.put(P + "a", "fa", ctx=CTX)
    fallback.put(P + "b", "fb", ctx=CTX)
    c = chain_of(store, fallback)
    metas = c.list(P)
    assert [(m.path, m.current_version) for m in metas] == [(P + "a", 1), (P + "b", 2)]
    store.down = True
    with pytest.raises(BackendUnavailable):  # a partial listing would hide secrets
        c.list(P)


def test_soft_deleted_in_the_store_shows_the_fallback(pair: tuple[Flaky, Flaky]):
    store, fallback = pair
    store.put(P + "a", "store", ctx=CTX)
    fallback.put(P + "a", "fallback", ctx=CTX)
    c = chain_of(store, fallback)
    c.delete(P + "a", ctx=CTX)
    assert c.get(P + "a") == ("fallback", 1)
    assert c.describe(P + "a", include_deleted=True).deleted  # the store's record
    assert isinstance(c, Recoverable)
    c.restore(P + "a", ctx=CTX)
    assert c.get(P + "a") == ("store", 1)


# -- writes ---------------------------------------------------------------------------------
def test_writes_go_to_the_primary_only(pair: tuple[Flaky, Flaky]):
    store, fallback = pair
    c = chain_of(store, fallback)
    info = c.put(P + "a", "new", ctx=CTX)
    assert info.version == 1
    assert store.get(P + "a") == ("new", 1)
    with pytest.raises(NotFound):
        fallback.get(P + "a")
    fallback.put(P + "f", "only-in-fallback", ctx=CTX)
    with pytest.raises(NotFound):
        c.delete(P + "f", ctx=CTX)  # the primary does not hold it
    assert c.get(P + "f")[0] == "only-in-fallback"


def test_check_and_set_against_what_the_chain_shows(pair: tuple[Flaky, Flaky]):
    store, fallback = pair
    fallback.put(P + "f", "file", ctx=CTX)
    c = chain_of(store, fallback)
    # The chain shows version 1 (the fallback's): expecting it copies into the store.
    with pytest.raises(Conflict):
        c.put(P + "f", "x", ctx=CTX, expected_version=2)
    assert c.put(P + "f", "updated", ctx=CTX, expected_version=1).version == 1
    assert store.get(P + "f") == ("updated", 1)
    with pytest.raises(Conflict):
        c.put(P + "f", "y", ctx=CTX, expected_version=0)  # now the store holds it
    # 0: the store does not hold it yet, whatever a fallback serves.
    fallback.put(P + "g", "file", ctx=CTX)
    assert c.put(P + "g", "into-store", ctx=CTX, expected_version=0).version == 1


# -- capabilities ---------------------------------------------------------------------------
def test_capabilities_are_those_of_the_primary(tmp_home: Path):
    mem = MemoryBackend()
    env = EnvBackend(environ={})
    over_memory = ChainBackend([mem, env])
    for cap in (Versioned, Destroyable, Recoverable, MetadataWritable):
        assert isinstance(over_memory, cap), cap
    # The chain's audit log is not in the primary's database: never Transactional.
    assert not isinstance(over_memory, Transactional)
    assert not isinstance(over_memory, (Rekeyable, BulkWritable))
    assert isinstance(over_memory, ChainBackend)

    over_env = ChainBackend([env, mem])
    assert type(over_env) is ChainBackend
    for cap in (Versioned, Destroyable, Recoverable, MetadataWritable, Rekeyable):
        assert not isinstance(over_env, cap), cap
        assert not hasattr(over_env, "versions")

    from keysafe.crypto.keys import load_keyring

    ring = load_keyring(None, tmp_home / "master.key", create=True)
    sqlite = SQLiteBackend(tmp_home / "k.db", ring)
    try:
        over_sqlite = ChainBackend([sqlite, env])
        assert isinstance(over_sqlite, Rekeyable)
        assert isinstance(over_sqlite, BulkWritable)
        assert type(over_sqlite) is type(ChainBackend([sqlite]))  # one class per set
    finally:
        sqlite.close()


def test_manager_over_an_env_primary_says_unsupported(tmp_home: Path):
    (Path.cwd() / ".env").write_text(f"OPENAI_API_KEY={OPENAI_FILE}\n")
    m = SecretManager(ChainBackend([EnvBackend(environ={}), MemoryBackend()]))
    assert m.get("openai_api_key", "acme") == OPENAI_FILE
    with pytest.raises(Unsupported, match="read-only"):
        m.put("openai_api_key", OPENAI_STORE, "acme")
    with pytest.raises(Unsupported, match="cannot versions"):
        m.versions("openai_api_key", "acme")
    with pytest.raises(Unsupported):
        m.restore("openai_api_key", "acme")


def test_capability_calls_reach_the_primary(pair: tuple[Flaky, Flaky]):
    store, fallback = pair
    c = chain_of(store, fallback)
    c.put(P + "a", "1", ctx=CTX)
    c.put(P + "a", "2", ctx=CTX)
    assert isinstance(c, Versioned)
    assert [v.version for v in c.versions(P + "a")] == [1, 2]
    assert isinstance(c, Destroyable)
    assert c.destroy(P + "a", [1], ctx=CTX) == [1]
    assert isinstance(c, MetadataWritable)
    from keysafe.models import MetadataUpdate

    assert c.update_metadata(P + "a", MetadataUpdate(description="d"),
                             ctx=CTX).description == "d"


# -- upkeep ---------------------------------------------------------------------------------
def test_ping_names_the_failing_member_and_close_closes_all(pair: tuple[Flaky, Flaky]):
    store, fallback = pair
    c = ChainBackend([store, fallback], labels=["sqlite", "env"])
    c.ping()
    fallback.down = True
    with pytest.raises(BackendUnavailable, match="chain member env"):
        c.ping()
    c.close()
    assert store.closed
    assert fallback.closed
    assert repr(c) == "ChainBackend(sqlite, env)"


def test_empty_chain_is_a_config_error():
    with pytest.raises(ConfigError):
        ChainBackend([])


# -- configuration: the store, then .env for local work --------------------------------------
def _config(body: str) -> None:
    (Path.cwd() / "keysafe.toml").write_text(
        '[keysafe]\napp = "agentfoundry"\n\n[keysafe.profiles.local]\nbackend = "chain"\n'
        + body)


def test_store_then_dotenv_fallback_for_local_work(tmp_home: Path):
    (Path.cwd() / ".env").write_text(
        f"OPENAI_API_KEY={OPENAI_FILE}\nGITHUB_TOKEN=ghp_{'a' * 36}\n")
    _config('backends = ["sqlite", "env"]\n\n[keysafe.profiles.local.env]\n'
            'files = [".env"]\nenviron = false\n')
    with SecretManager.from_env() as m:
        assert isinstance(m.backend, ChainBackend)
        assert m.backend.labels == ("sqlite", "env")
        assert isinstance(m.backend.primary, SQLiteBackend)
        assert isinstance(m.backend, Versioned)
        # Nothing in the store yet: .env answers.
        assert m.get("openai_api_key", "acme") == OPENAI_FILE
        # A write lands in the store and wins from then on.
        m.put("openai_api_key", OPENAI_STORE, "acme")
        assert m.get("openai_api_key", "acme", fresh=True) == OPENAI_STORE
        assert [v.version for v in m.versions("openai_api_key", "acme")] == [1]
        assert {x.path for x in m.list("acme")} == {
            "agentfoundry/local/acme/shared/openai_api_key",
            "agentfoundry/local/acme/shared/github_token"}
        # The .env file is untouched.
        assert OPENAI_FILE in (Path.cwd() / ".env").read_text()
        m.delete("openai_api_key", "acme")
        assert m.get("openai_api_key", "acme", fresh=True) == OPENAI_FILE
    # The values persisted in the store (KEYSAFE_HOME, a temp directory).
    assert (tmp_home / "keysafe.db").exists()


def test_member_tables_may_name_their_backend(tmp_home: Path):
    (Path.cwd() / "team.env").write_text(f"OPENAI_API_KEY={OPENAI_FILE}\n")
    _config('backends = ["store", "dotenv"]\n\n[keysafe.profiles.local.store]\n'
            'backend = "memory"\n\n[keysafe.profiles.local.dotenv]\nbackend = "env"\n'
            'files = ["team.env"]\n')
    with SecretManager.from_env() as m:
        assert isinstance(m.backend, ChainBackend)
        assert isinstance(m.backend.backends[0], MemoryBackend)
        assert isinstance(m.backend.backends[1], EnvBackend)
        assert m.get("openai_api_key", "acme") == OPENAI_FILE


@pytest.mark.parametrize(("body", "message"), [
    ("", "set backends"),
    ("backends = []\n", "set backends"),
    ('backends = "sqlite"\n', "set backends"),
    ('backends = ["memory", "memory"]\n', "named twice"),
    ('backends = ["memory", "chain"]\n', "other than chain"),
    ('backends = ["memory"]\ncolour = "red"\n', "unknown option 'colour'"),
    ('backends = ["memory"]\n\n[keysafe.profiles.local.env]\nfiles = []\n',
     "unknown option 'env'"),
    ('backends = ["memory", "nosuch"]\n', "unknown backend 'nosuch'"),
    ('backends = ["env"]\n\n[keysafe.profiles.local.env]\ncolour = 1\n',
     "unknown option 'colour'"),
])
def test_bad_chain_configuration(tmp_home: Path, body: str, message: str):
    _config(body)
    with pytest.raises(ConfigError, match=message):
        SecretManager.from_env()
