"""``keysafe run``: a command with a scope's secrets in its environment.

The child is started with ``posix_spawnp`` (its own signal dispositions reset, the
same process group, stdin/stdout/stderr inherited). keysafe stays as its parent to
pass on signals and its exit status, and with ``--watch`` to restart or signal it when
a secret changes. Signals arrive through a wake-up pipe, so one bounded ``select``
loop handles signals, the child's exit and the watch's polls without threads.

Typer-free, like ``reading.run_get``: the console script calls ``main`` directly for
the plain form (see ``cli.entry``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keysafe.cli import exitcodes
from keysafe.cli.reading import option_value
from keysafe.client import TOKEN_ENV

if TYPE_CHECKING:
    from keysafe.workloads.scope import EnvPlan, Snapshot
    from keysafe.workloads.sources import Source

#: Signals passed on to the child.
FORWARD = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
#: Signals a terminal sends to its whole foreground process group (the child included),
#: so they are not passed on a second time when keysafe is in that group.
_TERMINAL = ("SIGINT", "SIGQUIT")
#: After these, a watched command is not restarted again: keysafe is being stopped.
_STOPPING = ("SIGINT", "SIGTERM", "SIGQUIT")
INTERVAL_MIN, INTERVAL_MAX = 0.5, 86_400.0
#: The longest a wait blocks before checking the child again (a lost SIGCHLD).
_TICK = 5.0
#: The byte a store's change notice writes to the wake-up pipe (no signal is numbered 0).
_TOLD = 0
#: A change notice brings the next poll forward to when the notices have paused this
#: many seconds, or _SETTLE_MAX after the first of them.
_SETTLE = 1.0
_SETTLE_MAX = 10.0


@dataclass
class RunOptions:
    command: list[str]
    org: str | None = None
    domain: str | None = None
    env: str | None = None
    only: list[str] | None = None
    map_file: str | None = None
    with_shared: bool = False
    env_files: list[str] = field(default_factory=list)
    watch: bool = False
    interval: float = 10.0
    on_change: str = "restart"
    grace: float = 10.0
    server: str | None = None
    token_env: str = TOKEN_ENV
    as_json: bool = False


def on_change_signal(text: str) -> signal.Signals | None:
    """``restart`` -> None; a signal name (``SIGHUP``, ``HUP``) -> the signal."""
    from keysafe.errors import InvalidValue

    if text == "restart":
        return None
    name = text.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return signal.Signals[name]
    except KeyError:
        raise InvalidValue(f"--on-change {text!r} is neither restart nor a signal name "
                           "such as SIGHUP") from None


def _check(opts: RunOptions) -> None:
    from keysafe.errors import InvalidValue

    if not opts.command:
        raise InvalidValue("give the command to run after --, e.g. keysafe run --org acme "
                           "-- python app.py")
    if opts.org is None:
        for flag, given in (("--domain", opts.domain), ("--only", opts.only),
                            ("--map", opts.map_file), ("--with-shared", opts.with_shared)):
            if given:
                raise InvalidValue(f"{flag} needs --org")
    if not INTERVAL_MIN <= opts.interval <= INTERVAL_MAX:
        raise InvalidValue(f"--interval must be between {INTERVAL_MIN:g} and "
                           f"{INTERVAL_MAX:g} seconds")
    if not 0 <= opts.grace <= 3600:
        raise InvalidValue("--grace must be between 0 and 3600 seconds")
    if opts.server is None and opts.token_env != TOKEN_ENV:
        raise InvalidValue("--token-env needs --via-server")


def read_env_files(paths: Sequence[str]) -> dict[str, str]:
    """Variables from .env files (python-dotenv, no ``${}`` expansion: a value is taken
    as written, so exported values and references come through unchanged)."""
    from pathlib import Path

    from keysafe.errors import InvalidValue

    out: dict[str, str] = {}
    for p in paths:
        if not Path(p).is_file():
            raise InvalidValue(f"--env-file {p}: no such file")
        from keysafe.backends.env import read_dotenv

        for k, v in read_dotenv(p, interpolate=False).items():
            if v is not None:
                out[k] = v
    return out


def prepare(opts: RunOptions) -> tuple[EnvPlan, Source | None]:
    from keysafe.workloads.scope import EnvPlan, Scope
    from keysafe.workloads.sources import open_source

    _check(opts)
    on_change_signal(opts.on_change)
    base = dict(os.environ)
    base.update(read_env_files(opts.env_files))
    scope = None
    if opts.org is not None:
        scope = Scope.of(opts.org, opts.domain, opts.only, opts.map_file,
                         with_shared=opts.with_shared)
    plan = EnvPlan.make(base, scope)
    source = (open_source(env=opts.env, server=opts.server, token_env=opts.token_env)
              if plan.needs_source else None)
    return plan, source


def main(opts: RunOptions) -> int:
    """Run the command; its exit status (128 + N when signal N ended it), 126/127 when
    it could not be started, or keysafe's own error status before it started."""
    source: Source | None = None
    try:
        plan, source = prepare(opts)
        env, snap = plan.build(source, track=opts.watch)
        for note in plan.scope.notes() if plan.scope is not None else ():
            _warn(note)
        if not opts.watch and source is not None:
            source.close()  # the child may run for days: hold no store connection
            source = None
    except Exception as exc:
        if source is not None:
            source.close()
        return exitcodes.report(exc, as_json=opts.as_json)
    try:
        return Supervisor(opts, plan, source, snap).run(env)
    finally:
        if source is not None:
            source.close()


def _status(raw: int) -> int:
    code = os.waitstatus_to_exitcode(raw)
    return 128 - code if code < 0 else code


def _warn(message: str) -> None:
    sys.stderr.write(f"keysafe: {message}\n")
    sys.stderr.flush()


def _foreground() -> bool:
    """Whether keysafe's process group is its terminal's foreground group (then a
    Ctrl-C reached the child directly)."""
    for fd in (0, 1, 2):
        try:
            return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            continue
    return False


class Supervisor:
    def __init__(self, opts: RunOptions, plan: EnvPlan, source: Source | None,
                 snap: Snapshot) -> None:
        self.opts = opts
        self.plan = plan
        self.source = source
        self.snap = snap
        self.pid = 0
        self.stopping = False
        self.on_change = on_change_signal(opts.on_change)
        self.forward = {signal.Signals[s] for s in FORWARD}
        self.terminal = {signal.Signals[s] for s in _TERMINAL}
        self._rfd = self._wfd = -1
        self._saved: dict[signal.Signals, Any] = {}
        self._saved_fd = -1
        self._told = False
        self._watched: tuple[str, ...] = ()
        self._listening: threading.Event | None = None  # the store's listener is up
        self._pipe_lock = threading.Lock()  # the listener thread writes, _restore closes

    # -- signals --------------------------------------------------------------------
    def _install(self) -> None:
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._wfd, False)
        os.set_blocking(self._rfd, False)
        self._saved_fd = signal.set_wakeup_fd(self._wfd, warn_on_full_buffer=False)
        for sig in [*self.forward, signal.SIGCHLD]:
            self._saved[sig] = signal.signal(sig, _noop)

    def _restore(self) -> None:
        for sig, old in self._saved.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(self._saved_fd)
        with self._pipe_lock:
            fds, self._rfd, self._wfd = (self._rfd, self._wfd), -1, -1
            for fd in fds:
                if fd >= 0:
                    os.close(fd)

    def _listen(self) -> None:
        """--watch on a store that announces changes (PostgreSQL's NOTIFY): a change
        brings the next poll forward (the poll still compares versions; a notice only
        says when to look)."""
        from keysafe.backends.base import Watchable
        from keysafe.workloads.sources import StoreSource

        if not isinstance(self.source, StoreSource):
            return
        mgr = self.source.manager
        if not isinstance(mgr.backend, Watchable):
            return
        # The paths that concern the command: the scope's prefix, each reference's path.
        scope = self.plan.scope
        self._watched = tuple(
            ([mgr.prefix(scope.org, d or mgr.default_domain)
              for d in scope.layers(self.source)] if scope is not None else [])
            + [mgr.path(name, org, domain=domain)
               for org, domain, name in set(self.plan.refs.values())])
        listening = getattr(mgr.backend, "listening", None)
        self._listening = listening if isinstance(listening, threading.Event) else None
        mgr.backend.watch(self._heard)

    def _heard(self, path: str) -> None:
        if path != "*" and not path.startswith(self._watched):
            return
        # "*" while the listener is down is its lost connection: the loop looks once it
        # is back (anything may have changed meanwhile), not on every failed reconnect.
        self._told = True
        with self._pipe_lock, contextlib.suppress(OSError):  # full: a wake-up is pending
            if self._wfd >= 0:
                os.write(self._wfd, bytes([_TOLD]))

    def _wait(self, timeout: float) -> list[int]:
        """Signal numbers received within ``timeout`` seconds (maybe none)."""
        import select

        ready, _, _ = select.select([self._rfd], [], [], max(0.0, timeout))
        if not ready:
            return []
        try:
            return list(os.read(self._rfd, 512))
        except BlockingIOError:
            return []

    # -- the child --------------------------------------------------------------------
    def _spawn(self, env: dict[str, str]) -> int:
        cmd = self.opts.command
        # Python ignores SIGPIPE and SIGXFSZ; the child gets the defaults back.
        reset = {signal.SIGPIPE, *self.forward, signal.SIGCHLD}
        if hasattr(signal, "SIGXFSZ"):
            reset.add(signal.SIGXFSZ)
        try:
            return os.posix_spawnp(cmd[0], cmd, env, setsigdef=reset)
        except FileNotFoundError:
            raise _StartError(127, f"command not found: {cmd[0]}") from None
        except PermissionError:
            raise _StartError(126, f"permission denied: {cmd[0]}") from None
        except OSError as exc:
            raise _StartError(126, f"cannot run {cmd[0]}: "
                                   f"{exc.strerror or type(exc).__name__}") from None

    def _reap(self) -> int | None:
        try:
            pid, raw = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return 1
        return _status(raw) if pid else None

    def _kill(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def _handle(self, signums: list[int]) -> int | None:
        """Pass on signals; the child's status if it has exited."""
        for n in signums:
            if n in (signal.SIGCHLD, _TOLD):
                continue
            sig = signal.Signals(n)
            if sig in _stopping_signals():
                self.stopping = True
            if sig in self.terminal and _foreground():
                continue  # the terminal sent it to the child as well
            self._kill(sig)
        return self._reap()

    def run(self, env: dict[str, str]) -> int:
        self._install()
        try:
            if self.opts.watch:
                self._listen()
            try:
                self.pid = self._spawn(env)
            except _StartError as exc:
                return exitcodes.emit_error("cannot_start", exc.message, exc.status,
                                            as_json=self.opts.as_json)
            return self._loop()
        finally:
            self._restore()

    def _loop(self) -> int:
        watch = self.opts.watch and self.source is not None
        due = next_poll = time.monotonic() + self.opts.interval
        burst: float | None = None  # when the first notice of a burst came
        while True:
            now = time.monotonic()
            timeout = min(_TICK, next_poll - now) if watch and not self.stopping else _TICK
            status = self._handle(self._wait(timeout))
            if status is not None:
                return status
            if self._told and (self._listening is None or self._listening.is_set()):
                # Told of a change: look once the notices pause for a moment (at most
                # _SETTLE_MAX after the first), so a burst is one restart.
                self._told = False
                now = time.monotonic()
                burst = now if burst is None else burst
                next_poll = min(due, now + _SETTLE, burst + _SETTLE_MAX)
            if watch and not self.stopping and time.monotonic() >= next_poll:
                status = self._poll()
                if status is not None:
                    return status
                burst = None
                due = next_poll = time.monotonic() + self.opts.interval

    # -- --watch --------------------------------------------------------------------
    def _poll(self) -> int | None:
        from keysafe.errors import KeysafeError

        assert self.source is not None
        try:
            snap = self.plan.snapshot(self.source)
        except KeysafeError as exc:
            _warn(f"could not check the secrets for changes ({exc.message}); trying again "
                  f"in {self.opts.interval:g} s")
            return None
        if snap == self.snap:
            return None
        changed = sorted({str(k[-1]) for k in set(snap) ^ set(self.snap)}
                         | {str(k[-1]) for k in snap if k in self.snap
                            and snap[k] != self.snap[k]})
        if self.on_change is not None:
            _warn(f"secrets changed ({', '.join(changed)}); sending {self.on_change.name} "
                  "to the command")
            self._kill(self.on_change)
            self.snap = snap
            return None
        try:
            env, snap = self.plan.build(self.source, track=True)
        except KeysafeError as exc:
            _warn(f"secrets changed but could not be read ({exc.message}); the command "
                  "keeps running and the change is tried again")
            return None
        _warn(f"secrets changed ({', '.join(changed)}); restarting the command")
        status = self._stop_child()
        if self.stopping:
            return status
        try:
            self.pid = self._spawn(env)
        except _StartError as exc:
            return exitcodes.emit_error("cannot_start", exc.message, exc.status,
                                        as_json=self.opts.as_json)
        self.snap = snap
        return None

    def _stop_child(self) -> int:
        """SIGTERM, then SIGKILL after the grace period; the child's status."""
        self._kill(signal.SIGTERM)
        deadline = time.monotonic() + self.opts.grace
        killed = False
        while True:
            status = self._handle(self._wait(min(_TICK, deadline - time.monotonic())))
            if status is not None:
                return status
            if not killed and time.monotonic() >= deadline:
                self._kill(signal.SIGKILL)
                killed = True
                deadline = time.monotonic() + 30.0
            elif killed and time.monotonic() >= deadline:
                raise RuntimeError("the command did not exit after SIGKILL")


def _stopping_signals() -> set[signal.Signals]:
    return {signal.Signals[s] for s in _STOPPING}


def _noop(signum: int, frame: object) -> None:
    """A handler so that the signal reaches the wake-up pipe instead of its default."""


class _StartError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- the short parser used by cli.entry -----------------------------------------------
_VALUE_OPTS = {"--org": "org", "--domain": "domain", "--env": "env", "--only": "only",
               "--map": "map_file", "--env-file": "env_files", "--interval": "interval",
               "--on-change": "on_change", "--grace": "grace", "--via-server": "server",
               "--token-env": "token_env"}
_REPEATABLE = {"only", "env_files"}
_FLAGS = {"--watch": "watch", "--json": "as_json", "--with-shared": "with_shared"}


def parse_run(args: Sequence[str]) -> RunOptions | None:
    """RunOptions from ``run``'s arguments, or None for anything but the plain valid
    form (help, unknown or repeated options, bad numbers): typer has the final word."""
    kw: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-"):
            break  # the command starts here
        if arg in _FLAGS:
            if _FLAGS[arg] in kw:
                return None
            kw[_FLAGS[arg]] = True
            i += 1
            continue
        taken = option_value(args, i)
        if taken is None:
            return None
        opt, val, i = taken
        key = _VALUE_OPTS.get(opt)
        if key is None or (key in kw and key not in _REPEATABLE):
            return None
        if key in _REPEATABLE:
            kw.setdefault(key, []).append(val)
        else:
            kw[key] = val
    command = list(args[i:])
    if not command:
        return None
    for key in ("interval", "grace"):
        if key in kw:
            try:
                kw[key] = float(kw[key])
            except ValueError:
                return None
    return RunOptions(command=command, **kw)
