"""HashiCorp Vault and OpenBao: the KV version 2 secrets engine, through hvac.

Every keysafe concept lands on the KV v2 concept of the same shape, so that Vault's
own tools (``bao kv get``, the UI, the External Secrets Operator) see what keysafe
wrote. docs/backends/vault.md has the full table; in short:

- path ``a/b/c`` is ``<mount>/a/b/c`` (one leading ``/`` of a keysafe path is dropped:
  Vault paths have none).
- a value is the KV map ``{value_field: value}``; a value that is a JSON object in
  keysafe's canonical form (``json.dumps(obj, sort_keys=True)``, as ``put_json`` writes
  it) whose leaves survive Vault's JSON unchanged is stored as the map itself. On read
  a map of exactly one key, ``value_field``, holding a string is that string; any
  other map is its canonical JSON. Both directions are exact (see ``_encode_value``).
- versions, check-and-set (``cas``), destroy and max_versions are KV v2's own;
  descriptive metadata (description, type, tags, rotation, authors) lives in the
  secret's ``custom_metadata`` under ``keysafe_*`` keys.
- soft delete of the whole secret = mark ``keysafe_deleted_*`` in custom_metadata,
  then a KV v2 delete of the current version; restore = undelete + clear the mark;
  purge = delete the metadata (every version).

Which KV state counts as "deleted" is derived from the data, never from the mark
alone, so an interrupted two-step change never leaves a live secret looking deleted.
"""

from __future__ import annotations

import builtins
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from keysafe.backends._sdk import require_sdk
from keysafe.backends.base import NamesArePaths, WriteContext, check_cas, not_found
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
from keysafe.hosts import shown_url
from keysafe.models import MetadataUpdate, SecretMetadata, VersionInfo

if TYPE_CHECKING:
    from keysafe.config import Settings

_T = TypeVar("_T")

DEFAULT_K8S_JWT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
#: Raft's default max_entry_size (integrated storage): a larger KV entry is refused.
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024
AUTH_METHODS = ("token", "approle", "kubernetes")

# Vault's limit on one custom_metadata value (KV v2 also allows at most 64 keys).
_CM_MAX_VALUE_BYTES = 512
# Per-version authors kept in custom_metadata; the rest of the 64-key budget is left
# for keysafe's fixed keys and for keys other tools set.
_TRACKED_AUTHORS = 40
_JSON_SAFE_INT = 2**53 - 1  # Vault decodes JSON numbers into float64
# How far Vault's clock may be from ours when matching a deletion to keysafe's mark.
_CLOCK_SKEW = timedelta(minutes=5)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_CAS_MISMATCH = "check-and-set parameter did not match"

_K_PATH = "keysafe_path"
_K_CREATED_BY = "keysafe_created_by"
_K_UPDATED_BY = "keysafe_updated_by"
_K_DELETED_AT = "keysafe_deleted_at"
_K_DELETED_BY = "keysafe_deleted_by"
_K_DELETED_VERSION = "keysafe_deleted_version"
#: MetadataUpdate field -> custom_metadata key.
_FIELD_KEYS = {
    "description": "keysafe_description",
    "secret_type": "keysafe_type",
    "tags": "keysafe_tags",
    "rotation_days": "keysafe_rotation_days",
    "expires_at": "keysafe_expires_at",
    "last_rotated": "keysafe_last_rotated",
}
_CLEAR_DELETED: dict[str, str | None] = {
    _K_DELETED_AT: None, _K_DELETED_BY: None, _K_DELETED_VERSION: None}

_OPTIONS = frozenset({
    "url", "token", "namespace", "mount", "value_field", "auth_method", "auth_mount",
    "role_id", "secret_id", "k8s_role", "k8s_jwt_path", "timeout", "verify",
    "max_value_bytes", "retries", "backoff"})


def _author_key(version: int) -> str:
    return f"keysafe_v{version}_by"


# -- values <-> KV maps ---------------------------------------------------------------------
def _portable(obj: object) -> bool:
    """True if ``obj`` comes back from Vault's JSON exactly as it went in."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates become U+FFFD in Go
            return False
        return True
    if obj is None or isinstance(obj, bool):
        return True
    if isinstance(obj, int):
        return -_JSON_SAFE_INT <= obj <= _JSON_SAFE_INT
    if isinstance(obj, list):
        return all(_portable(x) for x in obj)
    if isinstance(obj, dict):
        return all(_portable(k) and _portable(v) for k, v in obj.items())
    return False  # floats: Go rewrites 1.0 as 1 and 1e16 as 10000000000000000


def _encode_value(value: str, field: str) -> dict[str, Any]:
    """The KV map for ``value``: the object itself for canonical JSON credentials,
    else ``{field: value}``. ``_decode_value`` inverts it exactly."""
    if value.startswith("{"):
        try:
            obj = json.loads(value)
        except ValueError:
            obj = None
        if (isinstance(obj, dict) and obj
                and not (len(obj) == 1 and isinstance(obj.get(field), str))
                and _portable(obj) and json.dumps(obj, sort_keys=True) == value):
            return obj
    return {field: value}


def _decode_value(data: object, field: str) -> str:
    if isinstance(data, dict) and len(data) == 1 and isinstance(data.get(field), str):
        return str(data[field])
    return json.dumps(data, sort_keys=True)


# -- custom_metadata <-> fields -------------------------------------------------------------
def _time(raw: object) -> datetime | None:
    if not isinstance(raw, str) or not raw:
        return None
    try:
        t = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _encode_field(name: str, value: object) -> str | None:
    """custom_metadata holds non-empty strings only: empty values clear the key."""
    if name == "tags":
        assert isinstance(value, Mapping)
        if not value:
            return None
        return json.dumps(dict(value), sort_keys=True, ensure_ascii=False,
                          separators=(",", ":"))
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    return text or None


def _decode_fields(cm: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    desc = cm.get(_FIELD_KEYS["description"])
    out["description"] = desc if isinstance(desc, str) else None
    kind = cm.get(_FIELD_KEYS["secret_type"])
    out["secret_type"] = kind if isinstance(kind, str) else None
    tags: dict[str, str] = {}
    raw = cm.get(_FIELD_KEYS["tags"])
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            tags = {str(k): str(v) for k, v in parsed.items()}
    out["tags"] = tags
    days = cm.get(_FIELD_KEYS["rotation_days"])
    out["rotation_days"] = int(days) if isinstance(days, str) and days.isdigit() else None
    out["expires_at"] = _time(cm.get(_FIELD_KEYS["expires_at"]))
    out["last_rotated"] = _time(cm.get(_FIELD_KEYS["last_rotated"]))
    return out


class VaultBackend(NamesArePaths):
    """Secrets in a Vault or OpenBao KV v2 mount, readable by Vault's own tools.

    Raises NotFound, Conflict (check-and-set), PermissionDenied (Vault policy or a
    failed login), BackendUnavailable (unreachable, sealed, throttled, 5xx: retryable),
    ValueTooLarge / InvalidValue (Vault's limits, checked before calling), InvalidName
    (a path Vault cannot hold) and ConfigError (settings, missing hvac).
    """

    name = "vault"
    remote = True  # calls cross a network: servers run them off the event loop

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        namespace: str | None = None,
        mount: str = "secret",
        value_field: str = "value",
        auth_method: str | None = None,
        auth_mount: str | None = None,
        role_id: str | None = None,
        secret_id: str | None = None,
        k8s_role: str | None = None,
        k8s_jwt_path: str | os.PathLike[str] = DEFAULT_K8S_JWT_PATH,
        timeout: float = 10.0,
        verify: bool | str | None = None,
        max_versions: int = 10,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        retries: int = 2,
        backoff: float = 0.1,
    ) -> None:
        self._hvac = require_sdk("hvac", "vault")
        self._requests = require_sdk("requests", "vault")
        self._addr = url or os.environ.get("VAULT_ADDR") or "http://127.0.0.1:8200"
        self.url = shown_url(self._addr)  # for messages and manifests: no user info
        self.namespace = namespace or os.environ.get("VAULT_NAMESPACE") or None
        self.mount = mount.strip("/")
        if not self.mount:
            raise ConfigError("vault: mount must name the KV v2 mount (for example 'secret')")
        if not value_field:
            raise ConfigError("vault: value_field must not be empty")
        self.value_field = value_field
        if auth_method is None:
            auth_method = "approle" if role_id else "kubernetes" if k8s_role else "token"
        if auth_method not in AUTH_METHODS:
            raise ConfigError(f"vault: auth_method {auth_method!r} is not one of "
                              f"{', '.join(AUTH_METHODS)}")
        if auth_method == "approle" and not (role_id and secret_id):
            raise ConfigError("vault: AppRole auth needs role_id and secret_id")
        if auth_method == "kubernetes" and not k8s_role:
            raise ConfigError("vault: Kubernetes auth needs k8s_role")
        self.auth_method = auth_method
        self.auth_mount = auth_mount or ("kubernetes" if auth_method == "kubernetes"
                                         else "approle")
        self._token = token or None
        self._role_id = role_id
        self._secret_id = secret_id
        self._k8s_role = k8s_role
        self.k8s_jwt_path = Path(k8s_jwt_path)
        self.timeout = timeout
        if verify is None and os.environ.get("VAULT_SKIP_VERIFY", "").lower() in _TRUE:
            verify = False
        self.verify = verify  # None: hvac's default (VAULT_CACERT / VAULT_CAPATH, else on)
        self.max_versions = max_versions
        self.max_value_bytes = max_value_bytes
        self.retries = max(0, retries)
        self.backoff = max(0.0, backoff)
        self._client_obj: Any = None
        self._lock = threading.Lock()
        self._token_worked = False

    @classmethod
    def from_settings(cls, settings: Settings) -> VaultBackend:
        """Options from the profile (``backend_options``) over VAULT_ADDR, VAULT_TOKEN
        and VAULT_NAMESPACE. Raises ConfigError for an unknown or malformed option."""
        opts = dict(settings.backend_options)
        unknown = sorted(set(opts) - _OPTIONS)
        if unknown:
            raise ConfigError(f"vault: unknown option {unknown[0]!r}; known options: "
                              f"{', '.join(sorted(_OPTIONS))}")
        kwargs: dict[str, Any] = {}
        for key in ("url", "token", "namespace", "mount", "value_field", "auth_method",
                    "auth_mount", "role_id", "secret_id", "k8s_role", "k8s_jwt_path"):
            if opts.get(key) not in (None, ""):
                kwargs[key] = str(opts[key])
        try:
            for key, kind in (("timeout", float), ("backoff", float),
                              ("max_value_bytes", int), ("retries", int)):
                if key in opts:
                    kwargs[key] = kind(opts[key])
        except (TypeError, ValueError):
            raise ConfigError(f"vault: option {key} = {opts[key]!r} is not a number") from None
        if "verify" in opts:
            v = opts["verify"]
            low = str(v).lower()
            if isinstance(v, bool):
                kwargs["verify"] = v
            elif low in _TRUE or low in _FALSE:
                kwargs["verify"] = low in _TRUE
            else:
                kwargs["verify"] = str(v)  # a CA bundle path
        return cls(max_versions=settings.max_versions, **kwargs)

    # -- the External Secrets Operator reading this store (keysafe.kube) -----------------
    def eso_provider(self) -> dict[str, Any]:
        """KV v2 at this mount, the operator logging in with Kubernetes auth as its own
        service account under the Vault role ``external-secrets`` (spec 002's
        ClusterSecretStore; give that role a read-only policy: ``keysafe policy
        --backend vault --read-only``). keysafe's own ``k8s_role`` is not used: it may
        write."""
        from keysafe.kube import OPERATOR_ACCOUNT

        spec: dict[str, Any] = {"server": self.url, "path": self.mount, "version": "v2"}
        if self.namespace:
            spec["namespace"] = self.namespace
        spec["auth"] = {"kubernetes": {
            "mountPath": self.auth_mount if self.auth_method == "kubernetes" else "kubernetes",
            "role": OPERATOR_ACCOUNT["name"],
            "serviceAccountRef": dict(OPERATOR_ACCOUNT)}}
        return {"vault": spec}

    def eso_remote_ref(self, path: str) -> dict[str, Any]:
        """The KV path under the mount, and ``property`` the value field when the value
        is stored as ``{value_field: value}``; JSON credentials stored as the map itself
        (``_encode_value``) get no property, so the operator hands over the whole map as
        JSON. Which one is decided from the stored value (read here, never shown)."""
        key = path[1:] if path.startswith("/") else path
        value, _ = self.get(path)
        if _encode_value(value, self.value_field) == {self.value_field: value}:
            return {"key": key, "property": self.value_field}
        return {"key": key}

    def __repr__(self) -> str:
        return (f"VaultBackend(url={self.url!r}, mount={self.mount!r}, "
                f"auth_method={self.auth_method!r})")

    # -- client, login and the one place foreign errors are mapped ---------------------------
    def _client(self) -> Any:
        client = self._client_obj
        if client is None:
            with self._lock:
                if self._client_obj is None:
                    c = self._hvac.Client(url=self._addr, token=self._token,
                                          namespace=self.namespace, timeout=self.timeout,
                                          verify=self.verify)
                    if self.auth_method != "token":
                        self._login(c)
                    elif not c.token:
                        raise ConfigError("vault: no token; set VAULT_TOKEN or the token "
                                          "option, or use approle or kubernetes auth")
                    self._preflight(c)
                    self._client_obj = c
                client = self._client_obj
        return client

    def _login(self, c: Any) -> None:
        """Log in with AppRole or Kubernetes; the token lands on the client."""
        try:
            if self.auth_method == "approle":
                c.auth.approle.login(role_id=self._role_id, secret_id=self._secret_id,
                                     mount_point=self.auth_mount)
            else:
                try:
                    jwt = self.k8s_jwt_path.read_text().strip()
                except OSError as exc:
                    raise ConfigError(f"vault: cannot read the Kubernetes service-account "
                                      f"token {self.k8s_jwt_path}: {exc.strerror}") from None
                c.auth.kubernetes.login(role=self._k8s_role, jwt=jwt,
                                        mount_point=self.auth_mount)
        except KeysafeError:
            raise
        except Exception as exc:
            err = self._translate(exc, None, echo=False)
            if isinstance(err, BackendUnavailable):
                raise err from exc
            raise PermissionDenied(f"vault: {self.auth_method} login at auth/"
                                   f"{self.auth_mount} was refused") from exc
        self._token_worked = False

    def _preflight(self, c: Any) -> None:
        """Refuse a KV version 1 mount (what ``bao kv`` asks Vault first). A token that
        may not ask is not an error: the first real call will tell."""
        try:
            r = c.adapter.request("GET", f"/v1/sys/internal/ui/mounts/{self.mount}",
                                  raise_exception=False)
        except self._requests.exceptions.RequestException as exc:
            raise self._translate(exc, None) from exc
        if not isinstance(r, dict):
            return
        data = r.get("data") or {}
        version = str((data.get("options") or {}).get("version") or "")
        if data.get("type") == "kv" and version != "2":
            raise ConfigError(f"vault: mount {self.mount}/ is KV version {version or 1}; "
                              "keysafe needs KV version 2 (bao kv enable-versioning "
                              f"{self.mount}/)")

    def _relogin(self, stale: Any) -> bool:
        """Log in again once when a token that worked is refused (it expired)."""
        if self.auth_method == "token":
            return False
        with self._lock:
            c = self._client_obj
            if c is None:
                return False
            if c.token == stale:
                if not self._token_worked:
                    return False
                self._login(c)
        return True

    def _once(self, fn: Callable[[Any], _T]) -> _T:
        c = self._client()
        token = c.token
        try:
            result = fn(c)
        except self._hvac.exceptions.Forbidden:
            if not self._relogin(token):
                raise
            result = fn(self._client())
        self._token_worked = True
        return result

    def _translate(self, exc: Exception, path: str | None, *, echo: bool = True) -> KeysafeError:
        """The keysafe error for an hvac or requests error. Vault's own error text is
        kept only for requests that carried no value (``echo``)."""
        if isinstance(exc, KeysafeError):
            return exc
        ex = self._hvac.exceptions
        rq = self._requests.exceptions
        where = f"Vault at {self.url}"
        what = path or f"mount {self.mount}"
        if isinstance(exc, ex.InvalidPath):
            return not_found(path) if path else NotFound(f"{what} not found")
        if isinstance(exc, ex.Forbidden | ex.Unauthorized):
            return PermissionDenied(f"{where} denied access to {what} (permission denied)",
                                    path=path)
        if isinstance(exc, ex.InvalidRequest):
            errors = " ".join(getattr(exc, "errors", None) or [])
            if _CAS_MISMATCH in errors:
                return Conflict(f"{what} changed: check-and-set did not match", path=path)
            detail = f": {errors.strip()}" if echo and errors else ""
            return InvalidValue(f"{where} rejected the request for {what}{detail}", path=path)
        if isinstance(exc, ex.RateLimitExceeded):
            return BackendUnavailable(f"{where} is throttling requests (429); retry later",
                                      path=path)
        if isinstance(exc, ex.VaultDown):
            return BackendUnavailable(f"{where} is sealed or down (503)", path=path)
        if isinstance(exc, ex.InternalServerError | ex.BadGateway | ex.VaultNotInitialized
                      | ex.UnexpectedError):
            return BackendUnavailable(f"{where} failed ({type(exc).__name__})", path=path)
        if isinstance(exc, rq.SSLError):
            return ConfigError(f"vault: TLS to {self.url} failed (check verify / the CA "
                               f"bundle)")
        if isinstance(exc, rq.Timeout):
            return BackendUnavailable(f"{where} timed out after {self.timeout}s", path=path)
        if isinstance(exc, rq.ConnectionError):
            return BackendUnavailable(f"{where} cannot be reached", path=path)
        if isinstance(exc, rq.RequestException):
            return BackendUnavailable(f"{where}: request failed ({type(exc).__name__})",
                                      path=path)
        if isinstance(exc, ex.VaultError):
            return KeysafeError(f"{where}: {type(exc).__name__} for {what}", path=path)
        raise exc

    def _call(self, path: str | None, fn: Callable[[Any], _T], *, retry: bool,
              echo: bool = True) -> _T:
        """Run ``fn(client)``, mapping errors; ``retry`` (reads and idempotent writes
        only) retries BackendUnavailable with exponential backoff and jitter."""
        attempts = 1 + (self.retries if retry else 0)
        for attempt in range(attempts):
            try:
                return self._once(fn)
            except Exception as exc:
                err = self._translate(exc, path, echo=echo)
                if isinstance(err, BackendUnavailable) and attempt + 1 < attempts:
                    self._sleep(attempt)
                    continue
                if err is exc:
                    raise
                raise err from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def call(self, fn: Callable[[Any], _T], *, echo: bool = True) -> _T:
        """Run ``fn(hvac client)`` with this backend's login, retries and error mapping:
        for keysafe's other uses of the same Vault (the master key's Transit key, see
        ``keysafe.crypto.kms``). ``echo=False`` when the request carries a secret."""
        return self._call(None, fn, retry=True, echo=echo)

    def _sleep(self, attempt: int) -> None:
        time.sleep(self.backoff * (2 ** attempt) * (0.5 + random.random() / 2))

    # -- paths ------------------------------------------------------------------------------
    def _kv(self, path: str) -> str:
        """The KV path for a keysafe path; InvalidName if Vault cannot hold it."""
        kv = path[1:] if path.startswith("/") else path
        problem = None
        if not kv:
            problem = "is empty"
        elif kv.endswith("/"):
            problem = "ends with '/' (a Vault folder, not a secret)"
        elif any(seg in ("", ".", "..") for seg in kv.split("/")):
            problem = "has an empty, '.' or '..' segment (Vault would rewrite it)"
        elif any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in kv):
            problem = "contains a control character"
        if problem:
            raise InvalidName(f"path {path!r} {problem}; Vault KV paths cannot")
        return kv

    def _url(self, kind: str, kv: str) -> str:
        return str(self._hvac.utils.format_url("/v1/{mount}/{kind}/{path}", mount=self.mount,
                                               kind=kind, path=kv))

    # -- raw KV v2 calls ----------------------------------------------------------------------
    def _read_meta(self, path: str) -> dict[str, Any]:
        """Raw KV v2 metadata; NotFound if absent or never written (current_version 0)."""
        kv = self._kv(path)
        m: dict[str, Any] = self._call(path, lambda c: c.secrets.kv.v2.read_secret_metadata(
            kv, mount_point=self.mount), retry=True)["data"]
        if not int(m.get("current_version") or 0):
            raise not_found(path)
        return m

    def _patch_meta(self, path: str, custom: Mapping[str, str | None], *,
                    max_versions: bool = False) -> None:
        """JSON merge patch of the metadata (null removes a key); idempotent, so retried."""
        body: dict[str, Any] = {"custom_metadata": dict(custom)}
        if max_versions and self.max_versions > 0:
            body["max_versions"] = self.max_versions
        url = self._url("metadata", self._kv(path))
        self._call(path, lambda c: c.adapter.request(
            "PATCH", url, json=body,
            headers={"Content-Type": "application/merge-patch+json"}), retry=True)

    def _to_meta(self, path: str, m: Mapping[str, Any]) -> SecretMetadata:
        cm: Mapping[str, Any] = m.get("custom_metadata") or {}
        versions: Mapping[str, Any] = m.get("versions") or {}
        current = int(m["current_version"])
        created = _time(m.get("created_time")) or datetime.now(UTC)
        updated = _time(m.get("updated_time")) or created
        return SecretMetadata(
            path=path, current_version=current, created_at=created, updated_at=updated,
            created_by=cm.get(_K_CREATED_BY), updated_by=cm.get(_K_UPDATED_BY),
            deleted_at=self._deleted_at(cm, versions, current), versions=len(versions),
            **_decode_fields(cm))

    @staticmethod
    def _deleted_at(cm: Mapping[str, Any], versions: Mapping[str, Any],
                    current: int) -> datetime | None:
        """When the whole secret was soft-deleted, or None. Deleted means: keysafe
        marked the current version deleted and KV v2 shows it deleted or destroyed, or
        the current version's deletion time has passed (``bao kv delete``). A future
        deletion time (``delete_version_after``) is only a schedule."""
        v = versions.get(str(current)) or {}
        mark = (_time(cm.get(_K_DELETED_AT))
                if cm.get(_K_DELETED_VERSION) == str(current) else None)
        gone = _time(v.get("deletion_time"))
        if mark is not None and (v.get("destroyed")
                                 or (gone is not None and gone <= mark + _CLOCK_SKEW)):
            return mark
        if gone is not None and gone <= datetime.now(UTC):
            return gone
        return None

    def _meta_patch(self, path: str, meta: MetadataUpdate | None,
                    actor: str) -> dict[str, str | None]:
        """custom_metadata changes for ``meta``; InvalidValue (before anything is
        written) when a field is over Vault's 512-byte limit for one entry."""
        patch: dict[str, str | None] = {_K_UPDATED_BY: actor}
        if meta is not None:
            for name, key in _FIELD_KEYS.items():
                value = getattr(meta, name)
                if value is not None:
                    patch[key] = _encode_field(name, value)
        for key, text in patch.items():
            if text is not None and len(text.encode()) > _CM_MAX_VALUE_BYTES:
                shown = "actor" if key == _K_UPDATED_BY else key.removeprefix("keysafe_")
                raise InvalidValue(
                    f"{shown} for {path} is {len(text.encode())} bytes; Vault's limit for a "
                    f"custom_metadata entry is {_CM_MAX_VALUE_BYTES} bytes", path=path)
        return patch

    # -- protocol -----------------------------------------------------------------------------
    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        kv = self._kv(path)
        if version is None:
            r = self._call(path, lambda c: c.secrets.kv.v2.read_secret_version(
                kv, mount_point=self.mount, raise_on_deleted_version=True), retry=True)
            d = r["data"]
            return _decode_value(d["data"], self.value_field), int(d["metadata"]["version"])
        if version < 1:
            raise not_found(path, version)
        m = self._read_meta(path)
        if self._deleted_at(m.get("custom_metadata") or {}, m.get("versions") or {},
                            int(m["current_version"])) is not None:
            raise not_found(path)
        info = (m.get("versions") or {}).get(str(version))
        if info is None or info.get("destroyed"):
            raise not_found(path, version)
        try:
            r = self._call(path, lambda c: c.secrets.kv.v2.read_secret_version(
                kv, version=version, mount_point=self.mount, raise_on_deleted_version=True),
                retry=True)
        except NotFound:
            raise not_found(path, version) from None
        return _decode_value(r["data"]["data"], self.value_field), version

    def put(self, path: str, value: str, *, ctx: WriteContext,
            expected_version: int | None = None,
            meta: MetadataUpdate | None = None) -> VersionInfo:
        """A new KV v2 version (with ``cas`` when ``expected_version`` is given), then one
        metadata patch: authors, descriptive fields, max_versions. The value write is
        the commit point; a check-and-set write is retried after an ambiguous failure
        only once a read-back shows it did not land."""
        kv = self._kv(path)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidValue(f"value for {path} is not valid UTF-8 text", path=path) from None
        data = _encode_value(value, self.value_field)
        size = len(json.dumps(data).encode())
        if size > self.max_value_bytes:
            raise ValueTooLarge(
                f"value for {path} is {size} bytes as a KV v2 entry; the Vault backend's "
                f"limit is {self.max_value_bytes} bytes (option max_value_bytes)", path=path)
        patch = self._meta_patch(path, meta, ctx.actor)
        written = self._write(path, kv, data, expected_version)
        n = int(written["version"])
        patch[_author_key(n)] = ctx.actor
        if n == 1:
            patch[_K_CREATED_BY] = ctx.actor
        patch[_K_PATH] = path if path != kv else None
        patch.update(_CLEAR_DELETED)
        keep = min(self.max_versions if self.max_versions > 0 else _TRACKED_AUTHORS,
                   _TRACKED_AUTHORS)
        for old in range(max(1, n - keep - 2), n - keep + 1):
            patch[_author_key(old)] = None  # authors of versions Vault has pruned
        try:
            self._patch_meta(path, patch, max_versions=True)
        except KeysafeError as exc:
            raise type(exc)(f"version {n} of {path} was stored, but its metadata (author, "
                            f"description, tags) was not updated: {exc}", path=path) from exc
        created = _time(written.get("created_time")) or ctx.now
        return VersionInfo(n, created, ctx.actor)

    def _write(self, path: str, kv: str, data: dict[str, Any],
               expected: int | None) -> dict[str, Any]:
        def write(c: Any) -> dict[str, Any]:
            r = c.secrets.kv.v2.create_or_update_secret(kv, data, cas=expected,
                                                        mount_point=self.mount)
            return dict(r["data"])

        if expected is None:
            # Not check-and-set: a retry after an ambiguous failure could add a second
            # version, so a plain write is tried once.
            return self._call(path, write, retry=False, echo=False)
        attempts = 1 + self.retries
        for attempt in range(attempts):
            try:
                return self._call(path, write, retry=False, echo=False)
            except Conflict:
                current = self._current_version(path)
                check_cas(path, expected, current)
                raise Conflict(f"{path} changed during the write (now version {current})",
                               path=path, current_version=current) from None
            except BackendUnavailable:
                try:
                    landed = self._landed(path, kv, data, expected)
                    known = True
                except BackendUnavailable:
                    landed, known = None, False
                if landed is not None:
                    return landed
                if not known or attempt + 1 >= attempts:
                    raise  # the write's failure: nothing was acknowledged
                self._sleep(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _current_version(self, path: str) -> int:
        try:
            return int(self._read_meta(path)["current_version"])
        except NotFound:
            return 0

    def _landed(self, path: str, kv: str, data: dict[str, Any],
                expected: int) -> dict[str, Any] | None:
        """After an ambiguous failure of a cas write: its version info if it was applied,
        None if nothing was written (safe to retry). Conflict if another write won;
        BackendUnavailable if Vault cannot be asked."""
        current = self._current_version(path)
        if current == expected:
            return None
        if current == expected + 1:
            try:
                r = self._call(path, lambda c: c.secrets.kv.v2.read_secret_version(
                    kv, version=current, mount_point=self.mount,
                    raise_on_deleted_version=True), retry=True)
            except NotFound:
                r = None
            if r is not None and r["data"]["data"] == data:
                return dict(r["data"]["metadata"])
        check_cas(path, expected, current)
        raise AssertionError("unreachable")  # pragma: no cover

    def describe(self, path: str, *, include_deleted: bool = False) -> SecretMetadata:
        meta = self._to_meta(path, self._read_meta(path))
        if meta.deleted_at is not None and not include_deleted:
            raise not_found(path)
        return meta

    def list(self, prefix: str, *,
             include_deleted: bool = False) -> builtins.list[SecretMetadata]:
        """A LIST walk of the metadata tree from the prefix's folder, keeping paths that
        start with the raw prefix; results carry the prefix's leading '/' if it has one."""
        lead = "/" if prefix.startswith("/") else ""
        kv_prefix = prefix[1:] if lead else prefix
        found = self._walk(kv_prefix)
        out = [m for m in self._metas([lead + kv for kv in found])
               if include_deleted or m.deleted_at is None]
        return sorted(out, key=lambda m: m.path)

    def foreign_names(self, prefix: str) -> builtins.list[str]:
        """KV paths starting with ``prefix``: LIST calls alone (no metadata reads), so
        a policy with ``list`` and ``read`` on the other team's paths suffices."""
        lead = "/" if prefix.startswith("/") else ""
        return sorted(lead + kv for kv in self._walk(prefix[1:] if lead else prefix))

    def _walk(self, prefix: str) -> builtins.list[str]:
        """KV paths of secrets under ``prefix`` (a raw string prefix)."""
        folders = [prefix[: prefix.rfind("/") + 1]]
        out: builtins.list[str] = []

        def list_folder(folder: str) -> Any:
            return self._call(folder or None, lambda c: c.secrets.kv.v2.list_secrets(
                folder, mount_point=self.mount), retry=True)

        while folders:
            folder = folders.pop()
            try:
                r = list_folder(folder)
            except NotFound:
                continue
            for key in r["data"]["keys"]:
                full = folder + key
                if key.endswith("/"):
                    if full.startswith(prefix) or prefix.startswith(full):
                        folders.append(full)
                elif full.startswith(prefix):
                    out.append(full)
        return out

    def _metas(self, paths: builtins.list[str]) -> Iterator[SecretMetadata]:
        def one(p: str) -> SecretMetadata | None:
            try:
                return self._to_meta(p, self._read_meta(p))
            except (NotFound, InvalidName):  # purged since the LIST; a key keysafe can't name
                return None

        if len(paths) <= 1:
            results = [one(p) for p in paths]
        else:
            with ThreadPoolExecutor(max_workers=min(8, len(paths))) as pool:
                results = builtins.list(pool.map(one, paths))
        return (m for m in results if m is not None)

    def delete(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        """Soft delete of the whole secret: mark it (metadata first), then delete its
        current version in KV v2; older versions stay hidden behind the mark."""
        meta = self.describe(path)
        self._patch_meta(path, {_K_DELETED_AT: ctx.now.isoformat(),
                                _K_DELETED_BY: ctx.actor,
                                _K_DELETED_VERSION: str(meta.current_version)})
        kv = self._kv(path)
        self._call(path, lambda c: c.secrets.kv.v2.delete_secret_versions(
            kv, [meta.current_version], mount_point=self.mount), retry=True)
        return self.describe(path, include_deleted=True)

    def ping(self) -> None:
        """sys/health: BackendUnavailable unless Vault answers unsealed and initialised
        (a standby counts as up)."""
        r = self._call(None, lambda c: c.adapter.request(
            "GET", "/v1/sys/health", raise_exception=False,
            params={"standbyok": "true", "perfstandbyok": "true"}), retry=True)
        if isinstance(r, dict):
            return
        status = int(r.status_code)
        if status in (429, 472, 473):  # standby, DR secondary, performance standby
            return
        try:
            health = r.json()
        except ValueError:
            health = {}
        state = ("sealed" if isinstance(health, dict) and health.get("sealed")
                 else "not initialised" if isinstance(health, dict)
                 and health.get("initialized") is False else "not ready")
        raise BackendUnavailable(f"Vault at {self.url} is {state} "
                                 f"(sys/health answered {status})")

    def close(self) -> None:
        c, self._client_obj = self._client_obj, None
        if c is not None:
            c.adapter.close()

    # -- capabilities -----------------------------------------------------------------------
    def versions(self, path: str) -> builtins.list[VersionInfo]:
        m = self._read_meta(path)
        cm: Mapping[str, Any] = m.get("custom_metadata") or {}
        out = []
        for key, info in (m.get("versions") or {}).items():
            n = int(key)
            out.append(VersionInfo(n, _time(info.get("created_time")) or datetime.now(UTC),
                                   cm.get(_author_key(n)), bool(info.get("destroyed"))))
        return sorted(out, key=lambda i: i.version)

    def destroy(self, path: str, versions: builtins.list[int], *,
                ctx: WriteContext) -> builtins.list[int]:
        """KV v2 destroy of those given versions that exist and are not destroyed yet."""
        known: Mapping[str, Any] = self._read_meta(path).get("versions") or {}
        todo: builtins.list[int] = []
        for v in versions:
            info = known.get(str(v))
            if info is not None and not info.get("destroyed") and v not in todo:
                todo.append(v)
        if todo:
            kv = self._kv(path)
            self._call(path, lambda c: c.secrets.kv.v2.destroy_secret_versions(
                kv, todo, mount_point=self.mount), retry=True)
        return todo

    def restore(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        """Undelete the current version, then clear the mark; a live secret is left as
        it is."""
        m = self._read_meta(path)
        meta = self._to_meta(path, m)
        if meta.deleted_at is None:
            return meta
        info = (m.get("versions") or {}).get(str(meta.current_version)) or {}
        if info.get("deletion_time"):
            kv = self._kv(path)
            self._call(path, lambda c: c.secrets.kv.v2.undelete_secret_versions(
                kv, [meta.current_version], mount_point=self.mount), retry=True)
        self._patch_meta(path, _CLEAR_DELETED)
        return self.describe(path, include_deleted=True)

    def purge(self, path: str, *, ctx: WriteContext) -> None:
        """Delete the KV v2 metadata: every version, unrecoverably."""
        kv = self._kv(path)
        self._call(path, lambda c: c.secrets.kv.v2.read_secret_metadata(
            kv, mount_point=self.mount), retry=True)
        self._call(path, lambda c: c.secrets.kv.v2.delete_metadata_and_all_versions(
            kv, mount_point=self.mount), retry=True)

    def deleted_before(self, cutoff: datetime) -> builtins.list[str]:
        """Walks the whole mount: soft-deleted secrets whose deletion is before cutoff."""
        out = []
        for kv in self._walk(""):
            try:
                m = self._read_meta(kv)
            except NotFound:
                continue
            meta = self._to_meta(kv, m)
            if meta.deleted_at is not None and meta.deleted_at < cutoff:
                recorded = (m.get("custom_metadata") or {}).get(_K_PATH)
                if isinstance(recorded, str) and recorded.lstrip("/") == kv:
                    out.append(recorded)
                else:
                    out.append(kv)
        return sorted(out)

    def update_metadata(self, path: str, meta: MetadataUpdate, *,
                        ctx: WriteContext) -> SecretMetadata:
        self._read_meta(path)
        self._patch_meta(path, self._meta_patch(path, meta, ctx.actor))
        return self.describe(path, include_deleted=True)
