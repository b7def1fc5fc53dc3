"""The Vault / OpenBao KV v2 backend against a real OpenBao dev server on loopback.

- the shipped conformance suite, unchanged;
- exact value round trips (hypothesis), including strings that look like JSON;
- interop with the ``bao`` CLI both ways, at the documented KV v2 paths;
- token, AppRole (real) and Kubernetes (a loopback stand-in: no cluster runs here) auth;
- retries that never duplicate a write; an outage (server killed mid-run);
- Vault's limits, option parsing and the missing-SDK hint.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests
from bao_fixtures import BaoServer, bao, running_bao  # noqa: F401 - bao: module fixture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keysafe.backends.base import SecretBackend, WriteContext
from keysafe.backends.vault import VaultBackend, _decode_value, _encode_value
from keysafe.config import Settings
from keysafe.errors import (
    BackendUnavailable,
    ConfigError,
    InvalidName,
    InvalidValue,
    NotFound,
    PermissionDenied,
    ValueTooLarge,
)
from keysafe.manager.cache import SecretCache
from keysafe.manager.manager import SecretManager
from keysafe.models import MetadataUpdate
from keysafe.testing import BackendConformance

OPENAI_PATH = "agentfoundry/dev/acme-corp/card-services/openai_api_key"
OPENAI_KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2"


def ctx(actor: str = "test@vault") -> WriteContext:
    return WriteContext.make(actor)


def root_backend(server: BaoServer, **kw: Any) -> VaultBackend:
    kw.setdefault("timeout", 5)
    return VaultBackend(server.url, token=server.token, **kw)


@pytest.fixture
def vb(bao: BaoServer) -> Iterator[VaultBackend]:  # noqa: F811
    b = root_backend(bao)
    yield b
    b.close()


@pytest.fixture
def prefix(bao: BaoServer) -> Iterator[str]:  # noqa: F811
    """A unique path prefix, purged afterwards."""
    p = f"keysafe-test/{uuid.uuid4().hex[:12]}/"
    yield p
    b = root_backend(bao)
    for meta in b.list(p, include_deleted=True):
        b.purge(meta.path, ctx=ctx())
    b.close()


# -- the contract ----------------------------------------------------------------------------
class TestVault(BackendConformance):
    """The shipped conformance suite, unchanged. Vault stamps its own times, so
    created/updated times are Vault's clock (same host here: well inside 2 s)."""

    clock_tolerance = timedelta(seconds=2)
    server: ClassVar[BaoServer]

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _server(cls, bao: BaoServer) -> None:  # noqa: F811
        cls.server = bao

    def make_backend(self, *, max_versions: int = 10) -> SecretBackend:
        return root_backend(self.server, max_versions=max_versions)


# -- values round-trip exactly -----------------------------------------------------------------
_json_leaf = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
              | st.text(max_size=20))
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
_json_objects = st.dictionaries(st.text(max_size=10), _json, max_size=5)
_values = st.one_of(
    st.text(),
    _json_objects.map(lambda d: json.dumps(d, sort_keys=True)),  # canonical: put_json's form
    _json_objects.map(json.dumps),
    _json_objects.map(lambda d: json.dumps(d, separators=(",", ":"), ensure_ascii=False)),
    st.text().map(lambda s: json.dumps({"value": s})),
    st.dictionaries(st.sampled_from(["value", "bot_token", "app_token"]), st.text(max_size=8),
                    min_size=1).map(lambda d: json.dumps(d, sort_keys=True)),
)
_EXAMPLES = ['{"value": "x"}', '{"a": 1.0}', '{"a":"b"}', '{"b": "1", "a": "2"}', "{}",
             '{"a": "\\ud800"}', '{"a": 9007199254740993}', '{"a": "1", "a": "2"}',
             '{"n": -0}', '{"value": 5}', '{"bot_token": "xoxb-1", "value": "v"}', "{", ""]


@given(value=_values)
@settings(max_examples=400, deadline=None)
def test_encoding_inverts_exactly(value: str) -> None:
    """Pure check of the rule (no Vault): decode(encode(v)) == v for every string."""
    assert _decode_value(_encode_value(value, "value"), "value") == value


@given(value=_values)
@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_value_round_trips_through_vault(vb: VaultBackend, prefix: str,
                                               value: str) -> None:
    p = prefix + uuid.uuid4().hex[:10]
    info = vb.put(p, value, ctx=ctx())
    assert vb.get(p) == (value, info.version)
    assert vb.get(p, version=info.version) == (value, info.version)


@pytest.mark.parametrize("value", _EXAMPLES)
def test_json_looking_strings_round_trip(vb: VaultBackend, prefix: str, value: str,
                                         bao: BaoServer) -> None:  # noqa: F811
    p = prefix + "edge"
    vb.put(p, value, ctx=ctx())
    assert vb.get(p)[0] == value
    stored = bao.cli_json("kv", "get", "-format=json", f"secret/{p}")["data"]["data"]
    if value in ('{"value": "x"}', '{"a": "\\ud800"}', "{}", '{"a": 1.0}', '{"a":"b"}'):
        assert stored == {"value": value}  # not canonical or not portable: kept verbatim


# -- interop with the bao CLI --------------------------------------------------------------------
@pytest.fixture
def manager(vb: VaultBackend, bao: BaoServer) -> Iterator[SecretManager]:  # noqa: F811
    mgr = SecretManager(vb, app="agentfoundry", env="dev")
    yield mgr
    for meta in vb.list("agentfoundry/", include_deleted=True):
        vb.purge(meta.path, ctx=ctx())


def test_keysafe_writes_what_bao_kv_get_reads(manager: SecretManager,
                                              bao: BaoServer) -> None:  # noqa: F811
    info = manager.put("openai_api_key", OPENAI_KEY, "acme-corp", domain="card-services",
                       description="GPT models", tags={"team": "payments"})
    assert manager.path("openai_api_key", "acme-corp", domain="card-services") == OPENAI_PATH
    got = bao.cli_json("kv", "get", "-format=json", f"secret/{OPENAI_PATH}")["data"]
    assert got["data"] == {"value": OPENAI_KEY}
    assert got["metadata"]["version"] == info.version
    assert bao.cli("kv", "get", "-field=value", f"secret/{OPENAI_PATH}").stdout == OPENAI_KEY
    custom = bao.cli_json("kv", "metadata", "get", "-format=json",
                          f"secret/{OPENAI_PATH}")["data"]["custom_metadata"]
    assert custom["keysafe_description"] == "GPT models"
    assert json.loads(custom["keysafe_tags"]) == {"team": "payments"}
    assert custom["keysafe_created_by"] == manager.actor


def test_json_credentials_are_the_kv_map(manager: SecretManager,
                                         bao: BaoServer) -> None:  # noqa: F811
    creds = {"bot_token": "xoxb-123-abc", "signing_secret": "s1gn", "app_token": "xapp-9"}
    manager.put_json("slack", creds, "acme-corp", domain="card-services")
    path = "secret/agentfoundry/dev/acme-corp/card-services/slack"
    assert bao.cli("kv", "get", "-field=bot_token", path).stdout == "xoxb-123-abc"
    assert bao.cli_json("kv", "get", "-format=json", path)["data"]["data"] == creds
    assert manager.get_json("slack", "acme-corp", domain="card-services") == creds


def test_bao_kv_put_is_read_by_keysafe(manager: SecretManager,
                                       bao: BaoServer) -> None:  # noqa: F811
    base = "secret/agentfoundry/dev/acme-corp/card-services"
    bao.cli("kv", "put", f"{base}/stripe_secret_key", "value=sk_live_0123456789abcdefXYZ")
    bao.cli("kv", "put", f"{base}/stripe_secret_key", "value=sk_live_ROTATEDabcdef012345")
    bao.cli("kv", "put", f"{base}/slack", "bot_token=xoxb-1", "app_token=xapp-2")
    assert manager.get("stripe_secret_key", "acme-corp",
                       domain="card-services") == "sk_live_ROTATEDabcdef012345"
    assert manager.get("stripe_secret_key", "acme-corp", domain="card-services",
                       version=1) == "sk_live_0123456789abcdefXYZ"
    assert manager.get_json("slack", "acme-corp", domain="card-services") == {
        "app_token": "xapp-2", "bot_token": "xoxb-1"}
    listed = [m.path for m in manager.list("acme-corp")]
    assert listed == [f"{OPENAI_PATH.rsplit('/', 1)[0]}/slack",
                      f"{OPENAI_PATH.rsplit('/', 1)[0]}/stripe_secret_key"]
    meta = manager.describe("stripe_secret_key", "acme-corp", domain="card-services")
    assert (meta.current_version, meta.versions, meta.created_by) == (2, 2, None)


def test_soft_delete_and_restore_are_visible_to_bao(manager: SecretManager,
                                                    bao: BaoServer) -> None:  # noqa: F811
    manager.put("openai_api_key", OPENAI_KEY, "acme-corp", domain="card-services")
    manager.delete("openai_api_key", "acme-corp", domain="card-services")
    assert bao.cli_json("kv", "get", "-format=json",
                        f"secret/{OPENAI_PATH}")["data"]["data"] is None
    assert bao.cli("kv", "get", "-field=value", f"secret/{OPENAI_PATH}",
                   check=False).returncode != 0
    meta = bao.cli_json("kv", "metadata", "get", "-format=json", f"secret/{OPENAI_PATH}")
    assert meta["data"]["versions"]["1"]["deletion_time"]
    assert meta["data"]["custom_metadata"]["keysafe_deleted_version"] == "1"
    manager.restore("openai_api_key", "acme-corp", domain="card-services")
    assert bao.cli("kv", "get", "-field=value", f"secret/{OPENAI_PATH}").stdout == OPENAI_KEY


def test_bao_kv_delete_counts_as_soft_delete(vb: VaultBackend, prefix: str,
                                             bao: BaoServer) -> None:  # noqa: F811
    p = prefix + "foreign-delete"
    vb.put(p, "one", ctx=ctx())
    vb.put(p, "two", ctx=ctx())
    bao.cli("kv", "delete", f"secret/{p}")
    with pytest.raises(NotFound):
        vb.get(p, version=1)
    assert vb.describe(p, include_deleted=True).deleted
    vb.restore(p, ctx=ctx())
    assert vb.get(p) == ("two", 2)


def test_leading_slash_template(vb: VaultBackend, bao: BaoServer) -> None:  # noqa: F811
    mgr = SecretManager(vb, app="ragstar", env="local",
                        naming="/{app}/{env}/org-{org}/{domain}/{name}")
    try:
        mgr.put("openai-api-key", OPENAI_KEY, "123", domain="llm", check_format=False)
        assert bao.cli("kv", "get", "-field=value",
                       "secret/ragstar/local/org-123/llm/openai-api-key").stdout == OPENAI_KEY
        assert [m.path for m in mgr.list("123")] == ["/ragstar/local/org-123/llm/openai-api-key"]
        mgr.delete("openai-api-key", "123", domain="llm")
        later = vb.deleted_before(vb.describe("/ragstar/local/org-123/llm/openai-api-key",
                                              include_deleted=True).deleted_at
                                  + timedelta(seconds=1))
        assert "/ragstar/local/org-123/llm/openai-api-key" in later
    finally:
        vb.purge("/ragstar/local/org-123/llm/openai-api-key", ctx=ctx())


def test_other_mount_value_field_and_namespace(bao: BaoServer) -> None:  # noqa: F811
    bao.cli("secrets", "enable", "-path=kv-team", "-version=2", "kv")
    bao.cli("namespace", "create", "team-a")
    bao.cli("secrets", "enable", "-ns=team-a", "-path=secret", "-version=2", "kv")
    b = VaultBackend.from_settings(Settings(backend_options={
        "url": bao.url, "token": bao.token, "mount": "kv-team", "value_field": "secret"}))
    b.put("app/key", "v1", ctx=ctx())
    assert bao.cli("kv", "get", "-mount=kv-team", "-field=secret", "app/key").stdout == "v1"
    assert b.get("app/key") == ("v1", 1)
    ns = VaultBackend.from_settings(Settings(backend_options={
        "url": bao.url, "token": bao.token, "namespace": "team-a"}))
    ns.put("app/key", "in-namespace", ctx=ctx())
    assert bao.cli("kv", "get", "-ns=team-a", "-field=value",
                   "secret/app/key").stdout == "in-namespace"
    with pytest.raises(NotFound):
        root_backend(bao).get("app/key")


def test_profile_in_keysafe_toml_selects_vault(bao: BaoServer,  # noqa: F811
                                               monkeypatch: pytest.MonkeyPatch,
                                               tmp_home: Path) -> None:
    Path("keysafe.toml").write_text(f"""
[keysafe]
app = "agentfoundry"

[keysafe.profiles.production]
backend = "vault"
url = "{bao.url}"
mount = "secret"
""")
    monkeypatch.setenv("ENVIRONMENT", "prod")
    monkeypatch.setenv("VAULT_TOKEN", bao.token)
    with SecretManager.from_env() as mgr:
        assert mgr.backend.name == "vault"
        mgr.put("openai_api_key", OPENAI_KEY, "acme-corp", domain="card-services")
        path = "secret/agentfoundry/prod/acme-corp/card-services/openai_api_key"
        assert bao.cli("kv", "get", "-field=value", path).stdout == OPENAI_KEY
        assert mgr.get("openai_api_key", "acme-corp", domain="card-services") == OPENAI_KEY
        mgr.delete("openai_api_key", "acme-corp", domain="card-services", force=True)


def test_vault_environment_variables(bao: BaoServer,  # noqa: F811
                                     monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    monkeypatch.setenv("VAULT_ADDR", bao.url)
    monkeypatch.setenv("VAULT_TOKEN", bao.token)
    monkeypatch.delenv("VAULT_NAMESPACE", raising=False)
    b = VaultBackend.from_settings(Settings())
    assert b.url == bao.url
    b.put(prefix + "env", "from-env", ctx=ctx())
    assert b.get(prefix + "env") == ("from-env", 1)
    monkeypatch.setenv("VAULT_NAMESPACE", "team-x")
    assert VaultBackend.from_settings(Settings()).namespace == "team-x"


def test_kv_version_1_mount_and_missing_token_are_config_errors(
        bao: BaoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # noqa: F811
    bao.cli("secrets", "enable", "-path=kv-one", "-version=1", "kv")
    with pytest.raises(ConfigError, match="KV version 1"):
        root_backend(bao, mount="kv-one").get("app/key")
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.vault-token either
    with pytest.raises(ConfigError, match="VAULT_TOKEN"):
        VaultBackend(bao.url).get("app/key")


def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown option 'moutn'"):
        VaultBackend.from_settings(Settings(backend_options={"moutn": "kv"}))
    with pytest.raises(ConfigError, match="role_id and secret_id"):
        VaultBackend(auth_method="approle", role_id="r")
    with pytest.raises(ConfigError, match="auth_method"):
        VaultBackend(auth_method="ldap")


# -- AppRole, against the real server ------------------------------------------------------------
POLICY = """
path "secret/data/agentfoundry/*" { capabilities = ["create", "read", "update", "delete"] }
path "secret/metadata/agentfoundry/*" {
  capabilities = ["create", "read", "update", "patch", "delete", "list"]
}
path "secret/delete/agentfoundry/*" { capabilities = ["update"] }
path "secret/undelete/agentfoundry/*" { capabilities = ["update"] }
path "secret/destroy/agentfoundry/*" { capabilities = ["update"] }
"""


@pytest.fixture(scope="module")
def approle(bao: BaoServer) -> dict[str, tuple[str, str]]:  # noqa: F811
    """Roles 'keysafe' (1 h tokens) and 'short' (1 s tokens), policy on agentfoundry/*."""
    policy = bao.workdir / "agentfoundry.hcl"
    policy.write_text(POLICY)
    bao.cli("auth", "enable", "approle")
    bao.cli("policy", "write", "agentfoundry", str(policy))
    roles = {}
    for role, ttl in (("keysafe", "1h"), ("short", "1s")):
        bao.cli("write", f"auth/approle/role/{role}", "token_policies=agentfoundry",
                f"token_ttl={ttl}", f"token_max_ttl={ttl}")
        role_id = bao.cli("read", "-field=role_id", f"auth/approle/role/{role}/role-id").stdout
        secret_id = bao.cli("write", "-f", "-field=secret_id",
                            f"auth/approle/role/{role}/secret-id").stdout
        roles[role] = (role_id.strip(), secret_id.strip())
    return roles


def test_approle_login_reads_and_writes_under_its_policy(
        bao: BaoServer, approle: dict[str, tuple[str, str]]) -> None:  # noqa: F811
    role_id, secret_id = approle["keysafe"]
    b = VaultBackend.from_settings(Settings(backend_options={
        "url": bao.url, "role_id": role_id, "secret_id": secret_id}))
    assert b.auth_method == "approle"
    p = "agentfoundry/dev/acme-corp/shared/approle_key"
    try:
        b.put(p, "via-approle", ctx=ctx(), meta=MetadataUpdate(description="d"))
        assert b.get(p) == ("via-approle", 1)
        assert b.describe(p).description == "d"
        assert bao.cli("kv", "get", "-field=value", f"secret/{p}").stdout == "via-approle"
        with pytest.raises(PermissionDenied) as exc_info:
            b.get("other-app/dev/acme-corp/shared/x")
        assert "permission denied" in str(exc_info.value)
        assert secret_id not in repr(b) + str(exc_info.value)
    finally:
        root_backend(bao).purge(p, ctx=ctx())


def test_approle_bad_secret_id_is_permission_denied(
        bao: BaoServer, approle: dict[str, tuple[str, str]]) -> None:  # noqa: F811
    role_id, _ = approle["keysafe"]
    b = VaultBackend(bao.url, role_id=role_id, secret_id="not-the-secret-id", timeout=5)
    with pytest.raises(PermissionDenied, match="approle login"):
        b.get("agentfoundry/dev/acme-corp/shared/x")


def test_approle_token_expiry_logs_in_again(
        bao: BaoServer, approle: dict[str, tuple[str, str]]) -> None:  # noqa: F811
    role_id, secret_id = approle["short"]
    b = VaultBackend(bao.url, role_id=role_id, secret_id=secret_id, timeout=5)
    p = "agentfoundry/dev/acme-corp/shared/short_lived"
    try:
        b.put(p, "v", ctx=ctx())
        first = b._client().token
        time.sleep(1.3)  # the 1 s token has expired: Vault answers 403
        assert b.get(p) == ("v", 1)
        assert b._client().token != first
    finally:
        root_backend(bao).purge(p, ctx=ctx())


# -- Kubernetes auth, against a stand-in -----------------------------------------------------------
class _StandIn:
    """NOT Vault: a loopback HTTP stand-in speaking just enough of Vault's API
    (auth/<mount>/login and one KV v2 read) to show what the backend sends."""

    def __init__(self) -> None:
        self.logins: list[tuple[str, dict[str, Any]]] = []
        self.token = ""
        self.expired = False
        state = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path.startswith("/v1/auth/") and self.path.endswith("/login"):
                    state.logins.append((self.path, body))
                    state.token = f"s.stand-in-{len(state.logins)}"
                    state.expired = False
                    self._send(200, {"auth": {"client_token": state.token,
                                              "lease_duration": 3600, "renewable": True}})
                else:
                    self._send(404, {"errors": []})

            def do_GET(self) -> None:
                if self.headers.get("X-Vault-Token") != state.token or state.expired:
                    self._send(403, {"errors": ["permission denied"]})
                    return
                self._send(200, {"data": {"data": {"value": "from-stand-in"},
                                          "metadata": {"version": 3, "deletion_time": "",
                                                       "destroyed": False}}})

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture
def stand_in() -> Iterator[_StandIn]:
    s = _StandIn()
    s.thread.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()


def test_kubernetes_login_request(stand_in: _StandIn, tmp_path: Path) -> None:
    """Against the stand-in (no cluster can run here): the backend posts the role and
    the service-account JWT read from the file to auth/<mount>/login, uses the token it
    gets, and logs in again (re-reading the rotated JWT) once that token is refused."""
    jwt = tmp_path / "token"
    jwt.write_text("eyJhbGciOi.first-jwt.sig\n")
    b = VaultBackend.from_settings(Settings(backend_options={
        "url": stand_in.url, "auth_method": "kubernetes", "k8s_role": "keysafe-reader",
        "k8s_jwt_path": str(jwt), "retries": 0}))
    assert b.get("agentfoundry/dev/acme-corp/shared/k") == ("from-stand-in", 3)
    assert stand_in.logins == [("/v1/auth/kubernetes/login",
                                {"role": "keysafe-reader", "jwt": "eyJhbGciOi.first-jwt.sig"})]
    jwt.write_text("eyJhbGciOi.rotated-jwt.sig")
    stand_in.expired = True
    assert b.get("agentfoundry/dev/acme-corp/shared/k") == ("from-stand-in", 3)
    assert stand_in.logins[1] == ("/v1/auth/kubernetes/login",
                                  {"role": "keysafe-reader", "jwt": "eyJhbGciOi.rotated-jwt.sig"})
    assert len(stand_in.logins) == 2


def test_kubernetes_custom_mount_and_missing_jwt(stand_in: _StandIn, tmp_path: Path) -> None:
    """Stand-in again: a custom auth mount; a missing JWT file is a ConfigError."""
    jwt = tmp_path / "token"
    jwt.write_text("jwt")
    b = VaultBackend(stand_in.url, k8s_role="r", k8s_jwt_path=jwt, auth_mount="k8s-prod")
    b.get("a/b")
    assert stand_in.logins[0][0] == "/v1/auth/k8s-prod/login"
    missing = VaultBackend(stand_in.url, k8s_role="r", k8s_jwt_path=tmp_path / "nope")
    with pytest.raises(ConfigError, match="service-account token"):
        missing.get("a/b")


def test_a_token_that_never_worked_is_not_retried(stand_in: _StandIn, tmp_path: Path) -> None:
    """Stand-in: a 403 on a fresh token is a policy denial, not expiry: no login loop."""
    jwt = tmp_path / "token"
    jwt.write_text("jwt")
    b = VaultBackend(stand_in.url, k8s_role="r", k8s_jwt_path=jwt, retries=0)
    b._client()
    stand_in.expired = True
    with pytest.raises(PermissionDenied):
        b.get("a/b")
    assert len(stand_in.logins) == 1


# -- retries never duplicate a write -------------------------------------------------------------
def inject(monkeypatch: pytest.MonkeyPatch, backend: VaultBackend, method: str, *,
           after_send: bool, times: int = 1, where: str = "/data/",
           exc: type[Exception] = requests.exceptions.ReadTimeout) -> list[str]:
    """Make the next ``times`` requests with ``method`` to a URL containing ``where``
    fail with ``exc``, after (``after_send``) or before reaching Vault. Returns the log
    of injected failures."""
    session = backend._client().adapter.session
    real: Callable[..., Any] = session.request
    log: list[str] = []

    def request(*args: Any, **kw: Any) -> Any:
        if (kw.get("method", "").upper() == method and where in kw.get("url", "")
                and len(log) < times):
            log.append(kw["url"])
            if after_send:
                real(*args, **kw)
            raise exc("injected")
        return real(*args, **kw)

    monkeypatch.setattr(session, "request", request)
    return log


def test_cas_write_that_landed_is_not_repeated(vb: VaultBackend, prefix: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    p = prefix + "landed"
    vb.put(p, "one", ctx=ctx())
    log = inject(monkeypatch, vb, "POST", after_send=True)
    assert vb.put(p, "two", ctx=ctx(), expected_version=1).version == 2
    assert len(log) == 1
    assert [i.version for i in vb.versions(p)] == [1, 2]
    assert vb.get(p) == ("two", 2)


def test_cas_write_that_did_not_land_is_retried(vb: VaultBackend, prefix: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    p = prefix + "retried"
    vb.put(p, "one", ctx=ctx())
    log = inject(monkeypatch, vb, "POST", after_send=False,
                 exc=requests.exceptions.ConnectionError)
    assert vb.put(p, "two", ctx=ctx(), expected_version=1).version == 2
    assert len(log) == 1
    assert [i.version for i in vb.versions(p)] == [1, 2]


def test_plain_write_is_never_retried(vb: VaultBackend, prefix: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    p = prefix + "plain"
    vb.put(p, "one", ctx=ctx())
    log = inject(monkeypatch, vb, "POST", after_send=True, times=5)
    with pytest.raises(BackendUnavailable) as exc_info:
        vb.put(p, "two", ctx=ctx())
    assert exc_info.value.retryable
    assert len(log) == 1  # tried once: a retry could have written "two" twice
    assert vb.describe(p).current_version == 2


def test_metadata_failure_after_the_value_landed_says_so(
        vb: VaultBackend, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    p = prefix + "half"
    vb.put(p, "one", ctx=ctx(), meta=MetadataUpdate(description="first"))
    inject(monkeypatch, vb, "PATCH", where="/metadata/", after_send=False, times=10,
           exc=requests.exceptions.ConnectionError)
    with pytest.raises(BackendUnavailable, match=r"version 2 of .* was stored"):
        vb.put(p, "two", ctx=ctx(), meta=MetadataUpdate(description="second"))
    monkeypatch.undo()
    assert vb.get(p) == ("two", 2)  # the commit point is the value write
    assert vb.describe(p).description == "first"


def test_reads_are_retried(vb: VaultBackend, prefix: str,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    p = prefix + "read"
    vb.put(p, "v", ctx=ctx())
    log = inject(monkeypatch, vb, "GET", after_send=False, times=2,
                 exc=requests.exceptions.ConnectionError)
    assert vb.get(p) == ("v", 1)
    assert len(log) == 2


def test_hung_server_times_out_as_unavailable() -> None:
    import socket

    with socket.socket() as s:  # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        b = VaultBackend(url, token="t", timeout=0.3, retries=1, backoff=0.01)
        start = time.monotonic()
        with pytest.raises(BackendUnavailable, match="timed out"):
            b.get("a/b")
        with pytest.raises(BackendUnavailable):
            b.put("a/b", "never-acknowledged", ctx=ctx(), expected_version=0)
        assert time.monotonic() - start < 5


# -- an outage mid-run -------------------------------------------------------------------------
def test_outage_serves_stale_reads_and_fails_the_rest_quickly() -> None:
    with running_bao() as server:
        backend = root_backend(server, timeout=1, retries=1, backoff=0.01)
        mgr = SecretManager(backend, app="agentfoundry", env="dev",
                            cache=SecretCache(ttl=0.2, stale_if_error=60))
        org, dom = "acme-corp", "card-services"
        slack = {"bot_token": "xoxb-1", "signing_secret": "s", "app_token": "xapp-1"}
        mgr.put("openai_api_key", OPENAI_KEY, org, domain=dom)
        mgr.put_json("slack", slack, org, domain=dom)
        assert mgr.get("openai_api_key", org, domain=dom) == OPENAI_KEY
        assert mgr.get_json("slack", org, domain=dom) == slack

        server.cli("operator", "seal")  # sealed first: Vault answers 503
        with pytest.raises(BackendUnavailable, match="sealed"):
            backend.ping()
        time.sleep(0.25)  # past the cache TTL; only the stale-if-error window is left
        assert mgr.get("openai_api_key", org, domain=dom) == OPENAI_KEY
        server.stop()  # then gone: connections are refused

        start = time.monotonic()
        assert mgr.get("openai_api_key", org, domain=dom) == OPENAI_KEY
        new_key = "sk-proj-" + "Z" * 24
        failing: dict[str, Callable[[], object]] = {
            "get (never cached)": lambda: mgr.get("anthropic_api_key", org, domain=dom),
            "describe": lambda: mgr.describe("openai_api_key", org, domain=dom),
            "list": lambda: mgr.list(org),
            "put": lambda: mgr.put("openai_api_key", new_key, org, domain=dom),
            "put cas": lambda: mgr.put("openai_api_key", new_key, org, domain=dom,
                                       expected_version=1),
            "delete": lambda: mgr.delete("openai_api_key", org, domain=dom),
            "ping": backend.ping,
        }
        for what, call in failing.items():
            t0 = time.monotonic()
            with pytest.raises(BackendUnavailable) as exc_info:
                call()
            assert exc_info.value.retryable, what
            assert new_key not in str(exc_info.value), what
            assert time.monotonic() - t0 < 2, what
        # Reads within the stale-if-error window are still served, including the secret
        # whose writes failed: a failed write acknowledged nothing, so the last value the
        # store confirmed is still the one to serve.
        assert mgr.get_json("slack", org, domain=dom) == slack
        assert mgr.get("openai_api_key", org, domain=dom) != new_key
        assert time.monotonic() - start < 10
        outcomes = [(e.action, e.outcome) for e in mgr.audit_query()
                    if e.action in ("write", "delete")]
        assert outcomes.count(("write", "ok")) == 2
        assert outcomes.count(("write", "backend_unavailable")) == 2
        assert ("delete", "backend_unavailable") in outcomes
        backend.close()


# -- limits, names and errors ---------------------------------------------------------------
def test_value_size_limit_names_the_store(bao: BaoServer, prefix: str) -> None:  # noqa: F811
    b = root_backend(bao, max_value_bytes=1000)
    with pytest.raises(ValueTooLarge) as exc_info:
        b.put(prefix + "big", "x" * 2000, ctx=ctx())
    assert "Vault" in str(exc_info.value)
    assert "1000" in str(exc_info.value)
    assert "xxxx" not in str(exc_info.value)
    with pytest.raises(NotFound):
        b.describe(prefix + "big", include_deleted=True)


def test_custom_metadata_limit_is_checked_first(vb: VaultBackend, prefix: str) -> None:
    with pytest.raises(InvalidValue, match="512 bytes"):
        vb.put(prefix + "desc", "v", ctx=ctx(), meta=MetadataUpdate(description="d" * 600))
    with pytest.raises(NotFound):
        vb.describe(prefix + "desc", include_deleted=True)


@pytest.mark.parametrize("path", ["", "/", "a//b", "a/./b", "a/../b", "a/b/", "a/\x00b"])
def test_paths_vault_cannot_hold_are_invalid_names(vb: VaultBackend, path: str) -> None:
    with pytest.raises(InvalidName, match="Vault"):
        vb.put(path, "v", ctx=ctx())


def test_ping(vb: VaultBackend) -> None:
    vb.ping()
    with pytest.raises(BackendUnavailable):
        VaultBackend("http://127.0.0.1:9", token="t", retries=0, timeout=1).ping()


def test_token_never_in_repr(bao: BaoServer) -> None:  # noqa: F811
    b = VaultBackend(bao.url, token="hvs.very-secret-token")
    assert "very-secret" not in repr(b)
    assert "very-secret" not in str(b)


# -- the SDK is optional --------------------------------------------------------------------
def test_missing_hvac_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_home: Path) -> None:
    monkeypatch.setitem(sys.modules, "hvac", None)
    with pytest.raises(ConfigError, match=r"pip install 'keysafe\[vault\]'"):
        VaultBackend("http://127.0.0.1:8200", token="t")
    from keysafe.backends.registry import open_store
    from keysafe.config import load_settings

    with pytest.raises(ConfigError, match=r"pip install 'keysafe\[vault\]'"):
        open_store(load_settings(backend="vault"))


def test_importing_the_module_does_not_import_hvac() -> None:
    code = ("import sys, keysafe.backends.vault, keysafe.backends.registry; "
            "assert 'hvac' not in sys.modules and 'requests' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- the External Secrets Operator reading the store (export --provider store) ---------------
def test_external_secrets_operator_reads_what_keysafe_wrote(
        vb: VaultBackend, prefix: str, bao: BaoServer) -> None:  # noqa: F811
    """The remoteRef keysafe renders, read the way the operator's Vault provider reads
    it (KV v2 at the store's path, ``key`` under it, ``property`` of the data; no
    property: the whole data as JSON), gives back what keysafe stored."""
    plain, creds = f"{prefix}eso/plain", f"{prefix}eso/creds"
    pretty = f"{prefix}eso/pretty"
    vb.put(plain, "eso-vault-value", ctx=ctx())
    vb.put(creds, json.dumps({"bot_token": "xoxb-1", "signing_secret": "s"},
                             sort_keys=True), ctx=ctx())  # put_json's form: stored as the map
    pasted = json.dumps({"type": "service_account", "project_id": "p"}, indent=2)
    vb.put(pretty, pasted, ctx=ctx())  # JSON pasted as text: stored as {value: text}
    provider = vb.eso_provider()["vault"]
    assert (provider["server"], provider["path"], provider["version"]) == (vb.url, "secret",
                                                                           "v2")
    assert provider["auth"]["kubernetes"]["serviceAccountRef"] == {
        "name": "external-secrets", "namespace": "external-secrets"}
    import hvac

    client = hvac.Client(url=bao.url, token=bao.token)  # as the operator's own client
    ref = vb.eso_remote_ref(plain)
    assert ref == {"key": plain, "property": "value"}
    data = client.secrets.kv.v2.read_secret_version(
        path=ref["key"], mount_point=provider["path"], raise_on_deleted_version=True
    )["data"]["data"]
    assert data[ref["property"]] == "eso-vault-value"
    ref = vb.eso_remote_ref(creds)
    assert ref == {"key": creds}  # no property: the operator hands over the whole map
    data = client.secrets.kv.v2.read_secret_version(
        path=ref["key"], mount_point=provider["path"], raise_on_deleted_version=True
    )["data"]["data"]
    assert data == {"bot_token": "xoxb-1", "signing_secret": "s"}
    ref = vb.eso_remote_ref(pretty)
    assert ref == {"key": pretty, "property": "value"}
    data = client.secrets.kv.v2.read_secret_version(
        path=ref["key"], mount_point=provider["path"], raise_on_deleted_version=True
    )["data"]["data"]
    assert data[ref["property"]] == pasted
    assert provider["auth"]["kubernetes"]["role"] == "external-secrets"  # never keysafe's
    # A field of JSON credentials (a mapping file table): the map's own key, which the
    # operator reads exactly; text that only looks like JSON credentials is refused.
    from keysafe.kube import eso_field_ref

    ref = eso_field_ref("vault", vb.eso_remote_ref(creds), "creds", "bot_token")
    data = client.secrets.kv.v2.read_secret_version(
        path=ref["key"], mount_point=provider["path"], raise_on_deleted_version=True
    )["data"]["data"]
    assert data[ref["property"]] == "xoxb-1"
    with pytest.raises(InvalidValue, match="cannot pick a field out"):
        eso_field_ref("vault", vb.eso_remote_ref(pretty), "pretty", "project_id")
