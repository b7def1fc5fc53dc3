"""The baseline: findings a team has reviewed and accepted, by fingerprint.

A JSON file of fingerprints (SHA-256 over path and value, see ``findings.fingerprint``)
with the rule, path and line for the reviewer's benefit; never a value, not even masked.
Findings whose fingerprint is in the baseline are not reported, so a scan in CI fails only
on new secrets.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from keysafe.errors import InvalidValue
from keysafe.scanning.findings import Finding

__all__ = ["Baseline"]

_VERSION = 1
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Baseline:
    fingerprints: frozenset[str]

    @classmethod
    def empty(cls) -> Baseline:
        return cls(frozenset())

    @classmethod
    def load(cls, path: Path) -> Baseline:
        """Read a baseline; a missing file is an empty baseline (the first
        ``--update-baseline`` creates it). InvalidValue names the file and the problem."""
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls.empty()
        except OSError as exc:
            raise InvalidValue(f"{path}: cannot read the baseline: "
                               f"{exc.strerror or type(exc).__name__}") from None
        except UnicodeDecodeError:
            raise InvalidValue(f"{path}: the baseline is not UTF-8 text") from None
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise InvalidValue(f"{path}: the baseline is not valid JSON (line {exc.lineno})"
                               if isinstance(exc, json.JSONDecodeError)
                               else f"{path}: the baseline is not valid JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("findings"), list):
            raise InvalidValue(f"{path}: not a keysafe scan baseline (expected an object "
                               "with a 'findings' list)")
        if doc.get("version") != _VERSION:
            raise InvalidValue(f"{path}: unsupported baseline version {doc.get('version')!r}"
                               f" (this keysafe writes {_VERSION})")
        fps: set[str] = set()
        for i, item in enumerate(doc["findings"], start=1):
            fp = item.get("fingerprint") if isinstance(item, dict) else None
            if not isinstance(fp, str) or len(fp) != 64 or not set(fp) <= _HEX:
                raise InvalidValue(f"{path}: finding {i} has no valid fingerprint "
                                   "(64 lower-case hex digits)")
            fps.add(fp)
        return cls(frozenset(fps))

    def __contains__(self, finding: object) -> bool:
        return isinstance(finding, Finding) and finding.fingerprint in self.fingerprints

    @staticmethod
    def write(path: Path, findings: Iterable[Finding]) -> int:
        """Write every finding's fingerprint (sorted, one per secret and file), atomically;
        return how many."""
        rows: dict[str, dict[str, object]] = {}
        for f in findings:
            rows.setdefault(f.fingerprint, {
                "fingerprint": f.fingerprint, "rule": f.rule, "path": f.path,
                "line": f.line, **({"commit": f.commit} if f.commit else {})})
        doc = {
            "version": _VERSION,
            "tool": "keysafe scan",
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "findings": sorted(rows.values(), key=lambda r: (str(r["path"]), r["line"],
                                                            str(r["fingerprint"]))),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".baseline-", dir=path.parent)
        except OSError as exc:
            # mkdir says "File exists" when a file is in the way of a directory.
            why = (f"{os.fsdecode(exc.filename)} is not a directory"
                   if isinstance(exc, FileExistsError) and exc.filename
                   else exc.strerror or type(exc).__name__)
            raise InvalidValue(f"{path}: cannot write the baseline: {why}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=2)
                fh.write("\n")
            os.replace(tmp, path)
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise InvalidValue(f"{path}: cannot write the baseline: "
                                   f"{exc.strerror or type(exc).__name__}") from None
            raise
        return len(rows)
