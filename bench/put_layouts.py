"""Where a durable put's time goes, and what other table layouts would buy (issue 2).

    .venv/bin/python bench/put_layouts.py                  # 1,000 and 100,000 secrets
    .venv/bin/python bench/put_layouts.py --sizes 1000 --rounds 6

1. A keysafe put split up: the backend's connection is wrapped so that each statement
   is timed; ``COMMIT`` (the fsync), the other statements, and the Python around them,
   beside a bare commit (one INSERT) on the same disk.
2. Each layout's statements for one put, from plain sqlite3 with random blobs (no
   keysafe code): today's, without the chain head row, versions kept in fixed slots
   (an UPDATE of the oldest in place), and no version history at all; in interleaved
   rounds with bare commits, the median of the per-round ratios.

Files go under bench/.work/ (git-ignored) and are removed at the end. Every loop is
bounded in count. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from keysafe import SecretManager, load_settings
from keysafe.backends.sqlite import _SCHEMA

WORK = Path(__file__).resolve().parent / ".work"
KID = "k-0123456789abcdef"
VERSIONS = 10

Put = Callable[[sqlite3.Connection, int], None]


def connect(path: Path) -> sqlite3.Connection:
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=FULL")
    return c


def bare_put(c: sqlite3.Connection, k: int) -> None:
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT INTO t (v) VALUES (?)", (b"x" * 64,))
    c.execute("COMMIT")


class Layouts:
    """The statements of one put under each layout, on ``size`` secrets."""

    def __init__(self, size: int) -> None:
        self.paths = [f"keysafe/production/org-{i % 100}/shared/bench_{i}" for i in range(size)]

    def setup(self, c: sqlite3.Connection, slots: bool) -> None:
        c.executescript(_SCHEMA)
        if slots:
            c.execute("DROP TABLE versions")
            c.execute("CREATE TABLE versions (path TEXT NOT NULL, slot INTEGER NOT NULL, "
                      "version INTEGER NOT NULL, created_at REAL NOT NULL, created_by TEXT, "
                      "key_id TEXT, wrapped_key BLOB, ciphertext BLOB, "
                      "destroyed INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (path, slot)) "
                      "WITHOUT ROWID")
        c.execute("PRAGMA secure_delete=ON")
        c.execute("BEGIN")
        now = time.time()
        for p in self.paths:
            for v in range(1, VERSIONS + 1):
                row = (p, v, now, "bench", KID, os.urandom(60), os.urandom(70))
                if slots:
                    c.execute("INSERT INTO versions VALUES (?,?,?,?,?,?,?,?,0)",
                              (p, v % VERSIONS, *row[1:]))
                else:
                    c.execute("INSERT INTO versions VALUES (?,?,?,?,?,?,?,0)", row)
            c.execute("INSERT INTO secrets (path, current_version, created_at, updated_at, "
                      "key_id, wrapped_key, ciphertext) VALUES (?,?,?,?,?,?,?)",
                      (p, VERSIONS, now, now, KID, os.urandom(60), os.urandom(70)))
        c.execute("INSERT INTO audit_head VALUES (1, 0, 'x')")
        c.execute("COMMIT")

    def put(self, *, head: bool = True, versions: str = "rows") -> Put:
        def run(c: sqlite3.Connection, k: int) -> None:
            path, now = self.paths[k % len(self.paths)], time.time()
            w, ct = os.urandom(60), os.urandom(70)
            c.execute("BEGIN IMMEDIATE")
            _, cur = c.execute(
                "SELECT (SELECT value FROM meta WHERE key = 'active_key_id'), "
                "(SELECT current_version FROM secrets WHERE path = ?)", (path,)).fetchone()
            new = cur + 1
            if versions == "rows":
                c.execute("INSERT OR REPLACE INTO versions VALUES (?,?,?,?,?,?,?,0)",
                          (path, new, now, "bench", KID, w, ct))
            elif versions == "slots":
                c.execute("UPDATE versions SET version = ?, created_at = ?, created_by = ?, "
                          "key_id = ?, wrapped_key = ?, ciphertext = ?, destroyed = 0 "
                          "WHERE path = ? AND slot = ?",
                          (new, now, "bench", KID, w, ct, path, new % VERSIONS))
            c.execute("UPDATE secrets SET current_version = ?, updated_at = ?, updated_by = ?, "
                      "deleted_at = NULL, key_id = ?, wrapped_key = ?, ciphertext = ? "
                      "WHERE path = ?", (new, now, "bench", KID, w, ct, path))
            if versions == "rows":
                c.execute("DELETE FROM versions WHERE path = ? AND version <= ?",
                          (path, new - VERSIONS))
            seq = (c.execute("SELECT seq FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                   or (0,))[0] + 1
            c.execute("INSERT INTO audit (seq, ts, actor, action, path, version, outcome, "
                      "org, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?)",
                      (seq, int(now * 1e6), "bench", "write", path, new, "ok", "org",
                       "0" * 64, os.urandom(32).hex()))
            if head:
                c.execute("INSERT INTO audit_head VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE "
                          "SET seq = excluded.seq, hash = excluded.hash", (seq, "1" * 64))
            c.execute("COMMIT")
        return run


def layouts(work: Path, size: int, rounds: int, ops: int) -> dict[str, float]:
    lay = Layouts(size)
    variants: dict[str, tuple[Callable[[sqlite3.Connection], None], Put]] = {
        "bare": (lambda c: c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)"),
                 bare_put),
        "today's": (lambda c: lay.setup(c, False), lay.put()),
        "no chain head row": (lambda c: lay.setup(c, False), lay.put(head=False)),
        "versions in slots": (lambda c: lay.setup(c, True), lay.put(versions="slots")),
        "no version history": (lambda c: lay.setup(c, False), lay.put(versions="none")),
    }
    conns = {}
    for i, (name, (setup, put)) in enumerate(variants.items()):
        conns[name] = c = connect(work / f"layout-{size}-{i}.db")
        setup(c)
        for k in range(1_500):  # past the WAL's growth
            put(c, k)
    rates: dict[str, list[float]] = {n: [] for n in variants}
    order = list(variants)
    rng = random.Random(size)
    for r in range(rounds):
        rng.shuffle(order)
        for name in order:
            put, c = variants[name][1], conns[name]
            t = time.perf_counter()
            for k in range(ops):
                put(c, r * ops + k)
            rates[name].append(ops / (time.perf_counter() - t))
    for c in conns.values():
        c.close()
    return {n: statistics.median(a / b for a, b in zip(v, rates["bare"], strict=True))
            for n, v in rates.items()}


class Timed:
    """A connection whose statements are timed: COMMIT apart from the rest."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.commit = self.other = 0.0

    def execute(self, sql: str, *args: Any) -> Any:
        t = time.perf_counter()
        try:
            return self.conn.execute(sql, *args)
        finally:
            dt = time.perf_counter() - t
            if sql == "COMMIT":
                self.commit += dt
            else:
                self.other += dt

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def split_put(work: Path, ops: int) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(dir=work))
    key = base64.b64encode(os.urandom(32)).decode()
    mgr = SecretManager.from_settings(load_settings(
        environ={"KEYSAFE_HOME": str(home)}, home=home, master_key=key, actor="bench"))
    try:
        names = [(f"key_{i}", f"org-{i % 10}") for i in range(1_000)]
        for r in range(VERSIONS + 1):
            for n, o in names:
                mgr.put(n, f"init-{r}-" + "x" * 40, o)
        be: Any = mgr.backend
        timed = be._conn = Timed(be._conn)
        for k in range(1_500):
            n, o = names[k % 1_000]
            mgr.put(n, f"warm-{k}", o)
        timed.commit = timed.other = 0.0
        t = time.perf_counter()
        for k in range(ops):
            n, o = names[k % 1_000]
            mgr.put(n, f"v{k}-" + "v" * 32, o)
        total = time.perf_counter() - t
        be._conn = timed.conn
    finally:
        mgr.close()
    bare = connect(home / "bare.db")
    bare.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    for k in range(1_500):
        bare_put(bare, k)
    t = time.perf_counter()
    for k in range(ops):
        bare_put(bare, k)
    bare_total = time.perf_counter() - t
    bare.close()
    shutil.rmtree(home, ignore_errors=True)
    us = 1e6 / ops
    return {"put": total * us, "commit": timed.commit * us, "statements": timed.other * us,
            "python": (total - timed.commit - timed.other) * us, "bare": bare_total * us}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,100000")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--ops", type=int, default=500)
    args = ap.parse_args()
    WORK.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="put-layouts-", dir=WORK))
    try:
        s = split_put(work, 3_000)
        print(f"keysafe put {s['put']:.0f} us: COMMIT {s['commit']:.0f}, other statements "
              f"{s['statements']:.0f}, Python {s['python']:.0f}; bare commit {s['bare']:.0f} us")
        for size in (int(x) for x in args.sizes.split(",")):
            ratios = layouts(work, size, args.rounds, args.ops)
            print(f"\n{size:,} secrets: each layout's statements, median ratio to bare commits")
            for name, ratio in ratios.items():
                print(f"  {name:20s} {ratio:5.0%}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
