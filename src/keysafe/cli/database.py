"""``keysafe db``: the PostgreSQL store's schema (the embedded store manages its own),
``keysafe db compact``, which gives back the space an audit archive freed, and
``keysafe db backup`` / ``restore`` for the files in KEYSAFE_HOME (keysafe.backup)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keysafe.cli.options import Env, Json, Yes
from keysafe.cli.output import command, emit_json, progress, say, table, warn
from keysafe.cli.reading import load, open_manager, store_only
from keysafe.errors import ConfigError

db_app = typer.Typer(help="The store's database: the PostgreSQL schema's status and "
                          "upgrade (run once per deploy, before the new replicas start), "
                          "compact (after an audit archive), and backup and restore of "
                          "the files in KEYSAFE_HOME.",
                     no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    db_app.command("upgrade")(db_upgrade)
    db_app.command("status")(db_status)
    db_app.command("compact")(db_compact)
    db_app.command("backup")(db_backup)
    db_app.command("restore")(db_restore)


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


@command
def db_backup(
    dest: Annotated[Path, typer.Argument(
        metavar="DIR", help="A new (or empty) directory for the backup, outside "
                            "KEYSAFE_HOME.", show_default=False)],
    verify: Annotated[bool, typer.Option(
        "--verify", help="Also check the copy's audit chain and decrypt every current "
                         "value with the configured master key.")] = False,
    env: Env = None,
    as_json: Json = False,
) -> None:
    """Copy the store in KEYSAFE_HOME to DIR while servers keep running: a consistent
    copy of each database file (the store, the server's tokens, a cloud store's audit
    chain) and a manifest with their SHA-256 and the master key ids they need. Never a
    value in the clear, never the master key: back that up separately. Recorded in the
    audit log as `db_backup` (in the copy too)."""
    from keysafe import backup

    settings = store_only(load(env))

    def record(where: Path, outcome: str) -> None:
        with open_manager(settings=settings) as mgr:
            mgr.record("db_backup", None, outcome, durable=True,
                       detail={"to": str(where.resolve())})

    with progress("decrypting every value of the copy", quiet=as_json or not verify) as bar:
        res = backup.backup(settings, dest, verify=verify, progress=bar, record=record)
    if as_json:
        emit_json(res.to_dict())
    else:
        table(["file", "bytes", "sha256"],
              [[n, f"{f['bytes']:,}", f["sha256"][:16] + "..."] for n, f in res.files.items()])
        held = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in res.counts.items())
        say(f"backed up to {res.where} in {res.seconds:.1f} s ({held})")
        if res.verified is not None:
            say(f"verified: audit chain of {res.verified['audit_records']:,} records intact, "
                f"{res.verified['values']:,} values decrypt")
        if res.key_ids:
            say(f"it needs master key id(s) {', '.join(res.key_ids)}: keep the key with it")
    if res.missing_keys:
        warn(f"the configured key ring lacks {', '.join(res.missing_keys)}, which this "
             "backup needs: without those keys it cannot be read")


@command
def db_restore(
    src: Annotated[Path, typer.Argument(
        metavar="DIR", help="A directory made by `keysafe db backup`.", show_default=False)],
    yes: Yes = False,
    env: Env = None,
    as_json: Json = False,
) -> None:
    """Replace the files in KEYSAFE_HOME with a backup's. Checked first, changing nothing
    if anything is wrong: every file against the manifest's SHA-256, the kind of store,
    and that the configured master key ring holds every key id the backup needs. The
    files replaced move to KEYSAFE_HOME/pre-restore-<time>/. Stop `keysafe serve` (and
    every program using this store) first: a running server makes it refuse."""
    from keysafe import backup

    settings = store_only(load(env))
    manifest = backup.read_manifest(src)
    if not yes:
        typer.confirm(f"Replace the store in {settings.home} with the backup of "
                      f"{manifest.get('created_at')}? Changes made since are set aside, "
                      "not merged.", abort=True, err=True)
    res = backup.restore(settings, src)
    with open_manager(settings=settings) as mgr:
        # The chain now continues from the backup's head: say which head it replaced.
        mgr.record("db_restore", None, "ok", durable=True,
                   detail={"from": str(src.resolve()),
                           "backup_created_at": res.backup_created_at,
                           "aside": str(res.aside) if res.aside else None,
                           "replaced_head": res.replaced_head})
        check = mgr.audit_verify()
    res.audit.update(ok=check.ok, checked=check.checked)
    if as_json:
        emit_json(res.to_dict())
        return
    say(f"restored {', '.join(res.files)} from the backup of {res.backup_created_at}")
    if settings.backend != "sqlite":
        warn(f"the secrets themselves are in {settings.backend} and were not changed: only "
             "the local audit chain and the server's tokens were restored")
    if "server.db" in res.files:
        say("tokens are as they were at the backup: revoke again any revoked since")
    if res.aside is not None:
        say(f"the files it replaced are in {res.aside}")
    if res.audit:
        say(f"audit chain: {res.audit['checked']:,} records, "
            f"{'intact' if res.audit['ok'] else 'BROKEN: run keysafe audit verify'}")
