"""The webhook rotator and rotation events against a loopback HTTP endpoint
(keysafe.rotation.rotators.WebhookRotator, keysafe.rotation.events.Events).

The endpoint plays a team's own code: it checks ``X-Keysafe-Signature`` with
``verify_signature`` and the HMAC key stored in keysafe as ``rotation_webhook_secret``,
issues keys on ``create``, accepts or refuses them on ``test``, and revokes them on
``rollback`` and ``retire``. The same server receives the signed event webhooks.
Everything is bounded: loopback only, short socket and client timeouts.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from keysafe import SecretManager
from keysafe.backends.memory import MemoryBackend
from keysafe.config import load_settings
from keysafe.errors import ConfigError, Conflict, RotationError
from keysafe.manager.audit import AuditFilter, AuditLog, MemoryAuditStore
from keysafe.rotation import ManualRotation, RotationEngine, sign, verify_signature
from keysafe.rotation.events import ChangeEvents, Events

ORG = "acme"
NAME = "partner_api_key"
CANARY = "CANARY-" + secrets.token_hex(8)  # in every value this file stores
GRACE = timedelta(hours=1)


class Endpoint:
    """A team's rotation endpoint (``/rotate``) and event receiver (``/events``)."""

    def __init__(self, hmac_key: str, event_key: str | None = None) -> None:
        self.hmac_key = hmac_key
        self.event_key = event_key
        self.calls: list[dict[str, Any]] = []        # rotation calls' JSON bodies
        self.events: list[tuple[bytes, str | None]] = []  # (raw body, signature header)
        self.issued: list[str] = []
        self.revoked: list[str] = []
        self.bad_signatures = 0
        self.status: dict[str, int] = {}             # action -> forced HTTP status
        self.create_answer: dict[str, Any] | None = None
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # a stuck client cannot hold a server thread for long

            def do_POST(self) -> None:
                n = min(int(self.headers.get("Content-Length", "0")), 1 << 16)
                body = self.rfile.read(n)
                sig = self.headers.get("X-Keysafe-Signature")
                with endpoint.lock:
                    code, answer = endpoint.handle(self.path, body, sig)
                raw = (answer if isinstance(answer, bytes) else
                       json.dumps(answer).encode() if answer is not None else b"")
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def handle(self, path: str, body: bytes, sig: str | None) -> tuple[int, Any]:
        if path == "/events":
            self.events.append((body, sig))
            return 204, None
        if sig is None or not verify_signature(body, sig, self.hmac_key):
            self.bad_signatures += 1
            return 401, {"error": "bad signature"}
        call = json.loads(body)
        self.calls.append(call)
        action = call["action"]
        if action in self.status:
            return self.status[action], {"error": "forced"}
        if action == "create":
            if self.create_answer is not None:
                return 200, self.create_answer
            key = f"pk_{CANARY}_" + secrets.token_urlsafe(24)
            self.issued.append(key)
            return 200, {"value": key}
        if action == "test":
            ok = call["value"] in self.issued and call["value"] not in self.revoked
            return (200, {"ok": True}) if ok else (403, {"error": "unknown key"})
        if action in ("rollback", "retire"):
            self.revoked.append(call["value"])
            return 200, {}
        return 400, {"error": "unknown action"}

    def actions(self) -> list[str]:
        return [c["action"] for c in self.calls]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours proxy variables: loopback calls must not go through one."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def hmac_key() -> str:
    return f"whsec-{CANARY}-" + secrets.token_hex(16)


@pytest.fixture
def endpoint(hmac_key: str) -> Iterator[Endpoint]:
    ep = Endpoint(hmac_key, event_key="evsec-" + secrets.token_hex(16))
    yield ep
    ep.close()


@pytest.fixture
def mgr() -> SecretManager:
    return SecretManager(MemoryBackend(), audit=AuditLog(MemoryAuditStore()), env="test",
                         actor="tester")


OLD_KEY = f"pk_{CANARY}_old_" + "x" * 16


def webhook_secret(mgr: SecretManager, endpoint: Endpoint, hmac_key: str,
                   **options: str) -> None:
    mgr.put("rotation_webhook_secret", hmac_key, ORG, secret_type="webhook_secret",
            check_format=False)
    tags = {"rotator": "webhook", "rotator.url": f"{endpoint.base}/rotate",
            "rotator.timeout": "5", **{f"rotator.{k}": v for k, v in options.items()}}
    mgr.put(NAME, OLD_KEY, ORG, secret_type="api_key", tags=tags)


def rotate_outcomes(mgr: SecretManager) -> list[tuple[str, dict[str, Any]]]:
    return [(e.outcome, e.detail) for e in
            mgr.audit_query(AuditFilter(action="rotate", path=mgr.path(NAME, ORG)))]


def current(mgr: SecretManager) -> tuple[str, int]:
    value, version = mgr.backend.get(mgr.path(NAME, ORG))
    return value, version


# -- the webhook rotator ----------------------------------------------------------------------
def test_a_full_webhook_rotation(mgr: SecretManager, endpoint: Endpoint, hmac_key: str):
    webhook_secret(mgr, endpoint, hmac_key)
    engine = RotationEngine(mgr, grace=GRACE)

    out = engine.rotate(NAME, ORG)

    assert out.outcome == "rotated"
    assert out.version == 2
    assert endpoint.bad_signatures == 0
    assert endpoint.actions() == ["create", "test"]
    new = endpoint.issued[0]
    assert current(mgr) == (new, 2)
    assert mgr.get(NAME, ORG) == new
    create, test = endpoint.calls
    assert create == {"action": "create", "org": ORG, "domain": "shared", "name": NAME}
    assert test["value"] == new
    # The old key stays usable for verification during the grace period.
    assert mgr.verification_values(NAME, ORG) == [new, OLD_KEY]
    assert engine.previous(NAME, ORG) == OLD_KEY
    assert engine.retire_expired() == []

    path = mgr.path(NAME, ORG)
    assert engine.retire_expired(now=datetime.now(UTC) + GRACE * 2) == [path]
    assert endpoint.actions() == ["create", "test", "retire"]
    assert endpoint.calls[-1]["value"] == OLD_KEY
    assert endpoint.revoked == [OLD_KEY]
    assert endpoint.bad_signatures == 0
    assert mgr.verification_values(NAME, ORG) == [new]
    assert [o for o, _ in rotate_outcomes(mgr)] == ["pending_created", "ok", "retired"]


def test_a_500_at_test_rolls_back_and_leaves_current(mgr: SecretManager,
                                                     endpoint: Endpoint, hmac_key: str):
    webhook_secret(mgr, endpoint, hmac_key)
    endpoint.status["test"] = 500
    engine = RotationEngine(mgr, grace=GRACE)

    with pytest.raises(RotationError) as info:
        engine.rotate(NAME, ORG)

    assert info.value.code == "rotation_error"
    assert getattr(info.value, "step", None) == "test"
    assert "answered 500 to test" in info.value.message
    assert endpoint.actions() == ["create", "test", "rollback"]
    new = endpoint.issued[0]
    assert endpoint.calls[1]["value"] == new
    assert endpoint.calls[2]["value"] == new  # the endpoint revokes the key it made
    assert endpoint.revoked == [new]
    assert current(mgr) == (OLD_KEY, 1)
    assert mgr.get(NAME, ORG) == OLD_KEY
    assert mgr.backend.list("_rotation/") == []
    assert engine.previous(NAME, ORG) is None
    failed = [d for o, d in rotate_outcomes(mgr) if o == "failed"]
    assert len(failed) == 1
    assert failed[0]["step"] == "test"
    assert failed[0]["undo"] == "rolled back in the target"
    assert new not in str(info.value)
    assert OLD_KEY not in str(info.value)


def test_a_wrong_hmac_key_is_refused_by_the_endpoint(mgr: SecretManager,
                                                      endpoint: Endpoint, hmac_key: str):
    """The endpoint only acts on signed calls: keysafe signing with another key gets a
    401 at create, and nothing changes."""
    webhook_secret(mgr, endpoint, hmac_key)
    mgr.put("rotation_webhook_secret", "whsec-wrong-" + secrets.token_hex(8), ORG,
            check_format=False)
    with pytest.raises(RotationError) as info:
        RotationEngine(mgr).rotate(NAME, ORG)
    assert getattr(info.value, "step", None) == "create"
    assert "answered 401 to create" in info.value.message
    assert endpoint.bad_signatures == 1
    assert endpoint.issued == []
    assert current(mgr) == (OLD_KEY, 1)


def test_secret_name_option_picks_the_hmac_key(mgr: SecretManager, endpoint: Endpoint,
                                               hmac_key: str):
    webhook_secret(mgr, endpoint, "not-the-endpoints-key", secret_name="partner_hook_key")
    mgr.put("partner_hook_key", hmac_key, ORG, check_format=False)
    assert RotationEngine(mgr).rotate(NAME, ORG).outcome == "rotated"
    assert endpoint.bad_signatures == 0
    assert current(mgr) == (endpoint.issued[0], 2)


@pytest.mark.parametrize("answer", [{}, {"value": ""}, {"value": 42}])
def test_create_without_a_value_fails_at_create(mgr: SecretManager, endpoint: Endpoint,
                                                hmac_key: str, answer: dict[str, Any]):
    webhook_secret(mgr, endpoint, hmac_key)
    endpoint.create_answer = answer
    with pytest.raises(RotationError) as info:
        RotationEngine(mgr).rotate(NAME, ORG)
    assert getattr(info.value, "step", None) == "create"
    assert "returned no value" in info.value.message
    assert endpoint.actions() == ["create"]  # nothing to roll back
    assert current(mgr) == (OLD_KEY, 1)


def test_an_unreachable_endpoint_fails_cleanly(mgr: SecretManager, hmac_key: str):
    with socket.socket() as s:  # a port nobody listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        mgr.put("rotation_webhook_secret", hmac_key, ORG, check_format=False)
        mgr.put(NAME, OLD_KEY, ORG, secret_type="api_key", tags={
            "rotator": "webhook", "rotator.url": f"http://127.0.0.1:{port}/rotate",
            "rotator.timeout": "2"})
        started = time.monotonic()
        with pytest.raises(RotationError) as info:
            RotationEngine(mgr).rotate(NAME, ORG)
    assert time.monotonic() - started < 10
    assert "unreachable during create" in info.value.message
    assert current(mgr) == (OLD_KEY, 1)


def test_a_non_http_url_is_a_config_error_and_changes_nothing(mgr: SecretManager,
                                                              hmac_key: str):
    mgr.put("rotation_webhook_secret", hmac_key, ORG, check_format=False)
    mgr.put(NAME, OLD_KEY, ORG, secret_type="api_key",
            tags={"rotator": "webhook", "rotator.url": "file:///etc/passwd"})
    with pytest.raises(RotationError) as info:
        RotationEngine(mgr).rotate(NAME, ORG)
    assert "must be an http(s) URL" in info.value.message
    assert current(mgr) == (OLD_KEY, 1)


# -- events ------------------------------------------------------------------------------------
@pytest.fixture
def events_env(tmp_home: Path, monkeypatch: pytest.MonkeyPatch,
               endpoint: Endpoint) -> Events:
    """Events configured the way an operator does it: KEYSAFE_EVENT_WEBHOOKS and
    KEYSAFE_EVENT_WEBHOOK_SECRET."""
    assert endpoint.event_key is not None
    monkeypatch.setenv("KEYSAFE_EVENT_WEBHOOKS", f" {endpoint.base}/events , ")
    monkeypatch.setenv("KEYSAFE_EVENT_WEBHOOK_SECRET", endpoint.event_key)
    events = Events.from_settings(load_settings())
    assert events.urls == [f"{endpoint.base}/events"]
    return events


def received(endpoint: Endpoint) -> list[dict[str, Any]]:
    """Every event the receiver got, each checked against its signature."""
    out = []
    assert endpoint.event_key is not None
    for body, sig in endpoint.events:
        assert sig is not None
        assert verify_signature(body, sig, endpoint.event_key)
        out.append(json.loads(body))
    return out


def test_events_are_signed_and_never_carry_values(mgr: SecretManager, endpoint: Endpoint,
                                                  hmac_key: str, events_env: Events):
    jwt_old = f"jwt-{CANARY}-" + "j" * 40
    openai_old = f"sk-{CANARY}" + "A1b2C3d4E5" * 3
    mgr.put("jwt_secret", jwt_old, ORG)
    mgr.put("openai_api_key", openai_old, ORG)
    webhook_secret(mgr, endpoint, hmac_key)
    endpoint.status["test"] = 500
    engine = RotationEngine(mgr, grace=GRACE, events=events_env)

    engine.rotate("jwt_secret", ORG)  # random: succeeds
    with pytest.raises(RotationError):
        engine.rotate(NAME, ORG)  # webhook: fails at test
    with pytest.raises(ManualRotation) as manual:
        engine.rotate("openai_api_key", ORG)  # manual: a reminder

    assert manual.value.code == "rotation_manual"
    got = received(endpoint)
    assert [e["type"] for e in got] == ["rotation.succeeded", "rotation.failed",
                                        "rotation.reminder"]
    ok, failed, reminder = got
    assert ok["path"] == mgr.path("jwt_secret", ORG)
    assert ok["org"] == ORG
    assert ok["version"] == 2
    assert failed["path"] == mgr.path(NAME, ORG)
    assert failed["version"] == 1
    assert "step test" in failed["detail"]
    assert "rolled back" in failed["detail"]
    assert reminder["path"] == mgr.path("openai_api_key", ORG)
    assert "rotated by hand" in reminder["detail"]
    assert all(abs(e["time"] - time.time()) < 60 for e in got)
    assert events_env.sent == 3
    assert events_env.failed == 0
    assert events_env.counts == {"rotation.succeeded": 1, "rotation.failed": 1,
                                 "rotation.reminder": 1}
    # Never a value: not the canary in every stored value, not the new ones.
    values = [jwt_old, openai_old, hmac_key, OLD_KEY, mgr.get("jwt_secret", ORG),
              *endpoint.issued]
    for body, sig in endpoint.events:
        text = body.decode() + (sig or "")
        assert CANARY not in text
        for v in values:
            assert v not in text
    # The reminder is in the audit log too, and the openai key is untouched.
    assert mgr.describe("openai_api_key", ORG).current_version == 1
    reminders = mgr.audit_query(AuditFilter(action="rotate", outcome="reminder"))
    assert [e.path for e in reminders] == [mgr.path("openai_api_key", ORG)]


def test_run_reports_a_reminder_instead_of_raising(mgr: SecretManager, endpoint: Endpoint,
                                                   events_env: Events):
    mgr.put("openai_api_key", f"sk-{CANARY}" + "Q1w2E3r4T5" * 3, ORG)
    engine = RotationEngine(mgr, events=events_env)
    (out,) = engine.run("api-keys")
    assert out.outcome == "reminder"
    assert out.step == "create"
    assert [e["type"] for e in received(endpoint)] == ["rotation.reminder"]


def test_remind_sends_due_and_expiring_events(mgr: SecretManager, endpoint: Endpoint,
                                              events_env: Events):
    now = datetime.now(UTC)
    mgr.put("jwt_secret", f"jwt-{CANARY}-" + "k" * 40, ORG)
    mgr.update_metadata("jwt_secret", ORG, rotation_days=1,
                        last_rotated=now - timedelta(days=3))
    mgr.put("session_secret", f"ses-{CANARY}-" + "s" * 40, ORG,
            expires_at=now + timedelta(days=2))
    mgr.put("encryption_key", f"enc-{CANARY}-" + "e" * 40, ORG)  # 180 days: not due

    states = RotationEngine(mgr, events=events_env).remind(now=now)

    assert sorted(s.name for s in states) == ["jwt_secret", "session_secret"]
    by_type = {e["type"]: e for e in received(endpoint)}
    assert set(by_type) == {"rotation.due", "secret.expiring"}
    assert by_type["rotation.due"]["path"] == mgr.path("jwt_secret", ORG)
    assert by_type["rotation.due"]["detail"].startswith("overdue")
    assert by_type["secret.expiring"]["path"] == mgr.path("session_secret", ORG)
    for body, _ in endpoint.events:
        assert CANARY not in body.decode()


def test_a_dead_event_webhook_never_fails_a_rotation(mgr: SecretManager,
                                                     caplog: pytest.LogCaptureFixture):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        events = Events([f"http://u:LEAKPW@127.0.0.1:{port}/hook/LEAKPATH"], "k", timeout=2)
        mgr.put("jwt_secret", f"jwt-{CANARY}-" + "d" * 40, ORG)
        with caplog.at_level("WARNING", logger="keysafe.rotation"):
            out = RotationEngine(mgr, events=events).rotate("jwt_secret", ORG)
    assert out.outcome == "rotated"
    assert events.failed == 1
    assert events.sent == 0
    # The log names the endpoint by origin only: its credentials stay out.
    assert f"event webhook http://127.0.0.1:{port}/... failed" in caplog.text
    assert "LEAKPW" not in caplog.text
    assert "LEAKPATH" not in caplog.text


def test_unsigned_events_when_no_secret_is_set(mgr: SecretManager, endpoint: Endpoint):
    events = Events([f"{endpoint.base}/events"], None)
    mgr.put("jwt_secret", f"jwt-{CANARY}-" + "u" * 40, ORG)
    RotationEngine(mgr, events=events).rotate("jwt_secret", ORG)
    ((body, sig),) = endpoint.events
    assert sig is None
    assert json.loads(body)["type"] == "rotation.succeeded"


def test_event_webhooks_must_be_http_urls(tmp_home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KEYSAFE_EVENT_WEBHOOKS", "https://ok.example/hook,ftp://bad.example/x")
    with pytest.raises(ConfigError) as info:
        Events.from_settings(load_settings())
    assert "http(s)" in info.value.message


# -- verify_signature ------------------------------------------------------------------------
def test_verify_signature_accepts_the_right_body_secret_and_time():
    body = b'{"type":"rotation.succeeded"}'
    now = int(time.time())
    header = sign(body, "s3", now)
    assert header.startswith(f"t={now},v1=")
    assert verify_signature(body, header, "s3")
    assert verify_signature(body, header, "s3", now=now + 299)


def test_verify_signature_rejects_a_tampered_body():
    body = b'{"type":"rotation.succeeded","version":2}'
    header = sign(body, "s3", int(time.time()))
    assert not verify_signature(body.replace(b"2", b"3"), header, "s3")
    assert not verify_signature(body + b" ", header, "s3")


def test_verify_signature_rejects_a_wrong_secret():
    body = b"{}"
    header = sign(body, "s3", int(time.time()))
    assert not verify_signature(body, header, "s4")
    assert not verify_signature(body, header, "")


def test_verify_signature_rejects_old_and_future_timestamps():
    body = b"{}"
    now = int(time.time())
    old = sign(body, "s3", now - 301)
    assert not verify_signature(body, old, "s3")
    assert verify_signature(body, old, "s3", tolerance=600)
    future = sign(body, "s3", now + 301)
    assert not verify_signature(body, future, "s3")


def test_verify_signature_rejects_a_replayed_mac_with_a_new_time():
    body = b"{}"
    now = int(time.time())
    mac = sign(body, "s3", now - 1000).split(",v1=")[1]
    assert not verify_signature(body, f"t={now},v1={mac}", "s3")


@pytest.mark.parametrize("header", ["", "garbage", "t=abc,v1=00", "v1=00", "t=1",
                                    "t=,v1=", "t=1,v1=00,extra"])
def test_verify_signature_rejects_malformed_headers(header: str):
    assert not verify_signature(b"{}", header, "s3")


class PlainOkTestEndpoint(Endpoint):
    """Answers ``test``, ``rollback`` and ``retire`` with a plain-text 200 "OK"."""

    def handle(self, path: str, body: bytes, sig: str | None) -> tuple[int, Any]:
        code, answer = super().handle(path, body, sig)
        if path == "/rotate" and json.loads(body)["action"] != "create" and code == 200:
            return code, b"OK"
        return code, answer


def test_a_plain_2xx_answer_to_test_is_success(mgr: SecretManager, hmac_key: str):
    ep = PlainOkTestEndpoint(hmac_key)
    try:
        webhook_secret(mgr, ep, hmac_key)
        out = RotationEngine(mgr).rotate(NAME, ORG)
        assert out.outcome == "rotated"
        assert current(mgr) == (ep.issued[0], 2)
    finally:
        ep.close()


# -- retiring ------------------------------------------------------------------------------------
def test_a_refused_retire_keeps_the_previous_value_for_later(mgr: SecretManager,
                                                             endpoint: Endpoint, hmac_key: str):
    webhook_secret(mgr, endpoint, hmac_key)
    engine = RotationEngine(mgr, grace=GRACE)
    engine.rotate(NAME, ORG)
    endpoint.status["retire"] = 503
    later = datetime.now(UTC) + GRACE * 2

    assert engine.retire_expired(now=later) == []

    assert endpoint.revoked == []
    assert mgr.backend.get(f"_rotation/{mgr.path(NAME, ORG)}/previous")[0] == OLD_KEY
    failed = [d for o, d in rotate_outcomes(mgr) if o == "retire_failed"]
    assert len(failed) == 1
    assert "answered 503 to retire" in failed[0]["reason"]
    del endpoint.status["retire"]
    assert engine.retire_expired(now=later) == [mgr.path(NAME, ORG)]
    assert endpoint.revoked == [OLD_KEY]


class PlainOkEndpoint(Endpoint):
    """Answers ``retire`` with a plain-text 200 "ok", as many endpoints do."""

    def handle(self, path: str, body: bytes, sig: str | None) -> tuple[int, Any]:
        code, answer = super().handle(path, body, sig)
        if path == "/rotate" and json.loads(body)["action"] == "retire":
            return code, b"ok"
        return code, answer


def test_one_bad_retire_answer_does_not_stop_the_others(mgr: SecretManager, hmac_key: str):
    ep = PlainOkEndpoint(hmac_key)
    try:
        webhook_secret(mgr, ep, hmac_key)  # partner_api_key: retired first (sorted paths)
        mgr.put("session_secret", f"ses-{CANARY}-" + "z" * 40, ORG)
        engine = RotationEngine(mgr, grace=GRACE)
        engine.rotate(NAME, ORG)
        engine.rotate("session_secret", ORG)

        done = engine.retire_expired(now=datetime.now(UTC) + GRACE * 2)

        assert mgr.path("session_secret", ORG) in done
        assert engine.previous("session_secret", ORG) is None
    finally:
        ep.close()


# -- change events (KEYSAFE_EVENT_CHANGES) ---------------------------------------------------
def test_every_change_sends_an_event_never_a_value(endpoint: Endpoint) -> None:
    """An audit sink: each committed change (write, tags, rollback, delete, restore,
    destroy, purge) is an event with path, org, version, actor and audit seq; reads and
    failures are not; delivery happens off the writer's thread, and ``close`` drains."""
    assert endpoint.event_key is not None
    sink = ChangeEvents(Events([f"{endpoint.base}/events"], endpoint.event_key))
    m = SecretManager(MemoryBackend(), audit=AuditLog(MemoryAuditStore(), sinks=[sink]),
                      env="test", actor="tester")
    m.put("k", f"v1-{CANARY}", ORG)
    m.put("k", f"v2-{CANARY}", ORG)
    m.get("k", ORG)
    with pytest.raises(Conflict):
        m.put("k", "v3", ORG, expected_version=1)
    m.update_tags("k", ORG, set_tags={"team": "a"})
    m.rollback("k", 1, ORG)
    m.destroy("k", [2], ORG)
    m.delete("k", ORG)
    m.restore("k", ORG)
    m.delete("k", ORG, force=True)
    m.close()
    got = received(endpoint)
    assert [(e["type"], e["version"]) for e in got] == [
        ("secret.written", 1), ("secret.written", 2), ("secret.updated", None),
        ("secret.rolled_back", 3), ("secret.destroyed", None), ("secret.deleted", None),
        ("secret.restored", None), ("secret.purged", None)]
    path = m.path("k", ORG)
    assert {(e["path"], e["org"], e["actor"]) for e in got} == {(path, ORG, "tester")}
    assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)
    assert got[4]["detail"] == {"versions": [2]}
    for body, _ in endpoint.events:
        assert CANARY not in body.decode()


def test_a_dead_receiver_never_holds_up_a_write() -> None:
    """The writer only queues: with the receiver gone, puts return at once; the queue is
    bounded (the oldest dropped and counted) and close gives up after ``drain``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(0)  # accepts nothing: every delivery waits for its timeout
        events = Events([f"http://127.0.0.1:{s.getsockname()[1]}/events"], None,
                        timeout=0.5)
        sink = ChangeEvents(events, limit=3, drain=0.2)
        m = SecretManager(MemoryBackend(), audit=AuditLog(MemoryAuditStore(), sinks=[sink]),
                          env="test", actor="tester")
        for i in range(10):
            m.put(f"k{i}", "v", ORG)
        assert sink.dropped >= 6
        m.close()


def test_change_events_from_the_settings_reach_the_receiver_from_a_cli(
        events_env: Events, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    """KEYSAFE_EVENT_CHANGES=1 beside KEYSAFE_EVENT_WEBHOOKS: a ``keysafe put`` process
    sends its change before it exits (close waits for the queue)."""
    import subprocess
    import sys

    keysafe = str(Path(sys.executable).parent / "keysafe")
    env = {**os.environ, "KEYSAFE_EVENT_CHANGES": "1"}
    for args in (["put", "k", "--org", ORG], ["tag", "k", "--org", ORG, "--set", "a=b"]):
        p = subprocess.run([keysafe, *args], input=f"v-{CANARY}".encode(), env=env,
                           capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
    got = received(endpoint)
    assert [(e["type"], e["org"], e["version"]) for e in got] == [
        ("secret.written", ORG, 1), ("secret.updated", ORG, None)]
    # Off by default: another write sends nothing.
    env.pop("KEYSAFE_EVENT_CHANGES")
    p = subprocess.run([keysafe, "put", "k", "--org", ORG], input=b"v2", env=env,
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert len(endpoint.events) == 2


def test_change_events_follow_the_commit(endpoint: Endpoint, tmp_path: Path) -> None:
    """Sent once the write's transaction commits, never for one that rolls back (the
    receiver may read the store at once; a reviewer saw an event for a rolled-back
    write, sent before the commit)."""
    from keysafe.backends.sqlite import SQLiteBackend
    from keysafe.crypto.keys import KeyRing
    from keysafe.manager.audit import SQLiteAuditStore

    assert endpoint.event_key is not None
    sink = ChangeEvents(Events([f"{endpoint.base}/events"], endpoint.event_key))
    backend = SQLiteBackend(tmp_path / "ks.db", KeyRing.generate())
    m = SecretManager(backend, audit=AuditLog(SQLiteAuditStore(backend), sinks=[sink]),
                      env="test", actor="tester")
    m.put("k", "v1", ORG)

    def given_up() -> None:
        with backend.transaction():
            m.put("k", "v2", ORG)
            raise RuntimeError("the caller gives up")

    with pytest.raises(RuntimeError):
        given_up()
    assert m.get("k", ORG, fresh=True) == "v1"
    with backend.transaction():
        m.put("k", "v3", ORG)
    m.close()
    assert [(e["type"], e["version"]) for e in received(endpoint)] == [
        ("secret.written", 1), ("secret.written", 2)]


def test_a_webhook_url_http_refuses_ends_no_delivery(caplog: pytest.LogCaptureFixture,
                                                      endpoint: Endpoint) -> None:
    """A URL http.client refuses (a space in it: InvalidURL, a ValueError) fails that
    delivery only; the thread goes on, the log names the origin alone."""
    sink = ChangeEvents(Events(["http://127.0.0.1:9/my hook SECRETPATH",
                                f"{endpoint.base}/events"], None), drain=5)
    m = SecretManager(MemoryBackend(), audit=AuditLog(MemoryAuditStore(), sinks=[sink]),
                      env="test", actor="tester")
    with caplog.at_level("WARNING", logger="keysafe.rotation"):
        m.put("a", "v", ORG)
        m.put("b", "v", ORG)
        m.close()
    assert [json.loads(body)["path"].rsplit("/", 1)[1] for body, _ in endpoint.events] == [
        "a", "b"]
    assert sink.events.failed == 2
    assert "SECRETPATH" not in caplog.text


def test_event_webhooks_with_a_space_are_refused(tmp_home: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYSAFE_EVENT_WEBHOOKS", "https://ok.example/my hook")
    with pytest.raises(ConfigError):
        Events.from_settings(load_settings())
