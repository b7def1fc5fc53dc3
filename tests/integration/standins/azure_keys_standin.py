"""A loopback stand-in for Azure Key Vault's keys REST API (wrap and unwrap), over HTTPS.

STAND-IN: no GCP/Azure server can run here; this speaks the documented REST API so
the official client library is exercised; it is not the real service.

It serves what the official ``azure-keyvault-keys`` ``CryptographyClient`` (and
``KeyClient``'s create and get) send (https://learn.microsoft.com/rest/api/keyvault/keys):

- ``GET /keys/{name}[/{version}]`` (Get Key): the key bundle ``{"key": {kid, kty "RSA",
  key_ops, n, e}, "attributes": {enabled, created, updated, recoveryLevel,
  recoverableDays}, "tags"}``, the public parts only, ``n`` and ``e`` base64url of the
  unsigned big-endian integers; no version (or an empty one) means the current
  (newest) version, and the ``kid`` names the version served.
- ``POST /keys/{name}[/{version}]/wrapkey`` and ``/unwrapkey`` (Wrap Key, Unwrap Key):
  body ``{"alg", "value": <base64url>}``, answer ``{"kid": <the versioned kid used>,
  "value": <base64url>}``; ``RSA-OAEP-256`` (and ``RSA-OAEP``) done with
  ``cryptography``'s OAEP on the stand-in's RSA private key, which never leaves it. A
  versionless URL (``/keys/{name}/wrapkey`` or ``/keys/{name}//wrapkey``, which is what
  the client sends for a versionless kid) uses the current version.
- ``POST /keys/{name}/{version}/sign`` (Sign): body ``{"alg", "value": <base64url of
  the digest>}``, answer ``{"kid", "value": <base64url signature>}``; and ``/verify``
  (Verify): body ``{"alg", "digest", "value": <signature>}``, answer ``{"value":
  <bool>}``. ``RS256`` (PKCS#1 v1.5 over a SHA-256 digest, what the client's local
  verification does too) only; a digest of the wrong length is 400 ``BadParameter``.
- ``POST /keys/{name}/create`` (Create Key): a new RSA key, or a new version of an
  existing one, as Key Vault does.
- ``GET /msi/token``: a managed-identity token endpoint as Azure App Service gives apps
  (``IDENTITY_ENDPOINT`` / ``IDENTITY_HEADER``; ``api-version=2019-08-01``,
  ``resource``, header ``X-IDENTITY-HEADER``), answering ``{access_token, expires_on
  (Unix seconds, a string), resource, token_type, client_id}``; a missing or wrong
  ``X-IDENTITY-HEADER`` is 401. azure-identity (through MSAL) takes an https endpoint
  as well as http: it sends the request through azure-core's requests transport, which
  honours ``REQUESTS_CA_BUNDLE`` (requests' own rule), so this endpoint is served on the
  same HTTPS port. ``managed_identity_env()`` gives a subprocess what it needs.
- every other path: the secrets API of ``AzureKeyVaultStandin`` (this class extends
  it), so one vault serves keys and secrets, with the same tokens.

Challenge authentication is the secrets stand-in's: a request without a bearer token
gets 401 with ``WWW-Authenticate: Bearer authorization="…/<tenant>", resource="…"`` and
the error shape of ``AzureKeyVaultStandin.error``; the client then gets a token for
``<resource>/.default`` and sends the request again. Accepted tokens: the one
``FakeTokenCredential`` hands out, and those the managed-identity endpoint issued for
this vault's challenge resource (a token issued for another resource is refused, 401).

The challenge resource. azure-keyvault's ``ChallengeAuthPolicy`` (unless the client is
made with ``verify_challenge_resource=False``) requires the request URL's authority
(host and port) to END WITH ``"." + <the resource's authority>``, a strict parent domain,
as ``<vault>.vault.azure.net`` ends with ``.vault.azure.net``; the port counts on both
sides (only an https :443 is dropped). So ``resource="https://127.0.0.1"`` is refused for
a ``https://127.0.0.1:PORT`` vault (neither ``127.0.0.1:PORT`` nor ``127.0.0.1`` ends
with ``.127.0.0.1``), and so is the real ``https://vault.azure.net``; what passes is a
dotted suffix of the IP with the same port: ``https://0.0.1:PORT`` (``0.1`` or ``1``
would do too). The default, ``challenge_resource=VERIFIABLE``, announces that one, so a
client with no extra options accepts it; ``challenge_resource=VAULT_RESOURCE`` announces
the real ``https://vault.azure.net``, which needs ``verify_challenge_resource=False``
(``client_kwargs()`` adds it when needed).

Behaviour kept, and where it comes from:

- Key names ``[0-9a-zA-Z-]{1,127}``, compared case-insensitively; versions are 32 hex
  digits; new keys are RSA 2048 with ``key_ops`` encrypt, decrypt, sign, verify,
  wrapKey, unwrapKey (the Get Key sample); ``created``/``updated`` whole Unix seconds.
- Unknown key or version: 404 ``{"error": {"code": "KeyNotFound", "message": "A key
  with (name/id) … was not found in this key vault."}}``.
- A failed unwrap (altered value, another key's output, wrong length): 400
  ``BadParameter`` "Error occurred while decoding OAEP padding." (the service's answer in
  Azure/azure-sdk-for-net#18947 and MicrosoftDocs/azure-docs#39976); a value that is not
  base64url: 400 ``BadParameter`` "Content of 'value' is not base64url." (as quoted in
  bruj0/vault-recovery-key#20); an algorithm it does not do: 400 ``BadParameter``.
- A disabled version: unwrapkey and sign are 403 ``Forbidden`` "Operation unwrapKey is
  not allowed on a disabled key." with inner error ``KeyDisabled``; wrapkey and verify
  are served (public key operations), as a live-service report found
  (Azure/azure-sdk-for-python#45342: decrypt, sign and unwrapKey blocked, encrypt,
  wrapKey and verify allowed). GET of a
  disabled version is refused the same way (``KeyDisabled``), as for secrets; that one
  is not confirmed by a primary source. ``disabled_blocks`` (a set of ops) changes this.
- An operation not in the key's ``key_ops``: 403 ``Forbidden``, inner error
  ``KeyOperationForbidden`` (Azure/azure-sdk-for-net#11518).
- ``deny(op)``: 403 ``Forbidden``, inner error ``ForbiddenByPolicy``, "… does not have
  keys <op> permission on key vault …", answered before the key is looked up, as an
  access-policy denial is.

Departures: no ``RSA1_5`` (400), no EC or symmetric keys, no key rotation policies,
release, import, delete or listing; ``nbf``/``exp`` are not kept.

The client side, as observed with azure-keyvault-keys 4.11 / azure-core 1.41: a
``CryptographyClient`` GETs the key first and wraps LOCALLY with the public key (no
wrapkey call); unwrap needs the private key, so it is always remote. When the GET is
refused with 403 (``deny("get")``, or a disabled version) the client stops asking and
wraps remotely too; its ``WrapResult.key_id`` is then the client's own key id, so a
client made with a versionless kid gets a versionless ``key_id`` although the service
answered with the versioned kid (the local path reports the versioned one). A failed
GET that is not 403 is swallowed too, and retried on the next operation. azure-core
retries a POST on 500, 503 and 504, on 429 (or 408, 502) only when a ``Retry-After``
header is present (``fail_next(..., retry_after=...)``).

What the client raises: 404 ``KeyNotFound``: ``ResourceNotFoundError``; 400
``BadParameter`` (failed unwrap, algorithm, value): ``HttpResponseError``, status 400,
``.error.code`` ``"BadParameter"``; 403 (``deny``, ``KeyDisabled``,
``KeyOperationForbidden``): ``HttpResponseError``, status 403, ``.error.code``
``"Forbidden"``, the inner code in ``.error.innererror["code"]``; 401 (a token it does
not accept): ``ClientAuthenticationError``; ``fail_next`` past the retries:
``HttpResponseError`` with that status; stopped, or a certificate not trusted:
``ServiceRequestError``; a challenge resource the client will not accept: a plain
``ValueError``. A wrong ``IDENTITY_HEADER``: ``ManagedIdentityCredential`` raises
``CredentialUnavailableError``, ``DefaultAzureCredential`` (and so the client)
``ClientAuthenticationError``.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from standins._http import Request, Response
from standins.azure_standin import (
    _NAME,
    TENANT,
    TOKEN,
    ApiError,
    AzureKeyVaultStandin,
    FakeTokenCredential,
    make_certificate,
)

__all__ = [
    "IDENTITY_PATH",
    "VAULT_RESOURCE",
    "VERIFIABLE",
    "AzureKeyVaultKeysStandin",
    "FakeTokenCredential",
    "make_certificate",
]

VAULT_RESOURCE = "https://vault.azure.net"
#: ``challenge_resource`` value: announce ``https://0.0.1:<port>``, which azure-keyvault's
#: challenge verification accepts for a ``https://127.0.0.1:<port>`` vault.
VERIFIABLE = "verifiable"
IDENTITY_PATH = "/msi/token"
IDENTITY_API_VERSION = "2019-08-01"
MI_CLIENT_ID = "00000000-0000-0000-0000-0000000000c1"
MI_TOKEN_LIFETIME = 3600
DEFAULT_KEY_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey")
RSA_SIZES = (2048, 3072, 4096)
#: The wrap algorithms served, and their OAEP hash.
ALGORITHMS: dict[str, type[hashes.HashAlgorithm]] = {"RSA-OAEP-256": hashes.SHA256,
                                                      "RSA-OAEP": hashes.SHA1}
OPS = ("get", "wrapkey", "unwrapkey", "sign", "verify", "create")
_PERMISSION = {"get": "get", "wrapkey": "wrapKey", "unwrapkey": "unwrapKey",
               "sign": "sign", "verify": "verify", "create": "create"}
#: The signature algorithms served, and the digest length each takes.
SIGNATURES = {"RS256": 32}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")

_GET = re.compile(r"/keys/([^/]+)(?:/([^/]*))?/?")
_OP = re.compile(r"/keys/([^/]+)/(?:([^/]*)/)?(wrapkey|unwrapkey|sign|verify)",
                 re.IGNORECASE)
_CREATE = re.compile(r"/keys/([^/]+)/create", re.IGNORECASE)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object body; 400 BadParameter otherwise."""
    try:
        body = request.json()
    except ValueError:
        raise ApiError(400, "BadParameter", "The request body is not JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "BadParameter", "The request body is not a JSON object.")
    return body


def _unb64url(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise ApiError(400, "BadParameter", "Property 'value' is required.")
    if not _B64URL.fullmatch(value) or len(value) % 4 == 1:
        raise ApiError(400, "BadParameter", "Content of 'value' is not base64url.")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ApiError(400, "BadParameter", "Content of 'value' is not base64url.") from None


def _uint(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8 or 1, "big")


@dataclass
class _KeyVersion:
    vid: str
    private: rsa.RSAPrivateKey
    key_ops: list[str]
    enabled: bool
    created: int
    updated: int


@dataclass
class _Key:
    name: str
    versions: list[_KeyVersion] = field(default_factory=list)


class AzureKeyVaultKeysStandin(AzureKeyVaultStandin):
    """One vault's RSA keys (and, inherited, its secrets), in memory, over loopback
    HTTPS, with an App Service managed-identity endpoint.

    ``challenge_resource``: ``VERIFIABLE`` (default; accepted by a client with no
    options), ``VAULT_RESOURCE`` (the real one; needs ``verify_challenge_resource=False``)
    or any URL. ``identity_header``: the ``X-IDENTITY-HEADER`` secret (random if not
    given).

    Test controls (thread-safe): ``create_key``, ``rotate``, ``set_enabled``, ``deny`` /
    ``allow``, ``fail_next``, ``kid``, ``versions``; records: ``calls`` (``(op, kid or
    name)`` of each authenticated keys call, op one of ``OPS``: a versioned kid when the
    URL named a version, else the name as sent), ``bodies`` (every non-empty request
    body received, on any path), ``identity_calls`` (the query of each token request),
    ``api_versions``."""

    def __init__(self, certfile: str, keyfile: str, *,
                 challenge_resource: str = VERIFIABLE,
                 identity_header: str | None = None) -> None:
        super().__init__(certfile, keyfile)
        self._resource = challenge_resource
        self.identity_header = identity_header or secrets.token_urlsafe(24)
        self.keys: dict[str, _Key] = {}
        self.calls: list[tuple[str, str]] = []
        self.bodies: list[bytes] = []
        self.identity_calls: list[dict[str, str]] = []
        #: Operations refused on a disabled version (403, inner error KeyDisabled).
        self.disabled_blocks: set[str] = {"get", "unwrapkey", "sign"}
        self._mi_tokens: dict[str, str] = {}  # token -> resource it was issued for
        self._denied: set[str] = set()
        self._fail_count = 0
        self._fail_status = 503
        self._fail_retry_after: int | None = None

    # -- lifecycle and client settings ------------------------------------------------
    @property
    def ca_bundle(self) -> str:
        """The stand-in's certificate: the client's ``connection_verify``, or
        ``REQUESTS_CA_BUNDLE``."""
        assert self._certfile is not None
        return self._certfile

    @property
    def challenge_resource(self) -> str:
        if self._resource == VERIFIABLE:
            return f"https://0.0.1:{self.port}"
        return self._resource

    @property
    def challenge(self) -> str:
        return (f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", '
                f'resource="{self.challenge_resource}"')

    @property
    def challenge_verifiable(self) -> bool:
        """Whether azure-keyvault's challenge-resource check accepts this vault's
        challenge (the vault URL's authority ends with "." + the resource's)."""
        resource = urlsplit(self.challenge_resource)
        authority = resource.netloc.lower()
        if resource.scheme == "https" and resource.port == 443:
            authority = authority[:-4]
        return bool(authority) and f"127.0.0.1:{self.port}".endswith("." + authority)

    def client_kwargs(self) -> dict[str, Any]:
        """Options a client needs for this stand-in: trust its certificate, and skip
        the challenge-resource check only when the challenge would fail it."""
        kwargs: dict[str, Any] = {"connection_verify": self.ca_bundle}
        if not self.challenge_verifiable:
            kwargs["verify_challenge_resource"] = False
        return kwargs

    @property
    def identity_endpoint(self) -> str:
        return f"{self.url}{IDENTITY_PATH}"

    def managed_identity_env(self) -> dict[str, str]:
        """The environment a subprocess needs for ``DefaultAzureCredential()`` to get its
        tokens from this stand-in's managed-identity endpoint, and for the clients to
        trust its certificate, with no client options:

        - ``IDENTITY_ENDPOINT``, ``IDENTITY_HEADER``: App Service managed identity
          (without ``IDENTITY_SERVER_THUMBPRINT``, which would mean Service Fabric);
        - ``REQUESTS_CA_BUNDLE``: this stand-in's certificate (requests, under azure-core,
          reads it, else ``CURL_CA_BUNDLE``; ``SSL_CERT_FILE`` is not read);
        - ``AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential``: DefaultAzureCredential
          tries nothing else (no Entra ID at login.microsoftonline.com, no developer
          tools); App Service identity never probes IMDS (169.254.169.254);
        - ``NO_PROXY``: loopback is never sent through a proxy.

        Start from a clean environment: ``AZURE_CLIENT_ID`` would ask for a user-assigned
        identity, ``IDENTITY_SERVER_THUMBPRINT`` or ``MSI_ENDPOINT`` another flow."""
        return {"IDENTITY_ENDPOINT": self.identity_endpoint,
                "IDENTITY_HEADER": self.identity_header,
                "REQUESTS_CA_BUNDLE": self.ca_bundle,
                "AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential",
                "NO_PROXY": "127.0.0.1,localhost"}

    # -- controls for tests -----------------------------------------------------------
    def create_key(self, name: str, *, key_ops: tuple[str, ...] | list[str] = DEFAULT_KEY_OPS,
                   size: int = 2048, enabled: bool = True) -> str:
        """A new RSA key (or, if ``name`` exists, a new current version of it, as
        Create Key does); returns the versioned kid."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a Key Vault key name: {name!r}")
        with self.lock:
            return self._kid(*self._new_version(name, list(key_ops), size, enabled))

    def rotate(self, name: str) -> str:
        """A new version of an existing key, now current (same key_ops); returns its
        kid."""
        with self.lock:
            key = self._control_key(name)
            latest = key.versions[-1]
            return self._kid(*self._new_version(name, list(latest.key_ops),
                                                latest.private.key_size, True))

    def set_enabled(self, name: str, version: str | None, enabled: bool) -> str:
        """Enable or disable one version (``None``: the current one, as an update
        without a version does); returns its kid."""
        with self.lock:
            key = self._control_key(name)
            v = self._find_version(key, version)
            if v is None:
                raise KeyError(f"key {name} has no version {version}")
            v.enabled = enabled
            v.updated = self._now()
            return self._kid(key, v)

    def kid(self, name: str, version: str | None = None) -> str:
        """The versioned kid of ``version`` (default: the current one)."""
        with self.lock:
            key = self._control_key(name)
            v = self._find_version(key, version)
            if v is None:
                raise KeyError(f"key {name} has no version {version}")
            return self._kid(key, v)

    def versions(self, name: str) -> list[str]:
        """Every version's kid, oldest first."""
        with self.lock:
            key = self._control_key(name)
            return [self._kid(key, v) for v in key.versions]

    def deny(self, op: str | None = None) -> None:
        """Refuse ``op`` (one of ``OPS``: ``"get"``, ``"wrapkey"``, ``"sign"``, ...), or
        every keys operation with ``None``, as a missing access-policy permission: 403
        Forbidden naming the operation. Cumulative; ``allow`` lifts."""
        with self.lock:
            if op is None:
                self._denied.update(OPS)
            elif op.lower() in OPS:
                self._denied.add(op.lower())
            else:
                raise ValueError(f"deny: {op!r} is not one of {OPS} or None")

    def allow(self, op: str | None = None) -> None:
        """Lift ``deny(op)``; ``None`` lifts every denial."""
        with self.lock:
            if op is None:
                self._denied.clear()
            else:
                self._denied.discard(op.lower())

    def fail_next(self, n: int = 1, status: int = 503, *,
                  retry_after: int | None = None) -> None:
        """The next ``n`` authenticated keys calls are answered with ``status`` (Key
        Vault's error shape), and a ``Retry-After`` header when ``retry_after`` is
        given (azure-core retries a POST on 429 only with one)."""
        with self.lock:
            self._fail_count, self._fail_status = n, status
            self._fail_retry_after = retry_after

    # -- plumbing ---------------------------------------------------------------------
    def error(self, status: int, message: str, code: str | None = None,
              inner: str | None = None) -> Response:
        resp = super().error(status, message, code, inner)
        if status == 401:
            resp.headers["WWW-Authenticate"] = self.challenge
        return resp

    def handle(self, request: Request) -> Response:
        if request.body:
            with self.lock:
                self.bodies.append(request.body)
        path = request.path
        if path.rstrip("/").lower() == IDENTITY_PATH:
            return self._identity(request)
        if path != "/keys" and not path.startswith("/keys/"):
            # The secrets API, which accepts only FakeTokenCredential's token: a managed
            # identity token good for this vault stands for it.
            if self._token_ok(request):
                request.headers["authorization"] = f"Bearer {TOKEN}"
            return super().handle(request)
        return self._keys_api(request)

    def _token_ok(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        if token == TOKEN:
            return True
        with self.lock:
            resource = self._mi_tokens.get(token)
        return resource is not None and (resource.rstrip("/").lower()
                                         == self.challenge_resource.rstrip("/").lower())

    def _keys_api(self, request: Request) -> Response:
        if not self._token_ok(request):
            if request.headers.get("authorization"):
                return self.error(401, "AKV10022: Invalid audience or token.")
            return self.error(401, "AKV10000: Request is missing a Bearer or PoP token.")
        if "api-version" not in request.query:
            return self.error(400, "The api-version query parameter is required.",
                              "BadParameter")
        path, method = request.path, request.method
        version: str | None = None
        m = _OP.fullmatch(path)
        if method == "POST" and m:
            name, version, op = m.group(1), m.group(2) or None, m.group(3).lower()
        elif method == "POST" and (m := _CREATE.fullmatch(path)):
            name, op = m.group(1), "create"
        elif method == "GET" and (m := _GET.fullmatch(path)):
            name, version, op = m.group(1), m.group(2) or None, "get"
        else:
            return self.error(404, f"no route for {method} {path}", "BadRequest")
        with self.lock:
            self.api_versions.add(request.query["api-version"])
            self.calls.append((op, f"{self.url}/keys/{name}/{version}" if version else name))
            if self._fail_count > 0:
                self._fail_count -= 1
                resp = self.error(self._fail_status, "injected fault: the service is "
                                                     "unavailable or throttling.")
                if self._fail_retry_after is not None:
                    resp.headers["Retry-After"] = str(self._fail_retry_after)
                return resp
            try:
                if op in self._denied:
                    raise ApiError(
                        403, "Forbidden",
                        f"The user, group or application 'appid={MI_CLIENT_ID};oid="
                        f"{MI_CLIENT_ID};iss=https://sts.windows.net/{TENANT}/' does not "
                        f"have keys {_PERMISSION[op]} permission on key vault "
                        f"'127.0.0.1;location=standin'. For help resolving this issue, "
                        "please see https://go.microsoft.com/fwlink/?linkid=2125287",
                        "ForbiddenByPolicy")
                if op == "create":
                    status, body = self._create(request, name)
                elif op == "get":
                    status, body = self._get(name, version)
                else:
                    status, body = self._crypt(op, request, name, version)
            except ApiError as exc:
                return self.error(exc.status, str(exc), exc.code, exc.inner)
        return Response(status, body)

    # -- keys -------------------------------------------------------------------------
    def _kid(self, key: _Key, v: _KeyVersion) -> str:
        return f"{self.url}/keys/{key.name}/{v.vid}"

    def _control_key(self, name: str) -> _Key:
        key = self.keys.get(name.lower())
        if key is None or not key.versions:
            raise KeyError(f"no key {name}")
        return key

    @staticmethod
    def _find_version(key: _Key, version: str | None) -> _KeyVersion | None:
        if not version:
            return key.versions[-1]
        return next((v for v in key.versions if v.vid == version), None)

    def _new_version(self, name: str, key_ops: list[str], size: int,
                     enabled: bool) -> tuple[_Key, _KeyVersion]:
        key = self.keys.get(name.lower())
        if key is None:
            key = self.keys[name.lower()] = _Key(name)
        now = self._now()
        v = _KeyVersion(uuid.uuid4().hex,
                        rsa.generate_private_key(public_exponent=65537, key_size=size),
                        key_ops, enabled, now, now)
        key.versions.append(v)
        return key, v

    def _lookup(self, name: str, version: str | None) -> tuple[_Key, _KeyVersion]:
        key = self.keys.get(name.lower())
        if key is None or not key.versions:
            raise ApiError(404, "KeyNotFound", f"A key with (name/id) {name} was not found "
                                               "in this key vault.")
        v = self._find_version(key, version)
        if v is None:
            raise ApiError(404, "KeyNotFound", f"A key with (name/id) {name}/{version} was "
                                               "not found in this key vault.")
        return key, v

    def _check_disabled(self, op: str, v: _KeyVersion) -> None:
        if not v.enabled and op in self.disabled_blocks:
            raise ApiError(403, "Forbidden", f"Operation {_PERMISSION[op]} is not allowed "
                                             "on a disabled key.", "KeyDisabled")

    def _bundle(self, key: _Key, v: _KeyVersion) -> dict[str, Any]:
        pub = v.private.public_key().public_numbers()
        return {"key": {"kid": self._kid(key, v), "kty": "RSA", "key_ops": list(v.key_ops),
                        "n": _b64url(_uint(pub.n)), "e": _b64url(_uint(pub.e))},
                "attributes": self._attributes(v),  # type: ignore[arg-type]
                "tags": {}}

    def _get(self, name: str, version: str | None) -> tuple[int, Any]:
        key, v = self._lookup(name, version)
        self._check_disabled("get", v)
        return 200, self._bundle(key, v)

    def _create(self, request: Request, name: str) -> tuple[int, Any]:
        if not _NAME.fullmatch(name):
            raise ApiError(400, "BadParameter", "The request URI contains an invalid name: "
                                                f"{name}")
        body = _json_object(request)
        if body.get("kty") not in ("RSA", "RSA-HSM"):
            raise ApiError(400, "BadParameter", f"The stand-in creates RSA keys only, not "
                                                f"{body.get('kty')!r}.")
        size = body.get("key_size") or 2048
        if size not in RSA_SIZES:
            raise ApiError(400, "BadParameter", f"Invalid key size {size}: RSA keys are "
                                                f"{', '.join(map(str, RSA_SIZES))} bits.")
        key_ops = body.get("key_ops") or list(DEFAULT_KEY_OPS)
        enabled = (body.get("attributes") or {}).get("enabled")
        key, v = self._new_version(name, list(key_ops), size,
                                   True if enabled is None else bool(enabled))
        return 200, self._bundle(key, v)

    def _crypt(self, op: str, request: Request, name: str,
               version: str | None) -> tuple[int, Any]:
        key, v = self._lookup(name, version)
        if _PERMISSION[op] not in v.key_ops:
            raise ApiError(403, "Forbidden", f"Operation {_PERMISSION[op]} is not permitted "
                                             "on this key.", "KeyOperationForbidden")
        self._check_disabled(op, v)
        body = _json_object(request)
        alg = body.get("alg")
        if not alg:
            raise ApiError(400, "BadParameter", "Property 'alg' is required.")
        if op in ("sign", "verify"):
            return self._signature(op, body, key, v)
        if alg not in ALGORITHMS:
            raise ApiError(400, "BadParameter", f"Invalid parameter: alg. Algorithm {alg} "
                                                "is not supported by this stand-in for RSA "
                                                f"keys (only {', '.join(ALGORITHMS)}).")
        data = _unb64url(body.get("value"))
        digest = ALGORITHMS[alg]
        oaep = padding.OAEP(mgf=padding.MGF1(algorithm=digest()), algorithm=digest(),
                            label=None)
        if op == "wrapkey":
            limit = v.private.key_size // 8 - 2 * digest.digest_size - 2
            if len(data) > limit:
                raise ApiError(400, "BadParameter", f"The value is too long for {alg} with "
                                                    f"this key: at most {limit} bytes.")
            out = v.private.public_key().encrypt(data, oaep)
        else:
            try:
                out = v.private.decrypt(data, oaep)
            except ValueError:
                raise ApiError(400, "BadParameter",
                               "Error occurred while decoding OAEP padding.") from None
        return 200, {"kid": self._kid(key, v), "value": _b64url(out)}

    def _signature(self, op: str, body: dict[str, Any], key: _Key,
                   v: _KeyVersion) -> tuple[int, Any]:
        alg = body["alg"]
        if alg not in SIGNATURES:
            raise ApiError(400, "BadParameter", f"Invalid parameter: alg. Algorithm {alg} "
                                                "is not supported by this stand-in for "
                                                f"signatures (only {', '.join(SIGNATURES)}).")
        digest = _unb64url(body.get("value" if op == "sign" else "digest"))
        if len(digest) != SIGNATURES[alg]:
            raise ApiError(400, "BadParameter", f"The digest is {len(digest)} bytes; {alg} "
                                                f"takes {SIGNATURES[alg]}.")
        pkcs1, prehashed = padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
        if op == "sign":
            return 200, {"kid": self._kid(key, v),
                         "value": _b64url(v.private.sign(digest, pkcs1, prehashed))}
        try:
            v.private.public_key().verify(_unb64url(body.get("value")), digest, pkcs1,
                                          prehashed)
        except InvalidSignature:
            return 200, {"value": False}
        return 200, {"value": True}

    # -- managed identity (App Service) -----------------------------------------------
    def _identity(self, request: Request) -> Response:
        query = dict(request.query)
        with self.lock:
            self.identity_calls.append(query)
        if request.method != "GET":
            return Response(405, {"statusCode": 405, "message": "Method not allowed."})
        if request.headers.get("x-identity-header") != self.identity_header:
            return Response(401, {"statusCode": 401,
                                  "message": "The X-IDENTITY-HEADER header is missing or "
                                             "does not match."})
        if query.get("api-version") != IDENTITY_API_VERSION:
            return Response(400, {"statusCode": 400,
                                  "message": f"api-version must be {IDENTITY_API_VERSION}."})
        resource = query.get("resource")
        if not resource:
            return Response(400, {"statusCode": 400,
                                  "message": "The resource parameter is required."})
        token = "standin-mi-" + secrets.token_urlsafe(24)
        with self.lock:
            self._mi_tokens[token] = resource
        return Response(200, {"access_token": token,
                              "expires_on": str(int(time.time()) + MI_TOKEN_LIFETIME),
                              "resource": resource, "token_type": "Bearer",
                              "client_id": query.get("client_id") or MI_CLIENT_ID})
