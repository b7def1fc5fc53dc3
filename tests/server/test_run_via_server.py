"""``keysafe run`` and ``keysafe export`` through a real ``keysafe serve`` (a subprocess on
loopback) with a service token, not the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .serverkit import OPENAI, VALUE_1, VALUE_2, RealServer, bearer, real_server

KEYSAFE = str(Path(sys.executable).parent / "keysafe")
CANARY = "canary-via-server-\u00e9\n'$x'"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RealServer, dict]]:
    home = tmp_path_factory.mktemp("srv") / "home"
    with real_server(home) as srv:
        admin = bearer(srv.token)
        with httpx.Client(base_url=srv.url, headers=admin, timeout=30) as c:
            for org, name, value, domain in [("acme", OPENAI, VALUE_1, None),
                                             ("acme", "db-pass", CANARY, None),
                                             ("acme", "billing-key", "b" * 12, "billing"),
                                             ("globex", OPENAI, VALUE_2, None)]:
                body = {"secret_value": value, **({"domain_id": domain} if domain else {})}
                r = c.put(f"/api/secrets/{org}/{name}", json=body)
                assert r.status_code == 200, r.text
            tokens = {}
            for label, roles, orgs in [("runner", ["service", "viewer"], ["acme"]),
                                       ("reader", ["service"], ["acme"]),
                                       ("viewer", ["viewer"], ["acme"])]:
                r = c.post("/api/tokens", json={"name": label, "roles": roles, "orgs": orgs})
                assert r.status_code == 201, r.text
                tokens[label] = r.json()["token"]
        yield srv, tokens


def ks(tmp_path: Path, token: str | None, *args: str,
       extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSAFE_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["KEYSAFE_HOME"] = str(tmp_path / "client-home")  # never opened in server mode
    if token is not None:
        env["KEYSAFE_TOKEN"] = token
    env.update(extra or {})
    return subprocess.run([KEYSAFE, *args], env=env, capture_output=True, timeout=120)


def env0(p: subprocess.CompletedProcess[bytes]) -> dict[str, str]:
    assert p.returncode == 0, p.stderr
    return dict(item.decode().split("=", 1) for item in p.stdout.split(b"\0") if item)


def test_run_through_the_server(server: tuple[RealServer, dict], tmp_path: Path) -> None:
    srv, tokens = server
    p = ks(tmp_path, tokens["runner"], "run", "--org", "acme", "--via-server", srv.url,
           "--", "env", "-0")
    got = env0(p)
    assert got["OPENAI_API_KEY"] == VALUE_1
    assert got["DB_PASS"] == CANARY
    assert "BILLING_KEY" not in got
    assert not (tmp_path / "client-home").exists()  # no local store was opened
    assert CANARY.encode() not in p.stderr
    assert CANARY not in srv.output()


def test_only_needs_no_list_permission(server: tuple[RealServer, dict],
                                       tmp_path: Path) -> None:
    srv, tokens = server
    got = env0(ks(tmp_path, tokens["reader"], "run", "--org", "acme", "--only",
                  "billing-key", "--domain", "billing", "--via-server", srv.url, "--",
                  "env", "-0"))
    assert got["BILLING_KEY"] == "b" * 12
    # Listing a whole scope needs the viewer role as well.
    p = ks(tmp_path, tokens["reader"], "run", "--org", "acme", "--via-server", srv.url,
           "--", "true")
    assert p.returncode == 4


def test_references_through_the_server(server: tuple[RealServer, dict],
                                       tmp_path: Path) -> None:
    srv, tokens = server
    got = env0(ks(tmp_path, tokens["reader"], "run", "--via-server", srv.url, "--",
                  "env", "-0", extra={"K": "keysafe://acme/shared/openai_api_key"}))
    assert got["K"] == VALUE_1
    # Another org's secret: the token does not cover globex, and the server does not
    # even say whether it exists (tenant isolation): not found.
    p = ks(tmp_path, tokens["reader"], "run", "--via-server", srv.url, "--", "true",
           extra={"K": "keysafe://globex/openai_api_key"})
    assert p.returncode == 3
    assert VALUE_2.encode() not in p.stderr


def test_token_errors(server: tuple[RealServer, dict], tmp_path: Path) -> None:
    srv, tokens = server
    p = ks(tmp_path, None, "run", "--org", "acme", "--via-server", srv.url, "--", "true")
    assert p.returncode == 8
    assert b"KEYSAFE_TOKEN" in p.stderr
    p = ks(tmp_path, "ks_not_a_real_token", "run", "--org", "acme", "--via-server",
           srv.url, "--", "true")
    assert p.returncode == 4
    # A viewer may list but not read values.
    p = ks(tmp_path, tokens["viewer"], "run", "--org", "acme", "--via-server", srv.url,
           "--", "true")
    assert p.returncode == 4
    # --token-env names another variable.
    p = ks(tmp_path, None, "run", "--org", "acme", "--only", "db-pass", "--via-server",
           srv.url, "--token-env", "MY_TOKEN", "--", "sh", "-c", 'test -n "$DB_PASS"',
           extra={"MY_TOKEN": tokens["reader"]})
    assert p.returncode == 0, p.stderr
    p = ks(tmp_path, "x", "run", "--via-server", "http://127.0.0.1:9/", "--", "true",
           extra={"K": "keysafe://acme/x"})
    assert p.returncode == 7


def test_export_through_the_server(server: tuple[RealServer, dict], tmp_path: Path) -> None:
    srv, tokens = server
    p = ks(tmp_path, tokens["runner"], "export", "--org", "acme", "--format", "json",
           "--via-server", srv.url)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"OPENAI_API_KEY": VALUE_1, "DB_PASS": CANARY}


def test_fields_only_leave_the_server_one_by_one(server: tuple[RealServer, dict],
                                                 tmp_path: Path) -> None:
    """A mapping file's table, or a reference with ``#field``, reads just those fields
    (``?field=``): the rest of the JSON credentials never crosses the network. Every
    read of them is audited with its field, none whole."""
    srv, tokens = server
    admin = bearer(srv.token)
    other = "never-sent-field-\u00e9-7c1f"
    creds = {"anthropic": "sk-ant-" + "a" * 20, "port": 5432, "other": other}
    with httpx.Client(base_url=srv.url, headers=admin, timeout=30) as c:
        r = c.put("/api/secrets/acme/llm-keys", json={"secret_value": json.dumps(creds)})
        assert r.status_code == 200, r.text
    mapping = tmp_path / "map.toml"
    mapping.write_text('"llm-keys" = { anthropic = "ANTHROPIC_API_KEY", port = "PORT" }\n')
    got = env0(ks(tmp_path, tokens["runner"], "run", "--org", "acme", "--map",
                  str(mapping), "--via-server", srv.url, "--", "env", "-0",
                  extra={"K": "keysafe://acme/llm-keys#anthropic"}))
    assert (got["ANTHROPIC_API_KEY"], got["PORT"], got["K"]) == (creds["anthropic"],
                                                                 "5432", creds["anthropic"])
    assert other not in "".join(got.values())
    p = ks(tmp_path, tokens["reader"], "export", "--org", "acme", "--only", "llm-keys",
           "--map", str(mapping), "--format", "json", "--via-server", srv.url)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"ANTHROPIC_API_KEY": creds["anthropic"], "PORT": "5432"}
    # A field the value lacks is named, as from the store (exit 3); so is a secret that
    # is not there at all.
    mapping.write_text('"llm-keys" = { anthropic = "A", nope = "B" }\n')
    p = ks(tmp_path, tokens["reader"], "run", "--org", "acme", "--only", "llm-keys",
           "--map", str(mapping), "--via-server", srv.url, "--", "true")
    assert p.returncode == 3
    assert b"no credential field 'nope'" in p.stderr
    mapping.write_text('"gone-keys" = { anthropic = "A" }\n')
    p = ks(tmp_path, tokens["reader"], "run", "--org", "acme", "--only", "gone-keys",
           "--map", str(mapping), "--via-server", srv.url, "--", "true")
    assert p.returncode == 3
    assert b"gone-keys" in p.stderr
    with httpx.Client(base_url=srv.url, headers=admin, timeout=30) as c:
        r = c.get("/api/audit", params={"org_id": "acme", "action": "read_value",
                                        "limit": 1000})
        assert r.status_code == 200, r.text
    reads = [e for e in r.json()["records"] if e["path"].endswith("/llm-keys")]
    assert sorted({(e.get("detail") or {}).get("field") for e in reads}) == [
        "anthropic", "nope", "port"]
    # Fields read together all come from one version: the first one's read says which
    # (version=0), the others ask for it; a single field is a plain read.
    assert {e["version"] for e in reads
            if (e.get("detail") or {}).get("field") in ("port", "nope")} == {1}
    assert other not in srv.output()


def test_with_shared_through_the_server(server: tuple[RealServer, dict],
                                        tmp_path: Path) -> None:
    srv, tokens = server
    got = env0(ks(tmp_path, tokens["runner"], "run", "--org", "acme", "--domain", "billing",
                  "--with-shared", "--via-server", srv.url, "--", "env", "-0"))
    assert got["BILLING_KEY"] == "b" * 12
    assert got["OPENAI_API_KEY"] == VALUE_1  # from the org's shared domain
    got = env0(ks(tmp_path, tokens["reader"], "run", "--org", "acme", "--domain", "billing",
                  "--with-shared", "--only", "openai_api_key,billing-key", "--via-server",
                  srv.url, "--", "env", "-0"))
    assert (got["OPENAI_API_KEY"], got["BILLING_KEY"]) == (VALUE_1, "b" * 12)
