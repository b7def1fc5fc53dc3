"""The web panel: static files under /ui (no build step) and the catalog with its
format checks for clients that check input before sending it.

The panel keeps its credential in memory only (no cookie, so no CSRF surface) and is
served with a strict Content-Security-Policy: scripts and styles from this origin only,
no inline code, no requests anywhere else, framing only by the configured ancestors.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from keysafe.client import FEATURES
from keysafe.errors import ConfigError, NotFound
from keysafe.server.deps import Ctx, get_ctx, state_of

router = APIRouter(tags=["panel"])
CtxDep = Annotated[Ctx, Depends(get_ctx)]

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
_ANCESTOR = re.compile(r"'none'|'self'|https?://[A-Za-z0-9.*-]+(:[0-9]{1,5})?")


@functools.cache
def panel_csp(frame_ancestors: str) -> str:
    """The panel's policy. ``frame_ancestors`` is KEYSAFE_UI_FRAME_ANCESTORS: 'none'
    (the default), 'self' or origins, space-separated."""
    parts = frame_ancestors.split()
    bad = [p for p in parts if not _ANCESTOR.fullmatch(p)]
    if not parts or bad or ("'none'" in parts and len(parts) > 1):
        raise ConfigError("KEYSAFE_UI_FRAME_ANCESTORS must be 'none', 'self' or origins "
                          "like https://app.example.com, separated by spaces; got "
                          f"{(bad or parts or [''])[0]!r}")
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
            "form-action 'none'; object-src 'none'; require-trusted-types-for 'script'; "
            f"frame-ancestors {' '.join(parts)}")


@functools.cache
def _asset(name: str) -> tuple[bytes, str, str] | None:
    """(body, content type, etag) of a file shipped in keysafe/server/ui, or None."""
    if "/" in name or name.startswith(".") or Path(name).suffix not in TYPES:
        return None
    file = UI_DIR / name
    if not file.is_file():
        return None
    body = file.read_bytes()
    return body, TYPES[file.suffix], '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _serve(request: Request, name: str) -> Response:
    asset = _asset(name)
    if asset is None:
        raise NotFound(f"no panel file {name!r}")
    body, ctype, etag = asset
    csp = panel_csp(state_of(request).settings.ui_frame_ancestors)
    headers = {"Content-Security-Policy": csp, "Cache-Control": "no-cache", "ETag": etag}
    if not ctype.startswith("text/html"):
        # The web components load as cross-origin module scripts in a host's page; the
        # files are public code (no credentials), and every API call still needs CORS.
        headers["Access-Control-Allow-Origin"] = "*"
        headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=ctype, headers=headers)


@router.get("/ui", include_in_schema=False)
def ui_root() -> Response:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/", include_in_schema=False)
def ui_index(request: Request) -> Response:
    return _serve(request, "index.html")


@router.get("/ui/{name}", include_in_schema=False)
def ui_file(name: str, request: Request) -> Response:
    return _serve(request, name)


@router.get("/api/catalog")
def catalog(ctx: CtxDep) -> dict[str, Any]:
    """The catalog by category with each entry's format check (``pattern``, a regular
    expression the whole trimmed value must match, and ``json_fields``) and the limits
    a value must respect, so that a client can check input before sending it (the
    server checks again on every write that does not turn the check off), and the
    app, environment and naming template of this server's secrets."""
    mgr = ctx.mgr
    cats: dict[str, list[dict[str, Any]]] = {}
    # "position": the catalog's own order, which decides a clash of aliases; a client
    # rebuilding it (Catalog.from_api) needs it, since categories regroup the entries.
    order = {e.name: i for i, e in enumerate(mgr.catalog)}
    for name, entries in mgr.catalog.categories().items():
        cats[name] = [{**e.to_dict(checks=ctx.state.settings.key_checks),
                       "pattern": e.pattern, "position": order[e.name]} for e in entries]
    return {"app": mgr.app, "environment": mgr.env,
            "naming_template": mgr.naming.template,
            "max_value_bytes": mgr.max_value_bytes,
            "default_domain": ctx.state.settings.default_domain,
            "recovery_window_days": mgr.recovery_window.days,
            # What this server takes that an older one would ignore (clients check).
            "features": list(FEATURES),
            "categories": cats}
