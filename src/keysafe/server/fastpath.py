"""The hot read paths as plain ASGI, in front of FastAPI.

Agents read a value (and panels poll status) on every job, so these two routes skip
FastAPI's per-request dependency and validation machinery. They run the same code as
the documented routes (``status_core`` / ``value_core``), the same authentication and
the same error table; everything else falls through to FastAPI. A cached status (or
value) is answered on the event loop; on a network store a miss goes to a thread.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from keysafe.errors import KeysafeError
from keysafe.server import errors as problems
from keysafe.server.deps import AuthFailed, ServerState, TooManyAttempts, make_ctx
from keysafe.server.routes.secrets import (
    MAX_FIELD,
    is_remote,
    status_cached,
    status_read,
    value_core,
    write_core,
)
from keysafe.server.schemas import SecretWrite

_JSON = [(b"content-type", b"application/json")]
_NO_STORE = (b"cache-control", b"no-store")
_ROUTES = {2: "/api/secrets/{org_id}/{secret_name}",
           3: "/api/secrets/{org_id}/{secret_name}/value"}


class FastPath:
    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            method = scope["method"]
            if path.startswith("/api/secrets/") and method in ("GET", "PUT"):
                parts = path[13:].split("/")
                n = len(parts)
                # A value read that may name a version or a stage (or spells a key
                # with %-escapes, or is long enough to hold an over-long field) is
                # FastAPI's, which parses and validates it.
                qs = scope.get("query_string", b"")
                if method == "GET" and ((n == 3 and parts[2] == "value"
                                         and b"version" not in qs and b"%" not in qs
                                         and b"stage" not in qs
                                         and len(qs) <= MAX_FIELD)
                                        or n == 2):
                    scope["keysafe.route"] = _ROUTES[n]
                    await self._handle(scope, send, parts, value=n == 3)
                    return
                if method == "PUT" and n == 2 and _is_json(scope):
                    scope["keysafe.route"] = _ROUTES[2]
                    body = await _read_body(receive)
                    if body is not None:
                        await self._handle(scope, send, parts, value=False, body=body)
                    return
        await self.app(scope, receive, send)

    async def _handle(self, scope: Scope, send: Send, parts: list[str], *, value: bool,
                      body: bytes | None = None) -> None:
        auth = ""
        for k, v in scope["headers"]:
            if k == b"authorization":
                auth = v.decode("latin-1")
                break
        client = scope["client"][0] if scope.get("client") else "unknown"
        rid: str = scope["state"]["request_id"]
        domain: str | None = None
        field: str | None = None
        qs = scope.get("query_string", b"")
        if qs:
            # Blank values kept, the last one winning: as Starlette reads a query.
            for k, v in parse_qsl(qs.decode("latin-1"), keep_blank_values=True):
                if k == "domain_id":
                    domain = v
                elif k == "field" and value:
                    field = v or None  # empty: the whole value (ESO, no property)
        org, name = parts[0], parts[1]  # the ASGI server has already decoded the path
        headers = list(_JSON)
        try:
            ctx = make_ctx(self.state, auth, client, rid)
            if body is not None:
                try:
                    payload = SecretWrite.model_validate_json(body)
                except ValidationError as exc:
                    raise _Invalid(exc) from None
                result = await write_core(ctx, org, name, payload)
                body = result.model_dump_json().encode()
            elif value:
                headers.append(_NO_STORE)
                body = (await value_core(ctx, org, name, domain, field=field)
                        ).model_dump_json().encode()
            else:
                st = status_cached(ctx, org, name, domain)
                if st is None:
                    if is_remote(ctx.mgr):
                        st = await asyncio.get_running_loop().run_in_executor(
                            None, status_read, ctx, org, name, domain)
                    else:
                        st = status_read(ctx, org, name, domain)
                body = st.body
            status = 200
        except _Invalid as exc:
            # Never echo the input: it may hold the value.
            errs = [{"loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg", ""),
                     "type": e.get("type", "")} for e in exc.error.errors()]
            where = ", ".join(".".join(e["loc"]) for e in errs) or "body"
            status = 422
            body = problems.problem(422, "Invalid request", f"invalid input at {where}",
                                    code="invalid_request", request_id=rid, errors=errs)
            headers = [(b"content-type", problems.PROBLEM.encode())]
        except KeysafeError as exc:
            status, body = problems.from_exception(exc, rid)
            headers = [(b"content-type", problems.PROBLEM.encode())]
            headers += [(k.lower().encode(), v.encode())
                        for k, v in problems.retry_headers(exc).items()]
        except AuthFailed:
            status = 401
            body = problems.problem(401, "Unauthorized", "a valid bearer token is required",
                                    code="unauthorized", request_id=rid)
            headers = [(b"content-type", problems.PROBLEM.encode()),
                       (b"www-authenticate", b"Bearer")]
        except TooManyAttempts as exc:
            status = 429
            body = problems.problem(429, exc.title, exc.detail, code="rate_limited",
                                    request_id=rid)
            headers = [(b"content-type", problems.PROBLEM.encode()),
                       (b"retry-after", str(int(exc.retry_after + 0.999)).encode())]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _Invalid(Exception):
    def __init__(self, error: ValidationError) -> None:
        super().__init__("invalid request body")
        self.error = error


def _is_json(scope: Scope) -> bool:
    for k, v in scope["headers"]:
        if k == b"content-type":
            return bool(v.split(b";")[0].strip().lower() == b"application/json")
    return False


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client went away (or the edge middleware
    stopped reading an over-large body, which it then answers itself)."""
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(chunks)
