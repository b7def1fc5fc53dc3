"""Importing secrets from a ``.env`` file or the process environment into a store
(spec 001's migration script, as a library call behind ``keysafe import``).

Known variables map to catalog names (``OPENAI_API_KEY`` -> ``openai_api_key``,
``HF_TOKEN`` -> ``hf_api_token``); unknown ones are reported, and imported under their
lower-cased name only when asked. Existing secrets are skipped unless ``overwrite``;
new ones are written with ``expected_version=0``, so a secret created meanwhile is
never clobbered. Values are never part of the result, a message or an error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from keysafe.errors import Conflict, KeysafeError, NotFound, Unsupported
from keysafe.naming import validate_segment

if TYPE_CHECKING:
    from keysafe.catalog import Catalog, WellKnownSecret
    from keysafe.models import SecretMetadata, VersionInfo
    from keysafe.naming import NamingTemplate, SecretRef

__all__ = ["Entry", "ImportItem", "ImportResult", "dotenv_entries", "import_entries",
           "import_environ", "import_file", "import_values"]


class Target(Protocol):
    """Where imported values go: a store's ``SecretManager``, or a keysafe server
    through the CLI's ``RemoteManager`` (its catalog, limits and naming the server's)."""

    @property
    def catalog(self) -> Catalog: ...
    @property
    def default_domain(self) -> str: ...
    @property
    def max_value_bytes(self) -> int: ...
    @property
    def naming(self) -> NamingTemplate: ...
    @property
    def app(self) -> str: ...

    def ref(self, name: str, org: str | None, *, domain: str | None) -> SecretRef: ...
    def path(self, name: str, org: str | None = None, *,
             domain: str | None = None) -> str: ...
    def has(self, name: str, org: str | None = None, *, domain: str | None = None) -> bool: ...
    def describe(self, name: str, org: str | None = None, *, domain: str | None = None,
                 include_deleted: bool = False) -> SecretMetadata: ...
    def get(self, name: str, org: str | None = None, *, domain: str | None = None,
            fresh: bool = False) -> str: ...
    def put(self, name: str, value: str, org: str | None = None, *,
            domain: str | None = None, expected_version: int | None = None,
            tags: Mapping[str, str] | None = None,
            check_format: bool = True) -> VersionInfo: ...
    def mark_exposed(self, name: str, org: str | None = None, *, where: str,
                     domain: str | None = None) -> SecretMetadata: ...


def may_read_values(target: Target) -> bool:
    """Whether ``target`` may read values back, to compare one with what was found: a
    store's manager may; through a server, only a token with the ``read`` permission
    (a writer's is blind, and a read it tries is a denial on its record)."""
    return bool(getattr(target, "may_read_values", True))


Status = Literal["imported", "would_import", "skipped", "unknown", "failed"]
STATUSES: tuple[Status, ...] = ("imported", "would_import", "skipped", "unknown", "failed")
#: keysafe's own settings (the master key among them) are never imported as secrets.
_OWN = "KEYSAFE_"


@dataclass(frozen=True, slots=True)
class ImportItem:
    """What happened to one variable. Never holds its value."""

    variable: str
    name: str | None
    status: Status
    reason: str = ""
    path: str | None = None
    version: int | None = None
    overwritten: bool = False
    error_code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"variable": self.variable, "name": self.name, "status": self.status,
                "reason": self.reason, "path": self.path, "version": self.version,
                "overwritten": self.overwritten, "error_code": self.error_code}


@dataclass(frozen=True)
class ImportResult:
    source: str
    org: str
    domain: str
    dry_run: bool
    items: tuple[ImportItem, ...] = field(default_factory=tuple)

    def with_status(self, status: Status) -> list[ImportItem]:
        return [i for i in self.items if i.status == status]

    @property
    def counts(self) -> dict[str, int]:
        return {s: len(self.with_status(s)) for s in STATUSES}

    @property
    def failed(self) -> list[ImportItem]:
        return self.with_status("failed")

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "org": self.org, "domain": self.domain,
                "dry_run": self.dry_run, "ok": self.ok, "counts": self.counts,
                "items": [i.to_dict() for i in self.items]}


@dataclass(frozen=True, slots=True)
class Entry:
    """One value to import. ``variable`` says where it came from (``OPENAI_API_KEY`` in a
    .env file, ``aragora/production/api-keys#anthropic`` in a store); ``name`` is the
    secret it becomes and ``known`` whether the catalog knows that name (an unknown one
    is imported only when asked); ``env_var`` is the variable the app reads it as, kept
    as the ``env_var`` tag where the name would give another (None: no such variable)."""

    variable: str
    value: str | None
    name: str
    known: bool
    env_var: str | None = None


def dotenv_entries(values: Mapping[str, str | None], catalog: Catalog) -> list[Entry]:
    """Variables (a .env file's, the environment's) as entries: known ones take their
    catalog name (``HF_TOKEN`` -> ``hf_api_token``), others their lower-cased one."""
    out = []
    for var, value in values.items():
        entry = catalog.by_env_var(var)
        out.append(Entry(var, value, entry.name if entry else var.lower(), entry is not None,
                         var))
    return out


@dataclass
class _Plan:
    variable: str
    name: str | None
    value: str | None
    entry: WellKnownSecret | None
    env_var: str | None = None
    status: Status | None = None  # decided before any store call (None: to import)
    reason: str = ""
    error_code: str | None = None


def _plan(entries: Iterable[Entry], catalog: Catalog, *, include_unknown: bool,
          check_format: bool, max_value_bytes: int, unknown_hint: str) -> list[_Plan]:
    plans: list[_Plan] = []
    chosen: dict[str, _Plan] = {}  # name -> the variable that will provide it
    for e in entries:
        if (e.env_var or "").upper().startswith(_OWN):
            plans.append(_Plan(e.variable, None, None, None, None, "skipped",
                               "a keysafe setting, never imported"))
            continue
        entry = catalog.get(e.name)
        p = _Plan(e.variable, e.name, e.value, entry, e.env_var)
        plans.append(p)
        if e.value is None or not e.value.strip():
            # Nothing to import, known or not.
            p.status = "skipped"
            p.reason = "no value (a name without '=')" if e.value is None else "empty value"
            continue
        if not e.known:
            try:
                validate_segment("name", e.name)
            except KeysafeError:
                p.status, p.reason = "unknown", "not in the catalog, and not usable as a name"
                continue
            if not include_unknown:
                p.status = "unknown"
                p.reason = unknown_hint.format(name=e.name)
                continue
        _check_value(p, check_format, max_value_bytes)
        if p.status is not None:
            continue
        other = chosen.get(e.name)
        if other is None:
            chosen[e.name] = p
        elif entry is not None and (e.env_var or "").upper() == entry.env_var.upper():
            # The catalog's own variable beats an alias of it (HF_API_TOKEN over HF_TOKEN).
            other.status, other.reason = "skipped", f"same secret as {e.variable}, which is used"
            chosen[e.name] = p
        else:
            p.status, p.reason = "skipped", f"same secret as {other.variable}, which is used"
    return plans


def _check_value(p: _Plan, check_format: bool, max_value_bytes: int) -> None:
    value = p.value
    assert value is not None
    entry = p.entry
    if entry is not None and entry.placeholder and value.strip() == entry.placeholder.strip():
        p.status, p.reason = "skipped", "the catalog's example placeholder, not a real value"
        return
    size = len(value.encode())
    if size > max_value_bytes:
        p.status, p.error_code = "failed", "value_too_large"
        p.reason = f"value is {size} bytes; the limit is {max_value_bytes}"
        return
    if check_format and entry is not None:
        problem = entry.check_format(value)
        if problem:
            p.status, p.reason, p.error_code = "failed", problem, "invalid_value"


def import_values(
    mgr: Target,
    values: Mapping[str, str | None],
    *,
    org: str,
    **kw: Any,
) -> ImportResult:
    """Import ``values`` (variable -> value, in order, as a .env file holds them) into
    ``org``; see import_entries."""
    return import_entries(mgr, dotenv_entries(values, mgr.catalog), org=org, **kw)


def import_entries(
    mgr: Target,
    entries: Iterable[Entry],
    *,
    org: str,
    domain: str | None = None,
    source: str = "",
    dry_run: bool = False,
    overwrite: bool = False,
    include_unknown: bool = False,
    check_format: bool = True,
    progress: Callable[[int, int], None] | None = None,
    unknown_hint: str = "not in the catalog; --include-unknown imports it as {name}",
    exposed: str | None = None,
) -> ImportResult:
    """Import ``entries`` (in order) into ``org``/``domain``. ``exposed``: where the
    values were found in the open (a committed file): each one imported is marked
    exposed there, due for rotation at once (``SecretManager.mark_exposed``).

    Per-secret problems (a bad format, a conflict, an outage) are recorded as failed
    items and the rest goes on. Raises InvalidName for a bad org or domain, and
    Unsupported when the store cannot be written at all (the env backend), before or
    at the first write.
    """
    mgr.ref("x", org, domain=domain)  # a bad org or domain fails before anything else
    domain = domain or mgr.default_domain
    plans = _plan(entries, mgr.catalog, include_unknown=include_unknown,
                  check_format=check_format, max_value_bytes=mgr.max_value_bytes,
                  unknown_hint=unknown_hint)
    todo = [p for p in plans if p.status is None]
    done: dict[int, ImportItem] = {}
    for n, p in enumerate(todo, start=1):
        done[id(p)] = _import_one(mgr, p, org, domain, dry_run=dry_run, overwrite=overwrite,
                                  check_format=check_format, exposed=exposed)
        if progress is not None:
            progress(n, len(todo))
    items = tuple(done.get(id(p)) or ImportItem(p.variable, p.name, p.status or "skipped",
                                                p.reason, error_code=p.error_code)
                  for p in plans)
    return ImportResult(source, org, domain, dry_run, items)


def _tags(mgr: Target, p: _Plan, meta: SecretMetadata | None) -> dict[str, str] | None:
    """The tags to write: the variable the app read the value as when its name would
    give another one (HF_TOKEN stored as huggingface_api_key, exported as HF_API_TOKEN),
    so run and export give the app back the variable it read; an overwrite keeps the
    secret's other tags. None: leave the tags alone."""
    from keysafe.workloads.names import ENV_VAR_TAG, default_env_var

    assert p.name is not None
    if p.env_var is None:
        return None
    from keysafe.rotation.policy import is_rotation_tag

    # Rotation settings are the store's to keep (a put keeps them); a server refuses
    # them in a write, and shows some of them in a status.
    kept = ({k: v for k, v in meta.tags.items() if not is_rotation_tag(k)}
            if meta is not None else {})
    if p.env_var != default_env_var(p.name, mgr.catalog):
        return {**kept, ENV_VAR_TAG: p.env_var}
    if ENV_VAR_TAG in kept:  # imported from the name's own variable this time
        del kept[ENV_VAR_TAG]
        return kept
    return None


def _import_one(mgr: Target, p: _Plan, org: str, domain: str, *, dry_run: bool,
                overwrite: bool, check_format: bool, exposed: str | None) -> ImportItem:
    """One secret. A new one is written create-only (``expected_version=0``) and the
    store's answer decides whether it existed: with a chain (store, then .env) that
    is the primary, so values only the fallback serves are imported, not skipped."""
    assert p.name is not None
    assert p.value is not None
    name = p.name
    path = mgr.path(name, org, domain=domain)

    def item(status: Status, reason: str = "", **kw: Any) -> ImportItem:
        return ImportItem(p.variable, name, status, reason, path, **kw)

    def existing(meta: SecretMetadata) -> ImportItem:
        if meta.deleted:
            return item("skipped", "exists but is deleted; restore it, or use --overwrite",
                        version=meta.current_version)
        reason = f"already exists (version {meta.current_version})"
        if exposed is not None and not dry_run:
            # The stored value is the one found in the open: it is exposed all the same.
            try:
                if not may_read_values(mgr):
                    # Blind write: a writer's token cannot compare, and the stored value
                    # may be another one (a production value, a dev file): marking it
                    # would have the scheduler rotate it. Say so, and leave it.
                    reason += ("; this token may not read the stored value to compare "
                               "it: not marked exposed (if it is the value in the file, "
                               "rotate it)")
                elif mgr.get(name, org, domain=domain, fresh=True) == p.value:  # audited
                    mgr.mark_exposed(name, org, domain=domain, where=exposed)
                    reason += "; the same value: marked exposed, rotate it"
            except KeysafeError as exc:
                reason += f"; not marked exposed ({exc.message})"
        return item("skipped", reason, version=meta.current_version)

    meta: SecretMetadata | None = None
    if dry_run or overwrite:
        try:
            meta = mgr.describe(name, org, domain=domain, include_deleted=True)
        except NotFound:
            meta = None
        except KeysafeError as exc:
            return item("failed", exc.message, error_code=exc.code)
    if dry_run:
        if meta is not None and not overwrite:
            return existing(meta)
        reason = (f"would overwrite version {meta.current_version}" if meta is not None
                  else "new")
        return item("would_import", reason, overwritten=meta is not None)
    expected = meta.current_version if meta is not None else 0
    try:
        info = mgr.put(name, p.value, org, domain=domain, expected_version=expected,
                       check_format=check_format, tags=_tags(mgr, p, meta))
    except Unsupported:
        raise  # no write can work: say so once, not once per secret
    except Conflict as exc:
        if overwrite:
            return item("failed", "changed while importing; run again", error_code="conflict")
        try:
            return existing(mgr.describe(name, org, domain=domain, include_deleted=True))
        except KeysafeError:
            return item("skipped", f"already exists (version {exc.current_version})",
                        version=exc.current_version)
    except KeysafeError as exc:
        return item("failed", exc.message, error_code=exc.code)
    reason = f"overwrote version {meta.current_version}" if meta is not None else "new"
    if exposed is not None:
        try:
            mgr.mark_exposed(name, org, domain=domain, where=exposed)
            reason += "; marked exposed: rotate it"
        except KeysafeError as exc:  # imported all the same (SSM keeps no such mark)
            reason += f"; not marked exposed ({exc.message}): rotate it"
    return item("imported", reason, version=info.version, overwritten=meta is not None)


def import_file(mgr: Target, path: str | os.PathLike[str], *, org: str,
                interpolate: bool = True, **kw: Any) -> ImportResult:
    """Import a .env file (parsed by python-dotenv). ConfigError when it cannot be read."""
    from keysafe.backends.env import read_dotenv

    values = read_dotenv(path, interpolate=interpolate)
    return import_values(mgr, values, org=org, source=str(path), **kw)


def known_environ(catalog: Catalog,
                  environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The process variables the catalog knows (never all of them: PATH and HOME are
    not secrets), in the catalog's order."""
    env = os.environ if environ is None else environ
    by_upper = {k.upper(): k for k in env}
    out: dict[str, str | None] = {}
    for entry in catalog:
        for var in (entry.env_var, *entry.aliases):
            key = by_upper.get(var.upper())
            if key is not None and key not in out and not key.upper().startswith(_OWN):
                out[key] = env[key]
    return out


def import_environ(mgr: Target, *, org: str,
                   environ: Mapping[str, str] | None = None, **kw: Any) -> ImportResult:
    """Import the catalog's variables from the process environment (spec 001's script)."""
    values = known_environ(mgr.catalog, environ)
    return import_values(mgr, values, org=org, source="environment", **kw)
