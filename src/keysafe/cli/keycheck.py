"""``keysafe check-key``: ask each stored key's provider whether it still works
(spec 004's "verify the old secret still works"). The checks themselves are
``SecretManager.check_key``; this module picks the secrets and renders the verdicts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from keysafe.cli import exitcodes
from keysafe.cli.options import Domain, Env, Json, Org
from keysafe.cli.output import command, emit_json, progress, say, table
from keysafe.cli.reading import open_secrets

if TYPE_CHECKING:
    from keysafe.keycheck import KeyCheck

#: Verdict -> exit status when it is the worst of the run (rejected beats unknown).
_EXIT = {"rejected": exitcodes.USAGE, "unknown": exitcodes.UNAVAILABLE,
         "unsupported": exitcodes.UNSUPPORTED, "off": exitcodes.UNSUPPORTED}
_ORDER = ("rejected", "unknown", "unsupported", "off")
_STYLE = {"valid": "green", "rejected": "red", "unknown": "yellow"}


def register(app: typer.Typer) -> None:
    app.command("check-key")(check_key)


@command
def check_key(
    names: Annotated[list[str] | None, typer.Argument(
        metavar="[NAME]...", help="Secret names (with --org), or full paths.",
        show_default=False)] = None,
    org: Org = None,
    domain: Domain = None,
    env: Env = None,
    every: Annotated[bool, typer.Option(
        "--all", help="Every secret of --org (and --domain) that has a live check.")] = False,
    as_json: Json = False,
) -> None:
    """Ask each key's provider whether the stored key works (docs/key-checks.md).

    Sends the key to its provider's check URL only (OpenAI, Anthropic, GitHub, Slack,
    Stripe, ...; a catalog file can add or redirect checks) and never prints it. Exit 0
    when every key is valid; 2 when a provider refused one; 7 when a provider could not
    give a verdict (unreachable, throttled); 9 when no check is known or checks are off
    (KEYSAFE_KEY_CHECKS). With KEYSAFE_SERVER_URL set, the server asks the providers
    (POST .../check, a writer's token).
    """
    if every == bool(names):
        raise typer.BadParameter("name the secrets, or give --all with --org",
                                 param_hint="'NAME' / '--all'")
    if every and org is None:
        raise typer.BadParameter("--all needs --org", param_hint="'--all'")
    from keysafe.cli.remote import RemoteManager

    rows: list[tuple[str, KeyCheck]] = []
    with open_secrets(env) as mgr:
        # (name, org, domain) of each secret to check.
        picked: list[tuple[str, str | None, str | None]] = []
        if every:
            assert org is not None
            if isinstance(mgr, RemoteManager):  # the server asks the providers
                picked.extend(mgr.stored_checks(org, domain))
            else:
                from keysafe.keycheck import stored

                picked.extend(stored(mgr, org, domain))  # every domain unless --domain
        else:
            for name in names or []:
                mgr.path(name, org, domain=domain)  # a bad name fails before any call
                picked.append((name, org, domain))
        with progress("checking keys", quiet=as_json or len(picked) < 2) as update:
            for i, (name, in_org, in_domain) in enumerate(picked):
                rows.append((mgr.path(name, in_org, domain=in_domain),
                             mgr.check_key(name, None, in_org, domain=in_domain)))
                update(i + 1, len(picked))
    if as_json:
        emit_json([{"path": p, **c.to_dict()} for p, c in rows])
    elif rows:
        from rich.text import Text

        table(["path", "provider", "verdict", "detail"],
              [(p, c.provider or "-", Text(c.outcome, style=_STYLE.get(c.outcome, "dim")),
                c.detail) for p, c in rows])
    else:
        say("no secret with a live check" + (f" in org {org}" if org else ""))
    outcomes = {c.outcome for _, c in rows}
    worst = next((o for o in _ORDER if o in outcomes), None)
    if worst is not None:
        raise typer.Exit(_EXIT[worst])
