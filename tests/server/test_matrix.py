"""Every endpoint x every role x own org / other org / all orgs, table-driven.

Rules (keysafe.server.auth.ROLES): admin does everything but read values; writer writes,
deletes, restores, rolls back and sees status, lists and versions; viewer sees status,
lists and versions; service sees status and reads values. A credential for another org
gets 404 with the same body whether or not the secret exists there. Every denied request
leaves the secret exactly as it was.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keysafe.errors import NotFound
from keysafe.server.app import KeysafeApp

from .serverkit import OPENAI, VALUE_1, VALUE_2, bearer, build_app, make_token

ORG = "acme"          # the org every request targets
OTHER = "globex"      # the org an "other" credential covers
GHOST_ORG = "ghost-org"   # an org with no secrets at all
GHOST = "never_written_key"  # a name that exists in no org

ROLESETS: dict[str, list[str]] = {
    "admin": ["admin"],
    "writer": ["writer"],
    "viewer": ["viewer"],
    "service": ["service"],
    "service+writer": ["service", "writer"],
}
SCOPES: dict[str, list[str] | None] = {"own": [ORG], "other": [OTHER], "all": None}

# endpoint -> expected status per role (admin writer viewer service service+writer),
# first for a credential covering the org (own org or all orgs), then for a credential
# covering only another org.
TABLE = """
endpoint        | own: adm wri vie ser s+w | other: adm wri vie ser s+w
well_known      |      200 200 200 200 200 |        200 200 200 200 200
status          |      200 200 200 200 200 |        404 404 404 404 404
put             |      200 200 403 403 200 |        404 404 404 404 404
delete          |      200 200 403 403 200 |        404 404 404 404 404
delete_force    |      200 403 403 403 403 |        404 404 404 404 404
restore         |      200 200 403 403 200 |        404 404 404 404 404
versions        |      200 200 200 403 200 |        404 404 404 404 404
rollback        |      200 200 403 403 200 |        404 404 404 404 404
value           |      403 403 403 200 200 |        404 404 404 404 404
list            |      200 200 200 403 200 |        404 404 404 404 404
llm_key         |      403 403 403 200 200 |        404 404 404 404 404
audit           |      200 403 403 403 403 |        404 404 404 404 404
token_create    |      201 403 403 403 403 |        404 404 404 404 404
token_list      |      200 403 403 403 403 |        200 403 403 403 403
token_revoke    |      200 403 403 403 403 |        404 403 403 403 403
whoami          |      200 200 200 200 200 |        200 200 200 200 200
"""


def _parse_table() -> dict[str, tuple[list[int], list[int]]]:
    rows = [r for r in TABLE.strip().splitlines()[1:] if r.strip()]
    out = {}
    for row in rows:
        name, own, other = (c.strip() for c in row.split("|"))
        out[name] = ([int(x) for x in own.split()], [int(x) for x in other.split()])
    return out


EXPECTED = _parse_table()
ROLE_NAMES = list(ROLESETS)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str                    # formatted with org, name, prev, victim
    state: str = "present"       # what the secret looks like before the request
    body: Callable[[dict[str, Any]], Any] | None = None
    org_scoped: bool = True      # another org's credential gets 404
    by_name: bool = True         # the path names a secret (vs only an org)
    mutates: bool = False


_value_cycle = itertools.cycle([VALUE_1, VALUE_2])
_serial = itertools.count(1)  # token names are used once per store

ENDPOINTS: dict[str, Endpoint] = {
    "well_known": Endpoint("GET", "/api/secrets/well-known", org_scoped=False,
                           by_name=False),
    "status": Endpoint("GET", "/api/secrets/{org}/{name}"),
    "put": Endpoint("PUT", "/api/secrets/{org}/{name}", mutates=True,
                    body=lambda c: {"secret_value": c["next_value"],
                                    "description": "matrix"}),
    "delete": Endpoint("DELETE", "/api/secrets/{org}/{name}", mutates=True),
    "delete_force": Endpoint("DELETE", "/api/secrets/{org}/{name}?force=true",
                             mutates=True),
    "restore": Endpoint("POST", "/api/secrets/{org}/{name}/restore", state="deleted",
                        mutates=True),
    "versions": Endpoint("GET", "/api/secrets/{org}/{name}/versions"),
    "rollback": Endpoint("POST", "/api/secrets/{org}/{name}/rollback", mutates=True,
                         body=lambda c: {"version": c["prev"]}),
    "value": Endpoint("GET", "/api/secrets/{org}/{name}/value"),
    "list": Endpoint("GET", "/api/orgs/{org}/secrets", by_name=False),
    "llm_key": Endpoint("GET", "/api/orgs/{org}/llm-keys/openai", by_name=False),
    "audit": Endpoint("GET", "/api/audit?org_id={org}", by_name=False),
    "token_create": Endpoint("POST", "/api/tokens", by_name=False, mutates=True,
                             body=lambda c: {"name": f"minted-{next(_serial)}", "roles": ["viewer"],
                                             "orgs": [c["org"]]}),
    "token_list": Endpoint("GET", "/api/tokens", org_scoped=False, by_name=False),
    "token_revoke": Endpoint("DELETE", "/api/tokens/{victim}", by_name=False,
                             mutates=True),
    "whoami": Endpoint("GET", "/api/whoami", org_scoped=False, by_name=False),
}


def test_table_covers_every_endpoint() -> None:
    assert set(EXPECTED) == set(ENDPOINTS)
    assert all(len(own) == len(other) == len(ROLESETS) for own, other in EXPECTED.values())


# -- one app for the whole module ------------------------------------------------------

@dataclass
class World:
    app: KeysafeApp
    client: TestClient
    tokens: dict[tuple[str, str], str]  # (role, scope) -> token

    @property
    def mgr(self) -> Any:
        return self.app.keysafe.manager

    def snapshot(self, org: str = ORG, name: str = OPENAI) -> tuple[Any, ...]:
        """What a denied request must not change: version, deletion, timestamps, value."""
        try:
            meta = self.mgr.backend.describe(self.mgr.path(name, org), include_deleted=True)
        except NotFound:
            return ("absent",)
        value = None
        if not meta.deleted:
            value = self.mgr.get(name, org, fresh=True)
        return (meta.current_version, meta.deleted, meta.updated_at, meta.deleted_at, value)

    def ensure(self, state: str, *, with_victim: bool = True) -> dict[str, Any]:
        """Bring ORG's openai_api_key to ``state`` with at least two versions."""
        m = self.mgr
        path = m.path(OPENAI, ORG)
        try:
            meta = m.backend.describe(path, include_deleted=True)
        except NotFound:
            meta = None
        if meta is not None and meta.deleted:
            m.restore(OPENAI, ORG)
        if meta is None or meta.current_version < 2:
            m.put(OPENAI, VALUE_1, ORG)
            m.put(OPENAI, VALUE_2, ORG)
        if state == "deleted":
            m.delete(OPENAI, ORG)
        current = m.backend.describe(path, include_deleted=True).current_version
        ctx = {"org": ORG, "name": OPENAI, "prev": current - 1,
               "next_value": next(_value_cycle)}
        if with_victim:
            _, victim = self.app.keysafe.tokens.create(name=f"victim-{next(_serial)}",
                                                       roles=["viewer"],
                                                       orgs=[ORG], created_by="test")
            ctx["victim"] = victim.id
        return ctx


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("matrix") / "home"
    # Hundreds of deliberate 401s here; the limiter is tested in test_resilience.
    app = build_app(home, auth_fail_limit=1_000_000)
    tokens = {}
    for (role, roles), (scope, orgs) in itertools.product(ROLESETS.items(), SCOPES.items()):
        tokens[(role, scope)] = make_token(app, f"{role}-{scope}", roles, orgs)
    # Other orgs hold secrets too, so "other org" is not just "empty org".
    app.keysafe.manager.put(OPENAI, VALUE_1, OTHER)
    with TestClient(app) as c:
        yield World(app, c, tokens)


def _request(w: World, ep: Endpoint, token: str | None, ctx: dict[str, Any],
             rid: str) -> Any:
    headers = {"X-Request-ID": rid}
    if token is not None:
        headers.update(bearer(token))
    body = ep.body(ctx) if ep.body else None
    return w.client.request(ep.method, ep.path.format(**ctx), json=body, headers=headers)


_rid = itertools.count(1)

CASES = [pytest.param(ep, role, scope, id=f"{ep}-{role}-{scope}")
         for ep in ENDPOINTS for role in ROLESETS for scope in SCOPES]


@pytest.mark.parametrize(("endpoint", "role", "scope"), CASES)
def test_matrix(world: World, endpoint: str, role: str, scope: str) -> None:
    ep = ENDPOINTS[endpoint]
    own, other = EXPECTED[endpoint]
    expected = (other if scope == "other" else own)[ROLE_NAMES.index(role)]
    ctx = world.ensure(ep.state, with_victim="{victim}" in ep.path)
    before = world.snapshot()
    other_before = world.snapshot(OTHER)
    rid = f"matrix-{next(_rid)}"
    r = _request(world, ep, world.tokens[(role, scope)], ctx, rid)
    assert r.status_code == expected, (r.status_code, r.text)
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == r.status_code
        assert world.snapshot() == before, "a denied request changed the secret"
        if "victim" in ctx:
            assert world.app.keysafe.tokens.get(ctx["victim"]).revoked_at is None
    # Nothing a request against ORG does may touch another org.
    assert world.snapshot(OTHER) == other_before
    if expected == 404 and ep.org_scoped:
        _assert_existence_not_revealed(world, ep, world.tokens[(role, scope)], ctx, r)


def _assert_existence_not_revealed(w: World, ep: Endpoint, token: str,
                                   ctx: dict[str, Any], first: Any) -> None:
    """The same request for something that does not exist answers byte for byte the same
    (the request id is pinned so it matches too)."""
    ghost = dict(ctx)
    if ep.by_name:
        ghost["name"] = GHOST
    elif "{victim}" in ep.path:
        ghost["victim"] = "0123456789ab"
    else:
        ghost["org"] = GHOST_ORG
    rid = first.headers["x-request-id"]
    second = _request(w, ep, token, ghost, rid)
    a, b = first.text, second.text
    if "{victim}" in ep.path:
        a, b = a.replace(ctx["victim"], "ID"), b.replace(ghost["victim"], "ID")
    assert second.status_code == first.status_code
    assert a == b

    def comparable(h: Any) -> list[tuple[str, str]]:
        return sorted((k, v) for k, v in h.items() if k not in ("date",))

    if "{victim}" not in ep.path:
        assert comparable(first.headers) == comparable(second.headers)


# -- no credential, a bad credential, a revoked one: 401 everywhere --------------------

BAD_CREDENTIALS = {
    "none": None,
    "empty-bearer": "",
    "garbage": "not-a-token",
    "wrong-secret": "ks_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "jwt-when-disabled": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
}


@pytest.mark.parametrize("cred", list(BAD_CREDENTIALS))
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_unauthenticated_is_401_and_changes_nothing(world: World, endpoint: str,
                                                    cred: str) -> None:
    ep = ENDPOINTS[endpoint]
    ctx = world.ensure(ep.state, with_victim="{victim}" in ep.path)
    before = world.snapshot()
    tokens_before = len(world.app.keysafe.tokens.list())
    token = BAD_CREDENTIALS[cred]
    r = _request(world, ep, token, ctx, f"unauth-{next(_rid)}")
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"] == "Bearer"
    assert world.snapshot() == before
    # The denied request minted nothing (and revoked nothing).
    assert len(world.app.keysafe.tokens.list()) == tokens_before
    if "victim" in ctx:
        assert world.app.keysafe.tokens.get(ctx["victim"]).revoked_at is None


def test_wrong_scheme_and_tampered_token_are_401(world: World) -> None:
    good = world.tokens[("admin", "own")]
    tid, secret = good.split("_", 2)[1:]
    tampered = f"ks_{tid}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    for headers in ({"Authorization": f"Basic {good}"}, {"Authorization": good},
                    bearer(tampered), bearer(good + "x"), {"X-Api-Key": good}):
        r = world.client.get(f"/api/secrets/{ORG}/{OPENAI}", headers=headers)
        assert r.status_code == 401, headers


def test_revoked_token_is_401_everywhere(world: World) -> None:
    token = make_token(world.app, "soon-revoked", ["admin", "service"], None)
    ok = world.client.get(f"/api/secrets/{ORG}/{OPENAI}", headers=bearer(token))
    assert ok.status_code == 200
    tid = token.split("_")[1]
    world.app.keysafe.tokens.revoke(tid)
    ctx = world.ensure("present")
    for name, ep in ENDPOINTS.items():
        r = _request(world, ep, token, ctx, f"revoked-{next(_rid)}")
        assert r.status_code == 401, name
