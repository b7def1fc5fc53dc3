"""Where keysafe's time goes on the paths bench/core.py measures (cProfile).

    .venv/bin/python bench/profile_core.py [--size 1000] [--ops 20000] [--top 25]
        [--what uncached,uncached-noaudit,cached,puts,import]

Uses a store populated by bench/core.py when one exists in bench/.work (else builds
one of --size secrets). ``import`` shows ``python -X importtime`` for ``keysafe get``'s
process: the heaviest modules imported, cumulative microseconds.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import core
from keysafe import SecretManager


def profile(label: str, fn: object, top: int) -> None:
    pr = cProfile.Profile()
    pr.enable()
    fn()  # type: ignore[operator]
    pr.disable()
    s = io.StringIO()
    st = pstats.Stats(pr, stream=s)
    print(f"\n===== {label}: by own time")
    st.sort_stats("tottime").print_stats(top)
    print(s.getvalue())
    s.seek(0)
    s.truncate()
    print(f"===== {label}: by cumulative time")
    st.sort_stats("cumulative").print_stats(top)
    print(s.getvalue())


def import_profile(home: Path, key: str, top: int) -> None:
    """``keysafe get`` as the benchmark runs it, under -X importtime and then cProfile."""
    name, org = core.HOT
    keysafe_bin = str(Path(sys.executable).parent / "keysafe")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSAFE_")}
    env.update(KEYSAFE_HOME=str(home), KEYSAFE_MASTER_KEY=key, KEYSAFE_ACTOR="bench")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as bench/core.py: bytecode cached
    env["PYTHONPYCACHEPREFIX"] = str(core.DEFAULT_WORK / "pycache")
    cmd = [keysafe_bin, "get", name, "--org", org]
    for _ in range(2):  # fill the bytecode cache
        subprocess.run(cmd, env=env, capture_output=True, timeout=60)
    r = subprocess.run([sys.executable, "-X", "importtime", *cmd], env=env,
                       capture_output=True, text=True, timeout=60)
    rows = []
    for line in r.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:"):].split("|")
        try:
            rows.append((int(parts[1]), int(parts[0]), parts[2].rstrip()))
        except ValueError:
            continue
    total = sum(own for _, own, _ in rows)
    rows.sort(reverse=True)
    print(f"\n===== `keysafe get` imports (python -X importtime): {total / 1e3:,.0f} ms in "
          f"{len(rows)} modules; heaviest, cumulative / own us (exit {r.returncode})")
    for cum, own, mod in rows[:top]:
        print(f"{cum:>9,} {own:>9,}  {mod}")
    prof = core.DEFAULT_WORK / "keysafe-get.prof"
    r = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), *cmd], env=env,
                       capture_output=True, text=True, timeout=60)
    s = io.StringIO()
    st = pstats.Stats(str(prof), stream=s)
    print(f"\n===== `keysafe get` under cProfile (exit {r.returncode}), by cumulative time")
    st.sort_stats("cumulative").print_stats(top)
    print(s.getvalue())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1_000)
    ap.add_argument("--ops", type=int, default=20_000)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--what", default="uncached,uncached-noaudit,cached,puts,import")
    ap.add_argument("--work", type=Path, default=core.DEFAULT_WORK)
    args = ap.parse_args()
    what = set(args.what.split(","))
    key = core.master_key(args.work)
    lay = core.Layout(args.size)
    home = args.work / f"store-{args.size}"
    core.populate(home, key, lay, reuse=True, say=print)
    mgr = SecretManager.from_settings(core.settings_for(home, key))
    rng = random.Random(7)
    seq = [lay.name_org(rng.randrange(lay.size)) for _ in range(args.ops)]
    try:
        get = mgr.get
        for name, org in seq[:2_000]:
            get(name, org, fresh=True)
        mgr.audit.flush()

        def uncached() -> None:
            for name, org in seq:
                get(name, org, fresh=True)
            mgr.audit.flush()

        if "uncached" in what:
            profile("uncached get, audit on", uncached, args.top)
        if "uncached-noaudit" in what:
            mgr.audit_reads = False
            profile("uncached get, audit off", uncached, args.top)
            mgr.audit_reads = True
        if "cached" in what:
            name, org = core.HOT
            get(name, org)

            def cached() -> None:
                for _ in range(200_000):
                    get(name, org)

            profile("cached get", cached, args.top)
        if "puts" in what:
            vals = [f"profile-{os.getpid()}-{k}-" + "v" * 32 for k in range(500)]
            mgr.put(seq[0][0], vals[0], seq[0][1])

            def puts() -> None:
                for k in range(500):
                    mgr.put(seq[k][0], vals[k], seq[k][1])

            profile("durable puts", puts, args.top)
    finally:
        mgr.close()
    if "import" in what:
        import_profile(home, key, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
