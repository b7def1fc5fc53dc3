"""``GET /api/secrets/{org}/{name}/value?field=F``: one field of JSON credentials, picked
out by the server (spec 000's JSON credentials; spec 002's ``remoteRef.property`` through
the External Secrets Operator's webhook provider), audited with the field it named."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

import pytest
from fastapi.testclient import TestClient

from keysafe.manager.audit import AuditFilter
from keysafe.server.app import KeysafeApp

from .serverkit import bearer, make_token

ORG = "acme-corp"
CANARY = "canary-Qz7-never-shown"
CREDS = {"anthropic": "sk-ant-" + "a" * 30, "openai": "sk-" + "o" * 40,
         "port": 5432, "tls": True, "nothing": None, "extra": {"deep": CANARY},
         "jwt-secret": "j" * 32, "ünï code": "välue"}
PROBLEM = "application/problem+json"


@pytest.fixture
def svc(app: KeysafeApp) -> dict[str, str]:
    app.keysafe.manager.put_json("api_keys", CREDS, ORG)
    app.keysafe.manager.put("plain", "not-json-" + CANARY, ORG)
    return bearer(make_token(app, "svc", ["service"], [ORG]))


def url(name: str = "api_keys") -> str:
    return f"/api/secrets/{ORG}/{name}/value"


def test_a_string_field_is_the_value_alone(client: TestClient, svc: dict[str, str]) -> None:
    r = client.get(url(), params={"field": "anthropic"}, headers=svc)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["value"] == CREDS["anthropic"]
    assert body["field"] == "anthropic"
    assert body["field_json"] is False
    assert r.headers["cache-control"] == "no-store"
    # Nothing of the other fields goes out.
    for other in ("openai", "jwt-secret", "extra"):
        assert json.dumps(CREDS[other])[1:-1] not in r.text


@pytest.mark.parametrize(("field", "text"), [
    ("port", "5432"), ("tls", "true"), ("nothing", "null"),
    ("extra", json.dumps({"deep": CANARY}, separators=(",", ":")))])
def test_other_fields_come_as_their_json_text(client: TestClient, svc: dict[str, str],
                                              field: str, text: str) -> None:
    body = client.get(url(), params={"field": field}, headers=svc).json()
    assert (body["value"], body["field_json"]) == (text, True)


def test_an_empty_field_is_the_whole_value(client: TestClient, svc: dict[str, str]) -> None:
    """What the operator's webhook provider sends for a remoteRef without property."""
    r = client.get(url() + "?field=", headers=svc)
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["value"]) == CREDS
    assert r.json()["field"] is None


@pytest.mark.parametrize("field", ["jwt-secret", "ünï code"])
def test_escaped_field_names_through_both_routes(client: TestClient, svc: dict[str, str],
                                                 field: str) -> None:
    """Plain names are answered by the fast path, %-escaped ones by FastAPI: the same."""
    r = client.get(url() + "?field=" + quote(field, safe=""), headers=svc)
    assert r.status_code == 200, r.text
    assert r.json()["value"] == CREDS[field]
    # The operator escapes with Go's url.QueryEscape: a space as '+'.
    r = client.get(url() + "?field=" + field.replace(" ", "+"), headers=svc)
    assert r.json()["value"] == CREDS[field]


def test_missing_field_and_non_json_value(client: TestClient, svc: dict[str, str],
                                          app: KeysafeApp) -> None:
    r = client.get(url(), params={"field": "mistral"}, headers=svc)
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM
    assert "mistral" in r.json()["detail"]
    r = client.get(url("plain"), params={"field": "x"}, headers=svc)
    assert r.status_code == 422
    assert "JSON credentials" in r.json()["detail"]
    assert CANARY not in r.text
    r = client.get(url(), params={"field": "f" * 257}, headers=svc)
    assert r.status_code == 422
    assert "f" * 257 not in r.text
    r = client.get(url("absent"), params={"field": "x"}, headers=svc)
    assert r.status_code == 404


def test_field_reads_are_audited_with_the_field(client: TestClient, svc: dict[str, str],
                                                app: KeysafeApp) -> None:
    mgr = app.keysafe.manager
    client.get(url(), params={"field": "openai"}, headers=svc)
    client.get(url(), params={"field": "mistral"}, headers=svc)
    client.get(url("plain"), params={"field": "x"}, headers=svc)
    client.get(url(), headers=svc)
    reads = [(e.path.rsplit("/", 1)[-1], e.outcome, e.detail)
             for e in mgr.audit_query(AuditFilter(action="read_value"))]
    assert reads[-4:] == [("api_keys", "ok", {"field": "openai"}),
                          ("api_keys", "not_found", {"field": "mistral"}),
                          ("plain", "invalid_value", {"field": "x"}),
                          ("api_keys", "ok", {})]
    text = json.dumps([e.__dict__ if hasattr(e, "__dict__") else repr(e)
                       for e in mgr.audit_query(AuditFilter())], default=str)
    assert CREDS["openai"] not in text
    assert CANARY not in text


def test_field_reads_need_the_read_permission(client: TestClient, svc: dict[str, str],
                                              app: KeysafeApp) -> None:
    for role in ("viewer", "writer"):
        h = bearer(make_token(app, role, [role], [ORG]))
        r = client.get(url(), params={"field": "anthropic"}, headers=h)
        assert r.status_code == 403, role
        assert CREDS["anthropic"] not in r.text
    other = bearer(make_token(app, "globex", ["service"], ["globex"]))
    # Another org's token learns nothing, not even that the secret exists.
    r = client.get(url(), params={"field": "anthropic"}, headers=other)
    assert r.status_code == 404
    assert CREDS["anthropic"] not in r.text


def test_the_operators_webhook_requests_get_each_field(client: TestClient,
                                                       svc: dict[str, str]) -> None:
    """What `keysafe export --format external-secret` renders, requested the way the
    External Secrets Operator's webhook provider does (an emulation of its documented
    templating: url.QueryEscape of remoteRef.key and .property, an unset property
    empty, then result.jsonPath `$.value`), gives each entry its value."""
    import yaml

    from keysafe.kube import render_external_secret

    text = render_external_secret(
        ["plain"], name="app", namespace="prod", server_url="https://keysafe.example",
        org=ORG, domain=None, token_secret="tok",
        fields=[("api_keys", "anthropic", "ANTHROPIC_API_KEY"),
                ("api_keys", "ünï code", "UNICODE"), ("api_keys", "port", "PORT")])
    store, es = list(yaml.safe_load_all(text))
    hook = store["spec"]["provider"]["webhook"]
    token = svc["Authorization"].split()[1]
    got = {}
    for entry in es["spec"]["data"]:
        ref = entry["remoteRef"]
        url = (hook["url"].replace("{{ .remoteRef.key }}", quote_plus(ref["key"]))
               .replace("{{ .remoteRef.property }}", quote_plus(ref.get("property", ""))))
        headers = {k: v.replace("{{ .auth.token }}", token) for k, v in hook["headers"].items()}
        r = client.get(url.removeprefix("https://keysafe.example"), headers=headers)
        assert r.status_code == 200, r.text
        assert hook["result"]["jsonPath"] == "$.value"
        got[entry["secretKey"]] = r.json()["value"]
    assert got == {"PLAIN": "not-json-" + CANARY, "ANTHROPIC_API_KEY": CREDS["anthropic"],
                   "UNICODE": CREDS["ünï code"], "PORT": "5432"}


def test_a_field_of_a_chosen_version(client: TestClient, svc: dict[str, str],
                                     app: KeysafeApp) -> None:
    app.keysafe.manager.update_json("api_keys", {"anthropic": "sk-ant-" + "b" * 30}, ORG)
    body = client.get(url(), params={"field": "anthropic", "version": 1}, headers=svc).json()
    assert (body["value"], body["version"], body["field"]) == (CREDS["anthropic"], 1,
                                                               "anthropic")
    body = client.get(url(), params={"field": "anthropic", "version": 0}, headers=svc).json()
    assert (body["value"], body["version"]) == ("sk-ant-" + "b" * 30, 2)


@pytest.mark.parametrize("tail", ["", "&x=%41"])  # the fast path, then FastAPI
def test_both_routes_read_a_query_alike(client: TestClient, svc: dict[str, str],
                                        app: KeysafeApp, tail: str) -> None:
    """A repeated field: the last one wins, a blank one included (as Starlette reads a
    query); an over-long field is refused before anything else, whoever asks."""
    r = client.get(url() + "?field=anthropic&field=" + tail, headers=svc)
    assert (r.status_code, r.json()["field"]) == (200, None)
    r = client.get(url() + "?field=&field=openai" + tail, headers=svc)
    assert r.json()["value"] == CREDS["openai"]
    viewer = bearer(make_token(app, "v", ["viewer"], [ORG]))
    r = client.get(url() + "?field=" + "f" * 257 + tail, headers=viewer)
    assert r.status_code == 422
