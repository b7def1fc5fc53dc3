"""The panel's routes without a browser: files, headers, the catalog endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from keysafe.errors import ConfigError
from keysafe.server.app import KeysafeApp
from keysafe.server.routes.ui import panel_csp

from .serverkit import bearer, build_app, make_token


def test_files_and_headers(client: TestClient) -> None:
    r = client.get("/ui", follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp
    assert "frame-ancestors 'none'" in csp
    assert "access-control-allow-origin" not in page.headers
    js = client.get("/ui/keysafe-components.js")
    assert js.headers["content-type"].startswith("text/javascript")
    assert js.headers["access-control-allow-origin"] == "*"  # public code, loaded by hosts
    again = client.get("/ui/keysafe-components.js", headers={"If-None-Match": js.headers["etag"]})
    assert again.status_code == 304
    for bad in ("/ui/nope.js", "/ui/.hidden.js", "/ui/..%2Fapp.py", "/ui/index.py"):
        assert client.get(bad).status_code == 404, bad


def test_frame_ancestors_come_from_settings(home: Path) -> None:
    app = build_app(home, ui_frame_ancestors="'self' https://app.example.com")
    with TestClient(app) as c:
        csp = c.get("/ui/").headers["content-security-policy"]
    assert csp.endswith("frame-ancestors 'self' https://app.example.com")


@pytest.mark.parametrize("value", ["", "'none' 'self'", "https://x.example; script-src *",
                                   "javascript:alert(1)", "*"])
def test_a_bad_frame_ancestors_setting_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="KEYSAFE_UI_FRAME_ANCESTORS"):
        panel_csp(value)


def test_catalog_with_format_checks_needs_a_credential(app: KeysafeApp, client: TestClient
                                                       ) -> None:
    assert client.get("/api/catalog").status_code == 401
    tok = make_token(app, "v", ["viewer"], ["acme"])
    cat = client.get("/api/catalog", headers=bearer(tok)).json()
    assert cat["max_value_bytes"] == 65536
    assert cat["default_domain"] == "shared"
    assert cat["recovery_window_days"] == 7
    assert (cat["app"], cat["environment"]) == ("keysafe", "local")  # the panel shows them
    openai = next(e for e in cat["categories"]["llm"] if e["secret_name"] == "openai_api_key")
    assert openai["pattern"].startswith("sk-")
