"""``keysafe check-reuse``: values one environment shares with another (spec 003: never
use production secrets in development). The comparison is ``keysafe.reuse``."""

from __future__ import annotations

from typing import Annotated

import typer

from keysafe.cli import exitcodes
from keysafe.cli.options import Domain, Json, Org, segment
from keysafe.cli.output import command, emit_json, progress, say, table, warn
from keysafe.cli.reading import CLIENT


def register(app: typer.Typer) -> None:
    app.command("check-reuse")(check_reuse)


@command
def check_reuse(
    against: Annotated[str, typer.Option(
        "--against", metavar="ENV", help="The environment to compare with (development, "
        "staging...): its keysafe.toml profile, as `migrate --from` takes it.",
        show_default=False, callback=segment("env"))],
    env: Annotated[str | None, typer.Option(
        "--env", metavar="ENV", help="The environment checked (default: KEYSAFE_ENV, "
        "else ENVIRONMENT, else local); production, usually.", show_default=False,
        callback=segment("env"))] = None,
    org: Org = None,
    domain: Domain = None,
    as_json: Json = False,
) -> None:
    """Find values one environment shares with another, by name and across names.

    Reads every current value of both (each an audited read), compares keyed digests
    of them (never the values themselves, which are not kept), and names the secrets
    whose values match: a production key in development is one leaked laptop away.
    Exit 0 when nothing is shared, 1 when something is."""
    from keysafe.cli.reading import load
    from keysafe.manager.manager import SecretManager
    from keysafe.migration import profile_settings
    from keysafe.reuse import find_reuse

    checked_env = env or load().env
    if checked_env.lower() == against.lower():
        raise typer.BadParameter("--against names the environment being checked",
                                 param_hint="'--against'")
    with SecretManager.from_settings(profile_settings(checked_env)) as mine, \
            SecretManager.from_settings(profile_settings(against)) as theirs:
        mine.client = theirs.client = CLIENT
        with progress("comparing values", quiet=as_json) as bar:
            report = find_reuse(mine, theirs, org=org, domain=domain, progress=bar)
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
    if report.found:
        raise typer.Exit(exitcodes.FINDINGS)
