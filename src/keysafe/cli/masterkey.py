"""``keysafe master-key wrap|unwrap|rewrap``: convert the master key ring between
plaintext and wrapped by the KEYSAFE_MASTER_KEY_KMS key, or wrap it again (after a KMS
key rotation, or onto another KMS key). The work is in ``keysafe.maintenance``."""

from __future__ import annotations

from typing import Annotated

import typer

from keysafe.cli.options import Env, Json, Yes
from keysafe.cli.output import command, emit_json, say
from keysafe.cli.reading import load

master_key_app = typer.Typer(
    help="The master key ring: keep it wrapped by a KMS key (KEYSAFE_MASTER_KEY_KMS) or "
         "in plaintext.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(master_key_app, name="master-key")
    master_key_app.command("wrap")(wrap)
    master_key_app.command("unwrap")(unwrap)
    master_key_app.command("rewrap")(rewrap)


@command
def wrap(yes: Yes = False, env: Env = None, as_json: Json = False) -> None:
    """Wrap the plaintext key ring with the KEYSAFE_MASTER_KEY_KMS key.

    The key file is replaced atomically, after the KMS has decrypted the new form back.
    A ring in KEYSAFE_MASTER_KEY is not changed: the wrapped value to put in its place
    is printed (it holds only the KMS's ciphertext).
    """
    from keysafe import maintenance

    settings = load(env)
    if not yes and not settings.master_key:
        typer.confirm(f"Replace {settings.key_file} with the key ring wrapped by "
                      f"{settings.master_key_kms or 'KEYSAFE_MASTER_KEY_KMS'}? Every "
                      "keysafe process will then need that KMS key to start.",
                      abort=True, err=True)
    result = maintenance.wrap_key_ring(settings)
    if as_json:
        emit_json(result.to_dict())
        return
    if result.wrapped_value is not None:
        print(result.wrapped_value)
        say(f"the key ring in KEYSAFE_MASTER_KEY, wrapped by {result.kms}, is above: put "
            "it in KEYSAFE_MASTER_KEY (e.g. the Kubernetes Secret) in place of the plaintext "
            "keys, keep KEYSAFE_MASTER_KEY_KMS set, and restart")
    elif not result.changed:
        where = "KEYSAFE_MASTER_KEY" if result.key_file is None else str(result.key_file)
        say(f"{where} is already wrapped by {result.kms}; nothing changed")
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

    settings = load(env)
    if not yes and not settings.master_key:
        typer.confirm(f"Replace {settings.key_file} with the plaintext key ring? Anyone "
                      "who can read the file can then read every secret in the store.",
                      abort=True, err=True)
    result = maintenance.unwrap_key_ring(settings)
    if as_json:
        emit_json(result.to_dict())
        return
    if not result.changed:
        where = "KEYSAFE_MASTER_KEY" if result.key_file is None else str(result.key_file)
        say(f"{where} is not wrapped; nothing changed")
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

    settings = load(env)
    if not yes and not settings.master_key:
        typer.confirm(f"Replace {settings.key_file} with the key ring wrapped again by "
                      f"{settings.master_key_kms or 'KEYSAFE_MASTER_KEY_KMS'}?",
                      abort=True, err=True)
    result = maintenance.rewrap_key_ring(settings, from_kms)
    if as_json:
        emit_json(result.to_dict())
        return
    if result.wrapped_value is not None:
        print(result.wrapped_value)
        say(f"the key ring, wrapped again by {result.kms}, is above: put it in "
            "KEYSAFE_MASTER_KEY (e.g. the Kubernetes Secret) and restart")
    else:
        say(f"{result.key_file} now holds the key ring wrapped again by {result.kms} "
            f"(active key id {result.active_key_id}); back up the new file")
