"""The typer application: every command, and ``run`` which maps usage errors to exit 2.

Errors raised inside a command are handled by ``output.command``; ``run`` only sees
what typer raises while parsing (usage errors, an aborted prompt).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from keysafe.cli import (
    admin,
    audit,
    commands,
    database,
    exitcodes,
    importing,
    keycheck,
    masterkey,
    migrate,
    orgs,
    policy,
    reuse,
    rotate,
    server,
    sync,
    trust,
    workloads,
)
from keysafe.cli import scan as scan_cmd

_EXIT_CODES = "\n\n".join(f"{code}: {meaning}" for code, meaning in exitcodes.TABLE)

app = typer.Typer(
    name="keysafe",
    help="Secrets for multi-tenant applications: put, get and manage secrets by name, "
         "org, domain and environment.\n\n"
         "A secret is named by NAME with --org (and --domain, --env), or by its full "
         "path. Values are read from stdin or a no-echo prompt and printed only by "
         "`get`. Every command takes --json.",
    epilog=f"Exit codes:\n\n{_EXIT_CODES}",
    no_args_is_help=True,
    add_completion=False,
    # Never render locals: a frame may hold a value being written.
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
commands.register(app)
audit.register(app)
admin.register(app)
server.register(app)
importing.register(app)
migrate.register(app)
policy.register(app)
reuse.register(app)
database.register(app)
rotate.register(app)
sync.register(app)
workloads.register(app)
scan_cmd.register(app)
keycheck.register(app)
masterkey.register(app)
orgs.register(app)
trust.register(app)


def run(args: Sequence[str]) -> int:
    """Run the typer app on ``args``; return the exit status."""
    as_json = "--json" in args
    cmd = typer.main.get_command(app)
    try:
        rv = cmd.main(args=list(args), prog_name="keysafe", standalone_mode=False)
    except typer.TyperException as exc:
        # Usage errors (exit 2) carry the context whose usage line helps; others do not.
        message = exc.format_message()
        if not message:  # `keysafe` alone: the help was printed, nothing to add
            return exc.exit_code
        ctx = getattr(exc, "ctx", None)
        usage = exc.exit_code == exitcodes.USAGE
        if ctx is not None and not as_json:
            sys.stderr.write(f"{ctx.get_usage()}\nTry '{ctx.command_path} --help' for "
                             "help.\n")
        return exitcodes.emit_error("usage" if usage else "error", message, exc.exit_code,
                                    as_json=as_json)
    except typer.Abort:
        return exitcodes.emit_error("aborted", "cancelled; nothing was changed",
                                    exitcodes.UNEXPECTED, as_json=as_json)
    return rv if isinstance(rv, int) else exitcodes.OK
