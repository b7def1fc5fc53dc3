"""Every secret verb's happy path, in human and --json form."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from keysafe.cli import exitcodes

PATH = "keysafe/local/acme/shared/db_password"


def test_init_creates_key_file_and_store_and_is_idempotent(kc, home: Path):
    r = kc("init")
    assert r.code == 0, r.err
    key = home / "master.key"
    assert f"created the master key file {key}" in r.err
    assert "Back up" in r.err
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (home / "keysafe.db").exists()
    before = key.read_bytes()

    again = kc("init", "--json")
    assert again.code == 0, again.err
    data = again.json()
    assert data["key_created"] is False
    assert data["store_created"] is False
    assert data["key_file"] == str(key)
    assert key.read_bytes() == before  # never overwritten


def test_put_get_roundtrip_human_and_json(ks, put):
    r = put("db_password", "s3cret value")
    assert r.out == ""
    assert f"stored {PATH} version 1" in r.err

    got = ks("get", "db_password", "--org", "acme")
    assert got.code == 0
    assert got.out == "s3cret value"

    j = ks("put", "db_password", "--org", "acme", "--json", input="v2")
    assert j.code == 0
    assert j.json()["path"] == PATH
    assert j.json()["version"] == 2

    gj = ks("get", "db_password", "--org", "acme", "--json")
    assert gj.json() == {"path": PATH, "version": 2, "value": "v2"}
    old = ks("get", PATH, "--version", "1", "--json")
    assert old.json() == {"path": PATH, "version": 1, "value": "s3cret value"}


def test_full_path_and_domain_and_env(kc, put):
    put("k", "v", "--domain", "billing")
    assert kc("get", "keysafe/local/acme/billing/k").out == "v"
    assert kc("get", "k", "--org", "acme", "--domain", "billing").out == "v"
    # --env selects another environment (its path segment; local profile is the same store)
    r = kc("put", "k", "--org", "acme", "--env", "test", input="t")
    assert r.code == 0
    assert "keysafe/test/acme/shared/k" in r.err
    assert kc("get", "keysafe/test/acme/shared/k").out == "t"
    assert kc("get", "k", "--org", "acme", "--env", "test").out == "t"


def test_put_metadata_options_and_status(kc):
    r = kc("put", "stripe_secret_key", "--org", "acme", "--description", "billing key",
           "--type", "api_key", "--tag", "team=pay", "--tag", "tier=1", "--no-format-check",
           input="not-really-a-stripe-key")
    assert r.code == 0, r.err
    s = kc("status", "stripe_secret_key", "--org", "acme")
    assert s.code == 0
    for text in ("billing key", "api_key", "team=pay", "tier=1", "current version"):
        assert text in s.out
    meta = kc("status", "stripe_secret_key", "--org", "acme", "--json").json()
    assert meta["description"] == "billing key"
    assert meta["tags"] == {"team": "pay", "tier": "1"}
    assert meta["current_version"] == 1
    assert "value" not in meta


def test_check_and_set(kc, put):
    put("k", "a")
    ok = kc("put", "k", "--org", "acme", "--expected-version", "1", input="b")
    assert ok.code == 0
    stale = kc("put", "k", "--org", "acme", "--expected-version", "1", input="c")
    assert stale.code == exitcodes.CONFLICT
    assert "version 2, not the expected 1" in stale.err
    fresh = kc("put", "new", "--org", "acme", "--expected-version", "0", input="x")
    assert fresh.code == 0
    assert kc("get", "k", "--org", "acme").out == "b"


def test_json_credentials_put_merge_and_field(kc):
    r = kc("put", "slack", "--org", "acme", "--credentials",
           input='{"bot_token": "xoxb-1", "signing_secret": "abc"}')
    assert r.code == 0, r.err
    m = kc("put", "slack", "--org", "acme", "--credentials", "--merge",
           input='{"bot_token": "xoxb-2", "app_token": "xapp-9"}')
    assert m.code == 0, m.err
    assert kc("get", "slack", "--org", "acme", "--field", "bot_token").out == "xoxb-2"
    assert kc("get", "slack", "--org", "acme", "--field", "signing_secret").out == "abc"
    whole = json.loads(kc("get", "slack", "--org", "acme").out)
    assert whole == {"app_token": "xapp-9", "bot_token": "xoxb-2", "signing_secret": "abc"}
    fj = kc("get", "slack", "--org", "acme", "--field", "app_token", "--json").json()
    assert fj["value"] == "xapp-9"
    assert fj["version"] == 2
    missing = kc("get", "slack", "--org", "acme", "--field", "nope")
    assert missing.code == exitcodes.NOT_FOUND
    assert "no credential field 'nope'" in missing.err
    bad = kc("put", "slack", "--org", "acme", "--credentials", input='["a list"]')
    assert bad.code == exitcodes.USAGE
    assert "must be a JSON object" in bad.err


def test_ls_human_json_and_deleted(kc, put):
    put("a", "1")
    put("b", "2", "--domain", "llm")
    put("c", "3", org="other")
    r = kc("ls", "--org", "acme")
    assert r.code == 0
    assert "keysafe/local/acme/shared/a" in r.out
    assert "keysafe/local/acme/llm/b" in r.out
    assert "other" not in r.out
    every = kc("ls", "--json").json()
    assert {m["path"] for m in every} == {"keysafe/local/acme/shared/a",
                                         "keysafe/local/acme/llm/b",
                                         "keysafe/local/other/shared/c"}
    dom = kc("ls", "--org", "acme", "--domain", "llm", "--json").json()
    assert [m["path"] for m in dom] == ["keysafe/local/acme/llm/b"]

    assert kc("rm", "a", "--org", "acme").code == 0
    assert [m["path"] for m in kc("ls", "--org", "acme", "--domain", "shared",
                                  "--json").json()] == []
    with_deleted = kc("ls", "--org", "acme", "--deleted", "--json").json()
    assert {m["path"]: m["deleted"] for m in with_deleted}["keysafe/local/acme/shared/a"]
    human = kc("ls", "--org", "acme", "--deleted")
    assert "deleted" in human.out
    assert "keysafe/local/acme/shared/a" in human.out
    empty = kc("ls", "--org", "nobody")
    assert empty.code == 0
    assert empty.out == ""
    assert "no secrets found" in empty.err


def test_rm_restore_and_purge(kc, put):
    put("k", "v")
    r = kc("rm", "k", "--org", "acme")
    assert r.code == 0
    assert "restore" in r.err
    assert kc("get", "k", "--org", "acme").code == exitcodes.NOT_FOUND
    st = kc("status", "k", "--org", "acme", "--deleted", "--json").json()
    assert st["deleted"] is True

    back = kc("restore", "k", "--org", "acme", "--json")
    assert back.code == 0
    assert back.json()["deleted"] is False
    assert kc("get", "k", "--org", "acme").out == "v"

    soft = kc("rm", "k", "--org", "acme", "--json")
    assert soft.json() == {"path": "keysafe/local/acme/shared/k", "deleted": True,
                           "purged": False}
    again = kc("restore", "k", "--org", "acme")
    assert again.code == 0
    assert "restored keysafe/local/acme/shared/k" in again.err

    purge = kc("rm", "k", "--org", "acme", "--force", "--yes", "--json")
    assert purge.code == 0
    assert purge.json() == {
        "path": "keysafe/local/acme/shared/k", "deleted": True, "purged": True}
    assert kc("status", "k", "--org", "acme", "--deleted").code == exitcodes.NOT_FOUND
    assert kc("restore", "k", "--org", "acme").code == exitcodes.NOT_FOUND


def test_rm_force_asks_first(cli, put):
    put("k", "v")
    no = cli("rm", "k", "--org", "acme", "--force", input="n\n")
    assert no.exit_code == exitcodes.UNEXPECTED
    assert "Purge keysafe/local/acme/shared/k" in no.stderr
    assert "cancelled; nothing was changed" in no.stderr
    assert cli("get", "k", "--org", "acme").stdout == "v"
    yes = cli("rm", "k", "--org", "acme", "--force", input="y\n")
    assert yes.exit_code == 0, yes.stderr
    assert "purged keysafe/local/acme/shared/k" in yes.stderr


def test_versions_destroy_rollback(kc, put):
    for v in ("one", "two", "three"):
        put("k", v)
    vs = kc("versions", "k", "--org", "acme", "--json").json()
    assert [v["version"] for v in vs] == [1, 2, 3]
    assert all(v["key_id"] for v in vs)
    human = kc("versions", "k", "--org", "acme")
    assert "current" in human.out
    assert "kept" in human.out

    rb = kc("rollback", "k", "1", "--org", "acme")
    assert rb.code == 0
    assert "now version 4" in rb.err
    assert kc("get", "k", "--org", "acme").out == "one"
    rbj = kc("rollback", "k", "2", "--org", "acme", "--json").json()
    assert rbj == {"path": "keysafe/local/acme/shared/k", "version": 5, "from_version": 2}

    d = kc("destroy", "k", "--org", "acme", "--versions", "1,3", "--yes")
    assert d.code == 0
    assert "destroyed version(s) 1, 3" in d.err
    assert kc("get", "k", "--org", "acme", "--version", "1").code == exitcodes.NOT_FOUND
    assert kc("get", "k", "--org", "acme", "--version", "2").out == "two"
    dj = kc("destroy", "k", "--org", "acme", "--versions", "1,2", "--yes", "--json").json()
    assert dj["requested"] == [1, 2]
    assert dj["destroyed"] == [2]
    states = {v["version"]: v["destroyed"]
              for v in kc("versions", "k", "--org", "acme", "--json").json()}
    assert states == {1: True, 2: True, 3: True, 4: False, 5: False}


def test_destroy_asks_first(cli, put):
    put("k", "v")
    put("k", "w")
    no = cli("destroy", "k", "--org", "acme", "--versions", "1", input="n\n")
    assert no.exit_code == exitcodes.UNEXPECTED
    assert cli("get", "k", "--org", "acme", "--version", "1").stdout == "v"
    yes = cli("destroy", "k", "--org", "acme", "--versions", "1", input="y\n")
    assert yes.exit_code == 0, yes.stderr


def test_destroy_keeps_the_current_version(kc, put):
    """As the server does (409): a destroyed current version would leave a secret that
    exists and reads as not found. Nothing is destroyed (exit 5)."""
    put("k", "one")
    put("k", "two")
    r = kc("destroy", "k", "--org", "acme", "--versions", "1,2", "--yes")
    assert r.code == exitcodes.CONFLICT
    assert "version 2 of k is the current one" in r.err
    assert kc("get", "k", "--org", "acme", "--version", "1").out == "one"
    assert kc("get", "k", "--org", "acme").out == "two"


def test_in_process_commands_human_and_json(cli):
    """The same verbs through CliRunner (in process): the typer app itself."""
    assert cli("put", "k", "--org", "acme", input="v1\n").exit_code == 0
    assert cli("get", "k", "--org", "acme").stdout == "v1"
    assert json.loads(cli("get", "k", "--org", "acme", "--json").stdout)["version"] == 1
    assert "keysafe/local/acme/shared/k" in cli("ls", "--org", "acme").stdout
    assert json.loads(cli("status", "k", "--org", "acme", "--json").stdout)["versions"] == 1
    assert json.loads(cli("versions", "k", "--org", "acme", "--json").stdout)[0]["version"] == 1
    assert cli("rm", "k", "--org", "acme").exit_code == 0
    assert cli("restore", "k", "--org", "acme").exit_code == 0


def test_help_lists_commands_and_exit_codes(ks):
    r = ks("--help")
    assert r.code == 0
    for c in ("init", "put", "get", "status", "ls", "rm", "restore", "versions", "rollback",
              "destroy", "audit", "rekey", "doctor", "test-secrets"):
        assert c in r.out
    assert "Exit codes" in r.out
    assert ks("get", "--help").code == 0
    assert ks("audit", "verify", "--help").code == 0


def test_tag_sets_and_removes_tags_without_a_new_version(kc, put) -> None:
    """``keysafe tag``: metadata only. ``env_var`` renames the exported variable;
    rotation settings and bad variable names are refused; nothing else changes."""
    put("db_password", "pw-tag-canary")
    r = kc("tag", "db_password", "--org", "acme", "--set", "env_var=DATABASE_PASSWORD",
           "--set", "team=payments", "--json")
    assert r.code == 0, r.err
    assert r.json()["tags"] == {"env_var": "DATABASE_PASSWORD", "team": "payments"}
    assert r.json()["current_version"] == 1  # no new version
    assert kc("export", "--org", "acme", "--format", "dotenv").out.startswith(
        "DATABASE_PASSWORD=")
    r = kc("tag", "db_password", "--org", "acme", "--unset", "env_var", "--json")
    assert r.json()["tags"] == {"team": "payments"}
    for args in (("--set", "rotator=random"), ("--unset", "rotation.step"),
                 ("--set", "env_var=1BAD"), ("--set", "novalue"), ()):
        bad = kc("tag", "db_password", "--org", "acme", *args)
        assert bad.code == 2, args
    assert kc("tag", "nope", "--org", "acme", "--set", "a=b").code == 3
    status = kc("status", "db_password", "--org", "acme", "--json").json()
    assert status["tags"] == {"team": "payments"}
    assert "pw-tag-canary" not in json.dumps(status)


def test_the_library_verbs_are_commands_too(kc, put) -> None:
    """DESIGN's one vocabulary: has, describe, list and delete work as in the library
    and the API (describe, list and delete are status, ls and rm)."""
    put("openai_api_key", "sk-" + "a1" * 16)
    r = kc("has", "openai_api_key", "--org", "acme")
    assert (r.code, r.out) == (0, "")
    r = kc("has", "missing", "--org", "acme", "--json")
    assert r.code == 3
    assert json.loads(r.out) == {"path": "keysafe/local/acme/shared/missing", "exists": False}
    assert json.loads(kc("describe", "openai_api_key", "--org", "acme", "--json").out) == \
        json.loads(kc("status", "openai_api_key", "--org", "acme", "--json").out)
    listed = json.loads(kc("list", "--org", "acme", "--json").out)
    assert [m["path"] for m in listed] == ["keysafe/local/acme/shared/openai_api_key"]
    r = kc("delete", "openai_api_key", "--org", "acme")
    assert r.code == 0, r.err
    assert kc("has", "openai_api_key", "--org", "acme").code == 3
    assert kc("restore", "openai_api_key", "--org", "acme").code == 0
    assert kc("has", "openai_api_key", "--org", "acme").code == 0
    assert kc("has", "../x", "--org", "acme").code == 2
