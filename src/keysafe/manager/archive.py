"""Archiving old audit records (``keysafe audit archive``), keeping the chain verifiable.

The records before a time are checked link by link, written to a JSON-lines file
(mode 0600, fsynced) and only then removed from the store, in one transaction that
also records where the chain now starts (its *base*: the last archived record's
sequence number and hash). ``keysafe audit verify`` then checks the store from that
base, so removing a record is still detected, and the archive files check on their
own and against the base (``keysafe audit verify --archive FILE``).

A store can archive if its audit store has ``base``, ``first_at``, ``rows_after`` and
``trim`` (the memory, SQLite and PostgreSQL audit stores, and the stand-alone audit
file that cloud stores use).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from keysafe.errors import IntegrityError, InvalidValue, Unsupported
from keysafe.fsutil import fsync_dir
from keysafe.manager.audit import (
    GENESIS,
    Row,
    VerifyResult,
    row_hash,
    to_datetime,
    verify_rows,
)

#: The columns of a record, in chain order: one JSON object per line, with these keys
#: (plus ``time``, the ISO form of ``ts``, for people).
FIELDS = ("seq", "ts", "actor", "action", "path", "version", "outcome", "org", "client",
          "request_id", "detail", "prev_hash", "hash")
_NEEDS = ("base", "first_at", "rows_after", "trim")

Progress = Callable[[int, int], None]


class ArchiveResult(NamedTuple):
    records: int
    first: int | None  # sequence numbers of the first and last archived record
    through: int | None
    path: str | None
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


class CompactResult(NamedTuple):
    """What ``keysafe db compact`` did to a store's file (or database table)."""

    store: str  # "sqlite" or "postgres"
    where: str  # the file, or the database and table
    bytes_before: int
    bytes_after: int
    seconds: float
    #: False when an SQLite reader on an older snapshot kept the checkpoint from
    #: finishing: the file reaches its compacted size at a later checkpoint.
    settled: bool = True

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


def base_of(store: object) -> tuple[int, str] | None:
    """Where ``store``'s chain starts (None: at the genesis, nothing archived)."""
    probe = getattr(store, "base", None)
    return probe() if probe is not None else None


def archive(store: Any, before_us: int, dest: Path, *, progress: Progress | None = None,
            batch: int = 5_000) -> ArchiveResult:
    """Move the records older than ``before_us`` (a prefix of the chain: up to the first
    record at or after that time) to ``dest``. Nothing is removed unless every one of
    them links to the one before and the file is safely on disk."""
    if not all(hasattr(store, m) for m in _NEEDS):
        raise Unsupported("this store's audit log cannot be archived")
    base = store.base()
    seq, prev = base or (0, GENESIS)
    head = store.head()  # first: records appended from now on are not this archive's
    last = head[0] if head else seq
    stop = store.first_at(before_us)
    through = last if stop is None else min(stop - 1, last)
    if through <= seq:
        return ArchiveResult(0, None, None, None, 0)
    if dest.exists():
        raise InvalidValue(f"{dest} already exists: an archive is never overwritten")
    if not dest.parent.is_dir():
        raise InvalidValue(f"{dest.parent} is not a directory")
    first, total, n = seq + 1, through - seq, 0
    marks: list[tuple[int, str, int]] = []  # (seq, hash, file size) after each batch
    tmp = dest.with_name(dest.name + ".partial")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InvalidValue(f"{tmp} exists: another archive is being written there, or "
                           "one was interrupted (remove it)") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            while seq < through:
                rows = store.rows_after(seq, through, batch)
                if not rows:
                    break
                lines = []
                for r in rows:
                    problem = _link_problem(r, seq, prev)
                    if problem:
                        raise IntegrityError(f"{problem}; nothing was archived (keysafe "
                                             "audit verify names every problem)")
                    lines.append(_line(r))
                    seq, prev = r[0], r[12]
                fh.write("".join(lines))
                marks.append((seq, prev, fh.tell()))
                n += len(rows)
                if progress is not None:
                    progress(n, total)
            if seq != through:
                raise IntegrityError(f"records {seq + 1}..{through} are missing; nothing "
                                     "was archived (keysafe audit verify names every "
                                     "problem)")
            fh.flush()
            os.fsync(fh.fileno())
        size = tmp.stat().st_size
        try:
            os.link(tmp, dest)  # unlike a rename, never replaces a file made meanwhile
        except FileExistsError:
            raise InvalidValue(f"{dest} already exists: an archive is never "
                               "overwritten") from None
        tmp.unlink()
        fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # Removed a batch per transaction, each moving the base on: an embedded store's
    # writers wait for one batch's delete at most, never for the whole archive's.
    # A store may ask for a pause between batches (``settle``: the embedded store lets
    # writers of other processes in).
    settle = getattr(store, "settle", None)
    at, kept = base, 0
    for i, (mark_seq, mark_hash, mark_size) in enumerate(marks):
        try:
            if i and settle is not None:
                settle()
            store.trim(at, mark_seq, mark_hash)
        except BaseException:
            if _left_store(store, (mark_seq, mark_hash)):
                at, kept = (mark_seq, mark_hash), mark_size
            if at is base:
                dest.unlink(missing_ok=True)  # nothing was removed: no archive
            else:
                _cut(dest, kept)  # the file holds exactly what left the store
            raise
        at, kept = (mark_seq, mark_hash), mark_size
    return ArchiveResult(n, first, through, str(dest), size)


def _left_store(store: Any, mark: tuple[int, str]) -> bool:
    """Whether the batch ending at ``mark`` left the store although its removal raised
    (an interruption can land after the commit). If the store cannot say, the batch
    counts as removed: the file keeps those records, at worst archived twice (which
    verifying the two files together reports), never lost."""
    try:
        return bool(store.base() == mark)
    except Exception:  # any failure to read: keep the records
        return True


def _cut(path: Path, size: int) -> None:
    with path.open("r+b") as fh:
        fh.truncate(size)
        fh.flush()
        os.fsync(fh.fileno())


def _link_problem(r: Row, seq: int, prev: str) -> str | None:
    if r[0] != seq + 1:
        return f"audit record {seq + 1} is missing"
    if r[11] != prev:
        return f"audit record {r[0]} does not follow record {seq}"
    if row_hash(r[11], r[0], r[1:11]) != r[12]:
        return f"audit record {r[0]} was edited (its hash does not match)"
    return None


def _line(r: Row) -> str:
    d = dict(zip(FIELDS, r, strict=True))
    d["time"] = to_datetime(r[1]).isoformat()
    return json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n"


def read_archive(path: Path) -> Iterator[Row]:
    """The records of an archive file, in its order; IntegrityError names a line that
    is not one, InvalidValue a file that cannot be read or is not UTF-8 text."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InvalidValue(f"cannot read the archive file {path}: "
                           f"{exc.strerror or type(exc).__name__}") from None
    with fh:
        for no, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidValue(f"{path} line {no} is not UTF-8 text") from None
            try:
                d = json.loads(line)
                yield tuple(d[f] for f in FIELDS)
            except (ValueError, KeyError, TypeError):
                raise IntegrityError(f"{path} line {no} is not an archived audit "
                                     "record") from None


def verify_archives(paths: Sequence[Path], base: tuple[int, str] | None,
                    tap: Callable[[Row], None] | None = None) -> VerifyResult:
    """Check archive files given oldest first: each record's hash and link, no gap
    between the files, and that the store's chain continues from the record it names
    as its base. What cannot be checked with the files given is said in ``notes``: a
    first file that does not start at record 1 (checked from its own first link), and
    files that end before the store's base (later files not given)."""
    rows = itertools.chain.from_iterable(read_archive(p) for p in paths)
    first = next(rows, None)
    if first is None:
        return VerifyResult(True, 0, [])
    start = None if first[0] == 1 else (first[0] - 1, first[11])
    last = [first]
    at_base: list[str] = []  # the hash of the files' record the store's chain starts after
    base_seq = base[0] if base is not None else None

    def streamed() -> Iterator[Row]:  # one record in memory at a time
        for r in itertools.chain((first,), rows):
            last[0] = r
            if tap is not None:
                tap(r)
            if r[0] == base_seq:
                at_base.append(r[12])
            yield r

    res = verify_rows(streamed(), None, start)
    end = last[0][0]
    problems, notes = list(res.problems), []
    if start is not None:
        notes.append(f"records 1..{start[0]} were not checked: they are in earlier "
                     "archive files, not given")
    if base is None:
        notes.append("the store has archived nothing: these files were not checked "
                     "against it")
    elif end < base[0]:
        gap = f"record {base[0]}" if end + 1 == base[0] else f"records {end + 1}..{base[0]}"
        notes.append(f"these files end at record {end}, and the store's chain starts after "
                     f"record {base[0]}: {gap} must be in later archive files, not given "
                     "(verify them together to check the link to the store)")
    elif at_base[:1] != [base[1]]:
        problems.append((base[0], f"the store's chain does not continue from record "
                                  f"{base[0]} of these archives"))
    elif end > base[0]:
        notes.append(f"records {base[0] + 1}..{end} are in the store too (an archive "
                     "stopped after writing them): the store's copies are the live ones")
    return VerifyResult(not problems, res.checked, problems, tuple(notes))
