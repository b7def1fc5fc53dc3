"""``keysafe rotate``: rotation status, configuration, and runs (spec 004's categories)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keysafe.cli import exitcodes
from keysafe.cli.options import Domain, Env, Json, parse_tags, parse_time, segment
from keysafe.cli.output import command, emit_json, say, table, warn
from keysafe.cli.output import progress as progress_bar
from keysafe.cli.reading import load, open_manager

_SELECTIONS = ("all", "due", "symmetric", "api-keys", "database")


def register(app: typer.Typer) -> None:
    import inspect

    # Paragraphs as single lines, so the help wraps to the terminal.
    doc = inspect.cleandoc(rotate.__doc__ or "")
    app.command("rotate", help="\n\n".join(p.replace("\n", " ") for p in doc.split("\n\n")))(
        rotate)


@command
def rotate(
    target: Annotated[str, typer.Argument(
        metavar="TARGET",
        help="status | all | due | symmetric | api-keys | database | NAME | "
             "configure NAME | retire")],
    name: Annotated[str | None, typer.Argument(
        metavar="[NAME]", help="With configure: the secret to configure.",
        show_default=False)] = None,
    org: Annotated[str | None, typer.Option(
        "--org", help="Organisation (required for NAME and configure; else all orgs).",
        show_default=False, callback=segment("org"))] = None,
    domain: Domain = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show what would rotate; change nothing.")] = False,
    rotator: Annotated[str | None, typer.Option(
        "--rotator", help="With configure: random, webhook, postgres, manual or "
                          "a keysafe.rotators entry point.", show_default=False)] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="With configure: rotator option KEY=VALUE (repeatable), e.g. "
                         "scheme=alternating.", show_default=False)] = None,
    unset_option: Annotated[list[str] | None, typer.Option(
        "--unset-option", metavar="KEY",
        help="With configure: remove rotator option KEY (repeatable), e.g. url when "
             "switching from webhook to random.", show_default=False)] = None,
    period_days: Annotated[int | None, typer.Option(
        "--period-days", min=0, max=3650,
        help="With configure: this secret's period (0: never scheduled).",
        show_default=False)] = None,
    read_by: Annotated[str | None, typer.Option(
        "--read-by", metavar="ACTOR",
        help="Only the secrets of the selection whose values ACTOR (token:NAME, "
             "jwt:SUB, a CLI user) read or wrote, by the audit log: offboarding, or a "
             "permission taken away.", show_default=False)] = None,
    since: Annotated[str, typer.Option(
        "--since", metavar="TIME", help="With --read-by: reads from this time (ISO 8601 "
                                        "or an age like 90d).")] = "90d",
    env: Env = None,
    as_json: Json = False,
) -> None:
    """Rotate secrets, or show when they are due.

    `rotate status` lists every secret's period, last rotation and next due date, overdue
    first. `rotate due|all|symmetric|api-keys|database|NAME` runs the four-step rotation
    (create pending, set in the target, test, promote; the old value stays readable as
    "previous" for the grace period). Secrets only a person can issue get a reminder.
    `rotate configure NAME --rotator R --option k=v` sets how a secret rotates; `rotate
    retire` revokes previous values whose grace period has ended. `--read-by ACTOR
    [--since 90d]` narrows a selection to what that identity read (spec 004: rotate on
    offboarding or a permission change): `rotate all --read-by token:alice`. Exits 11 if
    any rotation failed; the current versions of failed secrets are unchanged. With
    KEYSAFE_SERVER_URL set, every one of them goes through that server.
    """
    from keysafe.rotation.engine import RotationEngine

    settings = load(env)
    if target in ("status", "retire") and name is not None:
        raise typer.BadParameter(f"`rotate {target}` takes no NAME (got {name!r}); "
                                 "use --org to narrow status")
    if target == "retire" and (org or domain):
        raise typer.BadParameter("`rotate retire` covers every org (previous values past "
                                 "their grace period): it takes no --org or --domain",
                                 param_hint="'--org'" if org else "'--domain'")
    if settings.server_url and target == "status":
        _show_states(_remote_states(settings, org, domain), as_json)
        return
    if settings.server_url and target == "configure" and not read_by:
        _configure_remote(settings, name, org, domain, rotator, option, unset_option,
                          period_days, as_json, dry_run)
        return
    if settings.server_url and target == "retire":
        _retire_remote(settings, dry_run, as_json)
        return
    if settings.server_url and target in _SELECTIONS and name is None:
        readers = _readers(read_by, since, target)
        _report(_run_remote(settings, target, org, domain, dry_run, readers, as_json),
                dry_run, as_json)
        return
    if settings.server_url:
        _readers(read_by, since, target)  # --read-by narrows a selection, not one NAME
        _report([_rotate_remote(settings, target, name, org, domain, dry_run=dry_run)],
                dry_run, as_json)
        return
    with open_manager(env, settings) as mgr:
        engine = RotationEngine.from_settings(mgr, settings)
        if target == "status":
            _status(engine, org, domain, as_json)
            return
        if target == "configure":
            _configure(mgr, name, org, domain, rotator, option, unset_option, period_days,
                       as_json, dry_run)
            return
        if target == "retire":
            _retired(engine.retire_expired(dry_run=dry_run), dry_run, as_json)
            return
        if name is not None:
            raise typer.BadParameter(f"unexpected argument {name!r}")
        if target not in _SELECTIONS and org is None:
            raise typer.BadParameter("rotating one secret needs --org", param_hint="'--org'")
        readers = _readers(read_by, since, target)
        if readers is not None and not engine.records_by(*readers, org):
            _no_records(*readers)
        with progress_bar("rotating", quiet=as_json) as progress:
            results = engine.run(target, org=org, domain=domain, dry_run=dry_run,
                                 read_by=readers, progress=progress)
    _report(results, dry_run, as_json)


def _retired(done: list[str], dry_run: bool, as_json: bool) -> None:
    if as_json:
        emit_json({"would_retire" if dry_run else "retired": done})
    elif dry_run:
        say(f"would retire {len(done)} previous value(s) past their grace period"
            + "".join(f"\n  {p}" for p in done))
    else:
        say(f"retired {len(done)} previous value(s) past their grace period")


def _retire_remote(settings: Any, dry_run: bool, as_json: bool) -> None:
    """``rotate retire`` through the server (POST /api/rotation/retire; an admin of
    every org)."""
    from keysafe.cli.reading import LONG_JOB_TIMEOUT, open_remote

    with open_remote(settings, timeout=LONG_JOB_TIMEOUT) as remote:
        remote.info()  # the environment asked for is the server's
        _retired(remote.client.retire_previous(dry_run=dry_run), dry_run, as_json)


def _readers(read_by: str | None, since: str, target: str) -> tuple[str, Any] | None:
    """(actor, since) from --read-by and --since; None without --read-by."""
    if read_by is None:
        return None
    if target not in _SELECTIONS:
        raise typer.BadParameter("--read-by narrows a selection (all, due, symmetric, "
                                 "api-keys, database), not one NAME",
                                 param_hint="'--read-by'")
    if not read_by.strip():
        raise typer.BadParameter("give an actor, e.g. token:alice", param_hint="'--read-by'")
    t_since = parse_time(since, option="--since")
    assert t_since is not None
    return read_by, t_since


def _no_records(actor: str, since: Any) -> None:
    warn(f"the audit log has no record by {actor!r} since {since:%Y-%m-%d %H:%M} UTC: "
         "check the spelling (token:NAME, jwt:SUB, or a CLI user as the audit log shows "
         "it)")


def _run_remote(settings: Any, selection: str, org: str | None, domain: str | None,
                dry_run: bool, readers: tuple[str, Any] | None, as_json: bool) -> list[Any]:
    """``rotate due|all|...`` through the server (POST /api/rotation/run): one request,
    given up to 10 minutes; its outcomes as the engine's."""
    from keysafe.cli.reading import LONG_JOB_TIMEOUT, open_remote, still_running
    from keysafe.errors import KeysafeError
    from keysafe.rotation.engine import Outcome

    with open_remote(settings, timeout=LONG_JOB_TIMEOUT) as remote:
        remote.info()  # the environment asked for is the server's
        if not as_json:
            say(f"{'planning' if dry_run else 'rotating'} {selection} on the server...")
        try:
            data = remote.client.rotate_selection(
                selection, org, domain=domain, dry_run=dry_run,
                read_by=readers[0] if readers else None,
                since=readers[1] if readers else None)
        except KeysafeError as exc:
            raise still_running(exc, "rotating them", "keysafe rotate status") from None
    if readers is not None and data.get("records_by") == 0:  # None: not the caller's
        _no_records(*readers)
    return [Outcome(str(r["path"]), str(r["name"]), str(r["org"]), str(r["outcome"]),
                    r.get("version") if isinstance(r.get("version"), int) else None,
                    r.get("step") if isinstance(r.get("step"), str) else None,
                    str(r.get("detail") or "")) for r in data["results"]]


def _status(engine: Any, org: str | None, domain: str | None, as_json: bool) -> None:
    _show_states(engine.states(org, domain), as_json)


def _remote_states(settings: Any, org: str | None, domain: str | None) -> list[Any]:
    """``rotate status`` through the server (GET /api/rotation): its states, by its
    policy, of what the token covers."""
    from dataclasses import fields
    from datetime import datetime

    from keysafe.cli.reading import open_remote
    from keysafe.rotation.policy import RotationState

    with open_remote(settings) as remote:
        remote.info()  # the environment asked for is the server's
        rows = remote.client.rotation_status(org, domain=domain)

    def when(text: str | None) -> datetime | None:
        return datetime.fromisoformat(text) if text is not None else None

    known = {f.name for f in fields(RotationState)}  # a newer server may say more
    try:
        return [RotationState(**{**{k: v for k, v in row.items() if k in known},
                                 "last_rotated": when(row["last_rotated"]),
                                 "next_due": when(row.get("next_due"))}) for row in rows]
    except (TypeError, ValueError):
        raise remote.client._odd("a rotation status") from None


def _show_states(states: list[Any], as_json: bool) -> None:
    if as_json:
        emit_json([s.to_dict() for s in states])
        return
    table(["status", "name", "org", "domain", "type", "period", "last rotated", "next due",
           "rotator"],
          [(s.status + (" (exposed)" if s.exposed else ""), s.name, s.org, s.domain,
            s.secret_type or "-",
            f"{s.period_days} d" if s.period_days else "-",
            s.last_rotated.date().isoformat(),
            s.next_due.date().isoformat() if s.next_due else "-", s.rotator)
           for s in states], title="Rotation status (overdue first)")


def _configure_args(name: str | None, rotator: str | None, option: list[str] | None,
                    unset_option: list[str] | None, period_days: int | None
                    ) -> tuple[str, dict[str, str], list[str]]:
    """(NAME, options to set, options to remove) of ``rotate configure``, checked."""
    if name is None:
        raise typer.BadParameter("configure needs the secret's NAME")
    if rotator is None and not option and not unset_option and period_days is None:
        raise typer.BadParameter("configure needs --rotator, --option, --unset-option or "
                                 "--period-days")
    drop = [k.strip() for k in unset_option or ()]
    if not all(drop):
        raise typer.BadParameter("give an option's name", param_hint="'--unset-option'")
    return name, parse_tags(option, "--option") or {}, drop


def _configure(mgr: Any, name: str | None, org: str | None, domain: str | None,
               rotator: str | None, option: list[str] | None,
               unset_option: list[str] | None, period_days: int | None,
               as_json: bool, dry_run: bool) -> None:
    from keysafe.rotation.configure import configure_rotation

    name, options, drop = _configure_args(name, rotator, option, unset_option, period_days)
    new = configure_rotation(mgr, name, org, domain=domain, rotator=rotator,
                             options=options, unset_options=drop,
                             period_days=period_days, dry_run=dry_run)
    _configured(new.to_dict(), new.path, rotator, period_days, dry_run, as_json)


def _configure_remote(settings: Any, name: str | None, org: str | None,
                      domain: str | None, rotator: str | None, option: list[str] | None,
                      unset_option: list[str] | None, period_days: int | None,
                      as_json: bool, dry_run: bool) -> None:
    """``rotate configure`` through the server (PUT …/rotation; an admin of every org):
    the server checks the rotator and its options, as here on a store."""
    from keysafe.cli.reading import open_remote
    from keysafe.cli.remote import _meta

    name, options, drop = _configure_args(name, rotator, option, unset_option, period_days)
    with open_remote(settings) as remote:
        r = remote.ref(name, org, domain)
        path = remote.path(r.name, r.org, domain=r.domain)
        st = remote.client.configure_rotation(r.name, r.org, domain=r.domain,
                                              rotator=rotator, options=options,
                                              unset_options=drop,
                                              period_days=period_days, dry_run=dry_run)
    # The status's tags: the `rotator` tag as set (never its options), as on a store.
    _configured(_meta(path, st).to_dict(), path, rotator, period_days, dry_run, as_json)


def _configured(meta: dict[str, Any], path: str, rotator: str | None,
                period_days: int | None, dry_run: bool, as_json: bool) -> None:
    if as_json:
        emit_json({**meta, "dry_run": dry_run})
    else:
        say(("would set " if dry_run else "") + f"{path}: rotator "
            f"{meta['tags'].get('rotator', '(default)')}"
            + (f", period {period_days} d" if period_days is not None else ""))


def _rotate_remote(settings: Any, target: str, name: str | None, org: str | None,
                   domain: str | None, *, dry_run: bool) -> Any:
    """``rotate NAME --org ORG [--dry-run]`` through the server (POST …/rotate): its
    outcome as the engine's (status, configure, retire and the selections have their
    own functions)."""
    from keysafe.cli.reading import LONG_JOB_TIMEOUT, open_remote, still_running
    from keysafe.errors import KeysafeError, ManualRotation, RotationBusy, RotationError
    from keysafe.rotation.engine import Outcome

    if name is not None:
        raise typer.BadParameter(f"unexpected argument {name!r}")
    if org is None:
        raise typer.BadParameter("rotating one secret needs --org", param_hint="'--org'")
    with open_remote(settings, timeout=LONG_JOB_TIMEOUT) as remote:
        path = remote.path(target, org, domain=domain)
        try:
            out = remote.client.rotate(target, org, domain=domain, dry_run=dry_run)
        except ManualRotation as exc:  # only a person can issue it (no reminder is kept)
            return Outcome(path, target, org, "reminder", detail=exc.message)
        except RotationBusy as exc:
            return Outcome(path, target, org, "busy", detail=exc.message)
        except RotationError as exc:
            return Outcome(path, target, org, "failed", detail=exc.message)
        except KeysafeError as exc:
            raise still_running(exc, "rotating it",
                                f"keysafe status {target} --org {org}") from None
    return Outcome(path, target, org, str(out.get("outcome")), out.get("version"),
                   out.get("step"), str(out.get("detail") or ""))


def _report(results: list[Any], dry_run: bool, as_json: bool) -> None:
    failed = [r for r in results if r.outcome == "failed"]
    if as_json:
        emit_json({"results": [r.to_dict() for r in results],
                   "summary": _summary(results)})
    else:
        table(["outcome", "name", "org", "version", "step", "detail"],
              [(r.outcome, r.name, r.org, r.version if r.version is not None else "-",
                r.step or "-", r.detail) for r in results],
              title="Rotation plan" if dry_run else "Rotation results")
        say(", ".join(f"{k}: {v}" for k, v in _summary(results).items()) or "nothing to do")
    if failed:
        names = ", ".join(f"{r.name} ({r.org})" for r in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        raise typer.Exit(exitcodes.emit_error(
            "rotation_failed", f"{len(failed)} rotation{'s' if len(failed) != 1 else ''} "
            f"failed: {names}{more}; their current versions are unchanged",
            exitcodes.ROTATION, as_json=as_json))


def _summary(results: list[Any]) -> dict[str, int]:
    from keysafe.orgs import tally

    return tally(results)
