"""``keysafe migrate``: copy secrets from one store to another (``keysafe.migration``).

Each side is a profile (``--from production``: what ``--env production`` opens, i.e.
the backend of ``[keysafe.profiles.production]``) or a backend by name
(``--from-backend vault``, configured by the store's own variables). Secrets keep their
reference (app, env, org, domain, name); ``--env`` chooses which env's secrets move
(default: the source profile's). Progress goes to stderr, the summary to stdout.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Annotated

import typer

from keysafe.cli import exitcodes
from keysafe.cli.options import Json, segment
from keysafe.cli.output import command, emit_json, say, table, warn
from keysafe.cli.output import progress as progress_bar

if TYPE_CHECKING:
    from pathlib import Path

    from keysafe.config import Settings
    from keysafe.migration import MigrationResult, VerifyReport

#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
#: Rows of skipped/failed secrets shown before "and N more" (--json has them all).
_SHOWN = 50


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate)


FromProfile = Annotated[str | None, typer.Option(
    "--from", metavar="PROFILE",
    help="Source profile: an environment name, or a profile table of keysafe.toml "
         "(keysafe.profiles.NAME: its backend and options).", show_default=False)]
ToProfile = Annotated[str | None, typer.Option(
    "--to", metavar="PROFILE", help="Destination profile (as --from).", show_default=False)]
FromBackend = Annotated[str | None, typer.Option(
    "--from-backend", metavar="NAME",
    help="Instead of --from: a backend by name (sqlite, vault, aws-sm, ...) configured by "
         "its own variables (VAULT_ADDR, AWS_ENDPOINT_URL, ...).", show_default=False)]
ToBackend = Annotated[str | None, typer.Option(
    "--to-backend", metavar="NAME", help="Instead of --to: a backend by name.",
    show_default=False)]
ScopeOrg = Annotated[str | None, typer.Option(
    "--org", help="Only this organisation's secrets (default: every org).",
    show_default=False, callback=segment("org"))]
ScopeDomain = Annotated[str | None, typer.Option(
    "--domain", help="Only this domain's secrets (default: every domain).",
    show_default=False, callback=segment("domain"))]
MigrateEnv = Annotated[str | None, typer.Option(
    "--env", help="Environment whose secrets move (the path segment, kept on both sides; "
                  "default: the --from profile's, else KEYSAFE_ENV/ENVIRONMENT/local).",
    show_default=False, callback=segment("env"))]


def _side(profile: str | None, backend: str | None, env: str | None,
          flag: str) -> tuple[str, Settings]:
    """(label, settings) for one side; usage errors for a missing or doubled choice."""
    from keysafe.migration import profile_settings

    if (profile is None) == (backend is None):
        both = profile is not None
        raise typer.BadParameter(
            f"give {'only ' if both else ''}one of --{flag} PROFILE and --{flag}-backend NAME",
            param_hint=f"'--{flag}'")
    settings = profile_settings(profile, backend=backend, env=env)
    label = f"profile {profile}" if profile is not None else f"backend {backend}"
    return label, settings


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:40] or "_"


def state_file(src: Settings, source: str, dest: str, org: str | None,
               domain: str | None) -> Path:
    """KEYSAFE_HOME/migrations/<from>-to-<to>-<hash>.state: one per (source,
    destination, app, env, org, domain), so a re-run of the same command resumes."""
    key = "\0".join([source, dest, src.app, src.env, org or "*", domain or "*"])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    name = f"{_slug(source.split(' ', 1)[1])}-to-{_slug(dest.split(' ', 1)[1])}-{digest}"
    return src.home / "migrations" / f"{name}.state"


@command
def migrate(
    source: FromProfile = None,
    dest: ToProfile = None,
    source_backend: FromBackend = None,
    dest_backend: ToBackend = None,
    org: ScopeOrg = None,
    domain: ScopeDomain = None,
    env: MigrateEnv = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Read both sides and report what would happen; write nothing."
    )] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace destination secrets whose value differs (a new "
                            "version) and bring differing metadata in line.")] = False,
    check: Annotated[bool, typer.Option(
        "--verify", help="Afterwards, compare every secret in scope value by value (and "
                         "its metadata) on both sides.")] = False,
    as_json: Json = False,
) -> None:
    """Copy secrets (current values and metadata) from one store to another.

    Every secret of the env (or one --org, one --domain) keeps its name: app, env, org,
    domain and name are the same on both sides. New destination secrets are created
    with check-and-set (never a second version by accident); existing ones are skipped,
    as "same value" or "exists", unless --overwrite. Interrupted runs resume: re-run
    the same command. Values are never shown.
    """
    from keysafe.migration import MigrationInterrupted, same_store
    from keysafe.migration import migrate as run_migration

    src_label, src_settings = _side(source, source_backend, env, "from")
    # Both sides move the same env: the destination takes the source's.
    dst_label, dst_settings = _side(dest, dest_backend, src_settings.env, "to")
    if same_store(src_settings, dst_settings):
        raise typer.BadParameter(
            f"{src_label} and {dst_label} open the same {src_settings.backend} store",
            param_hint="'--to'")
    state = state_file(src_settings, src_label, dst_label, org, domain)
    src = dst = None
    from keysafe.cli.reading import open_manager

    try:
        src = open_manager(settings=src_settings)
        dst = open_manager(settings=dst_settings)
        scope = src.prefix(org, domain)
        if not as_json:
            say(f"{'dry run: ' if dry_run else ''}migrating {scope}* from {src_label} "
                f"({src_settings.backend}) to {dst_label} ({dst_settings.backend})")
        try:
            with progress_bar("migrating" if not dry_run else "checking",
                              timing=True) as progress:
                result = run_migration(src, dst, org=org, domain=domain, dry_run=dry_run,
                                       overwrite=overwrite, state_path=state,
                                       progress=progress)
        except MigrationInterrupted as exc:
            _render(exc.result, src_label, dst_label, None, as_json=as_json)
            raise typer.Exit(exitcodes.emit_error(
                "interrupted", f"interrupted after {len(exc.result.items)} of "
                f"{exc.result.total} secret(s); run the same command again to resume",
                INTERRUPTED, as_json=as_json)) from None
        report = None
        if check and not dry_run:
            from keysafe.migration import verify

            # What should now be equal on both sides (not "exists": left different).
            paths = [i.path for i in result.items
                     if i.outcome == "moved" or i.reason in ("same_value", "done")]
            with progress_bar("verifying", timing=True) as progress:
                report = verify(src, dst, paths, progress=progress)
    finally:
        for mgr in (dst, src):
            if mgr is not None:
                mgr.close()
    _render(result, src_label, dst_label, report, as_json=as_json)
    _exit(result, report, as_json=as_json)


def _render(result: MigrationResult, src_label: str, dst_label: str,
            report: VerifyReport | None, *, as_json: bool) -> None:
    if as_json:
        data = result.to_dict()
        data.update({"from": src_label, "to": dst_label,
                     "verify": report.to_dict() if report is not None else None})
        emit_json(data)
        return
    c = result.counts()

    def detail(by: dict[str, int]) -> str:
        return (" (" + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in sorted(by.items()))
                + ")") if by else ""

    would = "would move" if result.dry_run else "moved"
    line = (f"{would} {c['moved']:,}{detail(c['moved_by_reason'])}; skipped "
            f"{c['skipped']:,}{detail(c['skipped_by_reason'])}; failed {c['failed']:,}"
            f"{detail(c['failed_by_error'])}")
    if c["not_attempted"]:
        line += f"; not attempted {c['not_attempted']:,}"
    say(f"{line}; {result.total:,} in scope, {result.seconds:.1f} s")
    # Worth a row: failures, and skips other than "already there / done before".
    rows = [i for i in result.items if i.outcome == "failed" or (
        i.outcome == "skipped" and i.reason != "done"
        and (i.reason != "same_value" or i.message))]
    if rows:
        table(["path", "outcome", "reason", "detail"],
              [[i.target, i.outcome, i.reason.replace("_", " "), i.message]
               for i in rows[:_SHOWN]])
        if len(rows) > _SHOWN:
            say(f"... and {len(rows) - _SHOWN:,} more (--json lists them all)")
    for note in result.notes:
        warn(note)
    if result.stopped:
        warn(result.stopped)
    if result.dry_run:
        say("dry run: nothing was written")
    elif result.state_kept and result.state_path is not None:
        say(f"progress is kept in {result.state_path}; run the same command again to "
            "resume (secrets already done are skipped)")
    if report is not None:
        if report.ok:
            say(f"verified {report.checked:,} secret(s): values and metadata match")
        else:
            table(["path", "problem"],
                  [[p, "missing at the destination"] for p in report.missing]
                  + [[p, "value differs"] for p in report.mismatched]
                  + [[p, f"metadata differs: {', '.join(f)}"] for p, f in report.metadata]
                  + [[p, f"could not compare: {m}"] for p, m in report.errors])


def _exit(result: MigrationResult, report: VerifyReport | None, *, as_json: bool) -> None:
    failed = result.failed
    if failed or result.stopped:
        statuses = {exitcodes.BY_ERROR_CODE.get(i.reason, exitcodes.UNEXPECTED)
                    for i in failed}
        codes = {i.reason for i in failed}
        status = statuses.pop() if len(statuses) == 1 else exitcodes.UNEXPECTED
        code = codes.pop() if len(codes) == 1 else "migration_incomplete"
        message = f"{len(failed):,} secret(s) could not be migrated"
        if result.stopped:
            message += f"; {result.stopped}"
        if result.state_kept:
            message += "; run the same command again to retry them"
        raise typer.Exit(exitcodes.emit_error(code, message, status, as_json=as_json))
    if report is not None and not report.ok:
        bad = len(report.missing) + len(report.mismatched) + len(report.metadata)
        raise typer.Exit(exitcodes.emit_error(
            "integrity_error", f"verification found {bad:,} difference(s) and "
            f"{len(report.errors):,} error(s)", exitcodes.INTEGRITY, as_json=as_json))
