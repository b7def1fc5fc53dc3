"""Audit archive at scale (issue 2's audit log): ``keysafe audit archive`` of every record
of bench/core.py's embedded store, with a writer busy beside it, then the checks and the
clean-up an operator runs after it.

    .venv/bin/python bench/archive.py                    # the 1,000,000-secret store
    .venv/bin/python bench/archive.py --size 1000 --json archive.json

On a copy of ``bench/.work/store-SIZE`` (populated by this run if missing; its audit
table holds the records of every earlier benchmark run on it), in this order:

1. ``keysafe audit archive --before 0s`` as a fresh process (wall time, peak RSS), while a
   thread of this process puts a new version of one secret every ``--interval`` seconds
   through the library (durable and audited, as a server's write): that writer's latency
   (p50, p99, max, and how many puts took over 100 ms) is what an archive costs the
   service beside it;
2. the store file and its WAL after the archive; ``keysafe db compact`` (wall time, peak
   RSS) and the file after it;
3. ``keysafe audit verify --archive FILE`` and ``keysafe audit verify`` of the store
   (wall time, peak RSS each), both of which must pass.

Every loop is bounded in count and time; nothing listens on the network. Needs the free
disk for two copies of the store and the archive file. Never part of the tests.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import core  # noqa: E402  (bench/core.py: the populated stores and their master key)

WORK = core.DEFAULT_WORK / "archive"
#: The writer's bounds, whatever the archive does.
MAX_PUTS = 100_000
MAX_SECONDS = 1_800.0


def _env(home: Path, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSAFE_")}
    env.update(KEYSAFE_HOME=str(home), KEYSAFE_MASTER_KEY=key, KEYSAFE_ACTOR="bench")
    return env


def _run(argv: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """A keysafe command as a fresh process: wall time, peak RSS (its own, from wait4),
    exit code and its JSON output."""
    exe = str(Path(sys.executable).parent / "keysafe")
    t0 = time.perf_counter()
    proc = subprocess.Popen([exe, *argv, "--json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    chunks: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda k=k, f=f: chunks.__setitem__(k, f.read()))
               for k, f in (("out", proc.stdout), ("err", proc.stderr)) if f is not None]
    try:
        for t in readers:  # both pipes at once: neither can fill up and stall the child
            t.start()
        _, status, usage = os.wait4(proc.pid, 0)
        for t in readers:
            t.join(timeout=60)
    finally:
        timer.cancel()
    out, err = chunks.get("out", b""), chunks.get("err", b"")
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    try:
        body = json.loads(out) if out.strip() else None
    except ValueError:
        body = None
    return {"cmd": " ".join(["keysafe", *argv]), "s": round(wall, 2),
            "rss_mb": round(usage.ru_maxrss / 1024, 1), "exit": proc.returncode,
            "out": body, "stderr": err.decode(errors="replace")[-400:]}


class Writer(threading.Thread):
    """Puts a new version of one secret every ``interval`` s until stopped (bounded)."""

    def __init__(self, home: Path, key: str, interval: float, dest: Path) -> None:
        super().__init__(name="bench-writer", daemon=True)
        self.home, self.key, self.interval, self.dest = home, key, interval, dest
        self.stop = threading.Event()
        self.lat_ms: list[float] = []
        #: The archive's phase at each put: it writes FILE.partial, then links FILE
        #: into place and removes the records from the store.
        self.phase: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        from keysafe import SecretManager

        mgr = SecretManager.from_settings(core.settings_for(self.home, self.key))
        try:
            deadline = time.monotonic() + MAX_SECONDS
            k = 0
            while not self.stop.is_set() and k < MAX_PUTS and time.monotonic() < deadline:
                t0 = time.perf_counter()
                try:
                    mgr.put("archive_bench_writer", f"value-{k:06d}-" + "w" * 32, "acme-corp")
                except Exception as exc:  # counted, shown, and it fails the run
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                self.lat_ms.append((time.perf_counter() - t0) * 1000)
                self.phase.append("removing" if self.dest.exists() else "writing")
                k += 1
                self.stop.wait(self.interval)
        finally:
            mgr.close()


def _sizes(db: Path) -> dict[str, float]:
    wal = Path(str(db) + "-wal")
    return {"file_mb": round(db.stat().st_size / 1e6, 1),
            "wal_mb": round(wal.stat().st_size / 1e6, 1) if wal.exists() else 0.0}


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1_000_000,
                    help="which bench/core.py store to copy (default 1000000)")
    ap.add_argument("--interval", type=float, default=0.01,
                    help="seconds between the writer's puts (default 0.01)")
    ap.add_argument("--no-writer", action="store_true", help="archive with nothing beside it")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    core.DEFAULT_WORK.mkdir(parents=True, exist_ok=True)
    lock = (core.DEFAULT_WORK / "archive.lock").open("w")
    try:  # two runs would share (and remove) one scratch folder
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit("another bench/archive.py is running") from None
    key = core.master_key(core.DEFAULT_WORK)
    src_home = core.DEFAULT_WORK / f"store-{args.size}"
    core.populate(src_home, key, core.Layout(args.size), reuse=True, say=print)
    shutil.rmtree(WORK, ignore_errors=True)
    home = WORK / "home"
    home.mkdir(parents=True)
    db = home / "keysafe.db"
    # The online backup API: a consistent copy even if the source has a WAL.
    with sqlite3.connect(src_home / "keysafe.db") as src, sqlite3.connect(db) as dst:
        src.backup(dst, pages=65_536)
    os.chmod(db, 0o600)
    with sqlite3.connect(db) as c:
        records = c.execute("SELECT count(*) FROM audit").fetchone()[0]
    env = _env(home, key)
    dest = WORK / "audit-archive.jsonl"
    load = os.getloadavg()[0]
    print(f"store copy: {records:,} audit records, {_sizes(db)['file_mb']:,} MB; "
          f"load {load:.2f}", flush=True)

    writer = None if args.no_writer else Writer(home, key, args.interval, dest)
    if writer is not None:
        writer.start()
        time.sleep(1.0)  # its first puts (catalog, statements) before the archive starts
    try:
        arch = _run(["audit", "archive", "--before", "0s", "--to", str(dest)], env, 3_600)
    finally:
        if writer is not None:
            time.sleep(1.0)
            writer.stop.set()
            writer.join(timeout=60)
    after = _sizes(db)
    print(f"archive: {arch['s']} s, {arch['rss_mb']} MB peak, exit {arch['exit']}; "
          f"{(arch['out'] or {}).get('records', 0):,} records; store file then "
          f"{after['file_mb']:,} MB, WAL {after['wal_mb']:,} MB", flush=True)
    w: dict[str, Any] = {}
    if writer is not None:
        lat = writer.lat_ms
        w = {"puts": len(lat), "interval_s": args.interval,
             "p50_ms": round(statistics.median(lat), 2) if lat else None,
             "p99_ms": round(_pct(lat, 0.99), 2), "max_ms": round(max(lat, default=0), 1),
             "over_100ms": sum(1 for x in lat if x > 100), "errors": writer.errors[:5],
             "over_100ms_by_phase": {
                 p: sum(1 for x, q in zip(lat, writer.phase, strict=True) if x > 100 and q == p)
                 for p in ("writing", "removing")}}
        print(f"writer beside it: {w['puts']:,} puts, p50 {w['p50_ms']} ms, p99 "
              f"{w['p99_ms']} ms, max {w['max_ms']} ms, {w['over_100ms']} over 100 ms, "
              f"{len(writer.errors)} errors; over 100 ms while the archive wrote its file / "
              f"removed the records: {w['over_100ms_by_phase']['writing']} / "
              f"{w['over_100ms_by_phase']['removing']}", flush=True)
    compact = _run(["db", "compact"], env, 3_600)
    compacted = _sizes(db)
    print(f"db compact: {compact['s']} s, {compact['rss_mb']} MB peak, exit "
          f"{compact['exit']}; store file {compacted['file_mb']:,} MB, WAL "
          f"{compacted['wal_mb']:,} MB", flush=True)
    vfile = _run(["audit", "verify", "--archive", str(dest)], env, 3_600)
    vstore = _run(["audit", "verify"], env, 3_600)
    for label, r in (("verify --archive", vfile), ("verify (store)", vstore)):
        print(f"{label}: {r['s']} s, {r['rss_mb']} MB peak, exit {r['exit']}", flush=True)
    res = {
        "size": args.size, "records": records, "archive": arch, "after_archive": after,
        "writer": w, "compact": compact, "after_compact": compacted,
        "verify_archive": vfile, "verify_store": vstore,
        "archive_file_mb": round(dest.stat().st_size / 1e6, 1) if dest.exists() else None,
        "load_before": load, "cores": os.cpu_count(), "python": platform.python_version(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    failed = [r["cmd"] for r in (arch, compact, vfile, vstore) if r["exit"] != 0]
    if w.get("errors"):
        failed.append("writer")
    for r in (arch, compact, vfile, vstore):
        if r["exit"] != 0:
            print(f"FAILED: {r['cmd']} exit {r['exit']}: {r['stderr']}", file=sys.stderr)
    shutil.rmtree(WORK, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
