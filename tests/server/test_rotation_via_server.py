"""`keysafe rotate status` through a real ``keysafe serve`` (a subprocess on loopback)
and the route behind it, ``GET /api/rotation``: the server's policy, the same rows as on
its store, only what the token covers, never a value or a rotator's options."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .serverkit import OPENAI, VALUE_1, RealServer, bearer, real_server
from .test_cli_via_server import FAKE_TOKEN, KEYSAFE, STAND_IN_CATALOG, ks, ok, stand_in

CANARY = "canary-rotation-status-" + "r" * 24
HOOK = "https://127.0.0.1:9/rotation-hook-secret-url"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RealServer, dict]]:
    home = tmp_path_factory.mktemp("rotation-remote") / "home"
    # A policy override (jwt secrets every 30 days in acme), so that the rows can only
    # come from the server's own policy.
    with real_server(home, KEYSAFE_ROTATION_OVERRIDES="acme:jwt=30") as srv:
        tokens = {"root": srv.token}
        with httpx.Client(base_url=srv.url, headers=bearer(srv.token), timeout=30) as c:
            for org, domain, name, value in [("acme", None, "jwt_secret", CANARY),
                                             ("acme", None, OPENAI, VALUE_1),
                                             ("acme", "cards", "jwt_secret", CANARY),
                                             ("globex", None, "session_secret", CANARY)]:
                r = c.put(f"/api/secrets/{org}/{name}",
                          json={"secret_value": value, "domain_id": domain})
                assert r.status_code == 200, r.text
            r = c.post(f"/api/secrets/acme/{OPENAI}/exposed", json={"where": "app.py:3"})
            assert r.status_code == 200, r.text
            for label, roles, orgs in [("look", ["viewer"], ["acme"]),
                                       ("acme-admin", ["admin"], ["acme"]),
                                       ("acme-writer", ["writer"], ["acme"]),
                                       ("jwt-writer", ["writer"], ["acme/shared/jwt_*"]),
                                       ("cards-admin", ["admin"], ["acme/cards"]),
                                       ("reader", ["service"], ["acme"]),
                                       ("cards", ["viewer"], ["acme/cards"]),
                                       ("named", ["viewer"], ["acme/shared/jwt_*"]),
                                       ("both", ["viewer"], ["acme", "globex"])]:
                r = c.post("/api/tokens", json={"name": label, "roles": roles, "orgs": orgs})
                assert r.status_code == 201, r.text
                tokens[label] = r.json()["token"]
        # A rotator with an option that must never be shown (a webhook URL).
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSAFE_")}
        env["KEYSAFE_HOME"] = str(home)
        p = subprocess.run([KEYSAFE, "rotate", "configure", "session_secret", "--org",
                            "globex", "--rotator", "webhook", "--option", f"url={HOOK}"],
                           env=env, capture_output=True, timeout=120)
        assert p.returncode == 0, p.stderr
        yield srv, tokens


def states(p: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(ok(p))
    return rows


def test_status_through_the_server_is_the_stores(server: tuple[RealServer, dict],
                                                 tmp_path: Path) -> None:
    srv, t = server
    home = tmp_path / "home"
    remote = states(ks(srv, home, t["root"], "rotate", "status", "--org", "acme", "--json"))
    # The same command on the server's store, with its settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSAFE_")}
    env.update(KEYSAFE_HOME=str(srv.home), KEYSAFE_ROTATION_OVERRIDES="acme:jwt=30")
    local = json.loads(subprocess.run([KEYSAFE, "rotate", "status", "--org", "acme",
                                       "--json"], env=env, capture_output=True,
                                      timeout=120, check=True).stdout)
    assert remote == local
    got = {(s["domain"], s["name"]): s for s in remote}
    assert set(got) == {("shared", "jwt_secret"), ("shared", OPENAI), ("cards", "jwt_secret")}
    jwt = got[("shared", "jwt_secret")]
    assert (jwt["period_days"], jwt["rotator"], jwt["status"]) == (30, "random", "ok")
    exposed = got[("shared", OPENAI)]
    assert (exposed["status"], exposed["exposed"]) == ("overdue", True)
    assert remote[0]["name"] == OPENAI  # overdue first
    # The table, for people.
    table = ok(ks(srv, home, t["root"], "rotate", "status", "--org", "acme"))
    assert "overdue (exposed)" in table
    assert not home.exists()


def test_only_what_the_token_covers(server: tuple[RealServer, dict], tmp_path: Path) -> None:
    srv, t = server
    home = tmp_path / "home"

    def names(token: str, *args: str) -> set[tuple[str, str, str]]:
        rows = states(ks(srv, home, token, "rotate", "status", "--json", *args))
        return {(s["org"], s["domain"], s["name"]) for s in rows}

    every = names(t["root"])
    assert ("globex", "shared", "session_secret") in every
    assert len(every) == 4
    assert names(t["both"]) == every
    assert names(t["look"]) == {r for r in every if r[0] == "acme"}
    assert names(t["cards"]) == {("acme", "cards", "jwt_secret")}
    assert names(t["cards"], "--org", "acme") == {("acme", "cards", "jwt_secret")}
    assert names(t["named"]) == {("acme", "shared", "jwt_secret")}
    assert names(t["root"], "--org", "acme", "--domain", "cards") == {
        ("acme", "cards", "jwt_secret")}
    # An org the token does not cover is not found (exit 3: its existence is not
    # revealed), a domain it does not cover refused (exit 4), as on every route.
    p = ks(srv, home, t["look"], "rotate", "status", "--org", "globex")
    assert p.returncode == 3, p.stderr
    p = ks(srv, home, t["cards"], "rotate", "status", "--org", "acme", "--domain", "shared")
    assert p.returncode == 4, p.stderr


def test_nothing_secret_in_the_answer_and_it_is_audited(server: tuple[RealServer, dict]
                                                       ) -> None:
    srv, t = server
    with httpx.Client(base_url=srv.url, headers=bearer(t["root"]), timeout=30) as c:
        r = c.get("/api/rotation")
        assert r.status_code == 200, r.text
        assert CANARY not in r.text
        assert VALUE_1 not in r.text
        assert HOOK not in r.text
        (hooked,) = [s for s in r.json()["secrets"] if s["org"] == "globex"]
        assert hooked["rotator"] == "webhook"
        # Bad input: 422 naming it, whoever asks.
        r = c.get("/api/rotation", params={"org_id": "x" * 200})
        assert r.status_code == 422
        assert "org_id" in r.text
        r = c.get("/api/rotation", params={"domain_id": "Bad Domain!"})
        assert r.status_code == 422
        assert "domain" in r.text
        records = c.get("/api/audit", params={"action": "rotation_status"}).json()["records"]
    assert records
    assert records[0]["actor"] == "token:bootstrap-admin"  # the first admin token
    assert records[0]["outcome"] == "ok"


def test_a_dry_run_and_bad_arguments(server: tuple[RealServer, dict],
                                           tmp_path: Path) -> None:
    srv, t = server
    home = tmp_path / "home"
    before = states(ks(srv, home, t["root"], "rotate", "status", "--org", "acme", "--json"))
    p = ks(srv, home, t["root"], "rotate", "jwt_secret", "--org", "acme", "--dry-run")
    assert "planned" in ok(p)
    assert states(ks(srv, home, t["root"], "rotate", "status", "--org", "acme",
                     "--json")) == before
    p = ks(srv, home, t["root"], "rotate", "status", "jwt_secret")
    assert p.returncode == 2
    p = ks(srv, home, t["root"], "rotate", "status", "--env", "production")
    assert p.returncode == 8
    assert b"serves the 'local' environment" in p.stderr


def test_an_older_or_odd_server(tmp_path: Path) -> None:
    """Stand-ins on loopback: one that lacks the route (exit 8, "upgrade it first"),
    one that lists it but answers rows of the wrong shape (exit 7)."""
    from keysafe.client import FEATURES

    catalog: dict[str, Any] = {**STAND_IN_CATALOG, "features": []}
    answers: dict[str, Any] = {"/api/rotation": {"secrets": [{"path": "p", "status": 3}]}}
    with stand_in(lambda path: catalog if path == "/api/catalog"
                  else answers.get(path, {})) as fake:
        p = ks(fake, tmp_path / "home", FAKE_TOKEN, "rotate", "status")
        assert p.returncode == 8, p.stderr
        assert b"upgrade it first" in p.stderr
        catalog["features"] = list(FEATURES)
        p = ks(fake, tmp_path / "home", FAKE_TOKEN, "rotate", "status", "--json")
        assert p.returncode == 7, p.stderr
        assert p.stdout == b""
        good = {"path": "keysafe/local/o/shared/x", "name": "x", "org": "o",
                "domain": "shared", "secret_type": None, "period_days": None,
                "period_source": "none", "last_rotated": "2026-01-01T00:00:00+00:00",
                "next_due": None, "status": "unscheduled", "rotator": "manual",
                "version": 1, "needs_window": False, "exposed": False, "later": "kept out"}
        answers["/api/rotation"] = {"secrets": [good]}
        rows = states(ks(fake, tmp_path / "home", FAKE_TOKEN, "rotate", "status", "--json"))
        assert rows == [{k: v for k, v in good.items() if k != "later"}]


def test_configure_through_the_server(server: tuple[RealServer, dict],
                                      tmp_path: Path) -> None:
    """`rotate configure` with KEYSAFE_SERVER_URL: an admin of every org sets the
    rotator, its options and the period; the server checks them first, and never shows
    the options; the next rotation uses them."""
    srv, t = server
    home = tmp_path / "home"
    base = ["rotate", "configure", "jwt_secret", "--org", "acme", "--domain", "cards"]
    # A dry run checks and stores nothing.
    dry = json.loads(ok(ks(srv, home, t["root"], *base, "--rotator", "random", "--option",
                           "length=48", "--dry-run", "--json")))
    assert (dry["dry_run"], dry["tags"].get("rotator")) == (True, "random")
    with httpx.Client(base_url=srv.url, headers=bearer(t["root"]), timeout=30) as c:
        st = c.get("/api/secrets/acme/jwt_secret", params={"domain_id": "cards"}).json()
    assert st["rotation_days"] != 7
    out = json.loads(ok(ks(srv, home, t["root"], *base, "--rotator", "random", "--option",
                           "length=48", "--option", "alphabet=hex", "--period-days", "7",
                           "--json")))
    assert (out["tags"]["rotator"], out["rotation_days"], out["dry_run"]) == (
        "random", 7, False)
    assert not any(k.startswith("rotator.") for k in out["tags"])
    said = ks(srv, home, t["root"], *base, "--period-days", "7")
    assert "keysafe/local/acme/cards/jwt_secret: rotator random, period 7 d" in \
        said.stderr.decode()
    # The next rotation through the server uses the options.
    ok(ks(srv, home, t["root"], "rotate", "jwt_secret", "--org", "acme", "--domain", "cards"))
    with httpx.Client(base_url=srv.url, headers=bearer(t["reader"]), timeout=30) as c:
        value = c.get("/api/secrets/acme/jwt_secret/value",
                      params={"domain_id": "cards"}).json()["value"]
    assert len(value) == 48
    assert set(value) <= set("0123456789abcdef")
    states_now = states(ks(srv, home, t["root"], "rotate", "status", "--org", "acme",
                           "--domain", "cards", "--json"))
    assert (states_now[0]["period_days"], states_now[0]["period_source"]) == (7, "secret")
    assert not home.exists()


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--rotator", "nosuch"], 2, "unknown rotator 'nosuch'"),
    (["--rotator", "no.such.module:Cls"], 2, "rotator"),
    (["--rotator", "random", "--option", "lenght=48"], 2, "does not take rotator.lenght"),
    (["--rotator", "webhook", "--option", "url=ftp://x"], 2, "must be an http(s) URL"),
    (["--option", "bad"], 2, "--option"),
    ([], 2, "needs --rotator, --option,"),
    (["--period-days", "-1"], 2, "period-days"),
])
def test_configure_refusals_change_nothing(server: tuple[RealServer, dict], tmp_path: Path,
                                           args: list[str], code: int, words: str) -> None:
    srv, t = server
    p = ks(srv, tmp_path / "home", t["root"], "rotate", "configure", "jwt_secret", "--org",
           "acme", *args)
    assert p.returncode == code, p.stderr
    assert words in p.stderr.decode()
    with httpx.Client(base_url=srv.url, headers=bearer(t["root"]), timeout=30) as c:
        st = c.get("/api/secrets/acme/jwt_secret").json()
    assert st["rotator"] == "random"  # the jwt type's default: nothing was set
    assert "rotator" not in st["tags"]


def test_configure_is_for_admins_of_every_org(server: tuple[RealServer, dict],
                                              tmp_path: Path) -> None:
    srv, t = server
    for who in ("acme-admin", "look"):
        p = ks(srv, tmp_path / "home", t[who], "rotate", "configure", "jwt_secret", "--org",
               "acme", "--rotator", "webhook", "--option", f"url={HOOK}")
        assert p.returncode == 4, (who, p.stderr)
    with httpx.Client(base_url=srv.url, headers=bearer(t["root"]), timeout=30) as c:
        url = "/api/secrets/acme/jwt_secret/rotation"
        for body in ({}, {"rotator": "random", "extra": 1}, {"options": {"a-b": "x"}},
                     {"options": {"url": "x\ny"}}, {"period_days": 4000},
                     {"rotator": "a:b"}):
            r = c.put(url, json=body)
            assert r.status_code == 422, (body, r.text)
        assert c.put("/api/secrets/acme/nothing_here/rotation",
                     json={"period_days": 3}).status_code == 404
        denied = c.get("/api/audit", params={"org_id": "acme", "outcome": "denied",
                                             "action": "update_metadata"}).json()["records"]
    assert {r["actor"] for r in denied} >= {"token:acme-admin", "token:look"}
    assert all(HOOK not in json.dumps(r) for r in denied)


def test_configure_on_an_older_server_is_refused(tmp_path: Path) -> None:
    features: list[str] = []
    with stand_in(lambda path: {**STAND_IN_CATALOG, "features": features}
                  if path == "/api/catalog" else {}) as fake:
        p = ks(fake, tmp_path / "home", FAKE_TOKEN, "rotate", "configure", "x_key", "--org",
               "o", "--period-days", "3")
        assert p.returncode == 8, p.stderr
        assert b"upgrade it first" in p.stderr
        # One that configures but does not take unset_options.
        features.append("rotation_configure")
        p = ks(fake, tmp_path / "home", FAKE_TOKEN, "rotate", "configure", "x_key", "--org",
               "o", "--unset-option", "url")
        assert p.returncode == 8, p.stderr
        assert b"cannot remove a rotator's options" in p.stderr


def test_selections_through_the_server(server: tuple[RealServer, dict],
                                       tmp_path: Path) -> None:
    """`rotate due|symmetric|all` with KEYSAFE_SERVER_URL: the server runs the engine,
    with the same table, JSON and exit codes; a dry run changes nothing."""
    srv, t = server
    home = tmp_path / "home"

    def run(token: str, *args: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(ok(ks(srv, home, token, "rotate", *args, "--json")))
        return doc

    def version(org: str, name: str, domain: str = "shared") -> int:
        with httpx.Client(base_url=srv.url, headers=bearer(t["root"]), timeout=30) as c:
            st = c.get(f"/api/secrets/{org}/{name}", params={"domain_id": domain}).json()
        return int(st["version"])

    before = version("acme", "jwt_secret")
    plan = run(t["acme-writer"], "symmetric", "--org", "acme", "--dry-run")
    assert {(r["name"], r["outcome"]) for r in plan["results"]} == {
        ("jwt_secret", "planned")}
    assert version("acme", "jwt_secret") == before
    # due: the exposed OpenAI key is overdue, and only a person can issue one.
    due = run(t["acme-writer"], "due", "--org", "acme")
    assert [(r["name"], r["outcome"]) for r in due["results"]] == [(OPENAI, "reminder")]
    assert due["summary"] == {"reminder": 1}
    # Asked for over HTTP, a reminder is said, not sent: the scheduled run sends those.
    with httpx.Client(base_url=srv.url, headers=bearer(t["root"]), timeout=30) as c:
        sent = c.get("/api/audit", params={"org_id": "acme", "action": "rotate",
                                           "actor": "token:acme-writer"}).json()["records"]
    assert [r for r in sent if r["outcome"] == "reminder"] == []
    # Offboarding: what an identity read, rotated now.
    with httpx.Client(base_url=srv.url, headers=bearer(t["reader"]), timeout=30) as c:
        assert c.get("/api/secrets/acme/jwt_secret/value").status_code == 200
    gone = run(t["acme-admin"], "all", "--org", "acme", "--read-by", "token:reader",
               "--since", "1h")
    assert {(r["name"], r["outcome"]) for r in gone["results"]} >= {
        ("jwt_secret", "rotated")}
    assert version("acme", "jwt_secret") == before + 1
    # A misspelt identity: nothing chosen, and a warning.
    p = ks(srv, home, t["acme-admin"], "rotate", "all", "--org", "acme", "--read-by",
           "token:nobody", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert b"no record by 'token:nobody'" in p.stderr
    # Every org: an admin of every org.
    every = run(t["root"], "symmetric", "--dry-run")
    assert {r["org"] for r in every["results"]} >= {"acme"}
    for ks_args, who in ((["symmetric", "--dry-run"], "acme-writer"),
                         (["all", "--org", "acme", "--read-by", "token:reader"],
                          "acme-writer"),
                         (["due", "--org", "acme"], "cards"),
                         (["all", "--org", "acme", "--domain", "shared", "--dry-run"],
                          "jwt-writer"),
                         (["due", "--org", "acme"], "look")):
        p = ks(srv, home, t[who], "rotate", *ks_args)
        assert p.returncode == 4, (ks_args, who, p.stderr)
    assert not home.exists()


def test_a_run_is_recorded_and_bad_input_refused(server: tuple[RealServer, dict]) -> None:
    srv, t = server
    with httpx.Client(base_url=srv.url, headers=bearer(t["root"]), timeout=30) as c:
        for body in ({}, {"selection": "everything"}, {"selection": "due", "x": 1},
                     {"selection": "due", "since": "2026-01-01T00:00:00Z"},
                     {"selection": "due", "read_by": " "},
                     {"selection": "due", "domain_id": "cards"},
                     {"selection": "due", "org_id": "acme", "domain_id": "Bad Domain!"}):
            r = c.post("/api/rotation/run", json=body)
            assert r.status_code == 422, (body, r.text)
        r = c.post("/api/rotation/run", json={"selection": "symmetric", "org_id": "acme",
                                              "dry_run": True})
        assert r.status_code == 200, r.text
        assert CANARY not in r.text
        records = c.get("/api/audit", params={"action": "rotation_run",
                                              "org_id": "acme"}).json()["records"]
    assert records[0]["detail"]["selection"] == "symmetric"
    assert records[0]["detail"]["dry_run"] is True


def test_selections_on_an_older_server_are_refused(tmp_path: Path) -> None:
    with stand_in(lambda path: {**STAND_IN_CATALOG, "features": []}
                  if path == "/api/catalog" else {}) as fake:
        p = ks(fake, tmp_path / "home", FAKE_TOKEN, "rotate", "due", "--org", "o")
        assert p.returncode == 8, p.stderr
        assert b"upgrade it first" in p.stderr


def test_configure_never_echoes_an_option_and_shows_only_what_is_set(
        server: tuple[RealServer, dict], tmp_path: Path) -> None:
    """A refused option is named, never quoted (it may be a URL or a DSN); options
    alone set no `rotator` tag, and the output says so, as on a store."""
    srv, t = server
    dsn = "postgres://admin:hunter2@db.internal/x"
    with httpx.Client(base_url=srv.url, headers=bearer(t["root"]), timeout=30) as c:
        r = c.put("/api/secrets/acme/jwt_secret/rotation",
                  json={"rotator": "aws-iam", "options": {"wait": dsn}})
        assert r.status_code == 422, r.text
        assert "rotator.wait" in r.text
        assert "hunter2" not in r.text
    p = ks(srv, tmp_path / "home", t["root"], "rotate", "configure", "jwt_secret", "--org",
           "acme", "--option", "length=40", "--dry-run", "--json")
    out = json.loads(ok(p))
    assert "rotator" not in out["tags"]
    human = ks(srv, tmp_path / "home", t["root"], "rotate", "configure", "jwt_secret",
               "--org", "acme", "--option", "length=40", "--dry-run")
    assert "rotator (default)" in human.stderr.decode()


def test_a_failed_rotation_keeps_its_reason_on_the_server(server: tuple[RealServer, dict],
                                                          tmp_path: Path) -> None:
    """A rotator's error can name its options (a URL): the run's answer says only the
    step; the server's log has the reason. A domain's admin gets no count of the org's
    audit records."""
    srv, t = server
    hook = "http://127.0.0.1:9/rotation-hook-never-shown"
    with httpx.Client(base_url=srv.url, headers=bearer(t["root"]), timeout=30) as c:
        r = c.put("/api/secrets/acme/webhook_secret",
                  json={"secret_value": CANARY, "domain_id": "cards",
                        "secret_type": "webhook_secret", "check_format": False})
        assert r.status_code == 200, r.text
        r = c.put("/api/secrets/acme/webhook_secret/rotation",
                  json={"domain_id": "cards", "rotator": "webhook",
                        "options": {"url": hook, "timeout": "2"}})
        assert r.status_code == 200, r.text
    p = ks(srv, tmp_path / "home", t["cards-admin"], "rotate", "all", "--org", "acme",
           "--domain", "cards", "--read-by", "token:nobody", "--json")
    assert p.returncode == 0, p.stderr  # nothing read by nobody: nothing rotated
    assert b"no record by" not in p.stderr  # the org's log is not this admin's to count
    p = ks(srv, tmp_path / "home", t["cards-admin"], "rotate", "all", "--org", "acme",
           "--domain", "cards", "--json")
    assert p.returncode == 11, p.stderr
    failed = [r for r in json.loads(p.stdout)["results"] if r["outcome"] == "failed"]
    assert [r["name"] for r in failed] == ["webhook_secret"]
    assert "failed at step" in failed[0]["detail"]
    # The reason (here: the signing secret the webhook rotator names is missing) is in
    # the server's log, not in the answer.
    assert b"rotation_webhook_secret" not in p.stdout + p.stderr
    assert b"rotation-hook" not in p.stdout + p.stderr
    assert CANARY.encode() not in p.stdout + p.stderr
    assert "rotation_webhook_secret not found" in srv.output()


def test_retire_through_the_server(server: tuple[RealServer, dict], tmp_path: Path) -> None:
    srv, t = server
    home = tmp_path / "home"
    assert json.loads(ok(ks(srv, home, t["root"], "rotate", "retire", "--dry-run",
                            "--json"))) == {"would_retire": []}
    assert "retired 0 previous value(s)" in ks(srv, home, t["root"], "rotate",
                                                "retire").stderr.decode()
    for who in ("acme-admin", "acme-writer"):
        assert ks(srv, home, t[who], "rotate", "retire").returncode == 4
    with httpx.Client(base_url=srv.url, headers=bearer(t["root"]), timeout=30) as c:
        records = c.get("/api/audit", params={"action": "rotation_retire"}).json()["records"]
    assert {r["outcome"] for r in records} == {"ok", "denied"}
    seen: list[str] = []

    def old_server(path: str) -> Any:
        seen.append(path)
        return {**STAND_IN_CATALOG, "features": []} if path == "/api/catalog" else {}

    with stand_in(old_server) as fake:
        for args in (["retire"], ["x_key", "--org", "o", "--dry-run"]):
            p = ks(fake, home, FAKE_TOKEN, "rotate", *args)
            assert p.returncode == 8, (args, p.stderr)
            assert b"upgrade it first" in p.stderr
    assert set(seen) == {"/api/catalog"}  # refused before anything else was sent
    # retire covers every org: --org or --domain is refused, as a NAME is.
    for args in (["retire", "--org", "acme"], ["retire", "--domain", "x"],
                 ["retire", "jwt_secret"]):
        p = ks(srv, home, t["root"], "rotate", *args)
        assert p.returncode == 2, (args, p.stderr)


def test_configure_removes_options_through_the_server(server: tuple[RealServer, dict],
                                                      tmp_path: Path) -> None:
    srv, t = server
    home = tmp_path / "home"
    base = ["rotate", "configure", "session_secret", "--org", "acme", "--domain", "opts"]
    with httpx.Client(base_url=srv.url, headers=bearer(t["root"]), timeout=30) as c:
        r = c.put("/api/secrets/acme/session_secret",
                  json={"secret_value": CANARY * 2, "domain_id": "opts"})
        assert r.status_code == 200, r.text
        assert c.put("/api/secrets/acme/session_secret/rotation",
                     json={"domain_id": "opts", "unset_options": ["a b"]}
                     ).status_code == 422
    ok(ks(srv, home, t["root"], *base, "--rotator", "webhook", "--option", f"url={HOOK}"))
    assert ks(srv, home, t["root"], *base, "--rotator", "random").returncode == 2
    for args, words in ((["--unset-option", "urll"], "option 'urll' is not set"),
                        (["--option", "url=https://x", "--unset-option", "url"],
                         "both set and removed")):
        p = ks(srv, home, t["root"], *base, *args)
        assert p.returncode == 2, (args, p.stderr)
        assert words in p.stderr.decode()
    out = json.loads(ok(ks(srv, home, t["root"], *base, "--rotator", "random",
                           "--unset-option", "url", "--json")))
    assert out["tags"] == {"rotator": "random"}
