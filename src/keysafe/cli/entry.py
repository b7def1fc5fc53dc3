"""The console script: ``keysafe = "keysafe.cli.entry:main"``.

``keysafe get`` is what scripts and containers run at start-up, often many times, so a
plain ``get`` skips typer and rich (about 100 ms of imports) and goes straight to the
same ``run_get`` the typer command calls; ``keysafe run ... -- CMD`` likewise goes
straight to ``workloads.run.main``. Anything else, or a ``get`` with options the
short parser does not know, goes to the typer app.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (see ``keysafe.cli.exitcodes``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "get":
        from keysafe.cli.reading import parse_get, run_get

        kwargs = parse_get(args[1:])
        if kwargs is not None:
            return run_get(**kwargs)
    if args and args[0] == "run":
        # `keysafe run ... -- CMD` wraps every start of a workload: skip typer and rich
        # here too (same RunOptions, same code as the typer command).
        from keysafe.workloads.run import main as run_main
        from keysafe.workloads.run import parse_run

        opts = parse_run(args[1:])
        if opts is not None:
            return run_main(opts)
    from keysafe.cli.app import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
