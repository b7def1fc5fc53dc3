"""Rotation benchmark (issue 6): ``keysafe rotate due`` over a store of N secrets.

    .venv/bin/python bench/rotation.py                 # 10,000 secrets, half of them due
    .venv/bin/python bench/rotation.py --n 2000 --json rotation.json

A fresh embedded store (KEYSAFE_HOME under bench/.work, same disk as the repository) is
filled through the library with N symmetric secrets (secret type ``encryption_key``:
rotated by the ``random`` rotator, and not held for a maintenance window as JWT secrets
are), spread over 10 orgs; every other one is then marked as last rotated 400 days ago,
so it is overdue (spec 004's period for encryption keys is 180 days). Then:

1. ``keysafe rotate due --json`` runs as a fresh process (what a cron job or the
   server's schedule does); its wall time is measured, and the result is checked secret by
   secret: every due one is at version 2 with a new value and a previous record, every
   other one untouched at version 1;
2. for scale, the same number of plain durable ``SecretManager.put`` calls (one new
   version each, audited) on another store of the same size: the write floor of a
   rotation, which also writes a previous record and its audit records.

``--scan`` measures instead what the server's hourly job costs on a large store: the
scan for overdue secrets plus the reminders (``RotationEngine.due`` and ``remind``: the
store returns only the secrets the policy's window can hold), beside judging every
secret (``states``, what the job did before), each in a fresh process (wall time and
peak RSS), on bench/core.py's embedded stores (1,000 and 1,000,000 secrets; populated
by this run if missing).

Every loop is bounded by N; nothing listens on the network. Never part of the tests.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work" / "rotation"
ORGS = [f"org-{i:02d}" for i in range(10)]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSAFE_")}
    env.update({"KEYSAFE_HOME": str(home), "KEYSAFE_ENV": "test"})
    return env


def _manager(home: Path) -> Any:
    from keysafe.config import load_settings
    from keysafe.manager.manager import SecretManager

    return SecretManager.from_settings(load_settings(_env(home)))


def seed(home: Path, n: int, *, due_every: int = 2) -> tuple[list[tuple[str, str]], float]:
    """N symmetric secrets; every ``due_every``-th one overdue. Returns (due, s)."""
    from keysafe.backends.base import WriteContext
    from keysafe.models import MetadataUpdate

    t0 = time.perf_counter()
    due = []
    old = datetime.now(UTC) - timedelta(days=400)
    with _manager(home) as m:
        b = m.backend
        with b.transaction():  # one commit for the seeding (not what is measured)
            for i in range(n):
                name, org = f"signing_key_{i:06d}", ORGS[i % len(ORGS)]
                m.put(name, os.urandom(24).hex(), org, secret_type="encryption_key")
                if i % due_every == 0:
                    b.update_metadata(m.path(name, org), MetadataUpdate(last_rotated=old),
                                      ctx=WriteContext.make("bench"))
                    due.append((name, org))
    return due, time.perf_counter() - t0


def run_rotate_due(home: Path) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "keysafe", "rotate", "due", "--json"],
                       env=_env(home), capture_output=True, timeout=3600)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"keysafe rotate due exited {p.returncode}: "
                         f"{p.stderr.decode()[-2000:]}")
    return wall, json.loads(p.stdout)


def check(home: Path, n: int, due: list[tuple[str, str]]) -> dict[str, int]:
    from keysafe.rotation.engine import previous_value

    due_set = set(due)
    bad = rotated = untouched = 0
    with _manager(home) as m:
        for i in range(n):
            name, org = f"signing_key_{i:06d}", ORGS[i % len(ORGS)]
            meta = m.backend.describe(m.path(name, org))
            has_prev = previous_value(m.backend, m.path(name, org)) is not None
            if (name, org) in due_set:
                ok = meta.current_version == 2 and has_prev
                rotated += ok
            else:
                ok = meta.current_version == 1 and not has_prev
                untouched += ok
            bad += not ok
    return {"rotated_ok": rotated, "untouched_ok": untouched, "wrong": bad}


def put_floor(home: Path, due: list[tuple[str, str]]) -> float:
    with _manager(home) as m:
        t0 = time.perf_counter()
        for name, org in due:
            m.put(name, os.urandom(24).hex(), org, check_format=False)
        return time.perf_counter() - t0


SCAN_CODE = """
import json, resource, sys, time
sys.path.insert(0, {bench!r})
import core
from keysafe import SecretManager
from keysafe.rotation.engine import RotationEngine
key = core.master_key(core.DEFAULT_WORK)
mgr = SecretManager.from_settings(core.settings_for(core.DEFAULT_WORK / {store!r}, key))
eng = RotationEngine(mgr)
t = time.perf_counter()
if {how!r} == "window":
    found = len(eng.due()) + len(eng.remind())
else:
    found = sum(1 for s in eng.states() if s.status == "overdue")
wall = time.perf_counter() - t
mgr.close()
print(json.dumps({{"s": wall, "found": found,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def scan(sizes: list[int]) -> dict[str, Any]:
    sys.path.insert(0, str(BENCH))
    import core

    key = core.master_key(core.DEFAULT_WORK)
    out: dict[str, Any] = {}
    for size in sizes:
        core.populate(core.DEFAULT_WORK / f"store-{size}", key, core.Layout(size),
                      reuse=True, say=print)
        row = {}
        for how in ("window", "every"):
            code = SCAN_CODE.format(bench=str(BENCH), store=f"store-{size}", how=how)
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=1800, check=True)
            row[how] = json.loads(p.stdout.strip().splitlines()[-1])
        out[str(size)] = row
        w, e = row["window"], row["every"]
        print(f"{size:>9,} secrets: due + remind (store finds candidates) {w['s']:.2f} s, "
              f"peak {w['rss_mb']:.0f} MB | judging every secret {e['s']:.2f} s, peak "
              f"{e['rss_mb']:.0f} MB | {e['s'] / max(w['s'], 1e-9):.0f}x", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--scan", action="store_true",
                    help="the scheduled scan at 1,000 and 1,000,000 secrets instead")
    ap.add_argument("--scan-sizes", default="1000,1000000")
    args = ap.parse_args(argv)
    if args.scan:
        res = scan([int(x) for x in args.scan_sizes.split(",")])
        if args.json:
            args.json.write_text(json.dumps(res, indent=2))
        return 0
    n = max(10, min(args.n, 200_000))
    shutil.rmtree(WORK, ignore_errors=True)
    a, b = WORK / "rotate", WORK / "floor"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    print(f"seeding {n:,} secrets twice (half of them overdue) ...", flush=True)
    due, seed_s = seed(a, n)
    due_b, _ = seed(b, n)
    load = os.getloadavg()
    print(f"  seeded in {seed_s:.1f} s; {len(due):,} due; load {load[0]:.2f}", flush=True)
    wall, out = run_rotate_due(a)
    summary = out["summary"]
    verdict = check(a, n, due)
    floor = put_floor(b, due_b)
    res = {
        "n": n, "due": len(due), "rotate_due_s": round(wall, 2),
        "per_rotation_ms": round(wall / max(1, len(due)) * 1000, 3),
        "summary": summary, "check": verdict,
        "floor_puts_s": round(floor, 2),
        "ratio_vs_puts": round(wall / floor, 2) if floor else None,
        "load_before": load, "cores": os.cpu_count(), "python": platform.python_version(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(f"keysafe rotate due: {wall:.1f} s for {len(due):,} rotations "
          f"({res['per_rotation_ms']} ms each) over {n:,} secrets; outcomes {summary}")
    print(f"check: {verdict}")
    print(f"floor: {len(due):,} durable puts took {floor:.1f} s "
          f"(rotate due / puts = {res['ratio_vs_puts']}x)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    shutil.rmtree(WORK, ignore_errors=True)
    return 0 if verdict["wrong"] == 0 and summary.get("rotated") == len(due) else 1


if __name__ == "__main__":
    sys.exit(main())
