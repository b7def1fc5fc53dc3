"""Tokens bound to networks, through a real ``keysafe serve`` on loopback: a request
from outside a token's networks is refused as a wrong token is (401), audited with the
reason; a token made by a bound token stays inside its maker's networks."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .serverkit import RealServer, bearer, real_server

ORG = "acme"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    with real_server(tmp_path_factory.mktemp("nets") / "home") as s:
        yield s


def make(c: httpx.Client, name: str, roles: list[str], orgs: list[str],
         cidrs: list[str] | None = None) -> httpx.Response:
    body: dict = {"name": name, "roles": roles, "orgs": orgs}
    if cidrs is not None:
        body["cidrs"] = cidrs
    return c.post("/api/tokens", json=body)


def test_a_token_works_only_from_its_networks(srv: RealServer) -> None:
    with httpx.Client(base_url=srv.url, headers=bearer(srv.token), timeout=30) as root:
        assert root.put(f"/api/secrets/{ORG}/k", json={"secret_value": "v" * 20}
                        ).status_code == 200
        here = make(root, "here", ["service"], [ORG], ["127.0.0.0/8"])
        away = make(root, "away", ["service"], [ORG], ["10.0.0.0/8", "2001:db8::/32"])
        assert (here.status_code, away.status_code) == (201, 201), away.text
        assert away.json()["cidrs"] == ["10.0.0.0/8", "2001:db8::/32"]
        bad = make(root, "bad", ["viewer"], [ORG], ["10.0.0.0/33"])
        assert bad.status_code == 422
        assert "is not a network" in bad.text
        for token, want in ((here.json()["token"], 200), (away.json()["token"], 401)):
            # The fast path (a value read) and the FastAPI routes (status) alike.
            for path in (f"/api/secrets/{ORG}/k/value", f"/api/secrets/{ORG}/k",
                         f"/api/secrets/{ORG}/k/value?version=1"):
                r = httpx.get(srv.url + path, headers=bearer(token), timeout=30)
                assert r.status_code == want, (path, r.text)
        r = root.get("/api/audit", params={"action": "authenticate", "limit": 50})
        assert r.status_code == 200
        refused = [e for e in r.json()["records"] if e["outcome"] == "denied"]
        assert refused
        assert refused[0]["detail"] == {"reason": "address", "token": "token:away"}
        assert away.json()["token"] not in r.text


def test_a_bound_maker_makes_bound_tokens(srv: RealServer) -> None:
    with httpx.Client(base_url=srv.url, headers=bearer(srv.token), timeout=30) as root:
        boss = make(root, "boss", ["admin"], ["*"], ["127.0.0.0/8"]).json()["token"]
    with httpx.Client(base_url=srv.url, headers=bearer(boss), timeout=30) as c:
        inherited = make(c, "child", ["viewer"], [ORG])
        assert inherited.status_code == 201, inherited.text
        assert inherited.json()["cidrs"] == ["127.0.0.0/8"]
        narrower = make(c, "narrow", ["viewer"], [ORG], ["127.0.0.1"])
        assert narrower.json()["cidrs"] == ["127.0.0.1/32"]
        wider = make(c, "wider", ["viewer"], [ORG], ["0.0.0.0/0"])
        assert wider.status_code == 403
        assert "outside the networks your own token works from" in wider.text
