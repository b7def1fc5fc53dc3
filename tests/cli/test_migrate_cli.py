"""``keysafe migrate``: profiles from keysafe.toml, a real OpenBao dev server and a real
moto server as destinations, --json summaries, dry runs, --verify, exit codes for
failures and interruptions, resuming, and a canary value that never shows."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from aws_fixtures import MotoAws, aws  # noqa: F401 - aws: module fixture
from bao_fixtures import BaoServer, bao, free_port  # noqa: F401 - bao: module fixture

from keysafe.cli import migrate as migrate_cmd

CANARY = "canary-cli-migrate-" + uuid.uuid4().hex
SECRETS = {  # (name, org, domain) -> value
    ("openai_api_key", "acme-corp", "card-services"): "sk-proj-" + "Zz09" * 8,
    ("webhook_secret", "acme-corp", None): CANARY,
    ("key_a", "globex", None): "value-a-" + "k" * 16,
    ("key_b", "globex", "ops"): "value-b-" + "k" * 16,
}


@pytest.fixture
def app(home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh app per test: tests share the module's servers without meeting."""
    name = "cli" + uuid.uuid4().hex[:10]
    monkeypatch.setenv("KEYSAFE_APP", name)
    return name


@pytest.fixture
def profiles(app: str, bao: BaoServer, aws: MotoAws) -> Path:  # noqa: F811
    """keysafe.toml in the working directory with one profile per destination."""
    down = free_port()  # nothing listens there
    toml = Path.cwd() / "keysafe.toml"
    toml.write_text(f"""
[keysafe.profiles.vaultprod]
backend = "vault"
url = "{bao.url}"
token = "{bao.token}"
timeout = 5

[keysafe.profiles.awsprod]
backend = "aws-sm"
endpoint_url = "{aws.url}"

[keysafe.profiles.awsdown]
backend = "aws-sm"
endpoint_url = "http://127.0.0.1:{down}"
max_attempts = 1
connect_timeout = 1
""")
    return toml


@pytest.fixture
def filled(kc: Callable[..., Any], profiles: Path) -> dict[tuple[str, str, str | None], str]:
    """The local (embedded) store holding SECRETS, written through the CLI."""
    for (name, org, domain), value in SECRETS.items():
        extra = ["--domain", domain] if domain else []
        r = kc("put", name, "--org", org, *extra, "--description", f"{name} for {org}",
               "--tag", "origin=cli-test", "--no-format-check", input=value)
        assert r.code == 0, r.err
    return SECRETS


def full_path(app: str, name: str, org: str, domain: str | None) -> str:
    return f"{app}/local/{org}/{domain or 'shared'}/{name}"


def state_files(home: Path) -> list[Path]:
    return sorted((home / "migrations").glob("*.state"))


# -- to OpenBao ----------------------------------------------------------------------------
def test_migrate_to_openbao(kc: Callable[..., Any], filled: dict[Any, str], app: str,
                            bao: BaoServer, home: Path) -> None:  # noqa: F811
    r = kc("migrate", "--from", "local", "--to", "vaultprod", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["ok"] is True
    assert data["from"] == "profile local"
    assert data["to"] == "profile vaultprod"
    assert data["counts"]["moved_by_reason"] == {"created": len(SECRETS)}
    assert data["scope"] == f"{app}/local/"
    assert data["state_file"] is None
    assert state_files(home) == []
    # Readable through keysafe (a full path keeps its env segment) and through bao.
    for (name, org, domain), value in SECRETS.items():
        path = full_path(app, name, org, domain)
        got = kc("get", path, "--env", "vaultprod")
        assert got.code == 0, got.err
        assert got.out == value
        assert bao.cli("kv", "get", "-field=value", f"secret/{path}").stdout.rstrip(
            "\n") == value
        status = json.loads(kc("status", path, "--env", "vaultprod", "--json").out)
        assert status["description"] == f"{name} for {org}"
        assert status["tags"] == {"origin": "cli-test"}
        assert status["current_version"] == 1

    # Run again: nothing to do, nothing duplicated; --verify compares both sides.
    again = kc("migrate", "--from", "local", "--to", "vaultprod", "--verify", "--json")
    assert again.code == 0, again.err
    data = json.loads(again.out)
    assert data["counts"]["skipped_by_reason"] == {"same_value": len(SECRETS)}
    assert data["verify"]["ok"] is True
    assert data["verify"]["checked"] == len(SECRETS)


def test_human_output_and_scope(kc: Callable[..., Any], filled: dict[Any, str],
                                app: str) -> None:
    r = kc("migrate", "--from", "local", "--to", "vaultprod", "--org", "globex")
    assert r.code == 0, r.err
    assert f"migrating {app}/local/globex/* from profile local (sqlite) to profile " \
           "vaultprod (vault)" in r.err
    assert "moved 2 (created 2); skipped 0; failed 0; 2 in scope" in r.err
    r = kc("migrate", "--from", "local", "--to", "vaultprod", "--org", "globex",
           "--domain", "ops", "--verify")
    assert r.code == 0, r.err
    assert "moved 0; skipped 1 (same value 1); failed 0" in r.err
    assert "verified 1 secret(s): values and metadata match" in r.err


def test_backend_shortcuts(kc: Callable[..., Any], filled: dict[Any, str], app: str,
                           bao: BaoServer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("VAULT_ADDR", bao.url)
    monkeypatch.setenv("VAULT_TOKEN", bao.token)
    r = kc("migrate", "--from-backend", "sqlite", "--to-backend", "vault", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert (data["from"], data["to"]) == ("backend sqlite", "backend vault")
    assert data["counts"]["moved"] == len(SECRETS)


# -- to moto (AWS Secrets Manager) -----------------------------------------------------------
def test_dry_run_then_migrate_to_aws(kc: Callable[..., Any], filled: dict[Any, str],
                                     app: str, aws: MotoAws, home: Path) -> None:  # noqa: F811
    client = aws.client("secretsmanager")

    def names() -> list[str]:
        found = client.list_secrets(Filters=[{"Key": "name", "Values": [app]}])
        return sorted(s["Name"] for s in found["SecretList"])

    dry = kc("migrate", "--from", "local", "--to", "awsprod", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    data = json.loads(dry.out)
    assert data["dry_run"] is True
    assert {i["message"] for i in data["moved"]} == {"would be created"}
    assert names() == []
    assert state_files(home) == []

    r = kc("migrate", "--from", "local", "--to", "awsprod")
    assert r.code == 0, r.err
    assert names() == sorted(full_path(app, *k) for k in SECRETS)
    for key, value in SECRETS.items():
        got = client.get_secret_value(SecretId=full_path(app, *key))
        assert got["SecretString"] == value

    # A changed source value: skipped as "exists" (exit 0), then --overwrite.
    assert kc("put", "key_a", "--org", "globex", input="changed-" + "k" * 16).code == 0
    r = kc("migrate", "--from", "local", "--to", "awsprod", "--json")
    assert r.code == 0, r.err
    skipped = {i["target"]: i for i in json.loads(r.out)["skipped"]}
    item = skipped[full_path(app, "key_a", "globex", None)]
    assert (item["reason"], item["message"]) == (
        "exists", "holds a different value at the destination")
    r = kc("migrate", "--from", "local", "--to", "awsprod", "--overwrite", "--verify",
           "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert [(i["reason"], i["version"]) for i in data["moved"]] == [("overwritten", 2)]
    assert data["verify"]["ok"] is True
    # AWSCURRENT by name: moto answers a GetSecretValue without a stage from the
    # version it created first, not from where UpdateSecretVersionStage moved
    # AWSCURRENT (real Secrets Manager follows the label).
    got = client.get_secret_value(SecretId=full_path(app, "key_a", "globex", None),
                                  VersionStage="AWSCURRENT")
    assert got["SecretString"] == "changed-" + "k" * 16


# -- failures, interruptions, resuming ---------------------------------------------------
def corrupt(home: Path, path: str) -> None:
    """Flip a byte of a stored ciphertext: reading it is an IntegrityError."""
    with sqlite3.connect(home / "keysafe.db") as db:
        (blob,) = db.execute("SELECT ciphertext FROM secrets WHERE path = ?",
                             (path,)).fetchone()
        bad = bytes([blob[0] ^ 1]) + blob[1:]
        db.execute("UPDATE secrets SET ciphertext = ? WHERE path = ?", (bad, path))


def test_failure_gives_its_exit_code_and_keeps_the_state(
        kc: Callable[..., Any], filled: dict[Any, str], app: str, home: Path) -> None:
    broken = full_path(app, "key_a", "globex", None)
    corrupt(home, broken)
    r = kc("migrate", "--from", "local", "--to", "vaultprod", "--json")
    assert r.code == 6, r.err
    data = json.loads(r.out)
    assert data["ok"] is False
    assert [(i["path"], i["reason"]) for i in data["failed"]] == [(broken, "integrity_error")]
    assert data["counts"]["moved"] == len(SECRETS) - 1
    err = json.loads(r.err.strip().splitlines()[-1])
    assert err["exit_code"] == 6
    assert err["error"] == "integrity_error"
    assert "1 secret(s) could not be migrated" in err["message"]
    assert data["state_file"] is not None
    assert state_files(home) == [Path(data["state_file"])]

    again = kc("migrate", "--from", "local", "--to", "vaultprod")
    assert again.code == 6
    assert f"skipped {len(SECRETS) - 1} (done {len(SECRETS) - 1})" in again.err
    assert broken in again.out  # the failure's row in the table
    assert "progress is kept in" in again.err


def test_interrupted_run_exits_130_and_resumes(
        kc: Callable[..., Any], filled: dict[Any, str], home: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    @contextmanager
    def ctrl_c_after_two(label: str, **kw: Any) -> Iterator[Callable[[int, int], None]]:
        def progress(done: int, total: int) -> None:
            if done == 2:
                raise KeyboardInterrupt

        yield progress

    with monkeypatch.context() as mp:
        mp.setattr(migrate_cmd, "progress_bar", ctrl_c_after_two)
        r = kc("migrate", "--from", "local", "--to", "vaultprod")
    assert r.code == 130
    assert "interrupted after 2 of 4 secret(s); run the same command again to resume" in r.err
    assert "moved 2 (created 2)" in r.err
    assert len(state_files(home)) == 1

    r = kc("migrate", "--from", "local", "--to", "vaultprod", "--verify", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["counts"]["skipped_by_reason"] == {"done": 2}
    assert data["counts"]["moved_by_reason"] == {"created": 2}
    assert data["verify"]["ok"] is True
    assert state_files(home) == []


def flat(text: str) -> str:
    """Text without rich's box drawing and line wrapping (typer's in-process usage
    errors come in a box)."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_usage_and_configuration_errors(kc: Callable[..., Any], profiles: Path) -> None:
    r = kc("migrate", "--from", "local")
    assert r.code == 2
    assert "give one of --to PROFILE and --to-backend NAME" in flat(r.err)
    r = kc("migrate", "--from", "local", "--to", "vaultprod", "--to-backend", "memory")
    assert r.code == 2
    assert "give only one of --to" in flat(r.err)
    r = kc("migrate", "--from", "local", "--to", "local")
    assert r.code == 2
    assert "profile local and profile local open the same sqlite store" in flat(r.err)
    r = kc("migrate", "--from", "local", "--to", "vaultprd", "--json")
    assert r.code == 8
    err = json.loads(r.err)
    assert err["error"] == "config_error"
    assert "unknown profile 'vaultprd'" in err["message"]
    assert "[keysafe.profiles.vaultprd]" in err["message"]


def test_unreachable_destination_exits_7(kc: Callable[..., Any],
                                         filled: dict[Any, str]) -> None:
    r = kc("migrate", "--from", "local", "--to", "awsdown", "--json")
    assert r.code == 7, r.err
    assert json.loads(r.err)["error"] == "backend_unavailable"
    assert r.out == ""


# -- the canary --------------------------------------------------------------------------
def test_canary_never_in_output(ks: Callable[..., Any], kc: Callable[..., Any],
                                filled: dict[Any, str], app: str, home: Path) -> None:
    """Real processes; every output of every path through the command."""
    corrupt(home, full_path(app, "key_b", "globex", "ops"))
    runs = [
        ks("migrate", "--from", "local", "--to", "vaultprod", "--dry-run"),  # 1 fails
        ks("migrate", "--from", "local", "--to", "vaultprod", "--json"),  # 1 fails
        ks("migrate", "--from", "local", "--to", "vaultprod", "--verify"),
        ks("migrate", "--from", "local", "--to", "awsprod", "--json", "--verify"),
    ]
    assert [r.code for r in runs] == [6, 6, 6, 6]  # a dry run reports the bad row too
    assert kc("put", "webhook_secret", "--org", "acme-corp",
              input=CANARY + "-changed").code == 0
    runs += [
        ks("migrate", "--from", "local", "--to", "vaultprod", "--org", "acme-corp"),
        ks("migrate", "--from", "local", "--to", "vaultprod", "--org", "acme-corp",
           "--overwrite", "--verify", "--json"),
    ]
    assert [r.code for r in runs[4:]] == [0, 0]
    assert "holds a different value at the destination" in runs[4].out
    for r in runs:
        assert CANARY not in r.out
        assert CANARY not in r.err
    for f in state_files(home):
        assert CANARY not in f.read_text()
