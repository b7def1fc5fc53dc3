"""``keysafe policy``: print the least-privilege access policy for the configured prefix.
The document comes from ``keysafe.policy``; this module only renders it."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from keysafe.cli.options import Domain, Env, Json
from keysafe.cli.output import command, console, emit_json, say
from keysafe.cli.reading import load

_BACKENDS = "aws-sm, aws-ssm, vault, gcp or azure"


def register(app: typer.Typer) -> None:
    app.command("policy")(policy)


@command
def policy(
    backend: Annotated[str, typer.Option(
        "--backend", metavar="STORE", help=f"The store: {_BACKENDS}.", show_default=False)],
    read_only: Annotated[bool, typer.Option(
        "--read-only", help="Only what reading needs: get, describe, list.")] = False,
    org: Annotated[str | None, typer.Option(
        "--org", help="Limit the policy to one organisation (default: every org of the "
                      "configured app and environment).", show_default=False)] = None,
    domain: Domain = None,
    env: Env = None,
    kms_key: Annotated[str | None, typer.Option(
        "--kms-key", metavar="KEY",
        help="aws-sm/aws-ssm: a customer-managed KMS key (ARN, key id or alias/NAME) to "
             "allow (default: the profile's kms_key_id).", show_default=False)] = None,
    mount: Annotated[str | None, typer.Option(
        "--mount", help="vault: the KV v2 mount (default: the profile's, else secret).",
        show_default=False)] = None,
    project: Annotated[str | None, typer.Option(
        "--project", metavar="NUMBER",
        help="gcp: the project number used in IAM conditions.", show_default=False)] = None,
    principal: Annotated[str | None, typer.Option(
        "--principal", metavar="WHO",
        help="gcp: the member (serviceAccount:...); azure: the principal id.",
        show_default=False)] = None,
    as_json: Json = False,
) -> None:
    """Print the least-privilege policy for the configured naming prefix.

    IAM JSON for aws-sm and aws-ssm, HCL for vault, role bindings for gcp, a role
    assignment for azure. The document goes to stdout (ready to save to a file), notes
    to stderr.
    """
    from keysafe import policy as policies

    if backend not in policies.BACKENDS:
        raise typer.BadParameter(f"{backend!r} is not one of {_BACKENDS}",
                                 param_hint="'--backend'")
    if domain is not None and org is None:
        raise typer.BadParameter("--domain needs --org", param_hint="'--domain'")
    doc = policies.for_settings(
        load(env), backend, read_only=read_only, org=org, domain=domain, kms_key=kms_key,
        mount=mount, project=project, member=principal, principal=principal)
    if as_json:
        emit_json(doc.to_dict())
        return
    out = console(False)
    if out.is_terminal:
        from rich.syntax import Syntax

        out.print(Syntax(doc.text().rstrip("\n"), "terraform" if doc.language == "hcl"
                         else "json", background_color="default"))
    else:
        sys.stdout.write(doc.text())
        sys.stdout.flush()
    scope = f"org {org}" + (f", domain {domain}" if domain else "") if org else "every org"
    say(f"{'read-only ' if read_only else ''}{backend} policy for {doc.prefix or '(all)'} "
        f"({scope})")
    for note in doc.notes:
        say(f"note: {note}")
