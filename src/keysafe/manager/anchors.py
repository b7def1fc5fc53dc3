"""Audit anchors: a record's number and hash, kept somewhere the store's administrators
cannot write, so that a log rewritten from some record on (every hash recomputed,
which the chain alone cannot reveal) or cut short is still caught.

An anchor names an ``audit_anchor`` record committed durably, as AWS CloudTrail's
digest files vouch for its logs. ``keysafe audit anchor`` takes one, ``keysafe serve``
can take one every KEYSAFE_AUDIT_ANCHOR_INTERVAL seconds (published to
KEYSAFE_AUDIT_ANCHOR_FILE, the event webhooks and its log), ``POST /api/audit/anchor``
takes one, and ``keysafe audit verify --anchors FILE`` checks that the log still holds
each anchored record unchanged; an anchor it cannot reach is a failure, never taken
on trust.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keysafe.errors import InvalidValue

if TYPE_CHECKING:
    from keysafe.manager.audit import Row, VerifyResult
    from keysafe.manager.manager import SecretManager
    from keysafe.rotation.events import Events

KIND = "keysafe-audit-anchor"
_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    taken_at: str  # ISO 8601, UTC
    env: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "seq": self.seq, "hash": self.hash,
                "taken_at": self.taken_at, "env": self.env}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Anchor:
        if not isinstance(d, dict) or d.get("kind") != KIND:
            raise InvalidValue(f"{where} is not a keysafe audit anchor (no \"kind\": "
                               f"\"{KIND}\")")
        seq, h = d.get("seq"), d.get("hash")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise InvalidValue(f"{where}: seq must be a record number (1 or more)")
        if not isinstance(h, str) or not _HASH.fullmatch(h):
            raise InvalidValue(f"{where}: hash must be 64 hex digits")
        return cls(seq, h, str(d.get("taken_at", "")), str(d.get("env", "")))


def take(mgr: SecretManager) -> Anchor:
    """An anchor of ``mgr``'s audit log now: an ``audit_anchor`` record is committed
    durably (with every buffered record before it), and the anchor names it, so an
    anchor never names a record a crash could still take back."""
    rows = mgr.audit.commit([mgr.draft("audit_anchor", None, "ok")])  # raises if not
    seq, h = rows[-1][0], rows[-1][12]
    return Anchor(seq, h, datetime.now(UTC).isoformat(timespec="seconds"), mgr.env)


def append(path: Path, anchor: Anchor) -> None:
    """Add ``anchor`` to a JSON-lines file of anchors (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(anchor.to_dict(), sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read(paths: Iterable[Path]) -> list[Anchor]:
    """The anchors in JSON-lines files (blank lines skipped, repeats once);
    InvalidValue names a line that is not one, or two anchors of one record that
    disagree."""
    return gather(_lines(paths))


def _lines(paths: Iterable[Path]) -> Iterator[tuple[Any, str]]:
    for p in paths:
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise InvalidValue(f"cannot read {p}: {why}") from None
        for no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except ValueError:
                raise InvalidValue(f"{p} line {no} is not JSON") from None
            yield d, f"{p} line {no}"


def gather(found: Iterable[tuple[Any, str]]) -> list[Anchor]:
    """Anchors from (decoded JSON, where it came from) pairs, repeats once; InvalidValue
    names one that is not an anchor, or two anchors of one record that disagree."""
    out: dict[tuple[str, int], Anchor] = {}
    for d, where in found:
        a = Anchor.from_dict(d, where)
        seen = out.setdefault((a.env, a.seq), a)
        if seen.hash != a.hash:
            raise InvalidValue(f"{where}: another anchor of record {a.seq} names "
                               "a different hash (anchors of different stores mixed?)")
    return list(out.values())


class Tap:
    """Watches the records a verification walks: the hashes of the anchored ones, and
    the last record number."""

    def __init__(self, anchors: Sequence[Anchor]) -> None:
        self.anchors = anchors
        self.wanted = {a.seq for a in anchors}
        self.seen: dict[int, str] = {}
        self.last = 0

    def rows(self, rows: Iterable[Row]) -> Iterable[Row]:
        """``rows``, watched (as they are: no anchors, nothing to watch)."""
        return self._watched(rows) if self.anchors else rows

    def _watched(self, rows: Iterable[Row]) -> Iterator[Row]:
        for r in rows:
            self.watch(r)
            yield r

    def watch(self, r: Row) -> None:
        if r[0] in self.wanted:
            self.seen[r[0]] = r[12]
        self.last = max(self.last, r[0])

    def judge(self, result: VerifyResult, base: tuple[int, str] | None, *,
              in_files: bool, env: str) -> VerifyResult:
        """``result`` with a problem for every anchored record changed, missing, or not
        reached: an anchor this run cannot confirm is not taken on trust (a database
        writer could otherwise delete the log and move its starting point past every
        anchor). ``in_files``: the walk covered archive files, then the store.
        Anchors of another environment are skipped, with a note."""
        from keysafe.manager.audit import VerifyResult

        if not self.anchors:
            return result
        problems, notes = list(result.problems), list(result.notes)
        mine = [a for a in self.anchors if not a.env or a.env == env]
        if len(mine) < len(self.anchors):
            others = sorted({a.env for a in self.anchors} - {env, ""})
            notes.append(f"{len(self.anchors) - len(mine)} anchor(s) of environment "
                         f"{', '.join(others)} skipped (this is {env})")
        confirmed = 0
        last = max(self.last, base[0] if base is not None else 0)
        for a in sorted(mine, key=lambda a: a.seq):
            when = f"anchored {a.taken_at}" if a.taken_at else "anchored"
            got = self.seen.get(a.seq)
            if got is None and base is not None and a.seq == base[0]:
                # The chain walked continues from this record: it is the anchored one
                # if the hash it continues from is.
                got = base[1]
            if got is not None:
                if got == a.hash:
                    confirmed += 1
                else:
                    problems.append((a.seq, f"record {a.seq} is not the record {when}: the "
                                            "log was rewritten from there on"))
            elif not in_files and base is not None and a.seq < base[0]:
                problems.append((a.seq, f"record {a.seq} ({when}) is archived, so this run "
                                        "cannot confirm it: verify with --archive and the "
                                        "archive files too"))
            elif a.seq > last:
                problems.append((a.seq, f"record {a.seq} ({when}) is gone: the log ends at "
                                        f"record {last}"))
            else:
                problems.append((a.seq, f"record {a.seq} ({when}) is in neither the files "
                                        "given nor the store"))
        notes.append(f"{confirmed} of {len(mine)} anchor(s) confirmed")
        return VerifyResult(not problems, result.checked, problems, tuple(notes))


def _newest_is_anchor(mgr: SecretManager) -> bool:
    """Whether nothing but an anchor was recorded since the last anchor (any replica's)."""
    store = mgr.audit.store
    head = store.head()
    rows_after = getattr(store, "rows_after", None)
    if head is None or rows_after is None:
        return head is None
    rows = rows_after(head[0] - 1, head[0], 1)
    return bool(rows) and rows[0][3] == "audit_anchor"


def publisher(mgr: SecretManager, events: Events, file: Path | None,
              log: Callable[[str], None]) -> Callable[[], None]:
    """The scheduled job of ``keysafe serve``: take an anchor and publish it, to the
    file first (synced), then the webhooks and the log; nothing while the newest record
    is already an anchor (an idle log is anchored once, whichever replica runs it)."""

    def run() -> None:
        mgr.audit.flush()
        if _newest_is_anchor(mgr):
            return
        anchor = take(mgr)
        if file is not None:
            append(file, anchor)
        events.emit("audit.anchor", anchor.to_dict())
        log(f"audit anchor: record {anchor.seq} hash {anchor.hash}")

    return run
