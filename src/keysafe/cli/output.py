"""Rendering for the typer commands: rich tables on stdout, messages on stderr, JSON
for scripts, and the decorator that turns any error into its exit status.

Everything printed here is metadata: names, paths, versions, times, actors. Cells are
plain ``Text``, never markup, so a description containing ``[red]`` prints as itself.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, ParamSpec

import typer

from keysafe.cli import exitcodes

if TYPE_CHECKING:
    from rich.console import Console

    from keysafe.maintenance import SelfTestResult

P = ParamSpec("P")


def command(fn: Callable[P, None]) -> Callable[P, None]:
    """Run a command body; report any error on stderr and exit with its status.

    The single place errors are caught (the fast ``get`` path shares
    ``exitcodes.report``). A KeysafeError never shows a traceback; with ``--json`` the
    error is a JSON object on stderr.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        as_json = bool(kwargs.get("as_json"))
        try:
            fn(*args, **kwargs)
        except (typer.Exit, typer.TyperException):
            raise  # exit codes and usage errors (exit 2) are typer's to report
        except typer.Abort:
            code = exitcodes.emit_error("aborted", "cancelled; nothing was changed",
                                        exitcodes.UNEXPECTED, as_json=as_json)
            raise typer.Exit(code) from None
        except Exception as exc:
            raise typer.Exit(exitcodes.report(exc, as_json=as_json)) from None

    return wrapper


def console(stderr: bool, file: IO[str] | None = None) -> Console:
    """A console on stderr or stdout (or ``file``)."""
    from rich.console import Console

    stream = file if file is not None else sys.stderr if stderr else sys.stdout
    # Off a terminal, rich would wrap tables at 80 columns; scripts and logs want each
    # row on one line, so allow a wide line unless COLUMNS says otherwise.
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 240
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def say(message: str) -> None:
    """A human message on stderr (never markup-interpreted)."""
    from rich.text import Text

    console(True).print(Text(message))


def warn(message: str) -> None:
    from rich.text import Text

    console(True).print(Text(f"keysafe: warning: {message}", style="yellow"))


def emit_json(data: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def emit_json_lines(rows: Iterable[Any]) -> None:
    for row in rows:
        sys.stdout.write(json.dumps(row, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def when(d: datetime | None) -> str:
    return "-" if d is None else d.isoformat(timespec="seconds")


def cell(v: Any) -> str:
    if v is None or v == "" or v == {}:
        return "-"
    if isinstance(v, datetime):
        return when(v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, dict):
        return ", ".join(f"{k}={v[k]}" for k in sorted(v))
    return str(v)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
          title: str | None = None, styles: dict[int, str] | None = None,
          file: IO[str] | None = None) -> None:
    """A rich table on stdout (or ``file``); cells are shown as text, never as markup."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            style = (styles or {}).get(i, "")
            cells.append(v if isinstance(v, Text) else Text(cell(v), style=style))
        t.add_row(*cells)
    console(False, file).print(t)


def status_text(status: str) -> Any:
    """✓ / ✗ / ! / - with colour, for self-test steps and doctor checks."""
    from rich.text import Text

    marks = {"ok": ("✓", "green"), "failed": ("✗", "red"), "fail": ("✗", "red"),
             "warn": ("!", "yellow"), "skipped": ("-", "dim")}
    mark, style = marks.get(status, ("?", ""))
    return Text(f"{mark} {status}", style=style)


def self_test_table(result: SelfTestResult, file: IO[str] | None = None) -> None:
    """The self-test's steps as a table (``keysafe test-secrets``, Django's
    ``manage.py test_secrets``)."""
    table(["step", "result", "detail", "ms"],
          [[s.name, status_text(s.status), s.detail, f"{s.ms:.1f}"] for s in result.steps],
          title=f"keysafe self-test: {result.backend} backend, org {result.org}", file=file)


def stdin_is_tty() -> bool:
    """Whether stdin is a terminal (a prompt) rather than a pipe (read it). Tests patch
    this to drive the prompt."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress(label: str, *, quiet: bool = False, transient: bool = False,
             timing: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, shown only on a terminal (never with ``quiet``, e.g.
    --json); yields ``update(done, total)``. ``timing`` adds elapsed and remaining time."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    err = console(True)
    cols: list[ProgressColumn] = [TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn()]
    if timing:
        cols += [TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols, console=err, transient=transient,
                  disable=quiet or not err.is_terminal) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
