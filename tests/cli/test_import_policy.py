"""``keysafe import`` (spec 001's migration script as a command) and ``keysafe policy``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keysafe.cli import exitcodes

OPENAI = "sk-" + "A1b2C3d4E5" * 3  # shaped like an OpenAI key, not a real one
ANTHROPIC = "sk-ant-" + "Q1w2E3r4T5" * 3
HF = "hf_" + "abcdefghij" * 3 + "12"
SECRET_VALUES = (OPENAI, ANTHROPIC, HF, "custom-value-123")
PREFIX = "keysafe/local/acme/shared/"


@pytest.fixture
def dotenv(home: Path) -> Path:
    f = Path.cwd() / ".env"
    f.write_text(
        f"OPENAI_API_KEY={OPENAI}\n"
        f"ANTHROPIC_API_KEY={ANTHROPIC}\n"
        f"HF_TOKEN={HF}\n"
        "MY_CUSTOM_SETTING=custom-value-123\n"
        "EMPTY_ONE=\n"
        "KEYSAFE_MASTER_KEY=not-a-secret-to-import\n")
    return f


def no_values(*texts: str) -> None:
    for text in texts:
        for value in (*SECRET_VALUES, "not-a-secret-to-import"):
            assert value not in text


def by_var(data: dict) -> dict[str, dict]:
    return {i["variable"]: i for i in data["items"]}


def test_import_maps_known_names_and_lists_unknown(kc, dotenv: Path):
    r = kc("import", str(dotenv), "--org", "acme")
    assert r.code == 0, r.err
    no_values(r.out, r.err)
    assert "imported 3, skipped 2, unknown 1, failed 0" in r.err
    assert "not in the catalog: MY_CUSTOM_SETTING" in r.err
    for path in ("openai_api_key", "anthropic_api_key", "hf_api_token"):
        assert PREFIX + path in r.out
    got = kc("get", "hf_api_token", "--org", "acme")
    assert got.out == HF
    missing = kc("get", "my_custom_setting", "--org", "acme")
    assert missing.code == exitcodes.NOT_FOUND


def test_import_json_and_dry_run_writes_nothing(kc, dotenv: Path):
    r = kc("import", str(dotenv), "--org", "acme", "--dry-run", "--json")
    assert r.code == 0, r.err
    no_values(r.out, r.err)
    data = json.loads(r.out)
    assert data["dry_run"] is True
    assert data["counts"] == {"imported": 0, "would_import": 3, "skipped": 2, "unknown": 1,
                              "failed": 0}
    items = by_var(data)
    assert items["HF_TOKEN"]["name"] == "hf_api_token"
    assert items["HF_TOKEN"]["path"] == PREFIX + "hf_api_token"
    assert items["EMPTY_ONE"]["reason"] == "empty value"
    assert items["KEYSAFE_MASTER_KEY"]["status"] == "skipped"
    assert items["MY_CUSTOM_SETTING"]["status"] == "unknown"
    assert kc("ls", "--org", "acme", "--json").json() == []


def test_existing_secrets_are_skipped_unless_overwrite(kc, put, dotenv: Path):
    put("openai_api_key", "sk-" + "Z9y8X7w6V5" * 3)
    r = kc("import", str(dotenv), "--org", "acme", "--json")
    items = by_var(json.loads(r.out))
    assert items["OPENAI_API_KEY"]["status"] == "skipped"
    assert items["OPENAI_API_KEY"]["reason"] == "already exists (version 1)"
    assert kc("get", "openai_api_key", "--org", "acme").out == "sk-" + "Z9y8X7w6V5" * 3

    again = kc("import", str(dotenv), "--org", "acme", "--overwrite", "--json")
    assert again.code == 0, again.err
    items = by_var(json.loads(again.out))
    assert items["OPENAI_API_KEY"]["status"] == "imported"
    assert items["OPENAI_API_KEY"]["version"] == 2
    assert items["OPENAI_API_KEY"]["overwritten"] is True
    assert kc("get", "openai_api_key", "--org", "acme").out == OPENAI


def test_include_unknown_and_domain(kc, dotenv: Path):
    r = kc("import", str(dotenv), "--org", "acme", "--domain", "card-services",
           "--include-unknown", "--json")
    assert r.code == 0, r.err
    items = by_var(json.loads(r.out))
    assert items["MY_CUSTOM_SETTING"]["status"] == "imported"
    assert items["MY_CUSTOM_SETTING"]["path"] == (
        "keysafe/local/acme/card-services/my_custom_setting")
    got = kc("get", "my_custom_setting", "--org", "acme", "--domain", "card-services")
    assert got.out == "custom-value-123"


def test_a_failed_secret_makes_the_exit_code_non_zero(kc, home: Path):
    f = Path.cwd() / "bad.env"
    f.write_text(f"OPENAI_API_KEY=not-an-openai-key\nANTHROPIC_API_KEY={ANTHROPIC}\n"
                 "GITHUB_TOKEN=ghp_...\n")
    r = kc("import", str(f), "--org", "acme")
    assert r.code == exitcodes.USAGE  # invalid_value
    assert "import: 1 secret(s) failed; first: OPENAI_API_KEY" in r.err
    assert "does not look like an OpenAI API Key" in r.out
    assert "placeholder" in r.out  # GITHUB_TOKEN=ghp_... is skipped, not failed
    assert "not-an-openai-key" not in r.out + r.err
    assert kc("get", "anthropic_api_key", "--org", "acme").out == ANTHROPIC  # the rest went on
    relaxed = kc("import", str(f), "--org", "acme", "--no-format-check", "--json")
    assert relaxed.code == 0, relaxed.err
    err = kc("import", str(f), "--org", "acme", "--overwrite", "--json")
    assert json.loads(err.err)["exit_code"] == exitcodes.USAGE


def test_from_env_imports_only_catalog_variables(kc, home: Path,
                                                 monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI)
    monkeypatch.setenv("GH_TOKEN", "ghp_" + "b" * 36)
    monkeypatch.setenv("MY_CUSTOM_SETTING", "custom-value-123")
    r = kc("import", "--from-env", "--org", "acme", "--json")
    assert r.code == 0, r.err
    no_values(r.out, r.err)
    data = json.loads(r.out)
    assert data["source"] == "environment"
    items = by_var(data)
    assert items["OPENAI_API_KEY"]["status"] == "imported"
    assert items["GH_TOKEN"]["name"] == "github_token"
    assert "MY_CUSTOM_SETTING" not in items
    assert "PATH" not in items
    assert kc("get", "github_token", "--org", "acme").out == "ghp_" + "b" * 36


@pytest.mark.parametrize("args", [
    ["import", "--org", "acme"],
    ["import", ".env", "--from-env", "--org", "acme"],
    ["import", "--from-env", "--include-unknown", "--org", "acme"],
    ["import", "missing.env", "--org", "acme"],
    ["import", ".env"],
])
def test_import_usage_errors(kc, dotenv: Path, args: list[str]):
    r = kc(*args)
    assert r.code == exitcodes.USAGE, (r.out, r.err)
    assert kc("ls", "--org", "acme", "--json").json() == []


def test_import_into_the_read_only_env_backend_is_unsupported(kc, dotenv: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KEYSAFE_BACKEND", "env")
    r = kc("import", str(dotenv), "--org", "acme")
    assert r.code == exitcodes.UNSUPPORTED
    assert "read-only" in r.err
    no_values(r.out, r.err)


def test_import_into_a_chain_writes_the_store_behind_the_same_dotenv(kc, dotenv: Path):
    (Path.cwd() / "keysafe.toml").write_text(
        '[keysafe.profiles.local]\nbackend = "chain"\nbackends = ["sqlite", "env"]\n')
    before = kc("get", "openai_api_key", "--org", "acme")
    assert before.out == OPENAI  # served by the .env fallback
    r = kc("import", str(dotenv), "--org", "acme", "--json")
    assert r.code == 0, r.err
    assert by_var(json.loads(r.out))["OPENAI_API_KEY"]["status"] == "imported"
    versions = kc("versions", "openai_api_key", "--org", "acme", "--json")
    assert [v["version"] for v in versions.json()] == [1]  # now in the store


# -- policy -----------------------------------------------------------------------------------
def test_policy_prints_a_document_on_stdout_and_notes_on_stderr(kc, home: Path):
    r = kc("policy", "--backend", "aws-sm", "--org", "acme-corp")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["Statement"][0]["Resource"] == (
        "arn:aws:secretsmanager:*:*:secret:keysafe/local/acme-corp/*")
    assert "note:" in r.err
    assert "aws-sm policy for keysafe/local/acme-corp/ (org acme-corp)" in r.err


def test_policy_json_for_spec_000(kc, home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KEYSAFE_APP", "ragstar")
    monkeypatch.setenv("KEYSAFE_NAMING_TEMPLATE", "/{app}/{env}/org-{org}/{domain}/{name}")
    r = kc("policy", "--backend", "aws-ssm", "--org", "123", "--read-only", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["prefix"] == "/ragstar/local/org-123/"
    assert data["read_only"] is True
    stmt = data["document"]["Statement"][0]
    assert stmt["Resource"] == "arn:aws:ssm:*:*:parameter/ragstar/local/org-123/*"
    assert "ssm:PutParameter" not in json.dumps(data["document"])


def test_policy_vault_hcl_and_options(kc, home: Path):
    r = kc("policy", "--backend", "vault", "--org", "acme", "--mount", "kv", "--read-only")
    assert r.code == 0, r.err
    assert 'path "kv/data/keysafe/local/acme/*" {' in r.out
    assert '"update"' not in r.out
    g = kc("policy", "--backend", "gcp", "--project", "42", "--principal",
           "serviceAccount:x@p.iam.gserviceaccount.com", "--json")
    doc = g.json()["document"]
    assert doc["bindings"][0]["members"] == ["serviceAccount:x@p.iam.gserviceaccount.com"]
    assert "projects/42/secrets/keysafe--local--" in doc["bindings"][0]["condition"]["expression"]
    a = kc("policy", "--backend", "azure", "--principal", "abc", "--json")
    assert a.json()["document"]["roleAssignments"][0]["principalId"] == "abc"


@pytest.mark.parametrize("args", [
    ["policy", "--backend", "sqlite"],
    ["policy"],
    ["policy", "--backend", "aws-sm", "--domain", "x"],
])
def test_policy_usage_errors(kc, home: Path, args: list[str]):
    assert kc(*args).code == exitcodes.USAGE


def test_policy_bad_org_is_a_usage_error(kc, home: Path):
    r = kc("policy", "--backend", "aws-sm", "--org", "../x", "--json")
    assert r.code == exitcodes.USAGE
    assert json.loads(r.err)["error"] == "invalid_name"


def test_run_and_export_give_back_the_variables_the_file_had(kc, home: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    """Migrating off .env must not rename what the app reads: HF_TOKEN is stored as the
    catalog's hf_api_token (whose own variable is HF_API_TOKEN), and spec 002's
    ARAGORA_JWT_SECRET as jwt_secret; both come back under the file's names, from run,
    export and a re-import alike. A mapping file still wins."""
    jwt = "j" * 40
    f = Path.cwd() / ".env"
    f.write_text(f"HF_TOKEN={HF}\nARAGORA_JWT_SECRET={jwt}\nOPENAI_API_KEY={OPENAI}\n")
    r = kc("import", str(f), "--org", "acme", "--json")
    assert r.code == 0, r.err
    assert {i["variable"]: i["name"] for i in json.loads(r.out)["items"]} == {
        "HF_TOKEN": "hf_api_token", "ARAGORA_JWT_SECRET": "jwt_secret",
        "OPENAI_API_KEY": "openai_api_key"}
    exported = kc("export", "--org", "acme", "--format", "json")
    assert exported.code == 0, exported.err
    assert json.loads(exported.out) == {"HF_TOKEN": HF, "ARAGORA_JWT_SECRET": jwt,
                                        "OPENAI_API_KEY": OPENAI}
    only = kc("export", "--org", "acme", "--format", "json", "--only", "hf_api_token")
    assert json.loads(only.out) == {"HF_TOKEN": HF}  # described, not listed
    mapped = Path.cwd() / "map.toml"
    mapped.write_text('jwt_secret = "APP_JWT"\n')
    m = kc("export", "--org", "acme", "--format", "json", "--map", str(mapped))
    assert set(json.loads(m.out)) == {"HF_TOKEN", "APP_JWT", "OPENAI_API_KEY"}
    # Imported again from the catalog's own variable: the remembered one is dropped.
    f.write_text(f"JWT_SECRET={jwt}x\n")
    assert kc("import", str(f), "--org", "acme", "--overwrite").code == 0
    again = json.loads(kc("export", "--org", "acme", "--format", "json").out)
    assert again["JWT_SECRET"] == jwt + "x"
    assert "ARAGORA_JWT_SECRET" not in again


def test_a_line_dotenv_cannot_parse_stops_the_import_naming_it(kc, home: Path):
    """python-dotenv skips such a line with a warning: the secret on it would silently
    be missing. The error names the file and line, never the line's text."""
    f = Path.cwd() / "bad.env"
    f.write_text(f'OPENAI_API_KEY={OPENAI}\n\n  \nANTHROPIC_API_KEY="{ANTHROPIC}\n'
                 f'HF_TOKEN={HF}\n')
    r = kc("import", str(f), "--org", "acme")
    assert r.code == exitcodes.USAGE, r.err
    assert "bad.env line 4: cannot parse this line" in r.err  # blank lines counted
    no_values(r.out, r.err)
    assert kc("get", "openai_api_key", "--org", "acme").code == exitcodes.NOT_FOUND
    run = kc("run", "--env-file", str(f), "--", "true")
    assert run.code == exitcodes.USAGE
    assert "bad.env line 4" in run.err


def test_import_warns_when_git_could_pick_the_file_up(kc, home: Path):
    """Spec 003's checklist: remove secrets from .env files, add .env to .gitignore."""
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = Path.cwd()
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=60)
    f = repo / ".env"
    f.write_text(f"OPENAI_API_KEY={OPENAI}\n")
    r = kc("import", str(f), "--org", "acme")
    assert r.code == 0, r.err
    assert "is not in .gitignore and still holds the values" in " ".join(r.err.split())
    no_values(r.out, r.err)
    assert kc("status", "openai_api_key", "--org", "acme", "--json").json()[
        "tags"].get("exposed") is None  # not committed: not marked
    subprocess.run(["git", "-C", str(repo), "add", "-f", ".env"], check=True, timeout=60)
    tracked = kc("import", str(f), "--org", "acme", "--dry-run")
    assert "is tracked by git" in " ".join(tracked.err.split())
    assert "rotate them" in " ".join(tracked.err.split())
    # Committed: what it imports is marked exposed, due for rotation at once; a value
    # stored already (the same one) is marked too.
    again = kc("import", str(f), "--org", "acme", "--json")
    assert again.code == 0, again.err
    assert "the same value: marked exposed" in again.json()["items"][0]["reason"]
    st = kc("status", "openai_api_key", "--org", "acme", "--json").json()
    assert st["tags"]["exposed"] == f"{f} (committed to git)"
    rot = kc("rotate", "status", "--org", "acme", "--json").json()
    assert [(s["name"], s["status"], s["exposed"]) for s in rot] == [
        ("openai_api_key", "overdue", True)]
    subprocess.run(["git", "-C", str(repo), "rm", "-q", "--cached", ".env"], check=True,
                   timeout=60)
    (repo / ".gitignore").write_text(".env\n")
    quiet = kc("import", str(f), "--org", "acme")
    assert "gitignore" not in quiet.err
    assert "tracked" not in quiet.err
