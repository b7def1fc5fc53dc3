"""The audit anchor over HTTP (``POST /api/audit/anchor``) and taken by the server on a
schedule (KEYSAFE_AUDIT_ANCHOR_INTERVAL), published to a file and the event webhooks,
signed."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from keysafe.manager.audit import AuditFilter
from keysafe.rotation.rotators import verify_signature

from .serverkit import OPENAI, VALUE_1, bearer, build_app, make_token

ORG = "acme"


def test_the_anchor_route_is_for_admins_of_every_org(home: Path) -> None:
    app = build_app(home)
    root = make_token(app, "root", ["admin"], None)
    org_admin = make_token(app, "acme-admin", ["admin"], [ORG])
    writer = make_token(app, "w", ["writer"], None)
    with TestClient(app) as c:
        r = c.put(f"/api/secrets/{ORG}/{OPENAI}", headers=bearer(writer),
                  json={"secret_value": VALUE_1})
        assert r.status_code in (200, 201), r.text
        r = c.post("/api/audit/anchor", headers=bearer(root))
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["kind"] == "keysafe-audit-anchor"
        mgr = app.keysafe.manager
        mgr.audit.flush()
        assert (got["seq"], got["hash"]) == mgr.audit.store.head()
        assert VALUE_1 not in r.text
        assert c.post("/api/audit/anchor", headers=bearer(org_admin)).status_code == 403
        assert c.post("/api/audit/anchor", headers=bearer(writer)).status_code == 403
        records = mgr.audit_query(AuditFilter(action="audit_anchor"))
        assert [(e.actor, e.outcome) for e in records] == [
            ("token:root", "ok"), ("token:acme-admin", "denied"), ("token:w", "denied")]
        assert records[0].seq == got["seq"]


def test_the_server_publishes_anchors(home: Path, tmp_path: Path) -> None:
    received: list[tuple[bytes, str | None]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((body, self.headers.get("X-Keysafe-Signature")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    anchors = tmp_path / "anchors.jsonl"
    try:
        app = build_app(home, audit_anchor_interval=3600, audit_anchor_file=str(anchors),
                        event_webhooks=f"http://127.0.0.1:{srv.server_address[1]}/hook",
                        event_webhook_secret="s" * 32, purge_interval=0,
                        rotation_interval=0)
        mgr = app.keysafe.manager
        mgr.put(OPENAI, VALUE_1, org=ORG)  # record 1
        sched = app.keysafe.scheduler
        assert sched.run_pending() == ["audit-anchor"]  # record 2, the anchor's own
        assert sched.run_pending() == []  # not due again for an hour
        # Another replica's turn on an idle log (the newest record is an anchor already):
        # nothing more is published.
        publish = sched.jobs[0].fn
        publish()
        anchored = mgr.audit_query(AuditFilter(action="audit_anchor"))
        app.keysafe.close()
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)
    lines = anchors.read_text().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["kind"] == "keysafe-audit-anchor"
    assert line["seq"] == 2
    assert [(e.seq, e.actor) for e in anchored] == [(2, "keysafe-scheduler")]
    (body, signature), = received
    event = json.loads(body)
    assert event["type"] == "audit.anchor"
    assert (event["seq"], event["hash"]) == (line["seq"], line["hash"])
    assert signature is not None
    assert verify_signature(body, signature, "s" * 32)
