"""Store administration: init, doctor, rekey, test-secrets. The work is in
``keysafe.maintenance``; these commands only render it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from keysafe.cli import exitcodes
from keysafe.cli.options import Env, Json
from keysafe.cli.output import (
    command,
    emit_json,
    say,
    self_test_table,
    status_text,
    table,
    warn,
)
from keysafe.cli.output import progress as progress_bar
from keysafe.cli.reading import load, open_manager, store_only

if TYPE_CHECKING:
    pass


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("doctor")(doctor)
    app.command("rekey")(rekey)
    app.command("test-secrets")(self_test)


@command
def init(env: Env = None, as_json: Json = False) -> None:
    """Create KEYSAFE_HOME, the master key file (mode 0600) and the store. Idempotent."""
    from keysafe import maintenance

    result = maintenance.initialise(store_only(load(env)))
    if as_json:
        emit_json(result.to_dict())
        return
    if result.backend != "sqlite":
        say(f"the {result.backend} backend is reachable; it needs no local store")
        return
    if result.key_source == "KEYSAFE_MASTER_KEY":
        say(f"master key: from KEYSAFE_MASTER_KEY (active key id {result.active_key_id}); "
            "no key file is written")
    elif result.key_created:
        how = f", wrapped by {result.kms}" if result.kms else ""
        say(f"created the master key file {result.key_file} (mode 0600{how})")
    else:
        say(f"master key file: {result.key_file} (already there, kept as it is)")
    if result.key_file is not None:
        say(f"Back up {result.key_file} somewhere safe, away from the store: without it "
            "the secrets in this store cannot be read.")
    if result.store_created:
        say(f"created the store {result.store}")
    else:
        say(f"store: {result.store} (already there)")
    for w in result.warnings:
        warn(w)


@command
def doctor(env: Env = None, as_json: Json = False) -> None:
    """Show the effective configuration and where each value came from; check the keys.

    Also checks the master key, the key file's permissions and that the backend answers.
    """
    from keysafe import maintenance

    result = maintenance.diagnose(load(env))
    if as_json:
        emit_json(result.to_dict())
    else:
        table(["setting", "value", "source"], result.settings, title="Configuration")
        print()
        table(["check", "status", "detail"],
              [[c.name, status_text(c.status), c.detail] for c in result.checks],
              title="Checks")
    failed = [c for c in result.checks if c.status == "fail"]
    if failed:
        first = failed[0]
        code = exitcodes.BY_ERROR_CODE.get(first.error_code or "", exitcodes.UNEXPECTED)
        raise typer.Exit(exitcodes.emit_error(
            first.error_code or "error", f"doctor: {first.name}: {first.detail}", code,
            as_json=as_json))


@command
def rekey(
    rewrap_only: Annotated[bool, typer.Option(
        "--rewrap-only",
        help="Make no new key: re-wrap every data key to the key ring's active key. The "
             "way to rotate a KEYSAFE_MASTER_KEY (put the new key first in it).")] = False,
    env: Env = None,
    as_json: Json = False,
) -> None:
    """Rotate the master key and re-wrap every data key; no value changes."""
    from keysafe import maintenance

    settings = store_only(load(env))
    with progress_bar("re-wrapping data keys") as progress:
        result = maintenance.rekey(settings, rewrap_only=rewrap_only, progress=progress)
    if as_json:
        emit_json(result.to_dict())
        return
    retired = ", ".join(result.retired_key_ids) or "none"
    if result.rewrap_only:
        say(f"re-wrapped {result.rewrapped} data key(s) to the active master key "
            f"{result.active_key_id}")
        if result.retired_key_ids:
            where = ("KEYSAFE_MASTER_KEY" if result.key_file is None
                     else f"the key file {result.key_file}")
            say(f"no data key uses {retired} any more: remove it from {where} (keep a "
                "copy only as long as you keep database backups made before now)")
        return
    say(f"new master key {result.active_key_id} is active; re-wrapped "
        f"{result.rewrapped} data key(s); removed old key(s) {retired} from "
        f"{result.key_file}")
    if result.kms:
        say(f"the key file stays wrapped by {result.kms}")
    say(f"Back up {result.key_file} again now. Restart long-running keysafe processes so "
        "they load the new key.")


@command
def self_test(
    cleanup: Annotated[bool, typer.Option(
        "--cleanup", help="Purge every self-test secret afterwards (also earlier runs').")
    ] = False,
    env: Env = None,
    as_json: Json = False,
) -> None:
    """Self-test the configured backend (spec 000's test_secrets).

    Put, has, get, versions, JSON credentials, delete and restore, with random values
    that are never shown.
    """
    from keysafe import maintenance

    with open_manager(env) as mgr:
        result = maintenance.self_test(mgr, cleanup=cleanup)
    if as_json:
        emit_json(result.to_dict())
    else:
        self_test_table(result)
    failure = result.first_failure
    if failure is not None:
        code = exitcodes.BY_ERROR_CODE.get(failure.error_code or "", exitcodes.UNEXPECTED)
        raise typer.Exit(exitcodes.emit_error(
            failure.error_code or "error",
            f"self-test failed at step {failure.name!r}: {failure.detail}", code,
            as_json=as_json))
    if not as_json:
        say("self-test passed" + ("; its secrets were purged" if cleanup else
                                  f"; its secrets remain in org {result.org} "
                                  "(--cleanup removes them)"))
