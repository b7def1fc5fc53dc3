"""``keysafe serve``: the main job. Starts the API (and panel) on 127.0.0.1 by default,
printing the URL and, on a fresh store, a first admin token (shown once)."""

from __future__ import annotations

import os
import sys
from typing import Any

from keysafe.config import Settings, load_settings
from keysafe.errors import ConfigError

#: Set by ``serve`` to its own pid, so that a worker it forks can tell it is one.
PARENT_ENV = "KEYSAFE_SERVER_PARENT_PID"


def die_with_parent() -> None:
    """In a worker forked by ``serve``: end when ``serve``'s process ends, however it
    ends. Without this, a SIGKILLed server (``kill -9`` by hand; Kubernetes and systemd
    kill the whole group) leaves its workers serving the port with nobody to stop them.
    Linux's PR_SET_PDEATHSIG sends SIGTERM at the parent's death; a worker whose parent
    has already gone (it died before this ran) exits at once."""
    parent = os.environ.get(PARENT_ENV, "")
    if not parent.isdigit() or int(parent) == os.getpid() or not sys.platform.startswith(
            "linux"):
        return  # not a forked worker (in-process server, tests), or no prctl here
    import ctypes
    import signal

    # Until the worker's own loop handles SIGTERM (granian installs that after this
    # factory returns), the handler in force is the one inherited from the server's main
    # process, which only flags the main process's state: a SIGTERM at the parent's
    # death while the app is still being built would be lost, and the worker would
    # outlive it. The default action ends the worker instead.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != int(parent):
        os._exit(0)  # orphaned already: the server that started us is gone
    import threading

    threading.Thread(target=_end_if_orphaned, args=(int(parent),), daemon=True,
                     name="keysafe-parent-watch").start()


#: How often a worker checks that its server is still there, and how long an orphaned
#: worker's own graceful shutdown (the SIGTERM above) may take before it is cut short.
PARENT_CHECK = 0.5
ORPHAN_GRACE = 5.0


def _end_if_orphaned(parent: int) -> None:
    """The backstop to PR_SET_PDEATHSIG: a worker whose graceful shutdown hangs, or
    which missed the signal, still ends a few seconds after its server. Everything it
    acknowledged is durable already (writes and their audit records commit before the
    answer), so cutting it short loses nothing a client was told had happened."""
    import time

    while os.getppid() == parent:
        time.sleep(PARENT_CHECK)
    time.sleep(ORPHAN_GRACE)
    os._exit(1)


def make_app() -> Any:
    """App factory for the ASGI server (runs inside the server's worker process)."""
    import gc

    from keysafe.server.app import create_app

    die_with_parent()

    app = create_app(load_settings())
    # Everything built at start-up (modules, the app, the catalog) lives as long as the
    # process: move it out of the collector's sight, so full collections under load walk
    # only what requests made since (the tail latency of a busy server).
    gc.collect()
    gc.freeze()
    return app


def bootstrap_token(settings: Settings) -> str | None:
    """A first admin token for every org, when the token store is empty."""
    from keysafe.server.tokenstore import open_token_store

    store = open_token_store(settings)
    try:
        first = store.create_first(name="bootstrap-admin", roles=["admin"], orgs=None,
                                   created_by="keysafe serve")
        return first[0] if first else None
    finally:
        store.close()


def ensure_port_free(host: str, port: int) -> None:
    """ConfigError if something already listens on ``host:port``. Granian opens its port
    shared (SO_REUSEPORT), so without this check a second server on the same port would
    start without a word and the kernel would split requests between the two, and
    between their stores and tokens. A plain bind (no SO_REUSEPORT) fails where any
    listener is; SO_REUSEADDR keeps a port whose old connections linger in TIME_WAIT
    usable, as every server allows."""
    import errno
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host!r}: {exc.strerror}") from None
    failed: list[OSError] = []
    # Every address the name gives ("localhost": 127.0.0.1 and ::1): any one in use is
    # a server there; one this machine lacks (no IPv6) is not, if another binds.
    addrs = list(dict.fromkeys((i[0], i[1], i[2], i[4]) for i in infos))
    for family, kind, proto, addr in addrs:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigError(f"port {port} on {host} is already in use (another "
                                      "keysafe serve?): stop it or choose another "
                                      "--port") from None
                failed.append(exc)
    if len(failed) == len(addrs):
        raise ConfigError(f"cannot listen on {host}:{port}: "
                          f"{failed[0].strerror or type(failed[0]).__name__}")


#: The serve lock's descriptor, held (shared) for the process's lifetime.
_SERVE_LOCK: int | None = None


def serve(settings: Settings | None = None, *, host: str | None = None,
          port: int | None = None, server: str = "granian", workers: int = 1,
          announce: bool = True, as_json: bool = False) -> None:
    settings = settings or load_settings()
    from keysafe.server.routes.ui import panel_csp

    panel_csp(settings.ui_frame_ancestors)  # a bad KEYSAFE_UI_FRAME_ANCESTORS stops here
    from keysafe.server.trust import trust_verifier

    trusts = trust_verifier(settings)  # so does a bad trust file, before any token is made
    host = host or settings.host
    port = port if port is not None else settings.port
    # Settings are re-read in the worker; carry CLI overrides there through the env.
    os.environ["KEYSAFE_HOST"], os.environ["KEYSAFE_PORT"] = host, str(port)
    os.environ["KEYSAFE_ENV"] = settings.env  # `serve --env X`: the workers serve X too
    os.environ["KEYSAFE_SERVER_WORKERS"] = str(workers)
    os.environ[PARENT_ENV] = str(os.getpid())
    ensure_port_free(host, port)  # before a first admin token is made and printed
    global _SERVE_LOCK
    from keysafe.config import SELF_CONTAINED, uses_state_database

    if settings.backend not in SELF_CONTAINED - {"sqlite"} and not uses_state_database(
            settings):
        # Files in KEYSAFE_HOME: `keysafe db restore` must not swap them under us (taken
        # before the store is opened, or created, below).
        from keysafe.backup import hold_serve_lock

        settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        _SERVE_LOCK = hold_serve_lock(settings.home)
    # Create the key file and store now, in this process, so the worker never races.
    from keysafe.manager.manager import SecretManager

    SecretManager.from_settings(settings.with_overrides(default_org=None)).close()
    token = bootstrap_token(settings)
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address, as a URL writes it
    if announce and as_json:  # one line for scripts: where, and the token if one was made
        import json

        url = f"http://{shown}:{port}"
        print(json.dumps({"url": url, "docs": f"{url}/docs", "health": f"{url}/healthz",
                          "panel": f"{url}/ui", "env": settings.env,
                          "backend": settings.backend, "first_admin_token": token,
                          "trusts": len(trusts.trusts) if trusts is not None else 0}),
              flush=True)
    elif announce:
        url = f"http://{shown}:{port}"
        lines = [f"keysafe {settings.env} on {settings.backend}: {url}",
                 f"  API docs: {url}/docs    health: {url}/healthz",
                 f"  panel: {url}/ui"]
        if trusts is not None:
            lines.append(f"  workload identity: {len(trusts.trusts)} trust(s) from "
                         f"{settings.jwt_trust_file}")
        if token:
            lines += ["  first admin token (shown once, store it now):", f"    {token}"]
        else:
            lines.append("  tokens exist already; make one with "
                         "`keysafe token create --role admin --org '*' --name NAME`")
        print("\n".join(lines), flush=True)
    if server == "uvicorn":
        import uvicorn

        # proxy_headers off: the peer is the client, as with granian. uvicorn would
        # otherwise believe X-Forwarded-For from any local process, which could then
        # pose as another address (token networks, the failed-login limiter, audit).
        uvicorn.run("keysafe.server.run:make_app", factory=True, host=host, port=port,
                    workers=workers, log_level="warning", access_log=False,
                    proxy_headers=False)
        return
    from granian import Granian
    from granian.constants import Interfaces

    Granian("keysafe.server.run:make_app", address=host, port=port, factory=True,
            interface=Interfaces.ASGI, workers=workers, log_access=False,
            log_level="warning").serve()  # type: ignore[arg-type]


if __name__ == "__main__":  # pragma: no cover
    serve()
    sys.exit(0)
