"""A finding: where a secret is and what it looks like from far away.

The value itself is held in ``Hidden`` (``keysafe.Secret``), whose repr and str say
nothing, so a finding can be logged, printed or put in an exception message without
leaking what it found. Only
``keysafe scan --import`` reads ``Finding.secret.reveal()``, to store it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from keysafe.secret import Secret

__all__ = ["Finding", "Hidden", "Source", "fingerprint", "mask"]

Source = Literal["file", "history", "staged", "database"]

#: Fingerprints are versioned so that a future change of scheme cannot match old ones.
_FP_DOMAIN = b"keysafe-scan/v1\0"


#: A found value: masked in repr, str and format, never pickled (keysafe.Secret).
Hidden = Secret


def mask(value: str) -> str:
    """The first characters (at most 4, at most a quarter of the value) and the length:
    ``sk-p…(164 chars)``. Enough to recognise which key it is, never enough to use it."""
    shown = value[: min(4, len(value) // 4)]
    return f"{shown}…({len(value)} chars)"


def fingerprint(path: str, value: str) -> str:
    """A stable identifier of one secret in one file: SHA-256 over the path and the value.

    The baseline stores these, never the value; the path keeps the same key in two files
    two findings (each must be dealt with), and lines may move without changing it.
    """
    h = hashlib.sha256(_FP_DOMAIN)
    h.update(path.encode("utf-8", "surrogateescape"))
    h.update(b"\0")
    h.update(value.encode("utf-8", "surrogateescape"))
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Finding:
    """One secret found. Holds its position and a masked preview; the value is Hidden."""

    rule: str
    title: str
    path: str
    line: int
    column: int
    end_line: int
    end_column: int
    secret: Hidden = field(repr=False, compare=False)
    #: The catalog entry it would be imported as, when the format or the variable says.
    entry: str | None = None
    #: The variable or key the value is assigned to, when there is one.
    variable: str | None = None
    source: Source = "file"
    commit: str | None = None
    #: Character offsets of the value in the scanned text (for --import's rewrite).
    start: int = field(default=0, repr=False)
    end: int = field(default=0, repr=False)

    @property
    def length(self) -> int:
        return len(self.secret.reveal())

    @property
    def preview(self) -> str:
        return mask(self.secret.reveal())

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.path, self.secret.reveal())

    def location(self) -> str:
        where = f"{self.path}:{self.line}"
        return f"{self.commit[:12]}:{where}" if self.commit else where

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the masked preview and fingerprint, never the value."""
        return {
            "rule": self.rule,
            "title": self.title,
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
            "preview": self.preview,
            "length": self.length,
            "fingerprint": self.fingerprint,
            "entry": self.entry,
            "variable": self.variable,
            "source": self.source,
            "commit": self.commit,
        }
