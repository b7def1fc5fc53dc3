"""``GET /api/secrets/{org}/{name}/value?stage=previous``: the value a rotation replaced,
while its grace period lasts (AWS Secrets Manager's ``AWSPREVIOUS`` stage), so a service
that verifies JWTs or webhook signatures through the server can accept both keys; audited
on its own, with the version it was."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from keysafe.manager.audit import AuditFilter
from keysafe.rotation.engine import RotationEngine
from keysafe.server.app import KeysafeApp

from .serverkit import bearer, make_token

ORG = "acme-corp"
OLD = "previous-canary-" + "p" * 40
URL = f"/api/secrets/{ORG}/jwt_secret/value"


@pytest.fixture
def svc(app: KeysafeApp) -> dict[str, str]:
    app.keysafe.manager.put("jwt_secret", OLD, ORG)
    return bearer(make_token(app, "svc", ["service"], [ORG]))


def rotate(app: KeysafeApp) -> None:
    RotationEngine(app.keysafe.manager, grace=timedelta(hours=1)).rotate("jwt_secret", ORG)


def test_previous_is_404_until_a_rotation_then_the_old_value(
        app: KeysafeApp, client: TestClient, svc: dict[str, str]) -> None:
    r = client.get(URL, params={"stage": "previous"}, headers=svc)
    assert r.status_code == 404
    assert "no previous value" in r.json()["detail"]
    rotate(app)
    r = client.get(URL, params={"stage": "previous"}, headers=svc)
    assert r.status_code == 200, r.text
    assert (r.json()["value"], r.json()["version"]) == (OLD, 1)
    assert r.headers["cache-control"] == "no-store"
    current = client.get(URL, params={"stage": "current"}, headers=svc).json()
    assert current["value"] != OLD
    assert client.get(URL, headers=svc).json()["value"] == current["value"]
    records = [(e.outcome, e.version, e.detail) for e in app.keysafe.manager.audit_query(
        AuditFilter(action="read_value"))]
    assert records == [("not_found", None, {"stage": "previous"}),
                       ("ok", 1, {"stage": "previous"}), ("ok", None, {}), ("ok", None, {})]
    # The value itself is in no record (invariant 2).
    assert OLD not in repr(app.keysafe.manager.audit_query(AuditFilter()))


def test_previous_with_a_field_and_bad_combinations(
        app: KeysafeApp, client: TestClient, svc: dict[str, str]) -> None:
    rotate(app)
    r = client.get(URL, params={"stage": "previous", "version": 1}, headers=svc)
    assert r.status_code == 422
    assert "stage=previous and version" in r.text
    r = client.get(URL, params={"stage": "older"}, headers=svc)
    assert r.status_code == 422
    r = client.get(URL, params={"stage": "previous", "field": "x"}, headers=svc)
    assert r.status_code == 422  # the old JWT secret is not JSON credentials
    assert OLD not in r.text
    # Another org's token reads nothing, the previous value included.
    other = bearer(make_token(app, "other", ["service"], ["globex"]))
    r = client.get(URL, params={"stage": "previous"}, headers=other)
    assert r.status_code in (403, 404)
    assert OLD not in r.text
