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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keysafe.cli import exitcodes
from keysafe.cli.options import MAX_INT, Domain, Env, Json, parse_tags
from keysafe.cli.output import command, emit_json_lines, say, table, warn

if TYPE_CHECKING:
    from keysafe.errors import KeysafeError
    from keysafe.kube import PassResult
    from keysafe.manager.manager import SecretManager
    from keysafe.models import SecretMetadata

sync_app = typer.Typer(help="Keep secrets in step with where workloads read them.",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(sync_app, name="sync")
    sync_app.command("kubernetes")(sync_kubernetes)
    sync_app.command("external-secret")(sync_external_secret)


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
            "unchanged": "unchanged", "refreshed": "refreshed by the operator"}[r.action]
    noun, of = ("key", "content") if r.kind == "secret" else ("secret", "scope")
    text = (f"{r.kind} {r.namespace}/{r.name} {what}: {len(r.keys)} {noun}"
            f"{'' if len(r.keys) == 1 else 's'}, {of} {r.content_hash[:12]}")
    if r.restarted:
        text += "; restarted " + ", ".join(r.restarted)
    return text


# The options both commands take.
Interval = Annotated[str, typer.Option(
    "--interval", help="Time between passes: 1h, 15m, 90s, 1h30m.")]
Once = Annotated[bool, typer.Option(
    "--once", help="One pass, then exit (for a CronJob or a deploy step).")]
Passes = Annotated[int | None, typer.Option(
    "--passes", min=1, max=MAX_INT, help="Stop after this many passes (default: until "
                                         "SIGTERM).", show_default=False)]
Watch = Annotated[bool, typer.Option(
    "--watch", help="Also pass as soon as a secret of the scope changes (told at once by "
                    "PostgreSQL; other stores are checked every --poll).")]
Poll = Annotated[str | None, typer.Option(
    "--poll", help="With --watch on a store that does not announce changes: how often to "
                   "compare the scope's versions (a listing, no values); default 30s.",
    show_default=False)]
Restart = Annotated[list[str] | None, typer.Option(
    "--restart", metavar="KIND/NAME",
    help="Roll out this deployment, statefulset or daemonset (deploy/web, sts/db, "
         "ds/agent) when the Secret changes (repeatable).", show_default=False)]
Kubeconfig = Annotated[str | None, typer.Option(
    "--kubeconfig", metavar="PATH",
    help="kubeconfig file (default: KUBECONFIG, ~/.kube/config, else the in-cluster "
         "service account).", show_default=False)]
Context = Annotated[str | None, typer.Option(
    "--context", help="kubeconfig context (default: its current context).",
    show_default=False)]
Namespace = Annotated[str, typer.Option("--namespace", "-n", show_default=False,
                                        help="Namespace of the object.")]
OrgOption = Annotated[str, typer.Option("--org", help="Organisation whose secrets to sync.",
                                        show_default=False)]


@dataclass
class _Loop:
    """What both commands share: the options of the loop, checked once."""

    every: float
    poll_every: float
    limit: int | None
    watch: bool
    workloads: list[str]

    @classmethod
    def make(cls, interval: str, poll: str | None, once: bool, passes: int | None,
             watch: bool, restart: list[str] | None) -> _Loop:
        from keysafe.durations import parse_interval
        from keysafe.errors import InvalidValue
        from keysafe.kube import parse_workload

        every = parse_interval(interval)
        poll_every = parse_interval(poll or "30s", "poll interval")
        if watch and once:
            raise InvalidValue("--watch keeps passing on each change; it cannot go with "
                               "--once")
        if poll is not None and not watch:
            raise InvalidValue("--poll says how often --watch checks for changes; add "
                               "--watch")
        workloads = list(dict.fromkeys(parse_workload(w) for w in restart or []))
        return cls(every, poll_every, 1 if once else passes, watch, workloads)

    def run(self, mgr: SecretManager, org: str, domain: str | None, env: str | None,
            one_pass: Callable[[int], tuple[PassResult, list[SecretMetadata]]], *,
            as_json: bool) -> None:
        """Pass (``one_pass(n)``: its result and the listing it read) until the limit or
        SIGTERM, every ``every`` seconds, and (``watch``) when the scope changes; then
        the summary. A retryable failure (an outage) is retried; others stop the loop."""
        from keysafe.errors import KeysafeError
        from keysafe.workloads.watch import ScopeWatch

        every, limit = self.every, self.limit
        results: list[PassResult] = []
        failures = 0
        last_error: BaseException | None = None
        with _Stop() as stop:
            watcher = None
            if self.watch:
                watcher = ScopeWatch(mgr, org, domain, env, poll=self.poll_every,
                                     wake=stop.event, stopped=stop.stopped)
                if not as_json:
                    say(f"watching {org!r}: {watcher.how}")
            n = 0
            why = "start"
            while limit is None or n < limit:
                n += 1
                try:
                    if watcher is not None:
                        watcher.begin_pass()
                    result, listing = one_pass(n)
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
                        # Only a done pass's listing is what the cluster now holds.
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
                    # After a failed pass (its change not yet in the cluster), try again
                    # sooner: nothing may announce that change a second time.
                    why = watcher.wait(every if last_error is None
                                       else min(every, WATCH_RETRY))
                    if why == "stop":
                        break
                    why = "interval" if why == "due" else why
            if stop.signal and not as_json:
                say(f"stopped by {stop.signal} after {n} pass{'es' if n != 1 else ''}")
        if not as_json:
            _summary(results, failures)
        if last_error is not None:
            raise typer.Exit(exitcodes.exit_code_for(last_error))


def _empty_scope(org: str, domain: str | None) -> KeysafeError:
    from keysafe.errors import NotFound

    return NotFound(f"no secrets in org {org!r}" + (f" domain {domain!r}" if domain else "")
                    + "; nothing to sync (the cluster is left as it is)")


@command
def sync_kubernetes(
    org: OrgOption,
    namespace: Namespace,
    name: Annotated[str, typer.Option("--name", help="Name of the Kubernetes Secret.",
                                      show_default=False)],
    domain: Domain = None,
    env: Env = None,
    interval: Interval = "1h",
    once: Once = False,
    passes: Passes = None,
    watch: Watch = False,
    poll: Poll = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Apply on the first pass even if nothing changed (and restart the "
                        "--restart workloads).")] = False,
    restart: Restart = None,
    label: Annotated[list[str] | None, typer.Option(
        "--label", metavar="KEY=VALUE", help="Label for the Secret (repeatable).",
        show_default=False)] = None,
    adopt: Annotated[bool, typer.Option(
        "--adopt", help="Take over an existing Secret that keysafe did not write.")] = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
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
    from keysafe.kube import KubeSync, read_scope, sync_pass
    from keysafe.workloads.scope import left_out

    loop = _Loop.make(interval, poll, once, passes, watch, restart)
    labels = parse_tags(label, "--label") or {}
    mgr = open_manager(env)
    kube: KubeSync | None = None
    try:
        kube = KubeSync(namespace, name, kubeconfig=kubeconfig, context=context,
                        labels=labels, adopt=adopt)

        def one_pass(n: int) -> tuple[PassResult, list[SecretMetadata]]:
            assert kube is not None
            skipped: list[str] = []
            listing: list[SecretMetadata] = []
            values = read_scope(mgr, org, domain, env=env, skipped=skipped,
                                listing=listing)
            note = left_out(skipped)
            if note:
                warn(note)
            if not values:
                raise _empty_scope(org, domain)
            return sync_pass(kube, values, force=force and n == 1,
                             restart=loop.workloads), listing

        loop.run(mgr, org, domain, env, one_pass, as_json=as_json)
    finally:
        if kube is not None:
            kube.close()
        mgr.close()


@command
def sync_external_secret(
    org: OrgOption,
    namespace: Namespace,
    name: Annotated[str, typer.Option("--name", help="Name of the ExternalSecret.",
                                      show_default=False)],
    domain: Domain = None,
    env: Env = None,
    interval: Interval = "1h",
    once: Once = False,
    passes: Passes = None,
    watch: Watch = False,
    poll: Poll = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Ask for a refresh on the first pass even if nothing changed (and "
                        "restart the --restart workloads).")] = False,
    restart: Restart = None,
    timeout: Annotated[str, typer.Option(
        "--timeout", help="How long to wait for the operator to report the refresh.")]
        = "60s",
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    as_json: Json = False,
) -> None:
    """Make the External Secrets Operator refresh an ExternalSecret when the scope's
    secrets change, then roll out the workloads.

    keysafe reads no value here: it lists the scope's versions and, when they changed
    since it last asked (or with --force), annotates the ExternalSecret with a new
    force-sync (spec 002's `kubectl annotate ... force-sync=$(date +%s)`), waits until the
    operator reports the refresh (status.refreshTime and Ready), and rolls out each
    --restart workload. With --watch a rotation reaches the pods in seconds instead of
    the ExternalSecret's refreshInterval. Needs the kubernetes package (the k8s extra).
    """
    from keysafe.cli.reading import open_manager
    from keysafe.durations import parse_interval
    from keysafe.kube import KubeSync
    from keysafe.kube_eso import EsoRefresh

    loop = _Loop.make(interval, poll, once, passes, watch, restart)
    wait = parse_interval(timeout, "timeout")
    mgr = open_manager(env)
    kube: KubeSync | None = None
    try:
        kube = KubeSync(namespace, name, kubeconfig=kubeconfig, context=context)
        eso = EsoRefresh(kube, wait=wait)

        def one_pass(n: int) -> tuple[PassResult, list[SecretMetadata]]:
            listing = mgr.list(org, domain=domain or mgr.default_domain, env=env)
            if not listing:
                raise _empty_scope(org, domain)
            return eso.refresh(listing, force=force and n == 1,
                               restart=loop.workloads), listing

        loop.run(mgr, org, domain, env, one_pass, as_json=as_json)
    finally:
        if kube is not None:
            kube.close()
        mgr.close()


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
