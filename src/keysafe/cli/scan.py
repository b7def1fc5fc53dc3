"""``keysafe scan``: find committed secrets in files, a git history or the index, or
plaintext secrets in a database's tables (``--database``); report them masked (table,
JSON or SARIF); optionally move them into keysafe (``--import``).

Exit status: 0 when nothing is reported, 1 (``exitcodes.FINDINGS``) when something is,
2 for bad usage or input. The engine is ``keysafe.scanning``; this module parses and
renders, and never prints a value.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from keysafe.cli import exitcodes
from keysafe.cli.options import Domain, Env, Json, Yes
from keysafe.cli.output import command, emit_json, say, table

if TYPE_CHECKING:
    from keysafe.catalog import Catalog
    from keysafe.scanning import Mode, ScanReport
    from keysafe.scanning.findings import Finding
    from keysafe.scanning.rewrite import ImportOutcome


class Format(StrEnum):
    table = "table"
    json = "json"
    sarif = "sarif"


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)


@contextmanager
def _progress() -> Iterator[Callable[[int, int | None], None]]:
    """A transient progress line on stderr, shown only on a terminal."""
    from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    from keysafe.cli.output import console as make_console

    err = make_console(True)
    with Progress(SpinnerColumn(), TextColumn("scanning"), MofNCompleteColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("scan", total=None)

        def update(done: int, total: int | None) -> None:
            if done % 50 == 0 or done == total:
                bar.update(task, completed=done, total=total)

        yield update


@command
def scan(
    paths: Annotated[list[Path] | None, typer.Argument(
        metavar="[PATHS]...", help="Files or directories to scan (default: the current "
        "directory). With --git-history or --staged: a path inside the repository; with "
        "--staged, file paths limit the scan to those files.", show_default=False)] = None,
    git_history: Annotated[bool, typer.Option(
        "--git-history", help="Scan every file version in the git history (all refs), "
        "reporting the commit that introduced it.")] = False,
    staged: Annotated[bool, typer.Option(
        "--staged", help="Scan what the next commit would contain (the git index): the "
        "pre-commit hook.")] = False,
    baseline: Annotated[Path | None, typer.Option(
        "--baseline", help="A baseline file: findings recorded in it are not reported.",
        show_default=False, dir_okay=False)] = None,
    update_baseline: Annotated[bool, typer.Option(
        "--update-baseline", help="Write every current finding to the --baseline file "
        "(accepting them) and exit 0.")] = False,
    fmt: Annotated[Format, typer.Option(
        "--format", "-f", help="Output: a table, JSON, or SARIF 2.1.0 for code "
        "scanning.")] = Format.table,
    output_file: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the report to this file instead of stdout.",
        show_default=False, dir_okay=False)] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        "--exclude", help="Skip paths matching this glob (repeatable), beside the built-in "
        "skips: lock files, vendored directories, binaries.", show_default=False)] = None,
    no_entropy: Annotated[bool, typer.Option(
        "--no-entropy", help="Known key formats only: no high-entropy assignments.")] = False,
    database: Annotated[str | None, typer.Option(
        "--database", help="Scan the text columns of this database instead of files, "
        "read-only: postgresql://..., sqlite:///path or an SQLite file; env:NAME reads "
        "the URL from that variable, - from stdin (keeping a password out of argv).",
        show_default=False)] = None,
    max_rows: Annotated[int, typer.Option(
        "--max-rows", min=1, help="With --database: read at most this many rows of each "
        "table (a table cut short is named).")] = 100_000,
    do_import: Annotated[bool, typer.Option(
        "--import", help="Move each finding into keysafe (asking first, unless --yes) and "
        "replace it in its file with a keysafe://org/domain/name reference.")] = False,
    org: Annotated[str | None, typer.Option(
        "--org", help="Organisation to import into (with --import).",
        show_default=False)] = None,
    domain: Domain = None,
    env: Env = None,
    yes: Yes = False,
    as_json: Json = False,
) -> None:
    """Find committed secrets: known key formats (OpenAI, Anthropic, Slack, GitHub, AWS,
    Stripe, Hugging Face, Google ...) and high-entropy values assigned to secret names.

    Findings are shown masked (first characters and length). Exit status 1 when any is
    reported, 0 when none. Silence one with `# keysafe: allow` on its line, or accept
    the current ones with --baseline FILE --update-baseline.
    """
    from keysafe.errors import InvalidValue
    from keysafe.scanning import Baseline, scan_database
    from keysafe.scanning import scan as run_scan

    if as_json:
        fmt = Format.json
    if git_history and staged:
        raise InvalidValue("--git-history and --staged cannot be combined")
    if update_baseline and baseline is None:
        raise InvalidValue("--update-baseline needs --baseline FILE")
    if do_import and (git_history or staged):
        raise InvalidValue("--import rewrites files in the working tree; it cannot be "
                           "combined with --git-history or --staged")
    if do_import and not org:
        raise InvalidValue("--import needs --org ORG (where the secrets go)")
    if database is not None:
        _database_usage(paths, git_history, staged, do_import, fmt)
    if output_file is not None and not output_file.parent.is_dir():
        # Before the scan, which can be long (--git-history): the report could not be
        # written at its end.
        why = "is not a directory" if output_file.parent.exists() else "does not exist"
        raise InvalidValue(f"cannot write the report to {output_file}: "
                           f"{output_file.parent} {why}")
    mode: Mode = "history" if git_history else "staged" if staged else "files"
    base = Baseline.load(baseline) if baseline is not None and not update_baseline else None
    catalog = _catalog(env)
    with _progress() as progress:
        if database is not None:
            report = scan_database(_database_url(database), catalog=catalog, baseline=base,
                                   exclude=exclude or (), entropy=not no_entropy,
                                   max_rows=max_rows, progress=progress)
        else:
            report = run_scan(paths or [], mode=mode, catalog=catalog, baseline=base,
                              exclude=exclude or (), entropy=not no_entropy,
                              progress=progress)
    if update_baseline:
        assert baseline is not None
        n = Baseline.write(baseline, report.all_findings)
        if fmt is Format.json:
            emit_json({"baseline": str(baseline), "fingerprints": n,
                       "scanned": report.scanned})
        else:
            say(f"wrote {n} fingerprint(s) to {baseline}; those findings are now accepted")
        return
    if do_import and report.findings:
        assert org is not None
        outcomes = _import(report.findings, org, domain, env, yes)
        _render_import(outcomes, fmt)
        left = [o for o in outcomes if o.status != "imported"]
        if left:
            raise typer.Exit(exitcodes.FINDINGS)
        return
    _render(report, fmt, output_file)
    if report.findings:
        raise typer.Exit(exitcodes.FINDINGS)


def _database_usage(paths: list[Path] | None, git_history: bool, staged: bool,
                    do_import: bool, fmt: Format) -> None:
    from keysafe.errors import InvalidValue

    if paths or git_history or staged:
        raise InvalidValue("--database scans a database instead of files: it takes no "
                           "PATHS, --git-history or --staged")
    if do_import:
        raise InvalidValue("--import rewrites files; a database's values are yours to "
                           "move: `keysafe put` each one, point the code at it, then "
                           "clear the column")
    if fmt is Format.sarif:
        raise InvalidValue("SARIF locates findings in files; use --format json with "
                           "--database")


def _database_url(spec: str) -> str:
    """The URL ``--database`` names: itself, ``env:NAME``'s value, or stdin's first line."""
    import os

    from keysafe.errors import InvalidValue

    if spec == "-":
        url = sys.stdin.readline().strip()
        if not url:
            raise InvalidValue("--database -: no database URL on stdin")
        return url
    if spec.startswith("env:"):
        name = spec[4:]
        url = os.environ.get(name, "").strip()
        if not url:
            raise InvalidValue(f"--database {spec}: the variable {name} is not set")
        return url
    return spec


def _catalog(env: str | None) -> Catalog:
    from keysafe.catalog import Catalog
    from keysafe.cli.reading import load

    settings = load(env)
    return Catalog.load(settings.catalog_file) if settings.catalog_file else Catalog.builtin()


def _render(report: ScanReport, fmt: Format, output_file: Path | None) -> None:
    import json

    from keysafe import __version__
    from keysafe.scanning.report import to_json, to_sarif

    if fmt is Format.table and output_file is None:
        _table(report)
        return
    if fmt is Format.sarif:
        doc = to_sarif(report.findings, version=__version__)
    else:
        doc = to_json(report.findings, scanned=report.scanned, skipped=report.skipped,
                      allowed=report.allowed, baselined=report.baselined, mode=report.mode)
        if report.mode == "database":
            doc["summary"].update(database=report.database, tables=report.tables,
                                  truncated=report.truncated,
                                  unreadable=report.unreadable, notes=report.notes)
    text = json.dumps(doc, indent=2, sort_keys=fmt is not Format.sarif) + "\n"
    if output_file is not None:
        try:
            output_file.write_text(text, encoding="utf-8")
        except OSError as exc:
            # Exit 2, not 1: for scan, 1 means "secrets found".
            from keysafe.errors import InvalidValue

            raise InvalidValue(f"cannot write the report to {output_file}: "
                               f"{exc.strerror or type(exc).__name__}") from None
        say(f"{len(report.findings)} finding(s); report written to {output_file}")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def _table(report: ScanReport) -> None:
    fs = report.findings
    suppressed = []
    if report.allowed:
        suppressed.append(f"{report.allowed} allowed inline")
    if report.baselined:
        suppressed.append(f"{report.baselined} in the baseline")
    extra = f" ({', '.join(suppressed)})" if suppressed else ""
    if report.mode == "database":
        _database_table(report, extra)
        return
    if not fs:
        say(f"no secrets found in {report.scanned} file(s){extra}")
        return
    history = report.mode == "history"
    columns = ["location", *(["commit"] if history else []), "rule", "variable", "secret",
               "fingerprint"]
    rows = [[f"{f.path}:{f.line}:{f.column}", *([(f.commit or "")[:12]] if history else []),
             f.rule, f.variable or f.entry, f.preview, f.fingerprint[:12]] for f in fs]
    table(columns, rows, styles={0: "bold"})
    say(f"{len(fs)} secret(s) found in {report.scanned} file(s){extra}. Move them with "
        "`keysafe scan --import --org ORG`, then rotate them: they were committed.")


def _import(findings: list[Finding], org: str, domain: str | None, env: str | None,
            yes: bool) -> list[ImportOutcome]:
    from keysafe.cli.reading import open_target
    from keysafe.scanning.rewrite import import_findings

    def confirm(f: Finding, name: str, ref: str) -> bool:
        if yes:
            return True
        answer: bool = typer.confirm(
            f"Move {f.title} at {f.path}:{f.line} ({f.preview}) into keysafe as {name} "
            f"and write {ref} in its place?", default=False, err=True)
        return answer

    # Through a server when KEYSAFE_SERVER_URL is set; each value is marked exposed.
    mgr = open_target(env, exposing=True)
    try:
        return import_findings(findings, mgr, org=org, domain=domain or mgr.default_domain,
                               confirm=confirm)
    finally:
        mgr.close()


def _render_import(outcomes: list[ImportOutcome], fmt: Format) -> None:
    if fmt is not Format.table:
        emit_json({"imports": [o.to_dict() for o in outcomes],
                   "imported": sum(o.status == "imported" for o in outcomes)})
        return
    styles = {"imported": "green", "declined": "yellow", "failed": "red",
              "unsupported": "dim"}
    from rich.text import Text

    table(["location", "secret", "status", "name", "reference", "reason"],
          [[f"{o.finding.path}:{o.finding.line}", o.finding.preview,
            Text(o.status, style=styles[o.status]), o.name, o.reference, o.reason]
           for o in outcomes])
    n = sum(o.status == "imported" for o in outcomes)
    say(f"{n} of {len(outcomes)} secret(s) moved into keysafe. They were committed: "
        "rotate them at their provider, then `keysafe put` the new values.")


def _database_table(report: ScanReport, extra: str) -> None:
    fs = report.findings
    where = (f"{report.scanned} value(s) of {report.tables} table(s) in {report.database}"
             f"{extra}")
    for name in report.truncated:
        say(f"{name}: stopped at the --max-rows limit; the rest of the table was not read")
    for line in report.unreadable:
        say(f"skipped {line}")
    for line in report.notes:
        say(line)
    if not fs:
        say(f"no plaintext secrets found in {where}")
        return
    table(["location", "rule", "variable", "secret", "fingerprint"],
          [[f.path, f.rule, f.variable or f.entry, f.preview, f.fingerprint[:12]]
           for f in fs], styles={0: "bold"})
    say(f"{len(fs)} plaintext secret(s) found in {where}. Move each into keysafe "
        "(`keysafe put NAME --org ORG`), have the code read it from there, clear the "
        "column, then rotate it: it was stored in plain text.")
