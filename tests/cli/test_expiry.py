"""A secret's expiry from the CLI and over HTTP: `put --expires`, `tag --expires`, the
API's `expires_at` on writes and on PATCH; a time that is not in the future is refused,
naming it, and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from keysafe.config import load_settings
from keysafe.server.app import create_app

VALUE = "v" * 24


def _expiry(kc: Callable[..., Any], name: str) -> datetime | None:
    r = kc("status", name, "--org", "acme", "--json")
    assert r.code == 0, r.err
    got = r.json()["expires_at"]
    return None if got is None else datetime.fromisoformat(got)


def test_put_and_tag_set_an_expiry(put: Callable[..., Any], kc: Callable[..., Any]) -> None:
    before = datetime.now(UTC)
    put("partner_key", VALUE, "--expires", "90d")
    got = _expiry(kc, "partner_key")
    assert got is not None
    assert timedelta(days=89) < got - before < timedelta(days=91)
    # An ISO time (UTC when it names no offset), moved without a new version.
    r = kc("tag", "partner_key", "--org", "acme", "--expires", "2099-01-02T03:04:05")
    assert r.code == 0, r.err
    assert "expires 2099-01-02T03:04:05+00:00" in r.err
    assert _expiry(kc, "partner_key") == datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)
    versions = kc("versions", "partner_key", "--org", "acme", "--json").json()
    assert len(versions) == 1
    # The past, or nonsense: exit 2, naming the option, and nothing changes.
    for args in (("put", "other_key", "--org", "acme", "--expires", "2001-01-01"),
                 ("tag", "partner_key", "--org", "acme", "--expires", "soon")):
        r = kc(*args, input=VALUE)
        assert r.code == 2, r.err
        assert "--expires" in r.err
    assert kc("status", "other_key", "--org", "acme").code == 3
    assert _expiry(kc, "partner_key") == datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)
    r = kc("put", "other_key", "--org", "acme", "--credentials", "--merge", "--expires",
           "1d", input='{"a": "b"}')
    assert r.code == 2
    assert "--expires" in r.err
    assert kc("tag", "partner_key", "--org", "acme").code == 2  # nothing to change
    # An offset at the edge of the calendar is a clear error too, not a crash.
    for edge in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
        r = kc("tag", "partner_key", "--org", "acme", "--expires", edge)
        assert r.code == 2, r.err
        assert edge in r.err
    # The expiry stays with the secret across a new value, as the description does.
    put("partner_key", VALUE + "2")
    assert _expiry(kc, "partner_key") == datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_the_library_takes_a_naive_expiry_as_utc(tmp_home: Path,
                                                  monkeypatch: Any) -> None:
    """Not as this machine's local time: the CLI and the API read it so too."""
    import time

    from keysafe import SecretManager

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        with SecretManager.from_env() as mgr:
            mgr.put("partner_key", VALUE, "acme", expires_at=datetime(2099, 1, 1))
            got = mgr.describe("partner_key", "acme").expires_at
            assert got == datetime(2099, 1, 1, tzinfo=UTC)
            mgr.update_tags("partner_key", "acme", expires_at=datetime(2098, 1, 1))
            assert mgr.describe("partner_key", "acme").expires_at == datetime(
                2098, 1, 1, tzinfo=UTC)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_the_api_takes_an_expiry_on_writes_and_patches(tmp_path: Path) -> None:
    app = create_app(load_settings(environ={"KEYSAFE_HOME": str(tmp_path)}, home=tmp_path))
    token, _ = app.keysafe.tokens.create(name="w", roles=["writer"], orgs=["acme"],
                                         created_by="test")
    h = {"Authorization": f"Bearer {token}"}
    url = "/api/secrets/acme/partner_key"
    soon = datetime.now(UTC) + timedelta(days=30)
    with TestClient(app) as c:
        r = c.put(url, json={"secret_value": VALUE, "expires_at": "2001-01-01T00:00:00Z"},
                  headers=h)
        assert r.status_code == 422
        assert "not in the future" in r.text
        assert VALUE not in r.text
        assert c.get(url, headers=h).json()["configured"] is False  # nothing stored
        r = c.put(url, json={"secret_value": VALUE, "expires_at": soon.isoformat()},
                  headers=h)
        assert r.status_code in (200, 201), r.text
        st = c.get(url, headers=h).json()
        assert abs(datetime.fromisoformat(st["expires_at"]) - soon) < timedelta(seconds=1)
        later = datetime(2099, 5, 6, tzinfo=UTC)
        r = c.patch(url, json={"expires_at": later.isoformat()}, headers=h)
        assert r.status_code == 200, r.text
        assert datetime.fromisoformat(r.json()["expires_at"]) == later
        assert r.json()["version"] == 1  # no new version
        r = c.patch(url, json={"expires_at": "2001-01-01T00:00:00"}, headers=h)
        assert r.status_code == 422
        r = c.patch(url, json={"expires_at": "9999-12-31T23:59:59-01:00"}, headers=h)
        assert r.status_code == 422, r.text  # outside the calendar: named, not a 500
        r = c.put(url, json={"secret_value": VALUE, "expires_at": "0001-01-01T00:00:00+01:00"},
                  headers={**h, "Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert VALUE not in r.text
        r = c.post("/api/secrets/acme/jwt_secret/generate", json={
            "expires_at": soon.isoformat()}, headers=h)
        assert r.status_code in (200, 201), r.text
        st = c.get("/api/secrets/acme/jwt_secret", headers=h).json()
        assert st["expires_at"] is not None
    app.keysafe.close()
