"""Issue 7: what one ``keysafe sync kubernetes`` pass costs.

Against the STAND-IN Kubernetes API server of the tests (tests/kube/fakekube.py, on
127.0.0.1; no cluster runs here), with the real ``kubernetes`` client:

- an unchanged pass (read the scope from the embedded store, one GET, no write) and a
  changed pass (one value rotated: read, GET, PUT), in process, for 10 and 1,000
  secrets in the scope;
- ``keysafe sync kubernetes --once`` as a fresh process (an unchanged pass), which is
  what a CronJob run costs: start-up (the ``kubernetes`` package import) dominates.

Every loop is bounded (``--repeats``); the server is stopped in ``finally``.

    .venv/bin/python bench/kube_sync.py [--repeats 7] [--sizes 10,1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from keysafe.kube import KubeSync, read_scope, sync_pass  # noqa: E402
from keysafe.manager.manager import SecretManager  # noqa: E402
from kube.fakekube import FakeKubeServer  # noqa: E402


def median_ms(fn, repeats: int) -> tuple[float, list[float]]:
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t) * 1000)
    return statistics.median(runs), runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sizes", default="10,1000")
    ap.add_argument("--json")
    args = ap.parse_args()
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp, FakeKubeServer() as server:
        home = Path(tmp) / "home"
        os.environ.update(KEYSAFE_HOME=str(home), KEYSAFE_ACTOR="bench", HOME=tmp)
        for var in ("KUBECONFIG", "KEYSAFE_ENV", "ENVIRONMENT"):
            os.environ.pop(var, None)
        kubeconfig = str(server.kubeconfig(Path(tmp) / "kubeconfig"))
        server.cluster.namespaces.add("bench")
        subprocess.run([sys.executable, "-m", "keysafe.cli.entry", "init"], check=True,
                       capture_output=True)
        mgr = SecretManager.from_env()
        try:
            for size in [int(s) for s in args.sizes.split(",")]:
                org = f"org{size}"
                for i in range(size):
                    mgr.put(f"secret_{i:05d}", f"value-{i}-" + "x" * 40, org)
                kube = KubeSync("bench", f"s{size}", kubeconfig=kubeconfig)
                sync_pass(kube, read_scope(mgr, org))  # create
                unchanged, runs_u = median_ms(
                    lambda org=org, kube=kube: sync_pass(kube, read_scope(mgr, org)),
                    args.repeats)
                counter = iter(range(10**6))

                def changed(org=org, kube=kube, counter=counter) -> None:
                    mgr.put("secret_00000", f"rotated-{next(counter)}", org)
                    r = sync_pass(kube, read_scope(mgr, org))
                    assert r.action == "updated"

                changed_ms, runs_c = median_ms(changed, args.repeats)
                kube.close()
                out[f"pass_unchanged_{size}"] = {"median_ms": unchanged, "runs": runs_u}
                out[f"pass_changed_{size}"] = {"median_ms": changed_ms, "runs": runs_c}
                print(f"{size:>6} secrets: unchanged pass {unchanged:8.1f} ms, "
                      f"changed pass {changed_ms:8.1f} ms")
            cmd = [sys.executable, "-m", "keysafe.cli.entry", "sync", "kubernetes",
                   "--org", "org10", "-n", "bench", "--name", "s10", "--once",
                   "--kubeconfig", kubeconfig]
            env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")

            def fresh() -> None:
                p = subprocess.run(cmd, capture_output=True, env=env, timeout=120)
                assert p.returncode == 0, p.stderr.decode()

            proc_ms, runs_p = median_ms(fresh, args.repeats)
            out["process_once_unchanged_10"] = {"median_ms": proc_ms, "runs": runs_p}
            print(f"fresh process, --once, 10 secrets unchanged: {proc_ms:8.1f} ms")
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import kubernetes.client, "
                            "kubernetes.config"], check=True, env=env)
            out["import_kubernetes_ms"] = (time.perf_counter() - t) * 1000
            print(f"python -c 'import kubernetes.client, kubernetes.config': "
                  f"{out['import_kubernetes_ms']:8.1f} ms (one run)")
        finally:
            mgr.close()
    out["requests_to_stand_in"] = len(server.cluster.requests)
    out["load"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
