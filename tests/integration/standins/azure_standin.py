"""A loopback stand-in for Azure Key Vault's secrets REST API, over HTTPS.

STAND-IN: no GCP/Azure server can run here; this speaks the documented REST API so
the official client library is exercised; it is not the real service.

It serves the calls keysafe's Azure backend makes, as the official
``azure-keyvault-secrets`` ``SecretClient`` sends them
(https://learn.microsoft.com/rest/api/keyvault/secrets):

- ``PUT /secrets/{name}`` (a new version), ``GET /secrets/{name}/{version?}``,
  ``PATCH /secrets/{name}/{version?}`` (attributes, tags, content type),
  ``GET /secrets`` and ``GET /secrets/{name}/versions`` (paged with ``nextLink``),
  ``DELETE /secrets/{name}`` (soft delete), ``GET /deletedsecrets[/{name}]``,
  ``POST /deletedsecrets/{name}/recover``, ``DELETE /deletedsecrets/{name}`` (purge).
- Key Vault's challenge authentication: a request without a bearer token gets 401
  with ``WWW-Authenticate: Bearer authorization="…", resource="…"``; the client
  then asks its credential for a token (``FakeTokenCredential`` in tests) and sends
  the request again. The SDK refuses bearer tokens over plain HTTP, so the stand-in
  serves TLS with a self-signed certificate for 127.0.0.1 (``make_certificate``),
  which tests pass to the client as its CA bundle.

Documented behaviour it keeps: names ``[0-9a-zA-Z-]{1,127}``, compared
case-insensitively; values at most 25 KiB; at most 15 tags per version, tag values
256 characters; each PUT makes a new version with a 32-hex-digit id; ``created`` and
``updated`` are whole Unix seconds; GET of a disabled version is 403 with inner error
``SecretDisabled``; the name of a soft-deleted secret cannot be reused until it is
recovered or purged (409, inner error ``ObjectIsDeletedButRecoverable``); listing
returns each secret's latest version's attributes and tags, without values. Errors
are ``{"error": {"code", "message", "innererror"?}}``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from standins._http import LoopbackServer, Request, Response

_NAME = re.compile(r"[0-9a-zA-Z-]{1,127}")
MAX_VALUE_BYTES = 25 * 1024
MAX_TAGS = 15
MAX_TAG_NAME = 512
MAX_TAG_VALUE = 256
PAGE = 25
RECOVERABLE_DAYS = 90
TOKEN = "standin-access-token"
TENANT = "00000000-0000-0000-0000-00000000aaaa"
CHALLENGE = (f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", '
             'resource="https://vault.azure.net"')


def make_certificate(directory: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (and localhost); returns the paths of
    the certificate (also the client's CA bundle) and of its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keysafe azure stand-in")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "standin-cert.pem"
    key_path = directory / "standin-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


class FakeTokenCredential:
    """A TokenCredential (azure.core.credentials protocol) that hands out the token
    the stand-in accepts, and remembers the scopes it was asked for."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  enable_cae: bool = False, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    def close(self) -> None:
        return None


@dataclass
class _Version:
    vid: str
    value: str
    content_type: str | None
    tags: dict[str, str]
    enabled: bool
    created: int
    updated: int


@dataclass
class _Secret:
    name: str
    versions: list[_Version] = field(default_factory=list)
    deleted_date: int | None = None


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.inner = status, code, inner


class AzureKeyVaultStandin(LoopbackServer):
    """One vault's secrets, in memory, over loopback HTTPS."""

    def __init__(self, certfile: str, keyfile: str) -> None:
        super().__init__(certfile=certfile, keyfile=keyfile)
        self.secrets: dict[str, _Secret] = {}
        self.lock = threading.RLock()
        self.api_versions: set[str] = set()
        self.purge_protection = False
        #: Seconds added to the stand-in's clock (tests order versions in time with it).
        self.clock_offset = 0

    @property
    def vault_url(self) -> str:
        return self.url

    def error(self, status: int, message: str, code: str | None = None,
              inner: str | None = None) -> Response:
        body: dict[str, Any] = {"code": code or {401: "Unauthorized", 403: "Forbidden",
                                                 404: "NotFound", 429: "Throttled",
                                                 503: "ServiceUnavailable"}.get(status, "Error"),
                                "message": message}
        if inner:
            body["innererror"] = {"code": inner}
        headers = {"WWW-Authenticate": CHALLENGE} if status == 401 else {}
        return Response(status, {"error": body}, headers)

    _ROUTES = [
        ("GET", re.compile(r"/secrets/?"), "list_secrets"),
        ("PUT", re.compile(r"/secrets/([^/]+)"), "set_secret"),
        ("DELETE", re.compile(r"/secrets/([^/]+)"), "delete_secret"),
        ("GET", re.compile(r"/secrets/([^/]+)/versions/?"), "list_versions"),
        ("GET", re.compile(r"/secrets/([^/]+)(?:/([^/]*))?"), "get_secret"),
        ("PATCH", re.compile(r"/secrets/([^/]+)(?:/([^/]*))?"), "update_secret"),
        ("GET", re.compile(r"/deletedsecrets/?"), "list_deleted"),
        ("GET", re.compile(r"/deletedsecrets/([^/]+)"), "get_deleted"),
        ("DELETE", re.compile(r"/deletedsecrets/([^/]+)"), "purge"),
        ("POST", re.compile(r"/deletedsecrets/([^/]+)/recover"), "recover"),
    ]

    def handle(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return self.error(401, "AKV10000: Request is missing a Bearer or PoP token.")
        if "api-version" not in request.query:
            return self.error(400, "The api-version query parameter is required.",
                              "BadParameter")
        self.api_versions.add(request.query["api-version"])
        for method, pattern, name in self._ROUTES:
            m = pattern.fullmatch(request.path)
            if m and method == request.method:
                try:
                    with self.lock:
                        status, body = getattr(self, "_" + name)(request, *m.groups())
                except ApiError as exc:
                    return self.error(exc.status, str(exc), exc.code, exc.inner)
                return Response(status, body)
        return self.error(404, f"no route for {request.method} {request.path}", "BadRequest")

    # -- helpers ----------------------------------------------------------------------
    def _now(self) -> int:
        return int(time.time()) + self.clock_offset

    def _find(self, name: str) -> _Secret | None:
        return self.secrets.get(name.lower())

    def _live(self, name: str) -> _Secret:
        s = self._find(name)
        if s is None or s.deleted_date is not None or not s.versions:
            raise ApiError(404, "SecretNotFound", f"A secret with (name/id) {name} was not "
                                                  "found in this key vault.")
        return s

    def _deleted(self, name: str) -> _Secret:
        s = self._find(name)
        if s is None or s.deleted_date is None:
            raise ApiError(404, "SecretNotFound", f"Deleted Secret not found: {name}")
        return s

    def _attributes(self, v: _Version) -> dict[str, Any]:
        return {"enabled": v.enabled, "created": v.created, "updated": v.updated,
                "recoveryLevel": "Recoverable+Purgeable" if not self.purge_protection
                else "Recoverable", "recoverableDays": RECOVERABLE_DAYS}

    def _item(self, s: _Secret, v: _Version, *, version_id: bool,
              value: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": f"{self.url}/secrets/{s.name}" + (f"/{v.vid}" if version_id else ""),
            "attributes": self._attributes(v), "tags": dict(v.tags)}
        if v.content_type is not None:
            out["contentType"] = v.content_type
        if value:
            out["value"] = v.value
        return out

    def _deleted_item(self, s: _Secret, v: _Version) -> dict[str, Any]:
        out = self._item(s, v, version_id=True)
        assert s.deleted_date is not None
        out.update({"recoveryId": f"{self.url}/deletedsecrets/{s.name}",
                    "deletedDate": s.deleted_date,
                    "scheduledPurgeDate": s.deleted_date + RECOVERABLE_DAYS * 86400})
        return out

    def _page(self, items: list[Any], request: Request, path: str) -> dict[str, Any]:
        size = min(int(request.query.get("maxresults") or PAGE), PAGE)
        start = int(request.query.get("$skiptoken") or 0)
        out: dict[str, Any] = {"value": items[start:start + size], "nextLink": None}
        if start + size < len(items):
            out["nextLink"] = (f"{self.url}{path}?api-version="
                               f"{quote(request.query['api-version'])}"
                               f"&$skiptoken={start + size}&maxresults={size}")
        return out

    @staticmethod
    def _check_tags(tags: dict[str, str]) -> None:
        if len(tags) > MAX_TAGS:
            raise ApiError(400, "BadParameter", f"A secret may have at most {MAX_TAGS} tags.")
        for k, v in tags.items():
            if len(k) > MAX_TAG_NAME or not isinstance(v, str) or len(v) > MAX_TAG_VALUE:
                raise ApiError(400, "BadParameter",
                               f"Tag names are limited to {MAX_TAG_NAME} characters and tag "
                               f"values to {MAX_TAG_VALUE}.")

    # -- secrets ----------------------------------------------------------------------
    def _set_secret(self, request: Request, name: str) -> tuple[int, Any]:
        if not _NAME.fullmatch(name):
            raise ApiError(400, "BadParameter", "The request URI contains an invalid name: "
                                                f"{name}")
        body = request.json()
        value = body.get("value")
        if not isinstance(value, str):
            raise ApiError(400, "BadParameter", "Property 'value' is required.")
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise ApiError(400, "BadParameter", "Secret value is too long: the limit is "
                                                f"{MAX_VALUE_BYTES} bytes.")
        tags = dict(body.get("tags") or {})
        self._check_tags(tags)
        s = self._find(name)
        if s is not None and s.deleted_date is not None:
            raise ApiError(409, "Conflict", f"Secret {name} is currently in a deleted but "
                           "recoverable state, and its name cannot be reused; in this state, "
                           "the secret can only be recovered or purged.",
                           "ObjectIsDeletedButRecoverable")
        if s is None:
            s = _Secret(name)
            self.secrets[name.lower()] = s
        attrs = body.get("attributes") or {}
        now = self._now()
        v = _Version(uuid.uuid4().hex, value, body.get("contentType"), tags,
                     bool(attrs.get("enabled", True)), now, now)
        s.versions.append(v)
        return 200, self._item(s, v, version_id=True, value=True)

    def _version(self, s: _Secret, version: str | None) -> _Version:
        if not version:
            return s.versions[-1]
        for v in s.versions:
            if v.vid == version:
                return v
        raise ApiError(404, "SecretNotFound", f"A secret with (name/id) {s.name}/{version} "
                                              "was not found in this key vault.")

    def _get_secret(self, request: Request, name: str,
                    version: str | None = None) -> tuple[int, Any]:
        s = self._live(name)
        v = self._version(s, version)
        if not v.enabled:
            raise ApiError(403, "Forbidden", "Operation get is not allowed on a disabled "
                                             "secret.", "SecretDisabled")
        return 200, self._item(s, v, version_id=True, value=True)

    def _update_secret(self, request: Request, name: str,
                       version: str | None = None) -> tuple[int, Any]:
        s = self._live(name)
        v = self._version(s, version)
        body = request.json()
        if "tags" in body and body["tags"] is not None:
            tags = dict(body["tags"])
            self._check_tags(tags)
            v.tags = tags
        if "contentType" in body and body["contentType"] is not None:
            v.content_type = body["contentType"]
        attrs = body.get("attributes") or {}
        if attrs.get("enabled") is not None:
            v.enabled = bool(attrs["enabled"])
        v.updated = self._now()
        return 200, self._item(s, v, version_id=True)

    def _list_secrets(self, request: Request) -> tuple[int, Any]:
        live = sorted((s for s in self.secrets.values()
                       if s.deleted_date is None and s.versions), key=lambda s: s.name.lower())
        items = [self._item(s, s.versions[-1], version_id=False) for s in live]
        return 200, self._page(items, request, "/secrets")

    def _list_versions(self, request: Request, name: str) -> tuple[int, Any]:
        s = self._live(name)
        items = [self._item(s, v, version_id=True) for v in s.versions]
        return 200, self._page(items, request, f"/secrets/{s.name}/versions")

    def _delete_secret(self, request: Request, name: str) -> tuple[int, Any]:
        s = self._live(name)
        s.deleted_date = self._now()
        return 200, self._deleted_item(s, s.versions[-1])

    # -- deleted secrets --------------------------------------------------------------
    def _list_deleted(self, request: Request) -> tuple[int, Any]:
        gone = sorted((s for s in self.secrets.values() if s.deleted_date is not None),
                      key=lambda s: s.name.lower())
        items = []
        for s in gone:
            item = self._deleted_item(s, s.versions[-1])
            item["id"] = f"{self.url}/secrets/{s.name}"
            items.append(item)
        return 200, self._page(items, request, "/deletedsecrets")

    def _get_deleted(self, request: Request, name: str) -> tuple[int, Any]:
        s = self._deleted(name)
        return 200, self._deleted_item(s, s.versions[-1])

    def _recover(self, request: Request, name: str) -> tuple[int, Any]:
        s = self._deleted(name)
        s.deleted_date = None
        return 200, self._item(s, s.versions[-1], version_id=True)

    def _purge(self, request: Request, name: str) -> tuple[int, Any]:
        s = self._deleted(name)
        if self.purge_protection:
            raise ApiError(403, "Forbidden", "Operation \"purge\" is not allowed because "
                                             "purge protection is enabled for this vault.")
        del self.secrets[s.name.lower()]
        return 204, None

    # -- for tests --------------------------------------------------------------------
    def raw_versions(self, name: str) -> list[_Version]:
        with self.lock:
            s = self._find(name)
            return list(s.versions) if s else []
