"""Kubernetes delivery: Secret manifests, External Secrets Operator manifests, and the
sync that keeps a Secret equal to a scope (``keysafe sync kubernetes``).

Three ways to get a scope's secrets into pods, all keyed by environment-variable names
(``openai_api_key`` becomes ``OPENAI_API_KEY``, as ``keysafe export`` does):

- ``render_secret``: a ``v1/Secret`` manifest holding the values (``export --format
  k8s-secret``);
- ``render_external_secret``: a SecretStore for the operator's webhook provider, pointed
  at a keysafe server's value endpoint with a service token, and an ExternalSecret naming
  the secrets (``export --format external-secret``): no value in the manifest at all;
- ``KubeSync``/``sync_pass``: the official ``kubernetes`` client applies a Secret only
  when its content changed, and rolls out named Deployments, StatefulSets and
  DaemonSets when it did.

Secret manifests use base64 ``data`` rather than ``stringData``: ``data`` holds the exact
bytes (no YAML scalar folding or line-break normalisation to reason about), it is what
the API server returns, so a GitOps diff against the live object is empty, and a key
removed from the scope is removed by ``kubectl apply`` (``stringData`` keys only merge).

The content hash (annotation ``keysafe.dev/content-hash``) is scrypt over the canonical
JSON of the values, with a fixed salt: change detection needs a stable digest, and a
memory-hard one keeps a digest seen in an annotation or a log line from being cheaply
tested against guessed values.

The ``kubernetes`` client and PyYAML are optional (``pip install 'keysafe[k8s]'``) and
imported only when used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from keysafe.durations import parse_interval
from keysafe.errors import (
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidName,
    InvalidValue,
    KeysafeError,
    NotFound,
    PermissionDenied,
    ValueTooLarge,
)

if TYPE_CHECKING:
    from types import ModuleType

    from keysafe.catalog import Catalog
    from keysafe.manager.manager import SecretManager
    from keysafe.models import SecretMetadata

__all__ = [
    "CONTENT_HASH",
    "ESO_API_VERSION",
    "FORCE_SYNC",
    "MANAGED_BY",
    "OPERATOR_ACCOUNT",
    "RESTARTED_AT",
    "KubeSync",
    "NamespaceMissing",
    "PassResult",
    "content_hash",
    "env_var_name",
    "eso_field_ref",
    "parse_interval",
    "parse_workload",
    "read_scope",
    "render_external_secret",
    "render_secret",
    "render_store_external_secret",
    "secret_manifest",
    "sync_pass",
]

#: Annotation on a keysafe-written Secret: the content hash of its values.
CONTENT_HASH = "keysafe.dev/content-hash"
#: Label on everything keysafe renders or writes.
MANAGED_BY = ("app.kubernetes.io/managed-by", "keysafe")
#: Pod-template annotation set to roll out a workload (what ``kubectl rollout
#: restart`` does with its own ``kubectl.kubernetes.io/restartedAt``).
RESTARTED_AT = "keysafe.dev/restartedAt"
#: The operator's manual-refresh annotation (spec 002: ``kubectl annotate externalsecret
#: ... force-sync=$(date +%s) --overwrite``; the operator's FAQ says the same).
FORCE_SYNC = "force-sync"
#: external-secrets.io/v1: served since operator 0.16, and the only version served since
#: 0.17 (v1beta1 stopped being served). The fields used here are identical in v1beta1.
ESO_API_VERSION = "external-secrets.io/v1"

#: Kubernetes limits a Secret to 1 MiB of data.
MAX_SECRET_BYTES = 1024 * 1024
_SALT = b"keysafe/k8s-content-hash/v1"
# Object names: DNS-1123 subdomain (Secrets, SecretStores...); namespaces and
# workloads' names used here: DNS-1123 label.
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
# A label value: up to 63 characters, alphanumerics at both ends.
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_LABEL_KEY = re.compile(
    r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
# A Go duration as the operator's refreshInterval takes it ("1h", "2h30m", "10s", "0").
_GO_DURATION = re.compile(r"0|(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")


# -- names and values ---------------------------------------------------------------


def env_var_name(name: str, catalog: Catalog | None = None) -> str:
    """The environment-variable name for a secret, as ``keysafe run`` and ``export``
    name it (docs/workloads.md): the catalog's variable for a catalog name
    (``OPENAI_API_KEY``), else the name upper-cased with every other character as '_'
    (an alias stays itself: ``db_password`` is ``DB_PASSWORD``)."""
    from keysafe.workloads.names import default_env_var

    return default_env_var(name, catalog)


def _check_name(kind: str, value: str, *, label: bool = False) -> str:
    pattern, limit = (_LABEL, 63) if label else (_SUBDOMAIN, 253)
    if not isinstance(value, str) or not value:
        raise InvalidName(f"{kind} is empty")
    if len(value) > limit or not pattern.fullmatch(value):
        rule = ("a DNS-1123 label: lower-case letters, digits and '-', at most 63"
                if label else
                "a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', at most 253")
        raise InvalidName(f"{kind} {value!r} is not a valid Kubernetes name ({rule})")
    return value


def _check_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    out = {MANAGED_BY[0]: MANAGED_BY[1]}
    for key, value in (labels or {}).items():
        if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key) \
                or len(key.rsplit("/", 1)[-1]) > 63:
            raise InvalidName(f"label key {key!r} is not a valid Kubernetes label key")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            raise InvalidValue(f"label {key!r}: the value is not a valid Kubernetes label value "
                               "(at most 63 letters, digits, '-', '_', '.')")
        out[key] = value
    return out


def _check_values(values: Mapping[str, str]) -> None:
    size = 0
    for key, value in values.items():
        if not isinstance(key, str) or len(key) > 253 or not _SECRET_KEY.fullmatch(key):
            raise InvalidName(f"{key!r} cannot be a Secret key (letters, digits, '-', '_', '.'; "
                              "at most 253)")
        if not isinstance(value, str):
            raise InvalidValue(f"the value of {key} is not text")
        try:
            size += len(key) + len(value.encode())
        except UnicodeEncodeError:
            raise InvalidValue(f"the value of {key} is not valid Unicode text") from None
    if size > MAX_SECRET_BYTES:
        raise ValueTooLarge(f"the values come to {size} bytes; a Kubernetes Secret holds at "
                            f"most {MAX_SECRET_BYTES}")


def content_hash(values: Mapping[str, str]) -> str:
    """A stable digest of ``values`` (keys and values): scrypt, hex. Equal for equal
    content whatever the order; see the module docstring for why scrypt."""
    canonical = json.dumps(dict(values), sort_keys=True, ensure_ascii=False,
                           separators=(",", ":")).encode()
    return hashlib.scrypt(canonical, salt=_SALT, n=2**14, r=8, p=1, dklen=32).hex()


def read_scope(mgr: SecretManager, org: str, domain: str | None = None, *,
               env: str | None = None, fresh: bool = True,
               skipped: list[str] | None = None,
               listing: list[SecretMetadata] | None = None) -> dict[str, str]:
    """Every live secret of the scope (org and one domain, the default when not given)
    as {ENV_VAR_NAME: value}; InvalidName when two names map to one variable. A secret
    with no value to read (its current version destroyed, or deleted meanwhile) is left
    out and its name added to ``skipped``; ``listing`` gets the metadata listed."""
    from keysafe.workloads.names import tagged_env_var
    from keysafe.workloads.scope import with_field_variables

    domain = domain or mgr.ref("x", org, env=env).domain
    by_env: dict[str, str] = {}
    values: dict[str, tuple[str, str]] = {}
    metas = mgr.list(org, domain=domain, env=env)
    if listing is not None:
        listing.extend(metas)
    for meta in metas:
        ref = mgr.parse(meta.path)
        var = tagged_env_var(meta.tags) or env_var_name(ref.name, mgr.catalog)
        if var in by_env:
            raise InvalidName(f"secrets {by_env[var]!r} and {ref.name!r} both map to the "
                              f"environment variable {var}; rename one")
        by_env[var] = ref.name
        try:
            values[ref.name] = (var, mgr.get(ref.name, org, domain=domain, env=env,
                                             fresh=fresh))
        except NotFound:
            if skipped is not None:
                skipped.append(ref.name)
    return with_field_variables(mgr.catalog, values)


# -- manifests ----------------------------------------------------------------------


def secret_manifest(values: Mapping[str, str], *, name: str, namespace: str | None,
                    labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``v1/Secret`` object for ``values`` as a plain dict (what ``render_secret``
    dumps and the sync sends). InvalidName/InvalidValue/ValueTooLarge for bad input."""
    _check_name("Secret name", name)
    if namespace is not None:
        _check_name("namespace", namespace, label=True)
    _check_values(values)
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = _check_labels(labels)
    metadata["annotations"] = {CONTENT_HASH: content_hash(values)}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {k: base64.b64encode(values[k].encode()).decode() for k in sorted(values)},
    }


def _yaml() -> ModuleType:
    from keysafe.backends._sdk import require_sdk

    return require_sdk("yaml", "k8s")


def render_secret(values: dict[str, str], *, name: str, namespace: str | None,
                  labels: dict[str, str] | None = None) -> str:
    """A YAML ``Secret`` manifest (type Opaque, base64 ``data``, keys as given: env-var
    names) with keysafe's content-hash annotation and managed-by label."""
    doc = secret_manifest(values, name=name, namespace=namespace, labels=labels)
    text: str = _yaml().safe_dump(doc, sort_keys=False, allow_unicode=True)
    return text


def _server_url(server_url: str) -> str:
    parts = urlsplit(server_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidValue(f"server URL {server_url!r} is not an http(s) URL")
    if parts.query or parts.fragment or "{" in server_url or "}" in server_url:
        raise InvalidValue(f"server URL {server_url!r} must not have a query, fragment or "
                           "braces")
    from keysafe.hosts import plain_http_allowed

    if parts.scheme == "http" and not plain_http_allowed():
        # The External Secrets Operator sends the service token with every fetch.
        raise InvalidValue(f"server URL {server_url!r} is plain http: the operator would "
                           "send the service token in the clear; use https (or set "
                           "KEYSAFE_ALLOW_HTTP=1 where the cluster network is encrypted)")
    return server_url.rstrip("/")


def render_external_secret(names: list[str], *, name: str, namespace: str | None,
                           server_url: str, org: str, domain: str | None, token_secret: str,
                           refresh_interval: str = "1h",
                           variables: Mapping[str, str] | None = None,
                           fields: Sequence[tuple[str, str, str]] = ()) -> str:
    """YAML for the External Secrets Operator: a SecretStore whose webhook provider reads
    ``GET {server_url}/api/secrets/{org}/{name}/value`` (``$.value`` of the JSON answer)
    with ``Authorization: Bearer`` the ``token`` key of the Kubernetes Secret
    ``token_secret``, and an ExternalSecret (refreshInterval, spec 002's force-sync
    annotation) filling the Secret ``name`` with one key per secret, the env-var name
    (``variables``: name -> variable where a mapping file or an ``env_var`` tag says),
    and one per field of JSON credentials in ``fields`` ((secret, field, variable): a
    ``remoteRef.property``, which the URL passes on as ``field=``).

    The manifests hold no value and no token. InvalidName/InvalidValue for bad input.
    """
    from keysafe.naming import validate_segment

    store = f"{name}-keysafe"
    _check_name("SecretStore name", store)
    _check_name("token Secret name", token_secret)
    validate_segment("org", org)
    if domain is not None:
        validate_segment("domain", domain)
    # The operator fills {{ .remoteRef.key }} (a validated name: URL-safe as it is).
    url = (f"{_server_url(server_url)}/api/secrets/{quote(org, safe='')}"
           "/{{ .remoteRef.key }}/value")
    query = [f"domain_id={quote(domain, safe='')}"] if domain is not None else []
    if fields:
        # The operator query-escapes the property; without one it sends field= (empty),
        # which the server answers with the whole value.
        query.append("field={{ .remoteRef.property }}")
    if query:
        url += "?" + "&".join(query)
    provider = {"webhook": {
        "url": url,
        "method": "GET",
        "headers": {"Accept": "application/json",
                    "Authorization": "Bearer {{ .auth.token }}"},
        "result": {"jsonPath": "$.value"},
        "secrets": [{"name": "auth", "secretRef": {"name": token_secret}}],
    }}
    header = (
        "# keysafe: External Secrets Operator (webhook provider) manifests.\n"
        f"# The service token is read from the 'token' key of the Secret {token_secret!r}:\n"
        f"#   kubectl create secret generic {token_secret} --from-literal=token=<token>"
        + (f" -n {namespace}" if namespace else "") + "\n")
    return _eso_manifests([(n, {"key": n}) for n in names], provider, name=name,
                          namespace=namespace, store=store, cluster_store=False,
                          refresh_interval=refresh_interval, header=header,
                          variables=variables,
                          fields=[(secret, var, {"key": secret, "property": fld})
                                  for secret, fld, var in fields])


#: The operator's own Kubernetes service account (its Helm chart's default, spec 002's
#: ``--namespace external-secrets``): what a store's workload identity is bound to.
OPERATOR_ACCOUNT: Mapping[str, str] = {"name": "external-secrets",
                                       "namespace": "external-secrets"}


def render_store_external_secret(refs: list[tuple[str, dict[str, Any]]],
                                 provider: dict[str, Any], *, name: str,
                                 namespace: str | None, store: str,
                                 refresh_interval: str = "1h",
                                 variables: Mapping[str, str] | None = None,
                                 fields: Sequence[tuple[str, str, dict[str, Any]]] = ()
                                 ) -> str:
    """YAML for the External Secrets Operator reading the store keysafe writes to
    (spec 002: AWS Secrets Manager or Parameter Store, Vault, GCP Secret Manager; also
    Azure Key Vault), without a keysafe server in the path: a ClusterSecretStore named
    ``store`` with ``provider`` (the backend's ``eso_provider()``), and an ExternalSecret
    filling the Secret ``name`` with one key per secret (its env-var name) from
    ``refs``: (secret name, the backend's ``eso_remote_ref(path)``), and one per field
    of JSON credentials in ``fields``: (secret, variable, ``eso_field_ref(path, f)``).

    With a ``namespace``, the store serves ExternalSecrets of that namespace only
    (``spec.conditions``): the operator's identity can read every org of the prefix,
    and any namespace allowed to use the store could ask for any of them.

    The manifests hold no value and no credential: the operator authenticates as its
    own service account (IRSA, Workload Identity, Vault's Kubernetes auth)."""
    _check_name("ClusterSecretStore name", store)
    header = (
        "# keysafe: External Secrets Operator manifests reading the store directly.\n"
        f"# The ClusterSecretStore {store!r} authenticates as the operator's service account\n"
        f"# {OPERATOR_ACCOUNT['namespace']}/{OPERATOR_ACCOUNT['name']}: bind it to a "
        "read-only identity (keysafe policy --read-only).\n"
        + (f"# It serves ExternalSecrets in namespace {namespace!r} only.\n" if namespace else
           "# It serves ExternalSecrets in EVERY namespace: give --namespace to limit it.\n"))
    return _eso_manifests(refs, provider, name=name, namespace=namespace, store=store,
                          cluster_store=True, refresh_interval=refresh_interval,
                          header=header, variables=variables, fields=fields)


#: Characters that are not literal in a gjson path, which is how the operator's AWS, GCP
#: and Azure providers read a ``remoteRef.property`` (a dotted name is also tried as a
#: literal key: first by AWS and GCP, after the path by Azure).
_GJSON_SPECIAL = frozenset("*?|#@\\!{}[]")


def eso_field_ref(store: str, ref: Mapping[str, Any], secret: str,
                  field: str) -> dict[str, Any]:
    """The ``remoteRef`` for field ``field`` of JSON credentials ``secret``, read by
    the operator straight from ``store`` (``ref``: the backend's ``eso_remote_ref``).

    Vault: the KV map's own key (only for credentials Vault holds as the map itself).
    AWS Secrets Manager and Parameter Store, GCP Secret Manager, Azure Key Vault: a
    gjson path over the stored JSON, so a name with gjson's operators is refused.
    InvalidValue naming the secret and the field."""
    if store == "vault":
        if "property" in ref:
            raise InvalidValue(
                f"field {field!r} of {secret}: Vault holds {secret} as one string under "
                f"the field {ref['property']!r} (it is not JSON credentials in keysafe's "
                "canonical form), so the operator cannot pick a field out of it; write it "
                f"again with keysafe put {secret} --credentials")
    elif _GJSON_SPECIAL.intersection(field) or field.startswith(".") or field.endswith("."):
        raise InvalidValue(
            f"field {field!r} of {secret}: the operator reads a property as a gjson path, "
            "in which * ? | # @ \\ ! { } [ ] and a leading or trailing '.' are not "
            "literal; rename the field, or use the keysafe webhook provider "
            "(--provider keysafe), which passes the name as it is")
    return {**ref, "property": field}


def _eso_manifests(refs: list[tuple[str, dict[str, Any]]], provider: dict[str, Any], *,
                   name: str, namespace: str | None, store: str, cluster_store: bool,
                   refresh_interval: str, header: str,
                   variables: Mapping[str, str] | None,
                   fields: Sequence[tuple[str, str, dict[str, Any]]] = ()) -> str:
    """The store (SecretStore, or ClusterSecretStore with no namespace) and the
    ExternalSecret naming ``refs`` (and ``fields``: (secret, variable, remoteRef)): the
    part both kinds of source share."""
    from keysafe.catalog import Catalog
    from keysafe.naming import validate_segment

    _check_name("ExternalSecret name", name)
    if namespace is not None:
        _check_name("namespace", namespace, label=True)
    if not isinstance(refresh_interval, str) or not _GO_DURATION.fullmatch(refresh_interval):
        raise InvalidValue(f"refresh interval {refresh_interval!r} is not a duration like "
                           "1h, 15m, 2h30m or 0")
    if not refs and not fields:
        raise InvalidValue("no secrets to list in the ExternalSecret")
    catalog = Catalog.builtin()
    data: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    entries = [(secret, (variables or {}).get(secret) or env_var_name(secret, catalog),
                repr(secret), remote_ref) for secret, remote_ref in refs]
    entries += [(secret, var, f"field {ref['property']!r} of {secret!r}", ref)
                for secret, var, ref in fields]
    for secret, var, what, remote_ref in entries:
        validate_segment("name", secret)
        if not _SECRET_KEY.fullmatch(var):
            raise InvalidName(f"{var!r} (for {what}) is not a valid Secret key")
        if var in seen:
            raise InvalidName(f"{seen[var]} and {what} both map to the environment "
                              f"variable {var}; rename one")
        seen[var] = what
        data.append({"secretKey": var, "remoteRef": remote_ref})
    labels = {MANAGED_BY[0]: MANAGED_BY[1]}

    def meta(obj_name: str, *, namespaced: bool = True, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"name": obj_name}
        if namespace is not None and namespaced:
            out["namespace"] = namespace
        out["labels"] = dict(labels)
        out.update(extra)
        return out

    kind = "ClusterSecretStore" if cluster_store else "SecretStore"
    store_spec: dict[str, Any] = {"provider": provider}
    if cluster_store and namespace is not None:
        store_spec["conditions"] = [{"namespaces": [namespace]}]
    secret_store = {
        "apiVersion": ESO_API_VERSION,
        "kind": kind,
        "metadata": meta(store, namespaced=not cluster_store),
        "spec": store_spec,
    }
    external_secret = {
        "apiVersion": ESO_API_VERSION,
        "kind": "ExternalSecret",
        # A new force-sync value makes the operator refresh now when this is applied.
        "metadata": meta(name, annotations={FORCE_SYNC: str(int(time.time()))}),
        "spec": {
            "refreshInterval": refresh_interval,
            "secretStoreRef": {"name": store, "kind": kind},
            "target": {"name": name, "creationPolicy": "Owner"},
            "data": data,
        },
    }
    body: str = _yaml().safe_dump_all([secret_store, external_secret], sort_keys=False,
                                      allow_unicode=True)
    return header + body


# -- options ------------------------------------------------------------------------


#: What ``--restart`` rolls out, as ``kubectl rollout restart`` does: kind -> the
#: AppsV1Api method that patches it. Every kind takes kubectl's spellings.
WORKLOAD_KINDS = {"deployment": "patch_namespaced_deployment",
                  "statefulset": "patch_namespaced_stateful_set",
                  "daemonset": "patch_namespaced_daemon_set"}
_KIND_SPELLINGS = {"deployment": "deployment", "deployments": "deployment",
                   "deploy": "deployment", "statefulset": "statefulset",
                   "statefulsets": "statefulset", "sts": "statefulset",
                   "daemonset": "daemonset", "daemonsets": "daemonset", "ds": "daemonset"}


def parse_workload(text: str) -> str:
    """``KIND/NAME`` (a Deployment, StatefulSet or DaemonSet in kubectl's spellings:
    ``deploy/web``, ``sts/db``, ``ds/agent``; a bare ``NAME`` is a Deployment) as
    ``kind/name``; InvalidValue for another kind, InvalidName for a bad name."""
    kind, slash, wl_name = text.partition("/")
    if not slash:
        kind, wl_name = "deployment", text
    canonical = _KIND_SPELLINGS.get(kind.lower())
    if canonical is None:
        raise InvalidValue(f"--restart {text!r}: only a deployment, statefulset or "
                           "daemonset can be restarted (KIND/NAME)")
    return f"{canonical}/{_check_name(f'{canonical} name', wl_name, label=False)}"


# -- the sync -----------------------------------------------------------------------


@dataclass
class PassResult:
    """What one sync pass did (metadata only: never a value)."""

    action: str  # created | updated | unchanged | forced | refreshed (an ExternalSecret)
    namespace: str
    name: str
    keys: list[str]
    content_hash: str
    restarted: list[str] = field(default_factory=list)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Keys the live Secret had and this pass took away (a secret deleted or renamed, or
    #: its variable changed): pods that read one by name stop starting.
    removed: list[str] = field(default_factory=list)
    #: What the pass keeps in step: a ``secret`` (written by keysafe) or an
    #: ``externalsecret`` (refreshed by the operator; ``keys`` are then secret names).
    kind: str = "secret"

    @property
    def applied(self) -> bool:
        return self.action != "unchanged"

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "namespace": self.namespace, "name": self.name,
                "keys": self.keys, "content_hash": self.content_hash,
                "restarted": self.restarted, "removed": self.removed,
                "at": self.at.isoformat(timespec="seconds")}


class NamespaceMissing(NotFound):
    """The namespace itself does not exist (not just the object in it)."""


def _status_reason(exc: Any) -> tuple[int, str, str]:
    """(status, reason, kind) of an ApiException; the body is the server's Status
    object, whose message names objects, never data."""
    status = int(getattr(exc, "status", 0) or 0)
    reason, kind = "", ""
    try:
        body = json.loads(getattr(exc, "body", None) or "{}")
        reason = str(body.get("reason") or "")
        kind = str((body.get("details") or {}).get("kind") or "")
    except (ValueError, AttributeError):
        pass
    return status, reason, kind


class KubeSync:
    """The Kubernetes side of ``keysafe sync kubernetes``: one Secret in one namespace,
    read, created or replaced through the official client; workloads rolled out.

    Every API error becomes a KeysafeError naming the object and the problem (never
    the foreign exception's text, which may quote a request).
    """

    def __init__(self, namespace: str, name: str, *, kubeconfig: str | None = None,
                 context: str | None = None, labels: Mapping[str, str] | None = None,
                 adopt: bool = False, timeout: float = 30.0) -> None:
        from keysafe.backends._sdk import require_sdk

        self.namespace = _check_name("namespace", namespace, label=True)
        self.name = _check_name("Secret name", name)
        self.labels = dict(labels or {})
        _check_labels(self.labels)
        self.adopt = adopt
        self.timeout = timeout
        self._k8s = require_sdk("kubernetes", "k8s")
        self.api_client = self._client(kubeconfig, context)
        self.core = self._k8s.client.CoreV1Api(self.api_client)
        self.apps = self._k8s.client.AppsV1Api(self.api_client)

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    def _client(self, kubeconfig: str | None, context: str | None) -> Any:
        k8s = self._k8s
        path = kubeconfig or os.environ.get("KUBECONFIG")
        default = Path("~/.kube/config").expanduser()
        in_cluster = (path is None and not default.exists()
                      and "KUBERNETES_SERVICE_HOST" in os.environ)
        if in_cluster and context is None:
            cfg = k8s.client.Configuration()
            try:
                k8s.config.load_incluster_config(client_configuration=cfg)
            except k8s.config.ConfigException:
                raise ConfigError("cannot use the in-cluster service account (token or CA "
                                  "file missing); give --kubeconfig") from None
            return k8s.client.ApiClient(cfg)
        shown = path or str(default)
        files = [p for p in (path or str(default)).split(os.pathsep) if p]
        if not any(Path(p).is_file() for p in files):
            raise ConfigError(f"no Kubernetes configuration: {shown} does not exist (give "
                              "--kubeconfig, set KUBECONFIG, or run inside a cluster)")
        try:
            contexts, _ = k8s.config.list_kube_config_contexts(config_file=path)
        except Exception:
            raise ConfigError(f"cannot read the kubeconfig {shown}") from None
        if context is not None and context not in {c.get("name") for c in contexts or []}:
            raise ConfigError(f"context {context!r} is not in the kubeconfig {shown}")
        try:
            return k8s.config.new_client_from_config(config_file=path, context=context,
                                                     persist_config=False)
        except Exception:
            raise ConfigError(f"cannot load the kubeconfig {shown}"
                              + (f" (context {context})" if context else "")) from None

    def close(self) -> None:
        close = getattr(self.api_client, "close", None)
        if callable(close):
            close()

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one API call; map its failure to a KeysafeError about ``what``."""
        k8s = self._k8s
        try:
            return fn(*args, _request_timeout=self.timeout, **kwargs)
        except k8s.client.exceptions.ApiException as exc:
            raise self._error(exc, what) from None
        except KeysafeError:
            raise
        except Exception as exc:  # urllib3 connection errors, timeouts, TLS
            raise BackendUnavailable(
                f"cannot reach the Kubernetes API server at {self.host} while trying to "
                f"{what} ({type(exc).__name__})") from None

    def _error(self, exc: Any, what: str) -> KeysafeError:
        status, reason, kind = _status_reason(exc)
        ns = self.namespace
        if status == 401:
            return PermissionDenied(f"the Kubernetes API server rejected the credentials "
                                    f"(401) while trying to {what}; check the kubeconfig")
        if status == 403:
            return PermissionDenied(f"the Kubernetes API server denied permission to {what} "
                                    f"(403 Forbidden): grant the service account or user "
                                    f"that verb in namespace {ns}")
        if status == 404 and kind == "namespaces":
            return NamespaceMissing(f"namespace {ns!r} does not exist (404) while trying to "
                                    f"{what}")
        if status == 404:
            return NotFound(f"not found (404) while trying to {what}")
        if status == 409:
            return Conflict(f"conflict (409) while trying to {what}: the object changed "
                            "meanwhile")
        if status in (400, 422):
            return InvalidValue(f"the Kubernetes API server refused to {what} "
                                f"({status} {reason or 'Invalid'})")
        if status in (429,) or status >= 500 or status == 0:
            return BackendUnavailable(f"the Kubernetes API server failed to {what} "
                                      f"({status} {reason}); retrying later may work")
        return KeysafeError(f"the Kubernetes API server answered {status} {reason} while "
                            f"trying to {what}")

    def read(self) -> Any | None:
        """The live Secret, or None when it does not exist."""
        what = f"read secret {self.namespace}/{self.name}"
        try:
            return self._call(what, self.core.read_namespaced_secret, self.name,
                              self.namespace)
        except NamespaceMissing:
            raise
        except NotFound:
            return None

    def _body(self, manifest: Mapping[str, Any], existing: Any | None) -> Any:
        c = self._k8s.client
        meta = manifest["metadata"]
        labels = dict(meta["labels"])
        annotations = dict(meta["annotations"])
        resource_version = None
        secret_type = manifest["type"]
        if existing is not None:
            # Keep what others put on the object; ours win on our keys.
            labels = {**(existing.metadata.labels or {}), **labels}
            annotations = {**(existing.metadata.annotations or {}), **annotations}
            resource_version = existing.metadata.resource_version
            secret_type = existing.type or secret_type
        return c.V1Secret(
            api_version="v1", kind="Secret", type=secret_type, data=dict(manifest["data"]),
            metadata=c.V1ObjectMeta(name=self.name, namespace=self.namespace, labels=labels,
                                    annotations=annotations,
                                    resource_version=resource_version))

    def apply(self, manifest: Mapping[str, Any], existing: Any | None) -> str:
        """Create the Secret, or replace it (guarded by its resourceVersion)."""
        target = f"{self.namespace}/{self.name}"
        if existing is None:
            self._call(f"create secret {target}", self.core.create_namespaced_secret,
                       self.namespace, self._body(manifest, None))
            return "created"
        self._call(f"update secret {target}", self.core.replace_namespaced_secret,
                   self.name, self.namespace, self._body(manifest, existing))
        return "updated"

    def restart(self, workload: str, when: datetime) -> None:
        """Roll out ``kind/name`` (from parse_workload): patch its pod template's
        restartedAt annotation."""
        kind, _, name = workload.partition("/")
        patch = {"spec": {"template": {"metadata": {"annotations": {
            RESTARTED_AT: when.isoformat(timespec="seconds")}}}}}
        what = f"restart {kind} {self.namespace}/{name}"
        try:
            self._call(what, getattr(self.apps, WORKLOAD_KINDS[kind]), name,
                       self.namespace, patch,
                       _content_type="application/strategic-merge-patch+json")
        except NamespaceMissing:
            raise
        except NotFound:
            raise NotFound(f"{kind} {name!r} does not exist in namespace "
                           f"{self.namespace} (the Secret was applied)") from None

    def in_sync(self, existing: Any, manifest: Mapping[str, Any]) -> bool:
        """Whether the live Secret already holds exactly the manifest's data and hash."""
        annotations = existing.metadata.annotations or {}
        same_data: bool = dict(existing.data or {}) == manifest["data"]
        same_hash: bool = (annotations.get(CONTENT_HASH)
                           == manifest["metadata"]["annotations"][CONTENT_HASH])
        return same_data and same_hash

    def check_owned(self, existing: Any) -> None:
        """Conflict unless keysafe wrote the live Secret (or ``adopt``), and never an
        immutable one."""
        if getattr(existing, "immutable", None):
            raise Conflict(f"secret {self.namespace}/{self.name} is immutable; delete it "
                           "to let keysafe manage it")
        labels = existing.metadata.labels or {}
        if not self.adopt and labels.get(MANAGED_BY[0]) != MANAGED_BY[1]:
            raise Conflict(f"secret {self.namespace}/{self.name} exists and was not "
                           f"written by keysafe (no {MANAGED_BY[0]}={MANAGED_BY[1]} label); "
                           "pass --adopt to take it over")


def sync_pass(kube: KubeSync, values: Mapping[str, str], *, force: bool = False,
              restart: Iterable[str] = ()) -> PassResult:
    """One pass: apply the Secret when its content differs (or ``force``), then roll out
    the ``restart`` workloads (``kind/name``) if it was applied. A concurrent change
    (409) is retried twice with a fresh read."""
    manifest = secret_manifest(values, name=kube.name, namespace=kube.namespace,
                               labels=kube.labels)
    digest = manifest["metadata"]["annotations"][CONTENT_HASH]
    action = "unchanged"
    for attempt in range(3):
        existing = kube.read()
        if existing is not None:
            kube.check_owned(existing)
            if kube.in_sync(existing, manifest) and not force:
                break
        try:
            done = kube.apply(manifest, existing)
        except Conflict:
            if attempt == 2:
                raise
            continue
        in_sync = existing is not None and kube.in_sync(existing, manifest)
        action = "forced" if in_sync else done
        break
    result = PassResult(action=action, namespace=kube.namespace, name=kube.name,
                        keys=sorted(values), content_hash=digest)
    if result.applied and existing is not None:
        result.removed = sorted(set(existing.data or {}) - set(values))
    if result.applied:
        for workload in restart:
            kube.restart(workload, result.at)
            result.restarted.append(workload)
    return result
