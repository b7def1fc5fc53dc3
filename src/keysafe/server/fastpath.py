"""The hot read paths as plain ASGI, in front of FastAPI.

Agents read a value (and panels poll status) on every job, so these two routes skip
FastAPI's per-request dependency and validation machinery. They run the same code as
the documented routes (``status_core`` / ``value_core``), the same authentication and
the same error table; everything else falls through to FastAPI.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from keysafe.errors import KeysafeError
from keysafe.server import errors as problems
from keysafe.server.deps import AuthFailed, ServerState, TooManyAttempts, make_ctx
from keysafe.server.routes.secrets import status_core, value_core

_JSON = [(b"content-type", b"application/json")]
_NO_STORE = (b"cache-control", b"no-store")
_ROUTES = {2: "/api/secrets/{org_id}/{secret_name}",
           3: "/api/secrets/{org_id}/{secret_name}/value"}


class FastPath:
    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            if path.startswith("/api/secrets/"):
                parts = path[13:].split("/")
                n = len(parts)
                if (n == 3 and parts[2] == "value") or n == 2:
                    scope["keysafe.route"] = _ROUTES[n]
                    await self._handle(scope, send, parts, value=n == 3)
                    return
        await self.app(scope, receive, send)

    async def _handle(self, scope: Scope, send: Send, parts: list[str], *, value: bool) -> None:
        auth = ""
        for k, v in scope["headers"]:
            if k == b"authorization":
                auth = v.decode("latin-1")
                break
        client = scope["client"][0] if scope.get("client") else "unknown"
        rid: str = scope["state"]["request_id"]
        domain = None
        qs = scope.get("query_string", b"")
        if qs:
            for k, v in parse_qsl(qs.decode("latin-1")):
                if k == "domain_id":
                    domain = v
        org, name = parts[0], parts[1]  # the ASGI server has already decoded the path
        headers = list(_JSON)
        try:
            ctx = make_ctx(self.state, auth, client, rid)
            if value:
                headers.append(_NO_STORE)
                body = (await value_core(ctx, org, name, domain)).model_dump_json().encode()
            else:
                body = status_core(ctx, org, name, domain).model_dump_json().encode()
            status = 200
        except KeysafeError as exc:
            status, body = problems.from_exception(exc, rid)
            headers = [(b"content-type", problems.PROBLEM.encode())]
        except AuthFailed:
            status = 401
            body = problems.problem(401, "Unauthorized", "a valid bearer token is required",
                                    code="unauthorized", request_id=rid)
            headers = [(b"content-type", problems.PROBLEM.encode()),
                       (b"www-authenticate", b"Bearer")]
        except TooManyAttempts as exc:
            status = 429
            body = problems.problem(429, "Too many failed attempts",
                                    "too many failed authentication attempts from this client",
                                    code="rate_limited", request_id=rid)
            headers = [(b"content-type", problems.PROBLEM.encode()),
                       (b"retry-after", str(int(exc.retry_after + 0.999)).encode())]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
