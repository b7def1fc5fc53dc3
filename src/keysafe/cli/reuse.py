"""Comparing two environments: ``keysafe check-reuse``, values one shares with another
(spec 003: never use production secrets in development; ``keysafe.reuse``), and
``keysafe diff``, the secrets one has that the other lacks (``keysafe.envdiff``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keysafe.cli import exitcodes
from keysafe.cli.options import Json, segment
from keysafe.cli.output import command, emit_json, progress, say, table, warn
from keysafe.cli.reading import load, open_manager, store_only
from keysafe.errors import NotFound


def register(app: typer.Typer) -> None:
    app.command("check-reuse")(check_reuse)
    app.command("diff")(diff)


Against = Annotated[str, typer.Option(
    "--against", metavar="ENV", help="The environment to compare with (development, "
    "staging...): its keysafe.toml profile, as `migrate --from` takes it.",
    show_default=False, callback=segment("env"))]
ScopeOrg = Annotated[str | None, typer.Option(
    "--org", help="Compare this org's secrets only (default: every org).",
    show_default=False, callback=segment("org"))]
ScopeDomain = Annotated[str | None, typer.Option(
    "--domain", help="Compare this domain's secrets only (default: every domain).",
    show_default=False, callback=segment("domain"))]


def _two_envs(env: str | None, against: str) -> tuple[Any, Any]:
    """(settings of the environment checked, of the one compared with)."""
    from keysafe.migration import profile_settings

    mine_s = store_only(profile_settings(env or load().env))
    theirs_s = profile_settings(against)
    if mine_s.env == theirs_s.env:
        raise typer.BadParameter(f"--against names the environment being checked "
                                 f"({mine_s.env})", param_hint="'--against'")
    return mine_s, theirs_s


@command
def check_reuse(
    against: Against,
    env: Annotated[str | None, typer.Option(
        "--env", metavar="ENV", help="The environment checked (default: KEYSAFE_ENV, "
        "else ENVIRONMENT, else local); production, usually.", show_default=False,
        callback=segment("env"))] = None,
    org: ScopeOrg = None,
    domain: ScopeDomain = None,
    as_json: Json = False,
) -> None:
    """Find values one environment shares with another, by name and across names.

    Reads every current value of both (each an audited read), compares keyed digests
    of them (never the values themselves, which are not kept), and names the secrets
    whose values match: a production key in development is one leaked laptop away.
    Exit 0 when nothing is shared; 1 when something is, or a secret could not be read;
    3 when either side holds no secrets in the scope."""
    from keysafe.reuse import find_reuse

    mine_s, theirs_s = _two_envs(env, against)
    with open_manager(settings=mine_s) as mine, \
            open_manager(settings=theirs_s) as theirs, \
            progress("comparing values", quiet=as_json) as bar:
        report = find_reuse(mine, theirs, org=org, domain=domain, progress=bar)
    if not report.checked or not report.other_checked:
        # `--against prod` opens the "prod" segment, not "production": nothing there.
        empty = report.env if not report.checked else report.other_env
        raise NotFound(f"{empty} holds no secrets in this scope: nothing to compare "
                       "(environment names are path segments: prod is not production)")
    if as_json:
        emit_json(report.to_dict())
    elif report.found:
        table(["secret", f"same value in {report.other_env}", "same name"],
              [(r.path, r.other_path, "yes" if r.same_name else "no")
               for r in report.found])
        warn(f"{len(report.found)} value(s) of {report.env} are also in "
             f"{report.other_env}: rotate them in {report.env} (keysafe rotate), and give "
             f"{report.other_env} its own")
    else:
        say(f"no value of {report.env} ({report.checked} checked) is in "
            f"{report.other_env} ({report.other_checked} checked)")
    if report.unreadable:
        warn(f"{len(report.unreadable)} secret(s) could not be read and were not compared: "
             + ", ".join(report.unreadable[:5]) + (" ..." if len(report.unreadable) > 5
                                                   else ""))
    if report.found or report.unreadable:
        raise typer.Exit(exitcodes.FINDINGS)


@command
def diff(
    against: Against,
    env: Annotated[str | None, typer.Option(
        "--env", metavar="ENV", help="The environment checked (default: KEYSAFE_ENV, "
        "else ENVIRONMENT, else local): the one being promoted to, usually.",
        show_default=False, callback=segment("env"))] = None,
    org: ScopeOrg = None,
    domain: ScopeDomain = None,
    missing: Annotated[bool, typer.Option(
        "--missing", help="Only the secrets --env lacks (a promotion check): extra ones "
                          "and type differences do not count.")] = False,
    everything: Annotated[bool, typer.Option(
        "--all", help="Show the secrets both hold too.")] = False,
    as_json: Json = False,
) -> None:
    """Which secrets one environment has that another lacks, by org, domain and name.

    Compares names, types and versions, never values (no value is read: two audited
    listings). Exit 0 when the two match; 1 when they differ (with --missing: when
    --env lacks a secret the other has), so a pipeline can check production has every
    secret staging has before promoting."""
    from keysafe.envdiff import diff_envs

    mine_s, theirs_s = _two_envs(env, against)
    with open_manager(settings=mine_s) as mine, open_manager(settings=theirs_s) as theirs:
        report = diff_envs(mine, theirs, org=org, domain=domain)
    found = report.differences(missing_only=missing)
    if as_json:
        emit_json(report.to_dict(missing_only=missing, everything=everything))
    else:
        shown = report.entries if everything else found
        if shown:
            table(["secret", "state", f"{report.env} version", f"{report.other_env} version"],
                  [(f"{e.org}/{e.domain}/{e.name}", e.state,
                    e.here.current_version if e.here else "-",
                    e.there.current_version if e.there else "-") for e in shown])
        what = "lacks" if missing else "differs from"
        if found:
            warn(f"{report.env} {what} {report.other_env} in {len(found)} secret(s)")
        else:
            say(f"{report.env} ({report.count('here')} secrets) "
                f"{'lacks nothing of' if missing else 'matches'} {report.other_env} "
                f"({report.count('there')} secrets)")
        if not report.count("here") or not report.count("there"):
            empty = report.env if not report.count("here") else report.other_env
            warn(f"{empty} holds no secrets in this scope (environment names are path "
                 "segments: prod is not production)")
    if found:
        raise typer.Exit(exitcodes.FINDINGS)
