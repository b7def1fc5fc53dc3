"""Audit anchors: the chain's head, kept somewhere the store's administrators cannot
write, so that a log rewritten from some record on (every hash recomputed, which the
chain alone cannot reveal) is still caught.

An anchor is the sequence number and hash of the newest record at one moment, as AWS
CloudTrail's digest files are for its logs. ``keysafe audit anchor`` takes one,
``keysafe serve`` can publish one every KEYSAFE_AUDIT_ANCHOR_INTERVAL seconds (to the
event webhooks, signed, and to KEYSAFE_AUDIT_ANCHOR_FILE), ``GET /api/audit/anchor``
answers one, and ``keysafe audit verify --anchors FILE`` checks that the log still holds
each anchored record unchanged.
"""

from __future__ import annotations

import json
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


def take(mgr: SecretManager) -> Anchor | None:
    """The anchor of ``mgr``'s audit log now (None while it holds no record)."""
    mgr.audit.flush()
    head = mgr.audit.store.head()
    if head is None:
        return None
    return Anchor(head[0], head[1], datetime.now(UTC).isoformat(timespec="seconds"),
                  mgr.env)


def append(path: Path, anchor: Anchor) -> None:
    """Add ``anchor`` to a JSON-lines file of anchors (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(anchor.to_dict(), sort_keys=True) + "\n")


def read(paths: Iterable[Path]) -> list[Anchor]:
    """The anchors in JSON-lines files (blank lines skipped); InvalidValue names a line
    that is not one."""
    out = []
    for p in paths:
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InvalidValue(f"cannot read {p}: {exc.strerror or exc}") from None
        for no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except ValueError:
                raise InvalidValue(f"{p} line {no} is not JSON") from None
            out.append(Anchor.from_dict(d, f"{p} line {no}"))
    return out


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
              in_files: bool) -> VerifyResult:
        """``result`` with a problem for every anchored record changed or missing, and a
        note for those the walk could not reach (archived, or not in the files given)."""
        from keysafe.manager.audit import VerifyResult

        if not self.anchors:
            return result
        problems, notes = list(result.problems), list(result.notes)
        confirmed = 0
        last = max(self.last, base[0] if base is not None and not in_files else 0)
        for a in sorted(self.anchors, key=lambda a: a.seq):
            when = f"anchored {a.taken_at}" if a.taken_at else "anchored"
            got = self.seen.get(a.seq)
            if got is None and not in_files and base is not None and a.seq == base[0]:
                got = base[1]  # the record the store's chain continues from
            if got is not None:
                if got == a.hash:
                    confirmed += 1
                else:
                    problems.append((a.seq, f"record {a.seq} is not the record {when}: the "
                                            "log was rewritten from there on"))
            elif in_files:
                notes.append(f"record {a.seq} ({when}) is not in the files given")
            elif base is not None and a.seq < base[0]:
                notes.append(f"record {a.seq} ({when}) is archived: check it with "
                             "--archive and the archive files")
            elif a.seq > last:
                problems.append((a.seq, f"record {a.seq} ({when}) is gone: the log ends at "
                                        f"record {last}"))
        notes.append(f"{confirmed} of {len(self.anchors)} anchor(s) confirmed")
        return VerifyResult(not problems, result.checked, problems, tuple(notes))


def publisher(mgr: SecretManager, events: Any, file: Path | None,
              log: Callable[[str], None]) -> Callable[[], None]:
    """The scheduled job of ``keysafe serve``: take an anchor and publish it."""

    def run() -> None:
        anchor = take(mgr)
        if anchor is None:
            return
        events.emit("audit.anchor", anchor.to_dict())
        if file is not None:
            append(file, anchor)
        log(f"audit anchor: record {anchor.seq} hash {anchor.hash}")

    return run
