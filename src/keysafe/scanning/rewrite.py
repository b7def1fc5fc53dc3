"""``keysafe scan --import``: move found secrets into keysafe and leave references behind.

For each finding (confirmed by the caller), the value is stored with
``SecretManager.put`` under a name taken from the catalog (the rule's secret, or the
variable's) or from the variable itself, and the value in the file is replaced by
``keysafe://org/domain/name``, the reference ``keysafe run`` resolves. A file is rewritten
once, atomically (temporary file and rename, mode kept), after every value in it was
stored; a file that changed since the scan is left alone. Values never appear in an
outcome, a message or an error.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from keysafe.errors import InvalidName, KeysafeError
from keysafe.importer import may_read_values
from keysafe.naming import validate_segment
from keysafe.scanning.findings import Finding

if TYPE_CHECKING:
    from keysafe.catalog import Catalog
    from keysafe.importer import Target

__all__ = ["ImportOutcome", "import_findings", "name_for", "reference"]

Status = Literal["imported", "declined", "failed", "unsupported"]


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    finding: Finding
    status: Status
    name: str | None = None
    reference: str | None = None
    reason: str = ""
    version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.finding.path, "line": self.finding.line,
                "rule": self.finding.rule, "preview": self.finding.preview,
                "status": self.status, "name": self.name, "reference": self.reference,
                "version": self.version, "reason": self.reason}


def reference(org: str, domain: str, name: str) -> str:
    """The reference a file holds instead of the value (what ``keysafe run`` resolves)."""
    return f"keysafe://{org}/{domain}/{name}"


def name_for(finding: Finding, catalog: Catalog | None = None) -> str:
    """The secret name a finding is stored under: its catalog entry, else its
    variable's entry in ``catalog`` (the store's or server's, which may know more than
    the scan's), else the variable (lower-cased, ``-`` and ``.`` kept), else the rule's
    name (``slack_token``)."""
    if finding.entry:
        return finding.entry
    known = catalog.by_env_var(finding.variable) if catalog and finding.variable else None
    if known is not None:
        return known.name
    if finding.variable:
        name = re.sub(r"[^a-z0-9_.-]+", "_", finding.variable.lower()).strip("._-")
        try:
            return validate_segment("name", name)
        except InvalidName:
            pass
    return finding.rule.replace("-", "_")


def _free_name(mgr: Target, base: str, value: str, org: str, domain: str,
               chosen: dict[str, str]) -> tuple[str, bool, list[str]]:
    """(name, already stored with this value, names passed over without comparing).
    Reuses a name that holds the same value; otherwise the first of base, base_2,
    base_3 ... that is free. A token that may not read values (a writer's, through a
    server) cannot compare, so every taken name is passed over, and named."""
    blind = not may_read_values(mgr)
    unknown: list[str] = []
    for i in range(1, 100):
        name = base if i == 1 else f"{base}_{i}"
        if name in chosen:
            if chosen[name] == value:
                return name, True, unknown
            continue
        if mgr.has(name, org, domain=domain):
            if blind:
                unknown.append(name)
            elif mgr.get(name, org, domain=domain) == value:
                return name, True, unknown
            continue
        return name, False, unknown
    raise InvalidName(f"no free name for {base} (tried {base} to {base}_99)")


def _write_atomic(path: Path, text: str, *, encoding: str = "utf-8") -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def import_findings(findings: Sequence[Finding], mgr: Target, *, org: str,
                    domain: str,
                    confirm: Callable[[Finding, str, str], bool]) -> list[ImportOutcome]:
    """Store each confirmed finding and rewrite its file. ``confirm(finding, name,
    reference)`` is asked before anything is stored for that finding."""
    validate_segment("org", org)
    validate_segment("domain", domain)
    outcomes: list[ImportOutcome] = []
    chosen: dict[str, str] = {}  # name -> value stored in this run
    by_file: dict[str, list[Finding]] = {}
    for f in findings:
        by_file.setdefault(f.path, []).append(f)
    for path_text, group in by_file.items():
        outcomes.extend(_import_file(Path(path_text), group, mgr, org, domain, confirm,
                                     chosen))
    return outcomes


def _import_file(path: Path, group: list[Finding], mgr: Target, org: str,
                 domain: str, confirm: Callable[[Finding, str, str], bool],
                 chosen: dict[str, str]) -> list[ImportOutcome]:
    out: list[ImportOutcome] = []
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = "the file is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) \
            else f"cannot read the file ({exc.strerror})"
        return [ImportOutcome(f, "failed", reason=why) for f in group]
    edits: list[tuple[int, int, str]] = []
    for f in sorted(group, key=lambda f: f.start):
        value = f.secret.reveal()
        if f.source != "file":
            out.append(ImportOutcome(f, "unsupported",
                                     reason="only files in the working tree can be rewritten"))
            continue
        if "\n" in value or "\\n" in value:
            out.append(ImportOutcome(f, "unsupported", reason="multi-line values (private "
                                     "keys) are not rewritten; move them by hand"))
            continue
        if text[f.start:f.end] != value:
            out.append(ImportOutcome(f, "failed", reason="the file changed since the scan"))
            continue
        try:
            name, stored, unknown = _free_name(mgr, name_for(f, mgr.catalog), value, org,
                                               domain, chosen)
        except KeysafeError as exc:
            out.append(ImportOutcome(f, "failed", reason=exc.message))
            continue
        ref = reference(org, domain, name)
        if not confirm(f, name, ref):
            out.append(ImportOutcome(f, "declined", name=name, reference=ref))
            continue
        version: int | None = None
        try:
            if not stored:
                # The scanner found it, so it is a secret whatever the catalog's format
                # check thinks (a 20-character JWT secret still has to move).
                info = mgr.put(name, value, org, domain=domain, expected_version=0,
                               check_format=False)
                version = info.version
        except KeysafeError as exc:
            out.append(ImportOutcome(f, "failed", name=name, reason=exc.message))
            continue
        # It was in a file (maybe committed, copied, shared): due for rotation now. The
        # value is stored either way, so the file is rewritten either way.
        note = ""
        try:
            mgr.mark_exposed(name, org, domain=domain, where=f"{f.path}:{f.line}")
        except KeysafeError as exc:
            note = f"not marked exposed ({exc.message}): rotate it"
        if unknown:
            note = "; ".join(filter(None, [note, (
                f"{', '.join(unknown)} already stored: this token may not read "
                f"{'it' if len(unknown) == 1 else 'them'} to compare; if one holds this "
                "value, rotate it")]))
        chosen[name] = value
        edits.append((f.start, f.end, ref))
        out.append(ImportOutcome(f, "imported", name=name, reference=ref, version=version,
                                 reason=note))
    if edits:
        new = text
        for start, end, ref in sorted(edits, reverse=True):
            new = new[:start] + ref + new[end:]
        try:
            _write_atomic(path, new)
        except OSError as exc:
            reason = f"stored, but the file could not be rewritten ({exc.strerror})"
            out = [ImportOutcome(o.finding, "failed", o.name, o.reference, reason, o.version)
                   if o.status == "imported" else o for o in out]
    return out
