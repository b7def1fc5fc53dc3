"""Audit completeness and the canary: every request that touches a secret or a token is
recorded (who, what, where, outcome, from where, which request), and a value written
through the API shows up nowhere but the one authorised read."""

from __future__ import annotations

import itertools
import json
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from keysafe.manager.audit import AuditFilter
from keysafe.server.app import KeysafeApp

from .serverkit import OPENAI, VALUE_1, bearer, build_app, make_token, real_server

ORG, DOMAIN = "acme", "card-services"
PATH = f"keysafe/local/{ORG}/shared/{OPENAI}"
DPATH = f"keysafe/local/{ORG}/{DOMAIN}/{OPENAI}"


@dataclass
class Env:
    app: KeysafeApp
    client: TestClient
    tokens: dict[str, str]

    def records(self, rid: str | None = None) -> list[Any]:
        recs = self.app.keysafe.manager.audit_query(AuditFilter())
        return [r for r in recs if rid is None or r.request_id == rid]


@pytest.fixture
def env(home: Path) -> Iterator[Env]:
    app = build_app(home, auth_fail_limit=10_000)
    tokens = {name: make_token(app, name, roles, orgs) for name, roles, orgs in (
        ("adm", ["admin"], [ORG]), ("root", ["admin"], None), ("wri", ["writer"], [ORG]),
        ("vie", ["viewer"], [ORG]), ("svc", ["service"], [ORG]),
        ("sw", ["service", "writer"], [ORG]), ("glx", ["admin", "service"], ["globex"]))}
    with TestClient(app) as c:
        yield Env(app, c, tokens)


# -- every request is audited ------------------------------------------------------------

_rid = itertools.count(1)


def _send(e: Env, method: str, url: str, token: str | None, body: Any = None) -> tuple[
        Any, str]:
    rid = f"audit-probe-{next(_rid)}"
    headers = {"X-Request-ID": rid}
    if token:
        headers.update(bearer(e.tokens[token]))
    r = e.client.request(method, url, json=body, headers=headers)
    return r, rid


S = f"/api/secrets/{ORG}/{OPENAI}"
# (method, url, token, body, expected status, action, outcome, path) -- path None means
# "not checked here" (denials: see test_denials_record_the_path).
AUDITED: list[tuple[str, str, str | None, Any, int, str, str, str | None]] = [
    ("PUT", S, "wri", {"secret_value": VALUE_1}, 200, "write", "ok", PATH),
    ("PUT", S, "wri", {"secret_value": VALUE_1, "expected_version": 0}, 409, "write",
     "conflict", PATH),
    ("PUT", S, "wri", {"secret_value": "x" * 70_000}, 413, "write", "value_too_large", PATH),
    ("PUT", S, "wri", {"secret_value": "not-a-key"}, 422, "write", "invalid_value", PATH),
    ("PUT", S, "vie", {"secret_value": VALUE_1}, 403, "write", "denied", None),
    ("PUT", S, "glx", {"secret_value": VALUE_1}, 404, "write", "denied", None),
    ("PUT", S, None, {"secret_value": VALUE_1}, 401, "authenticate", "denied", None),
    ("GET", S, "vie", None, 200, "status", "ok", PATH),
    ("GET", S, "glx", None, 404, "status", "denied", None),
    ("GET", S, None, None, 401, "authenticate", "denied", None),
    ("GET", S + "/value", "svc", None, 200, "read_value", "ok", PATH),
    ("GET", S + "/value", "wri", None, 403, "read", "denied", None),
    ("GET", S + "/value", "glx", None, 404, "read", "denied", None),
    ("GET", f"/api/secrets/{ORG}/nothing_here/value", "svc", None, 404, "read_value",
     "not_found", f"keysafe/local/{ORG}/shared/nothing_here"),
    ("GET", f"/api/orgs/{ORG}/llm-keys/openai", "svc", None, 200, "read_value", "ok",
     PATH),
    ("GET", f"/api/orgs/{ORG}/llm-keys/openai", "adm", None, 403, "read", "denied", None),
    ("GET", S + "/versions", "vie", None, 200, "versions", "ok", PATH),
    ("GET", S + "/versions", "svc", None, 403, "versions", "denied", None),
    ("PUT", S, "sw", {"secret_value": "sk-" + "c" * 30}, 200, "write", "ok", PATH),
    ("POST", S + "/rollback", "wri", {"version": 1}, 200, "rollback", "ok", PATH),
    ("POST", S + "/rollback", "vie", {"version": 1}, 403, "rollback", "denied", None),
    ("GET", f"/api/orgs/{ORG}/secrets", "vie", None, 200, "list", "ok", None),
    ("GET", f"/api/orgs/{ORG}/secrets", "glx", None, 404, "list", "denied", None),
    ("DELETE", S, "vie", None, 403, "delete", "denied", None),
    ("DELETE", S, "wri", None, 200, "delete", "ok", PATH),
    ("POST", S + "/restore", "svc", None, 403, "restore", "denied", None),
    ("POST", S + "/restore", "wri", None, 200, "restore", "ok", PATH),
    ("DELETE", S + "?force=true", "wri", None, 403, "destroy", "denied", None),
    ("DELETE", S + "?force=true", "adm", None, 200, "purge", "ok", PATH),
    ("POST", S + "/restore", "wri", None, 404, "restore", "not_found", PATH),
    ("GET", f"/api/audit?org_id={ORG}", "adm", None, 200, "audit_query", "ok", None),
    ("GET", f"/api/audit?org_id={ORG}", "vie", None, 403, "audit", "denied", None),
    ("POST", "/api/tokens", "adm", {"name": "n1", "roles": ["viewer"], "orgs": [ORG]}, 201,
     "token_create", "ok", None),
    ("POST", "/api/tokens", "wri", {"name": "n2", "roles": ["viewer"], "orgs": [ORG]}, 403,
     "tokens", "denied", None),
    ("POST", "/api/tokens", "adm", {"name": "n3", "roles": ["admin"], "orgs": ["globex"]},
     404, "tokens", "denied", None),
    ("GET", "/api/tokens", "adm", None, 200, "token_list", "ok", None),
    ("GET", "/api/tokens", "vie", None, 403, "tokens", "denied", None),
    ("DELETE", "/api/tokens/{victim}", "vie", None, 403, "tokens", "denied", None),
    ("DELETE", "/api/tokens/{victim}", "adm", None, 200, "token_revoke", "ok", None),
]


def test_every_request_lands_in_the_audit_log(env: Env) -> None:
    victim = make_token(env.app, "victim", ["viewer"], [ORG]).split("_")[1]
    for method, url, token, body, status, action, outcome, path in AUDITED:
        r, rid = _send(env, method, url.format(victim=victim), token, body)
        where = (method, url, token)
        assert r.status_code == status, (where, r.text)
        assert r.headers["x-request-id"] == rid
        recs = env.records(rid)
        assert recs, f"no audit record for {where}"
        rec = recs[-1]
        assert rec.actor == (f"token:{token}" if token else "anonymous"), where
        assert rec.action == action, (where, rec)
        assert rec.outcome == outcome, (where, rec)
        assert rec.client == "testclient", where
        assert rec.request_id == rid
        if path is not None:
            assert rec.path == path, (where, rec)
        if token in ("adm", "wri", "vie", "svc", "sw") and url.startswith("/api/secrets"):
            assert rec.org == ORG, (where, rec)


def test_denials_record_the_path(env: Env) -> None:
    for method, url, token, body in (("PUT", S, "vie", {"secret_value": VALUE_1}),
                                     ("GET", S + "/value", "wri", None),
                                     ("GET", S, "glx", None),
                                     ("DELETE", S, "vie", None)):
        _, rid = _send(env, method, url, token, body)
        (rec,) = env.records(rid)
        assert rec.outcome == "denied"
        assert rec.path == PATH, (method, url, token, rec.path)


def test_versions_of_a_missing_secret_is_audited(env: Env) -> None:
    r, rid = _send(env, "GET", f"/api/secrets/{ORG}/never_was/versions", "vie")
    assert r.status_code == 404
    recs = env.records(rid)
    assert recs, "no audit record"
    assert recs[-1].outcome == "not_found"


def test_audit_records_chain_verifies(env: Env) -> None:
    for method, url, token, body, *_ in AUDITED[:12]:
        _send(env, method, url, token, body)
    result = env.app.keysafe.manager.audit_verify()
    assert result.ok, result.problems
    assert result.checked >= 12


# -- the canary ------------------------------------------------------------------------

def _canary() -> str:
    # Shaped like an OpenAI key so the catalog's format check accepts it.
    return "sk-canary" + secrets.token_hex(16)


def _all_requests(canary: str, victim: str) -> list[tuple[str, str, Any]]:
    base = f"/api/secrets/{ORG}/{OPENAI}"
    dq = f"?domain_id={DOMAIN}"
    return [
        ("GET", "/api/secrets/well-known", None),
        ("GET", base, None), ("GET", base + dq, None),
        ("GET", base + "/value", None), ("GET", base + "/value" + dq, None),
        ("GET", base + "/versions", None), ("GET", base + "/versions" + dq, None),
        ("GET", f"/api/orgs/{ORG}/secrets", None),
        ("GET", f"/api/orgs/{ORG}/secrets?include_deleted=true", None),
        ("GET", f"/api/orgs/{ORG}/secrets?domain_id={DOMAIN}", None),
        ("GET", f"/api/orgs/{ORG}/llm-keys/openai", None),
        ("GET", f"/api/orgs/{ORG}/llm-keys/openai{dq}", None),
        ("GET", f"/api/audit?org_id={ORG}&limit=1000", None),
        ("GET", "/api/audit?limit=1000", None),
        ("GET", "/api/tokens", None), ("GET", "/api/whoami", None),
        ("POST", "/api/tokens", {"name": "c", "roles": ["viewer"], "orgs": [ORG]}),
        ("DELETE", f"/api/tokens/{victim}", None),
        # Writes that fail carry the canary in: none may carry it back out.
        ("PUT", base, {"secret_value": canary, "expected_version": 0}),
        ("PUT", base, {"secret_value": canary, "expected_version": 1}),
        ("PUT", base, {"secret_value": canary + "x" * 70_000}),
        ("PUT", base, {"secret_value": canary, "extra": canary}),
        ("PUT", base, {"secret_value": canary, "domain_id": "bad domain"}),
        ("PUT", f"/api/secrets/{ORG}/bad name", {"secret_value": canary}),
        ("PUT", f"/api/secrets/{ORG}/github_token", {"secret_value": canary}),
        ("POST", base + "/rollback", {"version": 1, "domain_id": DOMAIN}),
        ("GET", base + "/versions", None),
        ("GET", "/healthz", None), ("GET", "/readyz", None), ("GET", "/metrics", None),
        ("GET", "/openapi.json", None), ("GET", "/docs", None),
    ]


def _is_authorised_read(method: str, url: str, token: str, status: int) -> bool:
    return (method == "GET" and token in ("svc", "sw") and status == 200
            and (url.split("?")[0].endswith("/value") or "/llm-keys/" in url))


def test_canary_appears_only_in_the_service_read(env: Env, home: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    canary = _canary()
    c = env.client
    for dom in (None, DOMAIN):
        body = {"secret_value": canary, "description": "canary"}
        if dom:
            body["domain_id"] = dom
        w = c.put(f"/api/secrets/{ORG}/{OPENAI}", json=body, headers=bearer(env.tokens["wri"]))
        assert w.status_code == 200
        assert canary not in w.text
        assert canary not in str(w.headers)
    reads = 0
    for token in [*env.tokens, None]:
        victim = make_token(env.app, f"v-{token}", ["viewer"], [ORG]).split("_")[1]
        for method, url, body in _all_requests(canary, victim):
            headers = bearer(env.tokens[token]) if token else {}
            r = c.request(method, url, json=body, headers=headers)
            assert r.status_code < 500, (method, url, token, r.text)
            text = r.text + json.dumps(dict(r.headers))
            if _is_authorised_read(method, url, token or "", r.status_code):
                assert r.json()["value"] == canary
                assert r.headers["cache-control"] == "no-store"
                reads += 1
            else:
                assert canary not in text, (method, url, token, r.status_code)
    assert reads == 2 * 4  # two tokens x (value, value?domain, llm-key, llm-key?domain)

    records = env.records()
    assert records
    dumped = json.dumps([r.to_dict() for r in records], default=str)
    assert canary not in dumped
    assert canary not in c.get("/metrics").text
    assert canary not in caplog.text
    for rec in caplog.records:
        assert canary not in rec.getMessage()
    # Nor in plaintext anywhere in the store's files.
    env.app.keysafe.manager.audit.flush()
    for f in home.rglob("*"):
        if f.is_file():
            assert canary.encode() not in f.read_bytes(), f


def test_canary_never_leaves_a_real_server(tmp_path: Path) -> None:
    canary = _canary()
    with real_server(tmp_path / "home", KEYSAFE_AUTH_FAIL_LIMIT="10000") as srv:
        root = bearer(srv.token)
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            def mint(name: str, roles: list[str]) -> str:
                r = c.post("/api/tokens", json={"name": name, "roles": roles, "orgs": [ORG]},
                           headers=root)
                assert r.status_code == 201, r.text
                return str(r.json()["token"])

            tokens = {"wri": mint("wri", ["writer"]), "svc": mint("svc", ["service"]),
                      "vie": mint("vie", ["viewer"]), "adm": mint("adm", ["admin"])}
            rid = "canary-real-write-1"
            w = c.put(f"/api/secrets/{ORG}/{OPENAI}", json={"secret_value": canary},
                      headers={**bearer(tokens["wri"]), "X-Request-ID": rid})
            assert w.status_code == 200, w.text
            assert canary not in w.text
            for token in [*tokens, None]:
                victim = mint(f"victim-{token}", ["viewer"]).split("_")[1]
                for method, url, body in _all_requests(canary, victim):
                    headers = bearer(tokens[token]) if token else {}
                    r = c.request(method, url, json=body, headers=headers)
                    assert r.status_code < 500, (method, url, token, r.text)
                    if _is_authorised_read(method, url, token or "", r.status_code):
                        assert r.json()["value"] == canary
                    else:
                        assert canary not in r.text + str(r.headers), (method, url, token)
            assert canary not in c.get("/metrics").text
            recs = c.get("/api/audit", params={"org_id": ORG, "limit": 1000},
                         headers=root).json()["records"]
            assert canary not in json.dumps(recs)
            (write,) = [r for r in recs if r["request_id"] == rid]
            assert write["actor"] == "token:wri"
            assert write["action"] == "write"
            assert write["path"] == PATH
            assert write["outcome"] == "ok"
            assert write["client"] == "127.0.0.1"
    out = srv.output()  # everything the server printed, to stdout or stderr
    assert srv.token in out  # the capture works: the bootstrap token was printed
    assert canary not in out
