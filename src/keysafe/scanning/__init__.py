"""Finding committed secrets: ``keysafe scan``'s engine, usable as a library.

One module per job: ``rules`` (known key formats), ``entropy`` (is this value random?),
``detect`` (one text -> findings), ``sources`` (files, git history, the index),
``database`` (an application's tables), ``baseline``, ``report`` (JSON, SARIF) and
``rewrite`` (``--import``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from keysafe.scanning.baseline import Baseline
from keysafe.scanning.findings import Finding, Hidden, Source, fingerprint, mask

if TYPE_CHECKING:
    from keysafe.catalog import Catalog

__all__ = ["Baseline", "Finding", "Hidden", "Mode", "ScanReport", "fingerprint", "mask",
           "scan", "scan_database"]

Mode = Literal["files", "history", "staged", "database"]


@dataclass
class ScanReport:
    """What a scan found. ``findings`` are the ones to report; ``all_findings`` include
    those a baseline accepted (``--update-baseline`` writes these)."""

    mode: Mode
    findings: list[Finding] = field(default_factory=list)
    all_findings: list[Finding] = field(default_factory=list)
    scanned: int = 0
    skipped: int = 0
    allowed: int = 0
    #: Database mode: the database (no password), its tables read, those cut short.
    database: str | None = None
    tables: int = 0
    truncated: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "table: why"
    notes: list[str] = field(default_factory=list)

    @property
    def baselined(self) -> int:
        return len(self.all_findings) - len(self.findings)


def scan(paths: Sequence[Path], *, mode: Mode = "files", catalog: Catalog | None = None,
         baseline: Baseline | None = None, exclude: Sequence[str] = (),
         entropy: bool = True,
         progress: Callable[[int, int | None], None] | None = None) -> ScanReport:
    """Scan files under ``paths`` (mode "files"), the history of the git repository
    holding ``paths[0]`` ("history"), or its index ("staged", limited to ``paths`` when
    they name files).

    ``progress(done, total)`` is called as blobs are scanned (total None when unknown).
    Raises InvalidValue for a missing path or a directory outside any git repository (in
    the git modes).
    """
    from keysafe.catalog import Catalog
    from keysafe.scanning.detect import Detector
    from keysafe.scanning.rules import rules_for
    from keysafe.scanning.sources import SkipRules, git_history, git_root, git_staged, walk_files

    cat = catalog if catalog is not None else Catalog.builtin()
    detector = Detector(rules_for(cat), cat, entropy=entropy)
    skip = SkipRules(exclude=tuple(exclude))
    report = ScanReport(mode)
    total: list[int | None] = [None]

    def skipped(_path: str) -> None:
        report.skipped += 1

    def set_total(n: int) -> None:
        total[0] = n

    roots = list(paths) or [Path(".")]
    if mode == "files":
        blobs = walk_files(roots, skip, on_skip=skipped)
    else:
        root = git_root(roots[0].absolute())
        if mode == "history":
            blobs = git_history(root, skip, on_total=set_total)
        else:
            only = [Path(p).absolute().relative_to(root).as_posix() for p in paths
                    if Path(p).is_file()]
            blobs = git_staged(root, skip, only=only)
    sources: dict[str, Source] = {"files": "file", "history": "history", "staged": "staged"}
    source = sources[mode]
    for blob in blobs:
        result = detector.scan(blob.text, blob.path, source=source,
                               commit=blob.commit)
        report.scanned += 1
        report.allowed += result.allowed
        _keep(report, result.findings, baseline)
        if progress is not None:
            progress(report.scanned, total[0])
    return report


def _keep(report: ScanReport, findings: Sequence[Finding], baseline: Baseline | None
          ) -> None:
    for f in findings:
        report.all_findings.append(f)
        if baseline is None or f not in baseline:
            report.findings.append(f)


def scan_database(url: str, *, catalog: Catalog | None = None,
                  baseline: Baseline | None = None, exclude: Sequence[str] = (),
                  entropy: bool = True, max_rows: int = 100_000,
                  progress: Callable[[int, int | None], None] | None = None) -> ScanReport:
    """Scan the text columns of a PostgreSQL or SQLite database, read-only (spec 000's
    "no plaintext secrets in the database"). ``exclude`` globs match ``table``,
    ``schema.table``, ``table.column`` or ``schema.table.column``; each table is read up
    to ``max_rows`` rows. ``progress(tables done, tables)``. A finding's path is
    ``schema.table.column[row]`` and its line and column are within the value.
    InvalidValue when the database cannot be opened (the message never has the
    password)."""
    from keysafe.catalog import Catalog
    from keysafe.scanning.database import database_cells, open_database
    from keysafe.scanning.detect import Detector
    from keysafe.scanning.rules import rules_for

    cat = catalog if catalog is not None else Catalog.builtin()
    detector = Detector(rules_for(cat), cat, entropy=entropy)
    report = ScanReport("database")
    db = open_database(url)
    report.database = db.shown

    def tables_done(done: int, total: int) -> None:
        report.tables = total
        if progress is not None:
            progress(done, total)

    try:
        for cell in database_cells(db, max_rows=max_rows, exclude=exclude,
                                   on_table=tables_done):
            # As an assignment, so the column's name says what a random value is.
            lead = len(cell.column) + 1
            result = detector.scan(f"{cell.column}={cell.value}", cell.location,
                                   source="database", config=True)
            report.scanned += 1
            report.allowed += result.allowed
            _keep(report, [replace(f, column=f.column - lead if f.line == 1 else f.column,
                                   end_column=f.end_column - lead if f.end_line == 1
                                   else f.end_column,
                                   start=f.start - lead, end=f.end - lead)
                           for f in result.findings], baseline)
    finally:
        db.close()
    report.truncated = db.truncated
    report.unreadable = db.unreadable
    report.notes = db.notes
    return report
