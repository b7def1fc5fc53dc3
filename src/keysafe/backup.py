"""Backups of what keysafe keeps in KEYSAFE_HOME: ``keysafe db backup`` and
``keysafe db restore``.

A backup is a directory: a copy of each SQLite file keysafe keeps there (the embedded
store, the server's tokens, the audit chain of a cloud store) taken with SQLite's
online backup API, one read transaction per file, so servers keep writing while it
runs and each copy is one consistent moment; and ``manifest.json``, naming each file's
size and SHA-256, the master key ids its data keys are wrapped with and what it holds.
It holds ciphertext, wrapped data keys, the audit chain and token digests: never a
value in the clear and never a master key, which is backed up separately (the manifest
says which key ids it needs, so a backup is never kept without them unnoticed).

PostgreSQL (the store, or the state database of a cloud store) is backed up with
pg_dump or the managed service's snapshots (docs/deploy.md#backups).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keysafe.errors import (
    ConfigError,
    Conflict,
    IntegrityError,
    InvalidValue,
    KeysafeError,
    NotFound,
    Unsupported,
)
from keysafe.fsutil import fsync_dir

if TYPE_CHECKING:
    from keysafe.config import Settings
    from keysafe.crypto.keys import KeyRing

FORMAT = "keysafe-backup"
VERSION = 1
MANIFEST = "manifest.json"
#: Held shared by ``keysafe serve`` for its lifetime, exclusive by a restore.
SERVE_LOCK = "serve.lock"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BackupResult:
    where: Path
    files: dict[str, dict[str, Any]]
    key_ids: list[str]
    #: Key ids the copy needs that the configured key ring lacks (a warning).
    missing_keys: list[str]
    counts: dict[str, int]
    #: With ``verify``: {"audit_records": n, "values": n} once every check passed.
    verified: dict[str, int] | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"where": str(self.where), "files": self.files, "key_ids": self.key_ids,
                "missing_keys": self.missing_keys, "counts": self.counts,
                "verified": self.verified, "seconds": round(self.seconds, 2)}


@dataclass(frozen=True)
class RestoreResult:
    files: list[str]
    #: Where the files it replaced were moved (None when there were none).
    aside: Path | None
    backup_created_at: str
    #: The audit chain head (seq, hash) the restore replaced, if there was one.
    replaced_head: dict[str, Any] | None = None
    audit: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "aside": str(self.aside) if self.aside else None,
                "backup_created_at": self.backup_created_at,
                "replaced_head": self.replaced_head, "audit": self.audit}


# -- what is kept where -------------------------------------------------------------
def _kind(settings: Settings) -> str:
    """``sqlite`` (the embedded store) or ``local-audit`` (a cloud store whose audit
    chain and tokens are local files); Unsupported for the others."""
    from keysafe.config import uses_state_database

    if settings.backend == "postgres" or uses_state_database(settings):
        raise Unsupported("this deployment keeps its data in PostgreSQL: back it up with "
                          "pg_dump or the managed service's snapshots (docs/deploy.md"
                          "#backups); keysafe db backup copies the files in KEYSAFE_HOME")
    if settings.backend == "memory":
        raise Unsupported("the memory store keeps nothing to back up")
    return "sqlite" if settings.backend == "sqlite" else "local-audit"


def _names(settings: Settings) -> list[str]:
    main = settings.sqlite_path.name if _kind(settings) == "sqlite" else "audit.db"
    return [main, settings.server_db_path.name]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _ring(settings: Settings) -> KeyRing:
    from keysafe.crypto.keys import load_keyring
    from keysafe.crypto.kms import kms_from_settings

    return load_keyring(settings.master_key, settings.key_file, create=False,
                        kms=kms_from_settings(settings))


def _key_ids(conn: sqlite3.Connection) -> list[str]:
    from keysafe.backends.sqlite import KEY_IDS_IN_USE

    return sorted({str(r[0]) for r in conn.execute(KEY_IDS_IN_USE)})


def _counts(conn: sqlite3.Connection) -> dict[str, int]:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    out: dict[str, int] = {}
    if "secrets" in tables:
        out["secrets"] = conn.execute("SELECT count(*) FROM secrets WHERE deleted_at IS NULL"
                                      ).fetchone()[0]
        out["deleted_secrets"] = conn.execute(
            "SELECT count(*) FROM secrets WHERE deleted_at IS NOT NULL").fetchone()[0]
    if "audit" in tables:
        out["audit_records"] = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
    if "tokens" in tables:
        out["tokens"] = conn.execute("SELECT count(*) FROM tokens").fetchone()[0]
    return out


# -- backup ---------------------------------------------------------------------------
def backup(settings: Settings, dest: Path, *, verify: bool = False,
           progress: Progress | None = None,
           record: Callable[[Path, str], None] | None = None) -> BackupResult:
    """Copy KEYSAFE_HOME's SQLite files into the new directory ``dest`` (mode 0700,
    files 0600) with a manifest. ``record(dest, outcome)`` is called with ``started``
    before the copy (so the copy's audit chain holds the record of its own making),
    then with ``ok`` or ``failed``; a failed backup removes what it wrote. ``verify``:
    the copy's audit chain is checked and every current value decrypted with the
    configured key ring.

    Raises Unsupported (PostgreSQL, memory), NotFound (nothing stored yet), Conflict
    (``dest`` exists and is not an empty directory), InvalidValue (``dest`` inside
    KEYSAFE_HOME), IntegrityError (a copy fails SQLite's check or ``verify``)."""
    t0 = time.monotonic()
    home = settings.home
    names = [n for n in _names(settings) if (home / n).is_file()]
    if not names:
        raise NotFound(f"nothing to back up: {home} holds no keysafe database yet")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise Conflict(f"{dest} exists and is not an empty directory: give a new one")
    if dest.resolve().is_relative_to(home.resolve()):
        raise InvalidValue(f"{dest} is inside KEYSAFE_HOME ({home}): put backups elsewhere")
    made = not dest.exists()
    try:
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(dest, 0o700)
    except OSError as exc:
        raise InvalidValue(f"cannot create the backup directory {dest}: "
                           f"{exc.strerror or type(exc).__name__}") from None
    if record is not None:
        try:
            record(dest, "started")
        except BaseException:
            _discard(dest, made)
            raise
    try:
        result = _backup_into(settings, dest, names, verify, progress, t0)
    except BaseException:
        _discard(dest, made)
        if record is not None:
            record(dest, "failed")
        raise
    if record is not None:
        record(dest, "ok")
    return result


def _discard(dest: Path, made: bool) -> None:
    """Remove what a failed backup wrote (the directory too, if it made it)."""
    import shutil

    if made:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _backup_into(settings: Settings, dest: Path, names: list[str], verify: bool,
                 progress: Progress | None, t0: float) -> BackupResult:
    home = settings.home
    files: dict[str, dict[str, Any]] = {}
    key_ids: list[str] = []
    counts: dict[str, int] = {}
    for name in names:
        target = dest / name
        _copy(home / name, target)
        with _readonly(target) as conn:
            problem = conn.execute("PRAGMA quick_check").fetchone()[0]
            if problem != "ok":
                raise IntegrityError(f"the copy of {name} fails SQLite's check: {problem}")
            if name == settings.sqlite_path.name and _kind(settings) == "sqlite":
                key_ids = _key_ids(conn)
            for k, v in _counts(conn).items():
                counts[k] = counts.get(k, 0) + v
    missing = []
    if key_ids:
        try:
            ring_ids = set(_ring(settings).ids)
        except KeysafeError:
            ring_ids = set()
        missing = [k for k in key_ids if k not in ring_ids]
    verified = None
    if verify:
        verified = _verify_copy(settings, dest, progress)
    for name in names:
        files[name] = {"bytes": (dest / name).stat().st_size, "sha256": _sha256(dest / name)}
    manifest = {"format": FORMAT, "version": VERSION,
                "created_at": datetime.now(UTC).isoformat(), "backend": settings.backend,
                "app": settings.app, "env": settings.env, "files": files,
                "key_ids": key_ids, "counts": counts}
    _write_new(dest / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    fsync_dir(dest)
    fsync_dir(dest.resolve().parent)
    return BackupResult(dest, files, key_ids, missing, counts, verified,
                        time.monotonic() - t0)


def _copy(src: Path, target: Path) -> None:
    """One read transaction over ``src``: a consistent copy while writers go on (WAL)."""
    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    source = sqlite3.connect(src.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        source.execute("PRAGMA busy_timeout=30000")
        dst = sqlite3.connect(target)
        try:
            source.backup(dst)
            # A self-contained file: no WAL beside it to lose or mismatch.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise IntegrityError(f"cannot copy {src.name}: {exc}") from None
    finally:
        source.close()
    with target.open("rb+") as f:
        os.fsync(f.fileno())


@contextmanager
def _readonly(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


def _verify_copy(settings: Settings, dest: Path, progress: Progress | None) -> dict[str, int]:
    """The copy's audit chain, then every current value, as the configured key ring
    reads them: IntegrityError naming the first problem."""
    import shutil
    import tempfile

    from keysafe.manager.audit import verify_rows

    names = _names(settings)
    main = dest / names[0]
    # Checked on a scratch copy: opening a store writes (WAL, schema checks), and the
    # backup's own files must stay exactly what the manifest hashes.
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        scratch = Path(tmp) / names[0]
        shutil.copyfile(main, scratch)
        if _kind(settings) == "sqlite":
            return _verify_store(settings, scratch, progress)
        from keysafe.manager.audit import AuditDB, SQLiteAuditStore

        db = AuditDB(scratch)
        try:
            with SQLiteAuditStore(db).snapshot() as (base, head, rows):
                res = verify_rows(rows, head, base)
        finally:
            db.connection.close()
        if not res.ok:
            seq, problem = res.problems[0]
            raise IntegrityError(f"the copy's audit chain is broken at record {seq}: {problem}")
        return {"audit_records": res.checked, "values": 0}


def _verify_store(settings: Settings, scratch: Path, progress: Progress | None
                  ) -> dict[str, int]:
    from keysafe.backends.sqlite import SQLiteBackend
    from keysafe.manager.audit import SQLiteAuditStore, verify_rows

    backend = SQLiteBackend(scratch, _ring(settings), max_versions=settings.max_versions)
    try:
        with SQLiteAuditStore(backend).snapshot() as (base, head, rows):
            res = verify_rows(rows, head, base)
        if not res.ok:
            seq, problem = res.problems[0]
            raise IntegrityError(f"the copy's audit chain is broken at record {seq}: {problem}")
        paths = [r[0] for r in backend.connection.execute(
            "SELECT path FROM secrets WHERE deleted_at IS NULL ORDER BY path")]
        for i, path in enumerate(paths, 1):
            backend.get(path)  # IntegrityError if it does not decrypt
            if progress is not None and (i % 500 == 0 or i == len(paths)):
                progress(i, len(paths))
        return {"audit_records": res.checked, "values": len(paths)}
    finally:
        backend.close()


def _write_new(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# -- restore --------------------------------------------------------------------------
def read_manifest(src: Path) -> dict[str, Any]:
    """The backup's manifest after checking every file it names against it:
    ConfigError for something that is not a keysafe backup (or a newer format),
    IntegrityError for a missing, truncated or altered file."""
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{src} is not a keysafe backup (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {src / MANIFEST}: {type(exc).__name__}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"{src / MANIFEST} is not a keysafe backup manifest")
    if manifest.get("version") != VERSION:
        raise ConfigError(f"{src} is a version {manifest.get('version')} backup; this keysafe "
                          f"reads version {VERSION}: restore it with a newer keysafe")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ConfigError(f"{src / MANIFEST} names no files")
    key_ids = manifest.get("key_ids", [])
    if not isinstance(key_ids, list) or not all(isinstance(k, str) for k in key_ids):
        raise ConfigError(f"{src / MANIFEST}: key_ids must be a list of key ids")
    manifest["key_ids"] = key_ids
    for name, want in files.items():
        if Path(name).name != name or not name.endswith(".db"):
            raise ConfigError(f"{src / MANIFEST} names an unexpected file {name!r}")
        if (not isinstance(want, dict) or not isinstance(want.get("bytes"), int)
                or not isinstance(want.get("sha256"), str)):
            raise ConfigError(f"{src / MANIFEST}: {name} needs its bytes and sha256")
        f = src / name
        if not f.is_file():
            raise IntegrityError(f"{name} is missing from the backup {src}")
        if f.stat().st_size != want.get("bytes") or _sha256(f) != want.get("sha256"):
            raise IntegrityError(f"{name} in {src} is not the file the manifest describes "
                                 "(altered or truncated): not restored")
    return manifest


@contextmanager
def no_server_running(home: Path) -> Iterator[None]:
    """Held while files are replaced: ConfigError if a ``keysafe serve`` on this home
    holds the serve lock (it must be stopped first); one starting meanwhile refuses to
    start (``hold_serve_lock``)."""
    import fcntl

    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(home / SERVE_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"a keysafe server is running on {home}: stop it (and every "
                              "other process using this store) before a restore") from None
        yield
    finally:
        os.close(fd)


def hold_serve_lock(home: Path) -> int | None:
    """For ``keysafe serve``: a shared lock on the serve lock file for the process's
    lifetime (a restore refuses to run under it); None if the home is not writable."""
    import fcntl

    try:
        fd = os.open(home / SERVE_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError:
        try:  # a read-only home: flock works on a file opened for reading
            fd = os.open(home / SERVE_LOCK, os.O_RDONLY)
        except OSError:
            return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"a restore is replacing the store in {home}: start the server "
                          "when it is done") from None
    return fd


def restore(settings: Settings, src: Path) -> RestoreResult:
    """Put the backup in ``src`` in place of KEYSAFE_HOME's files.

    Checked first, changing nothing on failure: the manifest, that the backup is of
    this kind of store, that the configured key ring holds every master key id it
    needs (ConfigError naming the missing ones), that no ``keysafe serve`` runs on this
    home and SQLite does not report a file busy (ConfigError), each file's SHA-256
    as it is staged beside its place (IntegrityError), and each staged copy opened
    read-only: SQLite's integrity check and keysafe's tables (IntegrityError), and the
    master key ids the staged store's rows use, read from the copy and not taken from
    the manifest, each in the key ring and opening a row it wraps (ConfigError, see
    ``_check_staged``). Then, file by file, the live file
    (its WAL folded in first, so it is complete on its own) is linked into
    ``HOME/pre-restore-<time>/`` and the staged one renamed over it: at every moment the
    store's path holds a whole database, the old or the new, and the old stays aside
    so that a restore can be undone."""
    manifest = read_manifest(src)
    home = settings.home
    names = _names(settings)
    files = list(manifest["files"])
    if names[0] not in files:
        raise ConfigError(f"{src} is a backup of a {manifest.get('backend')} store; this "
                          f"one is {settings.backend} (it needs {names[0]})")
    unknown = [n for n in files if n not in names]
    if unknown:
        raise ConfigError(f"{src} holds {unknown[0]}, which a {settings.backend} store "
                          "does not use")
    needed = manifest["key_ids"]
    if needed:
        have = set(_ring(settings).ids)
        missing = [k for k in needed if k not in have]
        if missing:
            raise ConfigError(f"the backup needs master key id(s) {', '.join(missing)}, which "
                              "the configured key ring lacks: configure the key that was in "
                              "use when it was made (nothing was changed)")
    with no_server_running(home):
        staged: list[tuple[Path, Path]] = []
        try:
            for name in files:
                staged.append((_stage(src / name, home, manifest["files"][name]), home / name))
            for tmp, final in staged:
                _check_staged(settings, tmp, final.name, src, manifest["key_ids"])
            for _tmp, final in staged:
                if final.exists():
                    _settle(final)
            replaced = _head(home / names[0]) if (home / names[0]).exists() else None
            aside = _swap(home, staged)
        except BaseException:
            for tmp, _final in staged:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    tmp.with_name(tmp.name + suffix).unlink(missing_ok=True)
            raise
    return RestoreResult(files, aside, str(manifest.get("created_at")),
                         replaced_head=replaced)


def _stage(src: Path, home: Path, want: dict[str, Any]) -> Path:
    """``src`` copied beside its place (mode 0600, synced), hashed as it is copied:
    IntegrityError unless it is the file the manifest describes."""
    tmp = home / f".{src.name}.restore"
    h = hashlib.sha256()
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
            for chunk in iter(lambda: inp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != want["sha256"] or tmp.stat().st_size != want["bytes"]:
            raise IntegrityError(f"{src.name} in {src.parent} changed while it was read: "
                                 "not restored")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


#: The tables (and their columns) each kind of file must hold to be restored: what this
#: keysafe reads. Tables it adds when missing (``rate_events``, ``audit_base``) and
#: ``tokens.env`` (added to an older server.db when opened) are not required.
_AUDIT_TABLES: dict[str, frozenset[str]] = {
    "audit": frozenset({"seq", "ts", "actor", "action", "path", "version", "outcome", "org",
                        "client", "request_id", "detail", "prev_hash", "hash"}),
    "audit_head": frozenset({"id", "seq", "hash"}),
}
_STORE_TABLES: dict[str, frozenset[str]] = {
    "secrets": frozenset({"path", "current_version", "created_at", "updated_at",
                          "created_by", "updated_by", "description", "secret_type", "tags",
                          "deleted_at", "last_rotated", "rotation_days", "expires_at",
                          "key_id", "wrapped_key", "ciphertext"}),
    "versions": frozenset({"path", "version", "created_at", "created_by", "key_id",
                           "wrapped_key", "ciphertext", "destroyed"}),
    "meta": frozenset({"key", "value"}),
    **_AUDIT_TABLES,
}
_SERVER_TABLES: dict[str, frozenset[str]] = {
    "tokens": frozenset({"id", "digest", "name", "roles", "orgs", "created_at", "created_by",
                         "expires_at", "revoked_at", "last_used_at"}),
}


def _check_staged(settings: Settings, staged: Path, name: str, src: Path,
                  listed: list[str]) -> None:
    """The staged copy of ``name`` opened read-only before anything is replaced: SQLite's
    integrity check and keysafe's schema (IntegrityError), and for the embedded store
    the master key ids its rows actually use, read from the copy itself rather than the
    manifest (``listed``): each must be in the configured key ring and unwrap a data
    key of the copy (ConfigError)."""
    names = _names(settings)
    store = name == names[0] and _kind(settings) == "sqlite"
    tables = (_STORE_TABLES if store else _AUDIT_TABLES if name == names[0]
              else _SERVER_TABLES)
    where = f"{name} in the backup {src}"
    try:
        with _readonly(staged) as conn:
            problem = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if problem != "ok":
                raise IntegrityError(f"{where} fails SQLite's integrity check ({problem}): "
                                     "not restored (nothing was changed)")
            for table, columns in tables.items():
                have = {r[0] for r in conn.execute(
                    "SELECT name FROM pragma_table_info(?)", (table,))}
                lacking = sorted(columns - have)
                if lacking:
                    what = (f"no {table} table" if not have
                            else f"its {table} table lacks {', '.join(lacking)}")
                    raise IntegrityError(f"{where} is not a keysafe database ({what}): not "
                                         "restored (nothing was changed)")
            if store:
                _check_keys(settings, conn, where, listed)
    except sqlite3.Error as exc:
        raise IntegrityError(f"{where} is not a usable SQLite database ({exc}): not "
                             "restored (nothing was changed)") from None


def _check_keys(settings: Settings, conn: sqlite3.Connection, where: str,
                listed: list[str]) -> None:
    """Every master key id the staged store's rows use is in the configured key ring and
    opens one of the rows it wraps: ConfigError naming the first problem."""
    from keysafe.crypto.envelope import Envelope

    used = _key_ids(conn)
    if not used:
        return
    ring = _ring(settings)
    missing = [k for k in used if k not in ring]
    if missing:
        unlisted = [k for k in missing if k not in listed]
        note = (f" (its manifest does not list {', '.join(unlisted)})" if unlisted else "")
        raise ConfigError(f"{where} needs master key id(s) {', '.join(missing)}, which the "
                          f"configured key ring lacks{note}: configure the key that was in "
                          "use when it was made (nothing was changed)")
    envelope = Envelope(ring)
    for kid in used:
        row = conn.execute(
            "SELECT path, version, wrapped_key, ciphertext FROM versions WHERE key_id = ? "
            "AND wrapped_key IS NOT NULL AND ciphertext IS NOT NULL "
            "UNION ALL SELECT path, current_version, wrapped_key, ciphertext FROM secrets "
            "WHERE key_id = ? AND wrapped_key IS NOT NULL AND ciphertext IS NOT NULL "
            "LIMIT 1", (kid, kid)).fetchone()
        if row is None:
            continue
        try:
            envelope.open_parts(str(row[0]), int(row[1]), kid, bytes(row[2]), bytes(row[3]))
        except (IntegrityError, TypeError, ValueError):
            raise ConfigError(f"the configured master key {kid} does not open {where} "
                              f"({row[0]} version {row[1]}): it is not the key that was in "
                              "use when the backup was made, or the backup's rows were "
                              "altered (nothing was changed)") from None


def _settle(path: Path) -> None:
    """Fold the live file's WAL into it and leave WAL mode, so the file alone is the
    whole database (the next open switches back). ConfigError when SQLite finds the
    file busy (another process in a transaction). An idle connection elsewhere is not
    seen: that process goes on with the file set aside, which is why a restore asks
    for every program using the store to be stopped."""
    conn = sqlite3.connect(path, timeout=2.0, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
    except sqlite3.OperationalError:
        mode = "busy"
    finally:
        conn.close()
    if str(mode).lower() != "delete":
        raise ConfigError(f"{path} is busy in another process (a program using the "
                          "store?): stop it before a restore (nothing was changed)")


def _head(path: Path) -> dict[str, Any] | None:
    """The audit chain's head in ``path``: what a restore replaces, for its record."""
    with _readonly(path) as conn:
        try:
            row = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        except sqlite3.Error:
            return None
    return {"seq": row[0], "hash": row[1]} if row else None


def _swap(home: Path, staged: list[tuple[Path, Path]]) -> Path | None:
    aside: Path | None = None
    for tmp, final in staged:
        if final.exists():
            if aside is None:
                aside = _aside_dir(home)
            os.link(final, aside / final.name)  # the old file stays whole, aside
            for suffix in ("-wal", "-shm", "-journal"):
                extra = final.with_name(final.name + suffix)
                if extra.exists():
                    os.replace(extra, aside / extra.name)
            fsync_dir(aside)
        os.replace(tmp, final)
        fsync_dir(home)
    return aside


def _aside_dir(home: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):
        aside = home / (f"pre-restore-{stamp}" + (f"-{n}" if n > 1 else ""))
        try:
            aside.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return aside
    raise ConfigError(f"too many pre-restore directories in {home} for {stamp}")
