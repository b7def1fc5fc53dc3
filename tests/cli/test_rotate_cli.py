"""``keysafe rotate``: status (overdue first), due/dry-run, configure, one NAME, retire,
exit codes (2 usage, 3 not found, 8 config, 11 a failed rotation) and --json shapes.
No value ever reaches stdout or stderr (every stored value carries a canary)."""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keysafe import SecretManager
from keysafe.cli import exitcodes
from keysafe.manager.audit import AuditFilter

ORG = "acme"
CANARY = "CANARY" + secrets.token_hex(6)


def value(tag: str) -> str:
    """A value holding the canary, shaped to pass the catalog's format checks."""
    return f"{CANARY}{tag}" + "v" * 40


class Outputs:
    """Every stdout/stderr the tests saw, to check no value appears in any of them."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def check(self, *values: str) -> None:
        for text in self.texts:
            assert CANARY not in text
            for v in values:
                assert v not in text


@pytest.fixture
def outputs() -> Outputs:
    return Outputs()


@pytest.fixture(autouse=True)
def open_window(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A maintenance window around now, so scheduled runs rotate the JWT secrets here
    (test_due_waits_for_the_maintenance_window takes it away)."""
    now = datetime.now(UTC)
    monkeypatch.setenv("KEYSAFE_ROTATION_WINDOW",
                       f"{now - timedelta(hours=2):%H:%M}-{now + timedelta(hours=2):%H:%M}")


@pytest.fixture
def rk(kc: Callable[..., Any], outputs: Outputs) -> Callable[..., Any]:
    """``keysafe rotate ...`` in process, every output kept for the canary check."""

    def run(*args: str) -> Any:
        r = kc("rotate", *args)
        outputs.texts += [r.out, r.err]
        assert CANARY not in r.out
        assert CANARY not in r.err
        return r

    return run


@pytest.fixture
def mgr(home: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], SecretManager]:
    """Opens a manager on the store the CLI uses (same KEYSAFE_HOME); use it in a
    ``with`` block so it never holds the SQLite file while the CLI runs. The store fsyncs
    less here (synchronous=NORMAL, CLI runs too): durability is tested elsewhere."""
    monkeypatch.setenv("KEYSAFE_SQLITE_SYNCHRONOUS", "NORMAL")
    return SecretManager.from_env


def backdate(open_mgr: Callable[[], SecretManager], name: str, days_ago: float,
             org: str = ORG, **fields: Any) -> None:
    with open_mgr() as m:
        m.update_metadata(name, org, last_rotated=datetime.now(UTC) - timedelta(days=days_ago),
                          **fields)


def stored(open_mgr: Callable[[], SecretManager], name: str, org: str = ORG
           ) -> tuple[str, int]:
    with open_mgr() as m:
        v, version = m.backend.get(m.path(name, org))
    return v, version


@pytest.fixture
def seeded(put: Callable[..., Any], mgr: Callable[[], SecretManager]) -> dict[str, str]:
    """A mix of states (name -> original value):

    - jwt_secret: period 1 day (its own), last rotated 11 days ago: 10 days overdue
    - partner_api_key: api_key, 30 days (type), rotated 35 days ago: 5 days overdue
    - session_secret: 180 days (catalog), rotated 182 days ago: 2 days overdue
    - openai_api_key: 30 days, rotated 25 days ago: due soon
    - encryption_key: fresh: ok;  misc_note: generic: unscheduled
    - globex's jwt_secret: fresh: ok (another org)
    """
    vals = {
        "jwt_secret": value("jwt"),
        "partner_api_key": value("partner"),
        "session_secret": value("session"),
        "openai_api_key": f"sk-{CANARY}" + "A1b2C3d4E5" * 3,
        "encryption_key": value("enc"),
        "misc_note": value("misc"),
    }
    put("jwt_secret", vals["jwt_secret"])  # one through the CLI; the rest, faster, direct
    now = datetime.now(UTC)
    with mgr() as m:
        for name, v in vals.items():
            if name != "jwt_secret":
                # A data encryption key is rotated by keysafe only when opted in.
                m.put(name, v, ORG, secret_type="api_key" if name == "partner_api_key"
                      else None,
                      tags={"rotator": "random"} if name == "encryption_key" else None)
        m.put("jwt_secret", value("globex"), "globex")
        for name, days, extra in (("jwt_secret", 11, {"rotation_days": 1}),
                                  ("partner_api_key", 35, {}),
                                  ("session_secret", 182, {}),
                                  ("openai_api_key", 25, {})):
            m.update_metadata(name, ORG, last_rotated=now - timedelta(days=days), **extra)
    return vals


# -- status ----------------------------------------------------------------------------------
def test_status_json_lists_overdue_first(rk, seeded):
    r = rk("status", "--json")
    assert r.code == 0, r.err
    rows = r.json()
    assert [(s["name"], s["org"], s["status"]) for s in rows[:4]] == [
        ("jwt_secret", ORG, "overdue"),
        ("partner_api_key", ORG, "overdue"),
        ("session_secret", ORG, "overdue"),
        ("openai_api_key", ORG, "due_soon"),
    ]
    assert [s["status"] for s in rows[4:]] == ["ok", "ok", "unscheduled"]
    assert {s["name"] for s in rows[4:6]} == {"encryption_key", "jwt_secret"}
    assert rows[-1]["name"] == "misc_note"
    assert rows[-1]["next_due"] is None
    assert rows[-1]["period_days"] is None
    by = {(s["name"], s["org"]): s for s in rows}
    jwt = by[("jwt_secret", ORG)]
    assert set(jwt) == {"path", "name", "org", "domain", "secret_type", "period_days",
                        "period_source", "last_rotated", "next_due", "status", "rotator",
                        "version", "needs_window", "exposed"}
    assert jwt["needs_window"] is True
    assert jwt["path"] == "keysafe/local/acme/shared/jwt_secret"
    assert (jwt["period_days"], jwt["period_source"], jwt["rotator"]) == (1, "secret", "random")
    assert (by[("session_secret", ORG)]["period_days"],
            by[("session_secret", ORG)]["period_source"]) == (180, "catalog")
    assert by[("partner_api_key", ORG)]["rotator"] == "manual"
    assert by[("partner_api_key", ORG)]["period_source"] == "type api_key"
    last = datetime.fromisoformat(jwt["last_rotated"])
    assert datetime.fromisoformat(jwt["next_due"]) - last == timedelta(days=1)


def test_status_filters_by_org_and_renders_a_table(rk, seeded):
    r = rk("status", "--org", "globex", "--json")
    assert r.code == 0, r.err
    assert [(s["name"], s["org"]) for s in r.json()] == [("jwt_secret", "globex")]

    human = rk("status", "--org", ORG)
    assert human.code == 0, human.err
    assert "Rotation status (overdue first)" in human.out
    lines = [ln for ln in human.out.splitlines() if "│" in ln]
    assert [ln.split("│")[1].strip() for ln in lines] == [
        "jwt_secret", "partner_api_key", "session_secret", "openai_api_key",
        "encryption_key", "misc_note"]
    assert lines[0].startswith("overdue")


def test_status_honours_org_overrides(rk, seeded, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KEYSAFE_ROTATION_OVERRIDES", "acme:openai_api_key=60,*:jwt=7")
    rows = {(s["name"], s["org"]): s for s in rk("status", "--json").json()}
    openai = rows[("openai_api_key", ORG)]
    assert (openai["period_days"], openai["period_source"], openai["status"]) == \
        (60, "override acme:openai_api_key", "ok")
    assert rows[("jwt_secret", "globex")]["period_source"] == "override *:jwt"
    assert rows[("jwt_secret", ORG)]["period_source"] == "secret"  # its own period wins


# -- due ------------------------------------------------------------------------------------------
def test_due_dry_run_changes_nothing(rk, seeded, mgr):
    r = rk("due", "--dry-run", "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert set(data) == {"results", "summary"}
    assert [(x["name"], x["outcome"], x["version"]) for x in data["results"]] == [
        ("jwt_secret", "planned", 1), ("partner_api_key", "planned", 1),
        ("session_secret", "planned", 1)]
    assert data["summary"] == {"planned": 3}
    assert "rotator random; overdue" in data["results"][0]["detail"]
    assert set(data["results"][0]) == {"path", "name", "org", "outcome", "version", "step",
                                       "detail"}
    for name, v in seeded.items():
        assert stored(mgr, name) == (v, 1)
    with mgr() as m:
        assert m.audit_query(AuditFilter(action="rotate")) == []
        assert m.backend.list("_rotation/") == []

    human = rk("due", "--dry-run")
    assert human.code == 0, human.err
    assert "Rotation plan" in human.out
    assert "planned: 3" in human.err


def test_due_rotates_only_the_due_ones(rk, seeded, mgr, outputs):
    r = rk("due", "--json")
    assert r.code == 0, r.err
    data = r.json()
    got = {x["name"]: (x["outcome"], x["version"]) for x in data["results"]}
    assert got == {"jwt_secret": ("rotated", 2), "session_secret": ("rotated", 2),
                   "partner_api_key": ("reminder", 1)}
    assert data["summary"] == {"rotated": 2, "reminder": 1}
    reminder = next(x for x in data["results"] if x["outcome"] == "reminder")
    assert "must be rotated by hand" in reminder["detail"]

    new = {}
    for name in ("jwt_secret", "session_secret"):
        v, version = stored(mgr, name)
        assert version == 2
        assert v != seeded[name]
        assert len(v) == 64
        assert set(v) <= set(string.ascii_letters + string.digits + "-_")
        new[name] = v
    for name in ("partner_api_key", "openai_api_key", "encryption_key", "misc_note"):
        assert stored(mgr, name) == (seeded[name], 1)
    assert stored(mgr, "jwt_secret", "globex")[1] == 1
    # The old JWT key still verifies during the grace period.
    with mgr() as m:
        assert m.verification_values("jwt_secret", ORG) == [new["jwt_secret"],
                                                           seeded["jwt_secret"]]
        outcomes = [(e.path.rsplit("/", 1)[1], e.outcome)
                    for e in m.audit_query(AuditFilter(action="rotate"))]
    assert ("partner_api_key", "reminder") in outcomes
    assert outcomes.count(("jwt_secret", "ok")) == 1

    # Nothing due now but the manual key: a second run only reminds again.
    again = rk("due", "--json").json()
    assert [(x["name"], x["outcome"]) for x in again["results"]] == [
        ("partner_api_key", "reminder")]
    states = {s["name"]: s["status"] for s in rk("status", "--org", ORG, "--json").json()}
    assert states["jwt_secret"] == "due_soon"  # 1-day period, just rotated
    assert states["session_secret"] == "ok"
    outputs.check(*new.values())


def test_due_human_output_and_summary(rk, seeded):
    r = rk("due")
    assert r.code == 0, r.err
    assert "Rotation results" in r.out
    assert "rotated: 2, reminder: 1" in r.err


def test_selections_pick_their_category(rk, seeded, mgr):
    sym = rk("symmetric", "--dry-run", "--json").json()
    assert {(x["name"], x["org"]) for x in sym["results"]} == {
        ("jwt_secret", ORG), ("jwt_secret", "globex"), ("session_secret", ORG),
        ("encryption_key", ORG)}
    keys = rk("api-keys", "--dry-run", "--json").json()
    assert {x["name"] for x in keys["results"]} == {"partner_api_key", "openai_api_key"}
    assert rk("database", "--dry-run", "--json").json()["results"] == []
    everything = rk("all", "--dry-run", "--org", ORG, "--json").json()
    assert "misc_note" not in {x["name"] for x in everything["results"]}

    r = rk("symmetric", "--org", "globex", "--json")
    assert r.code == 0, r.err
    assert [(x["name"], x["org"], x["outcome"]) for x in r.json()["results"]] == [
        ("jwt_secret", "globex", "rotated")]
    assert stored(mgr, "jwt_secret")[1] == 1  # acme's is another org's secret


# -- one NAME, configure ------------------------------------------------------------------------
def test_configure_sets_tags_and_the_next_rotation_uses_them(rk, seeded, mgr):
    r = rk("configure", "jwt_secret", "--org", ORG, "--rotator", "random", "--option",
           "length=48", "--option", "alphabet=hex", "--period-days", "30", "--json")
    assert r.code == 0, r.err
    meta = r.json()
    assert meta["tags"] == {"rotator": "random", "rotator.length": "48",
                            "rotator.alphabet": "hex"}
    assert meta["rotation_days"] == 30
    assert meta["current_version"] == 1
    with mgr() as m:
        assert m.describe("jwt_secret", ORG).tags["rotator.length"] == "48"

    one = rk("jwt_secret", "--org", ORG, "--json")
    assert one.code == 0, one.err
    (res,) = one.json()["results"]
    assert (res["name"], res["outcome"], res["version"]) == ("jwt_secret", "rotated", 2)
    v, version = stored(mgr, "jwt_secret")
    assert version == 2
    assert len(v) == 48
    assert set(v) <= set("0123456789abcdef")
    with mgr() as m:  # the tags survive the rotation
        assert m.describe("jwt_secret", ORG).tags["rotator.alphabet"] == "hex"

    human = rk("configure", "session_secret", "--org", ORG, "--rotator", "random")
    assert human.code == 0, human.err
    assert "keysafe/local/acme/shared/session_secret: rotator random" in human.err


def test_configure_unknown_rotator_is_a_config_error(rk, seeded, mgr):
    r = rk("configure", "jwt_secret", "--org", ORG, "--rotator", "nosuch")
    assert r.code == exitcodes.CONFIG
    assert "unknown rotator 'nosuch'" in r.err
    assert "built in: random, manual, webhook, postgres" in r.err
    j = rk("configure", "jwt_secret", "--org", ORG, "--rotator", "nosuch", "--json")
    assert j.code == 8
    err = json.loads(j.err)
    assert err["error"] == "config_error"
    assert err["exit_code"] == 8
    mod = rk("configure", "jwt_secret", "--org", ORG, "--rotator", "no.such.module:Cls")
    assert mod.code == 8
    assert "unknown rotator 'no.such.module:Cls'" in mod.err
    with mgr() as m:
        assert m.describe("jwt_secret", ORG).tags == {}


@pytest.mark.parametrize(("options", "words"), [
    (("--rotator", "random", "--option", "lenght=48"),
     "does not take rotator.lenght; it takes length, alphabet"),
    (("--rotator", "random", "--option", "length=8"), "must be 32 to 4096"),
    (("--rotator", "random", "--option", "length=many"), "must be a number"),
    (("--rotator", "random", "--option", "alphabet=emoji"), "must be one of urlsafe"),
    (("--rotator", "manual", "--option", "length=48"), "it takes no options"),
    (("--rotator", "webhook",), "rotator.url for jwt_secret must be an http(s) URL"),
    (("--rotator", "webhook", "--option", "url=ftp://x"), "must be an http(s) URL"),
    (("--rotator", "webhook", "--option", "url=https://hooks.example/rotate", "--option",
      "timeout=0"), "rotator.timeout for jwt_secret must be seconds"),
    (("--rotator", "postgres", "--option", "scheme=round-robin"), "single or alternating"),
    (("--rotator", "postgres", "--option", "scheme=alternating", "--option", "users=a"),
     "must name two roles"),
    (("--rotator", "postgres", "--option", "scheme=alternating", "--option", "users=a,b"),
     "needs rotator.admin_secret"),
])
def test_configure_checks_the_rotators_options(rk, seeded, mgr, options: tuple[str, ...],
                                               words: str):
    """A bad option is a config error now (exit 8), not a failed rotation later; nothing
    is stored."""
    r = rk("configure", "jwt_secret", "--org", ORG, *options)
    assert r.code == exitcodes.CONFIG, (r.out, r.err)
    assert words in r.err
    with mgr() as m:
        assert m.describe("jwt_secret", ORG).tags == {}


def test_configure_checks_options_against_the_rotator_already_set(rk, seeded, mgr):
    ok = rk("configure", "jwt_secret", "--org", ORG, "--rotator", "random")
    assert ok.code == 0, ok.err
    bad = rk("configure", "jwt_secret", "--org", ORG, "--option", "url=https://x")
    assert bad.code == exitcodes.CONFIG
    assert "does not take rotator.url" in bad.err
    good = rk("configure", "jwt_secret", "--org", ORG, "--rotator", "webhook", "--option",
              "url=https://hooks.example/rotate", "--json")
    assert good.code == 0, good.err
    assert good.json()["tags"]["rotator"] == "webhook"


def test_configure_removes_options_an_earlier_rotator_took(rk, seeded, mgr):
    """Switching from a webhook to random: its url and timeout must go, or random
    refuses them; --unset-option removes them in the same change."""
    assert rk("configure", "jwt_secret", "--org", ORG, "--rotator", "webhook", "--option",
              "url=https://hooks.example/rotate", "--option", "timeout=5").code == 0
    refused = rk("configure", "jwt_secret", "--org", ORG, "--rotator", "random")
    assert refused.code == exitcodes.CONFIG
    assert "does not take rotator" in refused.err
    both = rk("configure", "jwt_secret", "--org", ORG, "--option", "url=https://x",
              "--unset-option", "url")
    assert both.code == 2
    assert "both set and removed" in both.err
    # Refusals change nothing: a name that is not set (a typo must be seen), a bad
    # name, and a webhook left without its url.
    for args, code, words in (
            (["--unset-option", "timout"], 2, "option 'timout' is not set on jwt_secret "
                                              "(set: timeout, url)"),
            (["--unset-option", "../x"], 2, "option name '../x'"),
            (["--unset-option", "url"], exitcodes.CONFIG, "rotator.url")):
        bad = rk("configure", "jwt_secret", "--org", ORG, *args)
        assert bad.code == code, (args, bad.err)
        assert words in bad.err
    dry = rk("configure", "jwt_secret", "--org", ORG, "--rotator", "random",
             "--unset-option", "url", "--unset-option", "timeout", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    assert dry.json()["tags"] == {"rotator": "random"}
    with mgr() as m:
        assert m.describe("jwt_secret", ORG).tags["rotator"] == "webhook"
    r = rk("configure", "jwt_secret", "--org", ORG, "--rotator", "random", "--unset-option",
           "url", "--unset-option", "timeout", "--json")
    assert r.code == 0, r.err
    assert r.json()["tags"] == {"rotator": "random"}
    with mgr() as m:
        assert m.describe("jwt_secret", ORG).tags == {"rotator": "random"}
        (rec,) = [e for e in m.audit_query(AuditFilter(action="update_metadata"))
                  if e.detail.get("tags_unset")][-1:]
    assert rec.detail["tags_unset"] == ["rotator.timeout", "rotator.url"]
    assert "hooks.example" not in json.dumps(rec.detail)


@pytest.mark.parametrize(("args", "code", "words"), [
    (("configure", "--org", ORG, "--rotator", "random"), 2, "configure needs the secret"),
    (("configure", "jwt_secret", "--org", ORG), 2, "needs --rotator, --option,"),
    (("configure", "nope", "--org", ORG, "--rotator", "random"), 3, "not found"),
    (("configure", "jwt_secret", "--org", ORG, "--period-days", "-1"), 2, "period-days"),
    (("jwt_secret",), 2, "needs --org"),
    (("due", "extra"), 2, "unexpected argument 'extra'"),
    (("nope", "--org", ORG), 3, "not found"),
])
def test_usage_errors(rk, seeded, mgr, args: tuple[str, ...], code: int, words: str):
    r = rk(*args)
    assert r.code == code, (r.out, r.err)
    assert words in r.err
    with mgr() as m:
        assert m.audit_query(AuditFilter(action="rotate")) == []
        assert m.describe("jwt_secret", ORG).current_version == 1


def test_a_malformed_option_names_the_option(rk, seeded):
    r = rk("configure", "jwt_secret", "--org", ORG, "--option", "bad")
    assert r.code == 2
    assert "--option" in r.err


def test_retire_refuses_a_name(rk, seeded):
    r = rk("retire", "jwt_secret", "--json")
    assert r.code == 2


def test_a_failing_rotation_exits_11_and_keeps_the_version(rk, put, mgr, outputs):
    put("orders_db", value("db"), "--type", "connection_url", "--no-format-check")
    conf = rk("configure", "orders_db", "--org", ORG, "--rotator", "postgres")
    assert conf.code == 0, conf.err

    r = rk("orders_db", "--org", ORG, "--json")
    assert r.code == exitcodes.ROTATION == 11
    data = r.json()
    (res,) = data["results"]
    assert (res["outcome"], res["step"], res["version"]) == ("failed", "create", 1)
    assert "neither JSON nor a postgresql:// URL" in res["detail"]
    assert data["summary"] == {"failed": 1}
    assert json.loads(r.err.strip().splitlines()[-1]) == {
        "error": "rotation_failed", "exit_code": 11,
        "message": "1 rotation failed: orders_db (acme); their current versions are "
                   "unchanged"}
    assert stored(mgr, "orders_db") == (value("db"), 1)
    with mgr() as m:
        assert m.backend.list("_rotation/") == []
        (ev,) = m.audit_query(AuditFilter(action="rotate"))
    assert (ev.outcome, ev.detail["step"]) == ("failed", "create")

    human = rk("orders_db", "--org", ORG)
    assert human.code == 11
    assert "failed" in human.out
    assert "failed: 1" in human.err
    assert "keysafe: error: 1 rotation failed: orders_db (acme)" in human.err
    outputs.check(value("db"))


def test_one_failure_does_not_stop_the_others(rk, seeded, put, mgr):
    put("orders_db", value("db"), "--type", "connection_url", "--no-format-check")
    assert rk("configure", "orders_db", "--org", ORG, "--rotator", "postgres").code == 0
    backdate(mgr, "orders_db", 100)
    r = rk("due", "--json")
    assert r.code == 11
    assert r.json()["summary"] == {"rotated": 2, "reminder": 1, "failed": 1}
    assert stored(mgr, "jwt_secret")[1] == 2
    assert stored(mgr, "orders_db") == (value("db"), 1)


def test_failure_exit_code_through_the_console_script(ks, put, outputs):
    put("orders_db", value("db"), "--type", "connection_url", "--no-format-check")
    assert ks("rotate", "configure", "orders_db", "--org", ORG, "--rotator",
              "postgres").code == 0
    r = ks("rotate", "orders_db", "--org", ORG)
    outputs.texts += [r.out, r.err]
    assert r.code == 11
    outputs.check(value("db"))


# -- retire --------------------------------------------------------------------------------------
def test_retire_after_the_grace_period(rk, seeded, mgr, monkeypatch: pytest.MonkeyPatch):
    assert rk("jwt_secret", "--org", ORG).code == 0
    kept = rk("retire", "--json")
    assert kept.code == 0, kept.err
    assert kept.json() == {"retired": []}  # the default grace period is 24 hours
    with mgr() as m:
        assert len(m.verification_values("jwt_secret", ORG)) == 2

    monkeypatch.setenv("KEYSAFE_ROTATION_GRACE_HOURS", "0")
    assert rk("session_secret", "--org", ORG).code == 0
    r = rk("retire", "--json")
    assert r.code == 0, r.err
    assert r.json() == {"retired": ["keysafe/local/acme/shared/session_secret"]}
    with mgr() as m:
        assert m.verification_values("session_secret", ORG) == \
            [m.get("session_secret", ORG)]
    human = rk("retire")
    assert human.code == 0
    assert "retired 0 previous value(s)" in human.err


def test_dry_run_retires_and_configures_nothing(rk, seeded, mgr,
                                                monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KEYSAFE_ROTATION_GRACE_HOURS", "0")
    assert rk("session_secret", "--org", ORG).code == 0
    for _ in range(2):
        r = rk("retire", "--dry-run", "--json")
        assert r.code == 0, r.err
        assert r.json() == {"would_retire": ["keysafe/local/acme/shared/session_secret"]}
    with mgr() as m:
        assert [x.path for x in m.backend.list("_rotation/")] == [
            "_rotation/keysafe/local/acme/shared/session_secret/previous"]
        assert not m.audit_query(AuditFilter(action="rotate", outcome="retired"))
    human = rk("retire", "--dry-run")
    assert "would retire 1 previous value(s)" in human.err
    with mgr() as m:
        before = m.describe("jwt_secret", ORG)
    c = rk("configure", "jwt_secret", "--org", ORG, "--period-days", "5", "--rotator",
           "random", "--option", "length=40", "--dry-run", "--json")
    assert c.code == 0, c.err
    assert (c.json()["dry_run"], c.json()["rotation_days"]) == (True, 5)
    with mgr() as m:
        assert m.describe("jwt_secret", ORG) == before
    bad = rk("configure", "jwt_secret", "--org", ORG, "--option", "length=3", "--dry-run")
    assert bad.code == exitcodes.CONFIG  # still checked


def test_due_waits_for_the_maintenance_window(rk, seeded, mgr, monkeypatch):
    monkeypatch.delenv("KEYSAFE_ROTATION_WINDOW")
    r = rk("due", "--json")
    assert r.code == 0, r.err
    by = {x["name"]: x for x in r.json()["results"]}
    assert by["jwt_secret"]["outcome"] == "waiting"
    assert "set KEYSAFE_ROTATION_WINDOW" in by["jwt_secret"]["detail"]
    # A session secret signs as a JWT secret does: every session would sign out.
    assert by["session_secret"]["outcome"] == "waiting"
    assert stored(mgr, "jwt_secret")[1] == 1
    monkeypatch.setenv("KEYSAFE_ROTATION_WINDOW", "tea time")
    bad = rk("due")
    assert bad.code == exitcodes.CONFIG
    assert "rotation window 'tea time' is not HH:MM-HH:MM" in bad.err


def test_read_by_narrows_a_selection_to_what_one_identity_read(
        rk: Callable[..., Any], seeded: dict[str, str],
        mgr: Callable[[], SecretManager], outputs: Outputs) -> None:
    """spec 004's offboarding trigger: rotate what a departing identity read, by the
    audit log; symmetric secrets get a new value, API keys a reminder."""
    with mgr() as m:
        alice = m.as_actor("token:alice")
        for name in ("encryption_key", "openai_api_key"):
            alice.get(name, ORG, fresh=True)
        m.as_actor("token:bob").get("session_secret", ORG, fresh=True)
        alice.get("jwt_secret", "globex", fresh=True)  # another org
        m.as_actor("token:carol").put("misc_note", value("carol"), ORG)  # she knows it
        m.audit.flush()
    after = datetime.now(UTC) + timedelta(milliseconds=1)
    r = rk("all", "--read-by", "token:alice", "--org", ORG, "--dry-run", "--json")
    assert r.code == 0, r.err
    assert sorted(o["name"] for o in json.loads(r.out)["results"]) == [
        "encryption_key", "openai_api_key"]
    r = rk("all", "--read-by", "token:alice", "--json")  # every org
    assert sorted((o["org"], o["name"], o["outcome"])
                  for o in json.loads(r.out)["results"]) == [
        ("acme", "encryption_key", "rotated"), ("acme", "openai_api_key", "reminder"),
        ("globex", "jwt_secret", "rotated")]
    assert stored(mgr, "encryption_key")[0] != seeded["encryption_key"]
    assert stored(mgr, "session_secret")[0] == seeded["session_secret"]  # bob's
    # Nothing read since then: nothing selected.
    r = rk("all", "--read-by", "token:alice", "--since", after.isoformat(), "--json")
    assert (r.code, json.loads(r.out)["results"]) == (0, [])
    # What an identity wrote counts too: it pasted the value in.
    r = rk("all", "--read-by", "token:carol", "--org", ORG, "--dry-run", "--json")
    assert [o["name"] for o in json.loads(r.out)["results"]] == ["misc_note"]
    # An identity with no record at all: said, in case it is misspelt.
    r = rk("all", "--read-by", "alice", "--dry-run", "--json")
    assert (r.code, json.loads(r.out)["results"]) == (0, [])
    assert "no record by 'alice'" in r.err
    # Usage errors: exit 2, naming the problem.
    r = rk("jwt_secret", "--org", ORG, "--read-by", "token:alice")
    assert r.code == exitcodes.USAGE
    assert "narrows a selection" in r.err
    r = rk("all", "--read-by", "token:alice", "--since", "yesterday-ish")
    assert r.code == exitcodes.USAGE
    outputs.check(*seeded.values())
