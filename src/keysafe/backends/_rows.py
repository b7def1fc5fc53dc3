"""Row shapes shared by the SQL stores (embedded SQLite and PostgreSQL): the metadata
columns, the query that reads them, and the conversions both ways. Timestamps are
stored as seconds since the epoch; tags as sorted JSON."""

from __future__ import annotations

import builtins
import functools
import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from keysafe.backends.base import DueWindow, WriteContext, not_found, utc
from keysafe.models import MetadataUpdate, SecretMetadata, VersionInfo

META_COLS = ("description", "secret_type", "tags", "rotation_days", "expires_at",
             "last_rotated")
SELECT_META = (
    "SELECT s.path, s.current_version, s.created_at, s.updated_at, s.created_by, "
    "s.updated_by, s.description, s.secret_type, s.tags, s.deleted_at, s.last_rotated, "
    "s.rotation_days, s.expires_at, "
    "(SELECT count(*) FROM versions v WHERE v.path = s.path) FROM secrets s"
)


def meta_from_row(row: tuple[Any, ...]) -> SecretMetadata:
    created = utc(row[2])
    updated = utc(row[3])
    assert created is not None
    assert updated is not None
    return SecretMetadata(
        path=row[0], current_version=row[1], created_at=created, updated_at=updated,
        created_by=row[4], updated_by=row[5], description=row[6], secret_type=row[7],
        tags=json.loads(row[8]) if row[8] else {}, deleted_at=utc(row[9]),
        last_rotated=utc(row[10]), rotation_days=row[11], expires_at=utc(row[12]),
        versions=row[13],
    )


#: The columns ``version_info`` reads, in order.
VERSION_COLS = "version, created_at, created_by, destroyed, key_id"


def version_info(r: tuple[Any, ...]) -> VersionInfo:
    created = utc(r[1])
    assert created is not None
    return VersionInfo(r[0], created, r[2], bool(r[3]), r[4])


def meta_values(meta: MetadataUpdate) -> dict[str, Any]:
    """The columns a metadata update sets (None fields are left alone)."""
    out: dict[str, Any] = {}
    for col in META_COLS:
        v = getattr(meta, col)
        if v is None:
            continue
        if col == "tags":
            v = json.dumps(v, sort_keys=True)
        elif isinstance(v, datetime):
            v = v.timestamp()
        out[col] = v
    return out


def current_row_write(exists: bool, path: str, version: int, now: float, actor: str,
                      sealed: Any, extra: dict[str, Any], ph: str) -> tuple[str, list[Any]]:
    """The statement (and arguments) that makes ``version`` the current one in the
    ``secrets`` row: an INSERT for a new secret, else an UPDATE (undeleting it).
    ``ph`` is the driver's placeholder."""
    sql = _current_row_sql(exists, tuple(extra), ph)
    if not exists:
        return sql, [path, version, now, now, actor, actor, sealed.key_id, sealed.wrapped_key,
                     sealed.ciphertext, *extra.values()]
    return sql, [version, now, actor, sealed.key_id, sealed.wrapped_key, sealed.ciphertext,
                 *extra.values(), path]


@functools.lru_cache(maxsize=256)
def _current_row_sql(exists: bool, extra: tuple[str, ...], ph: str) -> str:
    """Built once per shape (which metadata columns a write sets), not per write."""
    if not exists:
        cols = ["path", "current_version", "created_at", "updated_at", "created_by",
                "updated_by", "key_id", "wrapped_key", "ciphertext", *extra]
        return (f"INSERT INTO secrets ({', '.join(cols)}) "  # noqa: S608 - column names
                f"VALUES ({', '.join([ph] * len(cols))})")
    sets = "".join(f", {k} = {ph}" for k in extra)
    return (f"UPDATE secrets SET current_version = {ph}, updated_at = {ph}, "  # noqa: S608
            f"updated_by = {ph}, deleted_at = NULL, key_id = {ph}, wrapped_key = {ph}, "
            f"ciphertext = {ph}{sets} WHERE path = {ph}")


class SQLStore:
    """What the SQL stores (embedded SQLite and PostgreSQL) do with the same statements:
    describe, list, list_due, versions, destroy, restore, purge, deleted_before and
    update_metadata. Each store supplies ``PH`` (its driver's placeholder), ``_read``,
    ``transaction``, ``_exec`` (a statement in this thread's write transaction),
    ``_changed`` (tell other processes, in the transaction) and ``_shred`` (after a
    commit that removed key material). Paths are ranges on the primary key:
    prefix <= path < prefix + U+10FFFF."""

    PH = "?"

    def _read(self, sql: str, args: Sequence[Any], *, many: bool = False) -> Any:
        raise NotImplementedError

    def _exec(self, sql: str, args: Sequence[Any]) -> Any:
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _changed(self, path: str) -> None:
        """Nothing to tell by default (one process owns the store)."""

    def _shred(self) -> None:
        """Nothing left behind by default (the store keeps no old page images)."""

    def describe(self, path: str, *, include_deleted: bool = False) -> SecretMetadata:
        row = self._read(f"{SELECT_META} WHERE s.path = {self.PH}", (path,))
        if row is None or (row[9] is not None and not include_deleted):
            raise not_found(path)
        return meta_from_row(row)

    def list(self, prefix: str, *,
             include_deleted: bool = False) -> builtins.list[SecretMetadata]:
        return self._range(prefix, "" if include_deleted else " AND s.deleted_at IS NULL", ())

    def list_due(self, prefix: str, window: DueWindow) -> builtins.list[SecretMetadata]:
        cond, args = window.sql(self.PH)
        return self._range(prefix, f" AND s.deleted_at IS NULL AND {cond}", args)

    def _range(self, prefix: str, where: str, args: Sequence[Any]
               ) -> builtins.list[SecretMetadata]:
        ph = self.PH
        rows = self._read(f"{SELECT_META} WHERE s.path >= {ph} AND s.path < {ph}{where} "
                          "ORDER BY s.path", (prefix, prefix + "\U0010ffff", *args), many=True)
        return [meta_from_row(r) for r in rows]

    def versions(self, path: str) -> builtins.list[VersionInfo]:
        self.describe(path, include_deleted=True)
        rows = self._read(f"SELECT {VERSION_COLS} FROM versions "  # noqa: S608
                          f"WHERE path = {self.PH} ORDER BY version", (path,), many=True)
        return [version_info(r) for r in rows]

    def destroy(self, path: str, versions: builtins.list[int], *,
                ctx: WriteContext) -> builtins.list[int]:
        ph = self.PH
        done: builtins.list[int] = []
        with self.transaction():
            self.describe(path, include_deleted=True)
            for v in versions:
                cur = self._exec(
                    "UPDATE versions SET wrapped_key = NULL, ciphertext = NULL, key_id = NULL, "  # noqa: S608
                    f"destroyed = true WHERE path = {ph} AND version = {ph} AND NOT destroyed",
                    (path, v))
                if cur.rowcount:
                    done.append(v)
                    self._exec("UPDATE secrets SET wrapped_key = NULL, ciphertext = NULL, "  # noqa: S608
                               f"key_id = NULL WHERE path = {ph} AND current_version = {ph}",
                               (path, v))
            self._changed(path)
        self._shred()
        return done

    def restore(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        with self.transaction():
            self.describe(path, include_deleted=True)
            self._exec(f"UPDATE secrets SET deleted_at = NULL WHERE path = {self.PH}", (path,))  # noqa: S608
            self._changed(path)
            return self.describe(path)

    def purge(self, path: str, *, ctx: WriteContext) -> None:
        with self.transaction():
            cur = self._exec(f"DELETE FROM secrets WHERE path = {self.PH}", (path,))  # noqa: S608
            if not cur.rowcount:
                raise not_found(path)
            self._exec(f"DELETE FROM versions WHERE path = {self.PH}", (path,))  # noqa: S608
            self._changed(path)
        self._shred()

    def deleted_before(self, cutoff: datetime) -> builtins.list[str]:
        rows = self._read("SELECT path FROM secrets WHERE deleted_at IS NOT NULL "  # noqa: S608
                          f"AND deleted_at < {self.PH} ORDER BY path", (cutoff.timestamp(),),
                          many=True)
        return [r[0] for r in rows]

    def update_metadata(self, path: str, meta: MetadataUpdate, *,
                        ctx: WriteContext) -> SecretMetadata:
        ph = self.PH
        extra = meta_values(meta)
        with self.transaction():
            self.describe(path, include_deleted=True)
            sets = "".join(f", {k} = {ph}" for k in extra)
            self._exec(f"UPDATE secrets SET updated_at = {ph}, updated_by = {ph}{sets} "  # noqa: S608
                       f"WHERE path = {ph}", (ctx.now.timestamp(), ctx.actor, *extra.values(),
                                              path))
            self._changed(path)
            return self.describe(path, include_deleted=True)
