"""Liveness, readiness (the backend answers) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from keysafe.errors import KeysafeError
from keysafe.server.deps import state_of

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> Response:
    try:
        state_of(request).manager.ping()
    except KeysafeError as exc:
        return JSONResponse({"status": "unavailable", "detail": exc.code}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    from keysafe.server.metrics import render

    body, ctype = render(state_of(request))
    return Response(body, media_type=ctype)
