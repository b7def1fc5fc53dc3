"""The AWS SSM Parameter Store backend against a real moto server (server mode,
loopback): the shipped conformance suite, interop with plain boto3 at spec 000's
paths, native versions, the store's limits, writes that are never duplicated, outages
and the missing-SDK hint."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from aws_fixtures import MotoAws, aws, start_moto  # noqa: F401

from keysafe import SecretManager
from keysafe.backends.aws_ssm import AwsParameterStoreBackend
from keysafe.backends.base import (
    Destroyable,
    MetadataWritable,
    Recoverable,
    SecretBackend,
    Versioned,
    WriteContext,
)
from keysafe.backends.registry import open_store
from keysafe.config import Settings, load_settings
from keysafe.errors import (
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidName,
    KeysafeError,
    NotFound,
    Unsupported,
    ValueTooLarge,
)
from keysafe.manager.cache import SecretCache
from keysafe.models import MetadataUpdate
from keysafe.testing import BackendConformance

STORE = "AWS SSM Parameter Store"
SPEC_000 = "/{app}/{env}/org-{org}/{domain}/{name}"
OPENAI = "sk-test-" + "a1B2c3D4e5" * 3
ANTHROPIC = ["sk-ant-" + c * 24 for c in "abc"]

_NO_SOFT_DELETE = ("Parameter Store has no soft delete: delete is permanent and the "
                   "backend is not Recoverable, but this test assumes soft delete without "
                   "checking the capability")


# -- the shipped conformance suite ---------------------------------------------------------
class TestAwsParameterStoreConformance(BackendConformance):
    max_value_bytes = 4096
    honours_max_versions = False
    records_version_authors = False
    clock_tolerance = timedelta(seconds=5)  # SSM stamps version times itself
    url: str

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _moto(cls, aws: MotoAws) -> None:  # noqa: F811
        cls.url = aws.url

    def make_backend(self, *, max_versions: int = 10) -> SecretBackend:
        if max_versions != 10:
            pytest.skip("Parameter Store keeps the last 100 versions of a parameter and "
                        "cannot drop one: max_versions cannot be honoured")
        return AwsParameterStoreBackend(endpoint_url=self.url)

    # The tests below do not hold for the store's real semantics; they are kept, marked
    # as expected failures (strict: they must fail, and for the stated reason), and
    # reported rather than weakened. What the store does instead is tested further down.






# -- helpers ---------------------------------------------------------------------------------
@pytest.fixture
def backend(aws: MotoAws) -> Iterator[AwsParameterStoreBackend]:  # noqa: F811
    b = AwsParameterStoreBackend(endpoint_url=aws.url)
    yield b
    b.close()


@pytest.fixture
def ssm(aws: MotoAws) -> Any:  # noqa: F811
    return aws.client("ssm")


def uniq(stem: str = "t") -> str:
    return f"{stem}{uuid.uuid4().hex[:10]}"


def ctx(actor: str = "tester") -> WriteContext:
    return WriteContext.make(actor)


def ragstar(backend: AwsParameterStoreBackend, env: str = "local") -> SecretManager:
    return SecretManager(backend, app="ragstar", env=env, naming=SPEC_000)


def absent(ssm: Any, name: str) -> bool:
    try:
        ssm.get_parameter(Name=name)
    except botocore.exceptions.ClientError as exc:
        return bool(exc.response["Error"]["Code"] == "ParameterNotFound")
    return False


# -- capabilities, and what the store cannot do ------------------------------------------------
def test_capabilities_are_what_the_store_can_do(backend: AwsParameterStoreBackend,
                                                ssm: Any) -> None:
    assert isinstance(backend, SecretBackend)
    assert isinstance(backend, Versioned)  # SSM's own version history
    for cap in (Recoverable, Destroyable, MetadataWritable):
        assert not isinstance(backend, cap), cap
    mgr = ragstar(backend)
    org = uniq()
    mgr.put("openai-api-key", OPENAI, org, domain="llm")
    for call in (lambda: mgr.restore("openai-api-key", org, domain="llm"),
                 lambda: mgr.destroy("openai-api-key", [1], org, domain="llm"),
                 lambda: mgr.update_metadata("openai-api-key", org, domain="llm",
                                             description="x")):
        with pytest.raises(Unsupported):
            call()
    # delete is permanent: nothing to restore, nothing left in the store
    mgr.delete("openai-api-key", org, domain="llm")
    with pytest.raises(NotFound):
        mgr.describe("openai-api-key", org, domain="llm", include_deleted=True)
    assert absent(ssm, f"/ragstar/local/org-{org}/llm/openai-api-key")


# -- interop with plain boto3 (spec 000) ------------------------------------------------------
def test_keysafe_writes_land_at_spec_000_paths(backend: AwsParameterStoreBackend,
                                               ssm: Any) -> None:
    mgr = ragstar(backend)
    mgr.put("openai-api-key", OPENAI, "123", domain="llm", description="OpenAI key")
    name = "/ragstar/local/org-123/llm/openai-api-key"
    got = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
    assert (got["Name"], got["Type"], got["Value"], got["Version"]) == (
        name, "SecureString", OPENAI, 1)
    [described] = ssm.describe_parameters(ParameterFilters=[
        {"Key": "Name", "Option": "Equals", "Values": [name]}])["Parameters"]
    assert described["Description"] == "OpenAI key"
    by_path = ssm.get_parameters_by_path(Path="/ragstar/local/org-123", Recursive=True,
                                         WithDecryption=True)["Parameters"]
    assert [p["Name"] for p in by_path] == [name]
    # the same path under another environment is another parameter
    ragstar(backend, env="production").put("openai-api-key", OPENAI + "p", "123",
                                           domain="llm")
    assert ssm.get_parameter(Name="/ragstar/production/org-123/llm/openai-api-key",
                             WithDecryption=True)["Parameter"]["Value"] == OPENAI + "p"


def test_json_credentials_are_one_json_string(backend: AwsParameterStoreBackend,
                                              ssm: Any) -> None:
    mgr = ragstar(backend)
    org = uniq()
    creds = {"bot_token": "xoxb-1-2-3", "signing_secret": "abc123", "app_token": "xapp-1"}
    mgr.put_json("slack", creds, org, domain="integrations")
    raw = ssm.get_parameter(Name=f"/ragstar/local/org-{org}/integrations/slack",
                            WithDecryption=True)["Parameter"]["Value"]
    assert json.loads(raw) == creds
    mgr.update_json("slack", {"bot_token": "xoxb-new"}, org, domain="integrations")
    assert mgr.get_json("slack", org, domain="integrations")["bot_token"] == "xoxb-new"


def test_boto3_writes_are_read_by_keysafe(backend: AwsParameterStoreBackend,
                                          ssm: Any) -> None:
    org = uniq()
    name = f"/ragstar/local/org-{org}/llm/anthropic-api-key"
    ssm.put_parameter(Name=name, Value=ANTHROPIC[0], Type="SecureString")
    mgr = ragstar(backend)
    assert mgr.get("anthropic-api-key", org, domain="llm") == ANTHROPIC[0]
    ssm.put_parameter(Name=name, Value=ANTHROPIC[1], Type="SecureString", Overwrite=True)
    assert backend.get(name) == (ANTHROPIC[1], 2)
    assert backend.get(name, version=1) == (ANTHROPIC[0], 1)
    meta = mgr.describe("anthropic-api-key", org, domain="llm")
    assert (meta.current_version, meta.versions, meta.created_by) == (2, 2, None)
    assert [m.path for m in mgr.list(org)] == [name]
    # keysafe's next write is simply the store's next version
    assert mgr.put("anthropic-api-key", ANTHROPIC[2], org, domain="llm",
                   expected_version=2).version == 3
    assert ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == \
        ANTHROPIC[2]


def test_versions_are_the_stores_own(backend: AwsParameterStoreBackend, ssm: Any) -> None:
    p = f"/app/dev/{uniq()}/shared/key"
    for i, who in enumerate(["alice", "bob", "carol"], start=1):
        assert backend.put(p, f"value {i}", ctx=ctx(who)).version == i
    history = ssm.get_parameter_history(Name=p, WithDecryption=True)["Parameters"]
    assert [(h["Version"], h["Value"]) for h in history] == [
        (1, "value 1"), (2, "value 2"), (3, "value 3")]
    assert ssm.get_parameter(Name=f"{p}:2", WithDecryption=True)["Parameter"]["Value"] == \
        backend.get(p, version=2)[0]
    infos = backend.versions(p)
    assert [i.version for i in infos] == [1, 2, 3]
    assert (infos[0].created_by, infos[2].created_by) == ("alice", "carol")
    meta = backend.describe(p)
    assert (meta.created_by, meta.updated_by, meta.versions) == ("alice", "carol", 3)


def test_metadata_comes_with_a_write(backend: AwsParameterStoreBackend, ssm: Any) -> None:
    p = f"/app/dev/{uniq()}/shared/key"
    backend.put(p, "v1", ctx=ctx(), meta=MetadataUpdate(
        description="Stripe key", secret_type="api_key", tags={"team": "billing"},
        rotation_days=30))
    backend.put(p, "v2", ctx=ctx())  # a write without metadata keeps it
    meta = backend.describe(p)
    assert (meta.description, meta.secret_type, meta.tags, meta.rotation_days) == (
        "Stripe key", "api_key", {"team": "billing"}, 30)
    tags = {t["Key"]: t["Value"] for t in ssm.list_tags_for_resource(
        ResourceType="Parameter", ResourceId=p)["TagList"]}
    assert tags["team"] == "billing"
    backend.put(p, "v3", ctx=ctx(), meta=MetadataUpdate(description="new", tags={}))
    meta = backend.describe(p)
    assert (meta.description, meta.tags, meta.current_version) == ("new", {}, 3)


def test_paths_with_and_without_a_leading_slash(backend: AwsParameterStoreBackend,
                                                ssm: Any) -> None:
    org = uniq()
    backend.put(f"app/{org}/key", "v", ctx=ctx())
    # Parameter Store wants hierarchical names to begin with "/"
    assert ssm.get_parameter(Name=f"/app/{org}/key", WithDecryption=True)[
        "Parameter"]["Value"] == "v"
    assert backend.get(f"/app/{org}/key") == ("v", 1)
    assert [m.path for m in backend.list(f"app/{org}/")] == [f"app/{org}/key"]
    assert [m.path for m in backend.list(f"/app/{org}/")] == [f"/app/{org}/key"]


def test_kms_key_and_tier(aws: MotoAws, ssm: Any) -> None:  # noqa: F811
    b = AwsParameterStoreBackend(endpoint_url=aws.url, kms_key_id="alias/keysafe-test",
                                 tier="advanced")
    p = f"/app/dev/{uniq()}/shared/big"
    b.put(p, "x" * 8192, ctx=ctx())  # over 4 KiB: fine in the advanced tier
    [described] = ssm.describe_parameters(ParameterFilters=[
        {"Key": "Name", "Option": "Equals", "Values": [p]}])["Parameters"]
    assert (described["KeyId"], described["Tier"]) == ("alias/keysafe-test", "Advanced")
    with pytest.raises(ValueTooLarge, match="8192"):
        b.put(p, "x" * 8193, ctx=ctx())


def test_list_follows_pages(backend: AwsParameterStoreBackend, ssm: Any) -> None:
    prefix = f"/app/dev/{uniq()}/"
    names = [f"{prefix}shared/k{i:03d}" for i in range(55)]  # pages hold 50
    for n in names:
        ssm.put_parameter(Name=n, Value="v", Type="SecureString")
    assert [m.path for m in backend.list(prefix)] == names
    assert [m.path for m in backend.list(prefix + "shared/k05")] == names[50:]


# -- limits ---------------------------------------------------------------------------------
def test_value_over_4_kib_is_refused_before_calling(backend: AwsParameterStoreBackend,
                                                    ssm: Any) -> None:
    p = f"/app/dev/{uniq()}/shared/big"
    with pytest.raises(ValueTooLarge) as exc_info:
        backend.put(p, "x" * 4097, ctx=ctx())
    message = str(exc_info.value)
    assert STORE in message
    assert "4096" in message
    assert "Standard" in message
    assert absent(ssm, p)  # nothing written
    backend.put(p, "é" * 2048, ctx=ctx())  # 4,096 bytes: the limit itself is fine
    with pytest.raises(ValueTooLarge):
        backend.put(p, "é" * 2049, ctx=ctx())  # 2,049 characters but 4,098 bytes
    assert backend.get(p)[1] == 1


def test_names_are_checked_against_the_stores_rules(backend: AwsParameterStoreBackend,
                                                    ssm: Any) -> None:
    deep = "/" + "/".join(f"l{i}" for i in range(16))
    with pytest.raises(InvalidName) as exc_info:
        backend.put(deep, "v", ctx=ctx())
    assert STORE in str(exc_info.value)
    assert "depth limit is 15 levels" in str(exc_info.value)
    assert absent(ssm, deep)
    backend.put("/" + "/".join(f"l{i}" for i in range(15)), "v", ctx=ctx())  # 15 is fine
    with pytest.raises(InvalidName, match="1011"):
        backend.put("/a/" + "b" * 1000, "v", ctx=ctx())
    for bad in ("/a/b c", "/a//b", "//a/b", "/a/b/", "/a/b:1", "/aws/x", "/SSM-things/x"):
        with pytest.raises(InvalidName, match=STORE):
            backend.put(bad, "v", ctx=ctx())


# -- check-and-set and retries ----------------------------------------------------------------
def test_cas_zero_is_an_atomic_create(backend: AwsParameterStoreBackend,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    p = f"/app/dev/{uniq()}/shared/key"
    backend.put(p, "first", ctx=ctx())
    real_find = backend._find
    calls: list[int] = []

    def stale_once(name: str, path: str) -> dict[str, Any] | None:
        calls.append(1)
        return None if len(calls) == 1 else real_find(name, path)

    # As if another writer created the parameter right after this one looked.
    monkeypatch.setattr(backend, "_find", stale_once)
    with pytest.raises(Conflict) as exc_info:
        backend.put(p, "second", ctx=ctx(), expected_version=0)
    assert exc_info.value.current_version == 1
    assert backend.get(p) == ("first", 1)


def test_cas_window_between_check_and_write(backend: AwsParameterStoreBackend,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Documented behaviour: Parameter Store has no conditional overwrite, so a writer
    that slips in between the check and the write is not detected before the write; the
    version returned is the store's, so the caller can see it is not expected + 1."""
    p = f"/app/dev/{uniq()}/shared/key"
    backend.put(p, "one", ctx=ctx())
    stale = backend._find(backend._name(p), p)
    backend.put(p, "two", ctx=ctx())
    monkeypatch.setattr(backend, "_find", lambda name, path: stale)
    info = backend.put(p, "three", ctx=ctx(), expected_version=1)
    assert info.version == 3  # not 2: the caller can tell another write came between


def test_a_write_whose_answer_was_lost_is_not_repeated(backend: AwsParameterStoreBackend,
                                                       ssm: Any) -> None:
    p = f"/app/dev/{uniq()}/shared/key"
    backend.put(p, "one", ctx=ctx())
    lost: list[int] = []

    def lose_first_answer(**_: Any) -> None:
        if not lost:
            lost.append(1)  # the write went through, but its answer never arrives
            raise botocore.exceptions.ReadTimeoutError(endpoint_url="http://moto")

    events = backend._writer.meta.events
    events.register("after-call.ssm.PutParameter", lose_first_answer)
    try:
        assert backend.put(p, "two", ctx=ctx()).version == 2
    finally:
        events.unregister("after-call.ssm.PutParameter", lose_first_answer)
    assert lost
    history = ssm.get_parameter_history(Name=p, WithDecryption=True)["Parameters"]
    assert [h["Value"] for h in history] == ["one", "two"]  # no duplicate version


def test_throttled_writes_are_retried(backend: AwsParameterStoreBackend, ssm: Any) -> None:
    p = f"/app/dev/{uniq()}/shared/key"
    refused: list[int] = []

    def throttle_twice(**_: Any) -> None:
        if len(refused) < 2:
            refused.append(1)
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "TooManyUpdates", "Message": "slow down"},
                 "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutParameter")

    events = backend._writer.meta.events
    events.register("before-call.ssm.PutParameter", throttle_twice)
    try:
        assert backend.put(p, "v", ctx=ctx()).version == 1
    finally:
        events.unregister("before-call.ssm.PutParameter", throttle_twice)
    assert len(refused) == 2


def test_a_value_in_an_aws_message_never_reaches_the_error(
        backend: AwsParameterStoreBackend) -> None:
    canary = f"canary-{uuid.uuid4().hex}"

    def refuse(**_: Any) -> None:
        raise botocore.exceptions.ClientError(
            {"Error": {"Code": "ValidationException",
                       "Message": f"Value '{canary}' at 'value' failed to satisfy"},
             "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutParameter")

    backend._writer.meta.events.register("before-call.ssm.PutParameter", refuse)
    with pytest.raises(KeysafeError) as exc_info:
        backend.put(f"/app/dev/{uniq()}/shared/key", canary, ctx=ctx())
    assert "ValidationException" in str(exc_info.value)
    assert canary not in str(exc_info.value)
    assert canary not in repr(exc_info.value)
    assert exc_info.value.__cause__ is None
    assert exc_info.value.__context__ is None


# -- outages ----------------------------------------------------------------------------------
def test_outage_serves_stale_reads_and_fails_the_rest_quickly() -> None:
    moto = start_moto()
    b = AwsParameterStoreBackend(endpoint_url=moto.url, max_attempts=1,
                                 connect_timeout=0.5, read_timeout=0.5)
    mgr = SecretManager(b, app="ragstar", env="local", naming=SPEC_000,
                        cache=SecretCache(ttl=0.05, stale_if_error=60))
    org = uniq()
    mgr.put("openai-api-key", OPENAI, org, domain="llm")
    assert mgr.get("openai-api-key", org, domain="llm") == OPENAI
    time.sleep(0.1)  # the cached value is now past its TTL
    # The server stops answering but its port stays open: calls hang until the read
    # timeout, the harder kind of outage.
    moto.server.stop()
    started = time.monotonic()
    assert mgr.get("openai-api-key", org, domain="llm") == OPENAI  # served stale
    assert mgr.stats()["stale_served"] == 1
    for call in (lambda: mgr.describe("openai-api-key", org, domain="llm"),
                 lambda: mgr.put("openai-api-key", OPENAI + "x", org, domain="llm"),
                 lambda: mgr.delete("openai-api-key", org, domain="llm"),
                 lambda: mgr.list(org),
                 b.ping):
        with pytest.raises(BackendUnavailable) as exc_info:
            call()
        assert exc_info.value.retryable
        assert OPENAI not in str(exc_info.value)
    assert time.monotonic() - started < 10
    moto.stop()
    # moto keeps its state in this process: a new server shows that nothing was
    # half-written (one version, the old value).
    again = start_moto()
    try:
        b2 = AwsParameterStoreBackend(endpoint_url=again.url)
        path = f"/ragstar/local/org-{org}/llm/openai-api-key"
        assert b2.get(path) == (OPENAI, 1)
    finally:
        again.stop()


def test_an_unconfirmed_write_says_so(aws: MotoAws) -> None:  # noqa: F811
    b = AwsParameterStoreBackend(endpoint_url=aws.url, max_attempts=2)
    p = f"/app/dev/{uniq()}/shared/key"
    b.put(p, "one", ctx=ctx())

    def timeout(**_: Any) -> None:
        raise botocore.exceptions.ReadTimeoutError(endpoint_url="http://moto")

    # Every write attempt times out before reaching the store, and the read-back shows
    # the value is not there: retried, then reported as unconfirmed, never duplicated.
    b._writer.meta.events.register("before-call.ssm.PutParameter", timeout)
    with pytest.raises(BackendUnavailable, match="outcome is unknown") as exc_info:
        b.put(p, "two", ctx=ctx())
    assert exc_info.value.retryable
    assert b.get(p) == ("one", 1)


# -- configuration -------------------------------------------------------------------------
def test_missing_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'keysafe\[aws\]'"):
        AwsParameterStoreBackend()
    with pytest.raises(ConfigError, match=r"pip install 'keysafe\[aws\]'"):
        open_store(Settings(backend="aws-ssm", home=tmp_path))


def test_settings_and_options(aws: MotoAws) -> None:  # noqa: F811
    b = AwsParameterStoreBackend.from_settings(Settings(backend_options={
        "endpoint_url": aws.url, "region": "eu-west-1", "tier": "Advanced",
        "kms_key_id": "alias/k", "read_timeout": "2.5"}))
    assert (b.tier, b.max_value_bytes, b.kms_key_id) == ("Advanced", 8192, "alias/k")
    assert "eu-west-1" in repr(b)
    b.ping()
    for bad, match in (({"tier": "gold"}, "tier"),
                       ({"recovery_window_days": 7}, "unknown option"),
                       ({"max_attempts": 0}, "max_attempts")):
        with pytest.raises(ConfigError, match=match):
            AwsParameterStoreBackend.from_settings(
                Settings(backend_options={"endpoint_url": aws.url, **bad}))


def test_profile_in_keysafe_toml_selects_aws_ssm(aws: MotoAws, tmp_home: Path,  # noqa: F811
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    Path("keysafe.toml").write_text(
        f'[keysafe]\napp = "ragstar"\nnaming_template = "{SPEC_000}"\n\n'
        '[keysafe.profiles.development]\n'
        f'backend = "aws-ssm"\nendpoint_url = "{aws.url}"\nregion = "us-east-1"\n')
    monkeypatch.setenv("ENVIRONMENT", "development")
    org = uniq()
    with SecretManager.from_settings(load_settings()) as mgr:
        assert isinstance(mgr.backend, AwsParameterStoreBackend)
        mgr.put("openai-api-key", OPENAI, org, domain="llm")
    raw = aws.client("ssm").get_parameter(
        Name=f"/ragstar/development/org-{org}/llm/openai-api-key", WithDecryption=True)
    assert raw["Parameter"]["Value"] == OPENAI


def test_external_secrets_operator_reads_what_keysafe_wrote(
        backend: AwsParameterStoreBackend, ssm: Any) -> None:
    """The remoteRef keysafe renders (``export --provider store``), read the way the
    operator's ParameterStore provider reads it (GetParameter, decrypted)."""
    path = f"keysafe/production/acme/shared/{uniq('eso')}"
    backend.put(path, "eso-ssm-value", ctx=ctx())
    ref = backend.eso_remote_ref(path)
    assert ref == {"key": "/" + path}
    got = ssm.get_parameter(Name=ref["key"], WithDecryption=True)["Parameter"]["Value"]
    assert got == "eso-ssm-value"
    assert backend.eso_provider() == {"aws": {"service": "ParameterStore",
                                              "region": "us-east-1"}}
