"""``keysafe audit`` (query the log), ``keysafe audit verify`` (check the chain) and
``keysafe audit archive`` (move old records to a file, keeping the chain verifiable) and
``keysafe audit report`` (access patterns, and what deserves a look)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keysafe.cli import exitcodes
from keysafe.cli.options import MAX_INT, Env, Json, parse_time, segment
from keysafe.cli.output import command, emit_json, emit_json_lines, say, table
from keysafe.cli.output import progress as progress_bar
from keysafe.cli.reading import LONG_JOB_TIMEOUT, load, open_manager, open_remote
from keysafe.manager.access import KINDS

if TYPE_CHECKING:
    from keysafe.manager.access import AccessReport, Finding

#: Rows a table shows when no --limit is given (JSON lines are never cut short).
TABLE_DEFAULT_LIMIT = 100

audit_app = typer.Typer(
    help="Query the audit log (who did what to which secret, and when; never a value). "
         "`keysafe audit verify` checks its hash chain; `keysafe audit anchor` takes an "
         "anchor to keep elsewhere.",
    invoke_without_command=True, no_args_is_help=False)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


@audit_app.callback(invoke_without_command=True)
@command
def audit(
    ctx: typer.Context,
    org: Annotated[str | None, typer.Option("--org", help="Only this org.",
                                            show_default=False,
                                            callback=segment("org"))] = None,
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
        "--limit", min=0, max=MAX_INT, metavar="N",
        help=f"The newest N records (0: all); default {TABLE_DEFAULT_LIMIT} for the "
             "table, all for --json.", show_default=False)] = None,
    env: Env = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="JSON lines on stdout, one record per line.")] = False,
) -> None:
    """Show audit records, oldest first, as a table or JSON lines.

    With KEYSAFE_SERVER_URL set, the server's records (GET /api/audit with an admin
    token, page by page), without their hashes."""
    if ctx.invoked_subcommand is not None:
        return
    from keysafe.manager.audit import AuditFilter

    t_since = parse_time(since, option="--since")
    t_until = parse_time(until, option="--until")
    if limit is None and not as_json:
        limit = TABLE_DEFAULT_LIMIT
    settings = load(env)
    records: list[dict[str, Any]]
    if settings.server_url:
        from keysafe.client import AUDIT_BEFORE, AUDIT_PAGE

        records = []
        with open_remote(settings) as remote:
            pages = AUDIT_BEFORE in remote.info().get("features", ())
            while True:  # newest first, a page at a time, each older than the last
                if records and not pages:
                    say(f"the keysafe server is older than this keysafe and answers one "
                        f"page only: these are the newest {len(records):,} records "
                        "(upgrade it for the rest)")
                    break
                want = AUDIT_PAGE if not limit else min(AUDIT_PAGE, limit - len(records))
                page = remote.client.audit(
                    org=org, path=path, action=action, actor=actor, outcome=outcome,
                    since=t_since, until=t_until, limit=want,
                    before=records[-1]["seq"] if records else None)
                records += page
                if len(page) < want or (limit and len(records) >= limit):
                    break
        records.reverse()
    else:
        flt = AuditFilter(org=org, path=path, action=action, actor=actor, outcome=outcome,
                          since=t_since, until=t_until, limit=limit or None,
                          newest_first=bool(limit))
        with open_manager(settings=settings) as mgr:
            events = mgr.audit_query(flt)
        if flt.newest_first:
            events.reverse()
        records = [e.to_dict() for e in events]
    if as_json:
        emit_json_lines(records)
        return
    if not records:
        say("no audit records match")
        return
    table(["seq", "time", "actor", "action", "path", "version", "outcome", "detail"],
          [[r["seq"], datetime.fromisoformat(r["ts"]), r["actor"], r["action"], r["path"],
            r["version"], r["outcome"], r["detail"]] for r in records])
    if limit and len(records) == limit:
        say(f"showing the newest {limit} records; --limit N shows more (0: all)")


@audit_app.command("report")
@command
def report(
    since: Annotated[str, typer.Option(
        "--since", metavar="TIME", help="From this time: ISO 8601 or an age like 24h, 7d.")
    ] = "7d",
    until: Annotated[str | None, typer.Option(
        "--until", metavar="TIME", help="Up to this time (default: now).",
        show_default=False)] = None,
    org: Annotated[str | None, typer.Option("--org", help="Only this org.",
                                            show_default=False,
                                            callback=segment("org"))] = None,
    max_denied: Annotated[int, typer.Option(
        "--max-denied", min=1, max=MAX_INT, metavar="N",
        help="A finding when one identity is denied N times or more.")] = 5,
    max_not_found: Annotated[int, typer.Option(
        "--max-not-found", min=1, max=MAX_INT, metavar="N",
        help="A finding when one identity asks N times or more for secrets that do not "
             "exist.")] = 20,
    max_secrets: Annotated[int, typer.Option(
        "--max-secrets", min=1, max=MAX_INT, metavar="N",
        help="A finding when one identity reads N distinct secrets or more.")] = 100,
    ignore: Annotated[list[str] | None, typer.Option(
        "--ignore", metavar="KIND", help=f"Leave out this kind of finding ({', '.join(KINDS)}"
                                         "); repeat for more.", show_default=False)] = None,
    check: Annotated[bool, typer.Option(
        "--check", help="Exit 1 when there is any finding (for cron and CI alerts).")
    ] = False,
    env: Env = None,
    as_json: Json = False,
) -> None:
    """Access patterns over a window: each identity's reads, writes, denials and
    failures, and the findings worth a look (repeated denials, one identity reading
    many secrets, a new identity, integrity failures, secrets nobody read).

    With KEYSAFE_SERVER_URL set, the server makes it (GET /api/audit/report, an admin
    token)."""
    from keysafe.manager.access import access_report

    skip = set(ignore or [])
    unknown = sorted(skip - set(KINDS))
    if unknown:
        raise typer.BadParameter(f"unknown kind {unknown[0]!r}; kinds are {', '.join(KINDS)}",
                                 param_hint="'--ignore'")
    t_since = parse_time(since, option="--since")
    t_until = parse_time(until, option="--until") or datetime.now(UTC)
    assert t_since is not None
    if t_until <= t_since:
        raise typer.BadParameter("--until must be after --since (and --since in the past)",
                                 param_hint="'--until'" if until else "'--since'")
    limits: dict[str, Any] = {"max_denied": max_denied, "max_not_found": max_not_found,
                              "max_secrets": max_secrets, "unread": "unread" not in skip}
    settings = load(env)
    if settings.server_url:
        from keysafe.manager.access import AccessReport

        with open_remote(settings) as remote:
            remote.info()
            answer = remote.client.access_report(
                since=t_since.astimezone(UTC), until=t_until.astimezone(UTC), org=org,
                **limits)
        try:
            rep = AccessReport.from_dict(answer)
        except (KeyError, TypeError, ValueError):
            from keysafe.errors import BackendUnavailable

            raise BackendUnavailable(f"the keysafe server at {remote.client.url} answered "
                                     "with something that is not an access report") from None
    else:
        with open_manager(settings=settings) as mgr:
            rep = access_report(mgr, since=t_since.astimezone(UTC),
                                until=t_until.astimezone(UTC), org=org, **limits)
    findings = [f for f in rep.findings if f.kind not in skip]
    if as_json:
        emit_json({**rep.to_dict(), "findings": [f.to_dict() for f in findings]})
    else:
        _render_report(rep, findings)
    if check and findings:
        raise typer.Exit(exitcodes.FINDINGS)


def _render_report(rep: AccessReport, findings: list[Finding]) -> None:
    scope = f"org {rep.org}" if rep.org else "all orgs"
    title = (f"access {rep.since:%Y-%m-%d %H:%M} to {rep.until:%Y-%m-%d %H:%M} UTC, "
             f"{scope}")
    if not rep.actors:
        say(f"{title}: no audit records")
    else:
        table(["identity", "records", "reads", "writes", "denied", "not found", "failed",
               "secrets read", "last seen", "new"],
              [[a.actor, f"{a.records:,}", f"{a.reads:,}", f"{a.writes:,}", a.denied,
                a.not_found, a.failed, f"{a.secrets_read:,}",
                f"{a.last:%Y-%m-%d %H:%M}" if a.last else "", "yes" if a.new else ""]
               for a in rep.actors], title=title)
    if findings:
        table(["finding", "detail"], [[f.kind.replace("_", " "), f.message]
                                      for f in findings], title="worth a look")
    else:
        say("no findings")
    if rep.unread:
        shown = rep.unread[:20]
        say("not read in the window: " + ", ".join(shown)
            + (f" (and {len(rep.unread) - len(shown)} more; --json lists all)"
               if len(rep.unread) > len(shown) else ""))


@audit_app.command("verify")
@command
def verify(
    archives: Annotated[list[Path] | None, typer.Option(
        "--archive", metavar="FILE", exists=True, dir_okay=False,
        help="Check these files from `keysafe audit archive` instead of the store "
             "(oldest first; repeat the option), and that the store continues from "
             "the last one.", show_default=False)] = None,
    anchor_files: Annotated[list[Path] | None, typer.Option(
        "--anchors", metavar="FILE", exists=True, dir_okay=False,
        help="Anchors taken earlier (`keysafe audit anchor --out`, or the server's "
             "KEYSAFE_AUDIT_ANCHOR_FILE): each anchored record must still be there, "
             "unchanged (repeat the option).", show_default=False)] = None,
    env: Env = None,
    as_json: Json = False,
) -> None:
    """Check the hash chain; exit 6 naming every edited, removed or reordered record,
    and every anchored record that changed or is gone.

    With KEYSAFE_SERVER_URL set, the server checks its own store (POST
    /api/audit/verify, an admin of every org), with the anchors given: what the server
    says of itself, so keep the anchors where its administrators cannot write."""
    from keysafe.manager import anchors
    from keysafe.manager.audit import VerifyResult

    wanted = anchors.read(anchor_files or ())
    settings = load(env)
    if settings.server_url:
        if archives:
            from keysafe.errors import ConfigError

            raise ConfigError("--archive checks files against the store they came from: "
                              "run it where the store is (KEYSAFE_SERVER_URL unset); "
                              "through a server, only the server's chain and --anchors")
        with open_remote(settings, timeout=LONG_JOB_TIMEOUT) as remote:
            remote.info()  # the environment asked for is the server's
            got = remote.client.audit_verify(a.to_dict() for a in wanted)
        result = VerifyResult(got["ok"], got["checked"],
                              [(p["seq"], p["problem"]) for p in got["problems"]],
                              tuple(str(n) for n in got.get("notes", ())))
    else:
        with open_manager(settings=settings) as mgr:
            result = mgr.audit_verify(archives or (), wanted)
    what = ("archived audit records and the store's chain" if archives and wanted
            else "archived audit records" if archives else "audit chain")
    if as_json:
        emit_json(result.to_dict())
    elif result.ok:
        print(f"{what} intact: {result.checked} records checked")
    else:
        table(["record", "problem"], result.problems, title="Audit chain problems")
    if not as_json:
        for note in result.notes:
            say(f"note: {note}")
    if not result.ok:
        n = len(result.problems)
        broken = "the audit chain is broken" if not wanted else "audit verification failed"
        code = exitcodes.emit_error(
            "integrity_error",
            f"{broken}: {n} problem{'s' if n != 1 else ''} in "
            f"{result.checked} records (first at record {result.problems[0][0]})",
            exitcodes.INTEGRITY, as_json=as_json)
        raise typer.Exit(code)


@audit_app.command("anchor")
@command
def anchor(
    out: Annotated[Path | None, typer.Option(
        "--out", metavar="FILE", dir_okay=False,
        help="Also add the anchor to this JSON-lines file (keep it where the store's "
             "administrators cannot write).", show_default=False)] = None,
    env: Env = None,
    as_json: Json = False,
) -> None:
    """Anchor the audit log: commit an `audit_anchor` record durably and print its
    number and hash. Kept where the store's administrators cannot write, it lets
    `keysafe audit verify --anchors` catch a log rewritten or cut short, which the chain
    alone cannot. With KEYSAFE_SERVER_URL set, an anchor of the server's log (POST
    /api/audit/anchor, an admin of every org)."""
    from keysafe.manager import anchors

    settings = load(env)
    if settings.server_url:
        with open_remote(settings) as remote:
            remote.info()  # the environment asked for is the server's
            taken = anchors.Anchor.from_dict(remote.client.audit_anchor(),
                                             "the server's anchor")
    else:
        with open_manager(settings=settings) as mgr:
            taken = anchors.take(mgr)
    if out is not None:
        anchors.append(out, taken)
    if as_json:
        emit_json(taken.to_dict())
    else:
        print(f"audit head: record {taken.seq}, hash {taken.hash} ({taken.taken_at})")
        if out is not None:
            say(f"added to {out}")


@audit_app.command("archive")
@command
def archive(
    before: Annotated[str, typer.Option(
        "--before", metavar="TIME", help="Archive the records older than this: ISO 8601 "
                                         "(UTC if no offset) or an age like 90d.",
        show_default=False)],
    to: Annotated[Path, typer.Option(
        "--to", metavar="FILE", dir_okay=False,
        help="The JSON-lines file to write (mode 0600; never overwritten).",
        show_default=False)],
    env: Env = None,
    as_json: Json = False,
) -> None:
    """Move audit records older than TIME to FILE and remove them from the store.

    Every record is checked before anything is removed, and the store remembers where
    its chain now starts, so `keysafe audit verify` still detects a removed or edited
    record; `keysafe audit verify --archive FILE` checks the file."""
    t = parse_time(before, option="--before")
    assert t is not None  # a required option
    with open_manager(env) as mgr, progress_bar("archiving audit records",
                                                quiet=as_json) as progress:
        res = mgr.audit_archive(t, to, progress=progress)
    if as_json:
        emit_json(res.to_dict())
    elif res.records == 0:
        say(f"no audit records older than {t.isoformat()} to archive")
    else:
        say(f"archived {res.records} audit records ({res.first}..{res.through}, "
            f"{res.bytes} bytes) to {res.path}; the store's chain now starts after record "
            f"{res.through}")
