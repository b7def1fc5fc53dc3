"""GCP Secret Manager: one secret per keysafe path, keysafe versions are GCP versions.

How keysafe's model maps onto Secret Manager's (docs/backends/gcp.md has the whole
story):

- Names. A path becomes a secret id through the reversible, collision-free escape
  code in ``_names`` (``/`` -> ``--``, ``-`` -> ``-h``, ``.`` -> ``-d``).
- Versions are GCP's own: integers from 1, assigned by AddSecretVersion, read with
  AccessSecretVersion ``.../versions/N``. The secret's label ``keysafe_version`` holds
  the committed current version, ``keysafe_floor`` the oldest one kept: versions that
  fall out of ``max_versions`` are destroyed (DestroySecretVersion) and hidden.
- Check-and-set. AddSecretVersion takes no precondition, so a writer first reserves
  the next version with an etag-guarded UpdateSecret that sets the label
  ``keysafe_pending``; of two writers that read the same etag exactly one succeeds,
  the other waits for the first to commit and then compares versions again. The
  reservation is released by the commit (another etag-guarded UpdateSecret). A
  reservation older than ``lock_timeout`` is taken to be a writer that died and is
  taken over: the window left is a writer that stalls longer than that (or whose
  clock is that far off) between reserving and adding its version; both writes then
  land, as consecutive versions, though both expected the same current one.
- Soft delete: Secret Manager cannot soft-delete a secret, so keysafe marks it (label
  ``keysafe_deleted_at``) and then disables its enabled versions, which keeps other
  readers (gcloud, External Secrets) from reading it too. Restore enables them again;
  purge is DeleteSecret. Destroy is DestroySecretVersion.
- Metadata (description, type, tags, rotation, expiry, who and when, each version's
  writer) is kept in the secret's annotations under ``keysafe-`` (16 KiB in all).

Limits checked before calling: payload 64 KiB, secret id 255 characters, annotations
16 KiB.
"""

from __future__ import annotations

import builtins
import json
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, partial
from typing import Any, TypeVar

from keysafe.backends._names import GCP as CODEC
from keysafe.backends._sdk import require_sdk
from keysafe.backends._time import aware as _aware
from keysafe.backends._time import iso as _iso
from keysafe.backends._time import parse_iso as _parse_iso
from keysafe.backends.base import WriteContext, check_cas, not_found
from keysafe.config import Settings
from keysafe.errors import (
    BackendUnavailable,
    ConfigError,
    Conflict,
    IntegrityError,
    InvalidName,
    InvalidValue,
    KeysafeError,
    PermissionDenied,
    ValueTooLarge,
)
from keysafe.models import MetadataUpdate, SecretMetadata, VersionInfo

STORE = "GCP Secret Manager"
#: A secret id as Secret Manager accepts it (another tool's, read by read_foreign).
_FOREIGN_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
MAX_VALUE_BYTES = 65_536
#: Annotation keys and values together must stay under 16 KiB.
MAX_ANNOTATION_BYTES = 16 * 1024

# Labels are filterable in ListSecrets; their keys use '_' so that a filter such as
# ``labels.keysafe_deleted_at:*`` needs no quoting.
_L_VERSION = "keysafe_version"
_L_FLOOR = "keysafe_floor"
_L_DELETED = "keysafe_deleted_at"  # epoch microseconds of the soft delete
_L_PENDING = "keysafe_pending"  # "<version>-<token>" of a write in progress
_L_PENDING_AT = "keysafe_pending_at"  # epoch milliseconds of the reservation
_A = "keysafe-"
_A_DESCRIPTION = _A + "description"
_A_TYPE = _A + "type"
_A_TAGS = _A + "tags"
_A_ROTATION = _A + "rotation-days"
_A_EXPIRES = _A + "expires-at"
_A_ROTATED = _A + "last-rotated"
_A_CREATED_AT = _A + "created-at"
_A_CREATED_BY = _A + "created-by"
_A_UPDATED_AT = _A + "updated-at"
_A_UPDATED_BY = _A + "updated-by"
_A_DELETED_BY = _A + "deleted-by"
_A_DISABLED = _A + "disabled-versions"  # the versions a soft delete disabled
_A_VERSION = _A + "v-"  # + N: {"at": ..., "by": ...} for version N

_ENABLED, _DISABLED, _DESTROYED = 1, 2, 3
_T = TypeVar("_T")


class _Stale(Exception):
    """An etag-guarded write lost to another writer (or a create to an existing
    secret): read again and retry."""


@dataclass(frozen=True)
class _State:
    """One secret as Secret Manager returned it, with keysafe's labels decoded."""

    path: str
    name: str
    etag: str
    labels: dict[str, str]
    annotations: dict[str, str]
    create_time: datetime
    current: int
    floor: int
    deleted_at: datetime | None
    pending: str | None
    pending_at: int | None
    keysafe: bool  # False for a secret another tool created (no keysafe labels)

    @property
    def pending_version(self) -> int | None:
        if not self.pending:
            return None
        head = self.pending.split("-", 1)[0]
        return int(head) if head.isdigit() else None

    def reserved_by_other(self, token: str | None, lease_ms: int) -> bool:
        """A fresh reservation of a version not yet committed, not ours."""
        n = self.pending_version
        if n is None or n <= self.current or self.pending_at is None:
            return False
        if token is not None and self.holds(token):
            return False
        return _ms() - self.pending_at < lease_ms

    def holds(self, token: str) -> bool:
        """Whether the reservation is the one made with ``token``."""
        return bool(self.pending) and str(self.pending).endswith("-" + token)

    def disabled_by_delete(self) -> builtins.list[int]:
        raw = self.annotations.get(_A_DISABLED, "")
        return [int(x) for x in raw.split(",") if x.isdigit()]


def _ms() -> int:
    return int(time.time() * 1000)


def _micros(d: datetime) -> int:
    return int(d.timestamp() * 1_000_000)


def _from_micros(raw: str | None) -> datetime | None:
    if not raw or not raw.isdigit():
        return None
    return datetime.fromtimestamp(int(raw) / 1_000_000, UTC)





def _int(raw: str | None, default: int) -> int:
    return int(raw) if raw and raw.isdigit() else default


def crc32c(data: bytes) -> int:
    """CRC-32C of a payload: Secret Manager verifies it on write and returns it on read."""
    crc = 0xFFFFFFFF
    table = _crc_table()
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@cache
def _crc_table() -> tuple[int, ...]:
    out = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        out.append(c)
    return tuple(out)


def _annotation_bytes(annotations: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())


def api_status(exc: BaseException) -> str:
    """The gRPC status name of a Google API error (REST carries it in the error body)."""
    code = getattr(exc, "grpc_status_code", None)
    if code is not None and hasattr(code, "name"):
        return str(code.name)
    response = getattr(exc, "response", None)
    try:
        return str(response.json()["error"]["status"])  # type: ignore[union-attr]
    except Exception:
        return ""


class GcpSecretManagerBackend:
    """keysafe on GCP Secret Manager, through the official client library.

    Capabilities: versions and destroy (Versioned), soft delete with restore and purge
    (Recoverable, kept by keysafe's labels since Secret Manager has no soft delete),
    metadata updates (MetadataWritable).

    Raises NotFound, Conflict, InvalidName, InvalidValue, ValueTooLarge,
    PermissionDenied, IntegrityError (a payload whose checksum or text does not
    verify), BackendUnavailable (retryable: throttling, timeouts, an unreachable
    endpoint) and ConfigError (no project or credentials; the SDK missing).
    """

    name = "gcp"
    remote = True  # calls cross a network: servers run them off the event loop
    store = STORE

    def __init__(self, *, project: str | None = None, endpoint: str | None = None,
                 credentials: Any = None, transport: str = "rest",
                 max_versions: int = 10, lock_timeout: float = 30.0,
                 timeout: float = 30.0, retry_timeout: float = 10.0,
                 server_filter: bool = True) -> None:
        sm = require_sdk("google.cloud.secretmanager_v1", "gcp")
        self._exc = require_sdk("google.api_core.exceptions", "gcp")
        retry_mod = require_sdk("google.api_core.retry", "gcp")
        if max_versions < 0:
            raise ConfigError(f"{STORE}: max_versions must be 0 (keep all) or more")
        if lock_timeout <= 0 or timeout <= 0 or retry_timeout < 0:
            raise ConfigError(f"{STORE}: lock_timeout and timeout must be positive")
        if credentials is None or project is None:
            credentials, project = self._default_credentials(credentials, project)
        self.project = project
        self.max_versions = max_versions
        self.lock_timeout = lock_timeout
        self.timeout = timeout
        self.server_filter = server_filter
        self._parent = f"projects/{project}"
        self._transient = self._transient_errors()
        # Reads are retried with backoff on throttling and outages; writes never are
        # by the SDK (each write here is made safe to repeat, or checked, by hand).
        self._read_retry = retry_mod.Retry(
            predicate=retry_mod.if_exception_type(*self._transient), initial=0.1,
            maximum=2.0, multiplier=2.0, timeout=retry_timeout)
        options: dict[str, Any] = {}
        if endpoint:
            options["api_endpoint"] = endpoint
        try:
            self._client = sm.SecretManagerServiceClient(
                credentials=credentials, transport=transport,
                client_options=options or None)
        except Exception as exc:  # DefaultCredentialsError, bad options
            raise ConfigError(f"{STORE}: cannot create a client ({type(exc).__name__}: "
                              f"{exc})") from exc

    @staticmethod
    def _default_credentials(credentials: Any, project: str | None) -> tuple[Any, str]:
        """Application-default credentials, and the project they name when none was
        given (GOOGLE_CLOUD_PROJECT, GCLOUD_PROJECT or spec 003's GCP_PROJECT_ID win
        over it)."""
        project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") \
            or os.environ.get("GCLOUD_PROJECT") or os.environ.get("GCP_PROJECT_ID")
        if credentials is None:
            auth = require_sdk("google.auth", "gcp")
            try:
                credentials, found = auth.default(
                    scopes=["https://www.googleapis.com/auth/cloud-platform"])
            except Exception as exc:  # DefaultCredentialsError
                raise ConfigError(
                    f"{STORE}: no credentials ({exc}); run `gcloud auth "
                    "application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
                ) from exc
            project = project or found
        if not project:
            raise ConfigError(f"{STORE} needs a project: set GOOGLE_CLOUD_PROJECT or the "
                              "profile's `project` option")
        return credentials, project

    @classmethod
    def from_settings(cls, settings: Settings) -> GcpSecretManagerBackend:
        """Options from the profile's table in keysafe.toml: project, endpoint,
        transport, max_versions, lock_timeout, timeout, retry_timeout, server_filter.
        The project falls back to GOOGLE_CLOUD_PROJECT, credentials to
        application-default credentials."""
        opts = dict(settings.backend_options)
        allowed = {"project", "endpoint", "transport", "max_versions", "lock_timeout",
                   "timeout", "retry_timeout", "server_filter"}
        unknown = sorted(set(opts) - allowed)
        if unknown:
            raise ConfigError(f"{STORE}: unknown option {unknown[0]!r}; allowed: "
                              f"{', '.join(sorted(allowed))}")
        try:
            kwargs: dict[str, Any] = {
                "max_versions": int(opts.get("max_versions", settings.max_versions)),
                "lock_timeout": float(opts.get("lock_timeout", 30.0)),
                "timeout": float(opts.get("timeout", 30.0)),
                "retry_timeout": float(opts.get("retry_timeout", 10.0)),
            }
        except (TypeError, ValueError):
            raise ConfigError(f"{STORE}: max_versions, lock_timeout, timeout and "
                              "retry_timeout must be numbers") from None
        for key in ("project", "endpoint", "transport"):
            if opts.get(key):
                kwargs[key] = str(opts[key])
        if "server_filter" in opts:
            kwargs["server_filter"] = bool(opts["server_filter"])
        return cls(**kwargs)

    def __repr__(self) -> str:
        return f"GcpSecretManagerBackend(project={self.project!r})"

    # -- errors: every SDK call goes through here -----------------------------------------
    def _transient_errors(self) -> tuple[type[BaseException], ...]:
        e = self._exc
        found: builtins.list[type[BaseException]] = [
            e.TooManyRequests, e.ServiceUnavailable, e.GatewayTimeout,
            e.InternalServerError, e.BadGateway, e.RetryError]
        try:
            requests_exc = require_sdk("requests.exceptions", "gcp")
            found += [requests_exc.ConnectionError, requests_exc.Timeout]
        except ConfigError:  # pragma: no cover - requests comes with the REST transport
            pass
        auth_exc = require_sdk("google.auth.exceptions", "gcp")
        found.append(auth_exc.TransportError)
        return tuple(found)

    def _translate(self, exc: BaseException, path: str, version: int | None, *,
                   precondition: str) -> BaseException:
        """The keysafe error for a Secret Manager failure (foreign errors are mapped
        here and nowhere else). ``precondition`` says what FAILED_PRECONDITION means
        for the call: a disabled/destroyed version ("not_found") or a lost race
        ("stale")."""
        e = self._exc
        status = api_status(exc)
        if isinstance(exc, e.NotFound):
            return not_found(path, version)
        if isinstance(exc, e.Forbidden | e.Unauthorized):
            # The denial names the principal and the permission: what an operator needs.
            why = status or f"HTTP {getattr(exc, 'code', '')}"
            return PermissionDenied(f"{STORE} denied access to {path} ({why}: "
                                    f"{str(getattr(exc, 'message', ''))[:300]})", path=path)
        if isinstance(exc, self._transient):
            return BackendUnavailable(f"{STORE} is unavailable or throttling "
                                      f"({type(exc).__name__}); retry later", path=path)
        if isinstance(exc, e.Conflict):  # ALREADY_EXISTS, ABORTED (etag mismatch)
            return _Stale()
        if isinstance(exc, e.BadRequest) and status == "FAILED_PRECONDITION":
            return not_found(path, version) if precondition == "not_found" else _Stale()
        if isinstance(exc, e.BadRequest):
            # The server's text is left out: validation messages may echo the request.
            return InvalidValue(f"{STORE} refused the request for {path} "
                                f"({status or 'HTTP 400'})", path=path)
        if isinstance(exc, e.GoogleAPICallError):
            return KeysafeError(f"{STORE} failed for {path} ({type(exc).__name__})",
                                path=path)
        return exc

    @contextmanager
    def _errors(self, path: str, version: int | None = None, *,
                precondition: str = "stale") -> Iterator[None]:
        try:
            yield
        except KeysafeError:
            raise
        except _Stale:
            raise
        except Exception as exc:
            mapped = self._translate(exc, path, version, precondition=precondition)
            if mapped is exc:
                raise
            raise mapped from exc

    def _read(self, fn: Callable[..., _T], request: dict[str, Any], path: str,
              version: int | None = None, *, precondition: str = "not_found") -> _T:
        with self._errors(path, version, precondition=precondition):
            return fn(request=request, retry=self._read_retry, timeout=self.timeout)

    def _write(self, fn: Callable[..., _T], request: dict[str, Any], path: str,
               version: int | None = None) -> _T:
        with self._errors(path, version):
            return fn(request=request, retry=None, timeout=self.timeout)

    # -- names and state ------------------------------------------------------------------
    def _secret_name(self, path: str) -> str:
        return f"{self._parent}/secrets/{CODEC.encode(path)}"

    def _state_of(self, path: str, secret: Any) -> _State:
        labels = dict(secret.labels)
        annotations = dict(secret.annotations)
        keysafe = _L_VERSION in labels
        current = _int(labels.get(_L_VERSION), 0)
        if not keysafe:
            current = self._latest_number(path, secret.name)
        return _State(
            path=path, name=secret.name, etag=secret.etag, labels=labels,
            annotations=annotations, create_time=_aware(secret.create_time),
            current=current, floor=_int(labels.get(_L_FLOOR), 1),
            deleted_at=_from_micros(labels.get(_L_DELETED)),
            pending=labels.get(_L_PENDING) or None,
            pending_at=_int(labels.get(_L_PENDING_AT), 0) or None, keysafe=keysafe)

    def _latest_number(self, path: str, name: str) -> int:
        """The highest version number of a secret another tool created."""
        try:
            v = self._read(self._client.get_secret_version,
                           {"name": f"{name}/versions/latest"}, path)
        except KeysafeError as exc:
            if exc.code == "not_found":
                return 0
            raise
        return int(str(v.name).rsplit("/", 1)[1])

    def _state(self, path: str) -> _State | None:
        try:
            secret = self._read(self._client.get_secret, {"name": self._secret_name(path)},
                                path)
        except KeysafeError as exc:
            if exc.code == "not_found":
                return None
            raise
        return self._state_of(path, secret)

    def _live(self, path: str, *, include_deleted: bool = False) -> _State:
        st = self._state(path)
        if st is None or st.current == 0 or (st.deleted_at and not include_deleted):
            raise not_found(path)
        return st

    def _update(self, st: _State, labels: dict[str, str],
                annotations: dict[str, str]) -> _State:
        """An etag-guarded UpdateSecret; raises _Stale when the secret changed since
        ``st`` was read."""
        size = _annotation_bytes(annotations)
        if size >= MAX_ANNOTATION_BYTES:
            raise InvalidValue(
                f"metadata of {st.path} needs {size} bytes of {STORE} annotations; the "
                f"limit is {MAX_ANNOTATION_BYTES}", path=st.path)
        secret = self._write(self._client.update_secret, {
            "secret": {"name": st.name, "labels": labels, "annotations": annotations,
                       "etag": st.etag},
            "update_mask": {"paths": ["labels", "annotations"]}}, st.path)
        return self._state_of(st.path, secret)

    def _versions_raw(self, st: _State) -> dict[int, Any]:
        out: dict[int, Any] = {}
        pager = self._read(self._client.list_secret_versions,
                           {"parent": st.name, "page_size": 100}, st.path)
        with self._errors(st.path, precondition="not_found"):
            for v in pager:
                out[int(str(v.name).rsplit("/", 1)[1])] = v
        return out

    def _version_op(self, st: _State, op: str, n: int) -> bool:
        """Enable, disable or destroy version ``n``; False when it was not in a state
        that allows it (already destroyed, or gone)."""
        fn = getattr(self._client, f"{op}_secret_version")
        try:
            self._write(fn, {"name": f"{st.name}/versions/{n}"}, st.path, n)
        except _Stale:
            return False
        except KeysafeError as exc:
            if exc.code == "not_found":
                return False
            raise
        return True

    # -- metadata -------------------------------------------------------------------------
    def _meta(self, st: _State) -> SecretMetadata:
        a = st.annotations
        created = _parse_iso(a.get(_A_CREATED_AT)) or st.create_time
        updated = _parse_iso(a.get(_A_UPDATED_AT)) or created
        tags: dict[str, str] = {}
        if a.get(_A_TAGS):
            try:
                tags = {str(k): str(v) for k, v in json.loads(a[_A_TAGS]).items()}
            except (ValueError, AttributeError):
                tags = {}
        rotation = a.get(_A_ROTATION)
        return SecretMetadata(
            path=st.path, current_version=st.current, created_at=created,
            updated_at=updated, created_by=a.get(_A_CREATED_BY),
            updated_by=a.get(_A_UPDATED_BY), description=a.get(_A_DESCRIPTION),
            secret_type=a.get(_A_TYPE), tags=tags, deleted_at=st.deleted_at,
            last_rotated=_parse_iso(a.get(_A_ROTATED)),
            rotation_days=int(rotation) if rotation and rotation.isdigit() else None,
            expires_at=_parse_iso(a.get(_A_EXPIRES)),
            versions=max(0, st.current - st.floor + 1))

    @staticmethod
    def _apply(annotations: dict[str, str], meta: MetadataUpdate | None) -> None:
        if meta is None:
            return
        fields: dict[str, tuple[str, Any]] = {
            "description": (_A_DESCRIPTION, meta.description),
            "secret_type": (_A_TYPE, meta.secret_type),
            "rotation_days": (_A_ROTATION, meta.rotation_days),
            "expires_at": (_A_EXPIRES, meta.expires_at),
            "last_rotated": (_A_ROTATED, meta.last_rotated),
        }
        for key, value in fields.values():
            if value is None:
                continue
            annotations[key] = _iso(value) if isinstance(value, datetime) else str(value)
        if meta.tags is not None:
            if meta.tags:
                annotations[_A_TAGS] = json.dumps(dict(meta.tags), sort_keys=True,
                                                  ensure_ascii=False)
            else:
                annotations.pop(_A_TAGS, None)

    def _trim_versions(self, annotations: dict[str, str], floor: int) -> None:
        """Drop the stamps of versions no longer kept, and the oldest ones when the
        annotations would not fit (their times then come from Secret Manager)."""
        numbered = sorted(int(k[len(_A_VERSION):]) for k in annotations
                          if k.startswith(_A_VERSION) and k[len(_A_VERSION):].isdigit())
        for n in numbered:
            if n < floor or _annotation_bytes(annotations) >= MAX_ANNOTATION_BYTES - 512:
                del annotations[f"{_A_VERSION}{n}"]

    # -- reading --------------------------------------------------------------------------
    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        """One AccessSecretVersion call (``latest``, or ``N``), so a reader needs only
        ``roles/secretmanager.secretAccessor``. Deleted secrets have their versions
        disabled and pruned versions are destroyed, and Secret Manager refuses to
        access either: NotFound."""
        if version is not None and version < 1:
            raise not_found(path, version)
        ref = "latest" if version is None else str(version)
        return self._access(f"{self._secret_name(path)}/versions/{ref}", path, version)

    def _access(self, name: str, path: str, version: int | None = None) -> tuple[str, int]:
        """One AccessSecretVersion of the version resource ``name``: its text and number,
        the payload's checksum checked."""
        r = self._read(self._client.access_secret_version, {"name": name}, path, version)
        n = int(str(r.name).rsplit("/", 1)[1])
        data = bytes(r.payload.data)
        if "data_crc32c" in r.payload and int(r.payload.data_crc32c) != crc32c(data):
            raise IntegrityError(f"{path} version {n}: the payload's checksum does not "
                                 f"match what {STORE} stored", path=path)
        try:
            return data.decode("utf-8"), n
        except UnicodeDecodeError:
            raise IntegrityError(f"{path} version {n} is not UTF-8 text", path=path) from None

    # -- other tools' secrets (ForeignReadable) -------------------------------------------
    def foreign_names(self, prefix: str) -> builtins.list[str]:
        """Ids starting with ``prefix`` of secrets other tools made
        (``aragora-anthropic-key``): keysafe's own, labelled, are left out."""
        if prefix and not _FOREIGN_ID.fullmatch(prefix):
            return []  # no secret id can start with it
        request: dict[str, Any] = {"parent": self._parent, "page_size": 250}
        if prefix and self.server_filter:
            request["filter"] = f'name:"{prefix}"'
        ids = (str(secret.name).rsplit("/", 1)[1] for secret in self._list(request, prefix)
               if _L_VERSION not in secret.labels)
        return sorted(i for i in ids if i.startswith(prefix))

    def read_foreign(self, name: str) -> str:
        """The latest version of the secret id ``name``."""
        if not _FOREIGN_ID.fullmatch(name):
            raise InvalidName(f"{name!r} is not a {STORE} secret id (1-255 letters, digits, "
                              "'_' and '-')")
        return self._access(f"{self._parent}/secrets/{name}/versions/latest", name)[0]

    def describe(self, path: str, *, include_deleted: bool = False) -> SecretMetadata:
        return self._meta(self._live(path, include_deleted=include_deleted))

    def list(self, prefix: str, *,
             include_deleted: bool = False) -> builtins.list[SecretMetadata]:
        """Secrets whose path starts with ``prefix``. The encoding keeps prefixes, so
        Secret Manager is asked only for ids containing the encoded prefix (a
        ``name:`` filter, a substring match); names are then decoded and compared."""
        request: dict[str, Any] = {"parent": self._parent, "page_size": 250}
        encoded = CODEC.encode_prefix(prefix)
        if encoded and self.server_filter:
            request["filter"] = f'name:"{encoded}"'
        out = []
        for secret in self._list(request, prefix):
            path = CODEC.decode(str(secret.name).rsplit("/", 1)[1])
            if path is None or not path.startswith(prefix):
                continue
            st = self._state_of(path, secret)
            if st.current == 0 or (st.deleted_at and not include_deleted):
                continue
            out.append(self._meta(st))
        return sorted(out, key=lambda m: m.path)

    def _list(self, request: dict[str, Any], what: str) -> Iterator[Any]:
        pager = self._read(self._client.list_secrets, request, what)
        with self._errors(what):
            yield from pager

    def versions(self, path: str) -> builtins.list[VersionInfo]:
        st = self._live(path, include_deleted=True)
        raw = self._versions_raw(st)
        out = []
        for n in range(max(1, st.floor), st.current + 1):
            v = raw.get(n)
            if v is None:
                continue
            stamp = self._stamp(st, n)
            out.append(VersionInfo(
                n, _parse_iso(stamp.get("at")) or _aware(v.create_time), stamp.get("by"),
                destroyed=int(v.state) == _DESTROYED))
        return out

    @staticmethod
    def _stamp(st: _State, n: int) -> dict[str, str]:
        try:
            found = json.loads(st.annotations.get(f"{_A_VERSION}{n}", "{}"))
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}

    def ping(self) -> None:
        self._read(self._client.list_secrets, {"parent": self._parent, "page_size": 1},
                   self._parent)

    def close(self) -> None:
        transport = getattr(self._client, "transport", None)
        if transport is not None:
            transport.close()

    # -- writing --------------------------------------------------------------------------
    def put(self, path: str, value: str, *, ctx: WriteContext,
            expected_version: int | None = None,
            meta: MetadataUpdate | None = None) -> VersionInfo:
        name = self._secret_name(path)
        data = value.encode("utf-8")
        if len(data) > MAX_VALUE_BYTES:
            raise ValueTooLarge(f"value for {path} is {len(data)} bytes; {STORE} allows "
                                f"at most {MAX_VALUE_BYTES}", path=path)
        token = uuid.uuid4().hex[:12]
        st = self._reserve(path, name, token, ctx, expected_version, meta)
        reserved = st.current + 1
        number = self._add_version(st, data, reserved)
        if self.max_versions > 0:
            for old in range(max(1, st.floor), number - self.max_versions + 1):
                self._version_op(st, "destroy", old)
        self._commit(path, number, token, ctx, meta)
        return VersionInfo(number, ctx.now, ctx.actor)

    def _reserve(self, path: str, name: str, token: str, ctx: WriteContext,
                 expected: int | None, meta: MetadataUpdate | None) -> _State:
        """Wait for any other writer's reservation, compare versions, and reserve the
        next one for this writer (returns the state the reservation was made on)."""
        lease_ms = int(self.lock_timeout * 1000)
        deadline = time.monotonic() + 2 * self.lock_timeout + 5
        pause = 0.01
        while True:
            if time.monotonic() > deadline:
                raise BackendUnavailable(f"{path}: other writers kept it busy; retry later",
                                         path=path)
            st = self._state(path)
            if st is not None and st.reserved_by_other(token, lease_ms):
                time.sleep(pause * (1 + random.random()))
                pause = min(pause * 1.5, 0.25)
                continue
            current = st.current if st is not None else 0
            check_cas(path, expected, current)
            pending = f"{current + 1}-{token}"
            try:
                if st is None:
                    return self._create(path, name, pending, ctx, meta)
                labels = dict(st.labels)
                labels.update({_L_PENDING: pending, _L_PENDING_AT: str(_ms()),
                               _L_VERSION: str(current), _L_FLOOR: str(st.floor)})
                annotations = dict(st.annotations)
                if current == 0:  # a secret whose first write never finished
                    annotations.update({_A_CREATED_AT: _iso(ctx.now),
                                        _A_CREATED_BY: ctx.actor})
                self._check_fits(path, annotations, meta)
                return self._settled(path, token,
                                     partial(self._update, st, labels, annotations))
            except _Stale:
                time.sleep(random.uniform(0, pause))
                continue

    def _check_fits(self, path: str, annotations: dict[str, str],
                    meta: MetadataUpdate | None) -> None:
        """Refuse, before writing anything, metadata the annotations cannot hold."""
        trial = dict(annotations)
        self._apply(trial, meta)
        size = _annotation_bytes(trial) + 200  # the new version's stamp
        if size >= MAX_ANNOTATION_BYTES:
            raise InvalidValue(f"metadata of {path} needs about {size} bytes of {STORE} "
                               f"annotations; the limit is {MAX_ANNOTATION_BYTES}",
                               path=path)

    def _settled(self, path: str, token: str, write: Callable[[], _State]) -> _State:
        """Run a reserving write; if its outcome is unknown (timeout, outage), read
        back whether the reservation is ours rather than writing again."""
        try:
            return write()
        except BackendUnavailable:
            try:
                st = self._state(path)
            except KeysafeError:
                st = None
            if st is not None and st.holds(token):
                return st
            raise

    def _create(self, path: str, name: str, pending: str, ctx: WriteContext,
                meta: MetadataUpdate | None) -> _State:
        annotations = {_A_CREATED_AT: _iso(ctx.now), _A_CREATED_BY: ctx.actor}
        self._check_fits(path, annotations, meta)
        labels = {_L_VERSION: "0", _L_FLOOR: "1", _L_PENDING: pending,
                  _L_PENDING_AT: str(_ms())}
        token = pending.split("-", 1)[1]

        def create() -> _State:
            secret = self._write(self._client.create_secret, {
                "parent": self._parent, "secret_id": name.rsplit("/", 1)[1],
                "secret": {"replication": {"automatic": {}}, "labels": labels,
                           "annotations": annotations}}, path)
            return self._state_of(path, secret)

        return self._settled(path, token, create)

    def _add_version(self, st: _State, data: bytes, reserved: int) -> int:
        """AddSecretVersion, never repeated: if its outcome is unknown, the secret's
        latest version says whether it landed."""
        try:
            v = self._write(self._client.add_secret_version, {
                "parent": st.name,
                "payload": {"data": data, "data_crc32c": crc32c(data)}}, st.path)
        except (_Stale, KeysafeError) as exc:
            landed = 0
            if isinstance(exc, BackendUnavailable):
                try:
                    landed = self._latest_number(st.path, st.name)
                except KeysafeError:
                    landed = 0
            if landed >= reserved:
                return landed
            self._release(st.path)
            if isinstance(exc, _Stale):
                raise InvalidValue(f"{STORE} refused the new version of {st.path}",
                                   path=st.path) from None
            raise
        return int(str(v.name).rsplit("/", 1)[1])

    def _release(self, path: str) -> None:
        """Best effort: drop this writer's reservation after a failed write."""
        try:
            st = self._state(path)
            if st is None or not st.pending:
                return
            labels = {k: v for k, v in st.labels.items()
                      if k not in (_L_PENDING, _L_PENDING_AT)}
            self._update(st, labels, dict(st.annotations))
        except (KeysafeError, _Stale):
            return

    def _commit(self, path: str, number: int, token: str, ctx: WriteContext,
                meta: MetadataUpdate | None) -> None:
        """Make ``number`` the current version: labels, metadata and stamps in one
        etag-guarded update, computed afresh if another writer changed the secret
        (a metadata update, a delete: the write then revives the secret)."""
        pause = 0.05
        for _attempt in range(30):
            try:
                st = self._state(path)
                if st is None:
                    raise Conflict(f"{path} was purged while version {number} was being "
                                   "written", path=path)
                if st.deleted_at is not None:
                    for n in st.disabled_by_delete():
                        self._version_op(st, "enable", n)
                labels = dict(st.labels)
                current = max(st.current, number)
                floor = st.floor
                if self.max_versions > 0:
                    floor = max(floor, current - self.max_versions + 1)
                labels.update({_L_VERSION: str(current), _L_FLOOR: str(floor)})
                labels.pop(_L_DELETED, None)
                if st.pending and (st.holds(token) or (st.pending_version or 0) <= current):
                    labels.pop(_L_PENDING, None)
                    labels.pop(_L_PENDING_AT, None)
                annotations = dict(st.annotations)
                for key in (_A_DISABLED, _A_DELETED_BY):
                    annotations.pop(key, None)
                self._apply(annotations, meta)
                annotations.update({
                    _A_UPDATED_AT: _iso(ctx.now), _A_UPDATED_BY: ctx.actor,
                    f"{_A_VERSION}{number}": json.dumps({"at": _iso(ctx.now),
                                                         "by": ctx.actor})})
                self._trim_versions(annotations, floor)
                self._update(st, labels, annotations)
                return
            except _Stale:
                continue
            except BackendUnavailable:
                if _attempt >= 5:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
        raise BackendUnavailable(f"{path}: version {number} was written but could not be "
                                 "made current under contention; retry", path=path)

    def _modify(self, path: str, change: Callable[[_State], tuple[dict[str, str],
                                                                  dict[str, str]] | None],
                *, include_deleted: bool = True) -> _State:
        """Read, change, write with the etag; again while other writers interfere."""
        while True:
            st = self._live(path, include_deleted=include_deleted)
            changed = change(st)
            if changed is None:
                return st
            try:
                return self._update(st, *changed)
            except _Stale:
                continue

    def update_metadata(self, path: str, meta: MetadataUpdate, *,
                        ctx: WriteContext) -> SecretMetadata:
        def change(st: _State) -> tuple[dict[str, str], dict[str, str]]:
            annotations = dict(st.annotations)
            self._apply(annotations, meta)
            annotations.update({_A_UPDATED_AT: _iso(ctx.now), _A_UPDATED_BY: ctx.actor})
            return dict(st.labels), annotations

        return self._meta(self._modify(path, change))

    def delete(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        """Mark the secret deleted, then disable its enabled versions (metadata first:
        if this stops half way, keysafe already treats the secret as deleted)."""
        while True:
            st = self._live(path)
            enabled = sorted(n for n, v in self._versions_raw(st).items()
                             if int(v.state) == _ENABLED)
            labels = dict(st.labels)
            labels[_L_DELETED] = str(_micros(ctx.now))
            annotations = dict(st.annotations)
            annotations[_A_DISABLED] = ",".join(str(n) for n in enabled)
            annotations[_A_DELETED_BY] = ctx.actor
            try:
                done = self._update(st, labels, annotations)
            except _Stale:
                continue
            for n in enabled:
                self._version_op(done, "disable", n)
            return self._meta(done)

    # -- capabilities ---------------------------------------------------------------------
    def restore(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        """Enable the versions the delete disabled, then clear the mark."""
        def change(st: _State) -> tuple[dict[str, str], dict[str, str]] | None:
            if st.deleted_at is None:
                return None
            for n in st.disabled_by_delete():
                self._version_op(st, "enable", n)
            labels = {k: v for k, v in st.labels.items() if k != _L_DELETED}
            annotations = {k: v for k, v in st.annotations.items()
                           if k not in (_A_DISABLED, _A_DELETED_BY)}
            return labels, annotations

        return self._meta(self._modify(path, change))

    def purge(self, path: str, *, ctx: WriteContext) -> None:
        """DeleteSecret: the secret and every version, now and for good."""
        self._write(self._client.delete_secret, {"name": self._secret_name(path)}, path)

    def deleted_before(self, cutoff: datetime) -> builtins.list[str]:
        request = {"parent": self._parent, "page_size": 250,
                   "filter": f"labels.{_L_DELETED}:*"}
        out = []
        for secret in self._list(request, self._parent):
            path = CODEC.decode(str(secret.name).rsplit("/", 1)[1])
            deleted = _from_micros(dict(secret.labels).get(_L_DELETED))
            if path is not None and deleted is not None and deleted < cutoff:
                out.append(path)
        return sorted(out)

    def destroy(self, path: str, versions: builtins.list[int], *,
                ctx: WriteContext) -> builtins.list[int]:
        st = self._live(path, include_deleted=True)
        raw = self._versions_raw(st)
        done = []
        for n in versions:
            v = raw.get(n)
            if v is None or not st.floor <= n <= st.current or int(v.state) == _DESTROYED:
                continue
            if self._version_op(st, "destroy", n):
                done.append(n)
        return done

    # -- the External Secrets Operator reading this store (keysafe.kube) -----------------
    def eso_provider(self) -> dict[str, Any]:
        """The project; the operator authenticates as its own Kubernetes service account
        (Workload Identity, spec 002's annotation)."""
        return {"gcpsm": {"projectID": self.project}}

    def eso_remote_ref(self, path: str) -> dict[str, Any]:
        """The secret id (docs/backends/gcp.md's encoding); the latest version's payload
        is the value as stored."""
        return {"key": CODEC.encode(path)}

    # -- for tests and tools --------------------------------------------------------------
    def secret_id(self, path: str) -> str:
        """The Secret Manager secret id that holds ``path``."""
        return CODEC.encode(path)
