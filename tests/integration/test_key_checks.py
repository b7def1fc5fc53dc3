"""Live key checks (keysafe.keycheck, ``SecretManager.check_key``, ``put --check-key``,
``keysafe check-key``, the API's ``check_key`` and ``/check``) against
``standins.providers`` on 127.0.0.1.

STAND-IN: the providers cannot be reached from here; the stand-in answers as their API
references document for good and bad keys (see its docstring). keysafe's built-in
check definitions (auth scheme, headers, verdict rules) are used as they are, with only
the host moved to the stand-in; team catalog files are parsed from real files.

Every key written here holds a canary, searched for afterwards in verdicts, errors,
audit records, API answers and the store's files.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from standins.providers import ProviderStandin

from keysafe import KeyRejected, SecretManager
from keysafe.catalog import Catalog
from keysafe.config import load_settings
from keysafe.errors import ConfigError, InvalidValue
from keysafe.keycheck import BUILTIN_CHECKS, LiveCheck, run
from keysafe.manager.audit import AuditFilter
from keysafe.server.app import create_app

CANARY = "CANARY" + secrets.token_hex(6)
GOOD_OPENAI = f"sk-good{CANARY}aaaaaaaaaaaaaaaa"
BAD_OPENAI = f"sk-bad{CANARY}bbbbbbbbbbbbbbbbbb"
GOOD_ANTHROPIC = f"sk-ant-good{CANARY}cccccccccccccc"
GOOD_GOOGLE = "AIza" + "g" * 35
BAD_GOOGLE = "AIza" + "h" * 35
GOOD_SLACK = f"xoxb-111-222-good{CANARY}"
BAD_SLACK = f"xoxb-111-222-bad{CANARY}"
GOOD_COHERE = f"cohere-good-{CANARY}"
GOOD_DEEPGRAM = f"deepgram-good-{CANARY}"
ORG = "acme"
PATHS = {
    "openai_api_key": "/v1/models",
    "anthropic_api_key": "/anthropic/v1/models",
    "google_api_key": "/v1beta/models",
    "slack_bot_token": "/api/auth.test",
    "cohere_api_key": "/v1/check-api-key",
    "deepgram_api_key": "/v1/auth/token",
}
KEYSAFE = str(Path(sys.executable).parent / "keysafe")


@pytest.fixture(scope="module")
def provider() -> Iterator[ProviderStandin]:
    srv = ProviderStandin({GOOD_OPENAI, GOOD_ANTHROPIC, GOOD_GOOGLE, GOOD_SLACK,
                           GOOD_COHERE, GOOD_DEEPGRAM}).start()
    try:
        yield srv
    finally:
        srv.stop()


def moved(url: str) -> Catalog:
    """The built-in catalog with each stand-in provider's check moved to ``url``: the
    built-in auth scheme, headers and verdict rules, on loopback."""
    builtin = Catalog.builtin()
    entries = []
    for e in builtin:
        if e.name in PATHS:
            assert e.check is not None
            assert e.check == BUILTIN_CHECKS[e.name]
            e = replace(e, check=replace(e.check, url=url + PATHS[e.name]))
        entries.append(e)
    return Catalog(entries)


@pytest.fixture
def home(tmp_home: Path) -> Path:
    """tests/conftest.py's clean KEYSAFE_HOME (no other KEYSAFE_* variable)."""
    return tmp_home


def team_file(home: Path, url: str) -> Path:
    """A team catalog file routing the checks of four providers through ``url``, as a
    team sends them through its own gateway."""
    f = home.parent / "catalog.toml"
    f.write_text(f'''
[[secret]]
name = "openai_api_key"
check = "{url}/v1/models"

[[secret]]
name = "anthropic_api_key"
check = {{ url = "{url}/anthropic/v1/models", auth = "header:x-api-key", \
headers = {{ anthropic-version = "2023-06-01" }} }}

[[secret]]
name = "slack_bot_token"
check = {{ url = "{url}/api/auth.test", method = "POST", ok_field = "ok" }}

[[secret]]
name = "google_api_key"
check = {{ url = "{url}/v1beta/models", auth = "header:x-goog-api-key", reject = [400, 401] }}

[[secret]]
name = "github_token"
check = false
''')
    return f


@pytest.fixture
def mgr(home: Path, provider: ProviderStandin) -> Iterator[SecretManager]:
    m = SecretManager.from_settings(load_settings(actor="tester", key_check_timeout=3.0))
    m._catalog = moved(provider.url)
    try:
        yield m
    finally:
        m.close()


def audit_text(m: SecretManager) -> str:
    m.audit.flush()
    return json.dumps([e.to_dict() for e in m.audit_query(AuditFilter())], default=str)


def store_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.iterdir() if p.name.startswith("keysafe.db"))


# -- the built-in checks, each provider's way -----------------------------------------

@pytest.mark.parametrize(("name", "good", "bad"), [
    ("openai_api_key", GOOD_OPENAI, BAD_OPENAI),
    ("anthropic_api_key", GOOD_ANTHROPIC, f"sk-ant-bad{CANARY}dddddddddddd"),
    ("google_api_key", GOOD_GOOGLE, BAD_GOOGLE),            # 400 API_KEY_INVALID
    ("slack_bot_token", GOOD_SLACK, BAD_SLACK),              # 200 {"ok": false}
    ("cohere_api_key", GOOD_COHERE, f"cohere-bad-{CANARY}"),
    ("deepgram_api_key", GOOD_DEEPGRAM, f"deepgram-bad-{CANARY}"),  # Authorization: Token
])
def test_each_provider_accepts_good_and_refuses_bad(mgr: SecretManager,
                                                    provider: ProviderStandin,
                                                    name: str, good: str, bad: str) -> None:
    ok = mgr.check_key(name, good, ORG)
    assert (ok.outcome, ok.status) == ("valid", 200), ok
    assert provider.seen[-1][1] == good  # the key arrived where that provider reads it
    no = mgr.check_key(name, bad, ORG)
    assert no.outcome == "rejected", no
    assert no.provider == mgr.catalog.get(name).provider  # type: ignore[union-attr]
    assert "127.0.0.1 refused this key" in no.detail
    assert CANARY not in ok.detail + no.detail


def test_check_before_save_refuses_a_rejected_key_and_saves_nothing(
        mgr: SecretManager, home: Path) -> None:
    with pytest.raises(KeyRejected, match=r"refused this key \(HTTP 401\); nothing was saved"):
        mgr.check_key("openai_api_key", BAD_OPENAI, ORG, refuse=True)
    assert not mgr.has("openai_api_key", ORG)
    records = [e for e in mgr.audit_query(AuditFilter()) if e.action in ("check_key",
                                                                          "write")]
    assert [(e.action, e.outcome) for e in records] == [("check_key", "rejected"),
                                                        ("write", "key_rejected")]
    assert CANARY not in audit_text(mgr)


def test_a_valid_key_is_saved_and_the_stored_value_can_be_checked_again(
        mgr: SecretManager, provider: ProviderStandin, home: Path) -> None:
    assert mgr.check_key("openai_api_key", GOOD_OPENAI, ORG, refuse=True).outcome == "valid"
    mgr.put("openai_api_key", GOOD_OPENAI, ORG)
    again = mgr.check_key("openai_api_key", None, ORG)  # the stored value
    assert again.outcome == "valid"
    assert provider.seen[-1][1] == GOOD_OPENAI
    rec = [e for e in mgr.audit_query(AuditFilter(action="check_key"))][-1]
    assert (rec.outcome, rec.version, rec.path) == ("valid", 1, mgr.path("openai_api_key",
                                                                          ORG))
    assert CANARY not in audit_text(mgr)
    assert CANARY.encode() not in store_bytes(home)  # the database and its WAL


def test_a_wrong_slot_key_is_refused_by_format_before_any_request(
        mgr: SecretManager, provider: ProviderStandin) -> None:
    before = len(provider.seen)
    with pytest.raises(InvalidValue, match="does not look like an OpenAI API Key"):
        mgr.check_key("openai_api_key", GOOD_ANTHROPIC, ORG, refuse=True)
    assert len(provider.seen) == before  # the Anthropic key never went to OpenAI


def test_unreachable_provider_gives_no_verdict(mgr: SecretManager) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = mgr.catalog.get("openai_api_key")
    assert entry is not None
    assert entry.check is not None
    dead = replace(entry.check, url=f"http://127.0.0.1:{port}/v1/models")
    r = run(dead, GOOD_OPENAI, provider="openai", display="OpenAI API Key", timeout=2)
    assert r.outcome == "unknown"
    assert "could not reach 127.0.0.1" in r.detail
    assert CANARY not in r.detail


def test_a_provider_that_never_answers_times_out() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        check = LiveCheck(url=f"http://127.0.0.1:{srv.getsockname()[1]}/v1/models")
        r = run(check, GOOD_OPENAI, provider="openai", display="OpenAI API Key",
                timeout=0.5)
        assert r.outcome == "unknown"
        assert "could not reach" in r.detail
    finally:
        srv.close()


def test_redirects_are_not_followed(provider: ProviderStandin) -> None:
    from standins import Fault

    provider.inject(Fault(302, {}, match="GET /v1/models",
                          headers={"Location": provider.url + "/elsewhere"}))
    before = len(provider.requests)
    r = run(LiveCheck(url=provider.url + "/v1/models"), GOOD_OPENAI, provider="openai",
            display="OpenAI API Key")
    assert r.outcome == "unknown"
    assert "redirect" in r.detail
    assert provider.requests[before:] == [("GET", "/v1/models")]  # nothing followed


@pytest.mark.parametrize(("status", "hint"), [(403, "lack the permission"),
                                              (429, "throttled"), (503, "HTTP 503")])
def test_other_statuses_give_no_verdict(provider: ProviderStandin, status: int,
                                        hint: str) -> None:
    from standins import Fault

    provider.inject(Fault(status, match="GET /v1/models"))
    r = run(LiveCheck(url=provider.url + "/v1/models"), GOOD_OPENAI, provider="openai",
            display="OpenAI API Key")
    assert (r.outcome, r.status) == ("unknown", status)
    assert hint in r.detail


def test_a_value_no_header_can_carry_is_rejected_without_a_request(
        provider: ProviderStandin) -> None:
    before = len(provider.requests)
    r = run(LiveCheck(url=provider.url + "/v1/models"), f"sk-{CANARY}\r\nX-Evil: 1",
            provider="openai", display="OpenAI API Key")
    assert r.outcome == "rejected"
    assert CANARY not in r.detail
    assert len(provider.requests) == before


def test_unsupported_and_off(home: Path, mgr: SecretManager) -> None:
    r = mgr.check_key("database_url", "postgresql://u:p@h/db", ORG)
    assert r.outcome == "unsupported"
    assert "no live check" in r.detail
    off = SecretManager.from_settings(load_settings(key_checks=False))
    try:
        assert off.check_key("openai_api_key", GOOD_OPENAI, ORG).outcome == "off"
    finally:
        off.close()


def test_builtin_checks_go_to_the_providers_over_https() -> None:
    hosts = {n: c.host for n, c in BUILTIN_CHECKS.items()}
    assert all(c.url.startswith("https://") for c in BUILTIN_CHECKS.values())
    assert hosts["openai_api_key"] == "api.openai.com"
    assert hosts["anthropic_api_key"] == "api.anthropic.com"
    assert hosts["github_token"] == "api.github.com"
    entry = Catalog.builtin().get("OPENAI_API_KEY")
    assert entry is not None
    assert entry.to_dict()["live_check"] == {
        "host": "api.openai.com", "method": "GET"}
    assert Catalog.builtin().get("database_url").to_dict()["live_check"] is None  # type: ignore[union-attr]


# -- team catalog files -----------------------------------------------------------------

def test_team_file_routes_checks_and_turns_one_off(home: Path,
                                                   provider: ProviderStandin) -> None:
    cat = Catalog.load(team_file(home, provider.url))
    gh = cat.get("github_token")
    assert gh is not None
    assert gh.check is None
    for name, good, bad in [("openai_api_key", GOOD_OPENAI, BAD_OPENAI),
                            ("slack_bot_token", GOOD_SLACK, BAD_SLACK),
                            ("google_api_key", GOOD_GOOGLE, BAD_GOOGLE)]:
        e = cat.get(name)
        assert e is not None
        assert e.check is not None
        assert run(e.check, good, provider=e.provider, display=e.display_name
                   ).outcome == "valid"
        assert run(e.check, bad, provider=e.provider, display=e.display_name
                   ).outcome == "rejected"


@pytest.mark.parametrize(("check", "problem"), [
    ('"http://example.com/v1/models"', "must be https://"),
    ('"https://user:pw@example.com/x"', "must not carry credentials"),
    ('"ftp://example.com/x"', "must be https://"),
    ('{ url = "https://x.test/a", auth = "basic" }', "must be bearer, token or header:NAME"),
    ('{ url = "https://x.test/a", method = "DELETE" }', "must be GET or POST"),
    ('{ url = "https://x.test/a", reject = [500] }', "must be a list of 4xx statuses"),
    ('{ url = "https://x.test/a", verb = "GET" }', "unknown key 'verb'"),
    ('{ url = "https://x.test/a", headers = { "bad header" = "x" } }', "check.headers"),
    ("42", "expected a table with a url"),
])
def test_team_file_bad_checks_are_named(tmp_path: Path, check: str, problem: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(f'[[secret]]\nname = "openai_api_key"\ncheck = {check}\n')
    with pytest.raises(ConfigError, match="openai_api_key") as err:
        Catalog.load(f)
    assert problem in str(err.value)


# -- the CLI ----------------------------------------------------------------------------

def ks(home: Path, *args: str, input: str = "", catalog: Path | None = None
       ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSAFE_")}
    env.update(KEYSAFE_HOME=str(home), KEYSAFE_ACTOR="tester")
    if catalog is not None:
        env["KEYSAFE_CATALOG_FILE"] = str(catalog)
    return subprocess.run([KEYSAFE, *args], input=input, capture_output=True, text=True,
                          env=env, timeout=60)


def test_cli_put_check_key_and_check_key_command(home: Path,
                                                 provider: ProviderStandin) -> None:
    cat = team_file(home, provider.url)
    bad = ks(home, "put", "openai_api_key", "--org", ORG, "--check-key", input=BAD_OPENAI,
             catalog=cat)
    assert bad.returncode == 2, bad.stderr
    assert "refused this key (HTTP 401); nothing was saved" in bad.stderr
    assert ks(home, "status", "openai_api_key", "--org", ORG, "--json",
              catalog=cat).returncode == 3  # not stored
    good = ks(home, "put", "openai_api_key", "--org", ORG, "--check-key", "--json",
              input=GOOD_OPENAI, catalog=cat)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["key_check"]["outcome"] == "valid"
    assert ks(home, "put", "slack_bot_token", "--org", ORG, input=BAD_SLACK,
              catalog=cat).returncode == 0  # no --check-key: stored as before

    one = ks(home, "check-key", "openai_api_key", "--org", ORG, "--json", catalog=cat)
    assert one.returncode == 0, one.stderr
    assert [r["outcome"] for r in json.loads(one.stdout)] == ["valid"]
    every = ks(home, "check-key", "--all", "--org", ORG, catalog=cat)
    assert every.returncode == 2  # the stored Slack token is refused
    assert "valid" in every.stdout
    assert "rejected" in every.stdout
    for p in (bad, good, one, every):
        assert CANARY not in p.stdout + p.stderr
    usage = ks(home, "check-key", "--all", catalog=cat)
    assert usage.returncode == 2
    assert "--all needs --org" in usage.stderr


def test_cli_check_key_without_a_reachable_provider_exits_7(home: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cat = team_file(home, f"http://127.0.0.1:{port}")
    put = ks(home, "put", "openai_api_key", "--org", ORG, "--check-key", input=GOOD_OPENAI,
             catalog=cat)
    assert put.returncode == 0, put.stderr  # saved, with a warning
    assert "could not reach 127.0.0.1" in put.stderr
    check = ks(home, "check-key", "openai_api_key", "--org", ORG, catalog=cat)
    assert check.returncode == 7
    assert "unknown" in check.stdout


# -- the API ----------------------------------------------------------------------------

def test_api_check_key_on_write_and_the_check_endpoint(home: Path,
                                                       provider: ProviderStandin) -> None:
    app = create_app(load_settings({"KEYSAFE_HOME": str(home),
                                    "KEYSAFE_CATALOG_FILE": str(team_file(home,
                                                                          provider.url))}))
    admin, _ = app.keysafe.tokens.create(name="admin", roles=["admin"], orgs=[ORG],
                                         created_by="test")
    svc, _ = app.keysafe.tokens.create(name="svc", roles=["service"], orgs=[ORG],
                                       created_by="test")
    h = {"Authorization": f"Bearer {admin}"}
    url = f"/api/secrets/{ORG}/openai_api_key"
    with TestClient(app) as c:
        r = c.put(url, json={"secret_value": BAD_OPENAI, "check_key": True}, headers=h)
        assert r.status_code == 422
        assert r.json()["code"] == "key_rejected"
        assert c.get(url, headers=h).json()["configured"] is False
        r = c.put(url, json={"secret_value": GOOD_OPENAI, "check_key": True}, headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["key_check"]["outcome"] == "valid"
        assert r.json()["version"] == 1
        r = c.post(url + "/check", headers=h)  # the stored value
        assert r.status_code == 200
        assert r.json()["outcome"] == "valid"
        r = c.post(url + "/check", json={"secret_value": BAD_OPENAI}, headers=h)
        assert r.json()["outcome"] == "rejected"
        assert c.get(url, headers=h).json()["version"] == 1  # a check saves nothing
        denied = c.post(url + "/check", headers={"Authorization": f"Bearer {svc}"})
        assert denied.status_code == 403
        bodies = [c.get(url, headers=h).text,
                  c.get(f"/api/audit?org_id={ORG}", headers=h).text]
        assert all(CANARY not in b for b in bodies)
        events = c.get(f"/api/audit?org_id={ORG}&action=check_key",
                       headers=h).json()["records"]  # newest first
        assert [e["outcome"] for e in events] == ["rejected", "valid", "valid", "rejected"]
        metrics = c.get("/metrics").text  # counts by verdict; no name, org or key
        assert 'keysafe_key_checks_total{outcome="valid"} 2.0' in metrics
        assert 'keysafe_key_checks_total{outcome="rejected"} 2.0' in metrics
        assert CANARY not in metrics
    app.keysafe.close()
    assert CANARY.encode() not in store_bytes(home)


def test_concurrent_checks_share_nothing(mgr: SecretManager) -> None:
    """The server runs checks in worker threads; each gets its own verdict."""
    out: dict[int, str] = {}

    def one(i: int) -> None:
        key = GOOD_OPENAI if i % 2 else BAD_OPENAI
        out[i] = mgr.check_key("openai_api_key", key, ORG).outcome

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert out == {i: "valid" if i % 2 else "rejected" for i in range(8)}


# -- rotation: the new key is checked before it is applied (spec 004) -------------------

class IssuingRotator:
    """Plays a provider-issued key's rotator (a team's webhook): ``generate`` hands out
    the next key of ``keys``; ``rollback`` records the keys it was told to revoke."""

    name = "issuing"

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.rolled_back: list[str] = []
        self.applied: list[str] = []

    def generate(self, ctx: object) -> str:
        return self.keys.pop(0)

    def apply(self, ctx: object, new: str) -> None:
        self.applied.append(new)

    def test(self, ctx: object, new: str) -> None:
        return None

    def rollback(self, ctx: object, new: str) -> None:
        self.rolled_back.append(new)

    def retire(self, ctx: object, old: str) -> None:
        return None


def test_rotation_never_applies_a_key_its_provider_refuses(
        mgr: SecretManager, provider: ProviderStandin) -> None:
    from keysafe.errors import RotationError
    from keysafe.rotation import RotationEngine

    mgr.put("openai_api_key", GOOD_OPENAI, ORG)
    second = GOOD_OPENAI.replace("aaaa", "eeee")
    provider.good.add(second)
    rot = IssuingRotator([BAD_OPENAI, second])
    engine = RotationEngine(mgr, rotator_factory=lambda name: rot)  # type: ignore[arg-type,return-value]
    with pytest.raises(RotationError, match="refused this key") as err:
        engine.rotate("openai_api_key", ORG)
    assert CANARY not in str(err.value)
    assert rot.applied == []
    assert rot.rolled_back == [BAD_OPENAI]
    assert mgr.get("openai_api_key", ORG, fresh=True) == GOOD_OPENAI  # unchanged
    done = engine.rotate("openai_api_key", ORG)  # the provider accepts the next one
    assert (done.outcome, done.version) == ("rotated", 2)
    assert rot.applied == [second]
    assert mgr.get("openai_api_key", ORG, fresh=True) == second
    outcomes = [e.outcome for e in mgr.audit_query(AuditFilter(action="check_key"))]
    assert outcomes == ["rejected", "valid"]
    assert CANARY not in audit_text(mgr)


def test_without_a_way_to_the_provider_a_save_goes_ahead(home: Path) -> None:
    """The built-in checks, as shipped. Tests never leave loopback (tests/conftest.py
    refuses any other host as unreachable), which is also how a machine without internet
    access sees them: no verdict, so the key is saved and the caller is told."""
    m = SecretManager.from_settings(load_settings())
    try:
        r = m.check_key("openai_api_key", GOOD_OPENAI, ORG, refuse=True)
        assert r.outcome == "unknown"
        assert "could not reach api.openai.com" in r.detail
        m.put("openai_api_key", GOOD_OPENAI, ORG)
        assert m.has("openai_api_key", ORG)
    finally:
        m.close()


# -- what a provider, a proxy or the network may do instead of answering ----------------

def test_a_plain_http_check_never_goes_through_a_proxy(
        provider: ProviderStandin, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loopback http check (a local gateway) would otherwise hand the key in clear
    text to HTTP_PROXY; here that proxy is a port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{dead}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    r = run(LiveCheck(url=provider.url + "/v1/models"), GOOD_OPENAI, provider="openai",
            display="OpenAI API Key")
    assert r.outcome == "valid", r.detail


@pytest.mark.parametrize("answer", ["a page, not JSON", {"error": "no ok field"}, [1, 2]])
def test_an_answer_without_the_field_gives_no_verdict(provider: ProviderStandin,
                                                      answer: object) -> None:
    from standins import Fault

    provider.inject(Fault(200, answer, match="POST /api/auth.test"))
    check = LiveCheck(url=provider.url + "/api/auth.test", method="POST", ok_field="ok")
    r = run(check, GOOD_SLACK, provider="slack", display="Slack Bot Token")
    assert (r.outcome, r.status) == ("unknown", 200)
    assert "without a JSON 'ok' field" in r.detail


def test_an_answer_that_breaks_http_gives_no_verdict() -> None:
    """A bad status line (http.client raises BadStatusLine, not an OSError)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def answer() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(5)
            conn.recv(65536)
            conn.sendall(b"garbage\r\n\r\n")

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        r = run(LiveCheck(url=f"http://127.0.0.1:{srv.getsockname()[1]}/v1/models"),
                GOOD_OPENAI, provider="openai", display="OpenAI API Key", timeout=5)
        assert r.outcome == "unknown"
        assert "BadStatusLine" in r.detail
    finally:
        t.join(timeout=5)
        srv.close()


def test_a_value_that_cannot_be_a_key_is_invalid_not_rejected(
        mgr: SecretManager, provider: ProviderStandin) -> None:
    before = len(provider.requests)
    with pytest.raises(InvalidValue, match="non-ASCII") as err:
        mgr.check_key("deepgram_api_key", f"deepgram-{CANARY}-é", ORG, refuse=True)
    assert not isinstance(err.value, KeyRejected)  # the provider was never asked
    assert CANARY not in str(err.value)
    assert len(provider.requests) == before


def test_a_stored_check_of_a_missing_secret_is_not_found(mgr: SecretManager) -> None:
    from keysafe.errors import NotFound

    for name in ("openai_api_key", "database_url"):  # with a check, and without one
        with pytest.raises(NotFound):
            mgr.check_key(name, None, ORG)
    outcomes = [(e.action, e.outcome) for e in mgr.audit_query(AuditFilter())]
    assert outcomes.count(("check_key", "not_found")) == 2


def test_the_timeout_must_be_positive(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"key_check_timeout .* more than 0"):
        load_settings({"KEYSAFE_HOME": str(home), "KEYSAFE_KEY_CHECK_TIMEOUT": "0"})


def test_cli_all_checks_each_secret_in_its_own_domain(home: Path,
                                                      provider: ProviderStandin) -> None:
    cat = team_file(home, provider.url)
    assert ks(home, "put", "openai_api_key", "--org", ORG, "--domain", "prod",
              input=GOOD_OPENAI, catalog=cat).returncode == 0
    assert ks(home, "put", "openai_api_key", "--org", ORG, input=BAD_OPENAI,
              catalog=cat).returncode == 0
    r = ks(home, "check-key", "--all", "--org", ORG, "--json", catalog=cat)
    got = {row["path"]: row["outcome"] for row in json.loads(r.stdout)}
    assert got == {f"keysafe/local/{ORG}/prod/openai_api_key": "valid",
                   f"keysafe/local/{ORG}/shared/openai_api_key": "rejected"}
    assert r.returncode == 2
    r = ks(home, "check-key", "--all", "--org", ORG, "--domain", "prod", catalog=cat)
    assert r.returncode == 0, r.stdout
    missing = ks(home, "check-key", "github_token", "--org", ORG, catalog=cat)
    assert missing.returncode == 3  # not stored: not found, whatever its check


def test_api_domain_query_unknown_verdict_and_checks_off(home: Path,
                                                         provider: ProviderStandin) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    env = {"KEYSAFE_HOME": str(home),
           "KEYSAFE_CATALOG_FILE": str(team_file(home, f"http://127.0.0.1:{dead}"))}
    app = create_app(load_settings(env))
    admin, _ = app.keysafe.tokens.create(name="admin", roles=["admin"], orgs=[ORG],
                                         created_by="test")
    h = {"Authorization": f"Bearer {admin}"}
    url = f"/api/secrets/{ORG}/openai_api_key"
    with TestClient(app) as c:
        r = c.put(url, json={"secret_value": GOOD_OPENAI, "domain_id": "prod",
                             "check_key": True}, headers=h)
        assert r.status_code == 200, r.text  # saved: no verdict is not a refusal
        assert r.json()["key_check"]["outcome"] == "unknown"
        r = c.post(url + "/check?domain_id=prod", headers=h)
        assert r.status_code == 200
        assert r.json()["outcome"] == "unknown"
        assert c.post(url + "/check", headers=h).status_code == 404  # not in shared
        cat = c.get("/api/catalog", headers=h).json()["categories"]["llm"]
        assert next(e for e in cat if e["secret_name"] == "openai_api_key")["live_check"]
    app.keysafe.close()
    off = create_app(load_settings({**env, "KEYSAFE_KEY_CHECKS": "off"}))
    with TestClient(off) as c:
        for path in ("/api/catalog", "/api/secrets/well-known"):
            cats = c.get(path, headers=h).json()["categories"]
            assert all(e["live_check"] is None for es in cats.values() for e in es), path
    off.keysafe.close()


def test_api_limits_key_checks_per_identity(home: Path, provider: ProviderStandin) -> None:
    """A writer's token is not a free oracle for testing keys found elsewhere:
    KEYSAFE_KEY_CHECK_RATE checks a minute per identity, then 429 (nothing saved)."""
    app = create_app(load_settings({
        "KEYSAFE_HOME": str(home), "KEYSAFE_KEY_CHECK_RATE": "2",
        "KEYSAFE_CATALOG_FILE": str(team_file(home, provider.url))}))
    tokens = [app.keysafe.tokens.create(name=n, roles=["writer"], orgs=[ORG],
                                        created_by="test")[0] for n in ("w1", "w2")]
    h1, h2 = ({"Authorization": f"Bearer {t}"} for t in tokens)
    url = f"/api/secrets/{ORG}/openai_api_key"
    with TestClient(app) as c:
        for _ in range(2):
            r = c.post(url + "/check", json={"secret_value": BAD_OPENAI}, headers=h1)
            assert r.json()["outcome"] == "rejected"
        r = c.post(url + "/check", json={"secret_value": BAD_OPENAI}, headers=h1)
        assert r.status_code == 429
        assert r.json()["code"] == "rate_limited"
        assert "key checks" in r.json()["detail"]
        assert int(r.headers["retry-after"]) >= 1
        r = c.put(url, json={"secret_value": GOOD_OPENAI, "check_key": True}, headers=h1)
        assert r.status_code == 429  # the fast path answers the same way
        assert c.get(url, headers=h1).json()["configured"] is False
        r = c.post(url + "/check", json={"secret_value": GOOD_OPENAI}, headers=h2)
        assert r.json()["outcome"] == "valid"  # another identity has its own budget
        r = c.put(url, json={"secret_value": GOOD_OPENAI}, headers=h1)
        assert r.status_code == 200  # saving without a check is not limited
        outcomes = [e.outcome for e in app.keysafe.manager.audit_query(
            AuditFilter(action="check_key"))]
    assert outcomes.count("rate_limited") == 2


# -- the scheduled sweep (KEYSAFE_KEY_CHECK_INTERVAL) -----------------------------------

class Receiver:
    """A team's event webhook endpoint on 127.0.0.1: keeps each JSON body."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.bodies: list[dict[str, object]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            timeout = 5

            def do_POST(self) -> None:
                n = min(int(self.headers.get("Content-Length", "0")), 1 << 16)
                bodies.append(json.loads(self.rfile.read(n)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/events"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def test_the_sweep_checks_every_org_and_reports_a_revoked_key(
        mgr: SecretManager, provider: ProviderStandin) -> None:
    from keysafe import keycheck
    from keysafe.rotation.events import Events

    mgr.put("openai_api_key", GOOD_OPENAI, "org-a")
    mgr.put("openai_api_key", BAD_OPENAI, "org-b", domain="prod")  # revoked since
    mgr.put("slack_bot_token", GOOD_SLACK, "org-b")
    mgr.put("database_url", "postgresql://u:p@h/db", "org-a")  # no check: not swept
    receiver = Receiver()
    try:
        counts = keycheck.sweep(mgr, Events([receiver.url], "hook-secret"))
    finally:
        receiver.stop()
    assert counts == {"valid": 2, "rejected": 1}
    assert [(b["type"], b["path"], b["org"]) for b in receiver.bodies] == [
        ("key.rejected", "keysafe/local/org-b/prod/openai_api_key", "org-b")]
    assert "refused this key" in str(receiver.bodies[0]["detail"])
    assert CANARY not in json.dumps(receiver.bodies)
    assert CANARY not in audit_text(mgr)


def test_the_server_runs_the_sweep_when_asked(home: Path, provider: ProviderStandin) -> None:
    env = {"KEYSAFE_HOME": str(home), "KEYSAFE_PURGE_INTERVAL": "0",
           "KEYSAFE_ROTATION_INTERVAL": "0",
           "KEYSAFE_CATALOG_FILE": str(team_file(home, provider.url))}
    quiet = create_app(load_settings(env))
    assert quiet.keysafe.scheduler is None  # off unless KEYSAFE_KEY_CHECK_INTERVAL
    quiet.keysafe.close()
    app = create_app(load_settings({**env, "KEYSAFE_KEY_CHECK_INTERVAL": "3600"}))
    try:
        assert [j.name for j in app.keysafe.scheduler.jobs] == ["check-keys"]
    finally:
        app.keysafe.close()
    off = create_app(load_settings({**env, "KEYSAFE_KEY_CHECK_INTERVAL": "3600",
                                    "KEYSAFE_KEY_CHECKS": "off"}))
    assert off.keysafe.scheduler is None
    off.keysafe.close()


def test_a_crash_while_the_provider_is_asked_revokes_the_new_key_next_run(
        mgr: SecretManager, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new key is journaled before its check: a crash during the check leaves the
    pending record, and the next run has the rotator revoke the key before discarding it
    (a provider-issued key must not stay live unrecorded)."""
    from keysafe import keycheck
    from keysafe.rotation import RotationEngine

    mgr.put("openai_api_key", GOOD_OPENAI, ORG)
    issued = GOOD_OPENAI.replace("aaaa", "cccc")
    rot = IssuingRotator([issued])
    engine = RotationEngine(mgr, rotator_factory=lambda name: rot)  # type: ignore[arg-type,return-value]

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the process dies while the provider is asked

    monkeypatch.setattr(keycheck, "run", crash)
    with pytest.raises(KeyboardInterrupt):
        engine.rotate("openai_api_key", ORG)
    assert rot.rolled_back == []  # the crash left everything as it was
    monkeypatch.undo()
    rot.keys.append(GOOD_OPENAI.replace("aaaa", "dddd"))
    with pytest.raises(Exception, match="refused"):  # resumed, then a fresh rotation
        RotationEngine(mgr, rotator_factory=lambda name: rot).rotate(  # type: ignore[arg-type,return-value]
            "openai_api_key", ORG)
    assert rot.rolled_back[0] == issued  # the key from before the crash was revoked
    resumed = [e for e in mgr.audit_query(AuditFilter(action="rotate"))
               if e.outcome == "resumed"]
    assert resumed[0].detail["undo"] == "rolled back in the target"
    assert mgr.get("openai_api_key", ORG, fresh=True) == GOOD_OPENAI


def test_cli_check_key_through_a_server(home: Path, provider: ProviderStandin) -> None:
    """`keysafe check-key` with KEYSAFE_SERVER_URL: the server asks the providers (its
    catalog's checks, moved to the stand-in); named secrets and --all, the same verdicts
    and exit codes as on a store, never the key."""
    from tests.server.serverkit import bearer, real_server

    cat = team_file(home, provider.url)
    with real_server(home / "srv", KEYSAFE_KEY_CHECKS="on",
                     KEYSAFE_CATALOG_FILE=str(cat)) as srv:
        import httpx

        with httpx.Client(base_url=srv.url, headers=bearer(srv.token), timeout=30) as c:
            for name, value in (("openai_api_key", GOOD_OPENAI),
                                ("openai-api-key", GOOD_OPENAI),  # as the store spells it
                                ("slack_bot_token", BAD_SLACK)):
                r = c.put(f"/api/secrets/{ORG}/{name}", json={"secret_value": value,
                                                              "check_format": False})
                assert r.status_code in (200, 201), r.text
            writer = c.post("/api/tokens", json={"name": "ck", "roles": ["writer"],
                                                 "orgs": [ORG]}).json()["token"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSAFE_")}
        env.update(KEYSAFE_HOME=str(home / "client"), KEYSAFE_SERVER_URL=srv.url,
                   KEYSAFE_TOKEN=writer)

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([KEYSAFE, *args], capture_output=True, text=True,
                                  env=env, timeout=60)

        one = run("check-key", "openai_api_key", "--org", ORG, "--json")
        assert one.returncode == 0, one.stderr
        (row,) = json.loads(one.stdout)
        assert (row["outcome"], row["path"]) == (
            "valid", f"keysafe/local/{ORG}/shared/openai_api_key")
        every = run("check-key", "--all", "--org", ORG, "--json")
        assert every.returncode == 2  # the stored Slack token is refused
        assert sorted(r["outcome"] for r in json.loads(every.stdout)) == [
            "rejected", "valid", "valid"]
        for p in (one, every):
            assert CANARY not in p.stdout + p.stderr
        assert run("check-key", "nope_key", "--org", "elsewhere").returncode == 3
        assert not (home / "client").exists()
    # A server whose checks are off says so for each secret: exit 9, as on a store.
    with real_server(home / "srv-off", KEYSAFE_CATALOG_FILE=str(cat)) as srv:
        import httpx

        with httpx.Client(base_url=srv.url, headers=bearer(srv.token), timeout=30) as c:
            r = c.put(f"/api/secrets/{ORG}/openai_api_key",
                      json={"secret_value": GOOD_OPENAI})
            assert r.status_code in (200, 201), r.text
        env.update(KEYSAFE_SERVER_URL=srv.url, KEYSAFE_TOKEN=srv.token)
        off = run("check-key", "--all", "--org", ORG, "--json")
        assert off.returncode == 9, off.stderr
        assert {r["outcome"] for r in json.loads(off.stdout)} == {"off"}
