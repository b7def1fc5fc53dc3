"""The AWS Secrets Manager backend against a real moto server (server mode, loopback):
the shipped conformance suite, interop with plain boto3 at spec 001's names, how
versions, check-and-set and soft delete map onto staging labels and recovery windows,
limits, outages and the missing-SDK hint."""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from aws_fixtures import MotoAws, aws, start_moto  # noqa: F401

from keysafe import SecretManager
from keysafe.backends import _aws
from keysafe.backends.aws_sm import AwsSecretsManagerBackend
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
    InvalidValue,
    KeysafeError,
    NotFound,
    PermissionDenied,
    Unsupported,
    ValueTooLarge,
)
from keysafe.manager.cache import SecretCache
from keysafe.models import MetadataUpdate
from keysafe.testing import BackendConformance

STORE = "AWS Secrets Manager"
OPENAI = "sk-test-" + "a1B2c3D4e5" * 3
GITHUB = "ghp_" + "Z9y8X7w6V5" * 4


# -- the shipped conformance suite ---------------------------------------------------------
class TestAwsSecretsManagerConformance(BackendConformance):
    metadata_writable_while_deleted = False
    url: str

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _moto(cls, aws: MotoAws) -> None:  # noqa: F811
        cls.url = aws.url

    def make_backend(self, *, max_versions: int = 10) -> SecretBackend:
        return AwsSecretsManagerBackend(endpoint_url=self.url, max_versions=max_versions)

    # Secrets Manager refuses UpdateSecret on a secret scheduled for deletion, so the
    # backend answers Conflict ("restore it first") instead of pretending. The suite
    # expects Vault KV v2's behaviour here; reported rather than weakened.


# -- helpers ---------------------------------------------------------------------------------
@pytest.fixture
def backend(aws: MotoAws) -> Iterator[AwsSecretsManagerBackend]:  # noqa: F811
    b = AwsSecretsManagerBackend(endpoint_url=aws.url)
    yield b
    b.close()


@pytest.fixture
def sm(aws: MotoAws) -> Any:  # noqa: F811
    return aws.client("secretsmanager")


def uniq(stem: str = "t") -> str:
    return f"{stem}-{uuid.uuid4().hex[:10]}"


def ctx(actor: str = "tester") -> WriteContext:
    return WriteContext.make(actor)


def current_value(sm: Any, name: str) -> str:
    """What a boto3 reader gets. VersionStage is spelled out because moto's server (not
    AWS, not LocalStack) answers a GetSecretValue without it from the version that was
    current at the last PutSecretValue, ignoring UpdateSecretVersionStage."""
    return str(sm.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")["SecretString"])


def stages(sm: Any, name: str) -> dict[str, list[str]]:
    """VersionId -> staging labels, for versions that still have labels."""
    got = sm.describe_secret(SecretId=name)["VersionIdsToStages"]
    return {vid: labels for vid, labels in got.items() if labels}


# -- capabilities -------------------------------------------------------------------------
def test_capabilities_are_what_the_store_can_do(backend: AwsSecretsManagerBackend) -> None:
    assert isinstance(backend, SecretBackend)
    assert isinstance(backend, Recoverable)
    assert isinstance(backend, MetadataWritable)
    # Secrets Manager lists versions but cannot destroy one version's value.
    assert isinstance(backend, Versioned)
    assert not isinstance(backend, Destroyable)
    mgr = SecretManager(backend, app="agentfoundry", env="dev")
    org = uniq("org")
    mgr.put("openai_api_key", OPENAI, org)
    with pytest.raises(Unsupported, match="destroy"):
        mgr.destroy("openai_api_key", [1], org)


# -- interop with plain boto3 (spec 001) ------------------------------------------------------
def test_keysafe_writes_land_at_spec_001_names(backend: AwsSecretsManagerBackend,
                                                sm: Any) -> None:
    mgr = SecretManager(backend, app="agentfoundry", env="dev")
    mgr.put("openai_api_key", OPENAI, "acme-corp", domain="card-services",
            description="Production OpenAI key")
    name = "agentfoundry/dev/acme-corp/card-services/openai_api_key"
    got = sm.get_secret_value(SecretId=name)
    assert got["Name"] == name
    assert got["SecretString"] == OPENAI
    assert "AWSCURRENT" in got["VersionStages"]
    assert sm.describe_secret(SecretId=name)["Description"] == "Production OpenAI key"
    listed = sm.list_secrets(Filters=[{"Key": "name", "Values": [name]}])["SecretList"]
    assert [s["Name"] for s in listed] == [name]
    # spec 001's helper: the domain's key, falling back to the org's shared one
    assert mgr.get_llm_api_key("acme-corp", "openai", domain="card-services") == OPENAI
    assert mgr.get_llm_api_key("acme-corp", "openai", domain="other") is None


def test_json_credentials_are_one_json_string(backend: AwsSecretsManagerBackend,
                                              sm: Any) -> None:
    mgr = SecretManager(backend, app="agentfoundry", env="dev")
    org = uniq("org")
    creds = {"bot_token": "xoxb-1-2-3", "signing_secret": "abc123", "app_token": "xapp-1"}
    mgr.put_json("slack_credentials", creds, org)
    raw = sm.get_secret_value(SecretId=f"agentfoundry/dev/{org}/shared/slack_credentials")
    # A JSON string, so External Secrets' `property:` and other tools can pick fields.
    assert json.loads(raw["SecretString"]) == creds
    assert mgr.get_json_field("slack_credentials", "bot_token", org) == "xoxb-1-2-3"


def test_boto3_writes_are_read_by_keysafe(backend: AwsSecretsManagerBackend,
                                          sm: Any) -> None:
    org = uniq("globaltech")
    name = f"agentfoundry/dev/{org}/shared/github_token"
    sm.create_secret(Name=name, SecretString=GITHUB)
    mgr = SecretManager(backend, app="agentfoundry", env="dev")
    assert mgr.get("github_token", org) == GITHUB
    meta = mgr.describe("github_token", org)
    assert (meta.current_version, meta.versions, meta.created_by) == (1, 1, None)
    assert [m.path for m in mgr.list(org)] == [name]

    second = GITHUB.replace("Z", "Q")
    sm.put_secret_value(SecretId=name, SecretString=second)
    # Another tool's versions are numbered after keysafe's, AWSPREVIOUS before AWSCURRENT.
    assert backend.get(name) == (second, 2)
    assert backend.get(name, version=1) == (GITHUB, 1)
    assert mgr.describe("github_token", org).current_version == 2

    # The next keysafe write labels them, so their numbers stay put.
    third = GITHUB.replace("Z", "R")
    assert mgr.put("github_token", third, org, expected_version=2).version == 3
    labels = sorted(label for ls in stages(sm, name).values() for label in ls
                    if label.startswith("keysafe-v"))
    assert labels == ["keysafe-v1", "keysafe-v2", "keysafe-v3"]
    assert [backend.get(name, version=v)[0] for v in (1, 2, 3)] == [GITHUB, second, third]


def test_binary_secrets_are_refused_clearly(backend: AwsSecretsManagerBackend,
                                            sm: Any) -> None:
    name = f"agentfoundry/dev/{uniq('org')}/shared/blob"
    sm.create_secret(Name=name, SecretBinary=b"\x00\x01")
    with pytest.raises(Unsupported, match="SecretBinary"):
        backend.get(name)


# -- versions, check-and-set, soft delete ------------------------------------------------------
def test_versions_are_staging_labels(backend: AwsSecretsManagerBackend, sm: Any) -> None:
    p = f"app/dev/{uniq('org')}/shared/key"
    for i, who in enumerate(["alice", "bob", "carol"], start=1):
        assert backend.put(p, f"value {i}", ctx=ctx(who)).version == i
    by_label = {label: vid for vid, ls in stages(sm, p).items() for label in ls}
    assert by_label["AWSCURRENT"] == by_label["keysafe-v3"]
    assert by_label["AWSPREVIOUS"] == by_label["keysafe-v2"]
    assert "keysafe-v1" in by_label
    assert not [label for label in by_label if label.startswith("keysafe-pending")]
    # boto3 finds keysafe's version 2 by its label; keysafe finds it by number.
    assert sm.get_secret_value(SecretId=p, VersionStage="keysafe-v2")["SecretString"] == \
        "value 2"
    assert backend.get(p, version=2) == ("value 2", 2)
    infos = backend.versions(p)
    assert [(i.version, i.created_by, i.destroyed) for i in infos] == [
        (1, "alice", False), (2, "bob", False), (3, "carol", False)]


def test_max_versions_takes_labels_off_old_versions(aws: MotoAws, sm: Any) -> None:  # noqa: F811
    b = AwsSecretsManagerBackend(endpoint_url=aws.url, max_versions=2)
    p = f"app/dev/{uniq('org')}/shared/key"
    for i in range(1, 5):
        b.put(p, f"value {i}", ctx=ctx())
    labelled = stages(sm, p)
    keysafe_labels = sorted(label for ls in labelled.values() for label in ls
                            if label.startswith("keysafe-"))
    assert keysafe_labels == ["keysafe-v3", "keysafe-v4"]
    # Unlabelled versions are deprecated: Secrets Manager deletes them itself.
    assert len(labelled) == 2
    tags = {t["Key"] for t in sm.describe_secret(SecretId=p).get("Tags", [])}
    assert len([k for k in tags if k.startswith("keysafe:v:")]) == 2
    with pytest.raises(NotFound):
        b.get(p, version=2)
    assert b.describe(p).versions == 2


def test_cas_loser_gets_conflict_and_its_value_never_becomes_current(
        aws: MotoAws, sm: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    a = AwsSecretsManagerBackend(endpoint_url=aws.url)
    b = AwsSecretsManagerBackend(endpoint_url=aws.url)
    p = f"app/dev/{uniq('org')}/shared/key"
    a.put(p, "one", ctx=ctx("a"))
    stale = a._state_or_none(p)
    b.put(p, "two", ctx=ctx("b"), expected_version=1)
    # Writer a checked version 1 before b wrote: the check passes on its stale view, and
    # the conditional move of AWSCURRENT is what refuses it.
    monkeypatch.setattr(a, "_state_or_none", lambda path: stale)
    with pytest.raises(Conflict) as exc_info:
        a.put(p, "lost", ctx=ctx("a"), expected_version=1,
              meta=MetadataUpdate(description="lost"))
    assert exc_info.value.current_version == 2
    assert current_value(sm, p) == "two"
    assert b.get(p) == ("two", 2)
    assert b.describe(p).description is None
    # The loser's version holds no label at all: deprecated, never current.
    assert all(not label.startswith("keysafe-pending")
               for ls in stages(sm, p).values() for label in ls)
    assert len(stages(sm, p)) == 2

    # Without expected_version the same stale writer goes round and lands after b.
    assert a.put(p, "three", ctx=ctx("a")).version == 3
    assert b.get(p) == ("three", 3)
    assert b.get(p, version=2) == ("two", 2)


def test_a_retried_write_does_not_add_a_version(backend: AwsSecretsManagerBackend,
                                                sm: Any) -> None:
    p = f"app/dev/{uniq('org')}/shared/key"
    backend.put(p, "one", ctx=ctx())
    sent: list[str] = []

    def record(request: Any, **_: Any) -> None:
        sent.append(json.loads(request.body)["ClientRequestToken"])

    def retry_once(attempts: int, **_: Any) -> float | None:
        return 0 if attempts == 1 else None  # as if the first response was lost

    events = backend._client.meta.events
    events.register("before-send.secrets-manager.PutSecretValue", record)
    events.register("needs-retry.secrets-manager.PutSecretValue", retry_once)
    try:
        assert backend.put(p, "two", ctx=ctx()).version == 2
    finally:
        events.unregister("before-send.secrets-manager.PutSecretValue", record)
        events.unregister("needs-retry.secrets-manager.PutSecretValue", retry_once)
    assert len(sent) == 2
    assert sent[0] == sent[1]  # the same ClientRequestToken twice
    versions = sm.describe_secret(SecretId=p)["VersionIdsToStages"]
    assert len(versions) == 2  # ... so still one new version
    assert backend.get(p) == ("two", 2)


def test_a_write_stopped_after_its_commit_point_keeps_its_number(
        backend: AwsSecretsManagerBackend, sm: Any) -> None:
    """The write commits when AWSCURRENT moves. If labelling fails after that, the
    caller is told the value is in (a retry would only add a duplicate), and the
    unlabelled current version still reads as the right number until the next write
    labels it."""
    p = f"app/dev/{uniq('org')}/shared/key"
    backend.put(p, "one", ctx=ctx())

    def refuse_labels(params: dict[str, Any], **_: Any) -> None:
        if params["VersionStage"].startswith("keysafe-v"):
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://moto")

    event = "provide-client-params.secrets-manager.UpdateSecretVersionStage"
    backend._client.meta.events.register(event, refuse_labels)
    try:
        with pytest.raises(KeysafeError, match="written as version 2") as exc_info:
            backend.put(p, "two", ctx=ctx())
    finally:
        backend._client.meta.events.unregister(event, refuse_labels)
    assert not exc_info.value.retryable
    assert current_value(sm, p) == "two"
    assert backend.get(p) == ("two", 2)
    assert backend.describe(p).current_version == 2
    assert backend.put(p, "three", ctx=ctx(), expected_version=2).version == 3
    assert backend.get(p, version=2) == ("two", 2)
    assert sm.get_secret_value(SecretId=p, VersionStage="keysafe-v2")["SecretString"] == "two"


def test_soft_delete_restore_and_purge(aws: MotoAws, sm: Any) -> None:  # noqa: F811
    b = AwsSecretsManagerBackend(endpoint_url=aws.url, recovery_window_days=14)
    seen: list[dict[str, Any]] = []
    b._client.meta.events.register("provide-client-params.secrets-manager.DeleteSecret",
                                   lambda params, **_: seen.append(dict(params)))
    mgr = SecretManager(b, app="agentfoundry", env="dev", recovery_window_days=14)
    org = uniq("org")
    name = f"agentfoundry/dev/{org}/shared/openai_api_key"
    mgr.put("openai_api_key", OPENAI, org)
    mgr.delete("openai_api_key", org)
    assert seen[-1]["RecoveryWindowInDays"] == 14
    assert sm.describe_secret(SecretId=name).get("DeletedDate") is not None
    with pytest.raises(botocore.exceptions.ClientError):
        sm.get_secret_value(SecretId=name)
    assert not mgr.has("openai_api_key", org)
    [gone] = mgr.list(org, include_deleted=True)
    assert gone.deleted
    assert gone.deleted_at is not None
    assert name in b.deleted_before(datetime.now(UTC))

    mgr.restore("openai_api_key", org)
    assert sm.get_secret_value(SecretId=name)["SecretString"] == OPENAI
    assert mgr.get("openai_api_key", org, fresh=True) == OPENAI
    assert name not in b.deleted_before(datetime.now(UTC))

    mgr.delete("openai_api_key", org, force=True)
    assert seen[-1].get("ForceDeleteWithoutRecovery") is True
    with pytest.raises(botocore.exceptions.ClientError) as exc_info:
        sm.describe_secret(SecretId=name)
    assert exc_info.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_update_metadata_of_a_deleted_secret_is_a_conflict(
        backend: AwsSecretsManagerBackend) -> None:
    p = f"app/dev/{uniq('org')}/shared/key"
    backend.put(p, "v", ctx=ctx(), meta=MetadataUpdate(description="before"))
    backend.delete(p, ctx=ctx())
    with pytest.raises(Conflict, match="restore it first"):
        backend.update_metadata(p, MetadataUpdate(description="after"), ctx=ctx())
    assert backend.describe(p, include_deleted=True).description == "before"


def test_kms_key_id_is_used_on_create(aws: MotoAws, sm: Any) -> None:  # noqa: F811
    b = AwsSecretsManagerBackend(endpoint_url=aws.url, kms_key_id="alias/keysafe-test")
    p = f"app/dev/{uniq('org')}/shared/key"
    b.put(p, "v", ctx=ctx())
    assert sm.describe_secret(SecretId=p)["KmsKeyId"] == "alias/keysafe-test"


def test_list_follows_pages(backend: AwsSecretsManagerBackend, sm: Any) -> None:
    prefix = f"app/dev/{uniq('org')}/"
    names = [f"{prefix}shared/k{i:03d}" for i in range(105)]  # ListSecrets pages hold 100
    for n in names:
        sm.create_secret(Name=n, SecretString="v")
    sm.create_secret(Name=prefix.upper() + "shared/other", SecretString="v")
    assert [m.path for m in backend.list(prefix)] == names


# -- limits ---------------------------------------------------------------------------------
def test_limits_are_checked_before_calling(backend: AwsSecretsManagerBackend,
                                           sm: Any) -> None:
    p = f"app/dev/{uniq('org')}/shared/big"
    with pytest.raises(ValueTooLarge) as exc_info:
        backend.put(p, "x" * 65_537, ctx=ctx())
    assert STORE in str(exc_info.value)
    assert "65536" in str(exc_info.value)
    with pytest.raises(botocore.exceptions.ClientError):
        sm.describe_secret(SecretId=p)  # nothing was written
    backend.put(p, "é" * 32_768, ctx=ctx())  # 65,536 bytes: the limit itself is fine
    with pytest.raises(InvalidName, match="512"):
        backend.put("a/" + "b" * 511, "v", ctx=ctx())
    with pytest.raises(InvalidName, match=STORE):
        backend.put("a b", "v", ctx=ctx())
    with pytest.raises(InvalidValue, match="reserved"):
        backend.put(p, "v", ctx=ctx(), meta=MetadataUpdate(tags={"keysafe:type": "x"}))


# -- outages ----------------------------------------------------------------------------------
def test_outage_serves_stale_reads_and_fails_the_rest_quickly() -> None:
    moto = start_moto()
    b = AwsSecretsManagerBackend(endpoint_url=moto.url, max_attempts=2,
                                 connect_timeout=0.5, read_timeout=0.5)
    mgr = SecretManager(b, app="agentfoundry", env="dev",
                        cache=SecretCache(ttl=0.05, stale_if_error=60))
    org = uniq("org")
    mgr.put("openai_api_key", OPENAI, org)
    assert mgr.get("openai_api_key", org) == OPENAI
    time.sleep(0.1)  # the cached value is now past its TTL
    moto.stop()  # and the port is closed: connections are refused
    started = time.monotonic()
    assert mgr.get("openai_api_key", org) == OPENAI  # served stale
    assert mgr.stats()["stale_served"] == 1
    for call in (lambda: mgr.describe("openai_api_key", org),
                 lambda: mgr.get("anthropic_api_key", org),
                 lambda: mgr.put("openai_api_key", OPENAI + "x", org),
                 lambda: mgr.delete("openai_api_key", org),
                 lambda: mgr.list(org),
                 b.ping):
        with pytest.raises(BackendUnavailable) as exc_info:
            call()
        assert exc_info.value.retryable
        assert OPENAI not in str(exc_info.value)
    assert time.monotonic() - started < 10
    # moto keeps its state in this process: a new server shows that the refused write
    # left nothing behind, neither a value nor a version.
    again = start_moto()
    try:
        b2 = AwsSecretsManagerBackend(endpoint_url=again.url)
        path = f"agentfoundry/dev/{org}/shared/openai_api_key"
        assert b2.get(path) == (OPENAI, 1)
        assert b2.describe(path).versions == 1
    finally:
        again.stop()


# -- configuration -------------------------------------------------------------------------
def test_missing_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'keysafe\[aws\]'"):
        AwsSecretsManagerBackend()
    with pytest.raises(ConfigError, match=r"pip install 'keysafe\[aws\]'"):
        open_store(Settings(backend="aws-sm", home=tmp_path))


def test_settings_and_options(aws: MotoAws) -> None:  # noqa: F811
    s = Settings(backend="aws-sm", recovery_window_days=21, max_versions=4,
                 backend_options={"endpoint_url": aws.url, "region": "us-east-1",
                                  "kms_key_id": "alias/k", "max_attempts": "2"})
    b = AwsSecretsManagerBackend.from_settings(s)
    assert (b.recovery_window_days, b.max_versions, b.kms_key_id) == (21, 4, "alias/k")
    b.ping()
    assert repr(b) == "AwsSecretsManagerBackend(region='us-east-1')"
    for bad, match in (({"recovery_window_days": 3}, "7 to 30"),
                       ({"max_versions": 16}, "staging labels"),
                       ({"regoin": "us-east-1"}, "unknown option 'regoin'"),
                       ({"max_attempts": "many"}, "max_attempts")):
        with pytest.raises(ConfigError, match=match):
            AwsSecretsManagerBackend.from_settings(
                Settings(backend_options={"endpoint_url": aws.url, **bad}))


def test_profile_in_keysafe_toml_selects_aws_sm(aws: MotoAws, tmp_home: Path,  # noqa: F811
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    Path("keysafe.toml").write_text(
        '[keysafe]\napp = "agentfoundry"\n\n[keysafe.profiles.production]\n'
        f'backend = "aws-sm"\nendpoint_url = "{aws.url}"\nregion = "us-east-1"\n'
        'recovery_window_days = 10\n')
    monkeypatch.setenv("ENVIRONMENT", "production")
    settings = load_settings()
    assert settings.backend == "aws-sm"
    org = uniq("org")
    with SecretManager.from_settings(settings) as mgr:
        assert isinstance(mgr.backend, AwsSecretsManagerBackend)
        assert mgr.backend.recovery_window_days == 10
        mgr.put("openai_api_key", OPENAI, org)
        assert mgr.get("openai_api_key", org) == OPENAI
    raw = aws.client("secretsmanager").get_secret_value(
        SecretId=f"agentfoundry/production/{org}/shared/openai_api_key")
    assert raw["SecretString"] == OPENAI


# -- the error table -------------------------------------------------------------------------
class _Raising:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def put_secret_value(self, **_: Any) -> dict[str, Any]:
        raise self.exc


def _client_error(code: str, message: str = "", status: int = 400) -> Exception:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": message},
         "ResponseMetadata": {"HTTPStatusCode": status}}, "PutSecretValue")


@pytest.mark.parametrize(("exc", "expected", "retryable"), [
    (_client_error("ResourceNotFoundException", status=404), NotFound, False),
    (_client_error("AccessDeniedException", "User arn:x is not authorized"),
     PermissionDenied, False),
    (_client_error("ThrottlingException"), BackendUnavailable, True),
    (_client_error("RequestLimitExceeded"), BackendUnavailable, True),
    (_client_error("InternalServiceError", status=500), BackendUnavailable, True),
    (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"),
     BackendUnavailable, True),
    (botocore.exceptions.ConnectTimeoutError(endpoint_url="http://x"),
     BackendUnavailable, True),
    (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), BackendUnavailable, True),
    (_client_error("ValidationException"), KeysafeError, False),
])
def test_aws_errors_map_onto_keysafe_errors(exc: Exception, expected: type[KeysafeError],
                                            retryable: bool) -> None:
    call = _aws.Caller(_Raising(exc), _aws.load_sdk(), STORE)
    with pytest.raises(expected) as exc_info:
        call("put_secret_value", "a/b", action="write")
    assert exc_info.value.retryable is retryable
    assert exc_info.value.path == "a/b" or expected is KeysafeError
    assert exc_info.value.__cause__ is exc


def test_a_value_in_an_aws_message_never_reaches_the_error() -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    exc = _client_error("ValidationException",
                        f"1 validation error detected: Value '{canary}' at 'secretString'")
    call = _aws.Caller(_Raising(exc), _aws.load_sdk(), STORE)
    with pytest.raises(KeysafeError) as exc_info:
        call("put_secret_value", "a/b", action="write", secret=True)
    assert canary not in str(exc_info.value)
    assert canary not in repr(exc_info.value)
    # not even in a printed traceback: nothing is chained to the error
    assert exc_info.value.__cause__ is None
    assert exc_info.value.__context__ is None


def test_concurrent_unconditional_writers_all_land(backend: AwsSecretsManagerBackend) -> None:
    p = f"app/dev/{uniq('org')}/shared/key"
    errors: list[BaseException] = []
    versions: list[int] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        try:
            for i in range(3):
                v = backend.put(p, f"w{n}-{i}", ctx=ctx(f"w{n}")).version
                with lock:
                    versions.append(v)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(versions) == list(range(1, 10))
    assert backend.describe(p).current_version == 9


# -- spec 001's environment: AWS_REGION and LocalStack's LOCALSTACK_ENDPOINT ---------------
def test_spec001_environment_alone_reaches_the_store(aws: MotoAws,  # noqa: F811
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Spec 001 sets AWS_REGION (not AWS_DEFAULT_REGION, the only one botocore reads) and
    LOCALSTACK_ENDPOINT for development: with nothing else (moto on loopback plays
    LocalStack here), keysafe reaches the store."""
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("LOCALSTACK_ENDPOINT", aws.url)
    name = uniq("spec001")
    settings = load_settings({"KEYSAFE_BACKEND": "aws-sm", "KEYSAFE_HOME": str(tmp_path),
                              "KEYSAFE_ENV": "development"})
    with SecretManager.from_settings(settings) as m:
        m.put(name, "v-spec001", "acme-corp")
        assert m.get(name, "acme-corp", fresh=True) == "v-spec001"
    assert aws.client("secretsmanager").describe_secret(
        SecretId=f"keysafe/development/acme-corp/shared/{name}")["Name"]


def test_aws_endpoint_variables_win_over_localstack(aws: MotoAws,  # noqa: F811
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    opts = _aws.ClientOptions()
    monkeypatch.setenv("LOCALSTACK_ENDPOINT", "http://127.0.0.1:9")
    assert _aws.endpoint_for("secretsmanager", opts) == "http://127.0.0.1:9"
    assert _aws.endpoint_for("secretsmanager", _aws.ClientOptions(
        endpoint_url=aws.url)) == aws.url
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", aws.url)
    assert _aws.endpoint_for("secretsmanager", opts) is None  # botocore reads it itself
    assert _aws.endpoint_for("ssm", opts) == "http://127.0.0.1:9"
    b = AwsSecretsManagerBackend()
    try:
        name = uniq("ep")
        b.put(name, "v", ctx=ctx())
        assert b.get(name)[0] == "v"
    finally:
        b.close()


# -- the External Secrets Operator reading the store (export --provider store) ---------------
def test_external_secrets_operator_reads_what_keysafe_wrote(
        backend: AwsSecretsManagerBackend, sm: Any) -> None:
    """The remoteRef keysafe renders, read the way the operator's AWS provider reads it
    (GetSecretValue of the key), gives back the value keysafe stored."""
    path = f"keysafe/production/acme-corp/shared/{uniq('eso')}"
    backend.put(path, "sk-eso-value", ctx=ctx())
    ref = backend.eso_remote_ref(path)
    assert ref == {"key": path}
    assert current_value(sm, ref["key"]) == "sk-eso-value"
    assert backend.eso_provider() == {"aws": {"service": "SecretsManager",
                                              "region": "us-east-1"}}


def test_export_provider_store_renders_the_cluster_secret_store(
        aws: MotoAws, tmp_path: Path) -> None:  # noqa: F811
    """``keysafe export --format external-secret --provider store`` as a process, with
    the store configured by the environment (spec 002: ESO straight from AWS)."""
    import os
    import subprocess

    import yaml

    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSAFE_")}
    env.update(KEYSAFE_HOME=str(tmp_path), KEYSAFE_BACKEND="aws-sm", KEYSAFE_ENV="production",
               AWS_ENDPOINT_URL=aws.url, KEYSAFE_ACTOR="tester")
    org = uniq("org")
    keysafe = str(Path(sys.executable).parent / "keysafe")
    for name, value in (("openai_api_key", "sk-" + "e" * 30), ("db_password", "pw-1")):
        p = subprocess.run([keysafe, "put", name, "--org", org], input=value, text=True,
                           capture_output=True, env=env, timeout=60)
        assert p.returncode == 0, p.stderr
    p = subprocess.run([keysafe, "export", "--org", org, "--format", "external-secret",
                        "--provider", "store", "--namespace", "apps"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    store, es = list(yaml.safe_load_all(p.stdout))
    assert (store["kind"], store["metadata"]["name"]) == ("ClusterSecretStore",
                                                          "keysafe-production-aws-sm-apps")
    assert "namespace" not in store["metadata"]  # cluster-scoped
    assert store["spec"]["provider"] == {"aws": {"service": "SecretsManager",
                                                 "region": "us-east-1"}}
    assert store["spec"]["conditions"] == [{"namespaces": ["apps"]}]  # only there
    assert es["spec"]["secretStoreRef"] == {"name": "keysafe-production-aws-sm-apps",
                                            "kind": "ClusterSecretStore"}
    assert es["metadata"]["namespace"] == "apps"
    refs = {d["secretKey"]: d["remoteRef"]["key"] for d in es["spec"]["data"]}
    prefix = f"keysafe/production/{org}/shared/"
    assert refs == {"OPENAI_API_KEY": prefix + "openai_api_key",
                    "DB_PASSWORD": prefix + "db_password"}
    sm = aws.client("secretsmanager")
    assert current_value(sm, refs["DB_PASSWORD"]) == "pw-1"
    assert "sk-" + "e" * 30 not in p.stdout + p.stderr
    assert "pw-1" not in p.stdout


def test_export_provider_store_gives_fields_of_json_credentials(
        aws: MotoAws, tmp_path: Path) -> None:  # noqa: F811
    """A mapping file table with ``--provider store``: each field a ``remoteRef.property``
    over the SecretString, which is the JSON object keysafe stored (the operator's AWS
    provider reads the property as a key of it, a dotted one literally first)."""
    import os
    import subprocess

    import yaml

    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSAFE_")}
    env.update(KEYSAFE_HOME=str(tmp_path), KEYSAFE_BACKEND="aws-sm", KEYSAFE_ENV="production",
               AWS_ENDPOINT_URL=aws.url, KEYSAFE_ACTOR="tester")
    org = uniq("org")
    keysafe = str(Path(sys.executable).parent / "keysafe")
    creds = {"anthropic": "sk-ant-" + "f" * 30, "jwt.secret": "j" * 32}
    p = subprocess.run([keysafe, "put", "api-keys", "--org", org, "--credentials"],
                       input=json.dumps(creds), text=True, capture_output=True, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    mapping = tmp_path / "map.toml"
    mapping.write_text('"api-keys" = { anthropic = "ANTHROPIC_API_KEY", '
                       '"jwt.secret" = "JWT_SECRET" }\n')
    p = subprocess.run([keysafe, "export", "--org", org, "--format", "external-secret",
                        "--provider", "store", "--namespace", "apps", "--map", str(mapping)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    _, es = list(yaml.safe_load_all(p.stdout))
    path = f"keysafe/production/{org}/shared/api-keys"
    data = {d["secretKey"]: d["remoteRef"] for d in es["spec"]["data"]}
    assert data == {"ANTHROPIC_API_KEY": {"key": path, "property": "anthropic"},
                    "JWT_SECRET": {"key": path, "property": "jwt.secret"}}
    stored = json.loads(current_value(aws.client("secretsmanager"), path))
    assert {var: stored[ref["property"]] for var, ref in data.items()} == {
        "ANTHROPIC_API_KEY": creds["anthropic"], "JWT_SECRET": creds["jwt.secret"]}
    assert creds["anthropic"] not in p.stdout + p.stderr
