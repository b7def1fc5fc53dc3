"""How soon a changed value reaches the Kubernetes Secret with ``sync kubernetes --watch``.

A ``keysafe sync kubernetes --watch --json --interval 1h`` process runs against the
STAND-IN Kubernetes API server of the tests (tests/kube/fakekube.py, on 127.0.0.1; no
cluster runs here), with the real ``kubernetes`` client. The bench puts a new value of
one secret of its scope, from another process's manager, and times until the stand-in
holds a Secret with that value, for:

- the PostgreSQL store (a real server on loopback, as the tests start it): told of the
  change by NOTIFY;
- the embedded store, checked every ``--poll 1s`` (and ``--poll 5s``).

Without ``--watch`` the same change waits for the next ``--interval`` pass (its default
is 1h; the External Secrets Operator's ``refreshInterval`` is commonly 1h too): that is
the figure this is set against, and it needs no measuring. Every wait is bounded (30 s),
every loop counted (``--changes``); the servers and processes are stopped in ``finally``.

    .venv/bin/python bench/sync_watch.py [--changes 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from keysafe.manager.manager import SecretManager  # noqa: E402
from keysafe.testing.postgres import PgUnavailable, start_pg, stop_pg  # noqa: E402
from kube.fakekube import FakeKubeServer  # noqa: E402

NS, NAME = "bench", "watched"
WAIT = 30.0


def secret_value(server: FakeKubeServer) -> str | None:
    obj = server.cluster.secrets.get((NS, NAME))
    if obj is None:
        return None
    raw = obj["data"].get("DB_PASSWORD")
    return None if raw is None else base64.b64decode(raw).decode()


def wait_value(server: FakeKubeServer, value: str) -> float:
    """Seconds until the Secret holds ``value`` (bounded)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < WAIT:
        if secret_value(server) == value:
            return time.perf_counter() - t0
        time.sleep(0.005)
    raise SystemExit(f"the Secret did not get the new value within {WAIT:g} s")


def measure(label: str, server: FakeKubeServer, kubeconfig: str, env: dict[str, str],
            extra: list[str], changes: int) -> dict[str, Any]:
    os.environ.update(env)
    mgr = SecretManager.from_env()
    mgr.put("db_password", "v0", "acme")
    proc = subprocess.Popen(
        [sys.executable, "-m", "keysafe.cli.entry", "sync", "kubernetes", "--org", "acme",
         "-n", NS, "--name", NAME, "--kubeconfig", kubeconfig, "--interval", "1h",
         "--watch", "--json", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    runs: list[float] = []
    try:
        wait_value(server, "v0")
        for i in range(1, changes + 1):
            time.sleep(0.3)  # not in the middle of the previous pass
            value = f"v{i}"
            t = time.perf_counter()
            mgr.put("db_password", value, "acme")
            runs.append(time.perf_counter() - t + wait_value(server, value))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        mgr.close()
    med = statistics.median(runs)
    print(f"{label:<44} median {med * 1000:7.0f} ms   "
          f"(min {min(runs) * 1000:.0f}, max {max(runs) * 1000:.0f}; {len(runs)} changes)")
    return {"median_s": med, "runs_s": runs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=7)
    ap.add_argument("--json")
    args = ap.parse_args()
    out: dict[str, Any] = {}
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith("KEYSAFE_") and k not in ("KUBECONFIG", "ENVIRONMENT")}
    with tempfile.TemporaryDirectory() as tmp, FakeKubeServer() as server:
        kubeconfig = str(server.kubeconfig(Path(tmp) / "kubeconfig"))
        server.cluster.namespaces.add(NS)
        common = dict(KEYSAFE_ACTOR="bench", HOME=tmp, PYTHONDONTWRITEBYTECODE="1")
        try:
            pg = start_pg()
        except PgUnavailable as exc:
            pg = None
            print(f"PostgreSQL: skipped ({exc})")
        try:
            if pg is not None:
                env = dict(common, KEYSAFE_HOME=str(Path(tmp) / "pg-home"),
                           KEYSAFE_DATABASE_URL=pg.url(pg.create_db()),
                           KEYSAFE_DB_AUTO_UPGRADE="1",
                           KEYSAFE_MASTER_KEY="k1:" + base64.b64encode(os.urandom(32)).decode())
                os.environ.clear()
                os.environ.update(base_env)
                out["postgres_notify"] = measure(
                    "PostgreSQL, told by NOTIFY", server, kubeconfig, env, [], args.changes)
                server.cluster.secrets.pop((NS, NAME), None)
            for poll in ("1s", "5s"):
                os.environ.clear()
                os.environ.update(base_env)
                home = Path(tmp) / f"sqlite-{poll}"
                env = dict(common, KEYSAFE_HOME=str(home))
                subprocess.run([sys.executable, "-m", "keysafe.cli.entry", "init"],
                               check=True, capture_output=True, env={**base_env, **env})
                out[f"sqlite_poll_{poll}"] = measure(
                    f"embedded store, --poll {poll}", server, kubeconfig, env,
                    ["--poll", poll], args.changes)
                server.cluster.secrets.pop((NS, NAME), None)
        finally:
            if pg is not None:
                stop_pg(pg)
    out["load"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
