"""``keysafe trust ls | check``: the workload-identity trusts a server would apply
(KEYSAFE_JWT_TRUST_FILE), and what they make of one token."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from keysafe.cli import exitcodes
from keysafe.cli.options import Env, Json
from keysafe.cli.output import command, emit_json, say, table
from keysafe.cli.reading import load
from keysafe.errors import ConfigError, InvalidValue

if TYPE_CHECKING:
    from keysafe.server.trust import TrustVerifier

trust_app = typer.Typer(help="Workload identity: which CI and cluster tokens a server "
                             "accepts (KEYSAFE_JWT_TRUST_FILE), and what it makes of one.",
                        no_args_is_help=True)

TrustFile = Annotated[Path | None, typer.Option(
    "--file", help="The trust file (default: KEYSAFE_JWT_TRUST_FILE).")]


def register(app: typer.Typer) -> None:
    app.add_typer(trust_app, name="trust")
    trust_app.command("ls")(trust_ls)
    trust_app.command("check")(trust_check)


def _verifier(file: Path | None, env: str | None) -> tuple[TrustVerifier, str]:
    from keysafe.server.trust import trust_verifier

    settings = load(env)
    if file is not None:
        settings = settings.with_overrides(jwt_trust_file=str(file))
    if not settings.jwt_trust_file:
        raise ConfigError("no trust file: set KEYSAFE_JWT_TRUST_FILE or give --file")
    verifier = trust_verifier(settings)
    assert verifier is not None
    return verifier, settings.env


@command
def trust_ls(file: TrustFile = None, env: Env = None, as_json: Json = False) -> None:
    """The trusts of the file, checked as a server checks the file at start (the
    issuers' keys are not fetched: `keysafe trust check` does that): who may present
    tokens, and what those tokens may do."""
    verifier, here = _verifier(file, env)
    rows = [t.to_dict() for t in verifier.trusts]
    if as_json:
        emit_json({"env": here, "trusts": rows})
        return
    table(["trust", "issuer", "audience", "subject / claims", "roles", "scopes", "env",
           "keys from"],
          [(r["name"], r["issuer"], ", ".join(r["audience"]),
            "\n".join([*(f"sub={s}" for s in r["subject"]),
                       *(f"{k}={' | '.join(v)}" for k, v in r["claims"].items()),
                       *([f"audited: {', '.join(r['audit_claims'])}"]
                         if r["audit_claims"] else [])]) or "any",
            ", ".join(r["roles"]), ", ".join(r["scopes"]),
            ", ".join(r["env"]) or "any", r["keys_from"]) for r in rows],
          title=f"Trusts (this environment: {here})")


@command
def trust_check(
    source: Annotated[str, typer.Argument(
        metavar="TOKEN_FILE", help="A file holding the token, or - for stdin "
                                   "(never the token itself on the command line).")] = "-",
    file: TrustFile = None,
    env: Env = None,
    as_json: Json = False,
) -> None:
    """What a server would make of a workload token: the trust that accepts it and the
    identity it gets, or why each trust refuses it. Fetches the issuers' keys as the
    server does. Exit 0 when accepted, 4 when refused. The token is never printed."""
    verifier, here = _verifier(file, env)
    where = "stdin" if source == "-" else source
    try:
        # Bytes, decoded strictly: stdin's own decoding may let undecodable bytes through
        # (surrogateescape), to fail later as an unexpected error.
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
        raw = data.decode("utf-8")
    except OSError as exc:
        raise InvalidValue(f"cannot read {source}: "
                           f"{exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        # Never the decoder's text: it quotes a byte of what may be the token.
        raise InvalidValue(f"{where} is not UTF-8 text, so it holds no token") from None
    token = raw.strip()
    if not token:
        raise InvalidValue(f"{where} holds no token")
    verifier.start()  # fetch the keys now, as a server does when it starts
    decision = verifier.check(token)
    ident = decision.identity
    if as_json:
        emit_json({"env": here, "accepted": ident is not None, "trust": decision.trust,
                   "identity": ident.to_dict() if ident is not None else None,
                   "refused_by": [{"trust": t or None, "reason": why}
                                  for t, why in decision.reasons]})
    else:
        if decision.reasons:
            table(["trust", "why it does not apply"],
                  [(t or "-", why) for t, why in decision.reasons],
                  title="Refused by")
        if ident is not None:
            d = ident.to_dict()
            say(f"accepted by trust {decision.trust!r} as {ident.principal}: roles "
                f"{', '.join(d['roles'])}; scopes {', '.join(d['orgs'] or ['*'])}")
        else:
            say("refused: no trust accepts this token")
    if ident is None:
        raise typer.Exit(exitcodes.PERMISSION_DENIED)
