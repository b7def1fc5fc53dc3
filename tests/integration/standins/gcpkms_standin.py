"""A loopback stand-in for GCP Cloud KMS's v1 REST API (symmetric encrypt and decrypt).

STAND-IN: no GCP/Azure server can run here; this speaks the documented REST API so
the official client library is exercised; it is not the real service.

It serves what the official ``google-cloud-kms`` client sends with ``transport="rest"``
(https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys):

- ``POST /v1/{name}:encrypt``, ``name`` a CryptoKey (its primary version is used) or
  one of its CryptoKeyVersions; body ``{plaintext, additionalAuthenticatedData?,
  plaintextCrc32c?, additionalAuthenticatedDataCrc32c?}`` (bytes base64, the int64
  checksums as decimal strings); answer ``{name: <the version used>, ciphertext,
  ciphertextCrc32c, verifiedPlaintextCrc32c, verifiedAdditionalAuthenticatedDataCrc32c,
  protectionLevel}``.
- ``POST /v1/{cryptoKey}:decrypt``; body ``{ciphertext, additionalAuthenticatedData?,
  ciphertextCrc32c?, additionalAuthenticatedDataCrc32c?}``; answer ``{plaintext,
  plaintextCrc32c, usedPrimary, protectionLevel}``.
- ``POST /token``: an OAuth2 token endpoint as Google's answers a user's refresh
  (form-encoded ``grant_type=refresh_token``, ``client_id``, ``client_secret``,
  ``refresh_token``), for ``google.oauth2.credentials.Credentials`` made with
  ``token_uri=<stand-in>/token`` (``user_credentials()`` makes one).
- ``authorized_user_file()`` writes an application-default-credentials file
  (``authorized_user``), so ``GOOGLE_APPLICATION_CREDENTIALS`` makes
  ``google.auth.default()`` work with no internet. google-auth ignores the
  ``token_uri`` of such a file and always refreshes at https://oauth2.googleapis.com
  (a security fix), so the file also carries an access token this stand-in issued and
  its ``expiry`` (google-auth honours both): the client uses it and never refreshes
  while it lasts. ``revoke_tokens()`` would make such a client try Google, and fail.

Documented behaviour it keeps: plaintext and additional authenticated data at most
64 KiB each (SOFTWARE protection level); a given CRC-32C that does not match its data is
INVALID_ARGUMENT; the ciphertext names the key version that made it, so decrypt picks
that version itself and reports ``usedPrimary``; a ciphertext of another CryptoKey,
altered, or given other AAD is INVALID_ARGUMENT; a version not ENABLED (DISABLED,
DESTROY_SCHEDULED, DESTROYED) is FAILED_PRECONDITION, as is a key whose purpose is not
ENCRYPT_DECRYPT; an unknown key is NOT_FOUND; a caller without permission gets
PERMISSION_DENIED, as real GCP answers before it says whether the resource exists.
Errors are ``{"error": {"code", "message", "status"}}``; enums are numbers when the
client asks for ``$alt=json;enum-encoding=int`` (it does). Unless made with
``require_auth=False`` every API call must carry ``Authorization: Bearer <a token this
stand-in issued>`` (else 401 UNAUTHENTICATED).

Key material comes from ``os.urandom`` and is used with ``cryptography``'s AES-256-GCM.
The ciphertext is this stand-in's own opaque format (real KMS's is opaque too):
``b"KSK1" | key id (8 bytes) | version (uint32 BE) | nonce (12) | AES-GCM output``, the
header bound in as AAD together with the caller's AAD.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import struct
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keysafe.backends.gcp import crc32c
from standins._http import LoopbackServer, Request, Response

MAX_PLAINTEXT = 65_536
MAX_AAD = 65_536
PURPOSES = ("ENCRYPT_DECRYPT", "ASYMMETRIC_SIGN", "ASYMMETRIC_DECRYPT",
            "RAW_ENCRYPT_DECRYPT", "MAC", "KEY_ENCAPSULATION", "AES_WRAPPING")
STATES = ("ENABLED", "DISABLED", "DESTROY_SCHEDULED", "DESTROYED")
OPS = ("encrypt", "decrypt")
CLIENT_ID = "keysafe-standin-client.apps.googleusercontent.com"
CLIENT_SECRET = "keysafe-standin-client-secret"
REFRESH_TOKEN = "keysafe-standin-refresh-token"
TOKEN_LIFETIME = 3600
FILE_TOKEN_LIFETIME = 24 * 3600

_KEY_NAME = re.compile(r"projects/[^/:]+/locations/[^/:]+/keyRings/[A-Za-z0-9_-]{1,63}"
                       r"/cryptoKeys/[A-Za-z0-9_-]{1,63}")
_ENCRYPT = re.compile(r"/v1/(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+/cryptoKeys"
                      r"/[^/:]+(?:/cryptoKeyVersions/[^/:]+)?):encrypt")
_DECRYPT = re.compile(r"/v1/(projects/[^/:]+/locations/[^/:]+/keyRings/[^/:]+/cryptoKeys"
                      r"/[^/:]+):decrypt")
_MAGIC = b"KSK1"
_HEADER = struct.Struct(">4s8sI")  # magic, key id, version number
_NONCE = 12
_TAG = 16
_PROTECTION_SOFTWARE = 1  # ProtectionLevel.SOFTWARE as a number

_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED",
           500: "INTERNAL", 501: "NOT_IMPLEMENTED", 502: "UNAVAILABLE",
           503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


@dataclass
class _Version:
    number: int
    material: bytes | None  # None once DESTROYED, or for a key that is not symmetric
    state: str = "ENABLED"


@dataclass
class _Key:
    name: str
    purpose: str
    key_id: bytes = field(default_factory=lambda: os.urandom(8))
    versions: dict[int, _Version] = field(default_factory=dict)
    primary: int | None = None


class ApiError(Exception):
    def __init__(self, status: int, message: str, grpc: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.grpc = grpc or _STATUS.get(status, "UNKNOWN")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(body: dict[str, Any], field_name: str) -> bytes:
    value = body.get(field_name) or ""
    if not isinstance(value, str):
        raise ApiError(400, f"Invalid value at '{field_name}': expected a base64 string.")
    try:
        # proto3 JSON accepts the standard and the URL-safe alphabet, padded or not.
        value = value.replace("-", "+").replace("_", "/")
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"Invalid value at '{field_name}' (TYPE_BYTES), "
                            "Base64 decoding failed.") from None


def _checksum(body: dict[str, Any], field_name: str) -> int | None:
    """An optional Int64Value (a decimal string in proto3 JSON, a number accepted too)."""
    value = body.get(field_name)
    if value is None:
        return None
    if isinstance(value, dict):  # {"value": ...} is not the JSON mapping, but be lenient
        value = value.get("value", 0)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"Invalid value at '{field_name}' (TYPE_INT64), "
                            f"{value!r}.") from None


class GcpKmsStandin(LoopbackServer):
    """Cloud KMS symmetric keys, in memory, over loopback HTTP.

    ``require_auth``: API calls need a bearer token from ``/token`` (made from the
    ``client_id``, ``client_secret`` and ``refresh_token`` that ``authorized_user_file``
    writes); with ``False`` any caller is served (``AnonymousCredentials``)."""

    def __init__(self, *, require_auth: bool = True, client_id: str = CLIENT_ID,
                 client_secret: str = CLIENT_SECRET,
                 refresh_token: str = REFRESH_TOKEN) -> None:
        super().__init__()
        self.require_auth = require_auth
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.lock = threading.RLock()
        self.keys: dict[str, _Key] = {}
        self.calls: list[tuple[str, str]] = []
        self.bodies: list[bytes] = []
        self.tokens_issued: list[str] = []
        self._tokens: set[str] = set()
        self._denied: set[str] = set()
        self._fail_count = 0
        self._fail_status = 503

    # -- lifecycle --------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return self.url

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def authorized_user_file(self, path: str | os.PathLike[str], *,
                             lifetime: int = FILE_TOKEN_LIFETIME) -> Path:
        """Write an application-default-credentials file (``authorized_user``) for
        ``GOOGLE_APPLICATION_CREDENTIALS``; returns its path (given a directory, writes
        ``application_default_credentials.json`` in it).

        Besides ``client_id``, ``client_secret``, ``refresh_token`` and ``token_uri``
        (this stand-in's ``/token``, which google-auth ignores for this type: it
        always refreshes at oauth2.googleapis.com), the file holds a fresh access token
        issued by this stand-in and its ``expiry`` ``lifetime`` seconds ahead, which
        google-auth uses as is: no refresh, no internet."""
        if not self.port:
            raise RuntimeError("start the stand-in first: the credentials name its URL")
        out = Path(path)
        if out.is_dir():
            out = out / "application_default_credentials.json"
        expiry = datetime.now(UTC) + timedelta(seconds=lifetime)
        out.write_text(json.dumps({
            "type": "authorized_user", "client_id": self.client_id,
            "client_secret": self.client_secret, "refresh_token": self.refresh_token,
            "token_uri": self.token_uri, "token": self._issue_token(),
            "expiry": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}, indent=2))
        return out

    def user_credentials(self, refresh_token: str | None = None) -> Any:
        """``google.oauth2.credentials.Credentials`` that refresh at this stand-in's
        ``/token`` (with ``refresh_token``, by default the right one)."""
        from google.oauth2.credentials import Credentials

        return Credentials(token=None, refresh_token=refresh_token or self.refresh_token,
                           token_uri=self.token_uri, client_id=self.client_id,
                           client_secret=self.client_secret)

    # -- controls for tests -----------------------------------------------------------
    def create_key(self, name: str, purpose: str = "ENCRYPT_DECRYPT") -> str:
        """A new CryptoKey (full resource name) with version 1 ENABLED (and primary, for
        ENCRYPT_DECRYPT keys). Returns the name."""
        if not _KEY_NAME.fullmatch(name):
            raise ValueError(f"not a CryptoKey resource name: {name!r}")
        if purpose not in PURPOSES:
            raise ValueError(f"unknown purpose {purpose!r}; one of {PURPOSES}")
        with self.lock:
            if name in self.keys:
                raise ValueError(f"CryptoKey {name} already exists")
            key = _Key(name, purpose)
            self.keys[name] = key
            self._add_version(key)
        return name

    def rotate(self, name: str) -> int:
        """A new version, which becomes the primary; returns its number."""
        with self.lock:
            return self._add_version(self._control_key(name))

    def set_version_state(self, name: str, number: int, state: str) -> None:
        """ENABLED, DISABLED, DESTROY_SCHEDULED (material kept) or DESTROYED (material
        wiped, for good: a DESTROYED version cannot change state again)."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; one of {STATES}")
        with self.lock:
            key = self._control_key(name)
            v = key.versions.get(number)
            if v is None:
                raise KeyError(f"{name}/cryptoKeyVersions/{number} does not exist")
            if v.state == "DESTROYED" and state != "DESTROYED":
                raise ValueError(f"{name}/cryptoKeyVersions/{number} is DESTROYED")
            v.state = state
            if state == "DESTROYED":
                v.material = None

    def primary(self, name: str) -> int | None:
        with self.lock:
            return self._control_key(name).primary

    def deny(self, op: str | None = "all") -> None:
        """Answer 403 PERMISSION_DENIED to ``"encrypt"``, ``"decrypt"`` or ``"all"`` API
        calls (cumulative); ``deny(None)`` lifts every denial."""
        with self.lock:
            if op is None:
                self._denied.clear()
            elif op in (*OPS, "all", "*"):
                self._denied.add("all" if op == "*" else op)
            else:
                raise ValueError(f"deny: {op!r} is not one of {(*OPS, 'all')} or None")

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        """The next ``n`` API calls (not ``/token``) are answered with HTTP ``status`` and
        its canonical error status (503 UNAVAILABLE, 429 RESOURCE_EXHAUSTED, ...)."""
        with self.lock:
            self._fail_count, self._fail_status = n, status

    def revoke_tokens(self) -> None:
        """Forget every issued access token: the next call is 401 and a client holding a
        refresh token gets a new one."""
        with self.lock:
            self._tokens.clear()

    # -- plumbing ---------------------------------------------------------------------
    def error(self, status: int, message: str, grpc: str | None = None) -> Response:
        return Response(status, {"error": {"code": status, "message": message,
                                           "status": grpc or _STATUS.get(status, "UNKNOWN")}})

    def handle(self, request: Request) -> Response:
        if request.path == "/token":
            if request.method != "POST":
                return self.error(405, "Method not allowed.", "INVALID_ARGUMENT")
            return self._token(request)
        if request.method == "POST":
            for op, pattern in (("encrypt", _ENCRYPT), ("decrypt", _DECRYPT)):
                m = pattern.fullmatch(request.path)
                if m:
                    return self._api(op, m.group(1), request)
        return self.error(404, f"The requested URL {request.path} was not found on this "
                               "server.")

    def _api(self, op: str, name: str, request: Request) -> Response:
        int_enums = "enum-encoding=int" in request.query.get("$alt", "")
        with self.lock:
            self.calls.append((op, name))
            self.bodies.append(request.body)
            try:
                if self._fail_count > 0:
                    self._fail_count -= 1
                    raise ApiError(self._fail_status, "injected fault: the service is "
                                                      "currently unavailable.")
                self._authenticate(request)
                if op in self._denied or "all" in self._denied:
                    perm = "useToEncrypt" if op == "encrypt" else "useToDecrypt"
                    raise ApiError(403, f"Permission 'cloudkms.cryptoKeyVersions.{perm}' "
                                        f"denied on resource '{name}' (or it may not "
                                        "exist).")
                try:
                    body = request.json()
                except ValueError:
                    raise ApiError(400, "Invalid JSON payload received.") from None
                if not isinstance(body, dict):
                    raise ApiError(400, "Invalid JSON payload received.")
                out = (self._encrypt(name, body) if op == "encrypt"
                       else self._decrypt(name, body))
            except ApiError as exc:
                return self.error(exc.status, str(exc), exc.grpc)
        if "protectionLevel" in out and not int_enums:
            out["protectionLevel"] = "SOFTWARE"
        return Response(200, out)

    def _authenticate(self, request: Request) -> None:
        if not self.require_auth:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self._tokens:
            raise ApiError(401, "Request had invalid authentication credentials. Expected "
                                "OAuth 2 access token, login cookie or other valid "
                                "authentication credential.")

    def _token(self, request: Request) -> Response:
        form = {k: v[-1] for k, v in
                parse_qs(request.body.decode("utf-8", "replace"),
                         keep_blank_values=True).items()}
        if form.get("grant_type") != "refresh_token":
            return Response(400, {"error": "unsupported_grant_type",
                                  "error_description": "Invalid grant_type: "
                                  f"{form.get('grant_type', '')}"})
        if (form.get("client_id") != self.client_id
                or form.get("client_secret") != self.client_secret):
            return Response(401, {"error": "invalid_client",
                                  "error_description": "The OAuth client was not found."})
        if form.get("refresh_token") != self.refresh_token:
            return Response(400, {"error": "invalid_grant",
                                  "error_description": "Bad Request"})
        return Response(200, {"access_token": self._issue_token(),
                              "expires_in": TOKEN_LIFETIME, "token_type": "Bearer",
                              "scope": "https://www.googleapis.com/auth/cloud-platform"})

    def _issue_token(self) -> str:
        token = "ya29.standin-" + secrets.token_urlsafe(24)
        with self.lock:
            self._tokens.add(token)
            self.tokens_issued.append(token)
        return token

    # -- helpers ----------------------------------------------------------------------
    def _control_key(self, name: str) -> _Key:
        key = self.keys.get(name)
        if key is None:
            raise KeyError(f"CryptoKey {name} does not exist")
        return key

    @staticmethod
    def _add_version(key: _Key) -> int:
        number = max(key.versions, default=0) + 1
        symmetric = key.purpose == "ENCRYPT_DECRYPT"
        key.versions[number] = _Version(number, os.urandom(32) if symmetric else None)
        if symmetric:
            key.primary = number
        return number

    def _key(self, name: str) -> _Key:
        key = self.keys.get(name)
        if key is None:
            raise ApiError(404, f"CryptoKey {name} not found.")
        return key

    @staticmethod
    def _check_purpose(key: _Key) -> None:
        if key.purpose != "ENCRYPT_DECRYPT":
            raise ApiError(400, f"{key.name} has purpose {key.purpose}; the operation "
                                "requires a CryptoKey with purpose ENCRYPT_DECRYPT.",
                           "FAILED_PRECONDITION")

    @staticmethod
    def _usable(key: _Key, v: _Version) -> bytes:
        if v.state != "ENABLED" or v.material is None:
            raise ApiError(400, f"{key.name}/cryptoKeyVersions/{v.number} is not enabled, "
                                f"current state is: {v.state}.", "FAILED_PRECONDITION")
        return v.material

    @staticmethod
    def _verify(data: bytes, given: int | None, what: str) -> bool:
        if given is None:
            return False
        if given != crc32c(data):
            raise ApiError(400, f"The checksum in field {what} did not match the data in "
                                "the request.")
        return True

    # -- cryptoKeys.encrypt / decrypt -------------------------------------------------
    def _encrypt(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        key_name, _, ref = name.partition("/cryptoKeyVersions/")
        key = self._key(key_name)
        plaintext = _unb64(body, "plaintext")
        aad = _unb64(body, "additionalAuthenticatedData")
        if len(plaintext) > MAX_PLAINTEXT:
            raise ApiError(400, f"The plaintext is too large: {len(plaintext)} bytes; "
                                f"the maximum is {MAX_PLAINTEXT} bytes.")
        if len(aad) > MAX_AAD:
            raise ApiError(400, f"The additional authenticated data is too large: "
                                f"{len(aad)} bytes; the maximum is {MAX_AAD} bytes.")
        pt_ok = self._verify(plaintext, _checksum(body, "plaintextCrc32c"),
                             "plaintext_crc32c")
        aad_ok = self._verify(aad, _checksum(body, "additionalAuthenticatedDataCrc32c"),
                              "additional_authenticated_data_crc32c")
        self._check_purpose(key)
        if ref:
            if not ref.isdigit() or int(ref) not in key.versions:
                raise ApiError(404, f"CryptoKeyVersion {name} not found.")
            number = int(ref)
        else:
            if key.primary is None:
                raise ApiError(400, f"{key.name} has no primary version.",
                               "FAILED_PRECONDITION")
            number = key.primary
        material = self._usable(key, key.versions[number])
        header = _HEADER.pack(_MAGIC, key.key_id, number)
        nonce = os.urandom(_NONCE)
        sealed = AESGCM(material).encrypt(nonce, plaintext, header + aad)
        ciphertext = header + nonce + sealed
        return {"name": f"{key.name}/cryptoKeyVersions/{number}",
                "ciphertext": _b64(ciphertext), "ciphertextCrc32c": str(crc32c(ciphertext)),
                "verifiedPlaintextCrc32c": pt_ok,
                "verifiedAdditionalAuthenticatedDataCrc32c": aad_ok,
                "protectionLevel": _PROTECTION_SOFTWARE}

    def _decrypt(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        key = self._key(name)
        ciphertext = _unb64(body, "ciphertext")
        aad = _unb64(body, "additionalAuthenticatedData")
        if not ciphertext:
            raise ApiError(400, "ciphertext is required.")
        if len(aad) > MAX_AAD:
            raise ApiError(400, f"The additional authenticated data is too large: "
                                f"{len(aad)} bytes; the maximum is {MAX_AAD} bytes.")
        self._verify(ciphertext, _checksum(body, "ciphertextCrc32c"), "ciphertext_crc32c")
        self._verify(aad, _checksum(body, "additionalAuthenticatedDataCrc32c"),
                     "additional_authenticated_data_crc32c")
        self._check_purpose(key)
        invalid = ApiError(400, "Decryption failed: the ciphertext is invalid.")
        if len(ciphertext) < _HEADER.size + _NONCE + _TAG:
            raise invalid
        magic, key_id, number = _HEADER.unpack_from(ciphertext)
        if magic != _MAGIC:
            raise invalid
        if key_id != key.key_id:
            raise ApiError(400, "Decryption failed: verify that 'name' refers to the "
                                "correct CryptoKey.")
        v = key.versions.get(number)
        if v is None:
            raise invalid
        material = self._usable(key, v)
        header = ciphertext[:_HEADER.size]
        nonce = ciphertext[_HEADER.size:_HEADER.size + _NONCE]
        try:
            plaintext = AESGCM(material).decrypt(nonce, ciphertext[_HEADER.size + _NONCE:],
                                                 header + aad)
        except InvalidTag:
            raise invalid from None
        return {"plaintext": _b64(plaintext), "plaintextCrc32c": str(crc32c(plaintext)),
                "usedPrimary": number == key.primary,
                "protectionLevel": _PROTECTION_SOFTWARE}
