"""Fixtures for the web panel tests: a live ``keysafe serve``, two host pages on other
loopback origins (one allowed by CORS, one not) and headless Debian Chromium.

The browser is the distribution's ``/usr/bin/chromium`` driven by Playwright (never a
downloaded browser); without it these tests are skipped, saying why.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from server.serverkit import RealServer, bearer, free_port

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"
JWT_SECRET = "ui-tests-hs256-secret-" + "x" * 24

SKIP_REASON = (f"the web panel tests need Debian's chromium at {CHROMIUM} "
               "(apt-get install chromium; scripts/setup installs it)")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def static_server(directory: Path, port: int) -> contextlib.AbstractContextManager[str]:
    return loopback_server(functools.partial(_Quiet, directory=str(directory)), port)


@contextlib.contextmanager
def loopback_server(handler: Any, port: int) -> Iterator[str]:
    """``handler`` served on 127.0.0.1:``port`` for the block; yields its URL."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)


class _Provider(http.server.BaseHTTPRequestHandler):
    """STAND-IN for OpenAI's key check (``GET /v1/models``): 401 for a key containing
    REJECTED, else 200, as the API reference documents for bad and good keys. The
    panel's server reaches it instead of api.openai.com through a catalog file."""

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        ok = self.path == "/v1/models" and auth.startswith("Bearer ") and "REJECTED" not in auth
        body = b'{"data": []}' if ok else b'{"error": {"message": "Incorrect API key"}}'
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def checks_catalog(path: Path, provider: str) -> Path:
    """OpenAI's key check routed to the stand-in; every other built-in check off (the
    panel's server never leaves loopback)."""
    from keysafe.keycheck import BUILTIN_CHECKS

    lines = [f'[[secret]]\nname = "openai_api_key"\ncheck = "{provider}/v1/models"\n']
    lines += [f'[[secret]]\nname = "{n}"\ncheck = false\n'
              for n in BUILTIN_CHECKS if n != "openai_api_key"]
    path.write_text("\n".join(lines))
    return path


@dataclass
class Stack:
    keysafe: RealServer
    allowed_host: str  # an origin KEYSAFE_CORS_ORIGINS lists
    denied_host: str  # one it does not
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.keysafe.url

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, headers=bearer(token or self.keysafe.token),
                             timeout=10, **kw)

    def token(self, name: str, role: str, orgs: list[str]) -> str:
        r = self.api("POST", "/api/tokens", json={"name": name, "roles": [role], "orgs": orgs})
        assert r.status_code == 201, r.text
        tok: str = r.json()["token"]
        return tok


@pytest.fixture(scope="package")  # torn down before other packages run (the sync
# Playwright API keeps an event loop in this thread while it is open)
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    allowed_port, denied_port = free_port(), free_port()
    allowed = f"http://127.0.0.1:{allowed_port}"
    home = tmp_path_factory.mktemp("ui") / "home"
    with loopback_server(_Provider, free_port()) as provider:
        srv = RealServer(home, {"KEYSAFE_CORS_ORIGINS": allowed,
                                "KEYSAFE_JWT_HS256_SECRET": JWT_SECRET,
                                "KEYSAFE_PURGE_INTERVAL": "0",
                                "KEYSAFE_KEY_CHECKS": "on",
                                "KEYSAFE_CATALOG_FILE": str(checks_catalog(
                                    home.parent / "catalog.toml", provider))})
        srv.start()
        try:
            with static_server(EXAMPLES, allowed_port) as a, \
                    static_server(EXAMPLES, denied_port) as d:
                yield Stack(srv, a, d)
        finally:
            srv.stop()


@pytest.fixture(scope="package")  # torn down before other packages run (the sync
# Playwright API keeps an event loop in this thread while it is open)
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage",
                                    "--disable-gpu", "--no-first-run"])
        try:
            yield b
        finally:
            b.close()


@dataclass
class Watch:
    """What a page did on the network and in its console."""

    allowed: set[str]
    requests: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        return [m for m in self.console_errors
                if "Content Security Policy" in m or "Trusted Type" in m]


def origin(url: str) -> str:
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}"


@pytest.fixture
def open_page(browser: Any, stack: Stack) -> Iterator[Any]:
    """``open_page(viewport=..., extra_origins=...)`` -> (page, watch). Every request to
    an origin other than keysafe's (and the host page's, when given) is aborted and
    recorded; tests assert there were none."""
    contexts: list[Any] = []
    watches: list[Watch] = []

    def make(viewport: dict[str, int] | None = None, extra_origins: tuple[str, ...] = ()
             ) -> tuple[Any, Watch]:
        ctx = browser.new_context(viewport=viewport or {"width": 1280, "height": 800},
                                  service_workers="block")
        contexts.append(ctx)
        watch = Watch({origin(stack.url), *extra_origins})
        watches.append(watch)

        def guard(route: Any) -> None:
            url = route.request.url
            if url.startswith(("data:", "blob:")) or origin(url) in watch.allowed:
                route.continue_()
            else:
                watch.outside.append(url)
                route.abort()

        ctx.route("**/*", guard)
        page = ctx.new_page()
        page.set_default_timeout(10_000)
        page.on("request", lambda r: watch.requests.append(r.url))
        page.on("response", lambda r: watch.responses.append(r))
        page.on("console", lambda m: watch.console_errors.append(m.text)
                if m.type == "error" else None)
        page.on("pageerror", lambda e: watch.page_errors.append(str(e)))
        return page, watch

    yield make
    for ctx in contexts:
        ctx.close()
    for w in watches:
        assert w.outside == [], f"requests left keysafe's origin: {w.outside}"
        assert all(origin(u) in w.allowed for u in w.requests
                   if not u.startswith(("data:", "blob:")))
        assert w.csp_violations() == [], w.csp_violations()
        assert w.page_errors == [], w.page_errors
