"""``keysafe sync kubernetes --watch``: a change to the scope brings the next pass forward.

Against the STAND-IN Kubernetes API server (fakekube.py; no cluster can run here) with
the real ``kubernetes`` client, as test_sync.py. The embedded store is checked every
``--poll``; PostgreSQL (a real server on loopback) tells the watch by NOTIFY, so there
the poll is set to an hour and only a notification can bring a pass forward. The
ScopeWatch tests drive the watch itself on the memory store.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keysafe import SecretManager
from keysafe.backends.memory import MemoryBackend
from keysafe.workloads.watch import ScopeWatch

from .conftest import Cli
from .fakekube import FakeKubeServer

CANARY = "canary-" + secrets.token_hex(12)
NS, NAME = "prod", "app-secrets"
LINE_WAIT = 60.0  # seconds a pass's JSON line may take (a loaded CI machine)


@pytest.fixture
def cluster(fake_kube: FakeKubeServer):
    fake_kube.cluster.namespaces.add(NS)
    fake_kube.cluster.add_deployment(NS, "web")
    return fake_kube.cluster


def secret_values(cluster) -> dict[str, str]:
    obj = cluster.secrets[(NS, NAME)]
    return {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}


class Syncer:
    """``keysafe sync kubernetes --watch --json`` as a real process; its JSON lines are
    read by a thread so that a test waits for each with a bound."""

    def __init__(self, kubeconfig: str, *extra: str) -> None:
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONPYCACHEPREFIX", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-c",
             "import sys; from keysafe.cli.app import run; sys.exit(run(sys.argv[1:]))",
             "sync", "kubernetes", "--org", "acme", "-n", NS, "--name", NAME,
             "--kubeconfig", kubeconfig, "--interval", "1h", "--watch", "--json",
             "--restart", "deployment/web", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.append(line)
            self.lines.put(line)

    def next_pass(self) -> dict[str, Any]:
        try:
            return json.loads(self.lines.get(timeout=LINE_WAIT))
        except queue.Empty:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"no pass within {LINE_WAIT} s; stderr: {err}") from None

    def no_pass_yet(self) -> bool:
        return self.lines.empty()

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def syncer(kubeconfig_path: str) -> Iterator[Callable[..., Syncer]]:
    made: list[Syncer] = []

    def start(*extra: str) -> Syncer:
        s = Syncer(kubeconfig_path, *extra)
        made.append(s)
        return s

    yield start
    for s in made:
        s.kill()
        assert CANARY not in "".join(s.out)


@pytest.fixture
def kubeconfig_path(fake_kube: FakeKubeServer, tmp_path: Path) -> str:
    return str(tmp_path / "kubeconfig")


def put(kc: Cli, name: str, value: str) -> None:
    r = kc("put", name, "--org", "acme", input=value)
    assert r.code == 0, r.err


def watch_round(kc: Cli, cluster, sync: Syncer) -> None:
    """First pass; a put, a new secret and a delete each reach the Secret in a pass that
    the change brought forward (the interval is an hour), with a rollout."""
    first = sync.next_pass()
    assert (first["trigger"], first["action"]) == ("start", "created")
    assert secret_values(cluster)["DB_PASSWORD"] == "v1-" + CANARY

    put(kc, "db_password", "v2-" + CANARY)
    p = sync.next_pass()
    assert (p["trigger"], p["action"], p["restarted"]) == ("change", "updated",
                                                           ["deployment/web"])
    assert secret_values(cluster)["DB_PASSWORD"] == "v2-" + CANARY

    put(kc, "stripe_secret_key", "sk_test_" + "B" * 24)
    p = sync.next_pass()
    assert p["trigger"] == "change"
    assert "STRIPE_SECRET_KEY" in p["keys"]

    assert kc("rm", "stripe_secret_key", "--org", "acme").code == 0
    p = sync.next_pass()
    assert p["trigger"] == "change"
    assert p["removed"] == ["STRIPE_SECRET_KEY"]
    assert set(secret_values(cluster)) == {"DB_PASSWORD"}

    # Another org's change is not this scope's: no pass (checked after this org's
    # next change, which must be the next line).
    r = kc("put", "db_password", "--org", "other", input="x-" + CANARY)
    assert r.code == 0, r.err
    put(kc, "db_password", "v3-" + CANARY)
    p = sync.next_pass()
    assert p["trigger"] == "change"
    assert p["action"] == "updated"
    assert secret_values(cluster)["DB_PASSWORD"] == "v3-" + CANARY

    code, err = sync.stop()
    assert code == 0, err
    assert CANARY not in err


def test_watch_on_the_embedded_store_polls_the_scope(cluster, kc, syncer):
    assert kc("init").code == 0
    put(kc, "db_password", "v1-" + CANARY)
    watch_round(kc, cluster, syncer("--poll", "1s"))


def test_watch_on_postgresql_is_told_by_notify(cluster, kc, syncer, pg_server,
                                               monkeypatch):
    name = pg_server.create_db()
    try:
        monkeypatch.setenv("KEYSAFE_DATABASE_URL", pg_server.url(name))
        monkeypatch.setenv("KEYSAFE_DB_AUTO_UPGRADE", "1")
        monkeypatch.setenv("KEYSAFE_MASTER_KEY",
                           "k1:" + base64.b64encode(os.urandom(32)).decode())
        put(kc, "db_password", "v1-" + CANARY)
        # An hour between polls: only a notification can bring a pass forward.
        watch_round(kc, cluster, syncer("--poll", "1h"))
    finally:
        pg_server.drop_db(name)


@pytest.mark.parametrize(("args", "words"), [
    (["--watch", "--once"], "cannot go with --once"),
    (["--poll", "5s"], "add --watch"),
    (["--watch", "--poll", "soon"], "poll interval 'soon'"),
    (["--watch", "--poll", "0s"], "at least 1s"),
])
def test_bad_watch_options(cluster, kc, kubeconfig_path, args, words):
    assert kc("init").code == 0
    r = kc("sync", "kubernetes", "--org", "acme", "-n", NS, "--name", NAME,
           "--kubeconfig", kubeconfig_path, *args)
    assert r.code == 2, r.err
    assert words in r.err
    assert cluster.requests == []


# -- ScopeWatch itself, on the memory store ------------------------------------------
class AnnouncingMemory(MemoryBackend):
    """The memory store with a ``watch`` (so Watchable), announcing what a test says."""

    def __init__(self) -> None:
        super().__init__()
        self.callbacks: list[Callable[[str], None]] = []
        self.listening = threading.Event()  # as PostgresBackend.listening
        self.listening.set()

    def watch(self, callback: Callable[[str], None]) -> None:
        self.callbacks.append(callback)

    def announce(self, path: str) -> None:
        for cb in self.callbacks:
            cb(path)


def make_watch(backend: MemoryBackend, poll: float = 3600.0
               ) -> tuple[SecretManager, ScopeWatch, threading.Event]:
    mgr = SecretManager(backend, env="local")
    stopped = threading.Event()
    w = ScopeWatch(mgr, "acme", "shared", None, poll=poll, wake=threading.Event(),
                   stopped=stopped)
    return mgr, w, stopped


def test_told_changes_outside_the_scope_are_ignored():
    store = AnnouncingMemory()
    mgr, w, _ = make_watch(store)
    assert w.told
    w.begin_pass()
    store.announce("keysafe/local/other/shared/db_password")
    store.announce("token:abc")
    assert w.wait(0.2) == "due"
    store.announce(mgr.path("db_password", "acme"))
    assert w.wait(30) == "change"
    w.begin_pass()
    store.announce("*")  # the listener reconnected: anything may have changed
    assert w.wait(30) == "change"


def test_a_change_during_a_pass_brings_another_and_a_stop_ends_the_wait():
    store = AnnouncingMemory()
    mgr, w, stopped = make_watch(store)
    w.begin_pass()
    store.announce(mgr.path("db_password", "acme"))  # while the pass reads
    w.passed([])
    assert w.wait(30) == "change"
    w.begin_pass()
    stopped.set()
    assert w.wait(30) == "stop"


def test_polled_changes_compare_the_listing():
    store = MemoryBackend()
    mgr, w, _ = make_watch(store, poll=0.05)
    assert not w.told
    mgr.put("db_password", "v1", "acme")
    w.begin_pass()
    w.passed(mgr.list("acme"))
    assert w.wait(0.3) == "due"  # polled, nothing changed
    mgr.put("other_key", "v1", "elsewhere")
    assert w.wait(0.3) == "due"  # another org
    mgr.put("db_password", "v2", "acme")
    assert w.wait(30) == "change"
    w.begin_pass()
    w.passed(mgr.list("acme"))
    mgr.update_metadata("db_password", "acme", tags={"env_var": "DATABASE_PASSWORD"})
    assert w.wait(30) == "change"


def test_a_burst_of_changes_is_one_pass_after_the_last() -> None:
    """Notices that keep coming (rotate --all) extend the wait: the watch answers once,
    after the last of them."""
    store = AnnouncingMemory()
    mgr, w, _ = make_watch(store)
    w.begin_pass()
    path = mgr.path("db_password", "acme")
    sent: list[int] = []

    def burst() -> None:
        for i in range(4):
            store.announce(path)
            sent.append(i)
            time.sleep(0.4)  # shorter than SETTLE: one burst

    t = threading.Thread(target=burst)
    t.start()
    assert w.wait(60) == "change"
    assert sent == [0, 1, 2, 3]  # answered only after the last notice
    t.join()


def test_notices_while_the_listener_is_down_wait_for_it_to_be_back() -> None:
    """PostgreSQL down: the listener's "*" on each failed reconnect is not a change. Once
    it is connected again, one pass (anything may have changed meanwhile)."""
    store = AnnouncingMemory()
    _, w, _ = make_watch(store)
    w.begin_pass()
    store.listening.clear()
    store.announce("*")
    assert w.wait(0.5) == "due"
    store.announce("*")
    threading.Timer(0.3, store.listening.set).start()
    assert w.wait(60) == "change"
