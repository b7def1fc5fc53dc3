"""Moving secrets from one store to another (``keysafe migrate`` and its library form).

A migration is a client of two SecretManagers, never of a backend: every secret the
source lists in the scope (an env, optionally an org and a domain) is read with
``src.get`` and written with ``dst.put`` under the same reference (app, env, org,
domain, name), with its metadata (description, type, tags, rotation period, expiry and,
where the destination can set it, the time of the last rotation). Only the current
value moves: a secret arrives at the destination as version 1.

Safe to run twice, and resumable:

- a new destination secret is written with ``expected_version=0``, so a secret that
  already exists is never given a second version by accident; an existing one is
  compared value by value (``get`` on both sides, compared in memory, never shown) and
  skipped as ``same_value`` or ``exists`` (different value) unless ``overwrite``;
- with ``state_path``, each source path done is appended to a small state file as it
  is done; a re-run skips those without reading them (``done``). The file is removed
  when a run finishes with nothing failed, so it only lives while a migration is
  unfinished.

No function here returns, logs or raises a secret value: results carry paths,
reasons, error codes and the errors' own (vetted) messages.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from keysafe.errors import (
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidName,
    InvalidValue,
    KeysafeError,
    NotFound,
    Unsupported,
)

if TYPE_CHECKING:
    from keysafe.config import Settings
    from keysafe.manager.manager import SecretManager
    from keysafe.models import SecretMetadata
    from keysafe.naming import SecretRef

__all__ = [
    "CARRIED_FIELDS",
    "MigrationInterrupted",
    "MigrationItem",
    "MigrationResult",
    "VerifyReport",
    "metadata_differences",
    "migrate",
    "profile_settings",
    "same_store",
    "verify",
]

Outcome = Literal["moved", "skipped", "failed"]
Progress = Callable[[int, int], None]

#: Reasons an item was moved.
CREATED, OVERWRITTEN, METADATA = "created", "overwritten", "metadata"
#: Reasons an item was skipped.
DONE, SAME_VALUE, EXISTS, UNSUPPORTED, GONE = (
    "done", "same_value", "exists", "unsupported", "gone")
#: Metadata a migration carries (and ``verify`` compares).
CARRIED_FIELDS = ("description", "secret_type", "tags", "rotation_days", "expires_at",
                  "last_rotated")
#: After this many failures in a row with the store unreachable, stop: each would
#: otherwise wait out its own timeouts and retries.
MAX_CONSECUTIVE_UNAVAILABLE = 5
_STATE_FORMAT = 1
# Errors that say "the destination cannot hold this secret as it is": not worth
# retrying, and not a failure of the run.
_REFUSALS = (InvalidName, InvalidValue, Unsupported)


@dataclass(frozen=True, slots=True)
class MigrationItem:
    """What happened to one secret. ``message`` comes from an error or a check and
    never holds a value."""

    path: str
    target: str
    outcome: Outcome
    reason: str
    message: str | None = None
    version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "target": self.target, "outcome": self.outcome,
                "reason": self.reason, "message": self.message, "version": self.version}


@dataclass
class MigrationResult:
    """The summary of one run (or, with ``dry_run``, of what a run would do)."""

    source: str
    destination: str
    scope: str
    dry_run: bool
    overwrite: bool
    total: int
    items: list[MigrationItem] = field(default_factory=list)
    state_path: Path | None = None
    #: True when the state file was left in place for a re-run to resume from.
    state_kept: bool = False
    #: Why the run stopped before the end (the store became unreachable), else None.
    stopped: str | None = None
    interrupted: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def _of(self, outcome: Outcome) -> list[MigrationItem]:
        return [i for i in self.items if i.outcome == outcome]

    @property
    def moved(self) -> list[MigrationItem]:
        return self._of("moved")

    @property
    def skipped(self) -> list[MigrationItem]:
        return self._of("skipped")

    @property
    def failed(self) -> list[MigrationItem]:
        return self._of("failed")

    @property
    def not_attempted(self) -> int:
        return self.total - len(self.items)

    @property
    def ok(self) -> bool:
        """Nothing failed and every secret in scope was looked at."""
        return not self.failed and self.not_attempted == 0

    def counts(self) -> dict[str, Any]:
        by: dict[str, dict[str, int]] = {"moved": {}, "skipped": {}, "failed": {}}
        for i in self.items:
            by[i.outcome][i.reason] = by[i.outcome].get(i.reason, 0) + 1
        return {"total": self.total, "moved": len(self.moved), "skipped": len(self.skipped),
                "failed": len(self.failed), "not_attempted": self.not_attempted,
                "moved_by_reason": by["moved"], "skipped_by_reason": by["skipped"],
                "failed_by_error": by["failed"]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "destination": self.destination, "scope": self.scope,
            "dry_run": self.dry_run, "overwrite": self.overwrite, "ok": self.ok,
            "counts": self.counts(), "seconds": round(self.seconds, 3),
            "stopped": self.stopped, "interrupted": self.interrupted,
            "state_file": str(self.state_path) if self.state_kept else None,
            "notes": list(self.notes),
            "moved": [i.to_dict() for i in self.moved],
            "skipped": [i.to_dict() for i in self.skipped],
            "failed": [i.to_dict() for i in self.failed],
        }


class MigrationInterrupted(KeyboardInterrupt):
    """Raised (from the original KeyboardInterrupt) when a run is interrupted; carries
    the partial result. The state file is consistent: a re-run resumes."""

    def __init__(self, result: MigrationResult) -> None:
        super().__init__("migration interrupted")
        self.result = result


# -- the state file -------------------------------------------------------------------
class _State:
    """An append-only file: one JSON header line, then per secret ``{"writing": path}``
    before its write and ``"path"`` once it is done. Appends are flushed one by one, so
    an interruption loses at most the secret in flight, which a re-run finds at the
    destination (same value) and, knowing it wrote it, finishes (its metadata)."""

    def __init__(self, path: Path, header: dict[str, Any], *, write: bool) -> None:
        self.path = path
        self.header = header
        self.done: set[str] = set()
        #: Paths whose write was started (by an earlier run, if not also done).
        self.writing: set[str] = set()
        self._fh: IO[str] | None = None
        if path.is_file():
            self._load()
        if write:
            self._open()

    def _load(self) -> None:
        try:
            with self.path.open(encoding="utf-8") as fh:
                first = fh.readline()
                try:
                    head = json.loads(first) if first else None
                except ValueError:
                    head = None
                if head is not None and head != self.header:
                    raise ConfigError(
                        f"the state file {self.path} belongs to another migration "
                        f"({_scope_text(head)}); remove it, or migrate that scope")
                for line in fh:
                    try:
                        p = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by a crash: that secret is redone
                    if isinstance(p, str):
                        self.done.add(p)
                    elif isinstance(p, dict) and isinstance(p.get("writing"), str):
                        self.writing.add(p["writing"])
        except OSError as exc:
            raise ConfigError(f"cannot read the state file {self.path}: "
                              f"{exc.strerror or type(exc).__name__}") from None

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fh = os.fdopen(fd, "a", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write the state file {self.path}: "
                              f"{exc.strerror or type(exc).__name__}") from None
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock, as before
            pass
        except OSError:
            fh.close()
            raise Conflict(f"another migration is using the state file {self.path}") from None
        if fh.tell() == 0:
            fh.write(json.dumps(self.header, sort_keys=True) + "\n")
            fh.flush()
        self._fh = fh

    def add(self, path: str) -> None:
        self.done.add(path)
        self._append(json.dumps(path))

    def start(self, path: str) -> None:
        """Note a write about to be made: if the run stops before ``add``, the next
        one knows the destination's copy is this migration's own, and may finish it."""
        self._append(json.dumps({"writing": path}))

    def _append(self, line: str) -> None:
        if self._fh is not None:
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self, *, remove: bool) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            if remove:
                self.path.unlink(missing_ok=True)  # while still holding the lock
            fh.close()


def _scope_text(head: dict[str, Any]) -> str:
    return (f"{head.get('source')} -> {head.get('destination')}, env "
            f"{head.get('env')}, org {head.get('org') or '*'}, "
            f"domain {head.get('domain') or '*'}")


# -- comparing metadata ---------------------------------------------------------------
def _differs(field_name: str, a: Any, b: Any) -> bool:
    if field_name == "tags":
        return dict(a or {}) != dict(b or {})
    if field_name == "description":
        a, b = a or None, b or None  # "" and None are both "no description"
    if a is None:
        return False  # nothing to carry: whatever the destination has is kept
    if isinstance(a, datetime):
        # Stores keep times at different precisions (seconds, microseconds, floats).
        return not isinstance(b, datetime) or abs((a - b).total_seconds()) >= 1
    return bool(a != b)


def metadata_differences(src: SecretMetadata, dst: SecretMetadata) -> list[str]:
    """The carried fields (CARRIED_FIELDS) whose destination value is not the source's.
    A field empty at the source is not compared (a write cannot carry "nothing")."""
    return [f for f in CARRIED_FIELDS if _differs(f, getattr(src, f), getattr(dst, f))]


# -- migrate --------------------------------------------------------------------------
class _Run:
    def __init__(self, src: SecretManager, dst: SecretManager, *, dry_run: bool,
                 overwrite: bool, state: _State | None) -> None:
        self.src, self.dst = src, dst
        self.dry_run, self.overwrite, self.state = dry_run, overwrite, state
        self.notes: list[str] = []
        self._can_set_last_rotated = True

    def one(self, meta: SecretMetadata) -> MigrationItem:
        src, dst = self.src, self.dst
        ref = src.parse(meta.path)
        kw = _where(ref)
        target = dst.path(ref.name, ref.org, **kw)

        def item(outcome: Outcome, reason: str, message: str | None = None,
                 version: int | None = None) -> MigrationItem:
            return MigrationItem(meta.path, target, outcome, reason, message, version)

        if self.state is not None and meta.path in self.state.done:
            return item("skipped", DONE, "done by an earlier run (state file)")
        try:
            value = src.get(ref.name, ref.org, fresh=True, **kw)
        except NotFound:
            return item("skipped", GONE, "deleted at the source since it was listed")
        except _REFUSALS as exc:
            return item("skipped", UNSUPPORTED, exc.message)
        if self.dry_run:
            return self._plan(meta, ref, value, item)
        self._start(meta.path)
        try:
            info = dst.put(ref.name, value, ref.org, expected_version=0, check_format=False,
                           **kw, **_put_fields(meta))
        except Conflict:
            pass  # it exists: compare below
        except _REFUSALS as exc:
            return item("skipped", UNSUPPORTED, exc.message)
        else:
            note = self._last_rotated(meta, ref)
            self._done(meta.path)
            return item("moved", CREATED, note, info.version)
        return self._existing(meta, ref, value, item)

    def _existing(self, meta: SecretMetadata, ref: SecretRef, value: str,
                  item: Callable[..., MigrationItem]) -> MigrationItem:
        dst = self.dst
        kw = _where(ref)
        theirs = dst.describe(ref.name, ref.org, include_deleted=True, **kw)
        if not theirs.deleted and dst.get(ref.name, ref.org, fresh=True, **kw) == value:
            diff = metadata_differences(meta, theirs)
            if not diff:
                self._done(meta.path)
                return item("skipped", SAME_VALUE)
            ours = self.state is not None and meta.path in self.state.writing
            if not (self.overwrite or ours):
                return item("skipped", SAME_VALUE,
                            f"metadata differs ({', '.join(diff)}); --overwrite brings it "
                            "in line")
            try:
                dst.update_metadata(ref.name, ref.org, **kw, **_metadata_update(meta, diff))
            except Unsupported as exc:
                return item("skipped", SAME_VALUE,
                            f"metadata differs ({', '.join(diff)}): {exc.message}")
            self._done(meta.path)
            why = "finished an interrupted copy: " if ours and not self.overwrite else ""
            return item("moved", METADATA, f"{why}updated {', '.join(diff)}",
                        theirs.current_version)
        if not self.overwrite:
            why = ("deleted (recoverably) at the destination" if theirs.deleted
                   else "holds a different value at the destination")
            return item("skipped", EXISTS, why)
        self._start(meta.path)
        try:
            info = dst.put(ref.name, value, ref.org,
                           expected_version=theirs.current_version, check_format=False,
                           **kw, **_put_fields(meta))
        except _REFUSALS as exc:
            return item("skipped", UNSUPPORTED, exc.message)
        note = self._last_rotated(meta, ref)
        self._done(meta.path)
        return item("moved", OVERWRITTEN, note, info.version)

    def _plan(self, meta: SecretMetadata, ref: SecretRef, value: str,
              item: Callable[..., MigrationItem]) -> MigrationItem:
        """What a real run would do, from reads only."""
        dst = self.dst
        kw = _where(ref)
        try:
            theirs = dst.describe(ref.name, ref.org, include_deleted=True, **kw)
        except NotFound:
            return item("moved", CREATED, "would be created")
        if not theirs.deleted and dst.get(ref.name, ref.org, fresh=True, **kw) == value:
            diff = metadata_differences(meta, theirs)
            ours = self.state is not None and meta.path in self.state.writing
            if diff and (self.overwrite or ours):
                return item("moved", METADATA, f"would update {', '.join(diff)}")
            return item("skipped", SAME_VALUE,
                        f"metadata differs ({', '.join(diff)})" if diff else None)
        if self.overwrite:
            return item("moved", OVERWRITTEN, "would be overwritten")
        return item("skipped", EXISTS, "deleted (recoverably) at the destination"
                    if theirs.deleted else "holds a different value at the destination")

    def _last_rotated(self, meta: SecretMetadata, ref: SecretRef) -> str | None:
        """``put`` stamps last_rotated with now; set the source's time back, where the
        destination can update metadata."""
        if meta.last_rotated is None:
            return None
        if not self._can_set_last_rotated:
            return "last_rotated not carried"
        try:
            self.dst.update_metadata(ref.name, ref.org, last_rotated=meta.last_rotated,
                                     **_where(ref))
        except Unsupported as exc:
            self._can_set_last_rotated = False
            self.notes.append(f"{exc.message}: secrets copied there show the migration time "
                              "as their last rotation")
            return "last_rotated not carried"
        except KeysafeError as exc:
            raise type(exc)(
                f"the value was written, but its last_rotated was not set ({exc.message}); "
                "running the migration again finishes it (with --overwrite when it keeps "
                "no state file)") from exc
        return None

    def _done(self, path: str) -> None:
        if self.state is not None:
            self.state.add(path)

    def _start(self, path: str) -> None:
        if self.state is not None:
            self.state.start(path)


def _where(ref: SecretRef) -> dict[str, Any]:
    return {"domain": ref.domain, "env": ref.env}


def _put_fields(meta: SecretMetadata) -> dict[str, Any]:
    return {"description": meta.description or None, "secret_type": meta.secret_type,
            "tags": dict(meta.tags), "rotation_days": meta.rotation_days,
            "expires_at": meta.expires_at}


def _metadata_update(meta: SecretMetadata, fields_: Iterable[str]) -> dict[str, Any]:
    return {f: (dict(meta.tags) if f == "tags" else getattr(meta, f)) for f in fields_}


def _scope(src: SecretManager, org: str | None, domain: str | None) -> str:
    return src.prefix(org, domain)


def migrate(src: SecretManager, dst: SecretManager, *, org: str | None = None,
            domain: str | None = None, dry_run: bool = False, overwrite: bool = False,
            state_path: str | os.PathLike[str] | None = None,
            progress: Progress | None = None) -> MigrationResult:
    """Copy every secret of ``src``'s env (optionally one org, one domain) to ``dst``
    under the same reference (app, env, org, domain, name); the path may differ when
    the two managers' naming templates do.

    ``dry_run`` reads both sides and reports what a run would do, writing nothing
    (the state file is read, not written). ``overwrite`` replaces a destination value
    that differs (a new version, check-and-set against the version seen) and brings
    differing metadata in line. ``state_path`` makes the run resumable (see the module
    docstring). ``progress(done, total)`` is called after each secret.

    Per-secret errors do not stop the run: they become ``failed`` items (a destination
    that refuses a secret as it is, by name, size or capability, makes it ``skipped``
    as ``unsupported``). After MAX_CONSECUTIVE_UNAVAILABLE failures in a row with a
    store unreachable the run stops (``result.stopped``).

    Raises ConfigError (the managers' apps differ, or they are the same manager; a state
    file of another migration), Conflict (another run holds the state file), the
    source's list errors, BackendUnavailable when the destination does not answer
    before anything is done, and MigrationInterrupted (a KeyboardInterrupt) with the
    partial result.
    """
    if src is dst:
        raise ConfigError("the source and the destination are the same manager")
    if src.app != dst.app:
        raise ConfigError(f"the source's app is {src.app!r} and the destination's "
                          f"{dst.app!r}: a migration keeps each secret's reference, app "
                          "included, so both must use the same app")
    if domain is not None:
        from keysafe.naming import validate_segment

        validate_segment("domain", domain)
    t0 = time.perf_counter()
    listed = src.list(org, domain=domain)
    dst.ping()
    result = MigrationResult(src.backend.name, dst.backend.name, _scope(src, org, domain),
                             dry_run, overwrite, len(listed))
    state = None
    if state_path is not None:
        header = {"keysafe_migration": _STATE_FORMAT, "source": src.backend.name,
                  "destination": dst.backend.name, "app": src.app, "env": src.env,
                  "org": org, "domain": domain}
        state = _State(Path(state_path), header, write=not dry_run)
        result.state_path = state.path
    run = _Run(src, dst, dry_run=dry_run, overwrite=overwrite, state=state)
    unavailable = 0
    if progress is not None:
        progress(0, len(listed))
    try:
        for n, meta in enumerate(listed, 1):
            try:
                it = run.one(meta)
            except KeysafeError as exc:
                it = MigrationItem(meta.path, _target(src, dst, meta.path), "failed",
                                   exc.code, exc.message)
            except Exception as exc:  # a foreign error: its text is not vetted, so type only
                it = MigrationItem(meta.path, _target(src, dst, meta.path), "failed",
                                   "unexpected", f"unexpected {type(exc).__name__}")
            result.items.append(it)
            unavailable = unavailable + 1 if it.reason == BackendUnavailable.code else 0
            if progress is not None:
                progress(n, len(listed))
            if unavailable >= MAX_CONSECUTIVE_UNAVAILABLE:
                result.stopped = (f"stopped after {unavailable} failures in a row with a "
                                  f"store unavailable (last: {it.message})")
                break
    except KeyboardInterrupt as exc:
        result.interrupted = True
        _finish(result, run, state, t0)
        raise MigrationInterrupted(result) from exc
    except BaseException:  # from the progress callback: release the state file, keep it
        if state is not None:
            state.close(remove=False)
        raise
    _finish(result, run, state, t0)
    return result


def _finish(result: MigrationResult, run: _Run, state: _State | None, t0: float) -> None:
    result.notes = run.notes
    result.seconds = time.perf_counter() - t0
    if state is not None:
        complete = (not result.dry_run and not result.interrupted
                    and not result.failed and result.not_attempted == 0)
        state.close(remove=complete)
        result.state_kept = not complete and state.path.is_file()


def _target(src: SecretManager, dst: SecretManager, path: str) -> str:
    try:
        ref = src.parse(path)
        return dst.path(ref.name, ref.org, domain=ref.domain, env=ref.env)
    except KeysafeError:
        return path


# -- verify ---------------------------------------------------------------------------
@dataclass
class VerifyReport:
    """Value-by-value (and metadata) comparison; paths only, never values."""

    checked: int = 0
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    metadata: list[tuple[str, list[str]]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.metadata or self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "ok": self.ok, "missing": self.missing,
                "mismatched": self.mismatched,
                "metadata": [{"path": p, "fields": f} for p, f in self.metadata],
                "errors": [{"path": p, "message": m} for p, m in self.errors],
                "seconds": round(self.seconds, 3)}


def verify(src: SecretManager, dst: SecretManager, paths: Iterable[str] | None = None, *,
           metadata: bool = True, progress: Progress | None = None) -> VerifyReport:
    """Compare each source path's current value with the destination's, and (with
    ``metadata``) the carried metadata fields. ``paths`` are source paths; None means
    every secret in the source's env. Problems are collected, never raised, except
    the source's list errors when ``paths`` is None."""
    t0 = time.perf_counter()
    todo = [m.path for m in src.list()] if paths is None else list(paths)
    report = VerifyReport()
    if progress is not None:
        progress(0, len(todo))
    for n, path in enumerate(todo, 1):
        try:
            ref = src.parse(path)
            kw = _where(ref)
            mine = src.get(ref.name, ref.org, fresh=True, **kw)
            try:
                theirs = dst.get(ref.name, ref.org, fresh=True, **kw)
            except NotFound:
                report.missing.append(path)
            else:
                if theirs != mine:
                    report.mismatched.append(path)
                elif metadata:
                    diff = metadata_differences(
                        src.describe(ref.name, ref.org, **kw),
                        dst.describe(ref.name, ref.org, **kw))
                    if diff:
                        report.metadata.append((path, diff))
        except KeysafeError as exc:
            report.errors.append((path, exc.message))
        except Exception as exc:
            report.errors.append((path, f"unexpected {type(exc).__name__}"))
        report.checked += 1
        if progress is not None:
            progress(n, len(todo))
    report.seconds = time.perf_counter() - t0
    return report


# -- profiles -------------------------------------------------------------------------
def profile_settings(profile: str | None = None, *, backend: str | None = None,
                     env: str | None = None,
                     environ: Any = None) -> Settings:
    """Settings for one side of a migration.

    ``profile``: what ``load_settings(env=profile)`` gives, i.e. the backend and options
    of ``[keysafe.profiles.<profile>]`` in keysafe.toml (``prod`` finds ``production``),
    with everything else (home, master key, naming template, app) as configured. It
    must name a profile table or be an environment name keysafe knows (local, dev,
    staging, production, test, and their spellings): a typo must not quietly open the
    default store. ``backend``: instead of a profile, that backend with the current
    environment's settings and no profile options (the store's own variables, like
    VAULT_ADDR or AWS_ENDPOINT_URL, configure it). ``env`` sets the environment (the
    path segment of the secrets to move); by default the profile's name, or with
    ``backend`` the current environment.

    Raises ConfigError naming the problem.
    """
    from keysafe.config import ENV_PROFILES, load_settings

    if (profile is None) == (backend is None):
        raise ConfigError("give a profile or a backend (one of them)")
    if profile is not None:
        name = profile.strip()
        if not name:
            raise ConfigError("the profile name is empty")
        s = load_settings(environ, env=name)
        from_table = "[profiles." in s.sources.get("backend_options", "")
        if not from_table and name.lower() not in ENV_PROFILES:
            where = (f"{s.config_file} has no [keysafe.profiles.{name}] table"
                     if s.config_file else "no keysafe.toml was found")
            raise ConfigError(f"unknown profile {name!r}: {where}, and {name!r} is not an "
                              f"environment name ({', '.join(sorted(ENV_PROFILES))})")
    else:
        assert backend is not None
        s = load_settings(environ).with_overrides(backend=backend, backend_options={})
    if env is not None:
        s = s.with_overrides(env=env.strip().lower())
    return s


def same_store(a: Settings, b: Settings) -> bool:
    """Whether two settings open the same store (then a migration has nothing to do)."""
    if a.backend != b.backend:
        return False
    if a.backend == "memory":
        return False  # each manager gets its own
    if a.backend == "sqlite":
        return a.sqlite_path.resolve() == b.sqlite_path.resolve()
    return bool(a.backend_options == b.backend_options)
