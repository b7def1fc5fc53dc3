"""``keysafe db``: the PostgreSQL store's schema (the embedded store manages its own),
and ``keysafe db compact``, which gives back the space an audit archive freed."""

from __future__ import annotations

from typing import Any

import typer

from keysafe.cli.options import Env, Json
from keysafe.cli.output import command, emit_json, say
from keysafe.cli.reading import load, open_manager
from keysafe.errors import ConfigError

db_app = typer.Typer(help="The store's database: the PostgreSQL schema's status and "
                          "upgrade (run once per deploy, before the new replicas start), "
                          "and compact (after an audit archive).",
                     no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    db_app.command("upgrade")(db_upgrade)
    db_app.command("status")(db_status)
    db_app.command("compact")(db_compact)


def _report(env: str | None, *, upgrade_now: bool) -> dict[str, Any]:
    from keysafe.config import uses_state_database

    settings = load(env)
    url = settings.state_database_url
    if url and uses_state_database(settings):
        # A cloud store's state database (audit chain, tokens): the same schema.
        from keysafe.backends.pg_schema import status

        return {"backend": settings.backend, "state_database": True,
                **status(url, upgrade_now=upgrade_now)}
    if settings.backend != "postgres":
        return {"backend": settings.backend, "schema_version": None, "applied": [],
                "note": f"the {settings.backend} backend manages its own schema; "
                        "nothing to do"}
    if not settings.database_url:
        raise ConfigError("the postgres backend needs KEYSAFE_DATABASE_URL")
    from keysafe.backends.pg_schema import status

    return {"backend": "postgres", **status(settings.database_url, upgrade_now=upgrade_now)}


def _say(r: dict[str, Any], verb: str) -> None:
    if r.get("note"):
        say(r["note"])
    elif r["applied"]:
        say(f"{r['database']}: schema {r['before']} -> {r['schema_version']} "
            f"({verb} {', '.join(map(str, r['applied']))})")
    else:
        state = "up to date" if r["schema_version"] >= r["latest"] else \
            f"behind (this keysafe needs {r['latest']}; run `keysafe db upgrade`)"
        say(f"{r['database']}: schema version {r['schema_version']}, {state}")


@command
def db_upgrade(env: Env = None, as_json: Json = False) -> None:
    """Apply missing schema migrations. Safe to run from several places at once: an
    advisory lock makes the second wait, then find nothing to do."""
    r = _report(env, upgrade_now=True)
    if as_json:
        emit_json(r)
    else:
        _say(r, "applied")


@command
def db_status(env: Env = None, as_json: Json = False) -> None:
    """Show the schema version of the store's database and whether it needs upgrading."""
    r = _report(env, upgrade_now=False)
    if as_json:
        emit_json(r)
    else:
        _say(r, "pending")


@command
def db_compact(env: Env = None, as_json: Json = False) -> None:
    """Give back the space that removed records left, after `keysafe audit archive`.

    An SQLite file (the embedded store, or the audit file beside a cloud store) is
    rewritten with VACUUM: it shrinks to what it holds; writers wait while it runs, up
    to their busy timeout (readers do not); it needs free space twice what the file
    holds (temporary directory and WAL). On PostgreSQL the audit table is VACUUM
    ANALYZEd (the space is reused; the files keep their size).
    Recorded in the audit log as `compact`."""
    with open_manager(env) as mgr:
        res = mgr.compact()
    if res is None:
        r: dict[str, Any] = {"backend": mgr.backend.name, "compacted": False,
                             "note": f"the {mgr.backend.name} store has nothing to compact"}
        if as_json:
            emit_json(r)
        else:
            say(r["note"])
        return
    if as_json:
        emit_json({"compacted": True, **res.to_dict()})
        return
    mb = 1024 * 1024
    say(f"compacted {res.where}: {res.bytes_before / mb:,.1f} MiB -> "
        f"{res.bytes_after / mb:,.1f} MiB in {res.seconds:.1f} s")
    if not res.settled:
        say("a reader on an older snapshot kept the copy from being checkpointed back: "
            "the file reaches its compacted size at a later checkpoint")
