"""``POST /api/secrets/{org}/{name}/generate``: the server makes a random value and stores
it; the answer never holds it, so nobody (the caller included) has seen it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from keysafe.manager.audit import AuditFilter
from keysafe.server.app import KeysafeApp

from .serverkit import bearer, make_token

ORG = "acme-corp"


@pytest.fixture
def tokens(app: KeysafeApp) -> dict[str, dict[str, str]]:
    return {role: bearer(make_token(app, role, [role], [ORG]))
            for role in ("writer", "service", "viewer")}


def gen(client: TestClient, token: dict[str, str], name: str = "jwt_secret",
        **body: object) -> object:
    return client.post(f"/api/secrets/{ORG}/{name}/generate", json=body, headers=token)


def test_generated_value_goes_in_and_never_comes_back(
        app: KeysafeApp, client: TestClient, tokens: dict[str, dict[str, str]]) -> None:
    r = gen(client, tokens["writer"], description="signs sessions", length=48)
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.json()["configured"]) == (1, True)
    value = client.get(f"/api/secrets/{ORG}/jwt_secret/value",
                       headers=tokens["service"]).json()["value"]
    assert len(value) == 48
    assert value not in r.text
    status = client.get(f"/api/secrets/{ORG}/jwt_secret", headers=tokens["viewer"]).json()
    assert status["description"] == "signs sessions"
    records = app.keysafe.manager.audit_query(AuditFilter(action="write"))
    assert [(e.outcome, e.version) for e in records] == [("ok", 1)]
    assert value not in repr(app.keysafe.manager.audit_query(AuditFilter()))
    # Check-and-set as for a write.
    r = gen(client, tokens["writer"], expected_version=0)
    assert r.status_code == 409
    r = gen(client, tokens["writer"], expected_version=1, domain_id="shared")
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2


@pytest.mark.parametrize(("token", "name", "body", "status", "words"), [
    ("service", "jwt_secret", {}, 403, ""),
    ("viewer", "jwt_secret", {}, 403, ""),
    ("writer", "openai_api_key", {}, 422, "issued by openai"),
    ("writer", "jwt_secret", {"length": 8}, 422, "length"),
    ("writer", "jwt_secret", {"alphabet": "emoji"}, 422, "alphabet 'emoji'"),
    ("writer", "jwt_secret", {"secret_value": "x" * 40}, 422, "secret_value"),
    ("writer", "jwt_secret", {"tags": {"rotator": "manual"}}, 422, "rotat"),
])
def test_refused_and_nothing_stored(app: KeysafeApp, client: TestClient,
                                    tokens: dict[str, dict[str, str]], token: str,
                                    name: str, body: dict, status: int, words: str) -> None:
    r = gen(client, tokens[token], name, **body)
    assert r.status_code == status, r.text
    assert words in r.text
    assert app.keysafe.manager.list(ORG) == []
