"""``keysafe org ls | rm | restore``: organisations as a whole (a tenant's offboarding)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keysafe.cli import exitcodes
from keysafe.cli.options import Env, Json, Yes, segment
from keysafe.cli.output import command, emit_json, say, table
from keysafe.cli.output import progress as progress_bar
from keysafe.cli.reading import LONG_JOB_TIMEOUT, load, open_manager, open_remote, still_running

org_app = typer.Typer(help="Organisations as a whole: what each holds, a tenant's "
                           "offboarding and its undoing.", no_args_is_help=True)

OrgArg = Annotated[str, typer.Argument(metavar="ORG", help="The organisation.",
                                       callback=segment("org"))]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would change; "
                                                        "change nothing.")]


def register(app: typer.Typer) -> None:
    app.add_typer(org_app, name="org")
    org_app.command("ls")(org_ls)
    org_app.command("rm")(org_rm)
    org_app.command("restore")(org_restore)


@command
def org_ls(env: Env = None, as_json: Json = False) -> None:
    """Every org with secrets in this environment: live and deleted counts, domains.
    With KEYSAFE_SERVER_URL set, the server's (GET /api/orgs): the orgs the token
    covers."""
    from keysafe.orgs import OrgSummary, summaries

    settings = load(env)
    if settings.server_url:
        with open_remote(settings) as remote:
            remote.info()  # the environment asked for is the server's
            rows = [OrgSummary(str(r["org"]), int(r["secrets"]), int(r["deleted"]),
                               tuple(str(d) for d in r["domains"]))
                    for r in remote.client.orgs()]
    else:
        with open_manager(settings=settings) as mgr:
            rows = summaries(mgr)
    if as_json:
        emit_json([r.to_dict() for r in rows])
        return
    table(["org", "secrets", "deleted", "domains"],
          [(r.org, r.secrets, r.deleted, ", ".join(r.domains)) for r in rows],
          title="Organisations")


@command
def org_rm(
    org: OrgArg,
    purge: Annotated[bool, typer.Option(
        "--purge", help="Destroy every secret now, soft-deleted ones included: "
                        "unrecoverable.")] = False,
    keep_tokens: Annotated[bool, typer.Option(
        "--keep-tokens", help="Leave the tokens that cover only this org.")] = False,
    dry_run: DryRun = False,
    yes: Yes = False,
    env: Env = None,
    as_json: Json = False,
) -> None:
    """Offboard a tenant: delete every secret of ORG in every domain (restorable with
    `keysafe org restore` within the recovery window; --purge destroys them now) and
    revoke the tokens that cover only ORG. Each step is audited. Asks first. With
    KEYSAFE_SERVER_URL set, the server does it (DELETE /api/orgs/ORG, an admin of the
    whole org)."""
    from keysafe.orgs import recoverable, remove_org, tokens_only_for
    from keysafe.server.tokenstore import open_token_store, record_event

    settings = load(env)
    if settings.server_url:
        steps, revoked = _remove_remote(settings, org, purge=purge, keep_tokens=keep_tokens,
                                        dry_run=dry_run, ask=not (yes or dry_run),
                                        quiet=as_json)
        _report(steps, revoked, dry_run, as_json, org=org)
        return
    with open_manager(env, settings) as mgr:
        purge = purge or not recoverable(mgr)  # a store without soft delete
        live = [m for m in mgr.list(org, include_deleted=purge) if purge or not m.deleted]
        store = open_token_store(settings, mgr.state or mgr.backend)
        try:
            doomed = [] if keep_tokens else tokens_only_for(store, org)
            if not dry_run and not yes:
                what = "Purge" if purge else "Delete"
                tail = ("This cannot be undone." if purge else
                        f"Restorable for {mgr.recovery_window.days} days.")
                anywhere = [t for t in doomed if t.env is None]
                also = (f" {len(anywhere)} of the tokens predate environment binding and "
                        f"work in every environment: revoking them ends {org}'s access "
                        "everywhere." if anywhere else "")
                typer.confirm(f"{what} {len(live)} secret(s) of {org} in {mgr.env} and "
                              f"revoke {len(doomed)} token(s)? {tail}{also}", abort=True,
                              err=True)
            with progress_bar("purging" if purge else "deleting", quiet=as_json) as bar:
                steps = remove_org(mgr, org, purge=purge, dry_run=dry_run, progress=bar)
            revoked = []
            for t in doomed:
                if dry_run:
                    revoked.append(t)
                    continue
                info = store.revoke(t.id)
                record_event(mgr, "token_revoke", info)
                revoked.append(info)
        finally:
            store.close()
    _report(steps, revoked, dry_run, as_json, org=org)


@command
def org_restore(org: OrgArg, dry_run: DryRun = False, env: Env = None,
                as_json: Json = False) -> None:
    """Restore every soft-deleted secret of ORG still within its recovery window (the
    undoing of `keysafe org rm` without --purge; revoked tokens stay revoked). With
    KEYSAFE_SERVER_URL set, the server does it (POST /api/orgs/ORG/restore, an admin
    of the whole org)."""
    from keysafe.orgs import restore_org

    settings = load(env)
    if settings.server_url:
        steps = _restore_remote(settings, org, dry_run=dry_run, quiet=as_json)
    else:
        with (open_manager(settings=settings) as mgr,
              progress_bar("restoring", quiet=as_json) as bar):
            steps = restore_org(mgr, org, dry_run=dry_run, progress=bar)
    _report(steps, [], dry_run, as_json, org=org)


def _restore_remote(settings: Any, org: str, *, dry_run: bool, quiet: bool) -> list[Any]:
    from keysafe.errors import KeysafeError

    with open_remote(settings, timeout=LONG_JOB_TIMEOUT) as remote:
        remote.info()
        if not quiet and not dry_run:
            say(f"restoring {org} through the server (one request)...")
        try:
            answer = remote.client.restore_org(org, dry_run=dry_run)
        except KeysafeError as exc:
            raise still_running(exc, f"restoring {org}",
                                f"keysafe ls --org {org}") from None
    return _steps_of(answer)


def _remove_remote(settings: Any, org: str, *, purge: bool, keep_tokens: bool,
                   dry_run: bool, ask: bool, quiet: bool) -> tuple[list[Any], list[Any]]:
    """``org rm`` through the server: a dry run first when it must ask (the counts the
    question gives), then the removal; (steps, tokens) as the store's path has them."""
    from types import SimpleNamespace

    from keysafe.errors import KeysafeError

    with open_remote(settings, timeout=LONG_JOB_TIMEOUT) as remote:
        remote.info()
        client = remote.client
        if ask:
            plan = client.delete_org(org, purge=purge, keep_tokens=keep_tokens, dry_run=True)
            mine = client.whoami().get("token_id")
            own = (" (among them the token this command uses: --keep-tokens keeps them)"
                   if any(t.get("id") == mine for t in plan.get("tokens", [])) else "")
            purged = bool(plan.get("purged"))
            what = "Purge" if purged else "Delete"
            tail = ("This cannot be undone." if purged else
                    f"Restorable for {plan.get('recovery_window_days')} days.")
            anywhere = [t for t in plan.get("tokens", []) if t.get("env") is None]
            also = (f" {len(anywhere)} of the tokens predate environment binding and work "
                    f"in every environment: revoking them ends {org}'s access everywhere."
                    if anywhere else "")
            typer.confirm(f"{what} {len(plan['secrets'])} secret(s) of {org} in "
                          f"{remote.info().get('environment')} and revoke "
                          f"{len(plan.get('tokens', []))} token(s){own}? {tail}{also}",
                          abort=True, err=True)
        if not quiet and not dry_run:
            say(f"removing {org} through the server (one request)...")
        try:
            answer = client.delete_org(org, purge=purge, keep_tokens=keep_tokens,
                                       dry_run=dry_run)
        except KeysafeError as exc:
            raise still_running(exc, f"removing {org}",
                                f"keysafe ls --org {org} --deleted") from None
    try:
        tokens = [SimpleNamespace(id=str(t["id"]), name=str(t["name"]))
                  for t in answer.get("tokens", [])]
    except (KeyError, TypeError):
        from keysafe.errors import BackendUnavailable

        raise BackendUnavailable("the keysafe server answered with something that is not "
                                 "an org removal") from None
    return _steps_of(answer), tokens


def _steps_of(answer: dict[str, Any]) -> list[Any]:
    """The per-secret outcomes of a server's answer (their shape checked by the
    client), as the store's path has them."""
    from keysafe.orgs import Step

    return [Step(str(s["path"]), str(s["outcome"]), str(s.get("detail") or ""))
            for s in answer["secrets"]]


def _report(steps: list[Any], tokens: list[Any], dry_run: bool, as_json: bool, *,
            org: str) -> None:
    from keysafe.orgs import tally

    counts = tally(steps)
    if as_json:
        emit_json({"org": org, "dry_run": dry_run, "secrets": [s.to_dict() for s in steps],
                   "tokens_revoked": [{"id": t.id, "name": t.name} for t in tokens],
                   "summary": counts})
    else:
        if steps:
            table(["outcome", "path", "detail"], [(s.outcome, s.path, s.detail or "")
                                                  for s in steps],
                  title=f"{org}{' (dry run)' if dry_run else ''}")
        if tokens:
            verb = "would revoke" if dry_run else "revoked"
            say(f"{verb} {len(tokens)} token(s): "
                + ", ".join(f"{t.name} ({t.id})" for t in tokens))
        say(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "nothing to do")
    if counts.get("failed"):
        raise typer.Exit(exitcodes.UNEXPECTED)
