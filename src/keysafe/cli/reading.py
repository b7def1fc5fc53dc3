"""``keysafe get`` and the manager every command opens, without typer or rich.

The console script answers a plain ``get`` from here directly (``entry.main``), and
the typer command calls the same ``run_get``: one manager call, one output format and
one error path, whichever way the command line came in.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from keysafe.cli import exitcodes

if TYPE_CHECKING:
    from keysafe.cli.remote import RemoteManager
    from keysafe.config import Settings
    from keysafe.errors import KeysafeError
    from keysafe.manager.manager import SecretManager

CLIENT = "keysafe-cli"
#: The largest version number (and count) a command takes: PostgreSQL's integer.
MAX_INT = 2**31 - 1


def load(env: str | None = None) -> Settings:
    """Effective settings; ``--env`` overrides KEYSAFE_ENV (path segment and profile)."""
    from keysafe.config import load_settings

    return load_settings(env=env) if env else load_settings()


def open_manager(env: str | None = None, settings: Settings | None = None) -> SecretManager:
    """A manager for the configured store, acting as the CLI client. ConfigError when
    KEYSAFE_SERVER_URL is set: the secrets are on that server, and a command that works
    on a store must not quietly make a new one (and a master key) here."""
    from keysafe.manager.manager import SecretManager

    settings = store_only(settings if settings is not None else load(env))
    mgr = SecretManager.from_settings(settings)
    mgr.client = CLIENT
    return mgr


def store_only(settings: Settings) -> Settings:
    """``settings``, for a command that works on a store directly; ConfigError when
    KEYSAFE_SERVER_URL is set: the secrets are on that server, and such a command must
    not quietly open, or make, a store (and a master key) here."""
    if settings.server_url:
        from keysafe.config import url_origin
        from keysafe.errors import ConfigError

        raise ConfigError(f"KEYSAFE_SERVER_URL is set ({url_origin(settings.server_url)}): "
                          "this command works on a store directly, not through a server "
                          "(the secret verbs, run, export, import, scan --import, token, "
                          "audit, audit report, audit verify, audit anchor, rotate, org "
                          "and check-key go through it); unset "
                          "KEYSAFE_SERVER_URL to use the store configured here")
    return settings


def open_secrets(env: str | None = None) -> SecretManager | RemoteManager:
    """What the secret verbs act on: the keysafe server at KEYSAFE_SERVER_URL (with the
    token in KEYSAFE_TOKEN, or in the file KEYSAFE_TOKEN_FILE names) when one is set,
    else the configured store."""
    settings = load(env)
    if settings.server_url:
        return open_remote(settings)
    return open_manager(settings=settings)


def open_target(env: str | None, *, exposing: bool) -> SecretManager | RemoteManager:
    """Where ``import`` and ``scan --import`` write: the keysafe server when
    KEYSAFE_SERVER_URL is set, else the configured store. ``exposing``: the values
    will be marked exposed, so a server too old to do that is refused (ConfigError)
    before anything is written."""
    from keysafe.cli.remote import RemoteManager

    target = open_secrets(env)
    if exposing and isinstance(target, RemoteManager):
        try:
            target.check_can_mark_exposed()
        except BaseException:
            target.close()
            raise
    return target


def open_remote(settings: Settings, *, timeout: float = 30.0) -> RemoteManager:
    """The keysafe server at KEYSAFE_SERVER_URL (``settings.server_url``), with the
    token in KEYSAFE_TOKEN or the file KEYSAFE_TOKEN_FILE names; ``timeout`` for each
    answer (longer for one request that does a long job)."""
    from keysafe.cli.remote import RemoteManager

    assert settings.server_url
    return RemoteManager(settings.server_url, env=chosen_env(settings),
                         default_org=settings.default_org, timeout=timeout)


#: Seconds to wait for the answer to one request that does a long job (an org's
#: removal, a rotation through a provider).
LONG_JOB_TIMEOUT = 600.0


def still_running(exc: KeysafeError, what: str, check: str) -> KeysafeError:
    """``exc``, or, when the answer timed out after the request was sent, an error
    saying the server may still be doing ``what`` and how to ``check``."""
    from keysafe.errors import BackendUnavailable

    if isinstance(exc, BackendUnavailable) and ("TimeoutError" in exc.message
                                                or "timed out" in exc.message):
        return BackendUnavailable(f"{exc.message}; the server may still be {what}: "
                                  f"check with `{check}` before trying again")
    return exc


def chosen_env(settings: Settings) -> str | None:
    """The environment when someone chose it (KEYSAFE_ENV, ENVIRONMENT, a file), not
    the default: a server for another one must then refuse."""
    return settings.env if "env" in settings.sources else None  # lower-cased by load


def read_secret(mgr: SecretManager | RemoteManager, name: str, org: str | None, domain: str | None,
                version: int | None, field: str | None,
                with_version: bool) -> tuple[str, int | None, Any]:
    """(path, version, value or field value).

    ``with_version`` reads value and version together (one store read, one audit
    record), so the reported version is the one whose value is returned.
    """
    path = mgr.path(name, org, domain=domain)
    value: Any
    if field is not None:
        # Through a server, the server picks the field out: the rest stays there.
        from keysafe.cli.remote import RemoteManager

        if with_version and isinstance(mgr, RemoteManager):
            value, version = mgr.read_json_field(name, field, org, domain=domain,
                                                 version=version)
            return path, version, value
        if not with_version:
            return path, version, mgr.get_json_field(name, field, org, domain=domain,
                                                     version=version)
    if with_version:
        value, version = mgr.read(name, org, domain=domain, version=version)
    else:
        value = mgr.get(name, org, domain=domain, version=version)
    if field is not None:
        from keysafe.manager.manager import json_field

        value = json_field(value, name, field)
    return path, version, value


def write_value(text: str, *, newline: bool) -> None:
    """Exactly ``text`` on stdout (as UTF-8 whatever the locale), then maybe a newline."""
    data = text.encode() + (b"\n" if newline else b"")
    out = sys.stdout
    buf = getattr(out, "buffer", None)
    if buf is not None:
        out.flush()
        buf.write(data)
        buf.flush()
    else:  # a replaced stdout without a byte layer (some test harnesses)
        out.write(data.decode())
        out.flush()


def run_get(name: str, *, org: str | None = None, domain: str | None = None,
            env: str | None = None, version: int | None = None, field: str | None = None,
            as_json: bool = False) -> int:
    """Print a secret's value (or ``--json`` {path, version, value}); return the exit code.

    The value alone, with a newline only when stdout is a terminal, so that
    ``$(keysafe get ...)`` and pipes get the exact bytes that were stored.
    """
    try:
        mgr = open_secrets(env)
        try:
            path, v, value = read_secret(mgr, name, org, domain, version, field, as_json)
        finally:
            mgr.close()
        if as_json:
            import json

            write_value(json.dumps({"path": path, "version": v, "value": value}),
                        newline=True)
        else:
            text = value if isinstance(value, str) else _json_text(value)
            write_value(text, newline=sys.stdout.isatty())
    except Exception as exc:
        return exitcodes.report(exc, as_json=as_json)
    return exitcodes.OK


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value)


def option_value(args: Sequence[str], i: int) -> tuple[str, str, int] | None:
    """``--opt=value`` or ``--opt value`` at ``args[i]``: (option, value, next index), or
    None when the value is missing, empty or looks like another option (the fast paths
    then leave the command line to typer)."""
    opt, eq, val = args[i].partition("=")
    if eq:
        i += 1
    else:
        if i + 1 >= len(args):
            return None
        val = args[i + 1]
        i += 2
    if val == "" or val.startswith("-"):
        return None
    return opt, val, i


_GET_OPTIONS = {"--org": "org", "--domain": "domain", "--env": "env",
                "--version": "version", "--field": "field"}


def parse_get(args: Sequence[str]) -> dict[str, Any] | None:
    """Keyword arguments for ``run_get`` from ``get``'s arguments, or None when they are
    anything but the plain, valid form (help, unknown or repeated options, a bad
    version...): those go to the typer command, which has the final word on usage."""
    out: dict[str, Any] = {"name": None, "as_json": False}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--json":
            if out["as_json"]:
                return None
            out["as_json"] = True
            i += 1
            continue
        if arg.startswith("-"):
            taken = option_value(args, i)
            if taken is None:
                return None
            opt, val, i = taken
            key = _GET_OPTIONS.get(opt)
            if key is None or key in out:
                return None
            out[key] = val
            continue
        if out["name"] is not None:
            return None
        out["name"] = arg
        i += 1
    if not out["name"]:
        return None
    from keysafe.naming import is_segment

    if not all(is_segment(out[k]) for k in ("org", "domain", "env") if k in out):
        return None  # the typer command names the bad option, exactly as for the rest
    if "version" in out:
        v = out["version"]
        if not (v.isascii() and v.isdigit()) or not 1 <= int(v) <= MAX_INT:
            return None
        out["version"] = int(v)
    return out
