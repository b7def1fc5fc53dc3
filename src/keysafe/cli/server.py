"""The service: ``serve`` and ``token create | list | revoke``. Tokens are managed in
the local token store the server uses (``$KEYSAFE_HOME/server.db``), or, with
KEYSAFE_SERVER_URL set, through that server's ``POST/GET/DELETE /api/tokens``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from keysafe.cli.options import Env, Json
from keysafe.cli.output import command, emit_json, say, table, warn
from keysafe.cli.reading import load, open_manager, open_remote, store_only

if TYPE_CHECKING:
    from keysafe.config import Settings

token_app = typer.Typer(help="Create, list and revoke API tokens (shown once, stored hashed).",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(token_app, name="token")
    token_app.command("create")(token_create)
    token_app.command("list")(token_list)
    token_app.command("revoke")(token_revoke)


@command
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default "
                                             "KEYSAFE_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default KEYSAFE_PORT, 8787).",
                                             min=0, max=65535)] = None,
    server: Annotated[str, typer.Option(help="ASGI server: granian or uvicorn.")] = "granian",
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1, max=64)] = 1,
    env: Env = None,
    as_json: Json = False,
) -> None:
    """Start the HTTP API and web panel. Prints the URL and, on a fresh store, a first
    admin token (shown once); with --json, one JSON line with both (the token null when
    tokens exist already)."""
    from keysafe.server.run import serve as run

    if server not in ("granian", "uvicorn"):
        raise typer.BadParameter("choose granian or uvicorn", param_hint="'--server'")
    settings = load(env)
    if (host or settings.host) not in ("127.0.0.1", "localhost", "::1"):
        warn("listening beyond loopback: put TLS in front of keysafe (a load balancer or "
             "reverse proxy); tokens travel in every request")
    run(settings, host=host, port=port, server=server, workers=workers, as_json=as_json)


Roles = Annotated[list[str], typer.Option(
    "--role", help="admin, writer, viewer or service (repeat for several).")]
Orgs = Annotated[list[str], typer.Option(
    "--org", help="Org the token covers (repeat for several; '*' for every org), or one "
    "domain of it: ORG/DOMAIN.")]


@command
def token_create(
    name: Annotated[str, typer.Option("--name", help="A label for the token (audit shows "
                                                     "token:NAME).")],
    role: Roles,
    org: Orgs,
    expires_in_days: Annotated[int | None, typer.Option(
        "--expires-in-days", min=1, max=3650, help="Expiry (default: never).")] = None,
    cidr: Annotated[list[str] | None, typer.Option(
        "--cidr", metavar="NETWORK", help="A network the token works from (10.0.0.0/8, "
        "an address; repeat for several): requests from elsewhere are refused. "
        "Default: any address.", show_default=False)] = None,
    env: Env = None,
    as_json: Json = False,
) -> None:
    """Create a token; it is printed once, to stdout, and only its hash is kept.

    With KEYSAFE_SERVER_URL set, the server makes it (POST /api/tokens), within the
    orgs and networks the admin token in KEYSAFE_TOKEN covers."""
    settings = load(env)
    if settings.server_url:
        with open_remote(settings) as remote:
            server_env = remote.info().get("environment")  # checked: the one asked for
            info = remote.client.create_token(name, role, org,
                                              expires_in_days=expires_in_days, cidrs=cidr)
        token = info.pop("token")
        where = f"in the server's {server_env} environment only"
    else:
        token, info = _create_here(settings, name, role, org, expires_in_days, cidr)
        where = f"in the {info.get('env')} environment only (--env / KEYSAFE_ENV)"
    if as_json:
        emit_json({**info, "token": token})
        return
    orgs, cidrs, expires = info.get("orgs"), info.get("cidrs"), info.get("expires_at")
    say(f"created token {info['id']} ({', '.join(info['roles'])}) for "
        f"{'every org' if orgs is None else ', '.join(orgs)} {where}"
        + (f", from {', '.join(cidrs)} only" if cidrs else "")
        + (f", until {_seconds(expires)}" if expires else "")
        + "; it is shown once:")
    typer.echo(token)


def _create_here(settings: Settings, name: str, roles: list[str], orgs: list[str],
                 expires_in_days: int | None, cidrs: list[str] | None
                 ) -> tuple[str, dict[str, Any]]:
    """A token made in this machine's token store: (token, its record)."""
    from datetime import timedelta

    from keysafe.manager.manager import default_actor
    from keysafe.server.auth import check_domain_scopes
    from keysafe.server.tokenstore import open_token_store, record_event

    with open_manager(settings=settings) as mgr:
        check_domain_scopes(orgs, mgr.naming.fields)
        store = open_token_store(settings, mgr.state or mgr.backend)
        try:
            token, info = store.create(
                name=name, roles=roles, orgs=None if "*" in orgs else orgs,
                created_by=f"cli:{default_actor()}",
                ttl=timedelta(days=expires_in_days) if expires_in_days else None,
                cidrs=cidrs)
        finally:
            store.close()
        record_event(mgr, "token_create", info)
    return token, info.to_dict()


@command
def token_list(env: Env = None, as_json: Json = False) -> None:
    """Every token: id, name, roles, orgs, created, expiry and revocation (never the token).

    With KEYSAFE_SERVER_URL set, the server's tokens within the orgs the admin token in
    KEYSAFE_TOKEN covers (GET /api/tokens)."""
    settings = load(env)
    if settings.server_url:
        with open_remote(settings) as remote:
            remote.info()
            tokens = remote.client.tokens()
    else:
        from keysafe.server.tokenstore import open_token_store

        store = open_token_store(store_only(settings))
        try:
            tokens = [t.to_dict() for t in store.list()]
        finally:
            store.close()
    if as_json:
        emit_json(tokens)
        return
    table(["id", "name", "roles", "orgs", "env", "networks", "created", "expires", "revoked"],
          [(t["id"], t["name"], ",".join(t["roles"]),
            "*" if t["orgs"] is None else ",".join(t["orgs"]), t.get("env") or "any",
            ",".join(t["cidrs"]) if t.get("cidrs") else "any", _seconds(t["created_at"]),
            _seconds(t.get("expires_at")), _seconds(t.get("revoked_at")))
           for t in tokens])


def _seconds(iso: str | None) -> str:
    """An ISO time to the second ("-" for none)."""
    from datetime import datetime

    return datetime.fromisoformat(iso).isoformat(timespec="seconds") if iso else "-"


@command
def token_revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id.")],
    env: Env = None,
    as_json: Json = False,
) -> None:
    """Revoke a token at once (a token revoked already stays as it was).

    With KEYSAFE_SERVER_URL set, the server revokes it (DELETE /api/tokens/ID)."""
    from keysafe.naming import TOKEN_ID, token_not_found

    if not TOKEN_ID.fullmatch(token_id):  # a pasted token is never repeated, nor sent
        from keysafe.errors import NotFound

        raise NotFound(token_not_found(token_id))
    settings = load(env)
    if settings.server_url:
        with open_remote(settings) as remote:
            remote.info()
            info = remote.client.revoke_token(token_id)
        already = info.pop("already_revoked")
    else:
        already, info = _revoke_here(settings, token_id)
    if as_json:
        emit_json(info)
    elif already:
        say(f"token {info['id']} ({info['name']}) was already revoked, at "
            f"{_seconds(info['revoked_at'])}")
    else:
        say(f"revoked token {info['id']} ({info['name']})")


def _revoke_here(settings: Settings, token_id: str) -> tuple[bool, dict[str, Any]]:
    """Revoke in this machine's token store: (revoked before already, the record)."""
    from keysafe.server.tokenstore import open_token_store, record_event

    with open_manager(settings=settings) as mgr:
        store = open_token_store(settings, mgr.state or mgr.backend)
        try:
            before = store.get(token_id)
            if not store.works_here(before):
                from keysafe.errors import NotFound

                raise NotFound(f"token {token_id} belongs to the {before.env} environment: "
                               "revoke it there")
            info = store.revoke(token_id) if before.revoked_at is None else before
        finally:
            store.close()
        if before.revoked_at is None:
            record_event(mgr, "token_revoke", info)
    return before.revoked_at is not None, info.to_dict()
