"""A loopback stand-in for GCP IAM's service account keys (v1 REST) and Google's OAuth2
token endpoint for service accounts.

STAND-IN: no GCP server can run here; this speaks the documented REST API so the
official client library (google-auth: service account credentials, AuthorizedSession)
is exercised; it is not the real service.

What it serves (https://cloud.google.com/iam/docs/reference/rest/v1/projects.serviceAccounts.keys):

- ``GET /v1/projects/{p}/serviceAccounts/{email}/keys?keyTypes=USER_MANAGED``:
  ``{"keys": [ServiceAccountKey...]}`` without private key data.
- ``POST /v1/projects/{p}/serviceAccounts/{email}/keys`` with ``{privateKeyType,
  keyAlgorithm}``: a new RSA-2048 key; the answer's ``privateKeyData`` is the base64 of a
  Google credentials file (``type: service_account``, ``private_key_id``, PEM
  ``private_key``, ``client_email`` ...). At ten user-managed keys it answers 400
  FAILED_PRECONDITION, as IAM does.
- ``DELETE /v1/projects/{p}/serviceAccounts/{email}/keys/{id}``: ``{}``; an unknown key
  or account is 404 NOT_FOUND.
- ``POST /token``: the JWT-bearer grant (``grant_type=urn:ietf:params:oauth:grant-type:
  jwt-bearer``, ``assertion``). The assertion's RS256 signature is verified against the
  public key named by its ``kid`` (a key this stand-in made and has not deleted), its
  ``iss`` must be that key's account, its ``aud`` Google's token endpoint
  (``https://oauth2.googleapis.com/token``, what google-auth always sends) and it must
  not have expired; the answer is an access token for that account. A key can be made to wait
  ``accept_after`` seconds before it is accepted (IAM's eventual consistency).

IAM calls need ``Authorization: Bearer`` a token of an account allowed to manage the
target's keys: the account itself when ``self_manage`` (the default), and any account
given to ``grant(admin, target)``. Otherwise 403 PERMISSION_DENIED (before saying
whether the target exists, as IAM does). Errors are ``{"error": {"code", "message",
"status"}}``.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from standins._http import LoopbackServer, Request, Response

MAX_KEYS = 10
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 500: "INTERNAL"}
_KEYS = re.compile(r"/v1/projects/([^/]+)/serviceAccounts/([^/]+)/keys(?:/([^/]+))?")


@dataclass
class _Key:
    key_id: str
    public_pem: bytes
    created: float
    accept_after: float = 0.0


@dataclass
class _Account:
    email: str
    project: str
    keys: dict[str, _Key] = field(default_factory=dict)


class ApiError(Exception):
    def __init__(self, status: int, message: str, grpc: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.grpc = grpc


class GcpIamStandin(LoopbackServer):
    """Service accounts and their keys, in memory, over loopback HTTP."""

    def __init__(self, *, self_manage: bool = True) -> None:
        super().__init__()
        self.self_manage = self_manage
        self.lock = threading.RLock()
        self.accounts: dict[str, _Account] = {}
        self.admins: dict[str, set[str]] = {}     # target -> accounts allowed
        self.tokens: dict[str, str] = {}           # access token -> account
        self.accept_delay = 0.0                    # seconds a new key waits
        self.broken_create = False                 # create answers without a key file
        self.bodies: list[bytes] = []              # every answer sent (for leak checks)

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    # -- test controls ------------------------------------------------------------------
    def create_account(self, email: str, project: str = "ks-test") -> dict[str, Any]:
        """A service account with one user-managed key; returns its key file."""
        with self.lock:
            self.accounts[email] = _Account(email, project)
        return self._new_key(email)

    def grant(self, admin: str, target: str) -> None:
        self.admins.setdefault(target, set()).add(admin)

    def key_ids(self, email: str) -> list[str]:
        with self.lock:
            return sorted(self.accounts[email].keys)

    # -- HTTP -----------------------------------------------------------------------------
    def error(self, status: int, message: str, grpc: str | None = None) -> Response:
        return Response(status, {"error": {"code": status, "message": message,
                                           "status": grpc or _STATUS.get(status, "UNKNOWN")}})

    def handle(self, request: Request) -> Response:
        try:
            if request.path == "/token" and request.method == "POST":
                return self._token(request)
            m = _KEYS.fullmatch(request.path)
            if m is None:
                raise ApiError(404, f"The requested URL {request.path} was not found.")
            email, key_id = unquote(m.group(2)), m.group(3)
            caller = self._caller(request)
            itself = caller == email and self.self_manage
            if not itself and caller not in self.admins.get(email, set()):
                verb = {"GET": "list", "POST": "create"}.get(request.method, "delete")
                raise ApiError(403, f"Permission 'iam.serviceAccountKeys.{verb}' denied "
                                    "on resource (or it may not exist).")
            with self.lock:
                account = self.accounts.get(email)
                if account is None:
                    raise ApiError(404, f"Unknown service account {email}")
                if request.method == "GET" and key_id is None:
                    out: Any = {"keys": [self._describe(account, k)
                                         for k in account.keys.values()]}
                elif request.method == "POST" and key_id is None:
                    if len(account.keys) >= MAX_KEYS:
                        raise ApiError(400, "Precondition check failed.",
                                       "FAILED_PRECONDITION")
                    info = self._new_key(email)
                    key = account.keys[info["private_key_id"]]
                    out = dict(self._describe(account, key),
                               privateKeyType="TYPE_GOOGLE_CREDENTIALS_FILE",
                               privateKeyData=base64.b64encode(
                                   json.dumps(info).encode()).decode())
                    if self.broken_create:  # the key is made; the answer is not usable
                        out["privateKeyData"] = "not base64!"
                elif request.method == "DELETE" and key_id is not None:
                    if account.keys.pop(key_id, None) is None:
                        raise ApiError(404, f"Key {key_id} not found")
                    out = {}
                else:
                    raise ApiError(400, "Unsupported request.")
        except ApiError as exc:
            resp = self.error(exc.status, str(exc), exc.grpc)
        else:
            resp = Response(200, out)
        self.bodies.append(json.dumps(resp.body).encode())
        return resp

    def _caller(self, request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        who = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if who is None:
            raise ApiError(401, "Request had invalid authentication credentials.")
        return who

    def _token(self, request: Request) -> Response:
        form = {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return Response(400, {"error": "unsupported_grant_type"})
        assertion = form.get("assertion", "")
        try:
            kid = jwt.get_unverified_header(assertion).get("kid")
        except jwt.PyJWTError:
            return Response(400, {"error": "invalid_grant", "error_description":
                                  "Invalid JWT Signature."})
        with self.lock:
            found = [(a, a.keys[kid]) for a in self.accounts.values() if kid in a.keys]
        if not found:
            return Response(400, {"error": "invalid_grant", "error_description":
                                  "Invalid JWT Signature."})
        account, key = found[0]
        if time.time() < key.accept_after:
            return Response(400, {"error": "invalid_grant", "error_description":
                                  "Invalid JWT Signature."})
        try:
            claims = jwt.decode(assertion, key.public_pem, algorithms=["RS256"],
                                audience=GOOGLE_TOKEN_URI, issuer=account.email,
                                options={"require": ["exp", "iat", "iss", "aud"]})
        except jwt.PyJWTError as exc:
            return Response(400, {"error": "invalid_grant",
                                  "error_description": type(exc).__name__})
        if not claims.get("scope"):
            return Response(400, {"error": "invalid_scope"})
        token = "ya29.iam-standin-" + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = account.email
        return Response(200, {"access_token": token, "expires_in": 3600,
                              "token_type": "Bearer"})

    # -- keys -----------------------------------------------------------------------------
    def _new_key(self, email: str) -> dict[str, Any]:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        key_id = secrets.token_hex(20)
        with self.lock:
            account = self.accounts[email]
            account.keys[key_id] = _Key(key_id, public, time.time(),
                                        time.time() + self.accept_delay)
        return {"type": "service_account", "project_id": account.project,
                "private_key_id": key_id, "private_key": pem, "client_email": email,
                "client_id": str(secrets.randbelow(10**20)),
                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                "token_uri": self.token_uri,
                "universe_domain": "googleapis.com"}

    @staticmethod
    def _describe(account: _Account, key: _Key) -> dict[str, Any]:
        return {"name": f"projects/{account.project}/serviceAccounts/{account.email}/keys/"
                        f"{key.key_id}",
                "validAfterTime": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                time.gmtime(key.created)),
                "keyAlgorithm": "KEY_ALG_RSA_2048", "keyOrigin": "GOOGLE_PROVIDED",
                "keyType": "USER_MANAGED"}
