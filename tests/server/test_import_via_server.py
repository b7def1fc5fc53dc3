"""`keysafe import` and `keysafe scan --import` through a real ``keysafe serve`` (a
subprocess on loopback) when KEYSAFE_SERVER_URL is set: the server's catalog maps the
variables (a team's entries too), the token's roles decide, values found in the open are
marked exposed through ``POST …/exposed``, and nothing is stored on the laptop."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .serverkit import OPENAI, VALUE_1, VALUE_2, RealServer, bearer, real_server
from .test_cli_via_server import FAKE_TOKEN, KEYSAFE, STAND_IN_CATALOG, ks, ok, stand_in

ORG = "imports"
CANARY = "canary-import-remote-" + "q" * 20
HF = "hf_" + "Zq" * 17
#: A team's own entry, known to the server's catalog file only; its variable is not
#: its name upper-cased.
TEAM_CATALOG = """
[[secret]]
name = "acme_ledger_token"
display_name = "Acme ledger token"
category = "integrations"
env_var = "LEDGER_API_TOKEN"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RealServer, dict]]:
    root = tmp_path_factory.mktemp("import-remote")
    catalog = root / "team-catalog.toml"
    catalog.write_text(TEAM_CATALOG)
    with real_server(root / "home", KEYSAFE_CATALOG_FILE=str(catalog)) as srv:
        tokens = {"root": srv.token}
        with httpx.Client(base_url=srv.url, headers=bearer(srv.token), timeout=30) as c:
            for label, roles in [("ops", ["writer"]), ("app", ["service", "viewer"]),
                                 ("look", ["viewer"]), ("rw", ["writer", "service"])]:
                r = c.post("/api/tokens", json={"name": label, "roles": roles,
                                                "orgs": [ORG]})
                assert r.status_code == 201, r.text
                tokens[label] = r.json()["token"]
        yield srv, tokens


def api(srv: RealServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers=bearer(token), timeout=30)


def status(srv: RealServer, token: str, name: str) -> dict[str, Any]:
    with api(srv, token) as c:
        r = c.get(f"/api/secrets/{ORG}/{name}")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data


def value(srv: RealServer, token: str, name: str) -> str:
    with api(srv, token) as c:
        r = c.get(f"/api/secrets/{ORG}/{name}/value")
        assert r.status_code == 200, r.text
        return str(r.json()["value"])


def no_value(p: subprocess.CompletedProcess[bytes], *values: str) -> None:
    for v in values:
        assert v.encode() not in p.stdout + p.stderr


def test_import_a_file_through_the_server(server: tuple[RealServer, dict],
                                          tmp_path: Path) -> None:
    srv, t = server
    home = tmp_path / "home"
    env_file = tmp_path / "app.env"
    env_file.write_text(f"OPENAI_API_KEY={VALUE_1}\nHF_TOKEN={HF}\n"
                        f"LEDGER_API_TOKEN={CANARY}\nDEBUG=1\nKEYSAFE_MASTER_KEY=x\n")
    # A dry run writes nothing, and says what would happen.
    dry = ok(ks(srv, home, t["ops"], "import", str(env_file), "--org", ORG, "--dry-run",
                "--json"))
    plan = {i["variable"]: i["status"] for i in json.loads(dry)["items"]}
    assert plan == {"OPENAI_API_KEY": "would_import", "HF_TOKEN": "would_import",
                    "LEDGER_API_TOKEN": "would_import", "DEBUG": "unknown",
                    "KEYSAFE_MASTER_KEY": "skipped"}
    assert status(srv, t["app"], OPENAI)["configured"] is False
    # The import itself: the server's catalog maps the variables, the team's entry too
    # (this CLI's own catalog does not know LEDGER_API_TOKEN).
    p = ks(srv, home, t["ops"], "import", str(env_file), "--org", ORG, "--json")
    doc = json.loads(ok(p))
    no_value(p, VALUE_1, HF, CANARY)
    got = {i["variable"]: (i["status"], i["name"], i["path"]) for i in doc["items"]}
    assert got["OPENAI_API_KEY"] == ("imported", OPENAI,
                                     f"keysafe/local/{ORG}/shared/{OPENAI}")
    assert got["HF_TOKEN"][:2] == ("imported", "hf_api_token")
    assert got["LEDGER_API_TOKEN"][:2] == ("imported", "acme_ledger_token")
    assert doc["domain"] == "shared"
    assert value(srv, t["app"], OPENAI) == VALUE_1
    assert value(srv, t["app"], "acme_ledger_token") == CANARY
    # The variable the app read it as is kept, as on a store (HF_TOKEN, not HF_API_TOKEN).
    assert status(srv, t["app"], "hf_api_token")["tags"]["env_var"] == "HF_TOKEN"
    assert status(srv, t["app"], OPENAI)["updated_by"] == "token:ops"
    # Again: each one exists, so it is skipped; --overwrite writes a new version.
    doc = json.loads(ok(ks(srv, home, t["ops"], "import", str(env_file), "--org", ORG,
                           "--json")))
    assert {i["status"] for i in doc["items"] if i["name"] == OPENAI} == {"skipped"}
    env_file.write_text(f"OPENAI_API_KEY={VALUE_2}\n")
    doc = json.loads(ok(ks(srv, home, t["ops"], "import", str(env_file), "--org", ORG,
                           "--overwrite", "--json")))
    assert [(i["status"], i["version"]) for i in doc["items"]] == [("imported", 2)]
    assert value(srv, t["app"], OPENAI) == VALUE_2
    # `export` through the server gives the app back the variables it read, by the
    # server's catalog too (no env_var tag was needed for LEDGER_API_TOKEN).
    assert "env_var" not in status(srv, t["app"], "acme_ledger_token")["tags"]
    out = ok(ks(srv, home, t["app"], "export", "--org", ORG, "--format", "json"))
    exported = json.loads(out)
    assert exported["LEDGER_API_TOKEN"] == CANARY
    assert exported["HF_TOKEN"] == HF
    # A catalog file set here wins, as any setting given here does.
    local = tmp_path / "local-catalog.toml"
    local.write_text(TEAM_CATALOG.replace("LEDGER_API_TOKEN", "LOCAL_LEDGER"))
    exported = json.loads(ok(ks(srv, home, t["app"], "export", "--org", ORG, "--format",
                                "json", extra={"KEYSAFE_CATALOG_FILE": str(local)})))
    assert exported["LOCAL_LEDGER"] == CANARY
    assert "LEDGER_API_TOKEN" not in exported
    # Nothing was made on this side: no store, no master key.
    assert not home.exists()


def test_exposed_values_already_stored(server: tuple[RealServer, dict],
                                       tmp_path: Path) -> None:
    """A value that was in the open and is stored already: a token that may read
    compares, as on a store; a writer's (blind) cannot, so the secret is left as it is
    and the row says why; no read is tried, so no denial is recorded."""
    srv, t = server
    home = tmp_path / "home"
    same, other = "xoxp-" + "5" * 30, "xoxp-" + "6" * 30
    with api(srv, t["ops"]) as c:
        for name, v in (("deepgram_api_key", same), ("elevenlabs_api_key", CANARY)):
            r = c.put(f"/api/secrets/{ORG}/{name}",
                      json={"secret_value": v, "check_format": False})
            assert r.status_code == 200, r.text
    env_file = tmp_path / "open.env"
    env_file.write_text(f"DEEPGRAM_API_KEY={other}\n")
    # A reader and writer compares: another value is not marked.
    doc = json.loads(ok(ks(srv, home, t["rw"], "import", str(env_file), "--org", ORG,
                           "--exposed", "--json")))
    assert doc["items"][0]["status"] == "skipped"
    assert status(srv, t["app"], "deepgram_api_key")["exposed"] is False
    env_file.write_text(f"DEEPGRAM_API_KEY={same}\nELEVENLABS_API_KEY={other}\n")
    doc = json.loads(ok(ks(srv, home, t["rw"], "import", str(env_file), "--org", ORG,
                           "--exposed", "--json")))
    assert "the same value: marked exposed" in doc["items"][0]["reason"]
    assert status(srv, t["app"], "deepgram_api_key")["exposed"] is True
    assert status(srv, t["app"], "elevenlabs_api_key")["exposed"] is False
    # A writer cannot read, so it cannot compare: not marked (the stored value may be
    # another one, which the scheduler would rotate), saying why, with no read tried.
    p = ks(srv, home, t["ops"], "import", str(env_file), "--org", ORG, "--exposed",
           "--json")
    items = {i["variable"]: i for i in json.loads(ok(p))["items"]}
    assert "may not read the stored value to compare it: not marked exposed" in \
        items["ELEVENLABS_API_KEY"]["reason"]
    assert status(srv, t["app"], "elevenlabs_api_key")["exposed"] is False
    no_value(p, same, other, CANARY)
    with api(srv, t["root"]) as c:
        r = c.get("/api/audit", params={"org_id": ORG, "actor": "token:ops",
                                        "outcome": "denied"})
    assert r.json()["records"] == []


def test_overwrite_keeps_a_configured_rotator(server: tuple[RealServer, dict],
                                              tmp_path: Path) -> None:
    """`import --overwrite` of a secret with rotation settings: the server keeps them
    (they are never sent), and the env_var tag is written as on a store."""
    srv, t = server
    home = tmp_path / "home"
    env_file = tmp_path / "rot.env"
    env_file.write_text(f"HUGGINGFACE_TOKEN={HF}\n")
    ok(ks(srv, home, t["ops"], "import", str(env_file), "--org", ORG, "--domain", "rot"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSAFE_")}
    env.update(KEYSAFE_HOME=str(srv.home), KEYSAFE_CATALOG_FILE=srv.env["KEYSAFE_CATALOG_FILE"])
    subprocess.run([KEYSAFE, "rotate", "configure", "hf_api_token", "--org", ORG,
                    "--domain", "rot", "--rotator", "manual"], env=env, check=True,
                   capture_output=True, timeout=120)
    env_file.write_text(f"HF_TOKEN={HF[:-1]}x\n")
    doc = json.loads(ok(ks(srv, home, t["ops"], "import", str(env_file), "--org", ORG,
                           "--domain", "rot", "--overwrite", "--json")))
    assert [(i["status"], i["version"]) for i in doc["items"]] == [("imported", 2)]
    with api(srv, t["app"]) as c:
        st = c.get(f"/api/secrets/{ORG}/hf_api_token", params={"domain_id": "rot"}).json()
    assert st["tags"] == {"env_var": "HF_TOKEN", "rotator": "manual"}


def test_refusals_come_from_the_server(server: tuple[RealServer, dict],
                                       tmp_path: Path) -> None:
    srv, t = server
    home = tmp_path / "home"
    env_file = tmp_path / "refused.env"
    stripe = "sk_test_" + "Zq9" * 10
    env_file.write_text(f"STRIPE_SECRET_KEY={stripe}\n")
    # A viewer may not write: the item fails with the server's refusal (exit 4).
    p = ks(srv, home, t["look"], "import", str(env_file), "--org", ORG)
    assert p.returncode == 4, p.stderr
    no_value(p, stripe)
    assert status(srv, t["app"], "stripe_secret_key")["configured"] is False
    # A value the (server's) catalog's format check refuses: exit 2, naming why.
    env_file.write_text(f"STRIPE_SECRET_KEY={CANARY}\n")
    p = ks(srv, home, t["ops"], "import", str(env_file), "--org", ORG, "--json")
    assert p.returncode == 2, p.stderr
    (item,) = json.loads(p.stdout)["items"]
    assert item["status"] == "failed"
    assert "Stripe" in item["reason"]
    no_value(p, CANARY)
    # Another environment than the server's: refused before anything is sent.
    p = ks(srv, home, t["ops"], "import", str(env_file), "--org", ORG, "--env", "production")
    assert p.returncode == 8
    assert b"serves the 'local' environment" in p.stderr


def test_from_env_and_exposed_through_the_server(server: tuple[RealServer, dict],
                                                 tmp_path: Path) -> None:
    srv, t = server
    home = tmp_path / "home"
    p = ks(srv, home, t["ops"], "import", "--from-env", "--org", ORG, "--exposed",
           "--domain", "env", "--json", extra={"SLACK_BOT_TOKEN": "xoxb-" + "1" * 30})
    doc = json.loads(ok(p))
    (item,) = [i for i in doc["items"] if i["status"] == "imported"]
    assert item["name"] == "slack_bot_token"
    assert "marked exposed" in item["reason"]
    with api(srv, t["app"]) as c:
        st = c.get(f"/api/secrets/{ORG}/slack_bot_token", params={"domain_id": "env"}).json()
    assert st["exposed"] is True
    assert st["rotation_overdue"] is True
    assert st["tags"]["exposed"] == "the environment"


def test_scan_import_through_the_server(server: tuple[RealServer, dict],
                                        tmp_path: Path) -> None:
    srv, t = server
    work = tmp_path / "project"
    work.mkdir()
    gh = "ghp_" + "Zk3qR8vT2mW9xY4pL7nB5cD1fG6hJ0sA1eU2"
    (work / "app.py").write_text(f'GITHUB_TOKEN = "{gh}"\n')
    p = ks(srv, tmp_path / "home", t["ops"], "scan", str(work), "--import", "--org", ORG,
           "--yes", "--json")
    assert p.returncode == 0, p.stderr
    no_value(p, gh)
    (item,) = json.loads(p.stdout)["imports"]
    assert (item["status"], item["reference"]) == ("imported",
                                                   f"keysafe://{ORG}/shared/github_token")
    assert (work / "app.py").read_text() == \
        f'GITHUB_TOKEN = "keysafe://{ORG}/shared/github_token"\n'
    assert value(srv, t["app"], "github_token") == gh
    st = status(srv, t["app"], "github_token")
    assert st["exposed"] is True
    assert st["tags"]["exposed"].endswith("app.py:1")
    # A writer cannot compare with what is stored: another name, never a failure.
    with api(srv, t["ops"]) as c:
        r = c.put(f"/api/secrets/{ORG}/acme_ledger_token", json={"secret_value": CANARY})
        assert r.status_code == 200, r.text
    ledger = "lt_" + "aZ3kP9qX2mW7vB4nR8tY6uJ1cE5hL0sD"
    (work / "more.py").write_text(f'GITHUB_TOKEN = "{gh}"\n'
                                  f'LEDGER_API_TOKEN = "{ledger}"\n')
    p = ks(srv, tmp_path / "home", t["ops"], "scan", str(work), "--import", "--org", ORG,
           "--yes", "--json")
    assert p.returncode == 0, p.stderr
    imports = json.loads(p.stdout)["imports"]
    got = {i["name"] for i in imports}
    # The variable only the server's catalog knows takes the server's name.
    assert got == {"github_token_2", "acme_ledger_token_2"}
    (gh2,) = [i for i in imports if i["name"] == "github_token_2"]
    assert "github_token already stored: this token may not read it to compare" in \
        gh2["reason"]
    no_value(p, gh, ledger)
    assert not (tmp_path / "home").exists()


def test_the_exposed_route(server: tuple[RealServer, dict]) -> None:
    srv, t = server
    with api(srv, t["ops"]) as c:
        r = c.put(f"/api/secrets/{ORG}/jwt_secret", json={"secret_value": CANARY * 2})
        assert r.status_code == 200, r.text
        url = f"/api/secrets/{ORG}/jwt_secret/exposed"
        # Bad input: 422 naming the field, nothing changed.
        for body in ({}, {"where": ""}, {"where": "  "}, {"where": "a\nb"},
                     {"where": "x" * 257}, {"where": "ok", "extra": 1}):
            r = c.post(url, json=body)
            assert r.status_code == 422, (body, r.text)
        assert status(srv, t["app"], "jwt_secret")["exposed"] is False
        # Not stored: 404; a viewer may not: 403.
        assert c.post(f"/api/secrets/{ORG}/nothing_here/exposed",
                      json={"where": "x"}).status_code == 404
    with api(srv, t["look"]) as c:
        assert c.post(url, json={"where": "x"}).status_code == 403
    with api(srv, t["ops"]) as c:
        r = c.post(url, json={"where": "ticket SEC-12"})
        assert r.status_code == 200, r.text
        st = r.json()
        assert (st["exposed"], st["rotation_overdue"], st["version"]) == (True, True, 1)
        assert st["tags"]["exposed"] == "ticket SEC-12"
        assert CANARY not in r.text
    # Recorded as a metadata change naming the tag, by the token; never the value.
    with api(srv, t["root"]) as c:
        r = c.get("/api/audit", params={"org_id": ORG, "action": "update_metadata"})
        assert r.status_code == 200, r.text
        assert CANARY not in r.text
        recs = [x for x in r.json()["records"] if x["path"].endswith("/jwt_secret")]
    assert recs
    assert recs[0]["actor"] == "token:ops"
    assert "exposed" in json.dumps(recs[0]["detail"])


def test_an_older_server_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """A stand-in server on loopback that lacks the route (its catalog lists no
    ``mark_exposed``): an import that would mark values exposed is refused (exit 8)
    before any write is sent; a plain import goes ahead."""
    seen: list[str] = []

    def answer(path: str) -> Any:
        seen.append(path)
        if path == "/api/catalog":
            return {**STAND_IN_CATALOG, "features": [], "categories": {}}
        return {}

    env_file = tmp_path / "old.env"
    env_file.write_text("SOME_VAR=1\n")
    with stand_in(answer) as fake:
        p = ks(fake, tmp_path / "home", FAKE_TOKEN, "import", str(env_file), "--org", ORG,
               "--exposed")
        assert p.returncode == 8, p.stderr
        assert b"upgrade it first" in p.stderr
        assert seen == ["/api/catalog"]
