"""``keysafe import``: copy a .env file's (or the environment's) well-known secrets into
the store. The work is in ``keysafe.importer``; this module parses and renders, and
never prints a value."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keysafe.cli import exitcodes
from keysafe.cli.options import Domain, Env, Json
from keysafe.cli.output import command, emit_json, say, table, warn
from keysafe.cli.output import progress as progress_bar
from keysafe.cli.reading import open_target

if TYPE_CHECKING:
    from keysafe.importer import ImportResult

_STYLES = {"imported": "green", "would_import": "cyan", "skipped": "yellow",
           "unknown": "dim", "failed": "red"}
_LABELS = {"imported": "imported", "would_import": "would import", "skipped": "skipped",
           "unknown": "unknown", "failed": "failed"}


def register(app: typer.Typer) -> None:
    app.command("import")(import_secrets)


@command
def import_secrets(
    file: Annotated[Path | None, typer.Argument(
        metavar="FILE", exists=True, dir_okay=False, readable=True,
        help="A .env file to import (parsed by python-dotenv).", show_default=False)] = None,
    org: Annotated[str, typer.Option(
        "--org", help="Organisation (tenant) to import into.", show_default=False)] = "",
    domain: Domain = None,
    env: Env = None,
    from_env: Annotated[bool, typer.Option(
        "--from-env", help="Import the catalog's variables from this process's "
                           "environment instead of a file (spec 001's migration).")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show what would be imported; write nothing.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Write a new version of secrets that exist already "
                            "(default: skip them).")] = False,
    include_unknown: Annotated[bool, typer.Option(
        "--include-unknown", help="Also import variables the catalog does not know, "
                                  "under their lower-cased name.")] = False,
    no_format_check: Annotated[bool, typer.Option(
        "--no-format-check", help="Skip the catalog's format checks.")] = False,
    no_interpolate: Annotated[bool, typer.Option(
        "--no-interpolate", help="Take ${VAR} in the file literally.")] = False,
    from_store: Annotated[list[str] | None, typer.Option(
        "--from-store", metavar="STORE:NAME",
        help="Adopt secrets another tool wrote into a cloud store: STORE is a backend "
             "(aws-sm, aws-ssm, vault, gcp, azure; configured by its own variables) or a "
             "keysafe.toml profile; NAME is the store's name for one secret, or a prefix "
             "ending in * for all under it. Repeat for more.", show_default=False)] = None,
    map_keys: Annotated[list[str] | None, typer.Option(
        "--map", metavar="KEY=NAME",
        help="With --from-store: the secret name for a JSON key, a store name, or "
             "NAME#KEY. Repeat for more.", show_default=False)] = None,
    whole: Annotated[bool, typer.Option(
        "--whole", help="With --from-store: keep a JSON object as one secret instead of "
                        "one secret per key.")] = False,
    exposed: Annotated[bool, typer.Option(
        "--exposed", help="The values were in the open (committed, shared): mark each one "
                          "exposed, due for rotation at once. A .env file git tracks is "
                          "marked so without asking.")] = False,
    as_json: Json = False,
) -> None:
    """Import secrets from a .env file, the environment or a cloud store into an org.

    Known variables map to catalog names (OPENAI_API_KEY -> openai_api_key, HF_TOKEN ->
    hf_api_token); unknown ones are listed. --from-store reads what other tools wrote
    (aws-sm:aragora/production/api-keys, 'gcp:aragora-*'): a flat JSON object becomes
    one secret per key. Existing secrets are skipped unless --overwrite. Values are
    never printed. Exits non-zero if any secret failed.
    """
    from keysafe import importer

    if sum((file is not None, from_env, bool(from_store))) != 1:
        raise typer.BadParameter("give a .env FILE, --from-env or --from-store (one of them)",
                                 param_hint="'FILE'")
    if not org:
        raise typer.BadParameter("--org is required", param_hint="'--org'")
    if from_env and include_unknown:
        raise typer.BadParameter(
            "--from-env imports only the catalog's variables (the environment also holds "
            "PATH, HOME, ...); put extra variables in a file instead",
            param_hint="'--include-unknown'")
    if not from_store and (map_keys or whole):
        raise typer.BadParameter("--map and --whole go with --from-store",
                                 param_hint="'--map'" if map_keys else "'--whole'")
    options: dict[str, Any] = {"domain": domain, "dry_run": dry_run, "overwrite": overwrite,
                               "include_unknown": include_unknown,
                               "check_format": not no_format_check}
    how = _git_exposure(file) if file is not None else None
    if exposed or how == "tracked":
        options["exposed"] = (f"{file} (committed to git)" if how == "tracked" else
                              str(file) if file is not None else
                              "the environment" if from_env else ", ".join(from_store or []))
    if from_store:
        store, names = _store_sources(from_store)
        result = _import_store(store, names, env, org, map_keys, whole, options)
    else:
        with open_target(env, exposing="exposed" in options and not dry_run) as mgr, \
                progress_bar("importing", transient=True) as progress:
            if file is not None:
                result = importer.import_file(mgr, file, org=org,
                                              interpolate=not no_interpolate,
                                              progress=progress, **options)
            else:
                result = importer.import_environ(mgr, org=org, progress=progress, **options)
    if as_json:
        emit_json(result.to_dict())
    else:
        _render(result)
    if file is not None:
        _warn_if_exposed(file, org, how)
    failed = result.failed
    if failed:
        first = failed[0]
        code = exitcodes.BY_ERROR_CODE.get(first.error_code or "", exitcodes.UNEXPECTED)
        raise typer.Exit(exitcodes.emit_error(
            first.error_code or "error",
            f"import: {len(failed)} secret(s) failed; first: {first.variable}: {first.reason}",
            code, as_json=as_json))


def _store_sources(values: list[str]) -> tuple[str, list[str]]:
    """(store, names) from ``STORE:NAME`` values, which must all name one store."""
    stores, names = set(), []
    for value in values:
        store, sep, name = value.partition(":")
        if not sep or not store.strip() or not name.strip():
            raise typer.BadParameter(f"{value!r}: expected STORE:NAME, such as "
                                     "aws-sm:aragora/production/api-keys",
                                     param_hint="'--from-store'")
        stores.add(store.strip())
        names.append(name.strip())
    if len(stores) > 1:
        raise typer.BadParameter(f"one store per import, not {', '.join(sorted(stores))}",
                                 param_hint="'--from-store'")
    return stores.pop(), names


def _import_store(store: str, names: list[str], env: str | None, org: str,
                  map_keys: list[str] | None, whole: bool,
                  options: dict[str, Any]) -> ImportResult:
    from keysafe.backends.registry import available, open_foreign
    from keysafe.foreign import import_from_store, parse_map
    from keysafe.migration import profile_settings

    mapping = parse_map(map_keys)
    as_backend = store in available()
    settings = profile_settings(None if as_backend else store,
                                backend=store if as_backend else None)
    with open_target(env, exposing="exposed" in options and not options["dry_run"]) as mgr:
        source = open_foreign(settings)
        try:
            with progress_bar("importing", transient=True) as progress:
                return import_from_store(mgr, source, names, org=org, store=store,
                                         mapping=mapping, split=not whole,
                                         progress=progress, **options)
        finally:
            source.close()


def _git_exposure(file: Path) -> str | None:
    from keysafe.scanning.sources import git_exposure

    return git_exposure(file)


def _warn_if_exposed(file: Path, org: str, how: str | None) -> None:
    """Spec 003's checklist: remove secrets from .env files, add .env to .gitignore.
    The import leaves the file as it was; say so when git could pick it up."""
    if how is not None:
        warn(f"{file} is {'tracked by git' if how == 'tracked' else 'not in .gitignore'} "
             f"and still holds the values: replace them with references (keysafe scan "
             f"{file} --import --org {org}) and add it to .gitignore"
             + ("; they were committed, so they are marked exposed: rotate them"
                if how == "tracked" else ""))


def _render(result: ImportResult) -> None:
    from rich.text import Text

    if not result.items:
        say(f"no variables found in {result.source}")
        return
    table(["variable", "secret", "result", "detail"],
          [[i.variable, i.path or i.name or "-",
            Text(_LABELS[i.status], style=_STYLES[i.status]),
            i.reason + (f" (version {i.version})" if i.status == "imported" else "")]
           for i in result.items],
          title=f"import from {result.source} into org {result.org}, domain {result.domain}"
                + (" (dry run)" if result.dry_run else ""))
    c = result.counts
    done = (f"would import {c['would_import']}" if result.dry_run
            else f"imported {c['imported']}")
    say(f"{done}, skipped {c['skipped']}, unknown {c['unknown']}, failed {c['failed']}"
        + ("; dry run: nothing was written" if result.dry_run else ""))
    unknown = result.with_status("unknown")
    if unknown:
        store = " --map KEY=NAME names them;" if result.source.endswith(" store") else ""
        say("not in the catalog: " + ", ".join(i.variable for i in unknown)
            + f" ({store} --include-unknown imports them under their lower-cased names)"
            .replace("( ", "("))
