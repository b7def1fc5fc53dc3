"""Workload identity (KEYSAFE_JWT_TRUST_FILE): CI and cluster tokens trusted by policy.

The issuer here is a stand-in: a loopback HTTP server publishing the two documents a
real OIDC issuer publishes (GitHub Actions' token.actions.githubusercontent.com, or a
Kubernetes API server's /.well-known/openid-configuration and /openid/v1/jwks). Neither
can run on this machine; the tokens are signed the way they sign theirs (RS256 and
ES256, a ``kid`` in the header) and carry their claims.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from keysafe.client import HttpTransport, TokenFile, env_token
from keysafe.errors import BackendUnavailable, ConfigError
from keysafe.manager.audit import AuditFilter
from keysafe.server.app import KeysafeApp
from keysafe.server.trust import load_trusts

from .serverkit import OPENAI, VALUE_1, bearer, build_app, real_server, settings_for

ORG = "acme-corp"
REPO_SUB = "repo:acme/app:ref:refs/heads/main"


class Issuer:
    """A stand-in OIDC issuer on 127.0.0.1: discovery document and JWKS, keys that can
    be rotated, an optional bearer token required to read them."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {"k1": rsa.generate_private_key(public_exponent=65537,
                                                                    key_size=2048)}
        self.require_bearer: str | None = None
        self.seen_auth: list[str | None] = []
        self.hits = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.hits += 1
                auth = self.headers.get("Authorization")
                issuer.seen_auth.append(auth)
                if issuer.require_bearer and auth != f"Bearer {issuer.require_bearer}":
                    self._send(401, {"message": "Unauthorized"})
                elif self.path == "/.well-known/openid-configuration":
                    self._send(200, {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks"})
                elif self.path == "/jwks":
                    self._send(200, issuer.jwks())
                else:
                    self._send(404, {})

            def _send(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            if isinstance(key, rsa.RSAPrivateKey):
                jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
                jwk["alg"] = "RS256"
            else:
                jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
                jwk["alg"] = "ES256"
            jwk.update({"kid": kid, "use": "sig"})
            out.append(jwk)
        return {"keys": out}

    def token(self, kid: str = "k1", *, lifetime: int = 300, headers: dict[str, Any] | None
              = None, **claims: Any) -> str:
        now = int(time.time())
        base: dict[str, Any] = {"iss": self.url, "aud": "keysafe", "sub": REPO_SUB,
                                "iat": now, "nbf": now, "exp": now + lifetime,
                                "repository": "acme/app", "ref": "refs/heads/main",
                                "ref_protected": True}
        base.update(claims)
        base = {k: v for k, v in base.items() if v is not None}
        key = self.keys[kid]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(base, key, algorithm=alg, headers={"kid": kid, **(headers or {})})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    iss = Issuer()
    try:
        yield iss
    finally:
        iss.close()


def trust_file(tmp_path: Path, *trusts: dict[str, Any], name: str = "trust.yaml") -> Path:
    import yaml

    p = tmp_path / name
    p.write_text(yaml.safe_dump({"trusts": list(trusts)}, sort_keys=False))
    return p


def github_trust(issuer: Issuer, **over: Any) -> dict[str, Any]:
    t: dict[str, Any] = {"name": "github-deploy", "issuer": issuer.url, "audience": "keysafe",
                         "claims": {"repository": "acme/app", "ref": "refs/heads/main"},
                         "roles": ["service"], "scopes": [ORG]}
    t.update(over)
    return t


def app_with(home: Path, path: Path, **env: Any) -> KeysafeApp:
    app = build_app(home, jwt_trust_file=str(path), **env)
    for name, value in [(OPENAI, VALUE_1), ("db_url", "postgresql://u:p@db/app")]:
        app.keysafe.manager.put(name, value, org=ORG)
    return app


def value_of(c: TestClient, token: str, name: str = OPENAI) -> httpx.Response:
    return c.get(f"/api/secrets/{ORG}/{name}/value", headers=bearer(token))


# -- GitHub Actions-style tokens, keys discovered from the issuer ---------------------


def test_a_ci_job_reads_with_its_own_token(home: Path, tmp_path: Path,
                                           issuer: Issuer) -> None:
    app = app_with(home, trust_file(tmp_path, github_trust(issuer)))
    with TestClient(app) as c:
        r = value_of(c, issuer.token())
        assert r.status_code == 200, r.text
        assert r.json()["value"] == VALUE_1
        who = c.get("/api/whoami", headers=bearer(issuer.token())).json()
        assert who["kind"] == "workload"
        assert who["name"] == f"github-deploy:{REPO_SUB}"
        assert who["roles"] == ["service"]
        events = app.keysafe.manager.audit_query(AuditFilter(action="read_value"))
        assert [e.actor for e in events] == [f"workload:github-deploy:{REPO_SUB}"]
    # Discovery, then the key set: fetched once and cached for the following requests.
    assert issuer.hits == 2


@dataclass(frozen=True)
class FromNow:
    """A time claim this many seconds from when the test runs."""

    seconds: int


@pytest.mark.parametrize(("why", "claims", "reason"), [
    ("another branch", {"ref": "refs/heads/dev"},
     "claim ref is 'refs/heads/dev', not refs/heads/main"),
    ("another repository", {"repository": "acme/fork"},
     "claim repository is 'acme/fork', not acme/app"),
    ("no ref claim", {"ref": None}, "claim ref is missing"),
    ("another audience", {"aud": "sts.amazonaws.com"}, "audience is not keysafe"),
    ("expired", {"exp": FromNow(-600)}, "the token has expired"),
    ("not yet valid", {"nbf": FromNow(600)}, "not yet valid"),
    ("no iat", {"iat": None}, '"iat"'),
    ("no exp", {"exp": None}, '"exp"'),
    ("lives two days", {"exp": FromNow(2 * 86_400)}, "longer than max_lifetime"),
])
def test_tokens_the_trust_does_not_cover_are_refused(home: Path, tmp_path: Path,
                                                     issuer: Issuer, why: str,
                                                     claims: dict[str, Any],
                                                     reason: str) -> None:
    app = app_with(home, trust_file(tmp_path, github_trust(issuer)))
    # Times from when the test runs, not from collection (a long suite outlived a
    # "not yet valid" nbf plus the verifier's leeway).
    claims = {k: int(time.time()) + v.seconds if isinstance(v, FromNow) else v
              for k, v in claims.items()}
    with TestClient(app) as c:
        r = value_of(c, issuer.token(**claims))
        assert r.status_code == 401, (why, r.text)
        assert VALUE_1 not in r.text
        denied = app.keysafe.manager.audit_query(AuditFilter(action="authenticate"))
        assert [e.outcome for e in denied] == ["denied"]
        said = denied[0].detail["workload"]
        assert said.startswith("github-deploy: ")
        assert reason in said


def test_forged_tokens_are_refused(home: Path, tmp_path: Path, issuer: Issuer) -> None:
    app = app_with(home, trust_file(tmp_path, github_trust(issuer)))
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": issuer.url, "aud": "keysafe", "sub": REPO_SUB, "iat": now,
              "exp": now + 300, "repository": "acme/app", "ref": "refs/heads/main"}
    forged = {  # why -> (token, what the audit record says of it)
        "signed by another key, same kid": (
            jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "k1"}),
            "github-deploy: Signature verification failed"),
        "unknown kid": (
            jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "k9"}),
            "github-deploy: the issuer's keys hold no key 'k9'"),
        "HS256 with a guessable secret": (
            jwt.encode(claims, "k1" * 16, algorithm="HS256", headers={"kid": "k1"}),
            "algorithm 'HS256' is not accepted"),
        "alg none": (jwt.encode(claims, None, algorithm="none"),
                     "algorithm 'none' is not accepted"),
        "another issuer": (  # not a trusted issuer: no workload reason at all
            jwt.encode({**claims, "iss": "https://evil.example"}, stranger,
                       algorithm="RS256", headers={"kid": "k1"}), None),
    }
    with TestClient(app) as c:
        for why, (tok, reason) in forged.items():
            r = value_of(c, tok)
            assert r.status_code == 401, (why, r.text)
            last = app.keysafe.manager.audit_query(
                AuditFilter(action="authenticate", newest_first=True, limit=1))[0]
            said = last.detail.get("workload") if last.detail else None
            if reason is None:
                assert said is None, why
            else:
                assert said is not None, why
                assert said.startswith(reason), (why, said)


def accepted_soon(c: TestClient, issuer: Issuer, kid: str) -> bool:
    """Whether a token signed with ``kid`` is accepted within a few seconds (the key set
    is fetched again in the background); bounded: 100 tries, 5 s."""
    deadline = time.monotonic() + 5
    for _ in range(100):
        if value_of(c, issuer.token(kid)).status_code == 200:
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return False


def test_the_first_trust_that_accepts_wins(home: Path, tmp_path: Path,
                                           issuer: Issuer) -> None:
    path = trust_file(tmp_path, github_trust(issuer),
                      github_trust(issuer, name="github-any-branch",
                                   claims={"repository": "acme/*"}, roles=["viewer"]))
    app = app_with(home, path)
    with TestClient(app) as c:
        main = c.get("/api/whoami", headers=bearer(issuer.token())).json()
        assert (main["name"], main["roles"]) == (f"github-deploy:{REPO_SUB}", ["service"])
        dev_token = issuer.token(ref="refs/heads/dev", sub="repo:acme/app:ref:refs/heads/dev")
        dev = c.get("/api/whoami", headers=bearer(dev_token)).json()
        assert dev["name"] == "github-any-branch:repo:acme/app:ref:refs/heads/dev"
        assert dev["roles"] == ["viewer"]
        # A viewer sees the secret's status but not its value.
        assert value_of(c, dev_token).status_code == 403
        assert c.get(f"/api/secrets/{ORG}/{OPENAI}", headers=bearer(dev_token)).status_code \
            == 200


def test_a_trust_may_be_for_one_environment(home: Path, tmp_path: Path,
                                            issuer: Issuer) -> None:
    path = trust_file(tmp_path, github_trust(issuer, env="production"))
    local = app_with(home, path)
    with TestClient(local) as c:
        assert value_of(c, issuer.token()).status_code == 401
    prod = app_with(home, path, env="production")
    with TestClient(prod) as c:
        assert value_of(c, issuer.token()).status_code == 200


def test_the_issuer_rotates_its_key(home: Path, tmp_path: Path, issuer: Issuer,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # PyJWT fetches a key set again for an unknown kid at most every 30 s (a flood of
    # made-up kids must not become a flood of fetches); not in this test.
    monkeypatch.setattr("keysafe.server.trust.REFRESH_COOLDOWN", 0.0)
    app = app_with(home, trust_file(tmp_path, github_trust(issuer)))
    with TestClient(app) as c:
        assert value_of(c, issuer.token()).status_code == 200
        issuer.keys["k2"] = ec.generate_private_key(ec.SECP256R1())
        # A token naming a key not held is refused while keysafe fetches the key set
        # again, in the background (ES256 here); then it is accepted.
        assert accepted_soon(c, issuer, "k2")
        assert value_of(c, issuer.token("k1")).status_code == 200
        # A key the issuer stops publishing stops working at the next fetch.
        del issuer.keys["k1"]
        issuer.keys["k3"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert accepted_soon(c, issuer, "k3")
        assert value_of(c, issuer.token("k2")).status_code == 200
        old = issuer.token("k3")
        issuer.keys = {"k1": issuer.keys["k3"]}  # k3 gone, under another kid
        assert accepted_soon(c, issuer, "k1")
        assert value_of(c, old).status_code == 401


# -- Kubernetes-style tokens: nested claims, a key file, name scopes ------------------


def k8s_token(issuer: Issuer, namespace: str = "payments", sa: str = "api") -> str:
    return issuer.token(aud=["keysafe"], sub=f"system:serviceaccount:{namespace}:{sa}",
                        repository=None, ref=None, ref_protected=None,
                        **{"kubernetes.io": {"namespace": namespace,
                                             "serviceaccount": {"name": sa, "uid": "u-1"}}})


def test_a_pod_reads_with_its_service_account_token(home: Path, tmp_path: Path,
                                                    issuer: Issuer) -> None:
    # The cluster's keys exported to a file (kubectl get --raw /openid/v1/jwks).
    (tmp_path / "cluster-jwks.json").write_text(json.dumps(issuer.jwks()))
    path = trust_file(tmp_path, {
        "name": "k8s-payments", "issuer": issuer.url, "audience": ["keysafe"],
        "jwks_file": "cluster-jwks.json", "subject": "system:serviceaccount:payments:*",
        "claims": {"kubernetes.io/namespace": "payments"}, "max_lifetime": "1h",
        "roles": ["service"], "scopes": [f"{ORG}/shared/db_*"]})
    app = app_with(home, path)
    before = issuer.hits
    with TestClient(app) as c:
        r = value_of(c, k8s_token(issuer), "db_url")
        assert r.status_code == 200, r.text
        # The scope names db_* only: the LLM key is refused, naming it.
        r = value_of(c, k8s_token(issuer))
        assert r.status_code == 403
        assert OPENAI in r.text
        assert value_of(c, k8s_token(issuer, namespace="other"), "db_url").status_code == 401
        assert value_of(c, issuer.token(lifetime=7200, **{
            "kubernetes.io": {"namespace": "payments"},
            "sub": "system:serviceaccount:payments:api"}), "db_url").status_code == 401
    assert issuer.hits == before  # nothing fetched: the keys came from the file


def test_keys_fetched_with_a_bearer_token_and_a_rotated_one(
        home: Path, tmp_path: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster's discovery endpoints may need a token: keysafe's own service account
    token, re-read from its file for every fetch (the kubelet rotates it)."""
    monkeypatch.setattr("keysafe.server.trust.REFRESH_COOLDOWN", 0.0)
    bearer_file = tmp_path / "sa-token"
    bearer_file.write_text("reviewer-token-1\n")
    issuer.require_bearer = "reviewer-token-1"
    path = trust_file(tmp_path, github_trust(issuer, jwks_token_file=str(bearer_file)))
    app = app_with(home, path)
    with TestClient(app) as c:
        assert value_of(c, issuer.token()).status_code == 200
        bearer_file.write_text("reviewer-token-2\n")
        issuer.require_bearer = "reviewer-token-2"
        issuer.keys["k2"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert accepted_soon(c, issuer, "k2")
    assert "Bearer reviewer-token-2" in issuer.seen_auth


# -- the trust file ------------------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    ({"audience": None}, "'audience' is required"),
    ({"roles": ["superuser"]}, "superuser"),
    ({"scopes": []}, "'scopes' must not be empty"),
    ({"scopes": ["acme/a/b/c"]}, "too many parts"),
    ({"colour": "blue"}, "unknown field 'colour'"),
    ({"jwks_url": "http://keys.example.com/jwks"}, "plain http to another machine"),
    ({"jwks_url": "https://a.example/jwks", "jwks_file": "k.json"}, "not both"),
    ({"claims": {"aud": "x"}}, "checked by its own field"),
    ({"claims": {"a//b": "x"}}, "not a name or a path"),
    ({"max_lifetime": "forever"}, "max_lifetime 'forever' is not a duration"),
    ({"name": "has space"}, "'name' is required"),
    ({"issuer": "http://issuer.example.com"}, "'issuer'"),
    ({"subject": None}, "bind 'subject' or at least one of 'claims'"),
    ({"subject": "*", "claims": {"repository": "*"}}, "bind 'subject'"),
    ({"jwks_file": "missing.json"}, "is not a readable file"),
    ({"jwks_token_file": "/nonexistent/token"}, "is not a readable file"),
])
def test_a_bad_trust_is_refused_naming_it(tmp_path: Path, change: dict[str, Any],
                                          message: str) -> None:
    t = {"name": "ci", "issuer": "https://token.actions.githubusercontent.com",
         "audience": "keysafe", "subject": "repo:acme/app:*", "roles": ["service"],
         "scopes": [ORG]}
    t.update(change)
    t = {k: v for k, v in t.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        load_trusts(trust_file(tmp_path, t))
    assert message in str(err.value)
    assert "trust" in str(err.value)


def test_trust_file_shape_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trusts: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_trusts(bad)
    bad.write_text("- name: x\n")
    with pytest.raises(ConfigError, match="one key, 'trusts'"):
        load_trusts(bad)
    t = {"name": "ci", "issuer": "https://i.example", "audience": "k", "subject": "x",
         "roles": ["service"], "scopes": [ORG]}
    with pytest.raises(ConfigError, match="used by an earlier trust"):
        load_trusts(trust_file(tmp_path, t, t))
    with pytest.raises(ConfigError, match="cannot read the trust file"):
        load_trusts(tmp_path / "missing.yaml")
    # A domain scope needs a template with {domain}.
    with pytest.raises(ConfigError, match="domain"):
        load_trusts(trust_file(tmp_path, {**t, "scopes": [f"{ORG}/llm"]}),
                    naming_fields=("app", "env", "org", "name"))


def test_a_bad_trust_file_stops_the_server_before_it_starts(home: Path,
                                                            tmp_path: Path) -> None:
    from keysafe.server.app import create_app

    path = trust_file(tmp_path, {"name": "ci", "issuer": "https://i.example"})
    with pytest.raises(ConfigError, match="'audience' is required"):
        create_app(settings_for(home, jwt_trust_file=str(path)))
    good = trust_file(tmp_path, {"name": "ci", "issuer": "https://i.example",
                                 "audience": "k", "subject": "x", "roles": ["service"],
                                 "scopes": [ORG]}, name="good.yaml")
    with pytest.raises(ConfigError, match="one way in"):
        create_app(settings_for(home, jwt_trust_file=str(good),
                                jwt_issuer="https://i.example",
                                jwt_hs256_secret="s" * 32))


# -- the CLI: keysafe trust ls | check -----------------------------------------------


def test_trust_ls_and_check(tmp_path: Path, issuer: Issuer, home: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from keysafe.cli.app import app as cli

    path = trust_file(tmp_path, github_trust(issuer),
                      github_trust(issuer, name="prod-only", env="production"))
    monkeypatch.setenv("KEYSAFE_JWT_TRUST_FILE", str(path))
    runner = CliRunner()
    r = runner.invoke(cli, ["trust", "ls", "--json"])
    assert r.exit_code == 0, r.output
    listed = json.loads(r.stdout)
    assert listed["env"] == "local"
    assert [t["name"] for t in listed["trusts"]] == ["github-deploy", "prod-only"]
    assert listed["trusts"][0]["claims"] == {"repository": ["acme/app"],
                                             "ref": ["refs/heads/main"]}

    good = issuer.token()
    r = runner.invoke(cli, ["trust", "check", "--json"], input=good)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["accepted"] is True
    assert out["trust"] == "github-deploy"
    assert out["identity"]["name"] == f"github-deploy:{REPO_SUB}"
    assert good not in r.output

    tok_file = tmp_path / "tok"
    tok_file.write_text(issuer.token(ref="refs/heads/dev"))
    r = runner.invoke(cli, ["trust", "check", str(tok_file), "--json", "--env", "production"])
    assert r.exit_code == 4, r.output
    out = json.loads(r.stdout)
    assert out["accepted"] is False
    reasons = {x["trust"]: x["reason"] for x in out["refused_by"]}
    assert "claim ref is 'refs/heads/dev', not refs/heads/main" in reasons["github-deploy"]
    assert "claim ref" in reasons["prod-only"]

    r = runner.invoke(cli, ["trust", "check"], input="not-a-token")
    assert r.exit_code == 4
    assert "not a JWT" in r.output
    r = runner.invoke(cli, ["trust", "check", str(tmp_path / "none")])
    assert r.exit_code == 2
    assert "cannot read" in r.output
    monkeypatch.delenv("KEYSAFE_JWT_TRUST_FILE")
    r = runner.invoke(cli, ["trust", "ls"])
    assert r.exit_code == 8
    assert "KEYSAFE_JWT_TRUST_FILE" in r.output


# -- clients: KEYSAFE_TOKEN_FILE -----------------------------------------------------


def test_token_file_is_read_again_when_it_changes(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "token"
    f.write_text("first\n")
    tf = TokenFile(f)
    assert tf.value() == "first"
    assert "first" not in repr(tf)
    f.write_text("second-and-longer\n")
    assert tf.value() == "second-and-longer"
    f.unlink()  # between the kubelet's writes: the last token read stands
    assert tf.value() == "second-and-longer"
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        TokenFile(tmp_path / "empty")
    with pytest.raises(ConfigError, match="cannot read the token file"):
        TokenFile(tmp_path / "absent")
    monkeypatch.delenv("KEYSAFE_TOKEN", raising=False)
    monkeypatch.setenv("KEYSAFE_TOKEN_FILE", str(tmp_path / "empty"))
    with pytest.raises(ConfigError):
        env_token()
    f.write_text("third")
    monkeypatch.setenv("KEYSAFE_TOKEN_FILE", str(f))
    got = env_token()
    assert isinstance(got, TokenFile)
    assert got.value() == "third"
    monkeypatch.setenv("KEYSAFE_TOKEN", "ks_direct")
    assert env_token() == "ks_direct"  # the variable itself wins


def test_transport_sends_the_token_the_file_holds_now(tmp_path: Path,
                                                     issuer: Issuer) -> None:
    f = tmp_path / "token"
    f.write_text("one")
    http = HttpTransport(issuer.url, TokenFile(f))  # any loopback server that answers
    try:
        http.request("GET", "/jwks")
        f.write_text("two")
        http.request("GET", "/jwks")
    finally:
        http.close()
    assert issuer.seen_auth == ["Bearer one", "Bearer two"]


def test_cli_through_a_server_with_a_workload_token_file(tmp_path: Path,
                                                         issuer: Issuer) -> None:
    """End to end: `keysafe serve` with a trust file, and `keysafe get` in a "pod" that
    has only KEYSAFE_SERVER_URL and KEYSAFE_TOKEN_FILE (its projected token)."""
    import os
    import sys

    path = trust_file(tmp_path, github_trust(issuer, roles=["service", "writer"]))
    keysafe = str(Path(sys.executable).parent / "keysafe")
    with real_server(tmp_path / "srv", KEYSAFE_JWT_TRUST_FILE=str(path)) as srv:
        assert "workload identity: 1 trust(s)" in srv.output()
        tok = tmp_path / "projected-token"
        tok.write_text(issuer.token())
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("KEYSAFE_") and k != "ENVIRONMENT"}
        env.update({"KEYSAFE_HOME": str(tmp_path / "pod"), "KEYSAFE_SERVER_URL": srv.url,
                    "KEYSAFE_TOKEN_FILE": str(tok)})
        put = subprocess.run([keysafe, "put", OPENAI, "--org", ORG], input=VALUE_1.encode(),
                             env=env, capture_output=True, timeout=60)
        assert put.returncode == 0, put.stderr.decode()
        got = subprocess.run([keysafe, "get", OPENAI, "--org", ORG], env=env,
                             capture_output=True, timeout=60)
        assert got.returncode == 0, got.stderr.decode()
        assert got.stdout.decode().strip() == VALUE_1
        tok.write_text(issuer.token(ref="refs/heads/dev"))
        denied = subprocess.run([keysafe, "get", OPENAI, "--org", ORG], env=env,
                                capture_output=True, timeout=60)
        assert denied.returncode == 4, denied.stderr.decode()
        assert VALUE_1 not in denied.stdout.decode() + denied.stderr.decode()


# -- hardening (security review) -----------------------------------------------------


def test_odd_tokens_are_refused_not_errors(home: Path, tmp_path: Path,
                                           issuer: Issuer) -> None:
    app = app_with(home, trust_file(tmp_path, github_trust(issuer)))
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    with TestClient(app) as c:
        for why, claims, headers in [
            ("iss a list", {"iss": [issuer.url]}, {"kid": "k1"}),
            ("iss an object", {"iss": {"u": issuer.url}}, {"kid": "k1"}),
            ("kid forging a log line", {"iss": issuer.url}, {"kid": "k9\nINFO:forged"}),
        ]:
            # Signed as raw JWS: PyJWT's own encoder refuses a non-string iss.
            payload = json.dumps({"aud": "keysafe", "sub": REPO_SUB, "iat": now,
                                  "exp": now + 60, **claims}).encode()
            tok = jwt.PyJWS().encode(payload, stranger, algorithm="RS256", headers=headers)
            r = value_of(c, tok)
            assert r.status_code == 401, (why, r.text)
        denied = app.keysafe.manager.audit_query(AuditFilter(action="authenticate"))
        reasons = [e.detail.get("workload", "") for e in denied]
        assert any("keys hold no key 'k9\\nINFO:forged'" in x for x in reasons)
        assert not any("\n" in x for x in reasons)  # a kid cannot forge a log line


def test_a_key_file_change_is_followed(home: Path, tmp_path: Path, issuer: Issuer,
                                      caplog: pytest.LogCaptureFixture) -> None:
    keyfile = tmp_path / "cluster-jwks.json"
    keyfile.write_text(json.dumps(issuer.jwks()))
    path = trust_file(tmp_path, github_trust(issuer, jwks_file=str(keyfile)))
    app = app_with(home, path)
    with TestClient(app) as c:
        assert value_of(c, issuer.token()).status_code == 200
        keyfile.write_text("{not json")  # half-written: the keys read before stay
        for i in range(3):  # ... and it is said once, not on every request
            assert value_of(c, issuer.token(jti=str(i))).status_code == 200
        said = [r for r in caplog.records if "cannot read the key file" in r.getMessage()]
        assert len(said) == 1
        old = issuer.token("k1")
        issuer.keys = {"k2": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        keyfile.write_text(json.dumps(issuer.jwks()))
        assert value_of(c, issuer.token("k2")).status_code == 200
        # k1 is gone from the new file: its tokens stop working.
        assert value_of(c, old).status_code == 401


def test_the_last_good_keys_outlive_an_issuer_outage(home: Path, tmp_path: Path,
                                                     issuer: Issuer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("keysafe.server.trust.KEY_LIFESPAN", 0.0)  # always due a refresh
    monkeypatch.setattr("keysafe.server.trust.REFRESH_COOLDOWN", 0.0)
    app = app_with(home, trust_file(tmp_path, github_trust(issuer)))
    issuer.close()  # the issuer is gone; the refresh in the background fails
    keys = app.keysafe.jwt.trusts._keys["github-deploy"]
    with TestClient(app) as c:
        # Fresh tokens each time (a remembered one would skip the keys altogether).
        assert value_of(c, issuer.token(jti="1")).status_code == 200
        deadline = time.monotonic() + 10
        while keys.error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert keys.error is not None  # the background fetch failed ...
        for i in range(2, 5):  # ... and the last good keys still verify
            assert value_of(c, issuer.token(jti=str(i))).status_code == 200


def test_discovery_must_name_the_issuer_and_keeps_the_bearer_home(
        home: Path, tmp_path: Path, issuer: Issuer) -> None:
    other = Issuer()  # another origin, serving keys
    try:
        other.keys = issuer.keys
        bearer_file = tmp_path / "sa-token"
        bearer_file.write_text("keysafe-own-token")
        # The issuer's discovery points at keys on another origin: they are fetched,
        # but keysafe's own bearer token is not sent there.
        real_jwks = issuer.jwks
        issuer.jwks = lambda: {"keys": []}  # type: ignore[method-assign]
        orig_url = issuer.url
        path = trust_file(tmp_path, github_trust(issuer, jwks_token_file=str(bearer_file)))
        import keysafe.server.trust as trust_mod

        verifier = trust_mod.TrustVerifier(trust_mod.load_trusts(path), "local")
        keys = verifier._keys["github-deploy"]
        keys._jwks_uri = None
        # A discovery document naming another issuer is refused.
        doc = {"issuer": "https://evil.example", "jwks_uri": other.url + "/jwks"}
        keys._get = lambda url, _doc=doc, _g=keys._get: (  # type: ignore[method-assign]
            _doc if url.endswith("openid-configuration") else _g(url))
        with pytest.raises(BackendUnavailable, match="names issuer"):
            keys.refresh()
        doc["issuer"] = orig_url
        keys.refresh()
        assert keys.key_for("k1") is not None
        assert other.seen_auth == [None]  # fetched without keysafe's token
        issuer.jwks = real_jwks  # type: ignore[method-assign]
    finally:
        other.close()


def test_a_workload_cannot_mint_a_token_that_outlives_it(home: Path, tmp_path: Path,
                                                        issuer: Issuer) -> None:
    path = trust_file(tmp_path, github_trust(issuer, roles=["admin"], scopes=["*"]))
    app = app_with(home, path)
    tok = issuer.token(lifetime=300)
    with TestClient(app) as c:
        r = c.post("/api/tokens", headers=bearer(tok),
                   json={"name": "forever", "roles": ["service"], "orgs": ["*"]})
        assert r.status_code == 201, r.text
        exp = jwt.decode(tok, options={"verify_signature": False})["exp"]
        made = r.json()["expires_at"]
        assert made is not None
        from datetime import datetime

        assert datetime.fromisoformat(made).timestamp() <= exp + 1


def test_patterns_are_literal_but_for_star(tmp_path: Path, issuer: Issuer) -> None:
    from keysafe.server.trust import TrustVerifier

    path = trust_file(tmp_path, github_trust(
        issuer, subject="repo:acme/[a]pp:?ef:*", claims={"repository_id": 123456}))
    v = TrustVerifier(load_trusts(path), "local")
    v.start()
    literal = "repo:acme/[a]pp:?ef:refs/heads/main"
    assert v.check(issuer.token(sub=literal, repository_id=123456)).identity is not None
    assert v.check(issuer.token(sub=REPO_SUB, repository_id=123456)).identity is None
    refused = v.check(issuer.token(sub=literal, repository_id=99))
    assert refused.identity is None
    assert "claim repository_id is '99', not 123456" in refused.summary()
    missing = v.check(issuer.token(sub=literal))
    assert "claim repository_id is missing" in missing.summary()


def test_accepted_tokens_are_remembered_until_they_expire(
        tmp_path: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:
    from keysafe.server.trust import LEEWAY, TrustVerifier

    (tmp_path / "jwks.json").write_text(json.dumps(issuer.jwks()))
    v = TrustVerifier(load_trusts(trust_file(tmp_path, github_trust(
        issuer, jwks_file="jwks.json"))), "local")
    tok = issuer.token(lifetime=300)
    assert v.remembered(tok) is None
    ident, why = v.verify(tok)
    assert ident is not None, why
    assert v.remembered(tok) == ident  # the next request skips the signature check
    later = time.time() + 300 + LEEWAY + 5
    monkeypatch.setattr("keysafe.server.auth.time.time", lambda: later)
    assert v.remembered(tok) is None  # past its expiry it is checked afresh (and
    assert not v._cache                # PyJWT, on its own clock, refuses it then)


def test_a_refresh_with_the_same_keys_keeps_remembered_tokens(tmp_path: Path,
                                                              issuer: Issuer) -> None:
    from keysafe.server.trust import TrustVerifier

    v = TrustVerifier(load_trusts(trust_file(tmp_path, github_trust(issuer))), "local")
    v.start()
    tok = issuer.token()
    assert v.verify(tok)[0] is not None
    keys = v._keys["github-deploy"]
    keys.refresh()  # the issuer publishes the same keys: nothing to check again
    assert v.remembered(tok) is not None
    issuer.keys["k2"] = ec.generate_private_key(ec.SECP256R1())
    keys.refresh()  # a different key set: tokens are verified again on their next use
    assert v.remembered(tok) is None
    assert v.verify(tok)[0] is not None  # k1 is still published


def test_mapped_claims_go_into_every_audit_record(home: Path, tmp_path: Path,
                                                  issuer: Issuer) -> None:
    """Which CI run (or pod) read the value: the trust's audit_claims are recorded with
    each of the request's audit records."""
    path = trust_file(tmp_path, github_trust(
        issuer, audit_claims=["run_id", "workflow_ref", "kubernetes.io/pod/name"]))
    app = app_with(home, path)
    with TestClient(app) as c:
        tok = issuer.token(run_id="9876543210", workflow_ref="acme/app/.github/workflows/"
                           "deploy.yml@refs/heads/main")
        assert value_of(c, tok).status_code == 200
        assert value_of(c, tok, "no_such_secret").status_code == 404
        events = app.keysafe.manager.audit_query(AuditFilter(action="read_value"))
    assert [e.outcome for e in events] == ["ok", "not_found"]
    for e in events:
        assert e.detail["claims"] == {
            "run_id": "9876543210",
            "workflow_ref": "acme/app/.github/workflows/deploy.yml@refs/heads/main"}
    with pytest.raises(ConfigError, match="at most 10"):
        load_trusts(trust_file(tmp_path, github_trust(
            issuer, audit_claims=[f"c{i}" for i in range(11)]), name="many.yaml"))


def test_a_changed_trust_file_is_taken_without_a_restart(
        home: Path, tmp_path: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("keysafe.server.trust.RELOAD_CHECK", 0.0)
    path = trust_file(tmp_path, github_trust(issuer))
    app = app_with(home, path)
    main_tok = issuer.token()
    dev_tok = issuer.token(ref="refs/heads/dev", sub="repo:acme/app:ref:refs/heads/dev")
    with TestClient(app) as c:
        assert value_of(c, main_tok).status_code == 200
        assert c.get("/api/whoami", headers=bearer(dev_tok)).status_code == 401
        # A second trust, for every branch, as viewer.
        trust_file(tmp_path, github_trust(issuer), github_trust(
            issuer, name="any-branch", claims={"repository": "acme/app"}, roles=["viewer"]))
        who = c.get("/api/whoami", headers=bearer(dev_tok))
        assert who.status_code == 200, who.text
        assert who.json()["name"].startswith("any-branch:")
        # A broken file is refused; the trusts in force stay.
        path.write_text("trusts: [\n")
        assert c.get("/api/whoami", headers=bearer(dev_tok)).status_code == 200
        assert "the changed trust file is refused" in caplog.text
        path.write_bytes(b"\xff\xfe not text")  # not even UTF-8: refused, never a 500
        assert c.get("/api/whoami", headers=bearer(dev_tok)).status_code == 200
        assert "is not UTF-8 text" in caplog.text
        # The main-branch trust removed: its remembered token stops working at once.
        trust_file(tmp_path, github_trust(
            issuer, name="any-branch", claims={"repository": "acme/app"}, roles=["viewer"]))
        assert value_of(c, main_tok).status_code == 403  # now only a viewer
    assert app.keysafe.jwt._trust_file is not None
    assert app.keysafe.jwt._trust_file.reloads == 2


def test_host_jwks_keys_are_kept_and_withdrawn_like_a_trusts(
        home: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:
    """KEYSAFE_JWT_JWKS_URL (a host platform's login) goes through the same key keeping:
    fetched when the server starts, refreshed in the background, and a key the host
    withdraws stops working once the set is fetched again, remembered tokens included."""
    monkeypatch.setattr("keysafe.server.trust.KEY_LIFESPAN", 0.0)
    monkeypatch.setattr("keysafe.server.trust.REFRESH_COOLDOWN", 0.0)
    app = build_app(home, jwt_jwks_url=issuer.url + "/jwks")
    app.keysafe.manager.put(OPENAI, VALUE_1, org=ORG)
    assert issuer.hits == 1  # fetched at start
    host = {"iss": None, "aud": None, "repository": None, "ref": None,
            "ref_protected": None, "org": ORG, "role": "service", "sub": "user-7"}
    tok = issuer.token(**host)
    with TestClient(app) as c:
        assert value_of(c, tok).status_code == 200
        issuer.keys = {"k2": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        deadline = time.monotonic() + 5
        while value_of(c, tok).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)  # the background fetch brings the new set
        assert value_of(c, tok).status_code == 401
        assert value_of(c, issuer.token("k2", **host)).status_code == 200
