"""``keysafe sync external-secret``: when the scope's secrets change, the ExternalSecret
is annotated with a new force-sync, the operator's refresh is awaited, and the workloads
are rolled out; no value is read.

Against the STAND-IN Kubernetes API server (fakekube.py; no cluster can run here),
which also simulates the External Secrets Operator's answer to a force-sync (its status:
refreshTime and the Ready condition), with the real ``kubernetes`` client."""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading

import pytest

from keysafe.kube import FORCE_SYNC, RESTARTED_AT
from keysafe.kube_eso import SCOPE_HASH

from .conftest import Cli
from .fakekube import FakeKubeServer

CANARY = "canary-" + secrets.token_hex(12)
NS, NAME = "prod", "app-secrets"


@pytest.fixture
def cluster(fake_kube: FakeKubeServer):
    c = fake_kube.cluster
    c.namespaces.add(NS)
    c.add_deployment(NS, "web")
    c.add_external_secret(NS, NAME)
    return c


@pytest.fixture
def kubeconfig(fake_kube: FakeKubeServer, tmp_path) -> str:
    return str(tmp_path / "kubeconfig")


@pytest.fixture
def store(kc: Cli):
    assert kc("init").code == 0

    def put(name: str, value: str, org: str = "acme") -> None:
        r = kc("put", name, "--org", org, input=value)
        assert r.code == 0, r.err

    put("db_password", "v1-" + CANARY)
    return put


@pytest.fixture
def sync(kc: Cli, kubeconfig: str):
    runs = []

    def run(*extra: str, name: str = NAME) -> object:
        r = kc("sync", "external-secret", "--org", "acme", "-n", NS, "--name", name,
               "--kubeconfig", kubeconfig, *extra)
        runs.append(r)
        return r

    yield run
    for r in runs:
        assert CANARY not in r.out + r.err


def restarted(cluster) -> str | None:
    meta = cluster.deployments[(NS, "web")]["spec"]["template"]["metadata"]
    return (meta.get("annotations") or {}).get(RESTARTED_AT)


def es_annotations(cluster) -> dict[str, str]:
    return cluster.externalsecrets[(NS, NAME)]["metadata"]["annotations"]


def test_a_change_asks_for_a_refresh_waits_and_rolls_out(cluster, store, sync, kc):
    r = sync("--once", "--restart", "deploy/web", "--json")
    assert r.code == 0, r.err
    first = json.loads(r.out)
    assert (first["action"], first["restarted"]) == ("refreshed", ["deployment/web"])
    assert first["keys"] == ["db_password"]
    assert FORCE_SYNC in es_annotations(cluster)
    assert es_annotations(cluster)[SCOPE_HASH] == first["content_hash"]
    assert cluster.eso_refreshes == 1
    assert restarted(cluster) is not None
    # Nothing changed: nothing asked, nothing restarted.
    before = restarted(cluster)
    r = sync("--once", "--restart", "deploy/web", "--json")
    assert json.loads(r.out)["action"] == "unchanged"
    assert cluster.eso_refreshes == 1
    assert restarted(cluster) == before
    # A rotation (a new version) is a change; so is a new secret. --force asks anyway.
    store("db_password", "v2-" + CANARY)
    assert json.loads(sync("--once", "--json").out)["action"] == "refreshed"
    assert cluster.eso_refreshes == 2
    assert json.loads(sync("--once", "--json", "--force").out)["action"] == "forced"
    assert cluster.eso_refreshes == 3
    # No value was read: the audit log has listings only.
    audit = kc("audit", "--action", "read", "--json")
    assert audit.out.strip() == ""


def test_the_operators_failure_and_absence_are_named(cluster, store, sync):
    cluster.eso_failing = True
    r = sync("--once", "--restart", "deploy/web")
    assert r.code == 1, r.err
    assert "could not refresh externalsecret prod/app-secrets (SecretSyncedError)" in r.err
    assert restarted(cluster) is None
    assert SCOPE_HASH not in es_annotations(cluster)  # asked again next time
    cluster.eso_failing = False
    cluster.eso_running = False
    r = sync("--once", "--timeout", "1s")
    assert r.code == 7, r.err
    assert "did not refresh externalsecret prod/app-secrets within 1 s" in r.err
    assert "is it running?" in r.err
    cluster.eso_running = True
    r = sync("--once")
    assert r.code == 0, r.err


def test_missing_externalsecret_and_denied_patch(cluster, store, sync):
    r = sync("--once", name="nope")
    assert r.code == 3
    assert "externalsecret prod/nope does not exist" in r.err
    cluster.deny.add(("patch", "externalsecrets"))
    r = sync("--once")
    assert r.code == 4
    assert "denied permission to annotate externalsecret prod/app-secrets" in r.err


def test_bad_options(cluster, store, sync):
    for args, words in ((["--timeout", "soon"], "timeout 'soon'"),
                        (["--watch", "--once"], "cannot go with --once"),
                        (["--restart", "cronjob/x"], "only a deployment")):
        r = sync("--once" if "--once" not in args else "--json", *args)
        assert r.code == 2, (args, r.err)
        assert words in r.err
    assert cluster.eso_refreshes == 0


def test_watch_refreshes_on_a_rotation(cluster, store, kc, kubeconfig):
    """A real process with --watch: a put brings a refresh forward (the interval is an
    hour), then SIGTERM ends it cleanly."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPYCACHEPREFIX", None)
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from keysafe.cli.app import run; sys.exit(run(sys.argv[1:]))",
         "sync", "external-secret", "--org", "acme", "-n", NS, "--name", NAME,
         "--kubeconfig", kubeconfig, "--interval", "1h", "--watch", "--poll", "1s",
         "--json", "--restart", "deploy/web"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        first = json.loads(lines.get(timeout=60))
        assert (first["trigger"], first["action"]) == ("start", "refreshed")
        store("db_password", "v2-" + CANARY)
        second = json.loads(lines.get(timeout=60))
        assert (second["trigger"], second["action"]) == ("change", "refreshed")
        assert second["restarted"] == ["deployment/web"]
        assert cluster.eso_refreshes == 2
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert CANARY not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
