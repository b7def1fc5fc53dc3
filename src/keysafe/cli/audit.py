"""``keysafe audit`` (query the log) and ``keysafe audit verify`` (check the chain)."""

from __future__ import annotations

from typing import Annotated

import typer

from keysafe.cli import exitcodes
from keysafe.cli.options import Env, Json, parse_time
from keysafe.cli.output import command, emit_json, emit_json_lines, say, table
from keysafe.cli.reading import open_manager

#: Rows a table shows when no --limit is given (JSON lines are never cut short).
TABLE_DEFAULT_LIMIT = 100

audit_app = typer.Typer(
    help="Query the audit log (who did what to which secret, and when; never a value). "
         "`keysafe audit verify` checks its hash chain.",
    invoke_without_command=True, no_args_is_help=False)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


@audit_app.callback(invoke_without_command=True)
@command
def audit(
    ctx: typer.Context,
    org: Annotated[str | None, typer.Option("--org", help="Only this org.",
                                            show_default=False)] = None,
    path: Annotated[str | None, typer.Option(
        "--path", help="Only this path; a prefix when it ends in '/'.",
        show_default=False)] = None,
    action: Annotated[str | None, typer.Option(
        "--action", help="Only this action (read, write, delete, purge, restore, destroy, "
                         "rollback, describe, list, versions, rekey, ...).",
        show_default=False)] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Only this actor.",
                                              show_default=False)] = None,
    outcome: Annotated[str | None, typer.Option(
        "--outcome", help="Only this outcome (ok, not_found, conflict, ...).",
        show_default=False)] = None,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="TIME", help="From this time: ISO 8601 (UTC if no offset) or "
                                        "an age like 15m, 1h, 7d.",
        show_default=False)] = None,
    until: Annotated[str | None, typer.Option(
        "--until", metavar="TIME", help="Up to this time (same forms as --since).",
        show_default=False)] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", min=0, metavar="N",
        help=f"The newest N records (0: all); default {TABLE_DEFAULT_LIMIT} for the "
             "table, all for --json.", show_default=False)] = None,
    env: Env = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="JSON lines on stdout, one record per line.")] = False,
) -> None:
    """Show audit records, oldest first, as a table or JSON lines."""
    if ctx.invoked_subcommand is not None:
        return
    from keysafe.manager.audit import AuditFilter

    t_since = parse_time(since, option="--since")
    t_until = parse_time(until, option="--until")
    if limit is None and not as_json:
        limit = TABLE_DEFAULT_LIMIT
    flt = AuditFilter(org=org, path=path, action=action, actor=actor, outcome=outcome,
                      since=t_since, until=t_until, limit=limit or None,
                      newest_first=bool(limit))
    with open_manager(env) as mgr:
        events = mgr.audit_query(flt)
    if flt.newest_first:
        events.reverse()
    if as_json:
        emit_json_lines(e.to_dict() for e in events)
        return
    if not events:
        say("no audit records match")
        return
    table(["seq", "time", "actor", "action", "path", "version", "outcome", "detail"],
          [[e.seq, e.ts, e.actor, e.action, e.path, e.version, e.outcome, e.detail]
           for e in events])
    if limit and len(events) == limit:
        say(f"showing the newest {limit} records; --limit N shows more (0: all)")


@audit_app.command("verify")
@command
def verify(env: Env = None, as_json: Json = False) -> None:
    """Check the hash chain; exit 6 naming every edited, removed or reordered record."""
    with open_manager(env) as mgr:
        result = mgr.audit_verify()
    if as_json:
        emit_json(result.to_dict())
    elif result.ok:
        print(f"audit chain intact: {result.checked} records checked")
    else:
        table(["record", "problem"], result.problems, title="Audit chain problems")
    if not result.ok:
        n = len(result.problems)
        code = exitcodes.emit_error(
            "integrity_error",
            f"the audit chain is broken: {n} problem{'s' if n != 1 else ''} in "
            f"{result.checked} records (first at record {result.problems[0][0]})",
            exitcodes.INTEGRITY, as_json=as_json)
        raise typer.Exit(code)
