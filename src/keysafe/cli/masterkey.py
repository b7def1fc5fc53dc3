"""``keysafe master-key wrap|unwrap|rewrap``: convert the master key ring between
plaintext and wrapped by the KEYSAFE_MASTER_KEY_KMS key, or wrap it again (after a KMS
key rotation, or onto another KMS key). The work is in ``keysafe.maintenance``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from keysafe.cli.options import Env, Json, Yes
from keysafe.cli.output import command, emit_json, say, warn
from keysafe.cli.reading import load, store_only

if TYPE_CHECKING:
    from keysafe.config import Settings
    from keysafe.maintenance import WrapResult

master_key_app = typer.Typer(
    help="The master key ring: keep it wrapped by a KMS key (KEYSAFE_MASTER_KEY_KMS) or "
         "in plaintext.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(master_key_app, name="master-key")
    master_key_app.command("wrap")(wrap)
    master_key_app.command("unwrap")(unwrap)
    master_key_app.command("rewrap")(rewrap)


def _convert(env: str | None, yes: bool, as_json: bool, question: Callable[[Settings], str],
             action: Callable[[Settings], WrapResult], *,
             name: str, from_reference: str | None = None) -> WrapResult | None:
    """Ask (unless --yes, or the ring is in KEYSAFE_MASTER_KEY, which is not rewritten),
    run, and emit --json; the result for the human message, None once emitted.

    A key file change is recorded in the store's audit log as ``master_key_<name>``:
    ``started`` before (durably: if that cannot be written, nothing changes), then ``ok``
    or the error's code. The store is opened with the ring as the file holds it now. A
    ring in KEYSAFE_MASTER_KEY is only converted and printed, nothing changed, so no
    store is opened (the value may be made before there is one)."""
    from keysafe import maintenance
    from keysafe.cli.reading import open_manager
    from keysafe.errors import KeysafeError

    settings = store_only(load(env))
    if not yes and not settings.master_key:
        typer.confirm(question(settings), abort=True, err=True)
    if settings.master_key:
        result = action(settings)
    else:
        act = f"master_key_{name}"
        detail = {"kms": settings.master_key_kms, "key_file": str(settings.key_file)}
        found = maintenance.settings_as_found(settings, from_reference)
        with open_manager(settings=found) as mgr:
            mgr.record(act, None, "started", durable=True, detail=detail)
            try:
                result = action(settings)
            except BaseException as exc:
                mgr.record(act, None, exc.code if isinstance(exc, KeysafeError) else "error",
                           durable=True, detail={**detail, "error": type(exc).__name__})
                raise
            try:
                mgr.record(act, None, "ok", durable=True,
                           detail={**detail, "changed": result.changed,
                                   "active_key_id": result.active_key_id})
            except KeysafeError as exc:
                # The file is already what was asked: say so rather than fail.
                warn(f"{result.where} was {'changed' if result.changed else 'left as it was'}"
                     f", but the audit record of it could not be written ({exc.message})")
    if as_json:
        emit_json(result.to_dict())
        return None
    return result


@command
def wrap(yes: Yes = False, env: Env = None, as_json: Json = False) -> None:
    """Wrap the plaintext key ring with the KEYSAFE_MASTER_KEY_KMS key.

    The key file is replaced atomically, after the KMS has decrypted the new form back.
    A ring in KEYSAFE_MASTER_KEY is not changed: the wrapped value to put in its place
    is printed (it holds only the KMS's ciphertext).
    """
    from keysafe import maintenance

    result = _convert(env, yes, as_json, lambda s: (
        f"Replace {s.key_file} with the key ring wrapped by "
        f"{s.master_key_kms or 'KEYSAFE_MASTER_KEY_KMS'}? Every keysafe process will then "
        "need that KMS key to start."), maintenance.wrap_key_ring, name="wrap")
    if result is None:
        return
    if result.wrapped_value is not None:
        print(result.wrapped_value)
        say(f"the key ring in KEYSAFE_MASTER_KEY, wrapped by {result.kms}, is above: put "
            "it in KEYSAFE_MASTER_KEY (e.g. the Kubernetes Secret) in place of the plaintext "
            "keys, keep KEYSAFE_MASTER_KEY_KMS set, and restart")
    elif not result.changed:
        say(f"{result.where} is already wrapped by {result.kms}; nothing changed")
    else:
        say(f"{result.key_file} now holds the key ring wrapped by {result.kms} (active key "
            f"id {result.active_key_id}). Set KEYSAFE_MASTER_KEY_KMS={result.kms} for every "
            "keysafe process and restart them; back up the new file (it needs the KMS key "
            "to be of any use).")


@command
def unwrap(yes: Yes = False, env: Env = None, as_json: Json = False) -> None:
    """Replace the wrapped key file with the plaintext key ring (mode 0600).

    Needs KEYSAFE_MASTER_KEY_KMS (the key that wrapped it); unset it afterwards.
    """
    from keysafe import maintenance

    result = _convert(env, yes, as_json, lambda s: (
        f"Replace {s.key_file} with the plaintext key ring? Anyone who can read the file "
        "can then read every secret in the store."), maintenance.unwrap_key_ring,
        name="unwrap")
    if result is None:
        return
    if not result.changed:
        say(f"{result.where} is not wrapped; nothing changed")
    else:
        say(f"{result.key_file} now holds the plaintext key ring (mode 0600, active key id "
            f"{result.active_key_id}). Unset KEYSAFE_MASTER_KEY_KMS for every keysafe "
            "process and restart them.")


@command
def rewrap(
    from_kms: Annotated[str | None, typer.Option(
        "--from", metavar="REFERENCE",
        help="The KMS reference that wrapped the ring now, when moving it to the "
             "KEYSAFE_MASTER_KEY_KMS key (default: the same key).",
        show_default=False)] = None,
    yes: Yes = False, env: Env = None, as_json: Json = False,
) -> None:
    """Wrap the key ring again with the KEYSAFE_MASTER_KEY_KMS key, in memory: under the
    key's newest version after a KMS key rotation, or, with --from, moving it from
    another KMS key. The plaintext ring never touches the disk; the key file is replaced
    atomically after the KMS has decrypted the new form back. A wrapped
    KEYSAFE_MASTER_KEY is not changed: the new value is printed."""
    from keysafe import maintenance

    result = _convert(env, yes, as_json, lambda s: (
        f"Replace {s.key_file} with the key ring wrapped again by "
        f"{s.master_key_kms or 'KEYSAFE_MASTER_KEY_KMS'}?"),
        lambda s: maintenance.rewrap_key_ring(s, from_kms), name="rewrap",
        from_reference=from_kms)
    if result is None:
        return
    if result.wrapped_value is not None:
        print(result.wrapped_value)
        say(f"the key ring, wrapped again by {result.kms}, is above: put it in "
            "KEYSAFE_MASTER_KEY (e.g. the Kubernetes Secret) and restart")
    else:
        say(f"{result.key_file} now holds the key ring wrapped again by {result.kms} "
            f"(active key id {result.active_key_id}); back up the new file")
