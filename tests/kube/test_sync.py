"""``keysafe sync kubernetes`` with the real ``kubernetes`` client against the STAND-IN
Kubernetes API server (fakekube.py; no cluster can run here): apply only on change,
rollout restart, --force, API errors as clear messages and exit codes, a canary value
nowhere in the output."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keysafe.kube import CONTENT_HASH, RESTARTED_AT

from .conftest import Cli
from .fakekube import FakeKubeServer

CANARY = "canary-" + secrets.token_hex(12)
CANARY_B64 = base64.b64encode(CANARY.encode()).decode()
NS, NAME = "prod", "app-secrets"


@pytest.fixture
def cluster(fake_kube: FakeKubeServer):
    c = fake_kube.cluster
    c.namespaces.add(NS)
    c.add_deployment(NS, "web")
    c.add_deployment(NS, "worker")
    return c


@pytest.fixture
def kubeconfig(fake_kube: FakeKubeServer, tmp_path: Path) -> str:
    return str(tmp_path / "kubeconfig")


@pytest.fixture
def store(kc: Cli):
    def put(name: str, value: str, org: str = "acme") -> None:
        r = kc("put", name, "--org", org, input=value)
        assert r.code == 0, r.err

    assert kc("init").code == 0
    put("openai_api_key", "sk-proj-" + CANARY + "A" * 20)
    put("db_password", CANARY)
    put("multi-line", f"-----BEGIN KEY-----\n{CANARY}\n-----END KEY-----")
    return put


@pytest.fixture
def sync(kc: Cli, kubeconfig: str, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    runs = []

    def run(*extra: str, ns: str = NS, org: str = "acme") -> object:
        r = kc("sync", "kubernetes", "--org", org, "--namespace", ns, "--name", NAME,
               "--kubeconfig", kubeconfig, *extra)
        runs.append(r)
        return r

    yield run
    # The canary (or its base64) never reaches stdout, stderr or a log record.
    for r in runs:
        for text in (r.out, r.err):
            assert CANARY not in text
            assert CANARY_B64 not in text
    assert CANARY not in caplog.text
    assert CANARY_B64 not in caplog.text


def secret_values(cluster) -> dict[str, str]:
    obj = cluster.secrets[(NS, NAME)]
    return {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}


def restarted_at(cluster, deployment: str) -> str | None:
    meta = cluster.deployments[(NS, deployment)]["spec"]["template"]["metadata"]
    return (meta.get("annotations") or {}).get(RESTARTED_AT)


def test_create_then_nothing_then_change_then_force(cluster, store, sync):
    r = sync("--once", "--restart", "deployment/web")
    assert r.code == 0, r.err
    assert "created" in r.err
    assert "restarted deployment/web" in r.err
    assert [(q.method, q.path.rsplit("/", 2)[-2:]) for q in cluster.requests] == [
        ("GET", ["secrets", NAME]), ("POST", ["prod", "secrets"]),
        ("PATCH", ["deployments", "web"])]
    assert secret_values(cluster) == {
        "OPENAI_API_KEY": "sk-proj-" + CANARY + "A" * 20, "DB_PASSWORD": CANARY,
        "MULTI_LINE": f"-----BEGIN KEY-----\n{CANARY}\n-----END KEY-----"}
    obj = cluster.secrets[(NS, NAME)]
    assert obj["type"] == "Opaque"
    assert obj["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "keysafe"}
    assert set(obj["metadata"]["annotations"]) == {CONTENT_HASH}
    first_restart = restarted_at(cluster, "web")
    assert first_restart is not None
    assert restarted_at(cluster, "worker") is None

    # No change: one read, nothing written, nobody restarted.
    before = len(cluster.requests)
    r = sync("--once", "--restart", "deployment/web")
    assert r.code == 0, r.err
    assert "unchanged" in r.err
    assert [q.method for q in cluster.requests[before:]] == ["GET"]

    # A change: applied once (a PUT), both named Deployments rolled out.
    store("db_password", CANARY + "-rotated")
    before = len(cluster.requests)
    r = sync("--once", "--restart", "deployment/web", "--restart", "worker", "--json")
    assert r.code == 0, r.err
    line = json.loads(r.out)
    assert line["action"] == "updated"
    assert line["restarted"] == ["deployment/web", "deployment/worker"]
    assert line["keys"] == ["DB_PASSWORD", "MULTI_LINE", "OPENAI_API_KEY"]
    assert [q.method for q in cluster.requests[before:]] == ["GET", "PUT", "PATCH", "PATCH"]
    assert secret_values(cluster)["DB_PASSWORD"] == CANARY + "-rotated"
    assert restarted_at(cluster, "worker") is not None

    # --force: re-applied although nothing changed.
    before = len(cluster.requests)
    r = sync("--once", "--force", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["action"] == "forced"
    assert [q.method for q in cluster.requests[before:]] == ["GET", "PUT"]


def test_removed_secret_leaves_the_secret_and_others_keep_their_metadata(
        cluster, store, sync, kc):
    assert sync("--once", "--label", "team=payments").code == 0
    # Someone else annotates the live Secret; keysafe keeps that on update.
    cluster.secrets[(NS, NAME)]["metadata"]["annotations"]["owner"] = "ops"
    assert kc("rm", "multi-line", "--org", "acme").code == 0
    r = sync("--once", "--label", "team=payments")
    assert r.code == 0, r.err
    assert set(secret_values(cluster)) == {"OPENAI_API_KEY", "DB_PASSWORD"}
    meta = cluster.secrets[(NS, NAME)]["metadata"]
    assert meta["annotations"]["owner"] == "ops"
    assert meta["labels"]["team"] == "payments"


def test_hand_edited_secret_is_put_back(cluster, store, sync):
    first = sync("--once")
    assert first.code == 0, first.err
    cluster.secrets[(NS, NAME)]["data"]["DB_PASSWORD"] = base64.b64encode(b"x").decode()
    r = sync("--once", "--json")
    assert json.loads(r.out)["action"] == "updated"
    assert secret_values(cluster)["DB_PASSWORD"] == CANARY


def test_concurrent_change_is_retried(cluster, store, sync):
    first = sync("--once")
    assert first.code == 0, first.err
    store("db_password", CANARY + "-2")
    cluster.inject.append(("PUT", "secrets", 409))
    r = sync("--once", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["action"] == "updated"
    assert [q.method for q in cluster.requests[-4:]] == ["GET", "PUT", "GET", "PUT"]


@pytest.mark.parametrize(("deny", "code", "words"), [
    (("create", "secrets"), 4, "denied permission to create secret prod/app-secrets "
                               "(403 Forbidden)"),
    (("get", "secrets"), 4, "denied permission to read secret prod/app-secrets"),
    (("patch", "deployments"), 4, "denied permission to restart deployment prod/web"),
])
def test_forbidden(cluster, store, sync, deny, code, words):
    cluster.deny.add(deny)
    r = sync("--once", "--restart", "deployment/web")
    assert r.code == code, r.err
    assert words in r.err
    assert "Traceback" not in r.err


def test_namespace_missing(cluster, store, sync):
    r = sync("--once", ns="nope")
    assert r.code == 3
    assert "namespace 'nope' does not exist" in r.err
    assert not cluster.secrets


def test_statefulsets_and_daemonsets_roll_out_too(cluster, store, sync):
    """kubectl's kinds and spellings: sts/NAME, ds/NAME, statefulset/NAME, ..."""
    cluster.add_workload("statefulsets", NS, "db")
    cluster.add_workload("daemonsets", NS, "agent")
    r = sync("--once", "--restart", "sts/db", "--restart", "daemonset/agent",
             "--restart", "deploy/web", "--restart", "statefulsets/db", "--json")
    assert r.code == 0, r.err
    line = json.loads(r.out)
    assert line["restarted"] == ["statefulset/db", "daemonset/agent", "deployment/web"]
    assert [(q.method, q.path.rsplit("/", 2)[-2:]) for q in cluster.requests[-3:]] == [
        ("PATCH", ["statefulsets", "db"]), ("PATCH", ["daemonsets", "agent"]),
        ("PATCH", ["deployments", "web"])]
    for resource, name in (("statefulsets", "db"), ("daemonsets", "agent")):
        meta = getattr(cluster, resource)[(NS, name)]["spec"]["template"]["metadata"]
        assert meta["annotations"][RESTARTED_AT] == line["at"]
    ghost = sync("--once", "--force", "--restart", "ds/ghost")
    assert ghost.code == 3
    assert "daemonset 'ghost' does not exist in namespace prod" in ghost.err
    cluster.deny.add(("patch", "statefulsets"))
    denied = sync("--once", "--force", "--restart", "sts/db")
    assert denied.code == 4
    assert "denied permission to restart statefulset prod/db" in denied.err


def test_deployment_missing(cluster, store, sync):
    r = sync("--once", "--restart", "deployment/ghost", "--json")
    assert r.code == 3
    err = json.loads(r.err.strip().splitlines()[-1])
    assert err["error"] == "not_found"
    assert "deployment 'ghost' does not exist in namespace prod" in err["message"]
    assert (NS, NAME) in cluster.secrets  # the Secret itself was applied


def test_foreign_secret_needs_adopt(cluster, store, sync):
    cluster.secrets[(NS, NAME)] = {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {"X": "eA=="},
        "metadata": {"name": NAME, "namespace": NS, "resourceVersion": "7"}}
    r = sync("--once")
    assert r.code == 5
    assert "was not written by keysafe" in r.err
    assert "--adopt" in r.err
    assert cluster.writes() == []
    r = sync("--once", "--adopt")
    assert r.code == 0, r.err
    assert set(secret_values(cluster)) == {"OPENAI_API_KEY", "DB_PASSWORD", "MULTI_LINE"}


def test_empty_scope_changes_nothing(cluster, store, sync):
    r = sync("--once", org="nobody")
    assert r.code == 3
    assert "no secrets in org 'nobody'" in r.err
    assert cluster.requests == []


@pytest.mark.parametrize(("args", "words"), [
    (["--interval", "soon"], "interval 'soon'"),
    (["--interval", "0s"], "at least 1s"),
    (["--restart", "cronjob/nightly"], "only a deployment, statefulset or daemonset"),
    (["--restart", "sts/Bad_Name"], "not a valid Kubernetes name"),
    (["--restart", "deployment/Bad_Name"], "not a valid Kubernetes name"),
    (["--label", "novalue"], "KEY=VALUE"),
])
def test_bad_options(cluster, store, sync, args, words):
    r = sync("--once", *args)
    assert r.code == 2
    assert words in r.err
    assert cluster.requests == []


def test_bad_names_are_usage_errors(cluster, store, sync):
    r = sync("--once", ns="Prod")
    assert r.code == 2
    assert "namespace 'Prod' is not a valid Kubernetes name" in r.err


def test_wrong_token_and_unreachable_server(cluster, store, sync, fake_kube, kubeconfig):
    text = Path(kubeconfig).read_text()
    Path(kubeconfig).write_text(text.replace(cluster.token, "wrong-token"))
    r = sync("--once")
    assert r.code == 4
    assert "rejected the credentials (401)" in r.err
    Path(kubeconfig).write_text(text.replace(fake_kube.url, "http://127.0.0.1:9"))
    r = sync("--once")
    assert r.code == 7
    assert "cannot reach the Kubernetes API server at http://127.0.0.1:9" in r.err


def test_no_kubeconfig(store, kc, tmp_path):
    r = kc("sync", "kubernetes", "--org", "acme", "-n", NS, "--name", NAME, "--once",
           "--kubeconfig", str(tmp_path / "missing"))
    assert r.code == 8
    assert "no Kubernetes configuration" in r.err
    r = kc("sync", "kubernetes", "--org", "acme", "-n", NS, "--name", NAME, "--once",
           "--kubeconfig", str(tmp_path / "kubeconfig"), "--context", "other")
    assert r.code == 8


def test_loop_passes_and_outage(cluster, store, sync):
    """Two passes one second apart: an outage on the first is reported and retried."""
    cluster.inject.append(("GET", "secrets", 500))
    r = sync("--interval", "1s", "--passes", "2")
    assert r.code == 0, r.err
    assert "pass 1 failed" in r.err
    assert "500" in r.err
    assert "pass 2: secret prod/app-secrets created" in r.err
    assert "2 passes" not in r.out  # one pass succeeded, one failed
    assert "1 pass: 1 applied, 0 unchanged, 1 failed" in r.out


def test_sigterm_stops_the_loop_cleanly(cluster, store, kubeconfig, tmp_path):
    """A real process: SIGTERM while it waits for the next pass ends it with status 0."""
    # Installed packages' bytecode is used as is (a private pycache prefix would make the
    # child compile the whole kubernetes client); nothing is written to the tree.
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPYCACHEPREFIX", None)
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from keysafe.cli.app import run; sys.exit(run(sys.argv[1:]))",
         "sync", "kubernetes", "--org", "acme", "-n", NS, "--name", NAME,
         "--kubeconfig", kubeconfig, "--interval", "1h", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        for _ in range(600):  # up to 60 s for the first pass to write
            if cluster.writes() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert cluster.writes(), proc.stderr.read().decode() if proc.poll() else "no write"
        line = proc.stdout.readline()  # the first pass's JSON line: it is now waiting
        assert json.loads(line)["action"] == "created"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert CANARY not in out.decode() + err.decode()
    assert CANARY_B64 not in out.decode() + err.decode()


def test_without_the_kubernetes_package_says_what_to_install(store, kc, kubeconfig,
                                                             monkeypatch):
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # import kubernetes -> ImportError
    r = kc("sync", "kubernetes", "--org", "acme", "-n", NS, "--name", NAME, "--once",
           "--kubeconfig", kubeconfig)
    assert r.code == 8
    assert "pip install 'keysafe[k8s]'" in r.err


def test_a_destroyed_current_version_is_left_out_of_the_secret(cluster, store, sync, kc):
    from keysafe import SecretManager

    store("gone", "old-value")
    store("gone", "shredded-value")
    with SecretManager.from_env() as mgr:  # the library allows it, as Vault does; the CLI not
        mgr.destroy("gone", [2], "acme")
    r = sync("--once")
    assert r.code == 0, r.err
    assert "left out gone: no current value to read" in r.err
    assert set(secret_values(cluster)) == {"OPENAI_API_KEY", "DB_PASSWORD",
                                           "MULTI_LINE"}


def test_an_imported_variable_keeps_its_name_in_the_secret(cluster, store, sync, kc,
                                                           tmp_path):
    env = tmp_path / "app.env"
    env.write_text("HF_TOKEN=hf_" + "abcdefghij" * 3 + "12\n")
    assert kc("import", str(env), "--org", "acme").code == 0
    r = sync("--once")
    assert r.code == 0, r.err
    assert "HF_TOKEN" in secret_values(cluster)
    assert "HF_API_TOKEN" not in secret_values(cluster)


def test_a_bad_label_names_the_label_option(cluster, store, sync):
    r = sync("--once", "--label", "bad")
    assert r.code == 2
    assert "'bad' is not KEY=VALUE" in r.err
    assert "'--label'" in r.err
    assert "--tag" not in r.err
    assert cluster.requests == []


def test_a_key_taken_away_is_named(cluster, store, sync, kc):
    """A secret's variable changed (here an env_var tag keeping the key a Secret had
    before session 9's naming change): the pass says which key it removed."""
    assert sync("--once").code == 0
    r = kc("tag", "db_password", "--org", "acme", "--set", "env_var=DATABASE_PASSWORD")
    assert r.code == 0, r.err
    r = sync("--once", "--json")
    assert r.code == 0, r.err
    line = json.loads(r.out)
    assert line["removed"] == ["DB_PASSWORD"]
    assert "removed key(s) DB_PASSWORD from secret" in r.err
    assert secret_values(cluster)["DATABASE_PASSWORD"] == CANARY
    assert CANARY not in r.err
    again = json.loads(sync("--once", "--json").out)
    assert again["removed"] == []
