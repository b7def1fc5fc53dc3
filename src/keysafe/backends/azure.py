"""Azure Key Vault: one secret per keysafe path; keysafe's version numbers in tags.

How keysafe's model maps onto Key Vault's (docs/backends/azure.md has the whole
story):

- Names. A path becomes a secret name through the reversible, collision-free escape
  code in ``_names`` (``/`` -> ``--``, ``-`` -> ``-h``, ``.`` -> ``-d``, ``_`` ->
  ``-u``, upper case ``X`` -> ``-cx``: Key Vault compares names case-insensitively).
- Versions. Key Vault's version ids are opaque, so each version keysafe writes
  carries the tag ``keysafe-version`` = N; ``get(version=N)`` lists the versions to
  find it. A version written by another tool (no tag) takes the next number in
  creation order. Versions that fall out of ``max_versions`` are disabled (Key Vault
  cannot delete one version) and hidden; their values stay in the vault until the
  secret is purged. No destroy: the backend is not ``Versioned``.
- Check-and-set. Key Vault has no conditional write. Within one backend object
  (one process) writes to a secret are serialised, so check-and-set holds there.
  Across processes keysafe reads the current number, writes N+1, then lists the
  versions: if another version also claims N+1 and was created earlier (ties: the
  smaller id), this write lost: it is disabled and tagged ``keysafe-void``, and the
  writer gets Conflict (or, without ``expected_version``, tries again). The window:
  two writers in different processes whose writes land in the same second, where the
  one with the larger id checked before the other's write was visible, both succeed;
  and a reader may see a version that is voided a moment later.
- Soft delete is Key Vault's own (``begin_delete_secret``), restore is
  ``begin_recover_deleted_secret``, purge ``purge_deleted_secret``. A put to a deleted
  secret recovers it first (Key Vault keeps the name reserved until then).
- Metadata lives on the current version: ``content_type`` is the secret type; tags
  under ``keysafe-`` hold the description, tags (JSON), rotation, expiry and who and
  when. Key Vault allows 15 tags of 256 characters each per version; keysafe uses at
  most 14 and checks the lengths before writing. Key Vault cannot change a deleted
  secret, so metadata updates need the secret restored first.

Limits checked before calling: value 25 KiB, name 127 characters, tag values 256.
"""

from __future__ import annotations

import builtins
import json
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from keysafe.backends._names import AZURE as CODEC
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
    InvalidName,
    InvalidValue,
    KeysafeError,
    PermissionDenied,
    ValueTooLarge,
)
from keysafe.models import MetadataUpdate, SecretMetadata, VersionInfo

STORE = "Azure Key Vault"
MAX_VALUE_BYTES = 25 * 1024
MAX_TAGS = 15
MAX_TAG_VALUE = 256
MAX_CONTENT_TYPE = 255
#: A secret name as Key Vault accepts it (another tool's, read by read_foreign).
_FOREIGN_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")

_T = "keysafe-"
_T_VERSION = _T + "version"
_T_WRITE = _T + "write"  # a random id per write: finds a write whose answer was lost
_T_AT = _T + "at"
_T_BY = _T + "by"
_T_CREATED_AT = _T + "created-at"
_T_CREATED_BY = _T + "created-by"
_T_UPDATED_AT = _T + "updated-at"
_T_UPDATED_BY = _T + "updated-by"
_T_FLOOR = _T + "floor"
_T_DESCRIPTION = _T + "description"
_T_TAGS = _T + "tags"
_T_ROTATION = _T + "rotation-days"
_T_EXPIRES = _T + "expires-at"
_T_ROTATED = _T + "last-rotated"
_T_VOID = _T + "void"

#: Rounds of read-write-check an unconditional write makes before giving up.
_ROUNDS = 20
_LOCK_STRIPES = 64
_R = TypeVar("_R")





@dataclass(frozen=True)
class _Version:
    """One Key Vault version, as listing (or a write) reports it."""

    vid: str
    tags: dict[str, str]
    content_type: str | None
    enabled: bool
    created: datetime

    @classmethod
    def of(cls, props: Any) -> _Version:
        return cls(str(props.version), dict(props.tags or {}), props.content_type,
                   bool(props.enabled), _aware(props.created_on))

    @property
    def number(self) -> int | None:
        raw = self.tags.get(_T_VERSION, "")
        return int(raw) if raw.isdigit() and int(raw) > 0 else None

    @property
    def void(self) -> bool:
        return _T_VOID in self.tags

    @property
    def order(self) -> tuple[datetime, str]:
        return self.created, self.vid


@dataclass(frozen=True)
class _State:
    """A secret: its numbered versions and its head (the current version)."""

    path: str
    numbered: dict[int, _Version] = field(default_factory=dict)
    deleted_at: datetime | None = None
    deleted_head: _Version | None = None  # for a deleted secret: its latest version

    @property
    def head(self) -> _Version | None:
        if self.deleted_head is not None:
            return self.deleted_head
        return self.numbered[max(self.numbered)] if self.numbered else None

    @property
    def current(self) -> int:
        if self.deleted_head is not None:
            return self.deleted_head.number or 1
        return max(self.numbered, default=0)

    @property
    def floor(self) -> int:
        head = self.head
        raw = head.tags.get(_T_FLOOR, "") if head else ""
        return int(raw) if raw.isdigit() else 1

    @property
    def kept(self) -> int:
        return max(0, self.current - self.floor + 1)


def _index(versions: builtins.list[_Version]) -> dict[int, _Version]:
    """keysafe numbers for a secret's versions. Tagged versions have theirs; an
    untagged one (written by another tool) takes the next number in creation order;
    voided versions have none. Of two versions claiming one number, the earlier
    (created, then id) holds it: the rule every writer applies to settle a race."""
    out: dict[int, _Version] = {}
    counter = 0
    for v in sorted(versions, key=lambda v: v.order):
        if v.void:
            continue
        n = v.number
        if n is None:
            n = counter + 1
        counter = max(counter, n)
        out.setdefault(n, v)
    return out


def no_credentials(exc: BaseException, client_auth_error: type[BaseException]) -> str | None:
    """Why no Azure token could be had (None: ``exc`` is not that). azure-identity
    raises ClientAuthenticationError with no HTTP response when no credential source
    works (DefaultAzureCredential raises that, not CredentialUnavailableError, once
    every source failed); a token the vault refused comes with a 401 response. The
    answer names each source tried and why it failed (never a credential)."""
    if not isinstance(exc, client_auth_error) or getattr(exc, "response", None) is not None:
        return None
    lines = str(getattr(exc, "message", "") or exc).splitlines()
    tried = [ln.strip()[:200] for ln in lines if ln.startswith("\t")][:6]
    first = lines[0][:200] if lines else type(exc).__name__
    return "; ".join(tried) if tried else first


#: What to do when no Azure credentials are found.
CREDENTIAL_HINT = ("use a workload or managed identity, set AZURE_CLIENT_ID / AZURE_TENANT_ID / "
                   "AZURE_CLIENT_SECRET, or `az login`")


def error_codes(exc: BaseException) -> set[str]:
    """Key Vault's error code and inner error code(s) of an azure-core error."""
    found: set[str] = set()
    error = getattr(exc, "error", None)
    inner: Any = None
    if error is not None:
        found.add(str(getattr(error, "code", "") or ""))
        inner = getattr(error, "innererror", None)
    while isinstance(inner, dict) and inner:
        found.add(str(inner.get("code", "")))
        inner = inner.get("innererror")
    found.discard("")
    return found


class AzureKeyVaultBackend:
    """keysafe on Azure Key Vault, through the official client library.

    Capabilities: soft delete with restore and purge (Recoverable, Key Vault's own),
    metadata updates on live secrets (MetadataWritable). Not Versioned: Key Vault
    cannot destroy a single version (``versions`` still lists them).

    Raises NotFound, Conflict, InvalidName, InvalidValue, ValueTooLarge,
    PermissionDenied, BackendUnavailable (retryable: throttling, timeouts, an
    unreachable vault) and ConfigError (no vault URL or credentials; SDK missing).
    """

    name = "azure"
    remote = True  # calls cross a network: servers run them off the event loop
    store = STORE

    def __init__(self, *, vault_url: str | None = None, credential: Any = None,
                 max_versions: int = 10, polling_interval: float = 1.0,
                 retry_total: int = 3, client_kwargs: dict[str, Any] | None = None) -> None:
        secrets = require_sdk("azure.keyvault.secrets", "azure")
        self._exc = require_sdk("azure.core.exceptions", "azure")
        vault_url = vault_url or os.environ.get("AZURE_KEYVAULT_URL")
        if not vault_url:
            raise ConfigError(f"{STORE} needs a vault URL: set AZURE_KEYVAULT_URL or the "
                              "profile's `vault_url` option")
        if max_versions < 0:
            raise ConfigError(f"{STORE}: max_versions must be 0 (keep all) or more")
        self._own_credential = credential is None
        if credential is None:
            identity = require_sdk("azure.identity", "azure")
            credential = identity.DefaultAzureCredential()
        self._credential = credential
        self.vault_url = vault_url.rstrip("/")
        self.max_versions = max_versions
        self.polling_interval = polling_interval
        kwargs: dict[str, Any] = {"retry_total": retry_total, "retry_backoff_factor": 0.4,
                                  "retry_backoff_max": 8}
        kwargs.update(client_kwargs or {})
        try:
            self._client = secrets.SecretClient(self.vault_url, credential, **kwargs)
        except ValueError as exc:
            raise ConfigError(f"{STORE}: {exc}") from exc
        self._locks = [threading.RLock() for _ in range(_LOCK_STRIPES)]

    @classmethod
    def from_settings(cls, settings: Settings) -> AzureKeyVaultBackend:
        """Options from the profile's table in keysafe.toml: vault_url, max_versions,
        polling_interval, retry_total. The vault URL falls back to AZURE_KEYVAULT_URL,
        credentials come from DefaultAzureCredential (environment, workload or managed
        identity, Azure CLI, ...)."""
        opts = dict(settings.backend_options)
        allowed = {"vault_url", "max_versions", "polling_interval", "retry_total"}
        unknown = sorted(set(opts) - allowed)
        if unknown:
            raise ConfigError(f"{STORE}: unknown option {unknown[0]!r}; allowed: "
                              f"{', '.join(sorted(allowed))}")
        try:
            return cls(vault_url=str(opts["vault_url"]) if opts.get("vault_url") else None,
                       max_versions=int(opts.get("max_versions", settings.max_versions)),
                       polling_interval=float(opts.get("polling_interval", 1.0)),
                       retry_total=int(opts.get("retry_total", 3)))
        except (TypeError, ValueError):
            raise ConfigError(f"{STORE}: max_versions, polling_interval and retry_total "
                              "must be numbers") from None

    def __repr__(self) -> str:
        return f"AzureKeyVaultBackend(vault_url={self.vault_url!r})"

    # -- the External Secrets Operator reading this store (keysafe.kube) -----------------
    def eso_provider(self) -> dict[str, Any]:
        """The vault, the operator authenticating with Workload Identity as its own
        Kubernetes service account."""
        from keysafe.kube import OPERATOR_ACCOUNT

        return {"azurekv": {"vaultUrl": self.vault_url, "authType": "WorkloadIdentity",
                            "serviceAccountRef": dict(OPERATOR_ACCOUNT)}}

    def eso_remote_ref(self, path: str) -> dict[str, Any]:
        """The secret name (docs/backends/azure.md's encoding); the value as stored."""
        return {"key": CODEC.encode(path)}

    # -- errors: every SDK call goes through here -----------------------------------------
    def _translate(self, exc: BaseException, path: str,
                   version: int | None = None) -> BaseException:
        """The keysafe error for a Key Vault failure (foreign errors are mapped here
        and nowhere else). Key Vault's own text is left out except for denials:
        validation messages may echo the request."""
        e = self._exc
        why = no_credentials(exc, e.ClientAuthenticationError)
        if why is not None:
            return ConfigError(f"{STORE}: no Azure credentials ({why}); {CREDENTIAL_HINT}")
        if isinstance(exc, e.ResourceNotFoundError):
            return not_found(path, version)
        status = getattr(exc, "status_code", None)
        if isinstance(exc, e.ClientAuthenticationError) or status == 403:
            message = str(getattr(exc, "message", "") or "").splitlines()
            return PermissionDenied(f"{STORE} denied access to {path} "
                                    f"({message[0][:300] if message else status})",
                                    path=path)
        if isinstance(exc, e.ServiceRequestError | e.ServiceResponseError) \
                or status in (408, 429, 500, 502, 503, 504):
            return BackendUnavailable(f"{STORE} is unavailable or throttling "
                                      f"({type(exc).__name__}"
                                      f"{f' {status}' if status else ''}); retry later",
                                      path=path)
        if isinstance(exc, e.ResourceExistsError):
            codes = ", ".join(sorted(error_codes(exc))) or "409"
            return Conflict(f"{STORE} refused the change to {path} ({codes})", path=path)
        if status == 400:
            return InvalidValue(f"{STORE} refused the request for {path} "
                                f"({', '.join(sorted(error_codes(exc))) or '400'})",
                                path=path)
        if isinstance(exc, e.AzureError):
            return KeysafeError(f"{STORE} failed for {path} ({type(exc).__name__})",
                                path=path)
        return exc

    @contextmanager
    def _errors(self, path: str, version: int | None = None) -> Iterator[None]:
        try:
            yield
        except KeysafeError:
            raise
        except Exception as exc:
            mapped = self._translate(exc, path, version)
            if mapped is exc:
                raise
            raise mapped from exc

    def _call(self, fn: Callable[..., _R], *args: Any, path: str,
              version: int | None = None, **kwargs: Any) -> _R:
        with self._errors(path, version):
            return fn(*args, **kwargs)

    def _disabled(self, exc: BaseException) -> bool:
        return getattr(exc, "status_code", None) == 403 and "SecretDisabled" in error_codes(exc)

    # -- state ----------------------------------------------------------------------------
    def _lock(self, path: str) -> threading.RLock:
        return self._locks[hash(path) % _LOCK_STRIPES]

    def _list_versions(self, name: str, path: str) -> builtins.list[_Version] | None:
        """Every version of a live secret; None if there is no live secret."""
        try:
            with self._errors(path):
                return [_Version.of(p) for p in
                        self._client.list_properties_of_secret_versions(name)]
        except KeysafeError as exc:
            if exc.code == "not_found":
                return None
            raise

    def _deleted(self, name: str, path: str) -> Any | None:
        try:
            return self._call(self._client.get_deleted_secret, name, path=path)
        except KeysafeError as exc:
            if exc.code == "not_found":
                return None
            raise

    def _state(self, path: str, *, include_deleted: bool) -> _State | None:
        name = CODEC.encode(path)
        versions = self._list_versions(name, path)
        if versions is not None:
            st = _State(path, _index(versions))
            return st if st.numbered else None
        if not include_deleted:
            return None
        gone = self._deleted(name, path)
        if gone is None:
            return None
        return _State(path, deleted_at=_aware(gone.deleted_date),
                      deleted_head=_Version.of(gone.properties))

    def _live(self, path: str, *, include_deleted: bool = False) -> _State:
        st = self._state(path, include_deleted=include_deleted)
        if st is None:
            raise not_found(path)
        return st

    # -- metadata -------------------------------------------------------------------------
    def _meta(self, st: _State) -> SecretMetadata:
        head = st.head
        assert head is not None
        t = head.tags
        created = _parse_iso(t.get(_T_CREATED_AT)) or self._first_created(st)
        updated = _parse_iso(t.get(_T_UPDATED_AT)) or _parse_iso(t.get(_T_AT)) \
            or head.created
        tags: dict[str, str] = {}
        if t.get(_T_TAGS):
            try:
                tags = {str(k): str(v) for k, v in json.loads(t[_T_TAGS]).items()}
            except (ValueError, AttributeError):
                tags = {}
        rotation = t.get(_T_ROTATION, "")
        return SecretMetadata(
            path=st.path, current_version=st.current, created_at=created,
            updated_at=updated, created_by=t.get(_T_CREATED_BY),
            updated_by=t.get(_T_UPDATED_BY) or t.get(_T_BY),
            description=t.get(_T_DESCRIPTION), secret_type=head.content_type or None,
            tags=tags, deleted_at=st.deleted_at,
            last_rotated=_parse_iso(t.get(_T_ROTATED)),
            rotation_days=int(rotation) if rotation.isdigit() else None,
            expires_at=_parse_iso(t.get(_T_EXPIRES)), versions=st.kept)

    @staticmethod
    def _first_created(st: _State) -> datetime:
        if st.numbered:
            return st.numbered[min(st.numbered)].created
        head = st.head
        return head.created if head else datetime.fromtimestamp(0, UTC)

    @staticmethod
    def _apply(tags: dict[str, str], meta: MetadataUpdate | None) -> None:
        if meta is None:
            return
        simple: builtins.list[tuple[str, Any]] = [
            (_T_DESCRIPTION, meta.description), (_T_ROTATION, meta.rotation_days),
            (_T_EXPIRES, meta.expires_at), (_T_ROTATED, meta.last_rotated)]
        for key, value in simple:
            if value is not None:
                tags[key] = _iso(value) if isinstance(value, datetime) else str(value)
        if meta.tags is not None:
            if meta.tags:
                tags[_T_TAGS] = json.dumps(dict(meta.tags), sort_keys=True,
                                           ensure_ascii=False, separators=(",", ":"))
            else:
                tags.pop(_T_TAGS, None)

    @staticmethod
    def _check_tags(path: str, tags: dict[str, str], content_type: str | None) -> None:
        """Key Vault's tag limits, checked before writing, naming what is too long."""
        if len(tags) > MAX_TAGS:
            raise InvalidValue(f"{path} would need {len(tags)} tags; {STORE} allows "
                               f"{MAX_TAGS} per version", path=path)
        for key, value in tags.items():
            if len(value) > MAX_TAG_VALUE:
                what = {_T_TAGS: "the tags (as JSON)", _T_DESCRIPTION: "the description",
                        _T_BY: "the actor name", _T_CREATED_BY: "the actor name",
                        _T_UPDATED_BY: "the actor name"}.get(key, f"tag {key}")
                raise InvalidValue(f"{what} of {path} is {len(value)} characters; {STORE} "
                                   f"tag values are limited to {MAX_TAG_VALUE}", path=path)
        if content_type is not None and len(content_type) > MAX_CONTENT_TYPE:
            raise InvalidValue(f"the secret type of {path} is {len(content_type)} "
                               f"characters; {STORE} allows {MAX_CONTENT_TYPE}", path=path)

    # -- reading --------------------------------------------------------------------------
    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        name = CODEC.encode(path)
        if version is None:
            # The common case in one call: the latest version is the current one.
            try:
                secret = self._call(self._client.get_secret, name, path=path)
            except KeysafeError as exc:
                if exc.code == "not_found":
                    raise
                if not isinstance(exc.__cause__, BaseException) \
                        or not self._disabled(exc.__cause__):
                    raise
                secret = None
            if secret is not None:
                latest = _Version.of(secret.properties)
                if latest.number is not None and not latest.void:
                    return str(secret.value), latest.number
        if version is not None and version < 1:
            raise not_found(path, version)
        st = self._live(path)
        n = st.current if version is None else version
        if not st.floor <= n <= st.current:
            raise not_found(path, version)
        v = st.numbered.get(n)
        if v is None or not v.enabled:
            raise not_found(path, version)
        try:
            secret = self._call(self._client.get_secret, name, v.vid, path=path,
                                version=version)
        except KeysafeError as exc:
            cause = exc.__cause__
            if isinstance(cause, BaseException) and self._disabled(cause):
                raise not_found(path, version) from None
            raise
        return str(secret.value), n

    def describe(self, path: str, *, include_deleted: bool = False) -> SecretMetadata:
        """From the version listing: no value is read (``secrets/list`` suffices)."""
        return self._meta(self._live(path, include_deleted=include_deleted))

    def list(self, prefix: str, *,
             include_deleted: bool = False) -> builtins.list[SecretMetadata]:
        """Key Vault lists the whole vault (each secret's latest version, with its
        tags); names are decoded and filtered by prefix here."""
        out: dict[str, SecretMetadata] = {}
        with self._errors(prefix):
            live = builtins.list(self._client.list_properties_of_secrets())
        for props in live:
            path = CODEC.decode(str(props.name))
            if path is None or not path.startswith(prefix):
                continue
            v = _Version.of(props)
            if v.number is not None and not v.void and v.enabled:
                st = _State(path, {v.number: v})
                meta = self._meta(st)
                # The listing shows the head only: the count comes from its tags.
                out[path] = meta
            else:  # another tool's latest version, or a voided one: look closer
                found = self._state(path, include_deleted=False)
                if found is not None:
                    out[path] = self._meta(found)
        if include_deleted:
            with self._errors(prefix):
                gone = builtins.list(self._client.list_deleted_secrets())
            for d in gone:
                path = CODEC.decode(str(d.name))
                if path is None or not path.startswith(prefix) or path in out:
                    continue
                out[path] = self._meta(_State(path, deleted_at=_aware(d.deleted_date),
                                              deleted_head=_Version.of(d.properties)))
        return [out[p] for p in sorted(out)]

    def versions(self, path: str) -> builtins.list[VersionInfo]:
        """The kept versions, oldest first (a listing only: Key Vault cannot destroy
        one version, so this backend is not ``Versioned``)."""
        st = self._live(path)
        out = []
        for n in range(st.floor, st.current + 1):
            v = st.numbered.get(n)
            if v is not None:
                out.append(VersionInfo(n, _parse_iso(v.tags.get(_T_AT)) or v.created,
                                       v.tags.get(_T_BY)))
        return out

    def ping(self) -> None:
        with self._errors(self.vault_url):
            pages = self._client.list_properties_of_secrets(max_page_size=1).by_page()
            next(iter(pages), None)

    def close(self) -> None:
        self._client.close()
        if self._own_credential:
            self._credential.close()

    # -- writing --------------------------------------------------------------------------
    def put(self, path: str, value: str, *, ctx: WriteContext,
            expected_version: int | None = None,
            meta: MetadataUpdate | None = None) -> VersionInfo:
        name = CODEC.encode(path)
        size = len(value.encode("utf-8"))
        if size > MAX_VALUE_BYTES:
            raise ValueTooLarge(f"value for {path} is {size} bytes; {STORE} allows at most "
                                f"{MAX_VALUE_BYTES}", path=path)
        # Bad metadata is refused before anything changes (even a recovery).
        trial = {_T_BY: ctx.actor}
        self._apply(trial, meta)
        self._check_tags(path, trial, meta.secret_type if meta else None)
        with self._lock(path):
            for _round in range(_ROUNDS):
                st = self._state(path, include_deleted=True)
                current = st.current if st else 0
                check_cas(path, expected_version, current)
                if st is not None and st.deleted_at is not None:
                    try:
                        self._recover(name, path)
                    except KeysafeError as exc:
                        if exc.code != "not_found":  # else recovered meanwhile
                            raise
                    continue
                n = current + 1
                write_id = uuid.uuid4().hex
                tags, content_type = self._new_tags(path, st, n, write_id, ctx, meta)
                mine = self._set(name, path, value, tags, content_type, write_id)
                if mine is None:  # the name is held by a deletion: read again
                    continue
                versions = self._list_versions(name, path) or [mine]
                if mine.vid not in {v.vid for v in versions}:
                    versions.append(mine)
                numbered = _index(versions)
                holder = numbered.get(n)
                if holder is not None and holder.vid == mine.vid:
                    self._prune(name, path, numbered, st.floor if st else 1, n)
                    return VersionInfo(n, ctx.now, ctx.actor)
                # Another writer claimed version n first: this write is void.
                self._void(name, path, mine)
                if expected_version is not None:
                    raise Conflict(f"{path} was written concurrently (version {n} is "
                                   "another writer's)", path=path, current_version=n)
                time.sleep(random.uniform(0.01, 0.05) * (_round + 1))
        raise BackendUnavailable(f"{path}: too many concurrent writers; retry later",
                                 path=path)

    def _new_tags(self, path: str, st: _State | None, n: int, write_id: str,
                  ctx: WriteContext,
                  meta: MetadataUpdate | None) -> tuple[dict[str, str], str | None]:
        """The new version's tags: the secret's metadata carried over from the current
        version, this version's number and stamp, and ``meta`` applied."""
        head = st.head if st is not None else None
        tags = dict(head.tags) if head is not None else {}
        for key in (_T_VOID, _T_WRITE):
            tags.pop(key, None)
        now = _iso(ctx.now)
        if head is None or _T_CREATED_AT not in tags:
            tags.update({_T_CREATED_AT: now, _T_CREATED_BY: ctx.actor})
        floor = st.floor if st is not None else 1
        if self.max_versions > 0:
            floor = max(floor, n - self.max_versions + 1)
        tags.update({_T_VERSION: str(n), _T_WRITE: write_id, _T_AT: now, _T_BY: ctx.actor,
                     _T_UPDATED_AT: now, _T_UPDATED_BY: ctx.actor})
        if floor > 1:
            tags[_T_FLOOR] = str(floor)
        self._apply(tags, meta)
        content_type = head.content_type if head is not None else None
        if meta is not None and meta.secret_type is not None:
            content_type = meta.secret_type
        self._check_tags(path, tags, content_type)
        return tags, content_type

    def _set(self, name: str, path: str, value: str, tags: dict[str, str],
             content_type: str | None, write_id: str) -> _Version | None:
        """One PUT, never repeated by the SDK: when its answer is lost, the version
        listing says whether it landed (by this write's id). None when the name is
        held by a soft-deleted secret."""
        try:
            secret = self._call(self._client.set_secret, name, value, tags=tags,
                                content_type=content_type, retry_total=0, path=path)
        except Conflict as exc:
            cause = exc.__cause__
            codes = error_codes(cause) if isinstance(cause, BaseException) else set()
            if codes & {"ObjectIsDeletedButRecoverable", "ObjectIsBeingDeleted"} \
                    or self._deleted(name, path) is not None:
                time.sleep(self.polling_interval / 4)
                return None
            raise
        except BackendUnavailable:
            for v in self._list_versions(name, path) or []:
                if v.tags.get(_T_WRITE) == write_id:
                    return v
            raise
        return _Version.of(secret.properties)

    def _void(self, name: str, path: str, v: _Version) -> None:
        tags = dict(v.tags)
        tags[_T_VOID] = "1"
        self._call(self._client.update_secret_properties, name, v.vid, enabled=False,
                   tags=tags, path=path)

    def _prune(self, name: str, path: str, numbered: dict[int, _Version], old_floor: int,
               n: int) -> None:
        """Disable the versions that fell out of ``max_versions``."""
        if self.max_versions <= 0:
            return
        for old in range(max(1, old_floor), n - self.max_versions + 1):
            v = numbered.get(old)
            if v is not None and v.enabled:
                self._call(self._client.update_secret_properties, name, v.vid,
                           enabled=False, path=path)

    def _recover(self, name: str, path: str) -> None:
        """Recover a soft-deleted secret and wait until it is readable. Not repeated by
        the SDK: when the answer is lost, whether the secret is live again decides."""
        try:
            poller = self._call(self._client.begin_recover_deleted_secret, name, path=path,
                                _polling_interval=self.polling_interval, retry_total=0)
        except BackendUnavailable:
            if self._list_versions(name, path) is None:
                raise
            return
        with self._errors(path):
            poller.wait()

    def update_metadata(self, path: str, meta: MetadataUpdate, *,
                        ctx: WriteContext) -> SecretMetadata:
        """Changes the current version's tags and content type. Raises Conflict for a
        soft-deleted secret: Key Vault cannot change one (restore it first)."""
        name = CODEC.encode(path)
        with self._lock(path):
            st = self._live(path, include_deleted=True)
            if st.deleted_at is not None:
                raise Conflict(f"{path} is soft-deleted, and {STORE} cannot change a "
                               "deleted secret's metadata; restore it first", path=path,
                               current_version=st.current)
            head = st.head
            assert head is not None
            tags = dict(head.tags)
            self._apply(tags, meta)
            tags.update({_T_UPDATED_AT: _iso(ctx.now), _T_UPDATED_BY: ctx.actor})
            content_type = meta.secret_type if meta.secret_type is not None \
                else head.content_type
            self._check_tags(path, tags, content_type)
            props = self._call(self._client.update_secret_properties, name, head.vid,
                               tags=tags, content_type=content_type, path=path)
            numbered = dict(st.numbered)
            numbered[st.current] = _Version.of(props)
            return self._meta(_State(path, numbered))

    def delete(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        """Key Vault's soft delete; the deletion time is Key Vault's own."""
        name = CODEC.encode(path)
        with self._lock(path):
            st = self._live(path)
            gone = self._delete_now(name, path)
            return self._meta(_State(path, deleted_at=_aware(gone.deleted_date),
                                     deleted_head=st.head))

    def _delete_now(self, name: str, path: str) -> Any:
        """Soft-delete and wait until Key Vault lists the secret as deleted. Not repeated
        by the SDK (a repeat would answer 404): when the answer is lost, whether the
        secret is deleted decides."""
        try:
            poller = self._call(self._client.begin_delete_secret, name, path=path,
                                _polling_interval=self.polling_interval, retry_total=0)
        except BackendUnavailable:
            gone = self._deleted(name, path)
            if gone is None:
                raise
            return gone
        with self._errors(path):
            poller.wait()
            return poller.result()

    # -- capabilities ---------------------------------------------------------------------
    def restore(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        name = CODEC.encode(path)
        with self._lock(path):
            st = self._live(path, include_deleted=True)
            if st.deleted_at is None:
                return self._meta(st)
            self._recover(name, path)
            return self._meta(self._live(path))

    def purge(self, path: str, *, ctx: WriteContext) -> None:
        """Delete now and for good (a live secret is soft-deleted first, as Key Vault
        requires). A vault with purge protection refuses: PermissionDenied."""
        name = CODEC.encode(path)
        with self._lock(path):
            st = self._live(path, include_deleted=True)
            if st.deleted_at is None:
                self._delete_now(name, path)
            try:
                self._call(self._client.purge_deleted_secret, name, path=path,
                           retry_total=0)
            except BackendUnavailable:
                # The answer was lost: purged if Key Vault no longer knows the name.
                if self._deleted(name, path) is not None:
                    raise

    def deleted_before(self, cutoff: datetime) -> builtins.list[str]:
        with self._errors(self.vault_url):
            gone = builtins.list(self._client.list_deleted_secrets())
        out = []
        for d in gone:
            path = CODEC.decode(str(d.name))
            if path is not None and d.deleted_date is not None \
                    and _aware(d.deleted_date) < cutoff:
                out.append(path)
        return sorted(out)

    # -- other tools' secrets (ForeignReadable) -------------------------------------------
    def foreign_names(self, prefix: str) -> builtins.list[str]:
        """Enabled secrets other tools made whose name starts with ``prefix``
        (case-insensitively, as Key Vault compares names); keysafe's own, tagged, are
        left out."""
        with self._errors(prefix):
            live = builtins.list(self._client.list_properties_of_secrets())
        want = prefix.lower()
        return sorted(str(p.name) for p in live
                      if p.enabled is not False and _T_VERSION not in (p.tags or {})
                      and str(p.name).lower().startswith(want))

    def read_foreign(self, name: str) -> str:
        """The current version of the secret ``name`` (``aragora-anthropic-key``)."""
        if not _FOREIGN_NAME.fullmatch(name):
            raise InvalidName(f"{name!r} is not a {STORE} secret name (1-127 letters, "
                              "digits and '-')")
        secret = self._call(self._client.get_secret, name, path=name)
        if secret.value is None:
            raise not_found(name)
        return str(secret.value)

    # -- for tests and tools --------------------------------------------------------------
    def secret_name(self, path: str) -> str:
        """The Key Vault secret name that holds ``path``."""
        return CODEC.encode(path)
