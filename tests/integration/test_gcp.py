"""GCP Secret Manager backend, through the official client library, on a stand-in.

STAND-IN: no GCP/Azure server can run here; this speaks the documented REST API so
the official client library is exercised; it is not the real service.

``google-cloud-secret-manager`` (REST transport, anonymous credentials) talks real
HTTP to ``standins.gcp_standin`` on 127.0.0.1, which keeps Secret Manager's documented
shapes, limits and error statuses. What is proved here is that keysafe drives the
official client correctly and that its mapping (names, versions, check-and-set, soft
delete, metadata, errors) holds; the stand-in cannot prove how the real service
behaves beyond its documentation.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("google.cloud.secretmanager_v1")

from google.auth.credentials import AnonymousCredentials
from google.cloud import secretmanager_v1
from standins import Fault, GcpSecretManagerStandin

from keysafe.backends._names import GCP
from keysafe.backends.base import (
    Destroyable,
    Recoverable,
    SecretBackend,
    Versioned,
    WriteContext,
)
from keysafe.backends.gcp import GcpSecretManagerBackend
from keysafe.config import Settings
from keysafe.errors import (
    BackendUnavailable,
    ConfigError,
    Conflict,
    IntegrityError,
    InvalidName,
    InvalidValue,
    NotFound,
    PermissionDenied,
    ValueTooLarge,
)
from keysafe.models import MetadataUpdate
from keysafe.testing import BackendConformance

PROJECT = "keysafe-standin"


@pytest.fixture(scope="module")
def standin() -> Iterator[GcpSecretManagerStandin]:
    server = GcpSecretManagerStandin().start()
    yield server
    server.stop()


def backend_for(server: GcpSecretManagerStandin, **kwargs: Any) -> GcpSecretManagerBackend:
    kwargs.setdefault("retry_timeout", 0.5)
    kwargs.setdefault("timeout", 10.0)
    return GcpSecretManagerBackend(project=PROJECT, endpoint=server.url,
                                   credentials=AnonymousCredentials(), **kwargs)


def plain_client(server: GcpSecretManagerStandin) -> Any:
    """The official client as another team's code (or gcloud) would use it."""
    return secretmanager_v1.SecretManagerServiceClient(
        credentials=AnonymousCredentials(), transport="rest",
        client_options={"api_endpoint": server.url})


def ctx(actor: str = "tester@test") -> WriteContext:
    return WriteContext.make(actor)


class TestGcpSecretManagerConformance(BackendConformance):
    """The shipped contract, on the stand-in (STAND-IN, not the real service)."""

    server: GcpSecretManagerStandin

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _standin(cls, standin: GcpSecretManagerStandin) -> None:
        cls.server = standin

    def make_backend(self, *, max_versions: int = 10) -> SecretBackend:
        return backend_for(self.server, max_versions=max_versions)


# -- capabilities and configuration ---------------------------------------------------------
def test_capabilities(standin: GcpSecretManagerStandin) -> None:
    b = backend_for(standin)
    assert isinstance(b, SecretBackend)
    assert isinstance(b, Versioned)
    assert isinstance(b, Destroyable)
    assert isinstance(b, Recoverable)
    assert b.name == "gcp"
    assert PROJECT in repr(b)


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud.secretmanager_v1", None)
    with pytest.raises(ConfigError, match=r"pip install 'keysafe\[gcp\]'"):
        GcpSecretManagerBackend(project=PROJECT, credentials=AnonymousCredentials())


def test_from_settings_through_the_registry(standin: GcpSecretManagerStandin,
                                            monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Any) -> None:
    import google.auth

    from keysafe.backends.registry import open_store

    monkeypatch.setattr(google.auth, "default",
                        lambda **_: (AnonymousCredentials(), "adc-project"))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    settings = Settings(backend="gcp", home=tmp_path, max_versions=4,
                        backend_options={"endpoint": standin.url, "retry_timeout": 0.5})
    store = open_store(settings)
    b = store.backend
    assert isinstance(b, GcpSecretManagerBackend)
    assert (b.project, b.max_versions) == (PROJECT, 4)
    b.put("registry/check", "v", ctx=ctx())
    assert b.get("registry/check") == ("v", 1)
    b.purge("registry/check", ctx=ctx())
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT")
    adc = GcpSecretManagerBackend.from_settings(
        Settings(backend="gcp", backend_options={"endpoint": standin.url}))
    assert adc.project == "adc-project"
    with pytest.raises(ConfigError, match="unknown option 'regoin'"):
        GcpSecretManagerBackend.from_settings(
            Settings(backend="gcp", backend_options={"regoin": "x"}))


def test_no_project_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import google.auth

    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("GCLOUD_PROJECT", raising=False)
    monkeypatch.setattr(google.auth, "default", lambda **_: (AnonymousCredentials(), None))
    with pytest.raises(ConfigError, match="GOOGLE_CLOUD_PROJECT"):
        GcpSecretManagerBackend()


# -- names ----------------------------------------------------------------------------------
def test_documented_path_lands_at_its_encoded_id(standin: GcpSecretManagerStandin) -> None:
    b = backend_for(standin)
    path = "agentfoundry/dev/acme-corp/card-services/openai_api_key"
    b.put(path, "sk-test-1", ctx=ctx())
    sid = "agentfoundry--dev--acme-hcorp--card-hservices--openai_api_key"
    assert b.secret_id(path) == sid
    r = plain_client(standin).access_secret_version(
        name=f"projects/{PROJECT}/secrets/{sid}/versions/latest")
    assert r.payload.data == b"sk-test-1"
    assert [m.path for m in b.list("agentfoundry/dev/")] == [path]
    b.purge(path, ctx=ctx())


def test_leading_slash_template(standin: GcpSecretManagerStandin) -> None:
    b = backend_for(standin)
    path = "/ragstar/local/org-123/llm/openai-api-key"
    b.put(path, "v", ctx=ctx())
    assert b.get(path) == ("v", 1)
    assert [m.path for m in b.list("/ragstar/")] == [path]
    assert b.list("ragstar/") == []
    b.purge(path, ctx=ctx())


paths = st.builds(
    lambda lead, segs: ("/" if lead else "") + "/".join(segs), st.booleans(),
    st.lists(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,12}", fullmatch=True),
             min_size=1, max_size=4))


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=paths)
def test_generated_names_round_trip_through_the_store(standin: GcpSecretManagerStandin,
                                                      path: str) -> None:
    b = backend_for(standin)
    full = "names-" + path.lstrip("/") if not path.startswith("/") else path
    try:
        b.put(full, f"value of {full}", ctx=ctx())
        assert b.get(full) == (f"value of {full}", 1)
        assert b.describe(full).path == full
        assert full in [m.path for m in b.list(full)]
        # What is in the store decodes back to exactly this path.
        ids = [s.name.rsplit("/", 1)[1] for s in plain_client(standin).list_secrets(
            parent=f"projects/{PROJECT}")]
        assert GCP.encode(full) in ids
        assert full in [GCP.decode(i) for i in ids]
    finally:
        b.purge(full, ctx=ctx())


def test_paths_differing_in_case_or_escapes_are_separate(
        standin: GcpSecretManagerStandin) -> None:
    b = backend_for(standin)
    group = ["case/Key", "case/key", "case/a-b", "case/a.b", "case/a_b", "case/a/b",
             "case/a--b", "case/a-hb"]
    for i, p in enumerate(group):
        b.put(p, f"v{i}", ctx=ctx())
    assert [b.get(p)[0] for p in group] == [f"v{i}" for i in range(len(group))]
    assert [m.path for m in b.list("case/")] == sorted(group)
    for p in group:
        b.purge(p, ctx=ctx())


def test_name_too_long_names_the_store_and_limit(standin: GcpSecretManagerStandin) -> None:
    b = backend_for(standin)
    with pytest.raises(InvalidName, match=r"GCP Secret Manager allows at most 255"):
        b.put("a/" * 100, "v", ctx=ctx())


# -- limits, errors and outages ---------------------------------------------------------------
def test_value_limit_is_checked_before_calling(standin: GcpSecretManagerStandin) -> None:
    b = backend_for(standin)
    before = len(standin.requests)
    with pytest.raises(ValueTooLarge, match=r"GCP Secret Manager allows at most 65536"):
        b.put("limits/big", "x" * 65_537, ctx=ctx())
    assert len(standin.requests) == before


def test_throttling_is_retried_for_reads(standin: GcpSecretManagerStandin) -> None:
    b = backend_for(standin, retry_timeout=5.0)
    b.put("errors/throttled", "v", ctx=ctx())
    standin.inject(Fault(429, count=2, match=r"GET .*/secrets/errors--throttled$"))
    assert b.get("errors/throttled") == ("v", 1)
    b.purge("errors/throttled", ctx=ctx())


def test_persistent_throttling_is_retryable(standin: GcpSecretManagerStandin) -> None:
    b = backend_for(standin, retry_timeout=0.3)
    standin.inject(Fault(503, count=1000, match=r"GET .*/secrets/errors--down"))
    try:
        with pytest.raises(BackendUnavailable) as exc_info:
            b.get("errors/down")
        assert exc_info.value.retryable
    finally:
        standin.clear_faults()


def test_permission_denied(standin: GcpSecretManagerStandin) -> None:
    b = backend_for(standin)
    standin.inject(Fault(403, count=1, match=r"GET .*/secrets/errors--denied$"))
    with pytest.raises(PermissionDenied, match="GCP Secret Manager denied"):
        b.describe("errors/denied")


def test_reader_needs_only_secret_accessor(standin: GcpSecretManagerStandin) -> None:
    """Spec 002 grants readers roles/secretmanager.secretAccessor alone: get must not
    need secrets.get (here every call but AccessSecretVersion is denied)."""
    b = backend_for(standin)
    b.put("roles/reader", "one", ctx=ctx())
    b.put("roles/reader", "two", ctx=ctx())
    standin.inject(Fault(403, count=100, match=r"^(?!GET .*:access$)"))
    try:
        assert b.get("roles/reader") == ("two", 2)
        assert b.get("roles/reader", version=1) == ("one", 1)
        with pytest.raises(PermissionDenied):
            b.describe("roles/reader")
    finally:
        standin.clear_faults()
    b.purge("roles/reader", ctx=ctx())


def test_corrupted_payload_is_an_integrity_error(standin: GcpSecretManagerStandin) -> None:
    import base64

    b = backend_for(standin)
    b.put("errors/corrupt", "v", ctx=ctx())
    sid = f"projects/{PROJECT}/secrets/{GCP.encode('errors/corrupt')}"
    standin.inject(Fault(200, match=r":access$", body={
        "name": f"{sid}/versions/1",
        "payload": {"data": base64.b64encode(b"tampered").decode(), "dataCrc32c": "1"}}))
    with pytest.raises(IntegrityError, match="checksum"):
        b.get("errors/corrupt")
    b.purge("errors/corrupt", ctx=ctx())


def test_outage_is_backend_unavailable() -> None:
    server = GcpSecretManagerStandin().start()
    b = backend_for(server, retry_timeout=0.2, timeout=2.0)
    b.put("outage/x", "v", ctx=ctx())
    server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            b.ping()
        with pytest.raises(BackendUnavailable):
            b.get("outage/x")
        with pytest.raises(BackendUnavailable):
            b.put("outage/x", "w", ctx=ctx())
        assert time.monotonic() - started < 10
    finally:
        server.start()
    assert b.get("outage/x") == ("v", 1)


def test_lost_answer_to_add_version_does_not_duplicate_the_write(
        standin: GcpSecretManagerStandin) -> None:
    b = backend_for(standin)
    p = "errors/lost-answer"
    b.put(p, "one", ctx=ctx())
    standin.inject(Fault(503, count=1, match=r"POST .*:addVersion$", apply=True))
    assert b.put(p, "two", ctx=ctx()).version == 2
    assert b.get(p) == ("two", 2)
    assert b.put(p, "three", ctx=ctx()).version == 3
    assert [v.version for v in b.versions(p)] == [1, 2, 3]
    b.purge(p, ctx=ctx())


def test_refused_write_leaves_no_reservation(standin: GcpSecretManagerStandin) -> None:
    b = backend_for(standin)
    p = "errors/refused"
    b.put(p, "one", ctx=ctx())
    standin.inject(Fault(503, count=1, match=r"POST .*:addVersion$"))
    with pytest.raises(BackendUnavailable):
        b.put(p, "two", ctx=ctx())
    raw = standin.raw_secret(PROJECT, GCP.encode(p))
    assert raw is not None
    assert "keysafe_pending" not in raw.labels
    assert b.put(p, "two", ctx=ctx(), expected_version=1).version == 2
    b.purge(p, ctx=ctx())


# -- how the model maps onto Secret Manager's -------------------------------------------------
def test_versions_are_native_gcp_versions(standin: GcpSecretManagerStandin) -> None:
    b = backend_for(standin, max_versions=2)
    p = "model/native"
    for i in range(1, 4):
        assert b.put(p, f"value {i}", ctx=ctx()).version == i
    client = plain_client(standin)
    sid = f"projects/{PROJECT}/secrets/{GCP.encode(p)}"
    states = {v.name.rsplit("/", 1)[1]: v.state.name
              for v in client.list_secret_versions(parent=sid)}
    # Pruned by max_versions = destroyed in GCP; the kept ones are readable by anyone.
    assert states == {"1": "DESTROYED", "2": "ENABLED", "3": "ENABLED"}
    assert client.access_secret_version(name=f"{sid}/versions/2").payload.data == b"value 2"
    b.purge(p, ctx=ctx())


def test_soft_delete_disables_versions_for_every_reader(
        standin: GcpSecretManagerStandin) -> None:
    from google.api_core import exceptions

    b = backend_for(standin)
    p = "model/soft-delete"
    b.put(p, "one", ctx=ctx())
    b.put(p, "two", ctx=ctx())
    client = plain_client(standin)
    sid = f"projects/{PROJECT}/secrets/{GCP.encode(p)}"
    b.delete(p, ctx=ctx())
    with pytest.raises(exceptions.BadRequest, match="DISABLED"):
        client.access_secret_version(name=f"{sid}/versions/latest")
    assert "keysafe_deleted_at" in client.get_secret(name=sid).labels
    b.restore(p, ctx=ctx())
    assert client.access_secret_version(name=f"{sid}/versions/latest").payload.data == b"two"
    b.purge(p, ctx=ctx())
    with pytest.raises(exceptions.NotFound):
        client.get_secret(name=sid)


def test_metadata_is_readable_in_annotations(standin: GcpSecretManagerStandin) -> None:
    b = backend_for(standin)
    p = "model/meta"
    b.put(p, "v", ctx=ctx("alice@test"), meta=MetadataUpdate(
        description="Stripe key", secret_type="api_key", tags={"team": "billing"}))
    secret = plain_client(standin).get_secret(
        name=f"projects/{PROJECT}/secrets/{GCP.encode(p)}")
    a = dict(secret.annotations)
    assert a["keysafe-description"] == "Stripe key"
    assert a["keysafe-type"] == "api_key"
    assert a["keysafe-tags"] == '{"team": "billing"}'
    assert a["keysafe-created-by"] == "alice@test"
    assert dict(secret.labels)["keysafe_version"] == "1"
    b.purge(p, ctx=ctx())


def test_metadata_over_16_kib_is_refused(standin: GcpSecretManagerStandin) -> None:
    b = backend_for(standin)
    with pytest.raises(InvalidValue, match=r"the limit is 16384"):
        b.put("model/huge-meta", "v", ctx=ctx(),
              meta=MetadataUpdate(description="d" * 17_000))
    with pytest.raises(NotFound):
        b.describe("model/huge-meta")


def test_secret_made_by_another_tool_is_read_and_adopted(
        standin: GcpSecretManagerStandin) -> None:
    client = plain_client(standin)
    secret = client.create_secret(parent=f"projects/{PROJECT}", secret_id="aragora_db_url",
                                  secret={"replication": {"automatic": {}}})
    client.add_secret_version(parent=secret.name, payload={"data": b"postgres://one"})
    client.add_secret_version(parent=secret.name, payload={"data": b"postgres://two"})
    b = backend_for(standin)
    assert b.get("aragora_db_url") == ("postgres://two", 2)
    assert b.get("aragora_db_url", version=1) == ("postgres://one", 1)
    assert b.describe("aragora_db_url").current_version == 2
    assert "aragora_db_url" in [m.path for m in b.list("aragora")]
    assert b.put("aragora_db_url", "postgres://three", ctx=ctx(),
                  expected_version=2).version == 3
    r = client.access_secret_version(name=f"{secret.name}/versions/latest")
    assert r.payload.data == b"postgres://three"
    b.purge("aragora_db_url", ctx=ctx())


# -- check-and-set across writers -------------------------------------------------------------
def test_cas_across_two_clients_loses_nothing(standin: GcpSecretManagerStandin) -> None:
    """Two backends (as two processes would have) race with check-and-set: every
    version is won exactly once."""
    p = "cas/two-clients"
    writers = [backend_for(standin) for _ in range(2)]
    won: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def run(b: GcpSecretManagerBackend, n: int) -> None:
        try:
            for i in range(6):
                while True:
                    try:
                        current = b.describe(p).current_version
                    except NotFound:
                        current = 0
                    try:
                        info = b.put(p, f"{n}-{i}", ctx=ctx(), expected_version=current)
                    except Conflict:
                        continue
                    with lock:
                        won.append(info.version)
                    break
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w, n)) for n, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(won) == list(range(1, 13))
    writers[0].purge(p, ctx=ctx())


def test_abandoned_reservation_is_taken_over(standin: GcpSecretManagerStandin) -> None:
    """A writer that reserved a version and died blocks others only until its lease
    (lock_timeout) ends."""
    b = backend_for(standin, lock_timeout=0.5)
    p = "cas/abandoned"
    b.put(p, "one", ctx=ctx())
    client = plain_client(standin)
    secret = client.get_secret(name=f"projects/{PROJECT}/secrets/{GCP.encode(p)}")
    labels = dict(secret.labels)
    labels.update({"keysafe_pending": "2-deadwriter", "keysafe_pending_at":
                   str(int(time.time() * 1000))})
    client.update_secret(secret={"name": secret.name, "labels": labels, "etag": secret.etag},
                         update_mask={"paths": ["labels"]})
    started = time.monotonic()
    assert b.put(p, "two", ctx=ctx(), expected_version=1).version == 2
    assert time.monotonic() - started >= 0.3
    assert b.get(p) == ("two", 2)
    raw = standin.raw_secret(PROJECT, GCP.encode(p))
    assert raw is not None
    assert "keysafe_pending" not in raw.labels
    b.purge(p, ctx=ctx())


def test_deleted_before_uses_the_deletion_label(standin: GcpSecretManagerStandin) -> None:
    b = backend_for(standin)
    b.put("gone/old", "v", ctx=ctx())
    when = datetime(2020, 1, 1, tzinfo=UTC)
    b.delete("gone/old", ctx=WriteContext("t", when))
    found = b.deleted_before(datetime(2021, 1, 1, tzinfo=UTC))
    assert "gone/old" in found
    assert b.describe("gone/old", include_deleted=True).deleted_at == when
    b.purge("gone/old", ctx=ctx())


def test_external_secrets_operator_reads_what_keysafe_wrote(
        standin: GcpSecretManagerStandin) -> None:
    """The remoteRef keysafe renders (``export --provider store``), read the way the
    operator's gcpsm provider reads it (the latest version of secret ``key`` in the
    store's project): the value keysafe stored."""
    b = backend_for(standin)
    path = "keysafe/production/acme-corp/shared/eso_key"
    b.put(path, "eso-gcp-value", ctx=ctx())
    ref = b.eso_remote_ref(path)
    assert ref == {"key": "keysafe--production--acme-hcorp--shared--eso_key"}
    assert b.eso_provider() == {"gcpsm": {"projectID": PROJECT}}
    r = plain_client(standin).access_secret_version(
        name=f"projects/{PROJECT}/secrets/{ref['key']}/versions/latest")
    assert r.payload.data == b"eso-gcp-value"
    b.purge(path, ctx=ctx())
