"""Replicas benchmark (issue 5): keysafe servers as replicas on one PostgreSQL, beside
the embedded store, with 1,000 and 1,000,000 stored secrets, all in one run, with wrk.

    .venv/bin/python bench/replicas.py --quick            # smoke: 1,000 and 10,000, 1 x 3 s
    .venv/bin/python bench/replicas.py --reuse --json replicas.json     # full
    .venv/bin/python bench/replicas.py --sizes 1000,100000 --passes 1
    .venv/bin/python bench/replicas.py --reuse --spy      # + py-spy of one replica
        (the biggest store's reads and writes, the smallest one's reads: diff the two)

Stores (seeded directly with the backends' ``put_many``, batches of 20,000, the same
master key and naming as the servers: ``keysafe/production/acme/shared/bench_<i>``):

- PostgreSQL (``keysafe.testing.postgres.start_pg``: the Debian package's server on
  127.0.0.1, run as the postgres user, fsync and synchronous_commit on, shared_buffers
  sized to hold the secrets table: PG_SETTINGS), one database per size, its ``secrets``
  table and key read into shared buffers (pg_prewarm) before the load;
- the embedded SQLite store (WAL, synchronous=FULL), one KEYSAFE_HOME per size;

both under ``bench/.work/`` (git-ignored, the same disk). ``--reuse`` keeps them in
``bench/.work/replicas/`` (with the bench-only master key, mode 0600) for the next run;
otherwise they are seeded in a scratch directory and removed at the end.

Servers, all ``serve(port=P)`` (granian, one worker, every setting at its default) on
127.0.0.1 with KEYSAFE_ENV=production and one shared KEYSAFE_MASTER_KEY: two replicas
(A and B) per PostgreSQL database (KEYSAFE_DATABASE_URL), one server per SQLite store.
A's first admin token makes a service and a writer token through ``POST /api/tokens``.
Each server's scheduler starts its due jobs (``purge-expired``, ``rotate-due``) 5 s after
it starts, as in production: the rotation scan asks the store for the secrets that can be
due (under a second at 1,000,000; it used to judge every secret, minutes of one core).
``--defer-jobs`` marks the jobs as not due for a day before the servers start
(PostgreSQL's ``jobs`` table, the embedded store's ``jobs/*.lock``) and checks afterwards
that none ran during the load.

Workloads (wrk, unpinned: the servers, PostgreSQL and wrk share the machine's cores):

- reads: ``GET /api/secrets/acme/bench_<i>/value`` (service token; durably audited), i
  random per request (``lua/get_random.lua``), so at 1,000,000 nearly every read misses
  the server's 5 s cache;
- writes: blind ``PUT /api/secrets/acme/bench_<i>`` over bench_0..bench_999
  (``lua/put_cycle.lua``, writer token; durable and audited);

through one replica (``wrk -t2 -c16``), through two replicas (two wrk processes at
once, ``-t1 -c8`` each, one per replica; requests/s summed) and through the embedded
store's one server (``-t2 -c16``). One warm-up per workload, then ``--passes`` passes
interleaved across workloads; medians of the passes. Before every wrk run: the load
average; during it: CPU by keysafe, PostgreSQL, wrk and everything else (from /proc),
the server cache's hit rate (from /metrics) and PostgreSQL's wait events (sampled from
pg_stat_activity); ``--quiet CORES`` first waits, boundedly, for other processes to
calm down. After the load: every store's writes landed, and its audit chain holds a
record for every acknowledged write. Any non-2xx response, connect or timeout error,
or failed check fails the run (exit 1) after the tables. Every server, PostgreSQL
included, is stopped by PID in ``finally``; every loop is bounded in count and time.
Never part of the test suite.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import random
import resource
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import core as corebench  # noqa: E402  (bench/core.py: tables, machine info)
import server as srvbench  # noqa: E402  (bench/server.py: wrk, servers, stop by PID)
from keysafe.backends.base import WriteContext  # noqa: E402
from keysafe.config import load_settings  # noqa: E402
from keysafe.crypto.keys import KeyRing  # noqa: E402
from keysafe.manager.manager import SecretManager  # noqa: E402
from keysafe.testing.postgres import (  # noqa: E402
    PgServer,
    _as_postgres,
    pg_bin,
    start_pg,
    stop_pg,
)

ORG = srvbench.ORG
PREFIX = "bench_"
WRITE_KEYS = 1000
SEED_BATCH = 20_000
GET_LUA = srvbench.LUA_DIR / "get_random.lua"
KEEP_DIR = srvbench.WORK_ROOT / "replicas"
#: Sized as docs/deploy.md advises: shared_buffers holds the secrets table and its index
#: (about 360 MB at 1,000,000 secrets) with room for the audit table's hot pages; 1 GB
#: is a sixth of the usual "a quarter of RAM" on this 24 GB machine.
PG_SETTINGS = {"shared_buffers": "1GB"}
CLK = os.sysconf("SC_CLK_TCK")


def value_of(i: int) -> str:
    return f"sk-bench-{i}-" + "x" * 40


def master_key_value() -> str:
    ring = KeyRing.generate()
    return f"{ring.active}:{base64.b64encode(ring.key(ring.active)).decode()}"


def say(text: str) -> None:
    print(text, flush=True)


# -- stores: seeding, keeping, PostgreSQL ---------------------------------------------------


@dataclass
class Store:
    key: str                  # "pg-1000000", "sqlite-1000"
    kind: str                 # "pg" or "sqlite"
    size: int
    env: dict[str, str]       # KEYSAFE_* for its servers (and for seeding)
    info: dict[str, Any] = field(default_factory=dict)
    servers: list[srvbench.Server] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{'PostgreSQL' if self.kind == 'pg' else 'embedded'} {self.size:,}"


class State:
    """What --reuse keeps between runs: the master key, the cluster, the seeded stores."""

    def __init__(self, root: Path, keep: bool) -> None:
        self.root, self.keep = root, keep
        self.file = root / "state.json"
        self.data: dict[str, Any] = {}
        if keep and self.file.is_file():
            self.data = json.loads(self.file.read_text())
        if "master_key" not in self.data:  # a new key: nothing sealed before can be reused
            self.data = {"master_key": master_key_value(), "pg": {}, "stores": {}}

    def save(self) -> None:
        fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.data, fh, indent=2)


def pg_is_up(pg: PgServer) -> bool:
    import psycopg

    try:
        with pg.admin():
            return True
    except psycopg.Error:
        return False


def restart_kept_pg(root: Path, password: str) -> PgServer:
    """Start a cluster made by ``start_pg`` in an earlier run again, with the command
    line PostgreSQL itself recorded there (postmaster.opts) and a new free port."""
    data = root / "data"
    argv = shlex.split((data / "postmaster.opts").read_text())
    argv[argv.index("-p") + 1] = str(srvbench.free_port())
    for k, v in PG_SETTINGS.items():  # today's settings over those it was made with
        argv += ["-c", f"{k}={v}"]
    log = (root / "server.log").open("ab")
    proc = subprocess.Popen(_as_postgres(argv), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    pg = PgServer(int(argv[argv.index("-p") + 1]), password, data, proc)
    try:
        srvbench.wait_until("postgres (kept cluster)", lambda: pg_is_up(pg), 60, proc)
    except BaseException:
        stop_kept_pg(pg)
        raise
    return pg


def stop_kept_pg(pg: PgServer) -> None:
    # stop_pg stops the cluster by PID, then removes datadir's parent: aim that at a
    # path that does not exist, so the seeded cluster stays for the next --reuse run.
    stop_pg(dataclasses.replace(pg, datadir=Path("/nonexistent-keysafe-bench/data")))


@contextlib.contextmanager
def postgres(state: State) -> Iterator[PgServer]:
    kept = state.data["pg"]
    pg = None
    if state.keep and kept.get("root") and (Path(kept["root"]) / "data" / "PG_VERSION").exists():
        say(f"  restarting the kept PostgreSQL cluster in {kept['root']}")
        pg = restart_kept_pg(Path(kept["root"]), kept["password"])
    else:
        base = state.root / "pg"
        base.mkdir(mode=0o755, exist_ok=True)
        base.chmod(0o755)  # the postgres user must reach its directory inside
        pg = start_pg(base, settings=PG_SETTINGS)
        state.data["pg"] = {"root": str(pg.datadir.parent), "password": pg.password}
        state.data["stores"] = {k: v for k, v in state.data["stores"].items()
                                if not k.startswith("pg-")}
        state.save()
    say(f"  PostgreSQL pid {pg.proc.pid} on 127.0.0.1:{pg.port} ({pg.datadir})")
    try:
        yield pg
    finally:
        (stop_kept_pg if state.keep else stop_pg)(pg)


def seed(store: Store) -> float:
    """Version 1 of bench_0..bench_{size-1} through the backend's put_many, batches of
    SEED_BATCH in separate calls (one transaction each), in path order (B-tree appends)."""
    settings = load_settings({**store.env})
    mgr = SecretManager.from_settings(settings)
    try:
        want = f"keysafe/production/{ORG}/shared/{PREFIX}7"
        got = mgr.path(f"{PREFIX}7", ORG)
        if got != want:
            raise RuntimeError(f"naming: {got!r} is not {want!r}")
        base = got[: -len(f"{PREFIX}7")]
        order = sorted(range(store.size), key=str)
        ctx = WriteContext.make("bench-seed")
        backend: Any = mgr.backend  # SQLiteBackend or PostgresBackend: both have put_many
        t0 = time.perf_counter()
        for start in range(0, store.size, SEED_BATCH):
            chunk = order[start:start + SEED_BATCH]
            backend.put_many([(f"{base}{PREFIX}{i}", value_of(i)) for i in chunk], ctx=ctx)
            done = min(store.size, start + SEED_BATCH)
            if done == store.size or (done // SEED_BATCH) % 5 == 0:
                el = time.perf_counter() - t0
                say(f"    {store.key}: {done:,} / {store.size:,} ({el:.0f} s, "
                    f"{done / el:,.0f}/s)")
        return time.perf_counter() - t0
    finally:
        mgr.close()


def prepare_stores(state: State, pg: PgServer, sizes: list[int],
                   kinds: tuple[str, ...] = ("pg", "sqlite")) -> list[Store]:
    """Every store of ``kinds`` seeded (or kept from an earlier --reuse run), tokens
    cleared so the first server prints a first admin token, PostgreSQL vacuumed and
    analysed."""
    import psycopg

    mk = state.data["master_key"]
    base_env = {"KEYSAFE_ENV": "production", "KEYSAFE_MASTER_KEY": mk}
    stores: list[Store] = []
    for size in sizes:
        # PostgreSQL: one database per size in the one cluster.
        key = f"pg-{size}"
        rec = state.data["stores"].get(key, {})
        if rec.get("seeded") and rec.get("size") == size:
            with pg.admin() as c:
                exists = c.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                   (rec["db"],)).fetchone()
            if not exists:
                rec = {}
        home = state.root / "seed-home" / key
        home.mkdir(parents=True, exist_ok=True)
        reused = bool(rec.get("seeded"))
        if reused:
            say(f"  reusing {key} (database {rec['db']}, seeded earlier in "
                f"{rec['seed_s']:.0f} s)")
            st = Store(key, "pg", size, {**base_env, "KEYSAFE_DATABASE_URL": pg.url(rec["db"])})
        else:
            if rec.get("db"):
                pg.drop_db(rec["db"])
            db = pg.create_db()
            state.data["stores"][key] = {"db": db, "size": size, "seeded": False}
            state.save()
            st = Store(key, "pg", size, {**base_env, "KEYSAFE_DATABASE_URL": pg.url(db)})
            say(f"  seeding {key} (database {db}) ...")
            secs = seed(dataclasses.replace(st, env={**st.env, "KEYSAFE_HOME": str(home)}))
            rec = {"db": db, "size": size, "seeded": True, "seed_s": round(secs, 1),
                   "seeded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            state.data["stores"][key] = rec
            state.save()
        st.info = {**rec, "reused": reused}
        with psycopg.connect(pg.url(rec["db"]), autocommit=True) as c:
            c.execute("DELETE FROM tokens")
            t0 = time.perf_counter()
            c.execute("VACUUM (ANALYZE)")
            st.info["vacuum_s"] = round(time.perf_counter() - t0, 1)
            st.info["db_bytes"] = one(c, "SELECT pg_database_size(current_database())")
            # Start from the steady state a long run reaches: the secrets table and its
            # index in shared_buffers (PG_SETTINGS sizes them to fit, as docs/deploy.md
            # advises), not read in from the OS page cache during the first passes.
            c.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            st.info["prewarmed_pages"] = one(
                c, "SELECT pg_prewarm('secrets') + pg_prewarm('secrets_pkey')")
        stores.append(st)
        if "sqlite" not in kinds:
            continue

        # The embedded store: one KEYSAFE_HOME per size.
        key = f"sqlite-{size}"
        shome = state.root / key
        marker = shome / "populated.json"
        rec = json.loads(marker.read_text()) if marker.is_file() else {}
        st = Store(key, "sqlite", size, {**base_env, "KEYSAFE_HOME": str(shome)})
        if state.keep and rec.get("size") == size and rec.get("master_key_id") == mk.split(":")[0]:
            say(f"  reusing {key} ({shome}, seeded earlier in {rec['seed_s']:.0f} s)")
            rec["reused"] = True
        else:
            shutil.rmtree(shome, ignore_errors=True)
            shome.mkdir(parents=True, mode=0o755)
            say(f"  seeding {key} ({shome}) ...")
            secs = seed(st)
            rec = {"size": size, "seed_s": round(secs, 1), "master_key_id": mk.split(":")[0],
                   "seeded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "reused": False}
            marker.write_text(json.dumps(rec))
        for f in shome.glob("server.db*"):  # tokens: a fresh first admin token
            f.unlink()
        st.info = {**rec, "db_bytes": (shome / "keysafe.db").stat().st_size}
        stores.append(st)
    with pg.admin() as c:
        c.execute("CHECKPOINT")
    return stores


JOBS = ("purge-expired", "rotate-due")
DEFERRED = "bench: deferred"


def defer_jobs(stores: list[Store], seconds: float = 86400.0) -> float:
    """Mark every store's scheduled jobs as not due for ``seconds``, so that no server
    runs one (a scan of every stored secret) during the load; when they are due again."""
    import psycopg

    until = time.time() + seconds
    for st in stores:
        if st.kind == "pg":
            with psycopg.connect(st.env["KEYSAFE_DATABASE_URL"], autocommit=True) as c:
                for job in JOBS:
                    c.execute("INSERT INTO jobs (name, next_due, holder) VALUES (%s, %s, %s) "
                              "ON CONFLICT (name) DO UPDATE SET next_due = excluded.next_due, "
                              "holder = excluded.holder", (job, until, DEFERRED))
        else:
            d = Path(st.env["KEYSAFE_HOME"]) / "jobs"
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            for job in JOBS:
                (d / f"{job}.lock").write_text(f"{until:.3f}\n")
    return until


def jobs_run(stores: list[Store], until: float) -> dict[str, list[str]]:
    """The scheduled jobs that ran anyway since ``defer_jobs`` (none expected)."""
    out: dict[str, list[str]] = {}
    for st in stores:
        if st.kind == "pg":
            rows = audit_rows(st, "SELECT name, holder FROM jobs WHERE next_due <> ?", (until,))
            ran = [f"{name} ({holder})" for name, holder in rows if name in JOBS]
        else:
            d = Path(st.env["KEYSAFE_HOME"]) / "jobs"
            ran = [job for job in JOBS
                   if (d / f"{job}.lock").read_text().strip() != f"{until:.3f}"]
        if ran:
            out[st.key] = ran
    return out


def one(conn: Any, sql: str) -> Any:
    """The first column of a one-row query."""
    row = conn.execute(sql).fetchone()
    if row is None:
        raise RuntimeError(f"no row: {sql}")
    return row[0]


def prewarm(paths: list[Path]) -> float:
    """Read every file of the stores once, so both start from the OS page cache."""
    t0 = time.perf_counter()
    for root in paths:
        for f in sorted(root.rglob("*")):
            with contextlib.suppress(OSError):
                if f.is_file() and not f.is_symlink():
                    with f.open("rb") as fh:
                        while fh.read(1 << 20):
                            pass
    return time.perf_counter() - t0


# -- servers ---------------------------------------------------------------------------


@contextlib.contextmanager
def keysafe_replica(store: Store, name: str, home: Path, log_dir: Path,
                    extra_env: dict[str, str]) -> Iterator[srvbench.Server]:
    """``serve(port=P)`` on 127.0.0.1 for ``store``; its printed first admin token, if
    any, is in ``extra["admin"]``."""
    home.mkdir(parents=True, mode=0o755, exist_ok=True)
    port = srvbench.free_port()
    url = f"http://{srvbench.LOOPBACK}:{port}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KEYSAFE_") and k != "ENVIRONMENT"}
    env.update({"KEYSAFE_HOME": str(home), "PYTHONUNBUFFERED": "1", **store.env,
                **extra_env})
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"serve-{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-c",
                                 f"from keysafe.server.run import serve; serve(port={port})"],
                                stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=home)
    try:
        srvbench.wait_until(f"keysafe {name}",
                            lambda: srvbench.http("GET", f"{url}/healthz", timeout=1)[0] == 200,
                            90, proc)
        lines = log_path.read_text().splitlines()
        armed, admin = False, None
        for ln in lines:
            if "first admin token" in ln:
                armed = True
            elif armed and ln.strip().startswith("ks_"):
                admin = ln.strip()
                break
        yield srvbench.Server(name, url, proc, extra={"admin": admin, "log": log_path})
    finally:
        srvbench.stop_pid(proc, f"keysafe {name}")


def make_tokens(store: Store) -> None:
    first = store.servers[0]
    admin = first.extra["admin"]
    if admin is None:
        raise RuntimeError(f"{first.name} printed no first admin token:\n"
                           f"{first.extra['log'].read_text()}")
    store.tokens["admin"] = admin
    for role in ("service", "writer"):
        st, body = srvbench.http("POST", f"{first.url}/api/tokens",
                                 headers={"Authorization": f"Bearer {admin}"},
                                 body={"name": f"bench-{role}", "roles": [role], "orgs": [ORG]})
        if st != 201 or not isinstance(body, dict) or "token" not in body:
            raise RuntimeError(f"{store.key}: token create ({role}): {st} {body}")
        store.tokens[role] = body["token"]


def check_reads(store: Store) -> None:
    """Every server of the store answers a few value reads with the values written."""
    auth = {"Authorization": f"Bearer {store.tokens['service']}"}
    for srv in store.servers:
        for i in (0, store.size - 1, random.randrange(store.size)):
            st, body = srvbench.http("GET", f"{srv.url}/api/secrets/{ORG}/{PREFIX}{i}/value",
                                     headers=auth)
            # bench_0..999 may hold a write test's value from an earlier --reuse run
            want = value_of(i) if i >= WRITE_KEYS else "sk-bench-"
            if st != 200 or not isinstance(body, dict) \
                    or not str(body.get("value")).startswith(want):
                raise RuntimeError(f"{srv.name}: read {PREFIX}{i}: {st} {body}")


def cache_counts(srv: srvbench.Server) -> tuple[float, float]:
    """The server cache's hits and misses so far (NaN if /metrics does not answer)."""
    try:
        st, body = srvbench.http("GET", f"{srv.url}/metrics", timeout=15)
    except OSError:
        return float("nan"), float("nan")
    hits = misses = 0.0
    if st == 200 and isinstance(body, str):
        for ln in body.splitlines():
            if ln.startswith("keysafe_cache_hits_total "):
                hits = float(ln.split()[1])
            elif ln.startswith("keysafe_cache_misses_total "):
                misses = float(ln.split()[1])
    return hits, misses


# -- CPU accounting and PostgreSQL wait events -------------------------------------------


def proc_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (ppid, comm, utime + stime ticks) for every process."""
    out: dict[int, tuple[int, str, int]] = {}
    for d in os.scandir("/proc"):
        if not d.name.isdigit():
            continue
        try:
            with open(f"/proc/{d.name}/stat") as fh:
                s = fh.read()
        except OSError:
            continue
        rp = s.rindex(")")
        f = s[rp + 2:].split()
        out[int(d.name)] = (int(f[1]), s[s.index("(") + 1:rp], int(f[11]) + int(f[12]))
    return out


def machine_ticks() -> tuple[int, int]:
    """(busy, total) ticks over all CPUs from /proc/stat."""
    with open("/proc/stat") as fh:
        vals = [int(x) for x in fh.readline().split()[1:9]]
    return sum(vals) - vals[3] - vals[4], sum(vals)


@dataclass
class CpuSnap:
    t: float
    procs: dict[int, tuple[int, str, int]]
    busy: int
    total: int
    children: float
    me: float

    @classmethod
    def take(cls) -> CpuSnap:
        busy, total = machine_ticks()
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        return cls(time.monotonic(), proc_table(), busy, total,
                   ch.ru_utime + ch.ru_stime, me.ru_utime + me.ru_stime)


def _root_of(pid: int, procs: dict[int, tuple[int, str, int]], roots: dict[int, str]) -> str:
    for _ in range(64):
        if pid in roots:
            return roots[pid]
        if pid not in procs or pid <= 1:
            return ""
        pid = procs[pid][0]
    return ""


def cpu_split(a: CpuSnap, b: CpuSnap, roots: dict[int, str]) -> tuple[dict[str, float],
                                                                       Counter[str]]:
    """Cores used between two snapshots: per named process tree in ``roots`` (pid ->
    name), wrk (this process's reaped children), this bench, and everything else (the
    machine's busy time minus ours). Also the other processes' CPU by command name."""
    secs = max(b.t - a.t, 1e-6)
    used: dict[str, float] = {}
    mine = os.getpid()
    others: Counter[str] = Counter()
    for pid, (_, comm, ticks) in b.procs.items():
        d = ticks - a.procs[pid][2] if pid in a.procs else ticks
        if d <= 0:
            continue
        owner = _root_of(pid, b.procs, roots)
        if owner:
            used[owner] = used.get(owner, 0.0) + d / CLK / secs
        elif _root_of(pid, b.procs, {mine: "bench"}) != "bench":
            others[comm] += d
    used["wrk"] = (b.children - a.children) / secs
    used["bench"] = (b.me - a.me) / secs
    total = (b.busy - a.busy) / CLK / secs
    used["machine"] = total
    used["other"] = max(0.0, total - sum(v for k, v in used.items() if k != "machine"))
    return used, others


def wait_for_quiet(roots: dict[int, str], max_other: float, max_wait: float
                   ) -> dict[str, float]:
    """Wait (2 s samples, at most ``max_wait`` s) until everything but this bench and
    its servers uses at most ``max_other`` cores; what was seen last, and how long."""
    t0 = time.monotonic()
    while True:
        a = CpuSnap.take()
        time.sleep(2)
        other = cpu_split(a, CpuSnap.take(), roots)[0]["other"]
        waited = time.monotonic() - t0
        if other <= max_other or waited >= max_wait:
            return {"other_idle": round(other, 2), "waited_s": round(waited, 1)}


class WaitSampler:
    """What the bench databases' backends are doing (wait events of active ones, and
    how many sit idle in a transaction), sampled every 200 ms on one connection while a
    workload runs (bounded by a stop event); ``mean_active``: mean count per sample."""

    def __init__(self, pg: PgServer, dbs: list[str]) -> None:
        self.pg, self.dbs = pg, dbs
        self.counts: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._t: threading.Thread | None = None

    def __enter__(self) -> WaitSampler:
        self._t = threading.Thread(target=self._run, daemon=True, name="pg-waits")
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._t is not None:
            self._t.join(timeout=10)

    def _run(self) -> None:
        try:
            with self.pg.admin() as c:
                while not self._stop.wait(0.2):
                    # "idle in transaction": a transaction is open and PostgreSQL waits
                    # for the replica's next statement
                    rows = c.execute(
                        "SELECT CASE WHEN state = 'active' THEN coalesce(wait_event_type "
                        "|| ':' || wait_event, 'CPU') ELSE state END, count(*) "
                        "FROM pg_stat_activity WHERE state IN ('active', 'idle in transaction') "
                        "AND datname = ANY(%s) AND pid <> pg_backend_pid() GROUP BY 1",
                        (self.dbs,)).fetchall()
                    self.samples += 1
                    for ev, n in rows:
                        self.counts[ev] += n
        except Exception as exc:  # a sampler failure must not hide the figures
            self.counts[f"sampler failed: {exc.__class__.__name__}"] += 1

    def mean_active(self) -> dict[str, float]:
        n = max(self.samples, 1)
        return {k: round(v / n, 2) for k, v in self.counts.most_common(6)}


# -- workloads --------------------------------------------------------------------------


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    per: list[srvbench.Pass]
    load1: float
    cpu: dict[str, float]
    cache_hit: float | None
    waits: dict[str, float]
    others: dict[str, float]
    quiet: dict[str, float]


@dataclass
class Workload:
    key: str
    store: Store
    op: str            # "read", "write" or "hot" (reads of the small store's number of names)
    servers: list[srvbench.Server]
    targets: list[srvbench.Target]
    samples: list[Sample] = field(default_factory=list)
    warmups: list[Sample] = field(default_factory=list)

    @property
    def where(self) -> str:
        if self.store.kind == "sqlite":
            return "one server"
        return "one replica" if len(self.servers) == 1 else "two replicas"

    @property
    def label(self) -> str:
        return f"{self.store.label:20s} {self.op:5s} {self.where}"

    def med(self, attr: str) -> float:
        return float(statistics.median(getattr(s, attr) for s in self.samples))

    def med_per(self, i: int, attr: str) -> float:
        return float(statistics.median(getattr(s.per[i], attr) for s in self.samples))

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store.key, "op": self.op, "where": self.where,
            "servers": [s.name for s in self.servers],
            "rps": round(self.med("rps"), 1), "p50_ms": round(self.med("p50_ms"), 3),
            "p99_ms": round(self.med("p99_ms"), 3),
            "per_server": [{"server": s.name, "rps": round(self.med_per(i, "rps"), 1),
                            "p50_ms": self.med_per(i, "p50_ms"),
                            "p99_ms": self.med_per(i, "p99_ms")}
                           for i, s in enumerate(self.servers)],
            "non2xx": sum(p.non2xx for s in self.samples for p in s.per),
            "passes": [{"rps": round(s.rps, 1), "p50_ms": s.p50_ms, "p99_ms": s.p99_ms,
                        "load1_before": round(s.load1, 2),
                        "cpu_cores": {k: round(v, 2) for k, v in s.cpu.items()},
                        "cache_hit": s.cache_hit, "pg_waits_mean_active": s.waits,
                        "other_processes_cores": s.others, "quiet_wait": s.quiet,
                        "wrk": [{"rps": round(p.rps, 1), "p50_ms": p.p50_ms,
                                 "p90_ms": p.p90_ms, "p99_ms": p.p99_ms, "max_ms": p.max_ms,
                                 "requests": p.requests, "non2xx": p.non2xx,
                                 "errors": p.socket_errors} for p in s.per]}
                       for s in self.samples]}


def workloads_for(stores: list[Store]) -> list[Workload]:
    out: list[Workload] = []
    small = min(st.size for st in stores)
    for st in stores:
        svc = {"Authorization": f"Bearer {st.tokens['service']}"}
        wr = {"Authorization": f"Bearer {st.tokens['writer']}",
              "Content-Type": "application/json"}
        groups = [st.servers[:1]] if st.kind == "sqlite" else [st.servers[:1], st.servers[:2]]
        for op in ("read", "write"):
            for g in groups:
                ts = []
                for srv in g:
                    if op == "read":
                        ts.append(srvbench.Target(
                            f"{st.key}/read/{srv.name}", f"{st.label} read via {srv.name}",
                            srv.url, svc, GET_LUA,
                            [f"/api/secrets/{ORG}/{PREFIX}", "/value", str(st.size),
                             "0"],  # the seed, fresh for every run (run_once)
                            server_pid=srv.proc.pid))
                    else:
                        ts.append(srvbench.Target(
                            f"{st.key}/write/{srv.name}", f"{st.label} write via {srv.name}",
                            srv.url, wr, srvbench.PUT_LUA,
                            ["PUT", f"/api/secrets/{ORG}/{PREFIX}", "keysafe", str(WRITE_KEYS)],
                            server_pid=srv.proc.pid))
                out.append(Workload(f"{st.key}/{op}/{len(g)}", st, op, list(g), ts))
        if st.kind == "pg" and st.size > small:
            # The small store's working set in the big store: reads of the same number
            # of names, so the server cache helps both alike and only the store's size
            # differs between the two (the uniform reads above also change the hit rate).
            srv = st.servers[0]
            out.append(Workload(f"{st.key}/hot/1", st, "hot", [srv], [srvbench.Target(
                f"{st.key}/hot/{srv.name}", f"{st.label} reads of {small:,} names via "
                f"{srv.name}", srv.url, svc, GET_LUA,
                [f"/api/secrets/{ORG}/{PREFIX}", "/value", str(small), "0"],
                server_pid=srv.proc.pid)]))
    return out


def run_once(w: Workload, seconds: float, args: argparse.Namespace, pg: PgServer,
             roots: dict[int, str], pg_dbs: list[str]) -> Sample:
    """One wrk run of the workload: one wrk (-t2 -c16) or one per replica at once
    (-t1 -c8 each), with the load, CPU, cache and wait-event records around it."""
    n = len(w.targets)
    threads = max(1, args.threads // n)
    conns = max(1, args.conns // n)
    quiet = ({} if args.quiet is None
             else wait_for_quiet(roots, args.quiet, args.quiet_wait))
    load1 = os.getloadavg()[0]
    c0 = [cache_counts(s) for s in w.servers]
    sampler = WaitSampler(pg, pg_dbs) if w.store.kind == "pg" else contextlib.nullcontext()
    # A fresh seed for every run of a read workload: a warm-up and the pass after it
    # must not ask for the same names (the second would hit the server cache).
    targets = [dataclasses.replace(t, lua_args=[*t.lua_args[:3], str(random.randrange(1 << 30))])
               if t.lua == GET_LUA else t for t in w.targets]
    a = CpuSnap.take()
    with sampler:
        if n == 1:
            per = [srvbench.run_wrk(targets[0], seconds=seconds, pinned=False,
                                    threads=threads, conns=conns)]
        else:
            with ThreadPoolExecutor(n) as ex:
                futs = [ex.submit(srvbench.run_wrk, t, seconds=seconds, pinned=False,
                                  threads=threads, conns=conns) for t in targets]
                per = [f.result() for f in futs]
    b = CpuSnap.take()
    c1 = [cache_counts(s) for s in w.servers]
    cpu, others = cpu_split(a, b, roots)
    dh = sum(y[0] - x[0] for x, y in zip(c0, c1, strict=True))
    dm = sum(y[1] - x[1] for x, y in zip(c0, c1, strict=True))
    reqs = sum(p.requests for p in per)
    secs = max(b.t - a.t, 1e-6)
    return Sample(
        rps=sum(p.rps for p in per),
        # two replicas: p50 weighted by requests, p99 the worse of the two
        p50_ms=sum(p.p50_ms * p.requests for p in per) / max(reqs, 1),
        p99_ms=max(p.p99_ms for p in per), per=per, load1=load1, cpu=cpu,
        cache_hit=round(dh / (dh + dm), 3) if dh + dm > 0 else None,  # NaN > 0 is False
        waits=sampler.mean_active() if isinstance(sampler, WaitSampler) else {},
        others={k: round(v / CLK / secs, 2) for k, v in others.most_common(3)}, quiet=quiet)


def describe_sample(s: Sample) -> str:
    c = s.cpu
    return (f"{s.rps:8,.0f} req/s  p50 {s.p50_ms:6.2f}  p99 {s.p99_ms:7.2f} ms  "
            f"load {s.load1:4.2f}  cpu ks {c.get('keysafe', 0):.2f} pg {c.get('postgres', 0):.2f} "
            f"wrk {c.get('wrk', 0):.2f} other {c.get('other', 0):.2f} / {c['machine']:.2f}"
            + (f"  cache {100 * s.cache_hit:.0f}%" if s.cache_hit is not None else "")
            + (f"  (waited {s.quiet['waited_s']:.0f} s, other {s.quiet['other_idle']:.2f})"
               if s.quiet else ""))


# -- verification after the load ----------------------------------------------------------


def audit_rows(st: Store, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A query (``?`` placeholders) on the store's audit chain: the same tables in both."""
    if st.kind == "pg":
        import psycopg

        with psycopg.connect(st.env["KEYSAFE_DATABASE_URL"], autocommit=True) as c:
            return c.execute(sql.replace("?", "%s"), args).fetchall()
    db = Path(st.env["KEYSAFE_HOME"]) / "keysafe.db"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as c:
        return c.execute(sql, args).fetchall()


def audit_heads(stores: list[Store]) -> dict[str, int]:
    return {st.key: int(audit_rows(st, "SELECT seq FROM audit_head")[0][0]) for st in stores}


def verify_after(stores: list[Store], heads: dict[str, int], ws: list[Workload],
                 conns: int) -> tuple[dict[str, Any], list[str]]:
    """The writes landed (versions past 1) and were audited: every store holds at least
    one ``write/ok`` audit record per write wrk saw acknowledged, and at most one more
    per connection (writes in flight when a wrk run stopped). What was found, and what
    failed."""
    out: dict[str, Any] = {}
    bad: list[str] = []
    for st in stores:
        auth = {"Authorization": f"Bearer {st.tokens['admin']}"}
        vers = {}
        for i in (0, WRITE_KEYS - 1):
            code, body = srvbench.http(
                "GET", f"{st.servers[0].url}/api/secrets/{ORG}/{PREFIX}{i}", headers=auth)
            vers[f"{PREFIX}{i}"] = body.get("version") if code == 200 else code
        audited = {f"{a}/{o}": n for a, o, n in audit_rows(
            st, "SELECT action, outcome, count(*) FROM audit WHERE seq > ? GROUP BY 1, 2",
            (heads[st.key],))}
        runs = [s for w in ws if w.store is st and w.op == "write"
                for s in w.warmups + w.samples]
        acked = sum(p.requests for s in runs for p in s.per)
        extra = audited.get("write/ok", 0) - acked
        # in flight when wrk stopped: one per connection, plus one per broken one
        in_flight = sum(conns // len(s.per) + sum(p.socket_errors.values())
                        for s in runs for p in s.per)
        out[st.key] = {"versions": vers, "audit_since_start": audited,
                       "writes_acknowledged": acked,
                       "write_records_minus_acknowledged": extra}
        if not 0 <= extra <= in_flight:
            bad.append(f"{st.key}: {audited.get('write/ok', 0)} write audit records for "
                       f"{acked} acknowledged writes")
        if runs and any(not isinstance(v, int) or v < 2 for v in vers.values()):
            bad.append(f"{st.key}: writes did not land: {vers}")
    return out, bad


# -- py-spy (--spy) -------------------------------------------------------------------------


def spy(w: Workload, seconds: float, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """py-spy on the first server of ``w`` (all threads, and GIL holder only) under one
    more wrk run of it; top functions by self time."""
    pyspy = Path(sys.executable).parent / "py-spy"
    out: dict[str, Any] = {}
    for gil in (True, False):
        raw = work / f"spy-{w.key.replace('/', '_')}-{'gil' if gil else 'all'}.txt"
        cmd = [str(pyspy), "record", "--pid", str(w.servers[0].proc.pid), "--subprocesses",
               "--rate", "200", "--format", "raw", "-o", str(raw),
               "--duration", str(int(seconds))] + (["--gil"] if gil else [])
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            p = srvbench.run_wrk(w.targets[0], seconds=seconds + 1, pinned=False,
                                 threads=args.threads, conns=args.conns)
            _, err = proc.communicate(timeout=seconds + 60)
        finally:
            srvbench.stop_pid(proc, "py-spy")
        if proc.returncode != 0 or not raw.exists():
            out["gil" if gil else "all"] = {"error": err.decode(errors="replace")[-500:]}
            continue
        c = srvbench.collapse(raw, 12)
        out["gil" if gil else "all"] = {"rps": p.rps, "p99_ms": p.p99_ms, **c}
        say(f"\n  py-spy {w.label} ({'GIL holder' if gil else 'all threads'}, "
            f"{c['samples']} samples, {p.rps:,.0f} req/s):")
        for pct, fn in c["self"]:
            say(f"    {pct:5.1f}%  {fn}")
    return out


# -- reporting ----------------------------------------------------------------------------


def figures_table(out: Any, ws: list[Workload]) -> None:
    rows = []
    for w in ws:
        per = ""
        if len(w.servers) == 2:
            per = " / ".join(f"{w.med_per(i, 'p50_ms'):.2f}|{w.med_per(i, 'p99_ms'):.1f}"
                             for i in range(2))
        cpu = {k: statistics.median(s.cpu.get(k, 0.0) for s in w.samples)
               for k in ("keysafe", "postgres", "wrk", "other")}
        hits = [s.cache_hit for s in w.samples if s.cache_hit is not None]
        rows.append([w.store.label, w.op, w.where, f"{w.med('rps'):,.0f}",
                     f"{w.med('p50_ms'):.2f}", f"{w.med('p99_ms'):.1f}", per or "-",
                     f"{statistics.median(s.load1 for s in w.samples):.2f}",
                     f"{cpu['keysafe']:.2f}/{cpu['postgres']:.2f}/{cpu['wrk']:.2f}/"
                     f"{cpu['other']:.2f}",
                     f"{100 * statistics.median(hits):.0f}%" if hits else "-"])
    out.table(f"Figures (median of {len(ws[0].samples)} pass(es); two replicas: req/s "
              "summed, p50 request-weighted, p99 the worse replica)",
              ["store", "op", "through", "req/s", "p50 ms", "p99 ms",
               "per replica p50|p99", "load1", "CPU ks/pg/wrk/other", "cache hits"], rows)


def ratios(ws: list[Workload], small: int, big: int) -> list[dict[str, Any]]:
    by = {w.key: w for w in ws}
    rows: list[dict[str, Any]] = []

    def add(what: str, num: str, den: str, attr: str, target: float | None = None) -> None:
        if num not in by or den not in by:
            return
        a, b = by[num].med(attr), by[den].med(attr)
        r = a / b if b else float("nan")
        rows.append({"what": what, "num": num, "den": den, "metric": attr,
                     "num_value": round(a, 3), "den_value": round(b, 3), "ratio": round(r, 3),
                     "target": f"<= {target:g}x" if target else "-",
                     "met": (r <= target) if target else None})

    for op in ("read", "write"):
        for n in (small, big):
            add(f"two replicas / one, {op}s, {n:,}: req/s", f"pg-{n}/{op}/2", f"pg-{n}/{op}/1",
                "rps")
    for op in ("read", "write"):
        for n in (small, big):
            add(f"PostgreSQL (1 replica) / embedded, {op}s, {n:,}: req/s", f"pg-{n}/{op}/1",
                f"sqlite-{n}/{op}/1", "rps")
            add(f"PostgreSQL (1 replica) / embedded, {op}s, {n:,}: p50", f"pg-{n}/{op}/1",
                f"sqlite-{n}/{op}/1", "p50_ms")
    add(f"TARGET p50 {big:,} / p50 {small:,}, reads, PostgreSQL 1 replica",
        f"pg-{big}/read/1", f"pg-{small}/read/1", "p50_ms", 1.5)
    add(f"p50 {big:,} / p50 {small:,}, reads of the same {small:,} names (the working set "
        f"the {small:,} store has), PostgreSQL 1 replica", f"pg-{big}/hot/1",
        f"pg-{small}/read/1", "p50_ms", 1.5)
    add(f"p50 {big:,} / p50 {small:,}, reads, PostgreSQL 2 replicas", f"pg-{big}/read/2",
        f"pg-{small}/read/2", "p50_ms")
    add(f"p50 {big:,} / p50 {small:,}, reads, embedded", f"sqlite-{big}/read/1",
        f"sqlite-{small}/read/1", "p50_ms")
    add(f"p50 {big:,} / p50 {small:,}, writes, PostgreSQL 1 replica", f"pg-{big}/write/1",
        f"pg-{small}/write/1", "p50_ms")
    add(f"p50 {big:,} / p50 {small:,}, writes, embedded", f"sqlite-{big}/write/1",
        f"sqlite-{small}/write/1", "p50_ms")
    return rows


def ratio_table(out: Any, rows: list[dict[str, Any]]) -> None:
    out.table("Ratios", ["comparison", "ratio", "of", "target", "verdict"],
              [[r["what"], f"{r['ratio']:.2f}x",
                f"{r['num_value']:,.2f} / {r['den_value']:,.2f}", r["target"],
                {True: "MET", False: "MISSED", None: "-"}[r["met"]]] for r in rows])


# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1,000 and 10,000 secrets, 1 pass of 3 s, 1 s warm-up")
    ap.add_argument("--sizes", default=None, help="store sizes (default 1000,1000000)")
    ap.add_argument("--passes", type=int, default=None, help="default 3 (--quick: 1)")
    ap.add_argument("--duration", type=float, default=None, help="s per pass (default 10)")
    ap.add_argument("--warmup", type=float, default=None, help="s per workload (default 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--reuse", action="store_true",
                    help=f"keep the seeded stores in {KEEP_DIR} and use them next time")
    ap.add_argument("--only", default="", help="comma-separated substrings of workload keys "
                    "(e.g. pg-1000000/read)")
    ap.add_argument("--kinds", default="pg,sqlite",
                    help="stores to set up and serve: pg,sqlite (default) or pg (skips the "
                         "embedded stores, their servers and their page-cache warming)")
    ap.add_argument("--defer-jobs", action="store_true",
                    help="mark the servers' scheduled jobs as not due for a day (by default "
                         "they run as in production)")
    ap.add_argument("--spy", action="store_true",
                    help="afterwards: py-spy one replica under the biggest PostgreSQL store's "
                         "reads and writes, and the smallest one's reads")
    ap.add_argument("--quiet", type=float, default=None, metavar="CORES",
                    help="before each wrk run, wait until other processes use at most CORES "
                         "cores (sampled over 2 s), for at most --quiet-wait s")
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument("--keysafe-env", action="append", default=[], metavar="KEYSAFE_X=V",
                    help="experiments only (the figures use the defaults): a setting for "
                         "every server, e.g. KEYSAFE_SERVER_CACHE_TTL=0; repeatable")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    ap.add_argument("--plain", action="store_true", help="text tables instead of rich")
    args = ap.parse_args(argv)
    args.ks_env = dict(kv.split("=", 1) for kv in args.keysafe_env)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if "pg" not in kinds or not set(kinds) <= {"pg", "sqlite"}:
        raise SystemExit("--kinds takes pg,sqlite or pg")
    if any(not k.startswith("KEYSAFE_") for k in args.ks_env):
        raise SystemExit("--keysafe-env takes KEYSAFE_NAME=VALUE")
    sizes = sorted({int(s) for s in (args.sizes or ("1000,10000" if args.quick
                                                    else "1000,1000000")).split(",")})
    if min(sizes) < WRITE_KEYS:
        raise SystemExit(f"every size must be at least {WRITE_KEYS} (the write keys)")
    passes = args.passes or (1 if args.quick else 3)
    duration = args.duration or (3.0 if args.quick else 10.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found (Debian package wrk)")
    bindir = pg_bin()
    if bindir is None:
        raise SystemExit("PostgreSQL is not installed (Debian package postgresql)")

    out = corebench.Out(args.plain)
    t_start = time.monotonic()
    info = corebench.machine_info("no (servers, PostgreSQL and wrk share every core)")
    info["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True,
                                 check=False).stdout.splitlines()[0].strip()
    info["postgres"] = subprocess.run([str(bindir / "postgres"), "--version"],
                                      capture_output=True, text=True, check=False).stdout.strip()
    say(f"keysafe replicas bench: sizes {', '.join(f'{s:,}' for s in sizes)}; wrk "
        f"-t{args.threads} -c{args.conns} (two replicas: two wrk -t{max(1, args.threads // 2)} "
        f"-c{args.conns // 2}), {warmup:g} s warm-up, {passes} x {duration:g} s")
    say(f"machine: {info['cpu']} x{info['cores']}, Python {info['python']}, "
        f"{info['postgres']}, {info['wrk']}")
    say(f"at start: {srvbench.uptime_line()}")
    if args.ks_env:
        say(f"NOT THE DEFAULTS: every server runs with {args.ks_env} (an experiment)")

    srvbench.WORK_ROOT.mkdir(parents=True, exist_ok=True)
    if args.reuse:
        root = KEEP_DIR
        root.mkdir(mode=0o755, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="replicas-", dir=srvbench.WORK_ROOT))
    root.chmod(0o755)
    state = State(root, args.reuse)
    result: dict[str, Any] = {"machine": info, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "load_at_start": os.getloadavg(),
                              "settings": {"sizes": sizes, "passes": passes,
                                           "duration_s": duration, "warmup_s": warmup,
                                           "threads": args.threads, "conns": args.conns,
                                           "pg_settings": PG_SETTINGS, "pinned": False,
                                           "reuse": args.reuse,
                                           "jobs_deferred": args.defer_jobs,
                                           "keysafe_env": args.ks_env,
                                           "quiet": args.quiet,
                                           "quiet_wait_s": args.quiet_wait}}
    ws: list[Workload] = []
    checks_failed: list[str] = []
    run_home = root / "run"  # replica homes and every server's log
    shutil.rmtree(run_home, ignore_errors=True)
    ok = False
    try:
        with contextlib.ExitStack() as stack:
            say("\n== stores ==")
            t0 = time.monotonic()
            pg = stack.enter_context(postgres(state))
            stores = prepare_stores(state, pg, sizes, kinds)
            warm = prewarm([pg.datadir] + [root / s.key for s in stores if s.kind == "sqlite"])
            result["stores"] = {s.key: s.info for s in stores}
            say(f"  stores ready in {time.monotonic() - t0:.0f} s (page cache warmed in "
                f"{warm:.1f} s): " + ", ".join(f"{s.key} {s.info['db_bytes'] / 1e6:,.0f} MB"
                                               for s in stores))

            deferred = defer_jobs(stores) if args.defer_jobs else None
            say("\n== servers ==")
            if deferred is not None:
                say("  scheduled jobs (" + ", ".join(JOBS) + ") deferred for a day in every "
                    "store (--defer-jobs)")
            t0 = time.monotonic()
            roots: dict[int, str] = {pg.proc.pid: "postgres"}
            for st in stores:
                names = ["A", "B"] if st.kind == "pg" else ["S"]
                for nm in names:
                    home = (run_home / f"{st.key}-{nm}") if st.kind == "pg" \
                        else Path(st.env["KEYSAFE_HOME"])
                    srv = stack.enter_context(keysafe_replica(st, f"{st.key}-{nm}", home,
                                                                 run_home, args.ks_env))
                    st.servers.append(srv)
                    roots[srv.proc.pid] = "keysafe"
                make_tokens(st)
                check_reads(st)
            say(f"  {sum(len(s.servers) for s in stores)} servers up in "
                f"{time.monotonic() - t0:.0f} s: "
                + ", ".join(f"{s.name} pid {s.proc.pid}" for st in stores for s in st.servers))
            pg_dbs = [state.data["stores"][s.key]["db"] for s in stores if s.kind == "pg"]
            heads = audit_heads(stores)

            ws = workloads_for(stores)
            if args.only:
                ws = [w for w in ws if any(s in w.key for s in args.only.split(","))]
            say(f"\n== load: {len(ws)} workloads ==")
            base = CpuSnap.take()
            if warmup > 0:
                for w in ws:
                    s = run_once(w, warmup, args, pg, roots, pg_dbs)
                    w.warmups.append(s)
                    n_bad = sum(p.non2xx for p in s.per)
                    say(f"   warm-up {w.label}  {describe_sample(s)}")
                    if n_bad:
                        raise RuntimeError(f"{w.label}: {n_bad} non-2xx during warm-up:\n"
                                           + "\n".join(p.raw for p in s.per))
            for i in range(passes):
                k = i % len(ws)
                for w in ws[k:] + ws[:k]:
                    s = run_once(w, duration, args, pg, roots, pg_dbs)
                    w.samples.append(s)
                    say(f"   pass {i + 1}/{passes} {w.label}  {describe_sample(s)}")
            end = CpuSnap.take()
            _, others = cpu_split(base, end, roots)
            result["other_processes_during_load_cores"] = {
                k: round(v / CLK / (end.t - base.t), 3) for k, v in others.most_common(8)}
            say(f"   after the load: {srvbench.uptime_line()}")
            say("   other processes during the load (cores): "
                + (", ".join(f"{k} {v:.2f}" for k, v in
                             result["other_processes_during_load_cores"].items()) or "none"))
            result["after"], checks_failed = verify_after(stores, heads, ws, args.conns)
            if deferred is not None:
                result["jobs_run_during_load"] = ran = jobs_run(stores, deferred)
                if ran:
                    checks_failed.append(f"scheduled jobs ran during the load: {ran}")
            say(f"   after the load: {json.dumps(result['after'])}")
            if args.spy:
                by = {w.key: w for w in ws}
                result["spy"] = {}
                for key in (f"pg-{sizes[-1]}/read/1", f"pg-{sizes[-1]}/write/1",
                            f"pg-{sizes[0]}/read/1"):
                    if key in by:
                        result["spy"][key] = spy(by[key], 8.0, args, run_home)
        ok = True
    finally:
        result["load_at_end"] = os.getloadavg()
        result["run_seconds"] = round(time.monotonic() - t_start, 1)
        result["workloads"] = {w.key: w.to_dict() for w in ws if w.samples}
        if ws and all(w.samples for w in ws):
            result["ratios"] = ratios(ws, sizes[0], sizes[-1])
        if args.json:
            args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        if not ok:
            say(f"\nserver logs kept in {run_home}")
        elif not args.reuse:
            shutil.rmtree(root, ignore_errors=True)

    say("")
    if not ws:
        raise SystemExit("no workload matched --only")
    figures_table(out, ws)
    if result.get("ratios"):
        ratio_table(out, result["ratios"])
    failures = [f"{w.label}: {p.non2xx} non-2xx, socket errors {p.socket_errors}"
                for w in ws for smp in w.samples for p in smp.per
                if p.non2xx or p.socket_errors.get("connect") or p.socket_errors.get("timeout")]
    failures += checks_failed
    say(f"\nrun time {result['run_seconds'] / 60:.1f} min; at end: {srvbench.uptime_line()}")
    if args.json:
        say(f"figures written to {args.json}")
    if failures:
        sys.stderr.write("\nFAILED: non-2xx responses, connect/timeout errors or checks:\n  "
                         + "\n  ".join(failures) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
