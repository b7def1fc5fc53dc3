"""Azure Key Vault backend, through the official client library, on a stand-in.

STAND-IN: no GCP/Azure server can run here; this speaks the documented REST API so
the official client library is exercised; it is not the real service.

``azure-keyvault-secrets`` (``SecretClient``, with Key Vault's challenge
authentication answered by a fake ``TokenCredential``) talks HTTPS to
``standins.azure_standin`` on 127.0.0.1, with a self-signed certificate the client is
given as its CA bundle. What is proved here is that keysafe drives the official
client correctly and that its mapping (names, version tags, check-and-set, soft
delete, metadata, errors) holds; the stand-in cannot prove how the real service
behaves beyond its documentation.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("azure.keyvault.secrets")
pytest.importorskip("azure.identity")

from azure.keyvault.secrets import SecretClient
from standins import AzureKeyVaultStandin, FakeTokenCredential, Fault
from standins.azure_standin import make_certificate

from keysafe.backends._names import AZURE
from keysafe.backends.azure import AzureKeyVaultBackend
from keysafe.backends.base import (
    Destroyable,
    MetadataWritable,
    Recoverable,
    SecretBackend,
    Versioned,
    WriteContext,
)
from keysafe.config import Settings
from keysafe.errors import (
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidName,
    InvalidValue,
    NotFound,
    PermissionDenied,
)
from keysafe.models import MetadataUpdate
from keysafe.testing import BackendConformance


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return make_certificate(tmp_path_factory.mktemp("azure-tls"))


@pytest.fixture(scope="module")
def standin(certificate: tuple[str, str]) -> Iterator[AzureKeyVaultStandin]:
    server = AzureKeyVaultStandin(*certificate).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clock(standin: AzureKeyVaultStandin) -> Iterator[None]:
    """Tests may move the stand-in's clock; each gets it back as it was."""
    saved = standin.clock_offset
    yield
    standin.clock_offset = saved


def test_kwargs(server: AzureKeyVaultStandin) -> dict[str, Any]:
    """Client options for the stand-in only: trust its certificate, and accept its
    challenge's resource (vault.azure.net) for a 127.0.0.1 URL."""
    assert server._certfile is not None
    return {"connection_verify": server._certfile, "verify_challenge_resource": False,
            "retry_backoff_factor": 0.05, "retry_backoff_max": 0.2}


test_kwargs.__test__ = False  # type: ignore[attr-defined]


def backend_for(server: AzureKeyVaultStandin, **kwargs: Any) -> AzureKeyVaultBackend:
    kwargs.setdefault("polling_interval", 0.02)
    kwargs.setdefault("retry_total", 1)
    return AzureKeyVaultBackend(vault_url=server.vault_url, credential=FakeTokenCredential(),
                                client_kwargs=test_kwargs(server), **kwargs)


def plain_client(server: AzureKeyVaultStandin) -> SecretClient:
    """The official client as another team's code would use it."""
    return SecretClient(server.vault_url, FakeTokenCredential(), retry_total=0,
                        **test_kwargs(server))


def ctx(actor: str = "tester@test") -> WriteContext:
    return WriteContext.make(actor)


class TestAzureKeyVaultConformance(BackendConformance):
    """The shipped contract, on the stand-in (STAND-IN, not the real service)."""
    max_value_bytes = 25 * 1024
    metadata_writable_while_deleted = False
    versions_while_deleted = False

    # Deletion times are Key Vault's own, in whole seconds.
    clock_tolerance = timedelta(seconds=2)
    server: AzureKeyVaultStandin

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _standin(cls, standin: AzureKeyVaultStandin) -> None:
        cls.server = standin

    def make_backend(self, *, max_versions: int = 10) -> SecretBackend:
        return backend_for(self.server, max_versions=max_versions)

    # Two documented departures from the reference semantics, asserted rather than
    # skipped (see docs/backends/azure.md):


# -- capabilities and configuration ---------------------------------------------------------
def test_capabilities(standin: AzureKeyVaultStandin) -> None:
    b = backend_for(standin)
    assert isinstance(b, SecretBackend)
    assert isinstance(b, Recoverable)
    assert isinstance(b, MetadataWritable)
    assert isinstance(b, Versioned)
    assert not isinstance(b, Destroyable)  # Key Vault cannot destroy one version
    assert b.name == "azure"
    assert standin.vault_url in repr(b)


def test_challenge_authentication_asks_for_the_vault_scope(
        standin: AzureKeyVaultStandin) -> None:
    cred = FakeTokenCredential()
    b = AzureKeyVaultBackend(vault_url=standin.vault_url, credential=cred,
                             client_kwargs=test_kwargs(standin))
    b.ping()
    assert cred.scopes == [("https://vault.azure.net/.default",)]


def test_no_credentials_is_a_config_error_naming_what_was_tried(
        standin: AzureKeyVaultStandin, monkeypatch: pytest.MonkeyPatch) -> None:
    """DefaultAzureCredential with no source that works raises ClientAuthenticationError
    with no response: no credentials (exit 8), not a denial by the vault."""
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential")
    for var in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
                "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME"):
        monkeypatch.delenv(var, raising=False)
    b = AzureKeyVaultBackend(vault_url=standin.vault_url, client_kwargs=test_kwargs(standin))
    with pytest.raises(ConfigError, match=r"no Azure credentials.*EnvironmentCredential"):
        b.get("some/path")


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.keyvault.secrets", None)
    with pytest.raises(ConfigError, match=r"pip install 'keysafe\[azure\]'"):
        AzureKeyVaultBackend(vault_url="https://x.vault.azure.net",
                             credential=FakeTokenCredential())


def test_no_vault_url_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_KEYVAULT_URL", raising=False)
    with pytest.raises(ConfigError, match="AZURE_KEYVAULT_URL"):
        AzureKeyVaultBackend(credential=FakeTokenCredential())


def test_from_settings_through_the_registry(standin: AzureKeyVaultStandin,
                                            monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    import azure.identity
    import azure.keyvault.secrets

    from keysafe.backends.registry import open_store

    real = azure.keyvault.secrets.SecretClient
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", FakeTokenCredential)
    monkeypatch.setattr(azure.keyvault.secrets, "SecretClient",
                        lambda url, cred, **kw: real(url, cred, **{**kw,
                                                                   **test_kwargs(standin)}))
    monkeypatch.setenv("AZURE_KEYVAULT_URL", standin.vault_url)
    store = open_store(Settings(backend="azure", home=tmp_path, max_versions=3,
                                backend_options={"polling_interval": 0.02}))
    b = store.backend
    assert isinstance(b, AzureKeyVaultBackend)
    assert (b.vault_url, b.max_versions) == (standin.vault_url, 3)
    b.put("registry/check", "v", ctx=ctx())
    assert b.get("registry/check") == ("v", 1)
    b.purge("registry/check", ctx=ctx())
    with pytest.raises(ConfigError, match="unknown option 'vaulturl'"):
        AzureKeyVaultBackend.from_settings(
            Settings(backend="azure", backend_options={"vaulturl": "x"}))


# -- names ----------------------------------------------------------------------------------
def test_documented_path_lands_at_its_encoded_name(standin: AzureKeyVaultStandin) -> None:
    b = backend_for(standin)
    path = "agentfoundry/dev/acme-corp/card-services/openai_api_key"
    b.put(path, "sk-test-1", ctx=ctx())
    name = "agentfoundry--dev--acme-hcorp--card-hservices--openai-uapi-ukey"
    assert b.secret_name(path) == name
    secret = plain_client(standin).get_secret(name)
    assert secret.value == "sk-test-1"
    assert secret.properties.tags["keysafe-version"] == "1"
    # Key Vault names are case-insensitive: any case reaches the same secret.
    assert plain_client(standin).get_secret(name.upper()).value == "sk-test-1"
    assert [m.path for m in b.list("agentfoundry/dev/")] == [path]
    b.purge(path, ctx=ctx())


def test_leading_slash_template(standin: AzureKeyVaultStandin) -> None:
    b = backend_for(standin)
    path = "/ragstar/local/org-123/llm/openai-api-key"
    b.put(path, "v", ctx=ctx())
    assert b.get(path) == ("v", 1)
    assert [m.path for m in b.list("/ragstar/")] == [path]
    assert b.list("ragstar/") == []
    b.purge(path, ctx=ctx())


paths = st.builds(
    lambda lead, segs: ("/" if lead else "") + "/".join(segs), st.booleans(),
    st.lists(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,8}", fullmatch=True),
             min_size=1, max_size=3))


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=paths)
def test_generated_names_round_trip_through_the_store(standin: AzureKeyVaultStandin,
                                                      path: str) -> None:
    b = backend_for(standin)
    full = path if path.startswith("/") else "names/" + path
    try:
        b.put(full, f"value of {full}", ctx=ctx())
        assert b.get(full) == (f"value of {full}", 1)
        assert b.describe(full).path == full
        assert full in [m.path for m in b.list(full)]
        names = [p.name for p in plain_client(standin).list_properties_of_secrets()]
        assert AZURE.encode(full) in names
        assert full in [AZURE.decode(n) for n in names]
    finally:
        b.purge(full, ctx=ctx())


def test_paths_differing_in_case_or_escapes_are_separate(
        standin: AzureKeyVaultStandin) -> None:
    b = backend_for(standin)
    group = ["case/Key", "case/key", "case/KEY", "case/a-b", "case/a.b", "case/a_b",
             "case/a/b", "case/a-cb", "case/aCb"]
    for i, p in enumerate(group):
        b.put(p, f"v{i}", ctx=ctx())
    assert [b.get(p)[0] for p in group] == [f"v{i}" for i in range(len(group))]
    assert [m.path for m in b.list("case/")] == sorted(group)
    for p in group:
        b.purge(p, ctx=ctx())


def test_name_too_long_names_the_store_and_limit(standin: AzureKeyVaultStandin) -> None:
    b = backend_for(standin)
    with pytest.raises(InvalidName, match=r"Azure Key Vault allows at most 127"):
        b.put("a/" * 50, "v", ctx=ctx())


# -- limits, errors and outages ---------------------------------------------------------------
def test_tag_value_limit_is_checked_before_writing(standin: AzureKeyVaultStandin) -> None:
    b = backend_for(standin)
    before = len(standin.requests)
    with pytest.raises(InvalidValue, match=r"description .* 300 characters.*256"):
        b.put("limits/long-description", "v", ctx=ctx(),
              meta=MetadataUpdate(description="d" * 300))
    assert not [r for r in standin.requests[before:] if r[0] == "PUT"]
    with pytest.raises(NotFound):
        b.describe("limits/long-description")


def test_throttling_is_retried_for_reads(standin: AzureKeyVaultStandin) -> None:
    b = backend_for(standin, retry_total=3)
    b.put("errors/throttled", "v", ctx=ctx())
    standin.inject(Fault(429, count=2, match=r"GET /secrets/errors--throttled/$"))
    assert b.get("errors/throttled") == ("v", 1)
    b.purge("errors/throttled", ctx=ctx())


def test_persistent_outage_is_retryable(standin: AzureKeyVaultStandin) -> None:
    b = backend_for(standin, retry_total=1)
    standin.inject(Fault(503, count=100, match=r"/secrets/errors--down"))
    try:
        with pytest.raises(BackendUnavailable) as exc_info:
            b.get("errors/down")
        assert exc_info.value.retryable
    finally:
        standin.clear_faults()


def test_permission_denied(standin: AzureKeyVaultStandin) -> None:
    b = backend_for(standin)
    standin.inject(Fault(403, count=1, match=r"GET /secrets/errors--denied/versions"))
    with pytest.raises(PermissionDenied, match="Azure Key Vault denied"):
        b.describe("errors/denied")


def test_outage_is_backend_unavailable(certificate: tuple[str, str]) -> None:
    server = AzureKeyVaultStandin(*certificate).start()
    b = backend_for(server, retry_total=0)
    b.put("outage/x", "v", ctx=ctx())
    server.stop()
    try:
        with pytest.raises(BackendUnavailable):
            b.ping()
        with pytest.raises(BackendUnavailable):
            b.get("outage/x")
        with pytest.raises(BackendUnavailable):
            b.put("outage/x", "w", ctx=ctx())
    finally:
        server.start()
    assert b.get("outage/x") == ("v", 1)


def test_lost_answer_to_a_write_does_not_duplicate_it(standin: AzureKeyVaultStandin) -> None:
    b = backend_for(standin)
    p = "errors/lost-answer"
    b.put(p, "one", ctx=ctx())
    standin.inject(Fault(503, count=1, match=r"PUT /secrets/", apply=True))
    assert b.put(p, "two", ctx=ctx()).version == 2
    assert b.get(p) == ("two", 2)
    assert len(standin.raw_versions(AZURE.encode(p))) == 2
    b.purge(p, ctx=ctx())


def test_purge_protection_is_permission_denied(standin: AzureKeyVaultStandin) -> None:
    b = backend_for(standin)
    b.put("errors/protected", "v", ctx=ctx())
    standin.purge_protection = True
    try:
        with pytest.raises(PermissionDenied, match="purge protection"):
            b.purge("errors/protected", ctx=ctx())
    finally:
        standin.purge_protection = False
    b.purge("errors/protected", ctx=ctx())


# -- how the model maps onto Key Vault's ------------------------------------------------------
def test_versions_carry_keysafe_numbers_in_tags(standin: AzureKeyVaultStandin) -> None:
    b = backend_for(standin, max_versions=2)
    p = "model/tags"
    for i in range(1, 4):
        assert b.put(p, f"value {i}", ctx=ctx(f"user{i}@test")).version == i
    raw = standin.raw_versions(AZURE.encode(p))
    assert [v.tags["keysafe-version"] for v in raw] == ["1", "2", "3"]
    # Pruned by max_versions = disabled in Key Vault (it cannot delete one version).
    assert [v.enabled for v in raw] == [False, True, True]
    assert [(v.version, v.created_by) for v in b.versions(p)] == [
        (2, "user2@test"), (3, "user3@test")]
    with pytest.raises(NotFound):
        b.get(p, version=1)
    b.purge(p, ctx=ctx())


def test_soft_delete_is_key_vaults_own(standin: AzureKeyVaultStandin) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    b = backend_for(standin)
    p = "model/soft-delete"
    b.put(p, "one", ctx=ctx(), meta=MetadataUpdate(secret_type="api_key"))
    client = plain_client(standin)
    name = AZURE.encode(p)
    b.delete(p, ctx=ctx())
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)
    gone = client.get_deleted_secret(name)
    assert gone.properties.content_type == "api_key"
    assert b.describe(p, include_deleted=True).deleted_at == gone.deleted_date
    b.restore(p, ctx=ctx())
    assert client.get_secret(name).value == "one"
    b.purge(p, ctx=ctx())


def test_metadata_is_readable_in_tags(standin: AzureKeyVaultStandin) -> None:
    b = backend_for(standin)
    p = "model/meta"
    b.put(p, "v", ctx=ctx("alice@test"), meta=MetadataUpdate(
        description="Stripe key", secret_type="api_key", tags={"team": "billing"}))
    props = plain_client(standin).get_secret(AZURE.encode(p)).properties
    assert props.content_type == "api_key"
    assert props.tags["keysafe-description"] == "Stripe key"
    assert props.tags["keysafe-tags"] == '{"team":"billing"}'
    assert props.tags["keysafe-created-by"] == "alice@test"
    assert len(props.tags) <= 15
    b.purge(p, ctx=ctx())


def test_every_metadata_field_fits_the_tag_limit(standin: AzureKeyVaultStandin) -> None:
    b = backend_for(standin, max_versions=1)
    p = "model/full-meta"
    full = MetadataUpdate(description="d" * 256, secret_type="t" * 200,
                          tags={"k": "v" * 200}, rotation_days=30,
                          expires_at=datetime(2031, 1, 1, tzinfo=UTC),
                          last_rotated=datetime(2024, 1, 1, tzinfo=UTC))
    for i in range(3):
        b.put(p, f"v{i}", ctx=ctx("a" * 200), meta=full)
    b.update_metadata(p, MetadataUpdate(description="x"), ctx=ctx("b" * 200))
    head = standin.raw_versions(AZURE.encode(p))[-1]
    assert len(head.tags) <= 15
    assert b.describe(p).description == "x"
    b.purge(p, ctx=ctx())


def test_secret_made_by_another_tool_is_read_and_adopted(
        standin: AzureKeyVaultStandin) -> None:
    client = plain_client(standin)
    client.set_secret("aragoradburl", "postgres://one")
    standin.clock_offset += 1  # Key Vault orders versions by whole seconds
    client.set_secret("aragoradburl", "postgres://two")
    b = backend_for(standin)
    assert b.get("aragoradburl") == ("postgres://two", 2)
    assert b.get("aragoradburl", version=1) == ("postgres://one", 1)
    assert b.describe("aragoradburl").current_version == 2
    assert "aragoradburl" in [m.path for m in b.list("aragora")]
    assert b.put("aragoradburl", "postgres://three", ctx=ctx(),
                 expected_version=2).version == 3
    assert client.get_secret("aragoradburl").value == "postgres://three"
    b.purge("aragoradburl", ctx=ctx())


# -- check-and-set across processes -----------------------------------------------------------
def _race(b: AzureKeyVaultBackend, standin: AzureKeyVaultStandin, p: str,
          monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """Make another process's write of the same version land between this backend's
    read and its write, a second earlier (as another writer racing it would)."""
    real = b._new_tags
    fired = threading.Event()

    def new_tags(*args: Any, **kwargs: Any) -> Any:
        tags, content_type = real(*args, **kwargs)
        if not fired.is_set():
            fired.set()
            other = dict(tags)
            other.update({"keysafe-write": "other-process", "keysafe-by": "other@test"})
            plain_client(standin).set_secret(AZURE.encode(p), value, tags=other)
            standin.clock_offset += 1
        return tags, content_type

    monkeypatch.setattr(b, "_new_tags", new_tags)


def test_cas_loser_is_voided_and_gets_conflict(standin: AzureKeyVaultStandin,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    b = backend_for(standin)
    p = "cas/loser"
    b.put(p, "one", ctx=ctx())
    _race(b, standin, p, monkeypatch, "theirs")
    with pytest.raises(Conflict) as exc_info:
        b.put(p, "mine", ctx=ctx(), expected_version=1)
    assert exc_info.value.current_version == 2
    assert b.get(p) == ("theirs", 2)
    assert b.describe(p).current_version == 2
    raw = standin.raw_versions(AZURE.encode(p))
    assert [(v.tags.get("keysafe-version"), v.enabled, "keysafe-void" in v.tags)
            for v in raw] == [("1", True, False), ("2", True, False), ("2", False, True)]
    monkeypatch.undo()
    assert b.put(p, "next", ctx=ctx(), expected_version=2).version == 3
    b.purge(p, ctx=ctx())


def test_unconditional_loser_writes_again(standin: AzureKeyVaultStandin,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    b = backend_for(standin)
    p = "cas/retry"
    b.put(p, "one", ctx=ctx())
    _race(b, standin, p, monkeypatch, "theirs")
    assert b.put(p, "mine", ctx=ctx()).version == 3
    assert b.get(p, version=2) == ("theirs", 2)
    assert b.get(p) == ("mine", 3)
    b.purge(p, ctx=ctx())


def test_same_second_duplicates_resolve_by_version_id(standin: AzureKeyVaultStandin) -> None:
    """Two versions claiming one number in the same second: every reader agrees the
    smaller id holds it."""
    b = backend_for(standin)
    p = "cas/tie"
    b.put(p, "one", ctx=ctx())
    client = plain_client(standin)
    name = AZURE.encode(p)
    tags = dict(client.get_secret(name).properties.tags)
    tags["keysafe-version"] = "2"
    a = client.set_secret(name, "first", tags=tags).properties
    c = client.set_secret(name, "second", tags=tags).properties
    winner = "first" if (a.created_on, a.version) < (c.created_on, c.version) else "second"
    assert b.get(p, version=2) == (winner, 2)
    assert b.describe(p).current_version == 2
    b.purge(p, ctx=ctx())


def test_writers_in_one_process_never_collide(standin: AzureKeyVaultStandin) -> None:
    """One backend object serialises its writes to a secret: unconditional writers from
    many threads get distinct, gap-free versions."""
    b = backend_for(standin)
    p = "cas/threads"
    got: list[int] = []
    lock = threading.Lock()

    def run() -> None:
        for _ in range(4):
            v = b.put(p, "x", ctx=ctx()).version
            with lock:
                got.append(v)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(got) == list(range(1, 17))
    b.purge(p, ctx=ctx())


def test_deleted_before(standin: AzureKeyVaultStandin) -> None:
    b = backend_for(standin)
    b.put("gone/old", "v", ctx=ctx())
    b.delete("gone/old", ctx=ctx())
    later = datetime.now(UTC) + timedelta(seconds=5 + standin.clock_offset)
    assert "gone/old" in b.deleted_before(later)
    assert "gone/old" not in b.deleted_before(datetime(2020, 1, 1, tzinfo=UTC))
    b.purge("gone/old", ctx=ctx())


def test_bad_metadata_leaves_a_deleted_secret_deleted(standin: AzureKeyVaultStandin) -> None:
    b = backend_for(standin)
    p = "limits/deleted-bad-meta"
    b.put(p, "v", ctx=ctx())
    b.delete(p, ctx=ctx())
    with pytest.raises(InvalidValue, match="256"):
        b.put(p, "w", ctx=ctx(), meta=MetadataUpdate(tags={"k": "v" * 300}))
    assert b.describe(p, include_deleted=True).deleted
    b.purge(p, ctx=ctx())


def test_external_secrets_operator_reads_what_keysafe_wrote(
        standin: AzureKeyVaultStandin) -> None:
    """The remoteRef keysafe renders (``export --provider store``), read the way the
    operator's azurekv provider reads it (secret ``key`` of the store's vault)."""
    b = backend_for(standin)
    path = "keysafe/production/acme-corp/shared/eso_key"
    b.put(path, "eso-azure-value", ctx=ctx())
    ref = b.eso_remote_ref(path)
    assert ref == {"key": "keysafe--production--acme-hcorp--shared--eso-ukey"}
    assert b.eso_provider() == {"azurekv": {
        "vaultUrl": standin.vault_url, "authType": "WorkloadIdentity",
        "serviceAccountRef": {"name": "external-secrets", "namespace": "external-secrets"}}}
    assert plain_client(standin).get_secret(ref["key"]).value == "eso-azure-value"
    b.purge(path, ctx=ctx())
