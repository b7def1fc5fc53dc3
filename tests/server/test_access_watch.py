"""The scheduled access report (KEYSAFE_ACCESS_REPORT_INTERVAL): findings go out as an
``access.findings`` event and into the ``keysafe_access_findings`` gauge; no value."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from keysafe.manager.audit import AuditFilter

from .serverkit import OPENAI, VALUE_1, bearer, build_app, make_token

ORG = "acme"


class Hook:
    """A loopback webhook receiver that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                hook.bodies.append(json.loads(self.rfile.read(n)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def gauge(client: TestClient) -> dict[str, float]:
    text = client.get("/metrics").text
    return {s.labels["kind"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "keysafe_access_findings_total"}


def test_findings_go_to_webhooks_and_metrics(home: Path, hook: Hook) -> None:
    app = build_app(home, access_report_interval=86400.0, event_webhooks=hook.url)
    admin = make_token(app, "admin", ["admin"], [ORG])
    viewer = make_token(app, "snoop", ["viewer"], [ORG])
    with TestClient(app) as c:
        watch = app.keysafe.scheduler.access
        assert watch is not None
        assert set(gauge(c).values()) == {0.0}  # nothing found yet
        assert c.put(f"/api/secrets/{ORG}/{OPENAI}", json={"secret_value": VALUE_1},
                     headers=bearer(admin)).status_code == 200
        for _ in range(6):  # a viewer trying to write: denied every time
            assert c.put(f"/api/secrets/{ORG}/{OPENAI}", json={"secret_value": "x" * 20},
                         headers=bearer(viewer)).status_code == 403
        watch.run()  # what the scheduler runs once a day here
        assert watch.last_until is not None
        g = gauge(c)
        assert g["denials"] == 1.0
        assert g["integrity"] == 0.0
        assert "unread" not in g
        assert len(hook.bodies) == 1
        event = hook.bodies[0]
        assert event["type"] == "access.findings"
        kinds = {f["kind"]: f for f in event["findings"]}
        assert kinds["denials"]["actor"] == "token:snoop"
        assert kinds["denials"]["count"] == 6
        assert VALUE_1 not in json.dumps(event)
        # The run is itself audited, by the scheduler.
        rec = app.keysafe.manager.audit_query(AuditFilter(action="audit_report"))[-1]
        assert rec.actor == "keysafe-scheduler"
        assert rec.detail == {"findings": len(event["findings"]), "scheduled": True}
        # The next window starts where this one ended: the same denials are not found
        # again, and the counter keeps what was found.
        watch.run()
        assert len(hook.bodies) == 1
        assert gauge(c)["denials"] == 1.0


def test_a_quiet_window_sends_nothing(home: Path, hook: Hook) -> None:
    app = build_app(home, access_report_interval=3600.0, event_webhooks=hook.url)
    with TestClient(app):
        app.keysafe.scheduler.access.run()
    assert hook.bodies == []
