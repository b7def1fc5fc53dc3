"""SecretManager verbs on the memory and SQLite backends (keysafe.manager.manager)."""

from __future__ import annotations

import base64
import os
import sqlite3
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from keysafe import (
    Conflict,
    InvalidName,
    InvalidValue,
    NotFound,
    SecretManager,
    ValueTooLarge,
    load_settings,
)
from keysafe.backends.memory import MemoryBackend

BACKENDS = ["memory", "sqlite"]
OPENAI_KEY = "sk-" + "A1b2C3d4E5" * 3  # shaped like an OpenAI key, not a real one
OPENAI_KEY_2 = "sk-proj-" + "Z9y8X7w6V5" * 3
ANTHROPIC_KEY = "sk-ant-" + "Q1w2E3r4T5" * 3


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> Path:
    """A clean KEYSAFE_* environment rooted in tmp_path; never the real ~/.keysafe."""
    for var in list(os.environ):
        if var.startswith("KEYSAFE_") or var == "ENVIRONMENT":
            monkeypatch.delenv(var)
    home = tmp_path / "home"
    monkeypatch.setenv("KEYSAFE_HOME", str(home))
    monkeypatch.setenv("KEYSAFE_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("KEYSAFE_ACTOR", "tester")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)  # no stray keysafe.toml from the working directory
    return home


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return isolate(monkeypatch, tmp_path)


@pytest.fixture
def m(home: Path, backend: str) -> Iterator[SecretManager]:
    mgr = SecretManager.from_env(backend=backend)
    yield mgr
    mgr.close()


def version_rows(home: Path, path: str) -> int | None:
    """Rows in the SQLite versions table for a path (None when there is no store file)."""
    db = home / "keysafe.db"
    if not db.exists():
        return None
    with sqlite3.connect(db) as c:
        return int(c.execute("SELECT count(*) FROM versions WHERE path = ?",
                             (path,)).fetchone()[0])


# -- put / get / has / describe ------------------------------------------------------


def test_put_then_get_returns_the_value(m: SecretManager) -> None:
    info = m.put("db_password", "hunter2-long", "acme")
    assert info.version == 1
    assert info.created_by == "tester"
    assert m.get("db_password", "acme") == "hunter2-long"
    assert m.get("db_password", "acme", fresh=True) == "hunter2-long"


def test_put_again_makes_a_new_version_and_version_reads_old_ones(m: SecretManager) -> None:
    m.put("token", "one", "acme")
    assert m.put("token", "two", "acme").version == 2
    assert m.put("token", "three", "acme").version == 3
    assert m.get("token", "acme") == "three"
    assert m.get("token", "acme", version=1) == "one"
    assert m.get("token", "acme", version=2) == "two"
    assert m.get("token", "acme", version=3) == "three"
    with pytest.raises(NotFound):
        m.get("token", "acme", version=4)


def test_has(m: SecretManager) -> None:
    assert not m.has("token", "acme")
    m.put("token", "v", "acme")
    assert m.has("token", "acme")
    assert not m.has("token", "other-org")
    assert not m.has("token", "acme", domain="billing")
    m.delete("token", "acme")
    assert not m.has("token", "acme")


def test_describe(m: SecretManager) -> None:
    m.put("openai_api_key", OPENAI_KEY, "acme", description="the GPT key",
          tags={"team": "ml"}, rotation_days=30)
    meta = m.describe("openai_api_key", "acme")
    assert meta.path == "keysafe/local/acme/shared/openai_api_key"
    assert meta.current_version == 1
    assert meta.description == "the GPT key"
    assert meta.tags == {"team": "ml"}
    assert meta.rotation_days == 30
    assert meta.secret_type == "api_key"  # from the catalog
    assert meta.created_by == meta.updated_by == "tester"
    assert meta.deleted_at is None
    assert meta.last_rotated is not None
    assert meta.versions == 1
    m.put("openai_api_key", OPENAI_KEY_2, "acme")
    meta2 = m.describe("openai_api_key", "acme")
    assert meta2.current_version == 2
    assert meta2.versions == 2
    assert meta2.description == "the GPT key"  # a later put without it keeps it
    assert meta2.created_at == meta.created_at


def test_describe_missing_raises_not_found(m: SecretManager) -> None:
    with pytest.raises(NotFound) as ei:
        m.describe("nope", "acme")
    assert "keysafe/local/acme/shared/nope" in str(ei.value)
    with pytest.raises(NotFound):
        m.get("nope", "acme")


# -- list --------------------------------------------------------------------------


def test_list_by_org_and_by_domain(m: SecretManager) -> None:
    m.put("a", "1", "acme")
    m.put("b", "1", "acme", domain="billing")
    m.put("c", "1", "acme", domain="card-services")
    m.put("a", "1", "acme2")  # an org whose name extends "acme"
    m.put("b", "1", "globex", domain="billing")
    m.put("z", "1", "acme", env="production")  # another environment

    def paths(**kw: object) -> list[str]:
        return [x.path for x in m.list(**kw)]  # type: ignore[arg-type]

    assert paths(org="acme") == [
        "keysafe/local/acme/billing/b",
        "keysafe/local/acme/card-services/c",
        "keysafe/local/acme/shared/a",
    ]
    assert paths(org="acme", domain="billing") == ["keysafe/local/acme/billing/b"]
    assert paths(domain="billing") == ["keysafe/local/acme/billing/b",
                                       "keysafe/local/globex/billing/b"]
    assert len(paths()) == 5
    assert paths(org="acme", env="production") == ["keysafe/production/acme/shared/z"]
    assert paths(org="initech") == []

    m.delete("a", "acme")
    assert "keysafe/local/acme/shared/a" not in paths(org="acme")
    deleted = [x for x in m.list("acme", include_deleted=True) if x.deleted]
    assert [x.path for x in deleted] == ["keysafe/local/acme/shared/a"]


# -- delete / restore / destroy -------------------------------------------------------


def test_soft_delete_then_restore_within_window(m: SecretManager) -> None:
    m.put("token", "one", "acme")
    m.put("token", "two", "acme")
    assert m.get("token", "acme") == "two"  # cached
    m.delete("token", "acme")
    with pytest.raises(NotFound):
        m.get("token", "acme")
    with pytest.raises(NotFound):
        m.describe("token", "acme")
    meta = m.describe("token", "acme", include_deleted=True)
    assert meta.deleted
    with pytest.raises(NotFound):
        m.delete("token", "acme")  # already deleted

    restored = m.restore("token", "acme")
    assert not restored.deleted
    assert restored.current_version == 2
    assert m.get("token", "acme") == "two"
    assert m.get("token", "acme", version=1) == "one"


def test_restore_a_secret_that_is_not_deleted_is_a_conflict(m: SecretManager) -> None:
    m.put("token", "one", "acme")
    with pytest.raises(Conflict, match="not deleted"):
        m.restore("token", "acme")
    with pytest.raises(NotFound):
        m.restore("never-written", "acme")


def test_restore_after_the_window_fails_with_conflict(m: SecretManager) -> None:
    m.put("token", "one", "acme")
    m.delete("token", "acme")
    m.recovery_window = timedelta(0)
    with pytest.raises(Conflict, match="recovery window"):
        m.restore("token", "acme")
    assert m.describe("token", "acme", include_deleted=True).deleted
    with pytest.raises(NotFound):
        m.get("token", "acme")


def test_force_delete_purges_now(m: SecretManager) -> None:
    m.put("token", "one", "acme")
    m.put("token", "two", "acme")
    m.delete("token", "acme", force=True)
    with pytest.raises(NotFound):
        m.describe("token", "acme", include_deleted=True)
    with pytest.raises(NotFound):
        m.restore("token", "acme")
    with pytest.raises(NotFound):
        m.versions("token", "acme")
    assert m.list("acme", include_deleted=True) == []
    # The name is free again: a new secret starts at version 1.
    assert m.put("token", "fresh", "acme").version == 1


def test_force_delete_of_a_soft_deleted_secret_purges_it(m: SecretManager) -> None:
    m.put("token", "one", "acme")
    m.delete("token", "acme")
    m.delete("token", "acme", force=True)
    with pytest.raises(NotFound):
        m.describe("token", "acme", include_deleted=True)


def test_destroy_shreds_chosen_versions(m: SecretManager, home: Path) -> None:
    for v in ("one", "two", "three"):
        m.put("token", v, "acme")
    assert m.get("token", "acme", version=1) == "one"  # cached, must be invalidated
    assert m.destroy("token", [1, 2], "acme") == [1, 2]
    assert m.destroy("token", [1], "acme") == []  # already destroyed
    for v in (1, 2):
        with pytest.raises(NotFound):
            m.get("token", "acme", version=v)
    assert m.get("token", "acme") == "three"
    infos = {i.version: i for i in m.versions("token", "acme")}
    assert infos[1].destroyed
    assert infos[2].destroyed
    assert not infos[3].destroyed

    # Destroying the current version leaves nothing readable, but the metadata stays.
    assert m.destroy("token", [3], "acme") == [3]
    with pytest.raises(NotFound):
        m.get("token", "acme")
    assert m.describe("token", "acme").current_version == 3
    with pytest.raises(NotFound):
        m.destroy("never-written", [1], "acme")


def sealed_rows(home: Path, path: str, version: int) -> tuple[bytes, bytes]:
    c = sqlite3.connect(home / "keysafe.db")
    try:
        ct, wk = c.execute("SELECT ciphertext, wrapped_key FROM versions "
                           "WHERE path = ? AND version = ?", (path, version)).fetchone()
    finally:
        c.close()  # an open connection could hold back the checkpoint under test
    return bytes(ct), bytes(wk)


@pytest.mark.parametrize("how", ["destroy", "force_delete"])
def test_destroyed_data_leaves_the_sqlite_files_at_once(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path, how: str) -> None:
    home = isolate(monkeypatch, tmp_path)
    with SecretManager.from_env() as m:
        m.put("token", "first-value", "acme")
        m.put("token", "second-value", "acme")
        path = m.path("token", "acme")
        ct, wk = sealed_rows(home, path, 1)
        if how == "destroy":
            m.destroy("token", [1], "acme")
        else:
            m.delete("token", "acme", force=True)
        for f in sorted(home.iterdir()):
            data = f.read_bytes()
            assert ct[12:44] not in data, f"{f.name} still holds the destroyed ciphertext"
            assert wk[12:44] not in data, f"{f.name} still holds the destroyed data key"


def test_versions_lists_every_retained_version(m: SecretManager) -> None:
    for i in range(1, 4):
        m.put("token", f"v{i}", "acme")
    infos = m.versions("token", "acme")
    assert [i.version for i in infos] == [1, 2, 3]
    assert all(i.created_by == "tester" for i in infos)
    assert all(not i.destroyed for i in infos)
    assert all("v1" not in repr(i) for i in infos)
    with pytest.raises(NotFound):
        m.versions("nope", "acme")


def test_max_versions_prunes_old_versions(home: Path, backend: str) -> None:
    with SecretManager.from_env(backend=backend, max_versions=2) as m:
        for i in range(1, 5):
            m.put("token", f"v{i}", "acme")
        assert [i.version for i in m.versions("token", "acme")] == [3, 4]
        with pytest.raises(NotFound):
            m.get("token", "acme", version=2)
        assert m.get("token", "acme", version=3) == "v3"


def test_max_versions_one_overwrite_destroys_the_old_value(home: Path, backend: str) -> None:
    with SecretManager.from_env(backend=backend, max_versions=1) as m:
        m.put("token", "old", "acme")
        m.put("token", "new", "acme")
        assert [i.version for i in m.versions("token", "acme")] == [2]
        with pytest.raises(NotFound):
            m.get("token", "acme", version=1)


def test_rollback_makes_a_new_version_with_the_old_value(m: SecretManager) -> None:
    m.put("token", "one", "acme")
    m.put("token", "two", "acme")
    assert m.get("token", "acme") == "two"  # cached
    info = m.rollback("token", 1, "acme")
    assert info.version == 3
    assert m.get("token", "acme") == "one"
    assert m.get("token", "acme", version=2) == "two"
    assert m.get("token", "acme", version=3) == "one"
    assert [i.version for i in m.versions("token", "acme")] == [1, 2, 3]


def test_rollback_to_a_missing_version_changes_nothing(m: SecretManager) -> None:
    m.put("token", "one", "acme")
    with pytest.raises(NotFound):
        m.rollback("token", 7, "acme")
    with pytest.raises(NotFound):
        m.rollback("nope", 1, "acme")
    assert m.describe("token", "acme").current_version == 1


def test_update_metadata(m: SecretManager) -> None:
    m.put("token", "one", "acme")
    meta = m.update_metadata("token", "acme", description="rotated by ops",
                             tags={"owner": "ops"}, rotation_days=90)
    assert meta.description == "rotated by ops"
    assert meta.tags == {"owner": "ops"}
    assert meta.rotation_days == 90
    again = m.describe("token", "acme")
    assert again.description == "rotated by ops"
    assert again.current_version == 1  # metadata changes make no new version
    assert m.get("token", "acme") == "one"
    with pytest.raises(NotFound):
        m.update_metadata("nope", "acme", description="x")


def test_update_metadata_of_a_soft_deleted_secret_keeps_it_deleted(m: SecretManager) -> None:
    """Both backends agree (as in Vault KV v2): metadata of a soft-deleted secret can
    still be changed, and the change does not bring the secret back."""
    m.put("token", "one", "acme")
    m.delete("token", "acme")
    meta = m.update_metadata("token", "acme", description="x")
    assert meta.description == "x"
    assert meta.deleted
    with pytest.raises(NotFound):
        m.get("token", "acme")
    assert m.describe("token", "acme", include_deleted=True).description == "x"
    assert m.restore("token", "acme").description == "x"


def test_put_on_a_soft_deleted_secret_revives_it(m: SecretManager) -> None:
    m.put("token", "one", "acme")
    m.delete("token", "acme")
    assert m.put("token", "two", "acme").version == 2
    assert m.get("token", "acme") == "two"
    assert not m.describe("token", "acme").deleted


def test_purge_expired(m: SecretManager) -> None:
    m.put("old", "1", "acme")
    m.put("kept", "1", "acme")
    m.put("live", "1", "acme")
    m.delete("old", "acme")
    assert m.purge_expired() == []  # still inside the 7-day window
    m.recovery_window = timedelta(0)
    m.delete("kept", "acme")
    purged = m.purge_expired()
    assert sorted(purged) == ["keysafe/local/acme/shared/kept", "keysafe/local/acme/shared/old"]
    for name in ("old", "kept"):
        with pytest.raises(NotFound):
            m.describe(name, "acme", include_deleted=True)
    assert m.get("live", "acme") == "1"
    assert m.purge_expired() == []


# -- check-and-set -----------------------------------------------------------------------


def test_expected_version_check_and_set(m: SecretManager) -> None:
    assert m.put("token", "one", "acme", expected_version=0).version == 1
    with pytest.raises(Conflict) as ei:
        m.put("token", "clash", "acme", expected_version=0)
    assert ei.value.current_version == 1
    assert "already exists" in str(ei.value)
    with pytest.raises(Conflict) as ei:
        m.put("token", "clash", "acme", expected_version=5)
    assert ei.value.current_version == 1
    assert m.put("token", "two", "acme", expected_version=1).version == 2
    with pytest.raises(Conflict):
        m.put("missing", "x", "acme", expected_version=1)
    assert not m.has("missing", "acme")
    assert m.get("token", "acme") == "two"
    assert [i.version for i in m.versions("token", "acme")] == [1, 2]


# -- naming -------------------------------------------------------------------------------


def test_names_by_full_path_when_org_is_none(m: SecretManager) -> None:
    path = "keysafe/local/acme/billing/stripe_token"
    m.put(path, "v1", None)
    assert m.get("stripe_token", "acme", domain="billing") == "v1"
    assert m.get(path) == "v1"
    assert m.has(path)
    assert m.describe(path).path == path
    assert [i.version for i in m.versions(path)] == [1]
    m.put("stripe_token", "v2", "acme", domain="billing")
    assert m.get(path) == "v2"
    m.rollback(path, 1)
    assert m.get(path) == "v1"
    m.delete(path)
    assert not m.has("stripe_token", "acme", domain="billing")


def test_a_bare_name_without_org_is_an_invalid_name(m: SecretManager) -> None:
    with pytest.raises(InvalidName) as ei:
        m.put("token", "v", None)
    assert ei.value.segment == "org"
    with pytest.raises(InvalidName):
        m.get("not/a/valid/path")


@pytest.mark.parametrize("bad", ["..", "a/b", "", "x" * 200, "sp ace"])
def test_bad_segments_are_refused(m: SecretManager, bad: str) -> None:
    with pytest.raises(InvalidName):
        m.put(bad, "v", "acme")
    with pytest.raises(InvalidName):
        m.put("token", "v", bad)
    if bad:  # an empty domain means the default domain
        with pytest.raises(InvalidName):
            m.put("token", "v", "acme", domain=bad)
    assert m.list() == []


def test_agentfoundry_template(home: Path, backend: str) -> None:
    with SecretManager.from_env(backend=backend, app="agentfoundry", env="dev",
                                naming_template="{app}/{env}/{org}/{domain}/{name}") as m:
        m.put("openai_api_key", OPENAI_KEY, "acme-corp", domain="card-services")
        path = "agentfoundry/dev/acme-corp/card-services/openai_api_key"
        assert m.path("openai_api_key", "acme-corp", domain="card-services") == path
        assert m.describe("openai_api_key", "acme-corp", domain="card-services").path == path
        assert m.get(path) == OPENAI_KEY
        assert [x.path for x in m.list("acme-corp")] == [path]
        assert [x.path for x in m.list("acme-corp", domain="card-services")] == [path]


def test_ragstar_template(home: Path, backend: str) -> None:
    with SecretManager.from_env(backend=backend, app="ragstar", env="local",
                                naming_template="/{app}/{env}/org-{org}/{domain}/{name}") as m:
        m.put("openai-api-key", OPENAI_KEY, "123", domain="llm")
        m.put("openai-api-key", OPENAI_KEY_2, "1234", domain="llm")
        path = "/ragstar/local/org-123/llm/openai-api-key"
        assert m.path("openai-api-key", "123", domain="llm") == path
        assert m.describe("openai-api-key", "123", domain="llm").path == path
        assert m.get(path) == OPENAI_KEY
        assert m.get("openai-api-key", "1234", domain="llm") == OPENAI_KEY_2
        # org 123 must not pick up org 1234 although one name prefixes the other
        assert [x.path for x in m.list("123")] == [path]
        assert [x.path for x in m.list(domain="llm")] == [
            path, "/ragstar/local/org-1234/llm/openai-api-key"]
        # the catalog's format check applies to the hyphenated spelling too
        with pytest.raises(InvalidValue):
            m.put("openai-api-key", "hello", "123", domain="llm")
        # spec 001's lookup finds keys stored the spec 000 way: the domain's, else the
        # org's shared one, under either spelling
        assert m.get_llm_api_key("123", "openai", domain="llm") == OPENAI_KEY
        assert m.find_llm_api_key("123", "openai", domain="llm") == (path, OPENAI_KEY)
        assert m.get_llm_api_key("123", "openai") is None
        m.put("openai-api-key", OPENAI_KEY_2, "123")
        assert m.find_llm_api_key("123", "openai", domain="billing") == (
            "/ragstar/local/org-123/shared/openai-api-key", OPENAI_KEY_2)
        m.put("openai_api_key", OPENAI_KEY, "123")  # the catalog's spelling comes first
        assert m.find_llm_api_key("123", "openai") == (
            "/ragstar/local/org-123/shared/openai_api_key", OPENAI_KEY)


def test_templates_reachable_by_environment_alone(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path, KEYSAFE_APP="ragstar", ENVIRONMENT="local",
            KEYSAFE_NAMING_TEMPLATE="/{app}/{env}/org-{org}/{domain}/{name}")
    with SecretManager.from_settings(load_settings()) as m:
        assert m.path("openai-api-key", "123", domain="llm") == (
            "/ragstar/local/org-123/llm/openai-api-key")


# -- JSON credentials ---------------------------------------------------------------------


def test_put_json_and_get_json(m: SecretManager) -> None:
    m.put_json("db_creds", {"user": "app", "password": "pw", "port": 5432}, "acme")
    assert m.get_json("db_creds", "acme") == {"user": "app", "password": "pw", "port": 5432}
    assert m.get_json_field("db_creds", "user", "acme") == "app"
    assert m.get_json_field("db_creds", "port", "acme") == 5432
    with pytest.raises(NotFound, match="no credential field"):
        m.get_json_field("db_creds", "host", "acme")
    with pytest.raises(InvalidValue):
        m.put_json("db_creds", ["not", "an", "object"], "acme")  # type: ignore[arg-type]
    assert m.describe("db_creds", "acme").current_version == 1


def test_get_json_of_a_plain_value_is_invalid_value(m: SecretManager) -> None:
    m.put("plain", "not json", "acme")
    with pytest.raises(InvalidValue):
        m.get_json("plain", "acme")
    m.put("list", "[1, 2]", "acme")
    with pytest.raises(InvalidValue):
        m.get_json("list", "acme")


def test_update_json_merges_keeps_other_keys_and_none_removes(m: SecretManager) -> None:
    m.put_json("creds", {"client_id": "id", "client_secret": "s1", "scope": "read"}, "acme")
    info = m.update_json("creds", {"client_secret": "s2", "region": "eu"}, "acme")
    assert info.version == 2
    assert m.get_json("creds", "acme") == {"client_id": "id", "client_secret": "s2",
                                           "scope": "read", "region": "eu"}
    m.update_json("creds", {"scope": None, "not_there": None}, "acme")
    assert m.get_json("creds", "acme") == {"client_id": "id", "client_secret": "s2",
                                           "region": "eu"}
    assert m.get_json("creds", "acme", fresh=True) == m.get_json("creds", "acme")


def test_update_json_creates_a_missing_secret(m: SecretManager) -> None:
    assert m.update_json("creds", {"a": 1}, "acme").version == 1
    assert m.get_json("creds", "acme") == {"a": 1}


def test_update_json_on_a_soft_deleted_secret_is_not_a_conflict(m: SecretManager) -> None:
    m.put_json("creds", {"a": 1}, "acme")
    m.delete("creds", "acme")
    try:
        m.update_json("creds", {"b": 2}, "acme")
    except NotFound:
        return  # refusing to merge into a deleted secret is fine
    assert m.get_json("creds", "acme") == {"b": 2}


def test_concurrent_update_json_from_threads_loses_no_key(m: SecretManager) -> None:
    m.put_json("creds", {"base": 0}, "acme")
    errors: list[BaseException] = []
    n = 4
    barrier = threading.Barrier(n)

    def work(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            m.update_json("creds", {f"k{i}": i}, "acme")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    data = m.get_json("creds", "acme", fresh=True)
    assert data == {"base": 0, **{f"k{i}": i for i in range(n)}}
    assert m.describe("creds", "acme").current_version == n + 1


class _Lockstep:
    """A barrier whose party count shrinks as threads finish: every thread still working
    reads the secret before any of them writes, the worst case for check-and-set."""

    def __init__(self, parties: int) -> None:
        self.active = parties
        self.waiting = 0
        self.generation = 0
        self.cond = threading.Condition()

    def _release_if_all_here(self) -> None:
        if self.waiting and self.waiting >= self.active:
            self.generation += 1
            self.waiting = 0
            self.cond.notify_all()

    def arrive(self) -> None:
        with self.cond:
            gen = self.generation
            self.waiting += 1
            self._release_if_all_here()
            # The timeout keeps a fixed manager (one that serialises merges) from hanging.
            if not self.cond.wait_for(lambda: self.generation != gen, timeout=0.1):
                self.waiting -= 1

    def leave(self) -> None:
        with self.cond:
            self.active -= 1
            self._release_if_all_here()


class _LockstepBackend(MemoryBackend):
    def __init__(self, gate: _Lockstep) -> None:
        super().__init__(max_versions=100)
        self.gate = gate

    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        out = super().get(path, version)
        if threading.current_thread() is not threading.main_thread():
            self.gate.arrive()
        return out


def test_update_json_from_8_threads_in_lockstep_loses_no_key() -> None:
    n = 8
    gate = _Lockstep(n)
    m = SecretManager(_LockstepBackend(gate), actor="tester")
    m.put_json("creds", {"base": 0}, "acme")
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            m.update_json("creds", {f"k{i}": i}, "acme")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            gate.leave()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert m.get_json("creds", "acme", fresh=True) == {"base": 0,
                                                       **{f"k{i}": i for i in range(n)}}


# -- get_llm_api_key ----------------------------------------------------------------------


def test_get_llm_api_key_prefers_the_domain_then_the_org_shared_key(m: SecretManager) -> None:
    assert m.get_llm_api_key("acme", "openai") is None
    assert m.get_llm_api_key("acme", "openai", domain="card-services") is None
    m.put("openai_api_key", OPENAI_KEY, "acme")  # the org's shared key
    assert m.get_llm_api_key("acme", "openai") == OPENAI_KEY
    assert m.get_llm_api_key("acme", "openai", domain="card-services") == OPENAI_KEY
    m.put("openai_api_key", OPENAI_KEY_2, "acme", domain="card-services")
    assert m.get_llm_api_key("acme", "openai", domain="card-services") == OPENAI_KEY_2
    assert m.get_llm_api_key("acme", "openai") == OPENAI_KEY
    assert m.get_llm_api_key("acme", "openai", domain="shared") == OPENAI_KEY
    # another provider, another org: nothing
    assert m.get_llm_api_key("acme", "anthropic") is None
    assert m.get_llm_api_key("globex", "openai", domain="card-services") is None
    m.put("anthropic_api_key", ANTHROPIC_KEY, "acme", domain="card-services")
    assert m.get_llm_api_key("acme", "anthropic", domain="card-services") == ANTHROPIC_KEY
    assert m.get_llm_api_key("acme", "anthropic") is None
    # a deleted domain key falls back to the shared key
    m.delete("openai_api_key", "acme", domain="card-services")
    assert m.get_llm_api_key("acme", "openai", domain="card-services") == OPENAI_KEY


# -- values -------------------------------------------------------------------------------


def test_empty_value_is_invalid(m: SecretManager) -> None:
    with pytest.raises(InvalidValue, match="empty"):
        m.put("token", "", "acme")
    assert not m.has("token", "acme")


@pytest.mark.parametrize("value", [b"bytes", 42, None, {"a": 1}])
def test_non_text_value_is_invalid(m: SecretManager, value: object) -> None:
    with pytest.raises(InvalidValue, match="must be text"):
        m.put("token", value, "acme")  # type: ignore[arg-type]
    assert not m.has("token", "acme")


def test_value_size_limit_defaults_to_64_kib(m: SecretManager) -> None:
    assert m.max_value_bytes == 64 * 1024
    m.put("big", "x" * 65536, "acme")
    assert m.get("big", "acme") == "x" * 65536
    with pytest.raises(ValueTooLarge) as ei:
        m.put("big", "x" * 65537, "acme")
    assert "65537" in str(ei.value)
    assert "65536" in str(ei.value)
    assert isinstance(ei.value, InvalidValue)
    assert m.describe("big", "acme").current_version == 1


def test_value_size_counts_utf8_bytes(m: SecretManager) -> None:
    value = "é" * 32769  # 65538 bytes in UTF-8, fewer characters than the limit
    with pytest.raises(ValueTooLarge, match="65538"):
        m.put("big", value, "acme")


def test_value_size_limit_is_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          backend: str) -> None:
    isolate(monkeypatch, tmp_path, KEYSAFE_MAX_VALUE_BYTES="100")
    with SecretManager.from_env(backend=backend) as m:
        m.put("token", "x" * 100, "acme")
        with pytest.raises(ValueTooLarge) as ei:
            m.put("token", "x" * 101, "acme")
        assert "101 bytes" in str(ei.value)
        assert "100" in str(ei.value)


def test_catalog_format_check(m: SecretManager) -> None:
    with pytest.raises(InvalidValue) as ei:
        m.put("openai_api_key", "hello", "acme")
    assert "openai_api_key" in str(ei.value)
    assert "hello" not in str(ei.value)
    with pytest.raises(InvalidValue, match="placeholder"):
        m.put("openai_api_key", "sk-...", "acme")
    with pytest.raises(InvalidValue):
        m.put("openai_api_key", ANTHROPIC_KEY, "acme")  # the wrong provider's key
    assert not m.has("openai_api_key", "acme")
    m.put("openai_api_key", "hello", "acme", check_format=False)
    assert m.get("openai_api_key", "acme") == "hello"
    m.put("openai_api_key", OPENAI_KEY, "acme")
    assert m.get("openai_api_key", "acme") == OPENAI_KEY


def test_bad_input_changes_nothing(m: SecretManager, home: Path) -> None:
    m.put("openai_api_key", OPENAI_KEY, "acme", description="orig")
    path = m.path("openai_api_key", "acme")
    rows = version_rows(home, path)
    before = m.describe("openai_api_key", "acme")
    attempts = [
        lambda: m.put("openai_api_key", "", "acme"),
        lambda: m.put("openai_api_key", 7, "acme"),  # type: ignore[arg-type]
        lambda: m.put("openai_api_key", "sk-" + "a" * 70000, "acme", description="big"),
        lambda: m.put("openai_api_key", "hello", "acme", description="bad"),
        lambda: m.put("openai_api_key", OPENAI_KEY_2, "acme", expected_version=0,
                      description="cas"),
        lambda: m.put("openai_api_key", OPENAI_KEY_2, "acme", expected_version=9),
        lambda: m.rollback("openai_api_key", 5, "acme"),
        lambda: m.put_json("openai_api_key", "nope", "acme"),  # type: ignore[arg-type]
    ]
    for attempt in attempts:
        with pytest.raises((InvalidValue, Conflict, NotFound)):
            attempt()
    after = m.describe("openai_api_key", "acme")
    assert after == before
    assert [i.version for i in m.versions("openai_api_key", "acme")] == [1]
    assert m.get("openai_api_key", "acme", fresh=True) == OPENAI_KEY
    assert version_rows(home, path) == rows
    assert len(m.list("acme")) == 1
    with pytest.raises(InvalidValue):
        m.put("new_one", "", "acme")
    assert len(m.list("acme", include_deleted=True)) == 1


# -- construction and stats ----------------------------------------------------------------


def test_explicit_construction_with_the_memory_backend() -> None:
    m = SecretManager(MemoryBackend(), app="agentfoundry", env="dev", actor="svc")
    m.put("openai_api_key", OPENAI_KEY, "acme-corp", domain="card-services")
    assert m.describe("openai_api_key", "acme-corp", domain="card-services").path == (
        "agentfoundry/dev/acme-corp/card-services/openai_api_key")
    assert m.describe("openai_api_key", "acme-corp",
                      domain="card-services").created_by == "svc"
    m.close()


def test_as_actor_writes_as_another_principal(m: SecretManager) -> None:
    alice = m.as_actor("alice")
    alice.put("token", "v", "acme")
    assert m.describe("token", "acme").created_by == "alice"
    m.put("token", "v2", "acme")
    assert m.describe("token", "acme").updated_by == "tester"


def test_stats(m: SecretManager) -> None:
    s = m.stats()
    assert s == {"cache_hits": 0, "cache_misses": 0, "stale_served": 0,
                 "cache_entries": 0, "audit_failures": 0}
    m.put("token", "v", "acme")
    m.get("token", "acme")
    m.get("token", "acme")
    m.get("token", "acme")
    m.get("token", "acme", fresh=True)
    s = m.stats()
    assert s["cache_misses"] == 2
    assert s["cache_hits"] == 2
    assert s["cache_entries"] == 1
    assert s["audit_failures"] == 0


def test_ping(m: SecretManager) -> None:
    m.ping()


def test_update_tags_changes_only_the_tags_named(m: SecretManager) -> None:
    m.put("openai_api_key", OPENAI_KEY, "acme", tags={"team": "a", "env_var": "OAI"})
    meta = m.update_tags("openai_api_key", "acme", set_tags={"tier": "gold"},
                         unset=["env_var", "absent"], description="the key")
    assert meta.tags == {"team": "a", "tier": "gold"}
    assert meta.description == "the key"
    assert meta.current_version == 1
    from keysafe.manager.audit import AuditFilter

    [rec] = m.audit_query(AuditFilter(action="update_metadata"))
    assert rec.detail == {"fields": ["description", "tags"], "tags_set": ["tier"],
                          "tags_unset": ["absent", "env_var"]}
    with pytest.raises(NotFound):
        m.update_tags("nope", "acme", set_tags={"a": "b"})


def test_update_tags_from_two_managers_and_many_threads_lose_none(home: Path) -> None:
    """The embedded store: the read of the tags and their write hold one write lock."""
    import threading

    mgrs = [SecretManager.from_env(backend="sqlite") for _ in range(2)]
    try:
        mgrs[0].put("openai_api_key", OPENAI_KEY, "acme", tags={"keep": "1"})
        barrier = threading.Barrier(6)
        errors: list[BaseException] = []

        def worker(t: int) -> None:
            try:
                barrier.wait(timeout=10)
                for i in range(10):
                    mgrs[t % 2].update_tags("openai_api_key", "acme",
                                            set_tags={f"t{t}-{i}": "x"})
            except BaseException as exc:
                errors.append(exc)

        ts = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=60)
        assert not errors, errors
        tags = mgrs[1].describe("openai_api_key", "acme").tags
        assert tags == {"keep": "1", **{f"t{t}-{i}": "x" for t in range(6) for i in range(10)}}
    finally:
        for mgr in mgrs:
            mgr.close()


def test_check_value_refuses_as_put_would_and_changes_nothing() -> None:
    mgr = SecretManager(MemoryBackend(), actor="tester", max_value_bytes=16)
    mgr.check_value("openai_api_key", OPENAI_KEY[:16], "acme", check_format=False)
    for value, error, problem in [("", InvalidValue, "empty"),
                                  ("x" * 17, ValueTooLarge, "17 bytes"),
                                  (b"bytes", InvalidValue, "must be text")]:
        with pytest.raises(error, match=problem):
            mgr.check_value("webhook_secret", value, "acme")
    with pytest.raises(InvalidValue, match="OpenAI"):
        mgr.check_value("openai_api_key", "not-a-key", "acme")
    with pytest.raises(InvalidName):
        mgr.check_value("../x", "v", "acme")
    assert mgr.audit_query() == []
    assert mgr.list("acme") == []
