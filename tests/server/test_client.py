"""keysafe.KeysafeClient against a real ``keysafe serve`` (a subprocess on loopback):
every verb, the errors as the library's own, and no value where it should not be."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keysafe import (
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidName,
    InvalidValue,
    KeysafeClient,
    NotFound,
    PermissionDenied,
)
from keysafe.client import TokenFile
from keysafe.errors import ManualRotation

from .serverkit import OPENAI, VALUE_1, VALUE_2, RealServer, bearer, free_port, real_server

ORG = "acme"
CANARY = "canary-client-\u00e9-" + "q" * 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RealServer, dict]]:
    home = tmp_path_factory.mktemp("client") / "home"
    with real_server(home) as srv:
        tokens = {}
        with httpx.Client(base_url=srv.url, headers=bearer(srv.token), timeout=30) as c:
            for label, roles, orgs in [("app", ["service"], [ORG]),
                                       ("ops", ["writer"], [ORG]),
                                       ("boss", ["admin"], [ORG]),
                                       ("cards", ["service"], [f"{ORG}/cards"])]:
                r = c.post("/api/tokens", json={"name": label, "roles": roles, "orgs": orgs})
                assert r.status_code == 201, r.text
                tokens[label] = r.json()["token"]
        yield srv, tokens


def test_writer_and_service_verbs(server: tuple[RealServer, dict]) -> None:
    srv, tokens = server
    with KeysafeClient(srv.url, tokens["ops"]) as ops, \
            KeysafeClient(srv.url, tokens["app"]) as app:
        assert ops.whoami()["roles"] == ["writer"]
        assert not ops.has(OPENAI, ORG)
        assert ops.put(OPENAI, VALUE_1, ORG, expected_version=0, description="gpt") == 1
        assert ops.has(OPENAI, ORG)
        status = ops.describe(OPENAI, ORG)
        assert (status["version"], status["description"]) == (1, "gpt")
        assert app.get(OPENAI, ORG) == VALUE_1
        assert repr(app.get_secret(OPENAI, ORG)) == "Secret('**********')"
        assert app.get_secret(OPENAI, ORG).reveal() == VALUE_1
        assert app.get_llm_api_key(ORG, "openai", domain="cards") == VALUE_1  # shared
        assert app.get_llm_api_key(ORG, "anthropic") is None
        # Check-and-set: the version seen, else Conflict with the current one.
        with pytest.raises(Conflict) as conflict:
            ops.put(OPENAI, VALUE_2, ORG, expected_version=0)
        assert conflict.value.current_version == 1
        assert ops.put(OPENAI, VALUE_2, ORG, expected_version=1) == 2
        assert [v["version"] for v in ops.versions(OPENAI, ORG)] == [1, 2]
        assert ops.rollback(OPENAI, 1, ORG) == 3
        assert app.get(OPENAI, ORG) == VALUE_1
        # Blind: a writer cannot read a value.
        with pytest.raises(PermissionDenied):
            ops.get(OPENAI, ORG)
        # JSON credentials, one field at a time.
        slack = {"bot_token": "xoxb-1-2-" + "a" * 20, "signing_secret": "s" * 32,
                 "app_token": "xapp-1-A-2-" + "b" * 20}
        assert ops.put_json("slack", slack, ORG) == 1
        assert ops.update_json("slack", {"bot_token": "xoxb-9-9-" + "c" * 20}, ORG) == 2
        assert app.get_json("slack", ORG) == {**slack, "bot_token": "xoxb-9-9-" + "c" * 20}
        with pytest.raises(InvalidValue):
            ops.update_json("slack", {"app_token": None}, ORG)
        # Tags, in a domain, and the listing.
        ops.put("partner_key", CANARY, ORG, domain="cards", tags={"team": "a"})
        got = ops.update_tags("partner_key", ORG, domain="cards", set_tags={"tier": "1"},
                              unset=["team"], description="partner")
        assert (got["tags"], got["description"]) == ({"tier": "1"}, "partner")
        names = {(s["domain_id"], s["secret_name"]) for s in ops.list(ORG)}
        assert names >= {("shared", OPENAI), ("shared", "slack"), ("cards", "partner_key")}
        assert [s["secret_name"] for s in ops.list(ORG, domain="cards")] == ["partner_key"]
        # Delete, restore, and rotation.
        ops.delete("partner_key", ORG, domain="cards")
        assert not ops.has("partner_key", ORG, domain="cards")
        assert ops.restore("partner_key", ORG, domain="cards")["configured"] is True
        assert ops.put("jwt_secret", "e" * 48, ORG) == 1
        out = ops.rotate("jwt_secret", ORG)
        assert (out["outcome"], out["version"]) == ("rotated", 2)
        assert app.get("jwt_secret", ORG) != "e" * 48
        with pytest.raises(ManualRotation):
            ops.rotate(OPENAI, ORG)
        assert repr(ops) == f"KeysafeClient({srv.url!r})"


def test_errors_are_the_librarys(server: tuple[RealServer, dict]) -> None:
    srv, tokens = server
    with KeysafeClient(srv.url, tokens["app"]) as app:
        with pytest.raises(NotFound):
            app.get("nothing_here", ORG)
        with pytest.raises(NotFound):  # another org is not found, as for any token
            app.get(OPENAI, "globex")
        with pytest.raises(InvalidName):  # checked before anything is sent
            app.get("../x", ORG)
        with pytest.raises(PermissionDenied):
            app.put(OPENAI, VALUE_2, ORG)
    with KeysafeClient(srv.url, tokens["cards"]) as cards, pytest.raises(PermissionDenied):
        cards.get(OPENAI, ORG)  # the shared domain is outside its scope
    with KeysafeClient(srv.url, "ks_nope_nope") as bad, pytest.raises(PermissionDenied):
        bad.get(OPENAI, ORG)
    with KeysafeClient(f"http://127.0.0.1:{free_port()}", "ks_x_y") as down, \
            pytest.raises(BackendUnavailable):
        down.get(OPENAI, ORG)
    with pytest.raises(InvalidValue):
        KeysafeClient("ftp://example.invalid", "ks_x_y")
    with KeysafeClient(srv.url, tokens["boss"]) as boss:
        boss.put("old_key", CANARY, ORG)
        boss.put("old_key", CANARY + "2", ORG)
        assert boss.destroy("old_key", [1], ORG) == [1]
        assert [v["destroyed"] for v in boss.versions("old_key", ORG)] == [True, False]


def test_a_program_needs_no_master_key_nor_cryptography(
        server: tuple[RealServer, dict], tmp_path: Path) -> None:
    """The client is standard library only: a program reading through the server
    imports neither cryptography nor a store driver, and holds no key."""
    srv, tokens = server
    code = ("import sys, keysafe.client as c\n"
            "v = c.KeysafeClient(sys.argv[1], sys.argv[2]).get(sys.argv[3], 'acme')\n"
            "print(len(v), 'cryptography' in sys.modules, 'psycopg' in sys.modules)\n")
    with KeysafeClient(srv.url, tokens["ops"]) as ops:
        ops.put("canary_key", CANARY, ORG)
    p = subprocess.run([sys.executable, "-c", code, srv.url, tokens["app"], "canary_key"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [str(len(CANARY)), "False", "False"]
    # The server's own output never carries a value the client sent or read.
    assert CANARY not in srv.output()
    assert json.dumps(CANARY)[1:-1] not in srv.output()


def test_a_write_after_an_idle_pause_reconnects(server: tuple[RealServer, dict],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A kept connection the server (or a proxy) closed while idle: a write must not
    fail on it; it goes on a fresh connection, sent once."""
    import keysafe.client as client_mod

    srv, tokens = server
    with KeysafeClient(srv.url, tokens["ops"]) as ops:
        ops.put("idle_key", CANARY, ORG)
        ops.transport._conn.sock.close()  # as the peer closing it while idle
        monkeypatch.setattr(client_mod, "IDLE_RECONNECT", 0.0)
        assert ops.put("idle_key", CANARY + "2", ORG) == 2
        ops.transport._conn.sock.close()
        assert ops.describe("idle_key", ORG)["version"] == 2  # a GET is sent again


def test_versions_read_and_what_the_server_serves(server: tuple[RealServer, dict]) -> None:
    srv, tokens = server
    name = "versioned-key"
    with KeysafeClient(srv.url, tokens["ops"]) as ops, \
            KeysafeClient(srv.url, tokens["app"]) as app:
        assert ops.put(name, "first-value", ORG) == 1
        assert ops.put(name, "second-value", ORG) == 2
        # read(): the current value from the store with its number; a chosen version.
        assert app.read(name, ORG) == ("second-value", 2)
        assert app.read(name, ORG, version=1) == ("first-value", 1)
        assert app.get(name, ORG, version=1) == "first-value"
        assert app.get(name, ORG) == "second-value"  # the plain (cached) read path
        with pytest.raises(NotFound):
            app.read(name, ORG, version=9)
        # What the CLI asks before naming anything: app, environment, template.
        info = ops.catalog()
        assert (info["app"], info["environment"], info["naming_template"],
                info["default_domain"]) == ("keysafe", "local",
                                            "{app}/{env}/{org}/{domain}/{name}", "shared")
        # A key check without saving (checks are off on this server).
        assert ops.check_key(name, ORG, value="x" * 20)["outcome"] == "off"
    with httpx.Client(base_url=srv.url, headers=bearer(tokens["app"]), timeout=30) as c:
        r = c.get(f"/api/secrets/{ORG}/{name}/value", params={"version": -1})
        assert r.status_code == 422
        assert "version" in r.text
        r = c.get(f"/api/secrets/{ORG}/{name}/value")
        assert r.json()["version"] is None  # not asked for: the cached path says nothing


def test_plain_http_to_another_machine_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The token goes with every request: never in the clear across a network unless
    the operator says the network is encrypted. Refused before any connection."""
    monkeypatch.delenv("KEYSAFE_ALLOW_HTTP", raising=False)
    with pytest.raises(InvalidValue, match="plain http to another machine"):
        KeysafeClient("http://keysafe.example.invalid:8787", "ks_x_y")
    KeysafeClient("https://keysafe.example.invalid", "ks_x_y").close()
    for local in ("http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1"):
        KeysafeClient(local, "ks_x_y").close()
    monkeypatch.setenv("KEYSAFE_ALLOW_HTTP", "1")
    KeysafeClient("http://keysafe.keysafe.svc:8787", "ks_x_y").close()


def test_get_json_field_reads_one_field(server: tuple[RealServer, dict]) -> None:
    """The server picks the field out (``?field=``); a string comes back as is, other
    fields decoded from their JSON."""
    srv, tokens = server
    creds = {"bot_token": "xoxb-" + CANARY, "port": 5432, "nested": {"a": [1]}}
    with KeysafeClient(srv.url, tokens["ops"]) as ops, \
            KeysafeClient(srv.url, tokens["app"]) as app:
        ops.put_json("slack_fields", creds, ORG)
        ops.put("slack_plain", "plain-" + CANARY, ORG)
        assert app.get_json_field("slack_fields", "bot_token", ORG) == creds["bot_token"]
        assert app.get_json_field("slack_fields", "port", ORG) == 5432
        assert app.get_json_field("slack_fields", "nested", ORG) == {"a": [1]}
        with pytest.raises(NotFound, match="no credential field 'signing'"):
            app.get_json_field("slack_fields", "signing", ORG)
        with pytest.raises(InvalidValue, match="does not hold JSON credentials") as e:
            app.get_json_field("slack_plain", "x", ORG)
        assert CANARY not in str(e.value)
        with pytest.raises(InvalidValue, match="field is empty"):
            app.get_json_field("slack_fields", "", ORG)
        with pytest.raises(PermissionDenied):
            ops.get_json_field("slack_fields", "bot_token", ORG)


def test_json_field_of_a_chosen_version(server: tuple[RealServer, dict]) -> None:
    """``version=`` picks the field out of that version; ``read_json_field`` says which
    version the field came from (the store's current one when none is named)."""
    srv, tokens = server
    with KeysafeClient(srv.url, tokens["ops"]) as ops, \
            KeysafeClient(srv.url, tokens["app"]) as app:
        v1 = ops.put_json("versioned_fields", {"user": "u1", "password": "p1-" + CANARY},
                          ORG)
        v2 = ops.put_json("versioned_fields", {"user": "u2"}, ORG)
        assert app.get_json_field("versioned_fields", "user", ORG) == "u2"
        assert app.get_json_field("versioned_fields", "user", ORG, version=v1) == "u1"
        assert app.read_json_field("versioned_fields", "user", ORG) == ("u2", v2)
        assert app.read_json_field("versioned_fields", "password", ORG,
                                   version=v1) == ("p1-" + CANARY, v1)
        with pytest.raises(NotFound, match="no credential field 'password'"):
            app.read_json_field("versioned_fields", "password", ORG)
        with pytest.raises(NotFound):
            app.get_json_field("versioned_fields", "user", ORG, version=v2 + 5)


def test_verification_values_through_the_server(server: tuple[RealServer, dict]) -> None:
    """After a rotation the service gets the new value and, for the grace period, the
    one it replaced (``?stage=previous``): JWTs signed before the rotation still verify."""
    srv, tokens = server
    DOM = "verify"  # a path of its own: another test rotates jwt_secret in shared
    old = "jwt-before-" + CANARY + "x" * 24
    with KeysafeClient(srv.url, tokens["ops"]) as ops, \
            KeysafeClient(srv.url, tokens["app"]) as app:
        ops.put("jwt_secret", old, ORG, domain=DOM)
        with pytest.raises(NotFound, match="no previous value"):
            app.get_previous("jwt_secret", ORG, domain=DOM)
        assert app.verification_values("jwt_secret", ORG, domain=DOM) == [old]
        assert ops.rotate("jwt_secret", ORG, domain=DOM)["outcome"] == "rotated"
        new = app.get("jwt_secret", ORG, domain=DOM)
        assert new != old
        assert app.get_previous("jwt_secret", ORG, domain=DOM) == (old, 1)
        assert app.verification_values("jwt_secret", ORG, domain=DOM) == [new, old]


@pytest.mark.parametrize(("url", "words"), [
    ("admin:S3cretPw@keysafe.internal", "'keysafe.internal' is not an http"),
    ("http://admin:S3cretPw@127.0.0.1:99999", "its host or port cannot be read"),
    ("http://admin:S3cretPw@[::1", "its host or port cannot be read"),
    ("ftp://admin:S3cretPw@host/?token=S3cretPw", "'ftp://host' is not an http"),
])
def test_a_bad_url_is_named_without_its_credentials(url: str, words: str) -> None:
    """Refused before any connection (exit 2 from the CLI), and whatever the spelling, the
    user info and query are never shown (a reviewer found them echoed)."""
    with pytest.raises(InvalidValue, match=words) as e:
        KeysafeClient(url, "ks_x_y")
    assert "S3cretPw" not in str(e.value)


def test_a_token_that_cannot_go_in_a_header_is_a_bad_setting(tmp_path: Path) -> None:
    """A line break inside a token (two tokens in a variable or file) is a setting to
    fix (ConfigError, exit 8), not a server that failed (exit 7): nothing is sent."""
    for token in ("ab\ncd", "ab cd", "ab\x00cd"):
        with pytest.raises(ConfigError, match="one word"):
            KeysafeClient("http://127.0.0.1:9", token)
    f = tmp_path / "token"
    f.write_text("first\nsecond\n")
    with KeysafeClient("http://127.0.0.1:9", TokenFile(f, "KEYSAFE_TOKEN_FILE")) as c, \
            pytest.raises(ConfigError, match="KEYSAFE_TOKEN_FILE holds a space, line break"):
        c.get("x", ORG)
