"""``keysafe run`` and ``keysafe export``: secrets to workloads.

``run`` shares ``workloads.run`` with the console script's fast path; this module only
adds typer's parsing and help. ``export`` writes the scope in one of the formats of
``workloads.formats`` (and the two Kubernetes ones of ``keysafe.kube``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keysafe.cli.options import Domain, Env, Json
from keysafe.cli.output import command, emit_json, say, warn
from keysafe.client import TOKEN_ENV

#: The Kubernetes Secret an ExternalSecret's store reads the service token from.
TOKEN_SECRET = "keysafe-token"

if TYPE_CHECKING:
    from keysafe.workloads.scope import Scope
    from keysafe.workloads.sources import Source

ScopeOrg = Annotated[str, typer.Option("--org", help="Organisation (tenant) to read.",
                                       show_default=False)]
Only = Annotated[list[str] | None, typer.Option(
    "--only", metavar="NAMES", help="Only these secrets (comma-separated; repeatable).",
    show_default=False)]
MapFile = Annotated[str | None, typer.Option(
    "--map", metavar="FILE", help="Mapping file (TOML or YAML): secret name = VARIABLE, "
                                  "or false to leave a secret out.", show_default=False)]
ViaServer = Annotated[str | None, typer.Option(
    "--via-server", metavar="URL", help="Read through a keysafe server with a service "
                                        "token instead of the configured store.",
    show_default=False)]
WithShared = Annotated[bool, typer.Option(
    "--with-shared", help="Also the org's shared (default) domain's secrets, beneath "
                          "--domain's own: a name both hold is --domain's.")]
TokenEnv = Annotated[str, typer.Option(
    "--token-env", metavar="VAR", help="Environment variable holding the service token "
                                       "(or VAR_FILE, naming a file that holds it).")]


def register(app: typer.Typer) -> None:
    app.command("run", context_settings={"ignore_unknown_options": True,
                                         "allow_interspersed_args": False})(run)
    app.command("export")(export)


# -- run ------------------------------------------------------------------------------
def run(
    cmd: Annotated[list[str], typer.Argument(
        metavar="-- COMMAND [ARGS]...", help="The command to run, after --.",
        show_default=False)],
    org: Annotated[str | None, typer.Option(
        "--org", help="Organisation whose secrets become variables (omit to only "
                      "resolve keysafe:// references).", show_default=False)] = None,
    domain: Domain = None,
    env: Env = None,
    only: Only = None,
    map_file: MapFile = None,
    with_shared: WithShared = False,
    env_file: Annotated[list[str] | None, typer.Option(
        "--env-file", metavar="FILE", help="Add variables from a .env file (values may be "
                                           "keysafe:// references; repeatable).",
        show_default=False)] = None,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Poll for changed secrets and restart (or signal) the "
                        "command.")] = False,
    interval: Annotated[float, typer.Option(
        "--interval", metavar="SECONDS", help="Seconds between --watch polls "
                                              "(0.5 to 86400).")] = 10.0,
    on_change: Annotated[str, typer.Option(
        "--on-change", metavar="restart|SIGNAL",
        help="With --watch: restart the command, or send it a signal (e.g. SIGHUP).")
    ] = "restart",
    grace: Annotated[float, typer.Option(
        "--grace", metavar="SECONDS", help="On restart, seconds between SIGTERM and "
                                           "SIGKILL.")] = 10.0,
    via_server: ViaServer = None,
    token_env: TokenEnv = TOKEN_ENV,
    as_json: Annotated[bool, typer.Option(
        "--json", help="keysafe's own errors as JSON on stderr.")] = False,
) -> None:
    """Run a command with the scope's secrets as environment variables.

    Catalog names become their usual variables (openai_api_key -> OPENAI_API_KEY),
    other names are upper-cased. Variables whose value is a reference,
    keysafe://ORG/DOMAIN/NAME or keysafe://ORG/NAME, are replaced by the secret. The
    exit status is the command's (128+N if signal N ended it).
    """
    from keysafe.workloads.run import RunOptions, main

    opts = RunOptions(command=list(cmd), org=org, domain=domain, env=env, only=only,
                      map_file=map_file, with_shared=with_shared,
                      env_files=list(env_file or []), watch=watch,
                      interval=interval, on_change=on_change, grace=grace,
                      server=via_server, token_env=token_env, as_json=as_json)
    code = main(opts)
    if code:
        raise typer.Exit(code)


# -- export ---------------------------------------------------------------------------
@command
def export(
    org: ScopeOrg,
    fmt: Annotated[str, typer.Option(
        "--format", metavar="FORMAT",
        help="dotenv, json, shell, github-env, k8s-secret or external-secret.",
        show_default=False)],
    domain: Domain = None,
    env: Env = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE", help="Write to FILE (created 0600) instead of "
                                               "stdout.", show_default=False)] = None,
    append: Annotated[bool, typer.Option(
        "--append", help="Append to FILE instead of replacing it (e.g. $GITHUB_ENV).")
    ] = False,
    only: Only = None,
    map_file: MapFile = None,
    with_shared: WithShared = False,
    keys: Annotated[str, typer.Option(
        "--keys", metavar="env|name", help="Key by variable name (env) or by secret "
                                            "name (name).")] = "env",
    name: Annotated[str | None, typer.Option(
        "--name", help="k8s-secret / external-secret: the Kubernetes Secret's name "
                       "(default: keysafe-ORG-DOMAIN).", show_default=False)] = None,
    namespace: Annotated[str | None, typer.Option(
        "--namespace", help="k8s-secret / external-secret: the namespace.",
        show_default=False)] = None,
    server_url: Annotated[str | None, typer.Option(
        "--server-url", metavar="URL",
        help="external-secret: the keysafe server the operator reads from (default: "
             "--via-server).", show_default=False)] = None,
    token_secret: Annotated[str, typer.Option(
        "--token-secret", metavar="NAME",
        help="external-secret: the Kubernetes Secret holding the service token.")
    ] = TOKEN_SECRET,
    refresh_interval: Annotated[str, typer.Option(
        "--refresh-interval", metavar="DURATION",
        help="external-secret: how often the operator refreshes.")] = "1h",
    provider: Annotated[str, typer.Option(
        "--provider", metavar="keysafe|store",
        help="external-secret: where the operator reads the values: through a keysafe "
             "server (keysafe: --server-url), or straight from the store this environment "
             "is configured for (store: AWS Secrets Manager or Parameter Store, "
             "Vault/OpenBao, GCP Secret Manager, Azure Key Vault).")] = "keysafe",
    store_name: Annotated[str | None, typer.Option(
        "--store", metavar="NAME",
        help="external-secret --provider store: the ClusterSecretStore's name (default: "
             "keysafe-ENV-BACKEND[-NAMESPACE]).", show_default=False)] = None,
    via_server: ViaServer = None,
    token_env: TokenEnv = TOKEN_ENV,
    as_json: Json = False,
) -> None:
    """Write the scope's secrets in a format for another tool.

    Values are quoted so that each format's own reader gets back exactly what was
    stored. Prefer --output (a 0600 file) or a pipe to printing values on a terminal.
    """
    from keysafe.errors import InvalidValue
    from keysafe.workloads.formats import FORMATS
    from keysafe.workloads.scope import Scope
    from keysafe.workloads.sources import open_source

    if fmt not in FORMATS:
        raise typer.BadParameter(f"{fmt!r} is not one of {', '.join(FORMATS)}",
                                 param_hint="'--format'")
    if keys not in ("env", "name"):
        raise typer.BadParameter(f"{keys!r} is not env or name", param_hint="'--keys'")
    if append and output is None:
        raise typer.BadParameter("--append needs --output", param_hint="'--append'")
    if via_server is None and token_env != TOKEN_ENV:
        raise typer.BadParameter("--token-env needs --via-server", param_hint="'--token-env'")
    if provider not in ("keysafe", "store"):
        raise typer.BadParameter(f"{provider!r} is not keysafe or store",
                                 param_hint="'--provider'")
    native = provider == "store"
    if (native or store_name) and fmt != "external-secret":
        raise typer.BadParameter("--provider store and --store are for --format "
                                 "external-secret", param_hint="'--provider'")
    if store_name and not native:
        raise typer.BadParameter("--store needs --provider store", param_hint="'--store'")
    if native and (server_url or via_server or token_secret != TOKEN_SECRET):
        raise typer.BadParameter("--provider store reads the store this environment is "
                                 "configured for: not with --server-url, --via-server or "
                                 "--token-secret", param_hint="'--provider'")
    if fmt == "external-secret" and not native and not (server_url or via_server):
        raise typer.BadParameter("external-secret needs --server-url (or --via-server), "
                                 "or --provider store", param_hint="'--server-url'")
    if with_shared and fmt == "external-secret":
        raise typer.BadParameter("an ExternalSecret reads one domain: --with-shared is "
                                 "for the other formats (make one ExternalSecret for "
                                 "the shared domain too)", param_hint="'--with-shared'")
    if output is not None:
        _check_output(output)
    scope = Scope.of(org, domain, only, map_file, with_shared=with_shared)
    source = open_source(env=env, server=via_server, token_env=token_env)
    try:
        if fmt == "external-secret":
            # The operator fetches the values itself: only names are read here, and each
            # one's variable, as export names it (mapping file, env_var tag, catalog).
            versions = scope.versions(source)
            variables = scope.variables(source, versions)
            fields = scope.field_vars(variables, versions, source.catalog)
            note = scope.unmatched_note()
            if note:
                warn(note)
            names = list(variables)
            count = len(names) + len(fields)
            if native:
                text = _store_external_secret(source, names, org=org, domain=domain,
                                              name=name, namespace=namespace,
                                              store=store_name,
                                              refresh_interval=refresh_interval,
                                              variables=variables, fields=fields)
            else:
                text = _external_secret(names, org=org, domain=domain, name=name,
                                        namespace=namespace,
                                        server_url=server_url or via_server or "",
                                        token_secret=token_secret,
                                        refresh_interval=refresh_interval,
                                        default_domain=source.default_domain,
                                        variables=variables, fields=fields)
        else:
            values = _read_with_progress(scope, source, whole=keys != "env")
            out = scope.env(source, values) if keys == "env" else values
            note = scope.unmatched_note() if keys == "env" else None
            if note:
                warn(note)
            count = len(out)
            text = _render(fmt, out, org=org, domain=domain, name=name, namespace=namespace,
                           default_domain=source.default_domain)
    finally:
        source.close()
    try:
        data = text.encode()
    except UnicodeEncodeError:
        raise InvalidValue("a value is not valid Unicode text and cannot be written") from None
    if output is None:
        if sys.stdout.isatty():
            warn("printing secret values on a terminal; use --output FILE or a pipe")
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    _write_file(output, data, append=append)
    if fmt == "github-env" and os.environ.get("GITHUB_ACTIONS") == "true":
        _mask_in_actions(out, as_json)
    if as_json:
        emit_json({"output": str(output), "format": fmt, "count": count,
                   "appended": append})
    else:
        say(f"wrote {count} secret{'s' if count != 1 else ''} to {output} ({fmt})")


def _mask_in_actions(values: dict[str, str], as_json: bool) -> None:
    """In GitHub Actions, register every value written to $GITHUB_ENV with the runner
    (``::add-mask::``, a line at a time: the runner masks lines), so later steps' logs
    show *** instead. The runner reads these commands from stdout and does not print
    them; with --json, stdout is the JSON object alone, so they are not sent."""
    if as_json:
        warn("--json: the values were not registered as masks (::add-mask::); later "
             "steps may print them in the log")
        return
    # Escaped as the runner unescapes command data (actions/toolkit's escapeData).
    lines = [f"::add-mask::{part.replace('%', '%25')}\n" for v in values.values()
             for part in v.splitlines() if part.strip()]
    sys.stdout.write("".join(lines))
    sys.stdout.flush()


def _read_with_progress(scope: Scope, src: Source, *, whole: bool) -> dict[str, str]:
    if not sys.stderr.isatty():
        values = scope.read(src, whole=whole)
    else:
        from rich.progress import Progress

        from keysafe.cli.output import console

        with Progress(console=console(True), transient=True) as bar:
            task = bar.add_task("reading secrets", total=None)

            def step(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            values = scope.read(src, progress=step, whole=whole)
    note = scope.skipped_note()
    if note:
        warn(note)
    return values


def default_k8s_name(org: str, domain: str) -> str:
    """``keysafe-ORG-DOMAIN`` as a DNS-1123 name (lower case, '-' for anything else)."""
    import re

    raw = re.sub(r"[^a-z0-9-]+", "-", f"keysafe-{org}-{domain}".lower()).strip("-")
    return raw[:253].rstrip("-")


def _render(fmt: str, values: dict[str, str], *, org: str, domain: str | None,
            name: str | None, namespace: str | None, default_domain: str) -> str:
    from keysafe.workloads.formats import kube, render

    if fmt != "k8s-secret":
        return render(fmt, values)
    render_secret, _ = kube()
    return render_secret(values, name=name or default_k8s_name(org, domain or default_domain),
                         namespace=namespace,
                         labels={"app.kubernetes.io/managed-by": "keysafe"})


def _external_secret(names: list[str], *, org: str, domain: str | None, name: str | None,
                     namespace: str | None, server_url: str, token_secret: str,
                     refresh_interval: str, default_domain: str,
                     variables: dict[str, str], fields: list[tuple[str, str, str]]) -> str:
    from keysafe.workloads.formats import kube

    _, render_external_secret = kube()
    return render_external_secret(
        names, name=name or default_k8s_name(org, domain or default_domain),
        namespace=namespace, server_url=server_url, org=org, domain=domain,
        token_secret=token_secret, refresh_interval=refresh_interval, variables=variables,
        fields=fields)


def _store_external_secret(source: Source, names: list[str], *, org: str,
                           domain: str | None, name: str | None, namespace: str | None,
                           store: str | None, refresh_interval: str,
                           variables: dict[str, str],
                           fields: list[tuple[str, str, str]]) -> str:
    """The operator reading the configured store itself: each secret's name in that
    store (the backend's ``eso_remote_ref``; ``eso_field_ref`` for a field of JSON
    credentials) and the store's ClusterSecretStore."""
    from keysafe.errors import Unsupported
    from keysafe.workloads.formats import kube
    from keysafe.workloads.sources import StoreSource

    assert isinstance(source, StoreSource)  # --via-server was refused
    mgr = source.manager
    backend: Any = mgr.backend
    if not hasattr(backend, "eso_provider"):
        raise Unsupported(
            f"the External Secrets Operator cannot read the {backend.name} store this "
            "environment uses; --provider store works with aws-sm, aws-ssm, vault, gcp and "
            "azure (use the keysafe webhook provider: --server-url)")
    kube()  # PyYAML present, or the install hint
    from keysafe.kube import eso_field_ref, render_store_external_secret

    refs = [(secret, backend.eso_remote_ref(mgr.path(secret, org, domain=domain)))
            for secret in names]
    # Vault's remoteRef reads the stored value: once per secret, however many fields.
    tabled = {secret: backend.eso_remote_ref(mgr.path(secret, org, domain=domain))
              for secret in dict.fromkeys(s for s, _, _ in fields)}
    field_refs = [(secret, var, eso_field_ref(backend.name, tabled[secret], secret, fld))
                  for secret, fld, var in fields]
    provider = backend.eso_provider()
    server = provider.get("vault", {}).get("server")
    if server and _loopback_url(server):
        warn(f"the Vault address {server} is a loopback address: the operator in the "
             "cluster cannot reach it; set the profile's url to the address pods use")
    if namespace is None:
        warn("the ClusterSecretStore serves ExternalSecrets in every namespace; give "
             "--namespace to limit it to one")
    # One store per environment, store and namespace: applying another environment's
    # manifests never replaces this one.
    default_store = "-".join(filter(None, ["keysafe", mgr.env, backend.name, namespace]))
    return render_store_external_secret(
        refs, provider,
        name=name or default_k8s_name(org, domain or source.default_domain),
        namespace=namespace, store=store or default_store,
        refresh_interval=refresh_interval, variables=variables, fields=field_refs)


def _loopback_url(url: str) -> bool:
    from urllib.parse import urlsplit

    from keysafe.hosts import is_loopback_host

    return is_loopback_host(urlsplit(url).hostname or "")


def _check_output(path: Path) -> None:
    """InvalidValue (exit 2) naming ``--output`` when it cannot be a file to write:
    checked before any secret is read."""
    from keysafe.errors import InvalidValue

    if path.is_dir():
        raise InvalidValue(f"--output {path} is a directory; give a file name")
    if not path.resolve().parent.is_dir():
        raise InvalidValue(f"--output {path}: the directory {path.parent} does not exist")


def _write_file(path: Path, data: bytes, *, append: bool) -> None:
    """0600 for a new file; a replaced file is swapped in whole (never half written).
    InvalidValue naming ``path`` (never the temporary file) when it cannot be written."""
    from keysafe.errors import InvalidValue

    try:
        _write(path, data, append=append)
    except OSError as exc:
        raise InvalidValue(f"cannot write --output {path}: "
                           f"{exc.strerror or type(exc).__name__}") from None


def _write(path: Path, data: bytes, *, append: bool) -> None:
    if append:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "ab") as fh:
            fh.write(data)
        return
    import tempfile

    target = path.resolve()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:  # mkstemp creates it 0600
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
