"""The CLI's secret verbs through a real ``keysafe serve`` (a subprocess on loopback) when
KEYSAFE_SERVER_URL is set: a token instead of the master key, the server's roles and
scopes, the same output as on the store, and no value where it should not be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from keysafe import KeysafeClient
from keysafe.errors import BackendUnavailable, ConfigError, InvalidValue, NotFound

from .serverkit import OPENAI, VALUE_1, VALUE_2, RealServer, bearer, free_port, real_server

KEYSAFE = str(Path(sys.executable).parent / "keysafe")
ORG = "acme"
CANARY = "canary-cli-remote-\u00e9-" + "z" * 16
#: The keys of SecretMetadata.to_dict(): `status --json` and `ls --json` give the same
#: whether the command went to the store or to a server.
META_KEYS = {"path", "current_version", "created_at", "updated_at", "created_by",
             "updated_by", "description", "secret_type", "tags", "deleted_at",
             "last_rotated", "rotation_days", "expires_at", "versions", "deleted"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RealServer, dict]]:
    home = tmp_path_factory.mktemp("cli-remote") / "home"
    with real_server(home) as srv:
        tokens = {"root": srv.token}
        with httpx.Client(base_url=srv.url, headers=bearer(srv.token), timeout=30) as c:
            for label, roles, orgs in [("ops", ["writer"], [ORG]),
                                       ("app", ["service", "viewer"], [ORG]),
                                       ("boss", ["admin"], [ORG]),
                                       ("cards", ["writer"], [f"{ORG}/cards"]),
                                       ("both", ["viewer"], [ORG, "globex"])]:
                r = c.post("/api/tokens", json={"name": label, "roles": roles, "orgs": orgs})
                assert r.status_code == 201, r.text
                tokens[label] = r.json()["token"]
        yield srv, tokens


def ks(srv: RealServer, home: Path, token: str | None, *args: str, stdin: bytes = b"",
       extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KEYSAFE_") and k != "ENVIRONMENT"}
    env["KEYSAFE_HOME"] = str(home)  # never created: nothing is stored on this side
    env["KEYSAFE_SERVER_URL"] = srv.url
    if token is not None:
        env["KEYSAFE_TOKEN"] = token
    env.update(extra or {})
    return subprocess.run([KEYSAFE, *args], env=env, input=stdin, capture_output=True,
                          timeout=120)


def ok(p: subprocess.CompletedProcess[bytes]) -> str:
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout.decode()


def said(p: subprocess.CompletedProcess[bytes]) -> str:
    """What a command told a person (stderr) after succeeding."""
    ok(p)
    return p.stderr.decode()


def test_the_verbs_through_the_server(server: tuple[RealServer, dict],
                                      tmp_path: Path) -> None:
    srv, t = server
    home = tmp_path / "home"
    # put: blind, with the writer's token; the answer names the path, version and author.
    out = json.loads(ok(ks(srv, home, t["ops"], "put", OPENAI, "--org", ORG, "--json",
                           "--description", "gpt", "--tag", "team=ml", stdin=VALUE_1.encode())))
    assert out["path"] == f"keysafe/local/{ORG}/shared/{OPENAI}"
    assert (out["version"], out["created_by"]) == (1, "token:ops")
    assert out["created_at"]
    assert "stored keysafe/local/acme/shared/openai_api_key version 2" in said(
        ks(srv, home, t["ops"], "put", OPENAI, "--org", ORG, "--expected-version", "1",
           stdin=VALUE_2.encode()))
    # Check-and-set refused: exit 5, nothing written.
    p = ks(srv, home, t["ops"], "put", OPENAI, "--org", ORG, "--expected-version", "1",
           stdin=VALUE_1.encode())
    assert p.returncode == 5, p.stderr
    # get: the service token reads the exact value (no newline in a pipe), any version.
    assert ok(ks(srv, home, t["app"], "get", OPENAI, "--org", ORG)) == VALUE_2
    assert ok(ks(srv, home, t["app"], "get", OPENAI, "--org", ORG, "--version", "1")) == VALUE_1
    got = json.loads(ok(ks(srv, home, t["app"], "get", OPENAI, "--org", ORG, "--json")))
    assert got == {"path": out["path"], "version": 2, "value": VALUE_2}
    got = json.loads(ok(ks(srv, home, t["app"], "get", out["path"], "--version", "1",
                           "--json")))
    assert (got["version"], got["value"]) == (1, VALUE_1)
    # Blind write: the writer cannot read it back (exit 4).
    p = ks(srv, home, t["ops"], "get", OPENAI, "--org", ORG)
    assert p.returncode == 4
    assert VALUE_2.encode() not in p.stdout + p.stderr
    # status / ls: the store's JSON shape.
    st = json.loads(ok(ks(srv, home, t["app"], "status", OPENAI, "--org", ORG, "--json")))
    assert set(st) == META_KEYS
    assert (st["current_version"], st["description"], st["tags"]) == (2, "gpt", {"team": "ml"})
    assert (st["created_by"], st["updated_by"], st["versions"]) == ("token:ops", "token:ops", 2)
    listed = json.loads(ok(ks(srv, home, t["app"], "ls", "--org", ORG, "--json")))
    assert [m["path"] for m in listed] == [out["path"]]
    assert set(listed[0]) == META_KEYS
    assert out["path"] in ok(ks(srv, home, t["app"], "ls", "--org", ORG))
    # tag, versions, rollback.
    tagged = json.loads(ok(ks(srv, home, t["ops"], "tag", OPENAI, "--org", ORG, "--set",
                              "owner=ml", "--unset", "team", "--json")))
    assert tagged["tags"] == {"owner": "ml"}
    assert tagged["current_version"] == 2
    versions = json.loads(ok(ks(srv, home, t["app"], "versions", OPENAI, "--org", ORG,
                                "--json")))
    assert [(v["version"], v["destroyed"]) for v in versions] == [(1, False), (2, False)]
    assert "now version 3" in said(ks(srv, home, t["ops"], "rollback", OPENAI, "1", "--org", ORG))
    assert ok(ks(srv, home, t["app"], "get", OPENAI, "--org", ORG)) == VALUE_1
    # rm (soft), status --deleted, restore; destroy needs the admin.
    assert ok(ks(srv, home, t["app"], "has", OPENAI, "--org", ORG)) == ""
    assert ok(ks(srv, home, t["app"], "describe", OPENAI, "--org", ORG, "--json")) == \
        ok(ks(srv, home, t["app"], "status", OPENAI, "--org", ORG, "--json"))
    assert "within 7 days" in said(ks(srv, home, t["ops"], "rm", OPENAI, "--org", ORG))
    assert ks(srv, home, t["app"], "status", OPENAI, "--org", ORG).returncode == 3
    assert ks(srv, home, t["app"], "has", OPENAI, "--org", ORG).returncode == 3
    gone = json.loads(ok(ks(srv, home, t["app"], "status", OPENAI, "--org", ORG, "--deleted",
                            "--json")))
    assert gone["deleted"]
    assert gone["deleted_at"]
    assert "restored" in said(ks(srv, home, t["ops"], "restore", OPENAI, "--org", ORG))
    assert ks(srv, home, t["ops"], "destroy", OPENAI, "--versions", "1", "--org", ORG,
              "--yes").returncode == 4
    done = json.loads(ok(ks(srv, home, t["boss"], "destroy", OPENAI, "--versions", "1",
                            "--org", ORG, "--yes", "--json")))
    assert done["destroyed"] == [1]
    assert ks(srv, home, t["app"], "get", OPENAI, "--org", ORG, "--version", "1"
              ).returncode == 3
    # Nothing was stored on the client's side: no key file, no database.
    assert not home.exists()
    # The server recorded each call under the token's name, never the value.
    with httpx.Client(base_url=srv.url, headers=bearer(t["root"]), timeout=30) as c:
        r = c.get("/api/audit", params={"org_id": ORG, "limit": 1000})
        assert r.status_code == 200, r.text
        assert VALUE_1 not in r.text
        assert VALUE_2 not in r.text
        actors = {e["actor"] for e in r.json()["records"]}
        assert {"token:ops", "token:app", "token:boss"} <= actors


def test_json_credentials_and_fields(server: tuple[RealServer, dict], tmp_path: Path) -> None:
    srv, t = server
    home = tmp_path / "home"
    creds = {"bot_token": "xoxb-1-2-" + "a" * 20, "signing_secret": CANARY}
    ok(ks(srv, home, t["ops"], "put", "slack-bot", "--org", ORG, "--credentials",
          stdin=json.dumps(creds).encode()))
    p = ks(srv, home, t["ops"], "put", "slack-bot", "--org", ORG, "--credentials", "--merge",
           "--json", stdin=json.dumps({"bot_token": "xoxb-9-9-" + "c" * 20}).encode())
    assert json.loads(ok(p))["version"] == 2
    assert CANARY.encode() not in p.stdout + p.stderr
    assert ok(ks(srv, home, t["app"], "get", "slack-bot", "--org", ORG, "--field",
                 "signing_secret")) == CANARY
    assert ok(ks(srv, home, t["app"], "get", "slack-bot", "--org", ORG, "--field",
                 "bot_token")) == "xoxb-9-9-" + "c" * 20
    # A chosen version, and --json with the version read: the server still picks the
    # field out, so only it crosses the network (each read is audited with its field).
    assert ok(ks(srv, home, t["app"], "get", "slack-bot", "--org", ORG, "--field",
                 "bot_token", "--version", "1")) == creds["bot_token"]
    got = json.loads(ok(ks(srv, home, t["app"], "get", "slack-bot", "--org", ORG, "--field",
                           "signing_secret", "--json")))
    assert (got["version"], got["value"]) == (2, CANARY)
    p = ks(srv, home, t["app"], "get", "slack-bot", "--org", ORG, "--field", "nope",
           "--version", "1", "--json")
    assert p.returncode == 3
    assert b"nope" in p.stderr
    with httpx.Client(base_url=srv.url, headers=bearer(t["root"]), timeout=30) as c:
        r = c.get("/api/audit", params={"org_id": ORG, "action": "read_value",
                                        "actor": "token:app", "limit": 100})
        assert r.status_code == 200, r.text
    reads = [(e["version"], (e.get("detail") or {}).get("field"), e["outcome"])
             for e in reversed(r.json()["records"])]  # newest first
    assert reads[-5:] == [(None, "signing_secret", "ok"), (None, "bot_token", "ok"),
                          (1, "bot_token", "ok"), (2, "signing_secret", "ok"),
                          (1, "nope", "not_found")]
    # A well-known name's format is checked by the server unless the caller says not to.
    p = ks(srv, home, t["ops"], "put", "anthropic_api_key", "--org", ORG, stdin=b"not-a-key")
    assert p.returncode == 2
    assert b"not-a-key" not in p.stdout + p.stderr
    ok(ks(srv, home, t["ops"], "put", "anthropic_api_key", "--org", ORG, "--no-format-check",
          stdin=b"not-a-key"))
    # --check-key: the server asks the provider first (checks are off on this server).
    check = json.loads(ok(ks(srv, home, t["ops"], "put", "anthropic_api_key", "--org", ORG,
                             "--no-format-check", "--check-key", "--json",
                             stdin=b"still-not-a-key")))
    assert check["key_check"]["outcome"] == "off"
    assert check["version"] == 2


def test_scopes_are_the_servers(server: tuple[RealServer, dict], tmp_path: Path) -> None:
    srv, t = server
    home = tmp_path / "home"
    # A domain-scoped token writes in its domain only; listing shows only that domain.
    ok(ks(srv, home, t["cards"], "put", "stripe-key", "--org", ORG, "--domain", "cards",
          stdin=b"rk_live_" + b"x" * 24))
    p = ks(srv, home, t["cards"], "put", "stripe-key", "--org", ORG, stdin=b"y" * 24)
    assert p.returncode == 4
    assert b"shared" in p.stderr
    paths = [m["path"] for m in json.loads(ok(ks(srv, home, t["cards"], "ls", "--json")))]
    assert paths == [f"keysafe/local/{ORG}/cards/stripe-key"]
    # Another org is answered as the API answers it: not found, telling nothing (exit 3).
    p = ks(srv, home, t["ops"], "put", OPENAI, "--org", "globex", stdin=VALUE_1.encode())
    assert p.returncode == 3
    # Without --org, ls covers each org the token names; a token for every org must say.
    ok(ks(srv, home, t["both"], "ls", "--json"))
    p = ks(srv, home, t["root"], "ls")
    assert p.returncode == 2
    assert b"--org" in p.stderr


def test_refusals_name_the_problem_and_change_nothing(server: tuple[RealServer, dict],
                                                     tmp_path: Path) -> None:
    srv, t = server
    home = tmp_path / "home"
    # No token: a configuration error that says where the token goes.
    p = ks(srv, home, None, "put", "x-key", "--org", ORG, stdin=b"v" * 20)
    assert p.returncode == 8
    assert b"KEYSAFE_TOKEN" in p.stderr
    # An environment the server does not serve: refused before anything is sent.
    for args, extra in [(("--env", "production"), None),
                        ((), {"KEYSAFE_ENV": "staging"})]:
        p = ks(srv, home, t["ops"], "put", "x-key", "--org", ORG, *args, stdin=b"v" * 20,
               extra=extra)
        assert p.returncode == 8, p.stderr
        assert b"'local'" in p.stderr
    # A full path of another app or environment.
    p = ks(srv, home, t["app"], "status", "keysafe/production/acme/shared/x-key")
    assert p.returncode == 2
    assert b"keysafe/local" in p.stderr
    # A bad token: 401, reported as permission denied.
    p = ks(srv, home, "ks_not-a-token", "status", "x-key", "--org", ORG)
    assert p.returncode == 4
    with httpx.Client(base_url=srv.url, headers=bearer(t["root"]), timeout=30) as c:
        assert c.get(f"/api/secrets/{ORG}/x-key").json()["configured"] is False
    # A server that is not there: exit 7, the URL in the message.
    gone = f"http://127.0.0.1:{free_port()}"
    p = ks(srv, home, t["ops"], "status", "x-key", "--org", ORG,
           extra={"KEYSAFE_SERVER_URL": gone})
    assert p.returncode == 7
    assert gone.encode() in p.stderr
    assert not home.exists()


def test_run_follows_the_server_url(server: tuple[RealServer, dict], tmp_path: Path) -> None:
    srv, t = server
    home = tmp_path / "home"
    ok(ks(srv, home, t["ops"], "put", "run-secret", "--org", ORG, stdin=CANARY.encode()))
    p = ks(srv, home, t["app"], "run", "--org", ORG, "--only", "run-secret", "--",
           sys.executable, "-c", "import os; print(os.environ['RUN_SECRET'] == "
                                 f"{CANARY!r})")
    assert ok(p).strip() == "True"
    assert not home.exists()


def test_doctor_shows_the_server_url_only_as_its_origin(server: tuple[RealServer, dict],
                                                       tmp_path: Path) -> None:
    srv, t = server
    p = ks(srv, tmp_path / "home", t["ops"], "doctor", "--json",
           extra={"KEYSAFE_SERVER_URL": srv.url + "/?token=hunter2"})
    assert b"hunter2" not in p.stdout + p.stderr
    assert t["ops"].encode() not in p.stdout
    assert srv.url.encode() in p.stdout


def test_store_commands_refuse_and_files_cannot_redirect(server: tuple[RealServer, dict],
                                                        tmp_path: Path) -> None:
    srv, t = server
    home = tmp_path / "home"
    env_file = tmp_path / "app.env"
    env_file.write_text("OPENAI_API_KEY=" + VALUE_1 + "\n")
    # A command that works on a store refuses, rather than make a store (and key) here.
    p = ks(srv, home, t["ops"], "audit", "archive", "--before", "30d", "--to",
           str(tmp_path / "a"))
    assert p.returncode == 8
    assert b"KEYSAFE_SERVER_URL is set" in p.stderr
    assert not home.exists()
    # A keysafe.toml (say, in a cloned repository) cannot point the CLI at a server.
    work = tmp_path / "work"
    work.mkdir()
    (work / "keysafe.toml").write_text('server_url = "http://127.0.0.1:9/steal"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSAFE_")}
    env.update(KEYSAFE_HOME=str(home), KEYSAFE_TOKEN=t["ops"])
    p = subprocess.run([KEYSAFE, "put", "x-key", "--org", ORG], input=b"v" * 20, cwd=work,
                       env=env, capture_output=True, timeout=120)
    assert p.returncode == 8
    assert b"KEYSAFE_SERVER_URL" in p.stderr
    # --env is compared as KEYSAFE_ENV is: case does not matter.
    ok(ks(srv, home, t["app"], "ls", "--org", ORG, "--env", "LOCAL", "--json"))
    # A URL's user info and query are never shown.
    p = ks(srv, home, t["ops"], "status", "x-key", "--org", ORG,
           extra={"KEYSAFE_SERVER_URL": f"http://admin:hunter2@127.0.0.1:{free_port()}/?k=v"})
    assert p.returncode == 7
    assert b"hunter2" not in p.stderr
    assert b"k=v" not in p.stderr


def test_version_reads_are_audited_with_their_version(server: tuple[RealServer, dict],
                                                      tmp_path: Path) -> None:
    srv, t = server
    home = tmp_path / "home"
    ok(ks(srv, home, t["ops"], "put", "audited-key", "--org", ORG, stdin=b"one-" + b"a" * 20))
    ok(ks(srv, home, t["ops"], "put", "audited-key", "--org", ORG, stdin=b"two-" + b"b" * 20))
    assert ok(ks(srv, home, t["app"], "get", "audited-key", "--org", ORG, "--version", "1")
              ) == "one-" + "a" * 20
    with httpx.Client(base_url=srv.url, headers=bearer(t["app"]), timeout=30) as c:
        # A %-escaped key is parsed as FastAPI parses it, not skipped by the fast path.
        r = c.get(f"{srv.url}/api/secrets/{ORG}/audited-key/value?%76ersion=1")
        assert r.status_code == 200
        assert (r.json()["version"], r.json()["value"]) == (1, "one-" + "a" * 20)
    with httpx.Client(base_url=srv.url, headers=bearer(t["root"]), timeout=30) as c:
        r = c.get("/api/audit", params={"org_id": ORG, "action": "read_value",
                                        "path": f"keysafe/local/{ORG}/shared/audited-key"})
        assert r.status_code == 200, r.text
        assert [e["version"] for e in r.json()["records"]] == [1, 1]


def test_run_uses_the_servers_default_domain(tmp_path_factory: pytest.TempPathFactory,
                                             tmp_path: Path) -> None:
    with real_server(tmp_path_factory.mktemp("general") / "home",
                     KEYSAFE_DEFAULT_DOMAIN="general") as srv:
        with httpx.Client(base_url=srv.url, headers=bearer(srv.token), timeout=30) as c:
            r = c.post("/api/tokens", json={"name": "app", "roles": ["service", "writer"],
                                            "orgs": [ORG]})
            assert r.status_code == 201, r.text
            token = r.json()["token"]
        home = tmp_path / "home"
        out = json.loads(ok(ks(srv, home, token, "put", "run-secret", "--org", ORG, "--json",
                               stdin=CANARY.encode())))
        assert out["path"] == f"keysafe/local/{ORG}/general/run-secret"
        p = ks(srv, home, token, "run", "--org", ORG, "--only", "run-secret", "--",
               sys.executable, "-c", f"import os; print(os.environ['RUN_SECRET'] == {CANARY!r})")
        assert ok(p).strip() == "True"
        p = ks(srv, home, token, "run", "--org", ORG, "--env", "production", "--",
               sys.executable, "-c", "pass")
        assert p.returncode == 8


def test_put_generate_through_the_server(server: tuple[RealServer, dict],
                                         tmp_path: Path) -> None:
    """The server makes the value (``POST …/generate``): it never crosses the network to
    the writer, who could not read it back anyway."""
    srv, t = server
    home = tmp_path / "home"
    out = json.loads(ok(ks(srv, home, t["ops"], "put", "session_secret", "--org", ORG,
                           "--generate", "--length", "40", "--alphabet", "alnum",
                           "--json")))
    assert (out["version"], out["generated"]) == (1, True)
    value = ok(ks(srv, home, t["app"], "get", "session_secret", "--org", ORG))
    assert len(value) == 40
    assert value.isalnum()
    p = ks(srv, home, t["ops"], "put", "openai_api_key", "--org", ORG, "--generate")
    assert p.returncode == 2
    assert b"issued by openai" in p.stderr
    with KeysafeClient(srv.url, t["ops"]) as c:
        assert c.generate("session_secret", ORG, expected_version=1) == 2
    assert ok(ks(srv, home, t["app"], "get", "session_secret", "--org", ORG)) != value


def test_tokens_and_the_audit_log_through_the_server(server: tuple[RealServer, dict],
                                                     tmp_path: Path) -> None:
    """An admin runs `keysafe token` and `keysafe audit` from a laptop: the server
    makes, lists and revokes tokens within the admin's orgs, and answers audit queries;
    nothing is stored on this side."""
    srv, t = server
    home = tmp_path / "home"
    made = json.loads(ok(ks(srv, home, t["boss"], "token", "create", "--name", "ci-deploy",
                            "--role", "writer", "--org", ORG, "--expires-in-days", "30",
                            "--cidr", "127.0.0.1/32", "--json")))
    assert made["token"].startswith("ks_")
    assert (made["roles"], made["orgs"], made["cidrs"]) == (["writer"], [ORG],
                                                            ["127.0.0.1/32"])
    assert made["created_by"] == "token:boss"
    # The new token works through the CLI too.
    ok(ks(srv, home, made["token"], "put", "deploy-key", "--org", ORG,
          stdin=b"deploy-" + b"k" * 20))
    # The people's form: the token on stdout only, the rest on stderr.
    p = ks(srv, home, t["boss"], "token", "create", "--name", "second", "--role", "viewer",
           "--org", ORG)
    second = ok(p).strip()
    assert second.startswith("ks_")
    assert "created token" in p.stderr.decode()
    listed = json.loads(ok(ks(srv, home, t["boss"], "token", "list", "--json")))
    names = {x["name"] for x in listed}
    assert {"ci-deploy", "second", "boss", "ops"} <= names
    assert "both" not in names      # it covers globex too, which boss does not administer
    assert all("token" not in x for x in listed)
    table_out = ok(ks(srv, home, t["boss"], "token", "list"))
    assert "ci-deploy" in table_out
    assert made["token"] not in table_out
    # Revoke: at once, and a second time says so.
    revoked = json.loads(ok(ks(srv, home, t["boss"], "token", "revoke", made["id"],
                               "--json")))
    assert revoked["revoked_at"]
    p = ks(srv, home, made["token"], "status", "deploy-key", "--org", ORG)
    assert p.returncode == 4
    assert "already revoked" in said(ks(srv, home, t["boss"], "token", "revoke", made["id"]))
    p = ks(srv, home, t["boss"], "token", "revoke", "0123456789ab")
    assert p.returncode == 3
    # A writer may not make tokens; an org admin may not make service tokens.
    p = ks(srv, home, t["ops"], "token", "create", "--name", "x", "--role", "writer",
           "--org", ORG)
    assert p.returncode == 4
    p = ks(srv, home, t["boss"], "token", "create", "--name", "x", "--role", "service",
           "--org", ORG)
    assert p.returncode == 4
    assert b"service tokens" in p.stderr
    # The audit log: oldest first, the org's records only, never a value or a hash.
    lines = ok(ks(srv, home, t["boss"], "audit", "--org", ORG, "--json")).splitlines()
    records = [json.loads(x) for x in lines]
    assert records
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)
    assert {r["org"] for r in records} == {ORG}
    assert any(r["action"] == "token_revoke" and r["actor"] == "token:boss"
               for r in records)
    assert all("hash" not in r for r in records)
    writes = json.loads(ok(ks(srv, home, t["boss"], "audit", "--org", ORG, "--action",
                              "write", "--limit", "1", "--json")))
    assert writes["action"] == "write"
    assert "deploy-key" in ok(ks(srv, home, t["boss"], "audit", "--org", ORG))
    # An org admin must name its org; a bad filter is refused before anything is sent.
    p = ks(srv, home, t["boss"], "audit")
    assert p.returncode == 4
    p = ks(srv, home, t["boss"], "audit", "--since", "yesterday-ish")
    assert p.returncode == 2
    everything = ok(ks(srv, home, t["root"], "audit", "--json"))
    assert b"deploy-" + b"k" * 20 not in everything.encode()
    assert not home.exists()
    # The access report, as on the store: JSON, a table, --check.
    rep = json.loads(ok(ks(srv, home, t["boss"], "audit", "report", "--org", ORG, "--json")))
    assert set(rep) == {"since", "until", "org", "totals", "actors", "findings", "secrets",
                        "unread"}
    assert rep["org"] == ORG
    assert "token:boss" in {a["actor"] for a in rep["actors"]}
    assert rep["since"].endswith("+00:00")
    assert "token:boss" in ok(ks(srv, home, t["boss"], "audit", "report", "--org", ORG))
    p = ks(srv, home, t["boss"], "audit", "report", "--org", ORG, "--check")
    assert p.returncode == (1 if rep["findings"] else 0)
    assert ks(srv, home, t["ops"], "audit", "report", "--org", ORG).returncode == 4
    # The same through the library's client.
    with KeysafeClient(srv.url, t["boss"]) as client:
        newest = client.audit(org=ORG, limit=2)
        assert len(newest) == 2
        assert newest[0]["seq"] > newest[1]["seq"]
        made = client.create_token("from-client", ["viewer"], [ORG])
        assert made["token"].startswith("ks_")
        assert client.revoke_token(made["id"])["revoked_at"]
        assert "from-client" in {x["name"] for x in client.tokens()}


def test_remote_admin_pages_normalises_and_never_repeats_a_token(
        server: tuple[RealServer, dict], tmp_path: Path) -> None:
    """What a review found: every matching audit record comes back (page by page, not
    the first 1,000), times read as the store's JSON writes them, and a whole token
    given where its id belongs is refused without being repeated or sent."""
    srv, t = server
    home = tmp_path / "home"
    org = "pager"
    with httpx.Client(base_url=srv.url, headers=bearer(srv.token), timeout=30) as c:
        for _ in range(1005):
            assert c.get(f"/api/secrets/{org}/nothing-here").status_code == 200
    records = [json.loads(x) for x in
               ok(ks(srv, home, t["root"], "audit", "--org", org, "--action", "status",
                     "--json")).splitlines()]
    assert len(records) == 1005
    assert len({r["seq"] for r in records}) == 1005
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)
    assert records[0]["ts"].endswith("+00:00")
    newest = json.loads(ok(ks(srv, home, t["root"], "audit", "--org", org, "--action",
                              "status", "--limit", "1", "--json")))
    assert newest["seq"] == records[-1]["seq"]
    assert len(ok(ks(srv, home, t["root"], "audit", "--org", org, "--limit", "1002",
                     "--json")).splitlines()) == 1002
    made = json.loads(ok(ks(srv, home, t["root"], "token", "create", "--name", "pasted",
                            "--role", "viewer", "--org", org, "--json")))
    assert made["created_at"].endswith("+00:00")
    for extra in ({}, {"KEYSAFE_SERVER_URL": ""}):
        p = ks(srv, home, t["root"], "token", "revoke", made["token"], extra=extra)
        assert p.returncode == 3
        assert made["token"].encode() not in p.stdout + p.stderr
        assert b"a token itself is never an id" in p.stderr
    with KeysafeClient(srv.url, t["root"]) as client:
        with pytest.raises(NotFound) as err:
            client.revoke_token(made["token"])
        assert made["token"] not in str(err.value)
        with pytest.raises(InvalidValue, match="limit"):
            client.audit(limit=1001)
        assert client.revoke_token(made["id"])["already_revoked"] is False
        assert client.revoke_token(made["id"])["already_revoked"] is True
    r = httpx.delete(f"{srv.url}/api/tokens/{made['token']}", headers=bearer(srv.token))
    assert r.status_code == 404
    assert made["token"] not in r.text


STAND_IN_CATALOG = {"naming_template": "{app}/{env}/{org}/{domain}/{name}",
                    "environment": "local", "app": "keysafe", "default_domain": "shared"}
FAKE_TOKEN = "ks_" + "0" * 12 + "_x"


@contextmanager
def stand_in(answer: Callable[[str], Any]) -> Iterator[Any]:
    """A stand-in keysafe server on loopback that answers every request with
    ``answer(path)`` as JSON (the path without its query); yields an object with its
    ``url``, as ``ks`` takes a server."""
    import http.server
    import threading
    import types

    class Odd(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = json.dumps(answer(self.path.split("?")[0])).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _answer

        def log_message(self, *a: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Odd)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield types.SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_address[1]}")
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_server_answering_nonsense_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    """A stand-in on loopback that answers every admin route with JSON of the wrong
    shape: the client says so (BackendUnavailable, exit 7), and shows nothing as if it
    were a token list."""
    from datetime import UTC, datetime, timedelta

    with stand_in(lambda path: STAND_IN_CATALOG if path == "/api/catalog" else {}) as fake:
        with KeysafeClient(fake.url, FAKE_TOKEN) as client:
            for call in (client.tokens, lambda: client.audit(),
                         lambda: client.access_report(since=datetime.now(UTC)),
                         lambda: client.rotate("x", "o"), lambda: client.delete_org("o"),
                         lambda: client.create_token("n", ["viewer"], ["o"]),
                         lambda: client.revoke_token("0123456789ab")):
                with pytest.raises(BackendUnavailable, match="answered with something"):
                    call()
            with pytest.raises(BackendUnavailable, match="answered with something"):
                client.audit_anchor()
            # A server that does not say it takes dry_run would remove the org instead;
            # one that does not list the routes has none of them.
            later = datetime.now(UTC) + timedelta(days=1)
            for call in (lambda: client.delete_org("o", dry_run=True), client.orgs,
                         lambda: client.restore_org("o"), lambda: client.audit_verify(),
                         lambda: client.put("x_key", "v" * 20, "o", expires_at=later),
                         lambda: client.mark_exposed("x_key", "o", where="a file")):
                with pytest.raises(ConfigError, match="older than this keysafe"):
                    call()
        for args in (["token", "list", "--json"], ["audit", "--json"],
                     ["audit", "report", "--json"], ["rotate", "x", "--org", "o"],
                     ["org", "rm", "o", "--yes"], ["audit", "anchor"],
                     ["token", "create", "--name", "n", "--role", "viewer", "--org", "o"]):
            p = ks(fake, tmp_path / "home", FAKE_TOKEN, *args)
            assert p.returncode == 7, (args, p.stderr)
            assert p.stdout == b""
        for args in (["org", "ls"], ["org", "restore", "o"], ["audit", "verify"]):
            p = ks(fake, tmp_path / "home", FAKE_TOKEN, *args)
            assert p.returncode == 8, (args, p.stderr)
            assert b"upgrade it first" in p.stderr


def test_an_expiry_through_the_server(server: tuple[RealServer, dict],
                                      tmp_path: Path) -> None:
    """`put --expires` and `tag --expires` with KEYSAFE_SERVER_URL: the server keeps the
    expiry, as the store would."""
    srv, t = server
    home = tmp_path / "home"
    ok(ks(srv, home, t["ops"], "put", "expiring_key", "--org", ORG, "--expires", "30d",
          stdin=CANARY.encode()))
    st = json.loads(ok(ks(srv, home, t["ops"], "status", "expiring_key", "--org", ORG,
                          "--json")))
    assert st["expires_at"] is not None
    ok(ks(srv, home, t["ops"], "tag", "expiring_key", "--org", ORG, "--expires",
          "2099-01-01T00:00:00Z"))
    st = json.loads(ok(ks(srv, home, t["ops"], "status", "expiring_key", "--org", ORG,
                          "--json")))
    assert st["expires_at"].startswith("2099-01-01T00:00:00")
    assert st["current_version"] == 1
    assert not home.exists()


def test_odd_answers_to_the_org_and_chain_routes_are_unavailable(tmp_path: Path) -> None:
    """A stand-in that lists every feature but answers of the wrong shape: a chain it
    calls intact while naming problems, counts that are not numbers, a catalog whose
    features are a string. The client says so (exit 7); never "intact", never a crash."""
    from keysafe.client import FEATURES

    answers = {
        "/api/audit/verify": {"ok": True, "checked": 3,
                              "problems": [{"seq": 2, "problem": "edited"}], "notes": []},
        "/api/orgs": {"orgs": [{"org": "o", "secrets": "2", "deleted": 0, "domains": []}]},
        "/api/orgs/o/restore": {"organization_id": "o", "dry_run": True, "secrets": [],
                                "summary": {}},
    }
    catalog: dict[str, Any] = {**STAND_IN_CATALOG, "features": list(FEATURES)}
    with stand_in(lambda path: catalog if path == "/api/catalog"
                  else answers.get(path, {})) as fake:
        with KeysafeClient(fake.url, FAKE_TOKEN) as client:
            for call in (client.audit_verify, client.orgs, lambda: client.restore_org("o"),
                         lambda: client.mark_exposed("x_key", "o", where="a file")):
                with pytest.raises(BackendUnavailable, match="answered with something"):
                    call()
        for args in (["audit", "verify"], ["org", "ls"], ["org", "restore", "o"]):
            p = ks(fake, tmp_path / "home", FAKE_TOKEN, *args)
            assert p.returncode == 7, (args, p.stderr)
            assert b"intact" not in p.stdout
        catalog["features"] = "org_list,audit_verify"  # a string is not a list of names
        p = ks(fake, tmp_path / "home", FAKE_TOKEN, "org", "ls")
        assert p.returncode == 7, p.stderr


def test_rotate_one_secret_through_the_server(server: tuple[RealServer, dict],
                                              tmp_path: Path) -> None:
    """`keysafe rotate NAME --org ORG` with KEYSAFE_SERVER_URL: the server makes the new
    value (nobody sees it); a key only a person can issue gets a reminder, as on the
    store; what works on a store only is refused before anything is sent."""
    srv, t = server
    home = tmp_path / "home"
    ok(ks(srv, home, t["ops"], "put", "jwt_secret", "--org", ORG, "--generate"))
    out = json.loads(ok(ks(srv, home, t["ops"], "rotate", "jwt_secret", "--org", ORG,
                           "--json")))
    (result,) = out["results"]
    assert (result["outcome"], result["version"], result["name"]) == ("rotated", 2,
                                                                       "jwt_secret")
    assert result["path"] == f"keysafe/local/{ORG}/shared/jwt_secret"
    assert out["summary"] == {"rotated": 1}
    ok(ks(srv, home, t["ops"], "put", "anthropic_api_key", "--org", ORG,
          stdin=b"sk-ant-" + b"r" * 40))
    p = ks(srv, home, t["ops"], "rotate", "anthropic_api_key", "--org", ORG)
    assert "reminder" in ok(p)
    plan = json.loads(ok(ks(srv, home, t["ops"], "rotate", "jwt_secret", "--org", ORG,
                            "--dry-run", "--json")))
    (row,) = plan["results"]
    assert (row["outcome"], row["detail"]) == ("planned", "rotator random; ok")
    assert ks(srv, home, t["ops"], "rotate", "jwt_secret", "--org", ORG, "--read-by",
              "token:x").returncode == 2  # --read-by narrows a selection
    # A selection across every org, and retiring: the server's admins of every org only.
    assert ks(srv, home, t["ops"], "rotate", "all").returncode == 4
    assert ks(srv, home, t["ops"], "rotate", "retire").returncode == 4
    assert ks(srv, home, t["ops"], "rotate", "no-such-secret", "--org", ORG).returncode == 3
    assert ks(srv, home, t["app"], "rotate", "jwt_secret", "--org", ORG).returncode == 4
    assert not home.exists()


def test_offboard_an_org_through_the_server(server: tuple[RealServer, dict],
                                            tmp_path: Path) -> None:
    """`keysafe org rm` with KEYSAFE_SERVER_URL: the question, a dry run, the removal and
    the tokens revoked, as on the store; no value anywhere."""
    srv, _ = server
    home = tmp_path / "home"
    org = "leaving"
    with httpx.Client(base_url=srv.url, headers=bearer(srv.token), timeout=30) as c:
        for name in ("openai_api_key", "stripe_secret_key"):
            c.put(f"/api/secrets/{org}/{name}", json={"secret_value": CANARY,
                                                      "check_format": False})
        c.put(f"/api/secrets/{org}/webhook_secret", json={"secret_value": CANARY,
                                                          "domain_id": "billing"})
        r = c.post("/api/tokens", json={"name": "leaving-app", "roles": ["viewer"],
                                        "orgs": [org]})
        leaving_token = r.json()["token"]
        boss = c.post("/api/tokens", json={"name": "leaving-boss", "roles": ["admin"],
                                           "orgs": [org]}).json()["token"]
    # Declined: nothing changes (exit 1); the question gives the counts.
    p = ks(srv, home, boss, "org", "rm", org, stdin=b"n\n")
    assert p.returncode == 1
    assert (b"Delete 3 secret(s) of leaving in local and revoke 2 token(s) (among them the "
            b"token this command uses") in p.stderr
    plan = json.loads(ok(ks(srv, home, boss, "org", "rm", org, "--dry-run", "--json")))
    assert plan["summary"] == {"would_delete": 3}
    with httpx.Client(base_url=srv.url, headers=bearer(srv.token), timeout=30) as c:
        removals = c.get("/api/audit", params={"org_id": org, "action": "org_remove"})
        assert removals.json()["records"] == []         # a dry run records no removal
        answer = c.delete(f"/api/orgs/{org}", params={"dry_run": "true"}).json()
        assert (answer["dry_run"], answer["recovery_window_days"]) == (True, 7)
        assert {x["name"] for x in answer["tokens"]} == {"leaving-app", "leaving-boss"}
    assert {x["name"] for x in plan["tokens_revoked"]} == {"leaving-app", "leaving-boss"}
    assert ks(srv, home, leaving_token, "ls", "--org", org).returncode == 0
    # A viewer may not; then the admin does, keeping the tokens.
    assert ks(srv, home, leaving_token, "org", "rm", org, "--yes").returncode == 4
    done = json.loads(ok(ks(srv, home, boss, "org", "rm", org, "--yes", "--keep-tokens",
                            "--json")))
    assert done["summary"] == {"deleted": 3}
    assert done["tokens_revoked"] == []
    assert CANARY.encode() not in json.dumps(done).encode()
    listed = json.loads(ok(ks(srv, home, leaving_token, "ls", "--org", org, "--json")))
    assert listed == []
    # The undoing, through the server too: a dry run, then the restore.
    plan = json.loads(ok(ks(srv, home, boss, "org", "restore", org, "--dry-run", "--json")))
    assert (plan["dry_run"], plan["summary"]) == (True, {"would_restore": 3})
    assert ks(srv, home, leaving_token, "org", "restore", org).returncode == 4  # a viewer
    p = ks(srv, home, srv.token, "org", "restore", "never-removed")
    assert p.returncode == 3
    assert b"no removal to undo" in p.stderr
    assert ks(srv, home, boss, "org", "restore", "never-removed").returncode == 3  # not its org
    p = ks(srv, home, boss, "org", "restore", org)
    assert "restored: 3" in said(p)
    listed = json.loads(ok(ks(srv, home, leaving_token, "ls", "--org", org, "--json")))
    assert {r["path"].rsplit("/", 1)[1] for r in listed} >= {"openai_api_key",
                                                             "stripe_secret_key"}
    assert ks(srv, home, leaving_token, "status", "webhook_secret", "--org", org,
              "--domain", "billing").returncode == 0
    assert not home.exists()


def test_orgs_and_the_audit_chain_through_the_server(server: tuple[RealServer, dict],
                                                     tmp_path: Path) -> None:
    """`keysafe org ls`, `audit anchor` and `audit verify` with KEYSAFE_SERVER_URL: the
    orgs the token covers, and the server's chain checked against anchors kept here."""
    srv, t = server
    home = tmp_path / "home"
    ok(ks(srv, home, t["ops"], "put", "org_ls_key", "--org", ORG, stdin=CANARY.encode()))
    ok(ks(srv, home, t["cards"], "put", "org_ls_card", "--org", ORG, "--domain", "cards",
          stdin=CANARY.encode()))
    ok(ks(srv, home, t["root"], "put", "org_ls_key", "--org", "zz-other",
          stdin=CANARY.encode()))
    everything = json.loads(ok(ks(srv, home, t["root"], "org", "ls", "--json")))
    mine = next(o for o in everything if o["org"] == ORG)
    assert set(mine) == {"org", "secrets", "deleted", "domains"}
    assert mine["secrets"] >= 2
    assert "zz-other" in {o["org"] for o in everything}
    # A token for acme and globex sees those orgs only; one for a domain, its domain.
    assert ORG in {o["org"] for o in json.loads(ok(ks(srv, home, t["both"], "org", "ls",
                                                      "--json")))} <= {ORG, "globex"}
    cards = json.loads(ok(ks(srv, home, t["cards"], "org", "ls", "--json")))
    assert [(o["org"], o["domains"]) for o in cards] == [(ORG, ["cards"])]
    assert cards[0]["secrets"] >= 1
    assert ORG in ok(ks(srv, home, t["root"], "org", "ls"))  # the table
    # Another environment than the server's is refused before anything is asked.
    for args in (["org", "ls"], ["audit", "verify"], ["audit", "anchor"],
                 ["org", "restore", ORG]):
        p = ks(srv, home, t["root"], *args, "--env", "production")
        assert p.returncode == 8, (args, p.stderr)
        assert b"serves the 'local' environment" in p.stderr
    # An anchor kept here, then the server's chain checked against it.
    anchors = tmp_path / "anchors.jsonl"
    taken = json.loads(ok(ks(srv, home, t["root"], "audit", "anchor", "--out",
                             str(anchors), "--json")))
    assert taken["kind"] == "keysafe-audit-anchor"
    assert json.loads(anchors.read_text())["seq"] == taken["seq"]
    out = json.loads(ok(ks(srv, home, t["root"], "audit", "verify", "--anchors",
                           str(anchors), "--json")))
    assert (out["ok"], out["problems"]) == (True, [])
    assert "intact" in ok(ks(srv, home, t["root"], "audit", "verify"))
    # An anchor that no longer matches: exit 6, naming the record.
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({**taken, "hash": "f" * 64}) + "\n")
    p = ks(srv, home, t["root"], "audit", "verify", "--anchors", str(wrong))
    assert p.returncode == 6
    assert str(taken["seq"]).encode() in p.stdout + p.stderr
    # The chain is every org's: an org's admin may not; archives are checked on a store.
    assert ks(srv, home, t["boss"], "audit", "verify").returncode == 4
    assert ks(srv, home, t["boss"], "audit", "anchor").returncode == 4
    p = ks(srv, home, t["root"], "audit", "verify", "--archive", str(anchors))
    assert p.returncode == 8
    assert b"--archive" in p.stderr
    assert not home.exists()
    for p_ in (anchors, wrong):
        assert CANARY not in p_.read_text()
