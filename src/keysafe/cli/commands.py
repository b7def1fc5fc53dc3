"""The secret verbs: put, get, status, tag, ls, rm, restore, destroy, versions, rollback.

Each one parses, calls the manager once (or twice where it must), and renders. With
KEYSAFE_SERVER_URL set, the "manager" is the keysafe server there (``cli/remote.py``). Values
travel only into ``put`` (stdin, a no-echo prompt, or ``--value`` with a warning) and
out of ``get``; nothing else ever prints one.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keysafe.cli import exitcodes, output
from keysafe.cli.options import (
    MAX_INT,
    Domain,
    Env,
    Expires,
    Json,
    Name,
    Org,
    Yes,
    check_tags,
    parse_expiry,
    parse_tags,
    parse_versions,
)
from keysafe.cli.output import command, emit_json, say, table, warn
from keysafe.cli.reading import open_secrets, run_get

if TYPE_CHECKING:
    from keysafe.models import SecretMetadata

#: Reading more than this from stdin is refused before the manager's own size check,
#: so a runaway pipe cannot exhaust memory.
_STDIN_LIMIT = 16 * 1024 * 1024


def register(app: typer.Typer) -> None:
    # Extra arguments reach the command (instead of a usage error quoting them) so that
    # `keysafe put NAME s3cret` is refused without echoing the value.
    app.command("put", context_settings={"allow_extra_args": True})(put)
    app.command("get")(get)
    app.command("status")(status)
    app.command("has")(has)
    app.command("tag")(tag)
    app.command("ls")(ls)
    app.command("rm")(rm)
    app.command("restore")(restore)
    app.command("destroy")(destroy)
    app.command("versions")(versions)
    app.command("rollback")(rollback)
    # The library's and the API's verbs (DESIGN's one vocabulary), as the same commands.
    app.command("describe", help=f"Same as `keysafe status`. {_doc(status)}")(status)
    app.command("list", help=f"Same as `keysafe ls`. {_doc(ls)}")(ls)
    app.command("delete", help=f"Same as `keysafe rm`. {_doc(rm)}")(rm)


def _doc(fn: Any) -> str:
    return (fn.__doc__ or "").strip()


# -- tag ----------------------------------------------------------------------------
@command
def tag(
    name: Name,
    org: Org = None,
    domain: Domain = None,
    env: Env = None,
    set_tags: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE", help="Set a tag; repeat for more.",
        show_default=False)] = None,
    unset: Annotated[list[str] | None, typer.Option(
        "--unset", metavar="KEY", help="Remove a tag; repeat for more.",
        show_default=False)] = None,
    expires: Expires = None,
    as_json: Json = False,
) -> None:
    """Set or remove a secret's tags, or move its expiry, without a new version (the
    value is untouched).

    ``env_var`` names the variable run, export and the Kubernetes commands give the
    secret; rotation settings are for ``keysafe rotate configure``."""
    changes = parse_tags(set_tags, "--set") or {}  # checked below, with --unset
    drop = [k.strip() for k in unset or []]
    expires_at = parse_expiry(expires)
    if not changes and not drop and expires_at is None:
        raise typer.BadParameter("give --set KEY=VALUE, --unset KEY or --expires TIME",
                                 param_hint="'--set'")
    both = sorted(set(changes) & set(drop))
    if both:
        raise typer.BadParameter(f"tag {both[0]!r} is both set and unset",
                                 param_hint="'--unset'")
    # As the API counts and checks them: the tags set and those removed, together.
    check_tags({**changes, **dict.fromkeys(drop)}, "--set" if changes else "--unset")
    with open_secrets(env) as mgr:
        meta = (mgr.update_tags(name, org, domain=domain, set_tags=changes, unset=drop,
                                expires_at=expires_at) if expires_at is not None else
                mgr.update_tags(name, org, domain=domain, set_tags=changes, unset=drop))
    if as_json:
        emit_json(meta.to_dict())
    else:
        say(f"tags of {meta.path}: " + (", ".join(f"{k}={v}" for k, v in sorted(
            meta.tags.items())) or "(none)"))
        if meta.expires_at is not None:
            say(f"expires {meta.expires_at.isoformat(timespec='seconds')}")


# -- put ----------------------------------------------------------------------------
def _read_value(value: str | None, *, credentials: bool, keep_newline: bool) -> str:
    """The value from --value (with a warning), a pipe on stdin, or a no-echo prompt."""
    from keysafe.errors import InvalidValue, ValueTooLarge

    if value is not None:
        warn("a value given with --value is visible to other users of this machine (ps, "
             "/proc) and may be kept in your shell history; prefer stdin or the prompt")
        return value
    if not output.stdin_is_tty():
        raw = sys.stdin.buffer.read(_STDIN_LIMIT + 1)
        if len(raw) > _STDIN_LIMIT:
            raise ValueTooLarge(f"the value on stdin is over {_STDIN_LIMIT} bytes")
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise InvalidValue("the value on stdin is not UTF-8 text") from None
        if not keep_newline:
            # `echo value |` and here-strings add one newline that is not part of it.
            text = text.removesuffix("\n").removesuffix("\r")
        return text
    label = "Credentials (a JSON object)" if credentials else "Value"
    prompted: str = typer.prompt(label, hide_input=True, confirmation_prompt=True, err=True)
    return prompted


def _parse_credentials(raw: str, name: str) -> dict[str, Any]:
    import json

    from keysafe.errors import InvalidValue

    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        # Position only: the decoder's message may quote the text.
        raise InvalidValue(f"credentials for {name} are not valid JSON (line {exc.lineno}, "
                           f"column {exc.colno})") from None
    except RecursionError:
        raise InvalidValue(f"credentials for {name} are nested too deeply; nothing was "
                           "stored") from None
    if not isinstance(data, dict):
        raise InvalidValue(f"credentials for {name} must be a JSON object, "
                           f"not a JSON {type(data).__name__}")
    return data


def _check_type(secret_type: str | None) -> None:
    if secret_type is None:
        return
    from keysafe.catalog import SECRET_TYPES

    if secret_type not in SECRET_TYPES:
        raise typer.BadParameter(f"{secret_type!r} is not one of {', '.join(SECRET_TYPES)}",
                                 param_hint="'--type'")


@command
def put(
    name: Name,
    org: Org = None,
    domain: Domain = None,
    env: Env = None,
    value: Annotated[str | None, typer.Option(
        "--value", metavar="VALUE",
        help="Take the value from the command line. Visible to other users and kept in "
             "shell history: prefer stdin or the prompt.", show_default=False)] = None,
    description: Annotated[str | None, typer.Option(
        "--description", help="What the secret is for.", show_default=False)] = None,
    secret_type: Annotated[str | None, typer.Option(
        "--type", help="api_key, oauth_token, database, jwt, encryption_key, password, "
                       "webhook_secret, cloud_credential, connection_url or generic "
                       "(default: from the catalog).", show_default=False)] = None,
    tag: Annotated[list[str] | None, typer.Option(
        "--tag", metavar="KEY=VALUE", help="A tag; repeat for more.",
        show_default=False)] = None,
    expected_version: Annotated[int | None, typer.Option(
        "--expected-version", min=0, max=MAX_INT, metavar="N",
        help="Check-and-set: write only if the current version is N (0: only if the "
             "secret does not exist yet).", show_default=False)] = None,
    credentials: Annotated[bool, typer.Option(
        "--credentials",
        help="The value is JSON credentials: a JSON object, stored as one secret.")] = False,
    merge: Annotated[bool, typer.Option(
        "--merge", help="With --credentials: merge the given fields into the stored "
                        "object, keeping the others (a null field is removed).")] = False,
    no_format_check: Annotated[bool, typer.Option(
        "--no-format-check",
        help="Skip the catalog's format check for well-known names.")] = False,
    check_key: Annotated[bool, typer.Option(
        "--check-key",
        help="Ask the provider whether the key works before saving it: a key it refuses "
             "is not saved (exit 2); if it cannot be asked, the key is saved with a "
             "warning (docs/key-checks.md).")] = False,
    keep_newline: Annotated[bool, typer.Option(
        "--keep-newline", help="Keep a trailing newline read from stdin.")] = False,
    generate: Annotated[bool, typer.Option(
        "--generate", help="Store a random value nobody sees (a JWT, session or "
                           "encryption secret, a password): not read, not printed.")] = False,
    length: Annotated[int | None, typer.Option(
        "--length", min=32, max=4096, metavar="N",
        help="With --generate: characters (default: the secret's rotator.length "
             "option, else 64).", show_default=False)] = None,
    alphabet: Annotated[str | None, typer.Option(
        "--alphabet", metavar="A", help="With --generate: urlsafe, alnum, hex or "
        "printable (default: the secret's rotator.alphabet option, else urlsafe).",
        show_default=False)] = None,
    expires: Expires = None,
    as_json: Json = False,
    *,
    ctx: typer.Context,
) -> None:
    """Store a new version of a secret, read from stdin or a no-echo prompt (or made up
    with --generate)."""
    if ctx.args:
        # `keysafe put NAME s3cret`: refuse without echoing it (usage errors quote argv).
        raise typer.BadParameter(
            "put takes no value argument: pipe the value on stdin, type it at the prompt, "
            "or use --value; nothing was stored", param_hint="'VALUE'")
    tags = parse_tags(tag, user_tags=True)
    expires_at = parse_expiry(expires)
    _check_type(secret_type)
    if not generate and (length is not None or alphabet is not None):
        raise typer.BadParameter("--length and --alphabet go with --generate",
                                 param_hint="'--generate'")
    if generate:
        given = [flag for flag, on in (("--value", value is not None),
                                       ("--credentials", credentials), ("--merge", merge),
                                       ("--check-key", check_key),
                                       ("--keep-newline", keep_newline)) if on]
        if given:
            raise typer.BadParameter(f"--generate makes the value: not with {given[0]}; "
                                     "nothing was stored", param_hint="'--generate'")
        _put_generated(name, org, domain, env, as_json, length=length, alphabet=alphabet,
                       expected_version=expected_version, description=description,
                       secret_type=secret_type, tags=tags, expires_at=expires_at,
                       check_format=not no_format_check)
        return
    if merge and not credentials:
        raise typer.BadParameter("--merge needs --credentials", param_hint="'--merge'")
    if check_key and merge:
        raise typer.BadParameter("--check-key checks a whole value, not a --merge",
                                 param_hint="'--check-key'")
    if merge and (expected_version is not None or description or secret_type or tags
                  or expires_at is not None):
        raise typer.BadParameter("--merge takes no --expected-version, --description, "
                                 "--type, --tag or --expires", param_hint="'--merge'")
    from keysafe.cli.remote import RemoteManager

    _check_segments(name, org, domain)
    check = None
    with open_secrets(env) as mgr:
        path = mgr.path(name, org, domain=domain)  # a bad name fails before the prompt
        raw = _read_value(value, credentials=credentials, keep_newline=keep_newline)
        if credentials:
            data = _parse_credentials(raw, name)
            if check_key:  # a JSON credential with a check of its own (an AWS key pair)
                if isinstance(mgr, RemoteManager):
                    raise typer.BadParameter(
                        "--check-key with --credentials works on a store directly, not "
                        "through a server", param_hint="'--check-key'")
                import json

                check = mgr.check_key(name, json.dumps(data, sort_keys=True), org,
                                      domain=domain, refuse=True)
            if merge:
                info = mgr.update_json(name, data, org, domain=domain)
            else:
                info = mgr.put_json(name, data, org, domain=domain,
                                    expected_version=expected_version,
                                    description=description, secret_type=secret_type,
                                    tags=tags, expires_at=expires_at)
        elif isinstance(mgr, RemoteManager):  # the server asks the provider, then writes
            info, check = mgr.put_checked(
                name, raw, org, domain=domain, expected_version=expected_version,
                description=description, secret_type=secret_type, tags=tags,
                check_format=not no_format_check, check_key=check_key,
                expires_at=expires_at)
        else:
            check = (mgr.check_key(name, raw, org, domain=domain, refuse=True,
                                   check_format=not no_format_check)
                     if check_key else None)
            info = mgr.put(name, raw, org, domain=domain, expected_version=expected_version,
                           description=description, secret_type=secret_type, tags=tags,
                           expires_at=expires_at, check_format=not no_format_check)
    if as_json:
        emit_json({"path": path, "version": info.version,
                   "created_at": info.created_at.isoformat(), "created_by": info.created_by,
                   **({"key_check": check.to_dict()} if check else {})})
    else:
        say(f"stored {path} version {info.version}")
        if check is not None:
            (say if check.outcome == "valid" else warn)(check.detail)


def _check_segments(name: str, org: str | None, domain: str | None) -> None:
    """InvalidName for a bad name, org or domain before the store is opened: on a fresh
    home, opening it creates the master key, and bad input must change nothing. (A full
    path is checked against the naming template once the store is open.)"""
    from keysafe.naming import validate_segment

    if org is not None or "/" not in name:
        validate_segment("name", name)
    for kind, seg in (("org", org), ("domain", domain)):
        if seg is not None:
            validate_segment(kind, seg)


def _put_generated(name: str, org: str | None, domain: str | None, env: str | None,
                   as_json: bool, **kw: Any) -> None:
    _check_segments(name, org, domain)
    with open_secrets(env) as mgr:
        path = mgr.path(name, org, domain=domain)
        info = mgr.put_generated(name, org, domain=domain, **kw)
    if as_json:
        emit_json({"path": path, "version": info.version, "generated": True,
                   "created_at": info.created_at.isoformat(), "created_by": info.created_by})
    else:
        say(f"stored {path} version {info.version}: a generated value, shown to nobody")


# -- get ----------------------------------------------------------------------------
@command
def get(
    name: Name,
    org: Org = None,
    domain: Domain = None,
    env: Env = None,
    version: Annotated[int | None, typer.Option(
        "--version", min=1, max=MAX_INT, metavar="N",
        help="Read version N (default: the current one).",
        show_default=False)] = None,
    field: Annotated[str | None, typer.Option(
        "--field", metavar="FIELD", help="One field of JSON credentials.",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print {\"path\", \"version\", \"value\"} as JSON.")] = False,
) -> None:
    """Print a secret's value: exactly the value (a newline is added on a terminal)."""
    code = run_get(name, org=org, domain=domain, env=env, version=version, field=field,
                   as_json=as_json)
    if code:
        raise typer.Exit(code)


# -- status / ls ----------------------------------------------------------------------
def _meta_rows(m: SecretMetadata) -> list[tuple[str, Any]]:
    return [
        ("path", m.path),
        ("current version", m.current_version),
        ("versions kept", m.versions),
        ("type", m.secret_type),
        ("description", m.description),
        ("tags", m.tags),
        ("created", f"{output.when(m.created_at)} by {m.created_by or '-'}"),
        ("updated", f"{output.when(m.updated_at)} by {m.updated_by or '-'}"),
        ("last rotated", m.last_rotated),
        ("rotation period (days)", m.rotation_days),
        ("expires", m.expires_at),
        ("deleted", m.deleted_at),
    ]


@command
def status(
    name: Name,
    org: Org = None,
    domain: Domain = None,
    env: Env = None,
    deleted: Annotated[bool, typer.Option(
        "--deleted", help="Show a soft-deleted secret too.")] = False,
    as_json: Json = False,
) -> None:
    """Show a secret's metadata (never its value)."""
    with open_secrets(env) as mgr:
        meta = mgr.describe(name, org, domain=domain, include_deleted=deleted)
    if as_json:
        emit_json(meta.to_dict())
    else:
        table(["field", "value"], _meta_rows(meta))


@command
def has(
    name: Name,
    org: Org = None,
    domain: Domain = None,
    env: Env = None,
    as_json: Json = False,
) -> None:
    """Whether a secret exists (and is not deleted), as the exit status: 0 yes, 3 no.
    Prints nothing (--json: {"path", "exists"}); never reads the value."""
    with open_secrets(env) as mgr:
        path = mgr.path(name, org, domain=domain)
        found = mgr.has(name, org, domain=domain)
    if as_json:
        emit_json({"path": path, "exists": found})
    if not found:
        raise typer.Exit(exitcodes.NOT_FOUND)


@command
def ls(
    org: Org = None,
    domain: Domain = None,
    env: Env = None,
    deleted: Annotated[bool, typer.Option(
        "--deleted", help="Include soft-deleted secrets.")] = False,
    as_json: Json = False,
) -> None:
    """List secrets of an org (and domain); every org when --org is not given."""
    with open_secrets(env) as mgr:
        metas = mgr.list(org, domain=domain, include_deleted=deleted)
    if as_json:
        emit_json([m.to_dict() for m in metas])
        return
    if not metas:
        say("no secrets found")
        return
    cols = ["path", "version", "type", "updated", "updated by"]
    rows: list[list[Any]] = [[m.path, m.current_version, m.secret_type, m.updated_at,
                              m.updated_by] for m in metas]
    if deleted:
        cols.append("deleted")
        for r, m in zip(rows, metas, strict=True):
            r.append(m.deleted_at)
    table(cols, rows)


# -- rm / restore / destroy ------------------------------------------------------------
@command
def rm(
    name: Name,
    org: Org = None,
    domain: Domain = None,
    env: Env = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Purge now, every version, unrecoverably (asks first).")] = False,
    yes: Yes = False,
    as_json: Json = False,
) -> None:
    """Delete a secret: soft (restorable within the recovery window) unless --force."""
    with open_secrets(env) as mgr:
        path = mgr.path(name, org, domain=domain)
        if force and not yes:
            typer.confirm(f"Purge {path} and all its versions now? This cannot be undone.",
                          abort=True, err=True)
        mgr.delete(name, org, domain=domain, force=force)
        days = mgr.recovery_window.days
    if as_json:
        emit_json({"path": path, "deleted": True, "purged": force})
    elif force:
        say(f"purged {path}")
    else:
        say(f"deleted {path}; `keysafe restore` brings it back within {days} days")


@command
def restore(
    name: Name,
    org: Org = None,
    domain: Domain = None,
    env: Env = None,
    as_json: Json = False,
) -> None:
    """Undo a soft delete (within the recovery window)."""
    with open_secrets(env) as mgr:
        meta = mgr.restore(name, org, domain=domain)
    if as_json:
        emit_json(meta.to_dict())
    else:
        say(f"restored {meta.path} (version {meta.current_version})")


@command
def destroy(
    name: Name,
    versions: Annotated[str, typer.Option(
        "--versions", metavar="N[,N...]", help="Versions to destroy, e.g. 1,2.",
        show_default=False)],
    org: Org = None,
    domain: Domain = None,
    env: Env = None,
    yes: Yes = False,
    as_json: Json = False,
) -> None:
    """Crypto-shred chosen versions: their values can never be read again."""
    wanted = parse_versions(versions)
    shown = ", ".join(map(str, wanted))
    with open_secrets(env) as mgr:
        path = mgr.path(name, org, domain=domain)
        if not yes:
            typer.confirm(f"Destroy version(s) {shown} of {path}? Their values can never "
                          "be read again.", abort=True, err=True)
        done = mgr.destroy(name, wanted, org, domain=domain, keep_current=True)
    if as_json:
        emit_json({"path": path, "requested": wanted, "destroyed": sorted(done)})
        return
    if done:
        say(f"destroyed version(s) {', '.join(map(str, sorted(done)))} of {path}")
    skipped = sorted(set(wanted) - set(done))
    if skipped:
        say(f"version(s) {', '.join(map(str, skipped))} of {path} were already destroyed "
            "or are not kept")


# -- versions / rollback ---------------------------------------------------------------
@command
def versions(
    name: Name,
    org: Org = None,
    domain: Domain = None,
    env: Env = None,
    as_json: Json = False,
) -> None:
    """List a secret's versions (numbers, times, authors; never values)."""
    with open_secrets(env) as mgr:
        infos = mgr.versions(name, org, domain=domain)
    if as_json:
        emit_json([v.to_dict() for v in infos])
        return
    newest = max((v.version for v in infos), default=0)
    table(["version", "created", "created by", "state", "master key"],
          [[v.version, v.created_at, v.created_by,
            "destroyed" if v.destroyed else ("current" if v.version == newest else "kept"),
            v.key_id] for v in infos])


@command
def rollback(
    name: Name,
    version: Annotated[int, typer.Argument(
        metavar="VERSION", min=1, max=MAX_INT,
        help="The version whose value becomes current again.",
        show_default=False)],
    org: Org = None,
    domain: Domain = None,
    env: Env = None,
    as_json: Json = False,
) -> None:
    """Make an old version's value current again, as a new version."""
    with open_secrets(env) as mgr:
        info = mgr.rollback(name, version, org, domain=domain)
        path = mgr.path(name, org, domain=domain)
    if as_json:
        emit_json({"path": path, "version": info.version, "from_version": version})
    else:
        say(f"rolled {path} back to the value of version {version}, "
            f"now version {info.version}")
