"""The PostgreSQL store's schema and its migrations (``keysafe db upgrade``).

Migrations are numbered and additive, so replicas of the previous release keep working
while a deploy rolls out. ``upgrade`` holds a session advisory lock while it runs: two
replicas (or two migration jobs) starting at once apply each step exactly once; the
second waits, then finds nothing to do.
"""

from __future__ import annotations

import time
from typing import Any

from keysafe.errors import ConfigError

#: Advisory lock keys (pg_advisory_lock takes a bigint); fixed, so every replica agrees.
MIGRATE_LOCK = 0x6B65797361666501   # "keysafe" + 1
WRITE_LOCK = 0x6B65797361666502     # serialises writes: check-and-set and the audit chain
JOB_LOCK_BASE = 0x6B657973616600    # + crc of the job name: one lock per scheduled job

#: Channel on which every committed change is announced (payload: the path, "*" for all,
#: or "token:<id>"); replicas drop what they cached for it.
CHANNEL = "keysafe_changes"

GENESIS = "0" * 64

# Paths compare bytewise (COLLATE "C"), as in SQLite, so prefix range scans and sorting
# do not depend on the server's locale.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "secrets, versions, audit chain, metadata, tokens, job leases", [
        """CREATE TABLE secrets (
             path text COLLATE "C" PRIMARY KEY,
             current_version integer NOT NULL,
             created_at double precision NOT NULL, updated_at double precision NOT NULL,
             created_by text, updated_by text,
             description text, secret_type text, tags text,
             deleted_at double precision, last_rotated double precision,
             rotation_days integer, expires_at double precision,
             key_id text, wrapped_key bytea, ciphertext bytea)""",
        """CREATE TABLE versions (
             path text COLLATE "C" NOT NULL, version integer NOT NULL,
             created_at double precision NOT NULL, created_by text,
             key_id text, wrapped_key bytea, ciphertext bytea,
             destroyed boolean NOT NULL DEFAULT false,
             PRIMARY KEY (path, version))""",
        """CREATE TABLE audit (
             seq bigint PRIMARY KEY,
             ts bigint NOT NULL, actor text NOT NULL, action text NOT NULL,
             path text COLLATE "C", version integer, outcome text NOT NULL,
             org text, client text, request_id text, detail text,
             prev_hash text NOT NULL, hash text NOT NULL)""",
        "CREATE INDEX audit_path ON audit (path)",
        "CREATE INDEX audit_ts ON audit (ts)",
        """CREATE TABLE audit_head (
             id integer PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL, hash text NOT NULL)""",
        f"INSERT INTO audit_head VALUES (1, 0, '{GENESIS}')",  # noqa: S608 - a constant
        "CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)",
        """CREATE TABLE tokens (
             id text PRIMARY KEY, digest text NOT NULL, name text NOT NULL,
             roles text NOT NULL, orgs text, created_at double precision NOT NULL,
             created_by text NOT NULL, expires_at double precision,
             revoked_at double precision, last_used_at double precision)""",
        """CREATE TABLE jobs (
             name text PRIMARY KEY, last_run double precision,
             next_due double precision NOT NULL, holder text)""",
    ]),
    (2, "rate limits shared by replicas (live key checks)", [
        "CREATE TABLE rate_events (bucket text NOT NULL, ts double precision NOT NULL)",
        "CREATE INDEX rate_events_bucket ON rate_events (bucket, ts)",
    ]),
    (3, "tokens bound to the environment they were made in", [
        "ALTER TABLE tokens ADD COLUMN env text",
    ]),
    (4, "tokens bound to networks (the addresses they work from)", [
        "ALTER TABLE tokens ADD COLUMN cidrs text",
    ]),
]
LATEST = MIGRATIONS[-1][0]

_VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS keysafe_schema (version integer PRIMARY KEY, "
                  "description text NOT NULL, applied_at double precision NOT NULL)")


def current_version(conn: Any) -> int:
    """The schema version of the database (0: keysafe has never run there)."""
    row = conn.execute("SELECT to_regclass('keysafe_schema')").fetchone()
    if row is None or row[0] is None:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM keysafe_schema").fetchone()
    return int(row[0])


def upgrade(conn: Any) -> tuple[int, int]:
    """Apply the missing migrations; returns (version before, version after).

    ``conn`` is an autocommit psycopg connection. Each step commits with its version row,
    so an interrupted upgrade resumes at the step that did not finish.
    """
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
    try:
        conn.execute(_VERSION_TABLE)
        before = current_version(conn)
        for version, description, statements in MIGRATIONS:
            if version <= before:
                continue
            with conn.transaction():
                for stmt in statements:
                    conn.execute(stmt)
                conn.execute("INSERT INTO keysafe_schema VALUES (%s, %s, %s)",
                             (version, description, time.time()))
        return before, max(before, LATEST)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))


def require_current(conn: Any, *, auto_upgrade: bool) -> None:
    """Make sure the schema is at least this release's, upgrading it if allowed."""
    have = current_version(conn)
    if have >= LATEST:
        return
    if not auto_upgrade:
        raise ConfigError(
            f"the database schema is at version {have}, this keysafe needs {LATEST}: run "
            "`keysafe db upgrade` (or set KEYSAFE_DB_AUTO_UPGRADE=1)")
    upgrade(conn)


def status(url: str, *, upgrade_now: bool = False) -> dict[str, Any]:
    """Connect to ``url`` and report (or bring up to date) the schema version."""
    from keysafe.backends._sdk import require_sdk
    from keysafe.backends.postgres import (
        check_userinfo,
        first_line,
        hide_password,
        redact_url,
    )
    from keysafe.errors import BackendUnavailable

    psycopg = require_sdk("psycopg", "postgres")
    check_userinfo(url)
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            before = current_version(conn)
            after = upgrade(conn)[1] if upgrade_now else before
            server = conn.info.server_version
    except psycopg.Error as exc:
        raise BackendUnavailable(f"cannot reach PostgreSQL at {redact_url(url)}: "
                                 f"{hide_password(first_line(exc), url)}") from exc
    return {"database": redact_url(url), "server_version": server, "before": before,
            "schema_version": after, "latest": LATEST,
            "applied": [v for v, _, _ in MIGRATIONS if before < v <= after]}
