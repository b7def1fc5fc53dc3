"""``keysafe sync kubernetes``: keep a Kubernetes Secret equal to a scope's secrets.

Each pass reads the scope (org and one domain) from the configured store, renders the
Secret (environment-variable names as keys, as ``keysafe export`` does) and applies it
only when its content differs from the live object; when it applies, it rolls out the
``--restart`` workloads. Without ``--once`` it repeats every ``--interval`` until
SIGTERM or Ctrl-C (a pass in progress finishes first); with ``--watch`` a change to the
scope's secrets brings the next pass forward (keysafe.workloads.watch). Progress goes to
stderr, the summary to stdout; values are never printed.
"""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keysafe.cli import exitcodes
from keysafe.cli.options import MAX_INT, Domain, Env, Json, parse_tags
from keysafe.cli.output import command, emit_json_lines, say, table, warn

if TYPE_CHECKING:
    from keysafe.kube import PassResult
    from keysafe.models import SecretMetadata

sync_app = typer.Typer(help="Keep secrets in step with where workloads read them.",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(sync_app, name="sync")
    sync_app.command("kubernetes")(sync_kubernetes)


#: Rows of the summary table (the oldest passes of a long run are counted, not shown).
_SHOWN = 20
#: With --watch, seconds before a failed pass is tried again (at most --interval).
WATCH_RETRY = 30.0


class _Stop:
    """SIGTERM/SIGINT set ``stopped``, then ``event`` (what the loop sleeps on, which a
    watched change sets too); handlers restored on exit."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.stopped = threading.Event()
        self.signal: str | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum).name
        self.stopped.set()
        self.event.set()

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _describe(r: PassResult) -> str:
    what = {"created": "created", "updated": "updated", "forced": "re-applied (--force)",
            "unchanged": "unchanged"}[r.action]
    text = (f"secret {r.namespace}/{r.name} {what}: {len(r.keys)} key"
            f"{'' if len(r.keys) == 1 else 's'}, content {r.content_hash[:12]}")
    if r.restarted:
        text += "; restarted " + ", ".join(r.restarted)
    return text


@command
def sync_kubernetes(
    org: Annotated[str, typer.Option("--org", help="Organisation whose secrets to sync.",
                                     show_default=False)],
    namespace: Annotated[str, typer.Option("--namespace", "-n",
                                           help="Namespace of the Secret.",
                                           show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Name of the Kubernetes Secret.",
                                      show_default=False)],
    domain: Domain = None,
    env: Env = None,
    interval: Annotated[str, typer.Option(
        "--interval", help="Time between passes: 1h, 15m, 90s, 1h30m.")] = "1h",
    once: Annotated[bool, typer.Option(
        "--once", help="One pass, then exit (for a CronJob or a deploy step).")] = False,
    passes: Annotated[int | None, typer.Option(
        "--passes", min=1, max=MAX_INT,
        help="Stop after this many passes (default: until SIGTERM).",
        show_default=False)] = None,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Also pass as soon as a secret of the scope changes (told at once "
                        "by PostgreSQL; other stores are checked every --poll).")] = False,
    poll: Annotated[str | None, typer.Option(
        "--poll", help="With --watch on a store that does not announce changes: how often "
                       "to compare the scope's versions (a listing, no values); default "
                       "30s.", show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Apply on the first pass even if nothing changed (and restart the "
                        "--restart workloads).")] = False,
    restart: Annotated[list[str] | None, typer.Option(
        "--restart", metavar="KIND/NAME",
        help="Roll out this deployment, statefulset or daemonset (deploy/web, sts/db, "
             "ds/agent) when the Secret is applied (repeatable).",
        show_default=False)] = None,
    label: Annotated[list[str] | None, typer.Option(
        "--label", metavar="KEY=VALUE", help="Label for the Secret (repeatable).",
        show_default=False)] = None,
    adopt: Annotated[bool, typer.Option(
        "--adopt", help="Take over an existing Secret that keysafe did not write.")] = False,
    kubeconfig: Annotated[str | None, typer.Option(
        "--kubeconfig", metavar="PATH",
        help="kubeconfig file (default: KUBECONFIG, ~/.kube/config, else the in-cluster "
             "service account).", show_default=False)] = None,
    context: Annotated[str | None, typer.Option(
        "--context", help="kubeconfig context (default: its current context).",
        show_default=False)] = None,
    as_json: Json = False,
) -> None:
    """Keep a Kubernetes Secret equal to a scope's secrets, applying only on change.

    Keys are environment-variable names (openai_api_key -> OPENAI_API_KEY). The Secret
    is created if missing and replaced when its content differs; a Secret keysafe did
    not write is left alone unless --adopt. When the Secret is applied, each --restart
    workload (Deployment, StatefulSet or DaemonSet) is rolled out (as `kubectl rollout
    restart` does). With --watch, a change to the scope's secrets (a put, rotation,
    delete or re-tag) brings the next pass forward, so a rotated value reaches the
    Secret in seconds; --interval passes still run. Needs the kubernetes package (the k8s
    extra of keysafe).
    """
    from keysafe.cli.reading import open_manager
    from keysafe.durations import parse_interval
    from keysafe.errors import InvalidValue, KeysafeError, NotFound
    from keysafe.kube import KubeSync, parse_workload, read_scope, sync_pass
    from keysafe.workloads.scope import left_out
    from keysafe.workloads.watch import ScopeWatch

    every = parse_interval(interval)
    poll_every = parse_interval(poll or "30s", "poll interval")
    if watch and once:
        raise InvalidValue("--watch keeps passing on each change; it cannot go with --once")
    if poll is not None and not watch:
        raise InvalidValue("--poll says how often --watch checks for changes; add --watch")
    workloads = list(dict.fromkeys(parse_workload(w) for w in restart or []))
    labels = parse_tags(label, "--label") or {}
    limit = 1 if once else passes

    mgr = open_manager(env)
    kube: KubeSync | None = None
    results: list[PassResult] = []
    failures = 0
    last_error: BaseException | None = None
    try:
        kube = KubeSync(namespace, name, kubeconfig=kubeconfig, context=context,
                        labels=labels, adopt=adopt)
        with _Stop() as stop:
            watcher = None
            if watch:
                watcher = ScopeWatch(mgr, org, domain, env, poll=poll_every,
                                     wake=stop.event, stopped=stop.stopped)
                if not as_json:
                    say(f"watching {org!r}: {watcher.how}")
            n = 0
            why = "start"
            while limit is None or n < limit:
                n += 1
                try:
                    skipped: list[str] = []
                    listing: list[SecretMetadata] = []
                    if watcher is not None:
                        watcher.begin_pass()
                    values = read_scope(mgr, org, domain, env=env, skipped=skipped,
                                        listing=listing)
                    note = left_out(skipped)
                    if note:
                        warn(note)
                    if not values:
                        raise NotFound(f"no secrets in org {org!r}"
                                       + (f" domain {domain!r}" if domain else "")
                                       + "; nothing to sync (the Secret is left as it is)")
                    result = sync_pass(kube, values, force=force and n == 1,
                                       restart=workloads)
                except KeysafeError as exc:
                    # An outage may pass; anything else will not get better by waiting.
                    if limit == 1 or not exc.retryable:
                        raise
                    failures += 1
                    last_error = exc
                    retry = every if watcher is None else min(every, WATCH_RETRY)
                    warn(f"pass {n} failed: {exc.message}; retrying in {retry:g} s")
                else:
                    last_error = None
                    if watcher is not None:
                        # Only an applied pass's listing is what the Secret now holds.
                        watcher.passed(listing)
                    results.append(result)
                    if result.removed:
                        warn(f"pass {n}: removed key(s) {', '.join(result.removed)} from "
                             f"secret {result.namespace}/{result.name}: pods that read one "
                             "by name will not start until they read another (a secret "
                             "deleted, or its variable changed: docs/kubernetes.md)")
                    if as_json:
                        emit_json_lines([{"pass": n, "trigger": why, **result.to_dict()}])
                    else:
                        say(f"pass {n}{' (a change)' if why == 'change' else ''}: "
                            f"{_describe(result)}")
                if limit is not None and n >= limit:
                    break
                if not as_json:
                    nxt = datetime.now(UTC) + timedelta(seconds=every)
                    say(f"next pass at {nxt.isoformat(timespec='seconds')}"
                        + (" or on a change" if watcher is not None else ""))
                if watcher is None:
                    why = "interval"
                    if stop.event.wait(every):
                        break
                else:
                    # After a failed pass (its change not yet in the Secret), try again
                    # sooner: nothing may announce that change a second time.
                    why = watcher.wait(every if last_error is None
                                       else min(every, WATCH_RETRY))
                    if why == "stop":
                        break
                    why = "interval" if why == "due" else why
            if stop.signal and not as_json:
                say(f"stopped by {stop.signal} after {n} pass{'es' if n != 1 else ''}")
    finally:
        if kube is not None:
            kube.close()
        mgr.close()
    if not as_json:
        _summary(results, failures)
    if last_error is not None:
        raise typer.Exit(exitcodes.exit_code_for(last_error))


def _summary(results: list[PassResult], failures: int) -> None:
    applied = sum(r.applied for r in results)
    shown = results[-_SHOWN:]
    first = len(results) - len(shown) + 1
    table(["pass", "at", "action", "keys", "content", "restarted"],
          [(first + i, r.at, r.action, len(r.keys), r.content_hash[:12],
            ", ".join(r.restarted) or "-")
           for i, r in enumerate(shown)],
          title=f"{len(results)} pass{'es' if len(results) != 1 else ''}: {applied} applied, "
                f"{len(results) - applied} unchanged"
                + (f", {failures} failed" if failures else ""))
