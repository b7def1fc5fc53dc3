"""Rendered manifests: Secrets load into the official kubernetes client's models and
round-trip values exactly; SecretStore/ExternalSecret carry only the External Secrets
Operator's documented fields."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keysafe.errors import InvalidName, InvalidValue, ValueTooLarge
from keysafe.kube import (
    CONTENT_HASH,
    ESO_API_VERSION,
    FORCE_SYNC,
    content_hash,
    env_var_name,
    render_external_secret,
    render_secret,
    render_store_external_secret,
)

kubernetes = pytest.importorskip("kubernetes")

HOSTILE = {
    "NEWLINES": "line one\nline two\n",
    "CRLF": "a\r\nb\rc",
    "QUOTES": "it's \"quoted\" `back` \\ slash",
    "DOLLAR": "$HOME ${PATH} $(rm -rf /) %s {{ .auth.token }}",
    "UNICODE": "pässwörd \u2013 秘密 \u2013 🔑 \u2013 \u200b zero-width",
    "YAML_BOOL": "yes",
    "YAML_NULL": "~",
    "YAML_NUM": "0x1F",
    "YAML_DOC": "---\n...\n# not a comment\n- not: a list",
    "SPACES": "  leading and trailing  ",
    "EMPTY": "",
    "CONTROL": "tab\there\x01\x1b[31mred\x7f",
    "LONG": "x" * 10_000,
    "TAB_ONLY": "\t",
    "COLON": "key: value",
}


def to_model(manifest_text: str) -> Any:
    """The supported way to turn a manifest into a client model: the ApiClient's
    deserializer, as it reads API responses (JSON text, a model class name)."""
    api = kubernetes.client.ApiClient()
    data = json.dumps(yaml.safe_load(manifest_text))
    try:
        return api.deserialize(data, "V1Secret", "application/json")
    except TypeError:  # clients before 35: deserialize(response, type) reads .data
        class Response:
            pass

        resp = Response()
        resp.data = data  # type: ignore[attr-defined]
        return api.deserialize(resp, "V1Secret")


def test_secret_loads_into_client_model_and_round_trips_hostile_values():
    text = render_secret(HOSTILE, name="app-secrets", namespace="prod",
                         labels={"team": "payments"})
    secret = to_model(text)
    assert type(secret).__name__ == "V1Secret"
    assert secret.api_version == "v1"
    assert secret.kind == "Secret"
    assert secret.type == "Opaque"
    assert secret.metadata.name == "app-secrets"
    assert secret.metadata.namespace == "prod"
    assert secret.metadata.labels == {"app.kubernetes.io/managed-by": "keysafe",
                                      "team": "payments"}
    assert secret.metadata.annotations == {CONTENT_HASH: content_hash(HOSTILE)}
    assert secret.string_data is None
    decoded = {k: base64.b64decode(v, validate=True).decode() for k, v in secret.data.items()}
    assert decoded == HOSTILE
    # Nothing was dropped on the way into the model: serialised back, it is the manifest.
    api = kubernetes.client.ApiClient()
    assert api.sanitize_for_serialization(secret) == yaml.safe_load(text)


def test_secret_values_are_not_in_the_yaml_text():
    text = render_secret({"TOKEN": "canary-plain-text-value"}, name="s", namespace=None)
    assert "canary-plain-text-value" not in text
    assert "namespace" not in yaml.safe_load(text)["metadata"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
                       st.text(st.characters(exclude_categories=("Cs",)), max_size=200),
                       max_size=5))
def test_secret_round_trip_property(values):
    secret = to_model(render_secret(values, name="s", namespace="ns"))
    got = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
    assert got == values


def test_content_hash_is_order_free_and_changes_with_content():
    a = content_hash({"A": "1", "B": "2"})
    assert a == content_hash({"B": "2", "A": "1"})
    assert a != content_hash({"A": "1", "B": "3"})
    assert a != content_hash({"A": "1", "C": "2"})
    assert re.fullmatch(r"[0-9a-f]{64}", a)


@pytest.mark.parametrize(("values", "kw", "error", "words"), [
    ({"A": "v"}, {"name": "Bad_Name"}, InvalidName, "not a valid Kubernetes name"),
    ({"A": "v"}, {"name": "ok", "namespace": "a.b"}, InvalidName, "namespace"),
    ({"BAD KEY": "v"}, {"name": "ok"}, InvalidName, "cannot be a Secret key"),
    ({"A": "x" * (1024 * 1024)}, {"name": "ok"}, ValueTooLarge, "at most"),
    ({"A": "v"}, {"name": "ok", "labels": {"k": "bad value!"}}, InvalidValue, "label"),
])
def test_secret_bad_input_names_the_problem(values, kw, error, words):
    kw.setdefault("namespace", None)
    with pytest.raises(error) as info:
        render_secret(values, **kw)
    assert words in str(info.value)
    assert "x" * 50 not in str(info.value)


# -- External Secrets Operator ------------------------------------------------------
#
# Field names of each object, copied from the operator's API reference (Go types, JSON
# tags) in github.com/external-secrets/external-secrets:
#   apis/externalsecrets/v1/secretstore_types.go        SecretStore, SecretStoreSpec
#   apis/externalsecrets/v1/secretstore_webhook_types.go WebhookProvider, WebhookResult,
#                                                        WebhookSecret
#   apis/meta/v1/types.go                                SecretKeySelector
#   apis/externalsecrets/v1/externalsecret_types.go      ExternalSecret(Spec), SecretStoreRef,
#                                                        ExternalSecretTarget,
#                                                        ExternalSecretData(RemoteRef)
# (the v1beta1 files beside them have the same fields, minus WebhookProvider.auth),
# and docs/provider/webhook.md for how the provider's templating uses them.
# Each entry: (documented fields, required fields).
OBJECT_META = ({"name", "namespace", "labels", "annotations"}, {"name"})
ESO_FIELDS: dict[str, tuple[set[str], set[str]]] = {
    "SecretStore": ({"apiVersion", "kind", "metadata", "spec"}, {"apiVersion", "kind",
                                                                  "metadata", "spec"}),
    "SecretStoreSpec": ({"controller", "provider", "retrySettings", "refreshInterval",
                         "conditions"}, {"provider"}),
    "WebhookProvider": ({"method", "url", "headers", "auth", "body", "timeout", "result",
                         "secrets", "caBundle", "caProvider"}, {"url", "result"}),
    "WebhookResult": ({"jsonPath"}, set()),
    "WebhookSecret": ({"name", "secretRef"}, {"name", "secretRef"}),
    "SecretKeySelector": ({"name", "namespace", "key"}, set()),
    "ExternalSecret": ({"apiVersion", "kind", "metadata", "spec"}, {"apiVersion", "kind",
                                                                     "metadata", "spec"}),
    "ExternalSecretSpec": ({"secretStoreRef", "target", "refreshPolicy", "refreshInterval",
                            "data", "dataFrom"}, set()),
    "SecretStoreRef": ({"name", "kind"}, set()),
    "ExternalSecretTarget": ({"name", "creationPolicy", "deletionPolicy", "template",
                              "immutable"}, set()),
    "ExternalSecretData": ({"secretKey", "remoteRef", "sourceRef"}, {"secretKey",
                                                                     "remoteRef"}),
    "ExternalSecretDataRemoteRef": ({"key", "metadataPolicy", "property", "version",
                                     "conversionStrategy", "decodingStrategy"}, {"key"}),
}
# SecretStoreProvider: one provider key only (MinProperties=1, MaxProperties=1).


def check(obj: dict[str, Any], kind: str) -> None:
    documented, required = ESO_FIELDS[kind] if kind != "ObjectMeta" else OBJECT_META
    assert set(obj) <= documented, (kind, set(obj) - documented)
    assert required <= set(obj), (kind, required - set(obj))


def render(**kw: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
    args: dict[str, Any] = {
        "names": ["openai_api_key", "app-token", "stripe.key"], "name": "app-secrets",
        "namespace": "prod", "server_url": "https://keysafe.example.com/",
        "org": "acme-corp", "domain": None, "token_secret": "keysafe-token",
        "refresh_interval": "15m"}
    args.update(kw)
    text = render_external_secret(args.pop("names"), **args)
    store, external = list(yaml.safe_load_all(text))
    return store, external, text


def test_external_secret_carries_exactly_the_documented_fields():
    store, es, _ = render()
    check(store, "SecretStore")
    check(store["metadata"], "ObjectMeta")
    check(store["spec"], "SecretStoreSpec")
    assert list(store["spec"]["provider"]) == ["webhook"]
    hook = store["spec"]["provider"]["webhook"]
    check(hook, "WebhookProvider")
    check(hook["result"], "WebhookResult")
    for s in hook["secrets"]:
        check(s, "WebhookSecret")
        check(s["secretRef"], "SecretKeySelector")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in hook["headers"].items())

    check(es, "ExternalSecret")
    check(es["metadata"], "ObjectMeta")
    check(es["spec"], "ExternalSecretSpec")
    check(es["spec"]["secretStoreRef"], "SecretStoreRef")
    check(es["spec"]["target"], "ExternalSecretTarget")
    for d in es["spec"]["data"]:
        check(d, "ExternalSecretData")
        check(d["remoteRef"], "ExternalSecretDataRemoteRef")
        # ExternalSecretData.secretKey: +kubebuilder:validation:Pattern ^[-._a-zA-Z0-9]+$
        assert re.fullmatch(r"[-._a-zA-Z0-9]+", d["secretKey"])


def test_external_secret_values():
    store, es, text = render()
    assert store["apiVersion"] == es["apiVersion"] == ESO_API_VERSION
    assert (store["kind"], es["kind"]) == ("SecretStore", "ExternalSecret")
    hook = store["spec"]["provider"]["webhook"]
    assert hook["url"] == ("https://keysafe.example.com/api/secrets/acme-corp/"
                           "{{ .remoteRef.key }}/value")
    assert hook["method"] == "GET"
    assert hook["result"] == {"jsonPath": "$.value"}
    assert hook["headers"]["Authorization"] == "Bearer {{ .auth.token }}"
    assert hook["secrets"] == [{"name": "auth", "secretRef": {"name": "keysafe-token"}}]

    assert es["metadata"]["name"] == "app-secrets"
    assert es["metadata"]["namespace"] == store["metadata"]["namespace"] == "prod"
    assert re.fullmatch(r"\d{10,}", es["metadata"]["annotations"][FORCE_SYNC])
    spec = es["spec"]
    assert spec["refreshInterval"] == "15m"
    assert spec["secretStoreRef"] == {"name": store["metadata"]["name"], "kind": "SecretStore"}
    assert spec["target"]["name"] == "app-secrets"
    assert spec["data"] == [
        {"secretKey": "OPENAI_API_KEY", "remoteRef": {"key": "openai_api_key"}},
        {"secretKey": "APP_TOKEN", "remoteRef": {"key": "app-token"}},
        {"secretKey": "STRIPE_KEY", "remoteRef": {"key": "stripe.key"}},
    ]
    # How to provide the token is said; no token is in the text.
    assert "kubectl create secret generic keysafe-token --from-literal=token=" in text


def test_external_secret_domain_and_no_namespace():
    store, es, _ = render(domain="card-services", namespace=None, refresh_interval="1h")
    url = store["spec"]["provider"]["webhook"]["url"]
    assert url.endswith("/value?domain_id=card-services")
    assert "namespace" not in store["metadata"]
    assert "namespace" not in es["metadata"]
    assert es["spec"]["refreshInterval"] == "1h"


def test_external_secret_fields_of_json_credentials():
    """A field of JSON credentials is a remoteRef.property, which the URL passes on as
    ``field=`` (the operator query-escapes it; empty for entries without one)."""
    store, es, _ = render(domain="card-services",
                          fields=[("database", "url", "DATABASE_URL"),
                                  ("api-keys", "jwt.secret", "JWT_SECRET")])
    url = store["spec"]["provider"]["webhook"]["url"]
    assert url.endswith("/value?domain_id=card-services&field={{ .remoteRef.property }}")
    for d in es["spec"]["data"]:
        check(d["remoteRef"], "ExternalSecretDataRemoteRef")
    assert es["spec"]["data"][-2:] == [
        {"secretKey": "DATABASE_URL", "remoteRef": {"key": "database", "property": "url"}},
        {"secretKey": "JWT_SECRET", "remoteRef": {"key": "api-keys",
                                                  "property": "jwt.secret"}}]
    with pytest.raises(InvalidName, match="'openai_api_key' and field 'k' of 'x' both map"):
        render(fields=[("x", "k", "OPENAI_API_KEY")])
    # Fields alone are enough for an ExternalSecret.
    _, es, _ = render(names=[], fields=[("database", "url", "DATABASE_URL")])
    assert [d["secretKey"] for d in es["spec"]["data"]] == ["DATABASE_URL"]


@pytest.mark.parametrize(("kw", "error", "words"), [
    ({"refresh_interval": "hourly"}, InvalidValue, "refresh interval"),
    ({"server_url": "ftp://x"}, InvalidValue, "not an http(s) URL"),
    ({"server_url": "https://x/?a=1"}, InvalidValue, "query"),
    ({"names": []}, InvalidValue, "no secrets"),
    ({"names": ["a-b", "a_b"]}, InvalidName, "both map to"),
    ({"names": ["bad name"]}, InvalidName, "name"),
    ({"org": "a/b"}, InvalidName, "org"),
    ({"token_secret": "Token"}, InvalidName, "token Secret name"),
])
def test_external_secret_bad_input(kw, error, words):
    with pytest.raises(error) as info:
        render(**kw)
    assert words in str(info.value)


def test_env_var_names():
    from keysafe.catalog import Catalog

    cat = Catalog.builtin()
    assert env_var_name("openai_api_key", cat) == "OPENAI_API_KEY"
    assert env_var_name("hf_token", None) == "HF_TOKEN"
    assert env_var_name("my-app.key", cat) == "MY_APP_KEY"
    assert env_var_name("1password", cat) == "_1PASSWORD"


# -- the operator reading the store itself (export --provider store) -----------------
# Provider fields from the same repository's apis/externalsecrets/v1/:
#   secretstore_aws_types.go    AWSProvider (service and region required)
#   secretstore_vault_types.go  VaultProvider (server required), VaultAuth,
#                               VaultKubernetesAuth (mountPath and role required)
#   secretstore_gcpsm_types.go  GCPSMProvider
#   secretstore_azurekv_types.go AzureKVProvider (vaultUrl required)
#   apis/meta/v1/types.go       ServiceAccountSelector
PROVIDER_FIELDS: dict[str, tuple[set[str], set[str]]] = {
    "aws": ({"service", "auth", "role", "region", "additionalRoles", "externalID",
             "sessionTags", "secretsManager", "transitiveTagKeys", "sessionTagsPolicy",
             "customSessionTags", "prefix"}, {"service", "region"}),
    "vault": ({"auth", "server", "path", "version", "namespace", "caBundle", "tls",
               "caProvider", "readYourWrites", "forwardInconsistent", "headers",
               "checkAndSet"}, {"server"}),
    "gcpsm": ({"auth", "projectID", "location", "getLatestEnabledSecret"}, set()),
    "azurekv": ({"authType", "vaultUrl", "tenantId", "environmentType", "authSecretRef",
                 "serviceAccountRef", "identityId", "useAzureSDK", "customCloudConfig"},
                {"vaultUrl"}),
}
VAULT_AUTH = {"namespace", "tokenSecretRef", "appRole", "kubernetes", "ldap", "jwt", "cert",
              "iam", "userPass", "gcp"}
VAULT_K8S = ({"mountPath", "serviceAccountRef", "secretRef", "role"}, {"mountPath", "role"})
SERVICE_ACCOUNT = {"name", "namespace", "audiences"}
PROVIDERS = {
    "aws": {"aws": {"service": "SecretsManager", "region": "us-west-2"}},
    "vault": {"vault": {"server": "https://vault.example.com", "path": "secret",
                        "version": "v2", "auth": {"kubernetes": {
                            "mountPath": "kubernetes", "role": "aragora",
                            "serviceAccountRef": {"name": "external-secrets",
                                                  "namespace": "external-secrets"}}}}},
    "gcpsm": {"gcpsm": {"projectID": "aragora-prod"}},
    "azurekv": {"azurekv": {"vaultUrl": "https://aragora.vault.azure.net",
                            "authType": "WorkloadIdentity",
                            "serviceAccountRef": {"name": "external-secrets",
                                                  "namespace": "external-secrets"}}},
}


@pytest.mark.parametrize("kind", list(PROVIDERS))
def test_store_external_secret_carries_exactly_the_documented_fields(kind: str) -> None:
    """What each backend's eso_provider() returns (tests/integration pin the values
    against the stores themselves) goes into a ClusterSecretStore unchanged, and every
    object carries only the operator's own fields."""
    refs = [("openai_api_key", {"key": "keysafe/production/acme/shared/openai_api_key"}),
            ("db_password", {"key": "keysafe/production/acme/shared/db_password",
                             "property": "value"})]
    text = render_store_external_secret(refs, PROVIDERS[kind], name="app-secrets",
                                        namespace="prod", store="keysafe-store",
                                        refresh_interval="1h")
    store, es = list(yaml.safe_load_all(text))
    assert (store["kind"], store["apiVersion"]) == ("ClusterSecretStore", ESO_API_VERSION)
    check(store, "SecretStore")  # a ClusterSecretStore has the SecretStore's fields
    check(store["metadata"], "ObjectMeta")
    assert "namespace" not in store["metadata"]  # cluster-scoped
    check(store["spec"], "SecretStoreSpec")
    assert list(store["spec"]["provider"]) == [kind]
    provider = store["spec"]["provider"][kind]
    documented, required = PROVIDER_FIELDS[kind]
    assert set(provider) <= documented
    assert required <= set(provider)
    if kind == "vault":
        assert set(provider["auth"]) <= VAULT_AUTH
        k8s = provider["auth"]["kubernetes"]
        assert set(k8s) <= VAULT_K8S[0]
        assert VAULT_K8S[1] <= set(k8s)
    for sa in (provider.get("serviceAccountRef"),
               provider.get("auth", {}).get("kubernetes", {}).get("serviceAccountRef")):
        if sa is not None:
            assert set(sa) <= SERVICE_ACCOUNT
            assert sa["namespace"]  # a ClusterSecretStore must name it
    check(es, "ExternalSecret")
    check(es["spec"], "ExternalSecretSpec")
    assert es["spec"]["secretStoreRef"] == {"name": "keysafe-store",
                                            "kind": "ClusterSecretStore"}
    assert es["metadata"]["namespace"] == "prod"
    for d in es["spec"]["data"]:
        check(d, "ExternalSecretData")
        check(d["remoteRef"], "ExternalSecretDataRemoteRef")
    assert [d["secretKey"] for d in es["spec"]["data"]] == ["OPENAI_API_KEY",
                                                            "DB_PASSWORD"]
    assert es["spec"]["data"][1]["remoteRef"] == refs[1][1]
    # Served to the ExternalSecrets of that namespace only (ClusterSecretStoreCondition:
    # namespaceSelector, namespaces, namespaceRegexes).
    assert store["spec"]["conditions"] == [{"namespaces": ["prod"]}]
    assert "namespace 'prod' only" in text
    open_text = render_store_external_secret(refs, PROVIDERS[kind], name="app-secrets",
                                             namespace=None, store="keysafe-store")
    open_store = next(yaml.safe_load_all(open_text))
    assert "conditions" not in open_store["spec"]
    assert "EVERY namespace" in open_text


def test_store_external_secret_bad_input_is_named() -> None:
    ok = [("x", {"key": "k"})]
    with pytest.raises(InvalidName, match="ClusterSecretStore name"):
        render_store_external_secret(ok, PROVIDERS["aws"], name="a", namespace=None,
                                     store="Not_Valid")
    with pytest.raises(InvalidValue, match="no secrets"):
        render_store_external_secret([], PROVIDERS["aws"], name="a", namespace=None,
                                     store="s")
    with pytest.raises(InvalidValue, match="refresh interval"):
        render_store_external_secret(ok, PROVIDERS["aws"], name="a", namespace=None,
                                     store="s", refresh_interval="soon")


def test_eso_field_ref_per_store():
    """A field of JSON credentials as the operator's own providers read it: Vault by
    the KV map's key (only when Vault holds the map itself), the others by a gjson path
    (dots are tried as a literal key first; gjson's operators are refused)."""
    from keysafe.kube import eso_field_ref

    assert eso_field_ref("vault", {"key": "k/p"}, "db", "pass*word") == {
        "key": "k/p", "property": "pass*word"}
    with pytest.raises(InvalidValue, match=r"Vault holds db as one string under the field "
                                           r"'value'.*keysafe put db --credentials"):
        eso_field_ref("vault", {"key": "k/p", "property": "value"}, "db", "url")
    for store in ("aws-sm", "aws-ssm", "gcp", "azure"):
        assert eso_field_ref(store, {"key": "a/b"}, "db", "jwt.secret") == {
            "key": "a/b", "property": "jwt.secret"}
        for bad in ("a*", "a|b", "#", "@this", "x\\y", "!", ".lead", "trail."):
            with pytest.raises(InvalidValue, match="gjson path"):
                eso_field_ref(store, {"key": "a/b"}, "db", bad)
