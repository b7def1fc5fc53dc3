"""create_app(): the FastAPI application over one SecretManager.

Middleware is plain ASGI (no per-request task hops): request ids, body limits,
security headers and metrics. Errors come from the one table in ``errors``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keysafe.config import Settings, load_settings, uses_state_database
from keysafe.errors import KeysafeError
from keysafe.manager.manager import SecretManager
from keysafe.naming import REQUEST_ID
from keysafe.server import errors as problems
from keysafe.server.auth import AuthLimiter, JwtVerifier, SharedLimiter
from keysafe.server.deps import AuthFailed, ServerState, TooManyAttempts, request_id
from keysafe.server.metrics import Metrics
from keysafe.server.tokenstore import TokenStore, open_token_store

log = logging.getLogger("keysafe.server")
# Request ids: a random per-process prefix and a counter (unique, and cheaper than uuid4).
_RID_PREFIX = uuid.uuid4().hex[:12] + "-"
_rid_counter = itertools.count(1)

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = (b"default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: "
            b"https://fastapi.tiangolo.com; frame-ancestors 'none'")


class EdgeMiddleware:
    """Request id, body size limit, security headers and metrics for every response."""

    def __init__(self, app: ASGIApp, *, max_body: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        declared_too_big = False
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                cand = v.decode("latin-1")
                rid = cand if REQUEST_ID.fullmatch(cand) else ""
            elif k == b"content-length":
                try:
                    declared_too_big = int(v) > self.max_body
                except ValueError:
                    declared_too_big = True
        rid = rid or f"{_RID_PREFIX}{next(_rid_counter):x}"
        scope.setdefault("state", {})["request_id"] = rid
        path: str = scope["path"]
        csp = DOCS_CSP if path in ("/docs", "/redoc") else API_CSP
        started = time.perf_counter()
        # status, bytes seen, body over the limit, response started
        st: list[Any] = [500, 0, declared_too_big, False]
        max_body = self.max_body

        async def limited_receive() -> Message:
            if st[2]:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                st[1] += len(msg.get("body", b""))
                if st[1] > max_body:
                    # Stop reading; the app sees a disconnect and we answer 413 below.
                    st[2] = True
                    return {"type": "http.disconnect"}
            return msg

        async def send_wrapper(msg: Message) -> None:
            if st[2] and not st[3]:
                return  # the body was too large: our 413 replaces whatever the app says
            if msg["type"] == "http.response.start":
                st[0] = msg["status"]
                st[3] = True
                msg["headers"] = _edge_headers(list(msg.get("headers", [])), rid, csp)
            await send(msg)

        try:
            if not declared_too_big:
                await self.app(scope, limited_receive, send_wrapper)
        except Exception:
            if not st[2]:
                raise
        finally:
            if st[2] and not st[3]:
                st[0] = 413
                body = problems.problem(
                    413, "Request body too large",
                    f"request bodies are limited to {self.max_body} bytes",
                    code="body_too_large", request_id=rid)
                headers = _edge_headers([(b"content-type", problems.PROBLEM.encode()),
                                         (b"content-length", str(len(body)).encode()),
                                         (b"connection", b"close")], rid, csp)
                await send({"type": "http.response.start", "status": 413, "headers": headers})
                await send({"type": "http.response.body", "body": body})
            route = scope.get("route")
            label = getattr(route, "path", None) or scope.get("keysafe.route", "unmatched")
            self.metrics.observe(scope["method"], label, st[0], time.perf_counter() - started)


def _edge_headers(headers: list[tuple[bytes, bytes]], rid: str, csp: bytes
                  ) -> list[tuple[bytes, bytes]]:
    """Security headers and the request id, on every response."""
    headers.extend(SECURITY_HEADERS)
    headers.append((b"x-request-id", rid.encode()))
    if not any(k == b"content-security-policy" for k, _ in headers):
        headers.append((b"content-security-policy", csp))
    if not any(k == b"cache-control" for k, _ in headers):
        headers.append((b"cache-control", b"no-store"))
    return headers


def _problem_response(status: int, body: bytes, headers: dict[str, str] | None = None
                      ) -> Response:
    return Response(body, status_code=status, media_type=problems.PROBLEM, headers=headers)


class AccessWatch:
    """The scheduled ``keysafe audit report`` (spec 000: alerts for secret access
    patterns): every ``every`` seconds, the findings since the last run go out as an
    ``access.findings`` event (KEYSAFE_EVENT_WEBHOOKS) and are counted in
    ``keysafe_access_findings_total{kind}``. Names and counts, no value."""

    def __init__(self, robot: SecretManager, events: Any, every: float) -> None:
        self.robot = robot
        self.events = events
        self.every = every
        self.found: dict[str, int] = {}  # kind -> findings in every run so far
        self.runs = 0
        self.last_until: Any = None  # where this process's next window starts

    def run(self) -> None:
        from datetime import UTC, datetime, timedelta

        from keysafe.manager.access import access_report

        until = datetime.now(UTC)
        # From where this process's last window ended (runs are `every` apart plus the
        # time a run takes, so fixed windows would leave gaps); else one interval back.
        since = self.last_until or until - timedelta(seconds=self.every)
        rep = access_report(self.robot, since=since, until=until, unread=False)
        for f in rep.findings:
            self.found[f.kind] = self.found.get(f.kind, 0) + 1
        self.last_until = until
        self.runs += 1
        self.robot.record("audit_report", None, "ok", durable=True,
                          detail={"findings": len(rep.findings), "scheduled": True})
        if rep.findings:
            self.events.emit("access.findings", {
                "since": since.isoformat(), "until": until.isoformat(),
                "findings": [f.to_dict() for f in rep.findings]})


def _scheduler(settings: Settings, manager: SecretManager) -> Any:
    """Purges soft deletes past their recovery window, runs due rotations (retiring
    previous values past their grace period, sending reminders) and, when asked, checks
    every stored key with its provider, reports access patterns and anchors the audit
    log, each once per interval across every replica or worker sharing the store."""
    from keysafe.backends.base import Recoverable
    from keysafe.scheduler import Job, Scheduler

    jobs = []
    robot = manager.as_actor("keysafe-scheduler")
    if settings.purge_interval > 0 and isinstance(manager.backend, Recoverable):
        jobs.append(Job("purge-expired", settings.purge_interval, robot.purge_expired))
    if settings.rotation_interval > 0:
        from keysafe.rotation.engine import RotationEngine

        engine = RotationEngine.from_settings(robot, settings)

        def rotate_due() -> None:
            engine.retire_expired()
            engine.run("due")
            engine.remind()

        jobs.append(Job("rotate-due", settings.rotation_interval, rotate_due))
    if settings.key_check_interval > 0 and settings.key_checks:
        from keysafe import keycheck
        from keysafe.rotation.events import Events

        events = Events.from_settings(settings)
        jobs.append(Job("check-keys", settings.key_check_interval,
                        lambda: keycheck.sweep(robot, events)))
    access = None
    if settings.access_report_interval > 0:
        from keysafe.rotation.events import Events

        access = AccessWatch(robot, Events.from_settings(settings),
                             settings.access_report_interval)
        jobs.append(Job("access-report", settings.access_report_interval, access.run))
    if settings.audit_anchor_interval > 0:
        from keysafe.manager.anchors import publisher
        from keysafe.rotation.events import Events

        anchor_file = (Path(settings.audit_anchor_file).expanduser()
                       if settings.audit_anchor_file else None)
        if anchor_file is None and not settings.event_webhooks:
            logging.getLogger("keysafe.audit").warning(
                "KEYSAFE_AUDIT_ANCHOR_INTERVAL is set but anchors go only to this "
                "server's log: set KEYSAFE_AUDIT_ANCHOR_FILE or KEYSAFE_EVENT_WEBHOOKS to "
                "keep them where the database's administrators cannot write")
        jobs.append(Job("audit-anchor", settings.audit_anchor_interval,
                        publisher(robot, Events.from_settings(settings), anchor_file,
                                  logging.getLogger("keysafe.audit").info)))
    if not jobs:
        return None
    every = min(j.every for j in jobs)
    # Locks in the shared database (advisory locks) when there is one.
    sched = Scheduler(manager.state or manager.backend, jobs, lock_dir=settings.home / "jobs",
                      tick=min(60.0, every), first_delay=min(5.0, every))
    if settings.rotation_interval > 0:
        sched.rotation = engine
    sched.access = access
    sched.start()
    return sched


def create_app(settings: Settings | None = None, *, manager: SecretManager | None = None,
               tokens: TokenStore | None = None) -> KeysafeApp:
    """The keysafe API. Builds the manager and token store from settings when not given."""
    settings = settings or load_settings()
    # Several worker processes on a store that cannot announce changes (the embedded
    # one, or a cloud store without a state database): no process may serve a cached
    # value or token another one has changed.
    unheard = (settings.server_workers > 1 and settings.backend != "postgres"
               and not uses_state_database(settings))
    if manager is None:
        # Every request names its org: a default org (a single-tenant application's
        # setting) must never stand in for one the caller left out.
        manager = SecretManager.from_settings(settings.with_overrides(
            cache_ttl=0.0 if unheard else settings.server_cache_ttl, audit_reads=False,
            default_org=None))
    else:
        manager.audit_reads = False  # each request records exactly one event itself
        manager.default_org = None
    tokens = tokens or open_token_store(settings, manager.state or manager.backend,
                                        cache=not unheard)
    from keysafe.manager.batch import run_write_batch
    from keysafe.server.pump import BatchPump

    mgr = manager

    def commit_reads(drafts: list[Any]) -> list[tuple[bool, Any]]:
        mgr.audit.commit(drafts, relaxed=True)
        return [(True, None)] * len(drafts)

    from keysafe.server.trust import trust_file_stamp, trust_verifier

    stamp = trust_file_stamp(settings)  # before loading: an edit meanwhile is seen later
    jwt_verifier = JwtVerifier(settings, trust_verifier(settings), trust_stamp=stamp)
    jwt_verifier.start()  # the issuers' keys, before the first request needs them
    state = ServerState(settings, manager, tokens, jwt_verifier,
                        AuthLimiter(settings.auth_fail_limit, settings.auth_fail_window),
                        writes=BatchPump(lambda jobs: run_write_batch(mgr, jobs),
                                         name="keysafe-writes"),
                        audits=BatchPump(commit_reads, name="keysafe-audit"),
                        scheduler=_scheduler(settings, manager),
                        key_checks=SharedLimiter(tokens, "key_check",
                                                 settings.key_check_rate, 60.0))
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()

    app = FastAPI(title="keysafe", version="0.1.0", lifespan=lifespan,
                  description="Blind-write secrets API: write and check status from "
                              "browsers; read values only as a service identity.")
    app.state.keysafe = state
    metrics = Metrics(weakref.ref(state))
    state.metrics = metrics

    from keysafe.server.routes import audit, health, orgs, rotation, secrets
    from keysafe.server.routes import tokens as token_routes

    for r in (secrets.router, orgs.router, rotation.router, token_routes.router,
              audit.router, health.router):
        app.include_router(r)
    from keysafe.server.routes import ui

    app.include_router(ui.router)

    @app.exception_handler(KeysafeError)
    async def keysafe_error(request: Request, exc: KeysafeError) -> Response:
        status, body = problems.from_exception(exc, request_id(request))
        if status >= 500:
            # The client is told only the request id; the operator reads why here
            # (keysafe's messages name paths and causes, never values).
            log.error("request %s failed: %s: %s", request_id(request), type(exc).__name__,
                      exc.message)
        return _problem_response(status, body, problems.retry_headers(exc) or None)

    @app.exception_handler(AuthFailed)
    async def auth_failed(request: Request, exc: AuthFailed) -> Response:
        body = problems.problem(401, "Unauthorized", "a valid bearer token is required",
                                code="unauthorized", request_id=request_id(request))
        return _problem_response(401, body, {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(TooManyAttempts)
    async def too_many(request: Request, exc: TooManyAttempts) -> Response:
        body = problems.problem(429, exc.title, exc.detail, code="rate_limited",
                                request_id=request_id(request))
        return _problem_response(429, body, {"Retry-After": str(int(exc.retry_after + 0.999))})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # Never echo the input: it may be the secret value.
        errs = [{"loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg", ""),
                 "type": e.get("type", "")} for e in exc.errors()]
        where = ", ".join(".".join(e["loc"]) for e in errs) or "request"
        body = problems.problem(422, "Invalid request", f"invalid input at {where}",
                                code="invalid_request", request_id=request_id(request),
                                errors=errs)
        return _problem_response(422, body)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        body = problems.problem(exc.status_code, str(exc.detail), str(exc.detail),
                                code=f"http_{exc.status_code}", request_id=request_id(request))
        return _problem_response(exc.status_code, body)

    return KeysafeApp(app, state, metrics, settings)


class KeysafeApp:
    """What the ASGI server runs: edge middleware, then the hot paths, then FastAPI.

    The hot paths sit outside FastAPI's own middleware stack on purpose; they share
    its authentication, error table and handler code (see ``fastpath``).
    """

    def __init__(self, api: FastAPI, state: ServerState, metrics: Metrics,
                 settings: Settings) -> None:
        from keysafe.server.fastpath import FastPath

        self.api = api
        self.state = api.state
        self.keysafe = state
        inner: ASGIApp = FastPath(api, state)
        if settings.cors_origin_list:
            # Outside the hot paths too: a browser panel on an allowed origin reads status.
            inner = CORSMiddleware(
                inner, allow_origins=settings.cors_origin_list, allow_credentials=True,
                allow_methods=["GET", "PUT", "PATCH", "POST", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID", "X-CSRF-Token"],
                expose_headers=["X-Request-ID", "Retry-After"], max_age=600)
        self._asgi = EdgeMiddleware(inner, max_body=settings.max_body_bytes, metrics=metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._asgi(scope, receive, send)

