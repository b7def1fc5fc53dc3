"""SecretManager: the one facade every edge (library, CLI, server) goes through.

It resolves names with the naming template, checks values, consults the cache, calls
one backend and writes one audit event. Backends never see names, only paths.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from time import monotonic, time_ns
from typing import TYPE_CHECKING, Any, TypeVar

from keysafe.backends.base import (
    Destroyable,
    DueListing,
    DueWindow,
    MetadataWritable,
    Progress,
    Recoverable,
    Rekeyable,
    SecretBackend,
    Transactional,
    Versioned,
    Watchable,
    WriteContext,
    remove_now,
)
from keysafe.errors import (
    BackendUnavailable,
    Conflict,
    CredentialRejected,
    InvalidValue,
    KeyRejected,
    KeysafeError,
    NotFound,
    Unsupported,
    ValueTooLarge,
)
from keysafe.manager.audit import (
    AuditFilter,
    AuditLog,
    Draft,
    MemoryAuditStore,
    VerifyResult,
    now_us,
    to_us,
    verify_rows,
)
from keysafe.manager.cache import SecretCache
from keysafe.models import AuditEvent, MetadataUpdate, SecretMetadata, VersionInfo
from keysafe.naming import DEFAULT_DOMAIN, DEFAULT_TEMPLATE, NamingTemplate, SecretRef

if TYPE_CHECKING:
    from pathlib import Path

    from keysafe.catalog import Catalog
    from keysafe.config import Settings
    from keysafe.keycheck import KeyCheck
    from keysafe.manager.anchors import Anchor, Tap
    from keysafe.manager.archive import ArchiveResult, CompactResult
    from keysafe.rotation.engine import Outcome, RotationEngine
    from keysafe.secret import Secret


T = TypeVar("T")


def json_object(raw: str, name: str) -> dict[str, Any]:
    """A JSON credential's value as an object (never the value in an error):
    InvalidValue if it is not a JSON object."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidValue(f"{name} does not hold JSON credentials") from None
    except RecursionError:  # nested deeper than Python's parser goes
        raise InvalidValue(f"{name} holds JSON nested too deeply to read") from None
    if not isinstance(data, dict):
        raise InvalidValue(f"{name} holds JSON, but not an object of credentials")
    return data


def json_field(raw: str, name: str, field: str) -> Any:
    """One field of a JSON credential's value: as ``json_object``, and NotFound if the
    field is missing."""
    data = json_object(raw, name)
    if field not in data:
        raise NotFound(f"{name} has no credential field {field!r}")
    return data[field]


#: Backend type -> 0 (no transactions), 1 (transaction()), 2 (transaction(join=...)).
_TX_KINDS: dict[type, int] = {}


def _invalidator(cache: SecretCache) -> Callable[[str], None]:
    def on_change(path: str) -> None:
        if path == "*":
            cache.expire_all()
        elif not path.startswith("token:"):
            cache.invalidate(path)
    return on_change


def default_actor() -> str:
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{os.uname().nodename}"


class SecretManager:
    """Secrets by name, org, domain and environment, on one backend.

    Every method raises KeysafeError subclasses only: NotFound, Conflict (check-and-set),
    InvalidName, InvalidValue/ValueTooLarge, Unsupported (backend lacks the feature),
    BackendUnavailable (retryable), IntegrityError, AuditError.
    """

    def __init__(
        self,
        backend: SecretBackend,
        *,
        app: str = "keysafe",
        env: str = "local",
        naming: NamingTemplate | str = DEFAULT_TEMPLATE,
        default_domain: str = DEFAULT_DOMAIN,
        default_org: str | None = None,
        cache: SecretCache | None = None,
        audit: AuditLog | None = None,
        catalog: Catalog | None = None,
        max_value_bytes: int = 64 * 1024,
        recovery_window_days: int = 7,
        audit_reads: bool = True,
        actor: str | None = None,
        catalog_file: str | os.PathLike[str] | None = None,
        state: Any = None,
    ) -> None:
        self.backend = backend
        #: Where a store without state of its own keeps it (KEYSAFE_STATE_DATABASE_URL):
        #: the audit chain, tokens, job locks, and the change notices sent on each write.
        self.state = state
        self.app = app
        self.env = env
        self.naming = naming if isinstance(naming, NamingTemplate) else NamingTemplate(naming)
        self.default_domain = default_domain
        self._default_org = self._valid_org(default_org)
        self.cache = cache if cache is not None else SecretCache()
        self.audit = audit if audit is not None else AuditLog(MemoryAuditStore())
        self._catalog = catalog
        self._catalog_file = catalog_file
        self.max_value_bytes = max_value_bytes
        # A store with its own recovery window (AWS Secrets Manager's) is the authority.
        own = getattr(backend, "recovery_window_days", None)
        self.recovery_window = timedelta(days=own if isinstance(own, int) else
                                         recovery_window_days)
        self.audit_reads = audit_reads
        self.actor = actor or default_actor()
        self.client: str | None = None
        self.request_id: str | None = None
        #: Added to the detail of every record this manager writes (as_actor's).
        self.context: dict[str, Any] | None = None
        self._stats = {"cache_hits": 0, "cache_misses": 0, "stale_served": 0}
        self._count_lock = threading.Lock()
        self._cache_data = self.cache._data  # the hit path reads the dict directly
        self._refs: dict[tuple[Any, ...], tuple[SecretRef, str]] = {}
        # (path, org) by spelling, for uncached reads: tuples of strings only, which the
        # cyclic GC stops tracking, so a large store's stream of new names does not grow
        # the old generation (as SecretRef objects would) and trigger full collections.
        self._paths: dict[tuple[Any, ...], tuple[str, str]] = {}
        self._merge_locks: dict[str, threading.Lock] = {}
        self._settings: Settings | None = None  # rotation's overrides, window, events
        self._rotation: RotationEngine | None = None  # made by the first rotate()
        self._rotation_locks: dict[str, threading.Lock] = {}  # one per secret, shared
        for source in (backend, state):
            if isinstance(source, Watchable) and self.cache.enabled:
                # Other processes' writes (server replicas) drop our cached copies at once.
                source.watch(_invalidator(self.cache))

    # -- construction -----------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings) -> SecretManager:
        from keysafe.backends.registry import open_store

        store = open_store(settings)
        mgr = cls(
            store.backend,
            app=settings.app,
            env=settings.env,
            naming=settings.naming_template,
            default_domain=settings.default_domain,
            default_org=settings.default_org,
            cache=SecretCache(settings.cache_ttl, settings.cache_max_entries,
                              settings.cache_stale_if_error),
            audit=store.audit,
            max_value_bytes=settings.max_value_bytes,
            recovery_window_days=settings.recovery_window_days,
            audit_reads=settings.audit_reads,
            actor=settings.actor,
            catalog_file=settings.catalog_file,
            state=store.state,
        )
        mgr._settings = settings
        return mgr

    @classmethod
    def from_env(cls, **overrides: Any) -> SecretManager:
        """Settings from KEYSAFE_* variables and keysafe.toml; keyword overrides win."""
        from keysafe.config import load_settings

        return cls.from_settings(load_settings(**overrides))

    def as_actor(self, actor: str, *, client: str | None = None,
                 request_id: str | None = None,
                 context: dict[str, Any] | None = None) -> SecretManager:
        """The same manager (store, cache, audit) acting for another principal;
        ``context`` goes into the detail of every audit record it writes (a workload
        token's mapped claims: which CI run, which pod)."""
        other = object.__new__(SecretManager)
        other.__dict__.update(self.__dict__)
        other.actor, other.client, other.request_id = actor, client, request_id
        other.context = context
        return other

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            from keysafe.catalog import Catalog

            self._catalog = (Catalog.load(self._catalog_file) if self._catalog_file
                             else Catalog.builtin())
        return self._catalog

    def close(self) -> None:
        try:
            self.audit.close()
            self.backend.close()
        finally:
            if self.state is not None:
                self.state.close()

    def __enter__(self) -> SecretManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- naming -----------------------------------------------------------------
    @property
    def default_org(self) -> str | None:
        """The org of a name given without one (KEYSAFE_DEFAULT_ORG: a single-tenant
        application's own). None: a name needs an org or a full path."""
        return self._default_org

    @default_org.setter
    def default_org(self, org: str | None) -> None:
        self._default_org = self._valid_org(org)
        # What a name without an org resolved to, and was cached under, has changed.
        self._refs.clear()
        self._paths.clear()
        self.cache.clear()

    def _valid_org(self, org: str | None) -> str | None:
        if org is not None:
            SecretRef("x", org, self.default_domain, self.env, self.app).validate()
        return org

    def ref(self, name: str, org: str | None = None, *, domain: str | None = None,
            env: str | None = None) -> SecretRef:
        """A validated reference; ``name`` may be a full path when ``org`` is None (else
        the default org's, when one is set)."""
        if org is None:
            if "/" in name:
                return self.naming.parse(name, app=self.app, env=env or self.env)
            if self.default_org is None:
                from keysafe.errors import InvalidName

                raise InvalidName(f"secret {name!r} needs an org (or give its full path, "
                                  "or set KEYSAFE_DEFAULT_ORG)", segment="org")
            org = self.default_org
        return SecretRef(name, org, domain or self.default_domain, env or self.env,
                         self.app).validate()

    def path(self, name: str, org: str | None = None, *, domain: str | None = None,
             env: str | None = None) -> str:
        return self.resolve(name, org, domain, env)[1]

    def prefix(self, org: str | None = None, domain: str | None = None,
               env: str | None = None) -> str:
        """The path prefix every secret of the scope shares (the naming template's
        longest literal start; a template may put a segment after org or domain)."""
        return self.naming.prefix(app=self.app, env=env or self.env, org=org, domain=domain)

    def resolve(self, name: str, org: str | None, domain: str | None,
                 env: str | None) -> tuple[SecretRef, str]:
        """ref and path, remembered: validation runs once per distinct spelling."""
        key = (name, org, domain, env)
        hit = self._refs.get(key)
        if hit is None:
            ref = (SecretRef(name, org, domain or self.default_domain, env or self.env,
                             self.app).validate()
                   if org is not None else self.ref(name, org, domain=domain, env=env))
            hit = (ref, self.naming.format(ref))
            if len(self._refs) >= 50_000:
                self._refs.clear()
            self._refs[key] = hit
        return hit

    def parse(self, path: str) -> SecretRef:
        return self.naming.parse(path, app=self.app, env=self.env)

    # -- audit ------------------------------------------------------------------
    def record(self, action: str, path: str | None, outcome: str, *, org: str | None = None,
               version: int | None = None, durable: bool = False,
               detail: dict[str, Any] | None = None) -> None:
        """Add one audit event for this manager's principal (edges use it for denials)."""
        self.audit.record(self.draft(action, path, outcome, org=org, version=version,
                                     detail=detail), durable=durable)

    def draft(self, action: str, path: str | None, outcome: str, *, org: str | None = None,
              version: int | None = None, detail: dict[str, Any] | None = None) -> Draft:
        """An audit record for this principal, not yet stored."""
        if self.context:  # who the caller is wins over what a route adds
            detail = {**(detail or {}), **self.context}
        return (now_us(), self.actor, action, path, version, outcome, org, self.client,
                self.request_id, json.dumps(detail, sort_keys=True) if detail else None)

    def _fail(self, action: str, ref: SecretRef | None, path: str | None,
              exc: KeysafeError, version: int | None = None) -> None:
        self.record(action, path, exc.code, org=ref.org if ref else None, version=version,
                    detail={"error": type(exc).__name__})

    def _tx(self) -> AbstractContextManager[Any]:
        b: Any = self.backend
        kind = _TX_KINDS.get(type(b))
        if kind is None:
            # isinstance on a runtime protocol costs microseconds: once per backend type.
            kind = 0
            if isinstance(b, Transactional):
                import inspect

                kind = 2 if "join" in inspect.signature(b.transaction).parameters else 1
            _TX_KINDS[type(b)] = kind
        if kind == 0:
            return nullcontext()
        # With a required audit record, any error in the write or its record ends the
        # whole transaction, so nested calls need no savepoints of their own.
        tx: AbstractContextManager[Any] = (b.transaction(join=True)
                                           if kind == 2 and self.audit.required
                                           else b.transaction())
        return tx

    def _write(self, action: str, ref: SecretRef, path: str,
               fn: Callable[[WriteContext], Any],
               version_of: Callable[[Any], int | None] = lambda r: None,
               detail: dict[str, Any] | None = None) -> Any:
        """Run one change and its audit record together; invalidate the cache."""
        ctx = WriteContext.make(self.actor)
        try:
            if self.state is not None and self.audit.required:
                # The audit record goes to the state database after the store's write,
                # which cannot be undone: find it down before, and change nothing.
                self.state.ping()
            with self._tx():
                result = fn(ctx)
                self.record(action, path, "ok", org=ref.org, version=version_of(result),
                            durable=True, detail=detail)
        except KeysafeError as exc:
            # Another writer may have won (Conflict), so drop the cached value; but an
            # outage must not evict what stale-if-error is there to serve.
            if not exc.retryable:
                self.cache.invalidate(path)
            if exc.code != "audit_error":
                self._fail(action, ref, path, exc)
            elif self.state is not None:
                self._announce(path)  # the store's write may have happened all the same
            raise
        self.cache.invalidate(path)
        if self.state is not None:
            self._announce(path)
        return result

    def _announce(self, path: str) -> None:
        """Tell the other replicas sharing the state database to drop ``path`` (a store
        that cannot announce its own writes). The write has happened: a failure here
        is logged, and their caches expire by their TTL instead."""
        try:
            self.state.notify(path)
        except KeysafeError as exc:
            import logging

            logging.getLogger("keysafe").warning(
                "could not announce a change to other replicas: %s", exc.message)

    # -- values -----------------------------------------------------------------
    def get_secret(self, name: str, org: str | None = None, *, domain: str | None = None,
                   env: str | None = None, version: int | None = None,
                   fresh: bool = False) -> Secret:
        """``get``, the value wrapped in a ``keysafe.Secret`` (masked in reprs, strings
        and logs; ``reveal()`` gives it)."""
        from keysafe.secret import Secret

        return Secret(self.get(name, org, domain=domain, env=env, version=version,
                               fresh=fresh))

    def get(self, name: str, org: str | None = None, *, domain: str | None = None,
            env: str | None = None, version: int | None = None, fresh: bool = False) -> str:
        """The current (or given) version's value. ``fresh`` skips the cache."""
        key = (name, org, domain, env, version)
        if not fresh:
            e = self._cache_data.get(key)
            if e is not None and e[1] > monotonic():
                self._stats["cache_hits"] += 1
                return e[0]
        return self._get_miss(key, name, org, domain, env, version)

    def read(self, name: str, org: str | None = None, *, domain: str | None = None,
             env: str | None = None, version: int | None = None) -> tuple[str, int]:
        """(value, version) straight from the store (no cache): one read, one audit
        record. For callers that must know which version they got."""
        ref, path = self.resolve(name, org, domain, env)
        try:
            value, v = self.backend.get(path, version)
        except KeysafeError as exc:
            self._fail("read", ref, path, exc, version)
            raise
        if self.audit_reads:
            self.record("read", path, "ok", org=ref.org, version=v)
        return value, v

    def _where(self, name: str, org: str | None, domain: str | None,
               env: str | None) -> tuple[str, str]:
        """(path, org) as ``resolve`` gives them, remembered as plain strings."""
        key = (name, org, domain, env)
        hit = self._paths.get(key)
        if hit is None:
            # The server's read route has just resolved the same spelling: no second
            # validation (at a million names, neither table holds it for long).
            done = self._refs.get(key)
            if done is not None:
                return done[1], done[0].org
            if org is None:
                ref = self.ref(name, org, domain=domain, env=env)
                hit = (self.naming.format(ref), ref.org)
            else:
                hit = (self.naming.path_of(self.app, env or self.env, org,
                                           domain or self.default_domain, name), org)
            if len(self._paths) >= 50_000:
                self._paths.clear()
            self._paths[key] = hit
        return hit

    def _get_miss(self, key: tuple[Any, ...], name: str, org: str | None,
                  domain: str | None, env: str | None, version: int | None) -> str:
        path, ref_org, gen = self._miss_begin(name, org, domain, env)
        try:
            value, v = self.backend.get(path, version)
        except KeysafeError as exc:
            return self._miss_failed(exc, key, name, org, domain, env, path, ref_org, version)
        return self._miss_done(key, path, ref_org, gen, value, v)

    async def get_async(self, name: str, org: str | None = None, *,
                        domain: str | None = None) -> str:
        """``get`` for an event loop: a hit is answered at once; a miss is read on the
        loop itself when the store can (``get_async``, as PostgreSQL's), else in a
        worker thread, so the loop never blocks on the store."""
        key = (name, org, domain, None, None)
        e = self._cache_data.get(key)
        if e is not None and e[1] > monotonic():
            self._stats["cache_hits"] += 1
            return str(e[0])
        read_async = getattr(self.backend, "get_async", None)
        if read_async is None:
            import asyncio

            return await asyncio.get_running_loop().run_in_executor(
                None, self._get_miss, key, name, org, domain, None, None)
        path, ref_org, gen = self._miss_begin(name, org, domain, None)
        try:
            value, v = await read_async(path)
        except KeysafeError as exc:
            return self._miss_failed(exc, key, name, org, domain, None, path, ref_org, None)
        return self._miss_done(key, path, ref_org, gen, value, v)

    def _miss_begin(self, name: str, org: str | None, domain: str | None,
                    env: str | None) -> tuple[str, str, int]:
        """(path, org, cache generation) for a read that missed the cache: the
        generation is taken before the read, so a write meanwhile keeps it uncached."""
        self._stats["cache_misses"] += 1
        path, ref_org = self._where(name, org, domain, env)
        return path, ref_org, self.cache.generation(path)

    def _miss_done(self, key: tuple[Any, ...], path: str, ref_org: str, gen: int,
                   value: str, v: int) -> str:
        if self.audit_reads:
            # self.record(...) spelled out: this is the hot path of uncached reads.
            self.audit.record((time_ns() // 1000, self.actor, "read", path, v, "ok", ref_org,
                               self.client, self.request_id, None), durable=False)
        self.cache.put(key, path, value, gen)
        return value

    def _miss_failed(self, exc: KeysafeError, key: tuple[Any, ...], name: str,
                     org: str | None, domain: str | None, env: str | None, path: str,
                     ref_org: str, version: int | None) -> str:
        """An outage serves a stale value if stale-if-error holds one; anything else is
        recorded and raised."""
        if isinstance(exc, BackendUnavailable):
            stale = self.cache.get_stale(key)
            if stale is not None:
                self._stats["stale_served"] += 1
                self.record("read", path, "stale", org=ref_org, version=version,
                            detail={"error": type(exc).__name__})
                return stale
        self._fail("read", self.resolve(name, org, domain, env)[0], path, exc, version)
        raise exc

    def use(self, name: str, fn: Callable[[str], T], org: str | None = None, *,
            domain: str | None = None) -> T:
        """``fn(value)``; if ``fn`` raises CredentialRejected (the target refused the
        credential, e.g. after a rotation elsewhere), read the value fresh and call ``fn``
        once more. A second rejection, or the same value again, is raised."""
        value = self.get(name, org, domain=domain)
        try:
            return fn(value)
        except CredentialRejected:
            fresh = self.get(name, org, domain=domain, fresh=True)
            if fresh == value:
                raise
            return fn(fresh)

    def verification_values(self, name: str, org: str | None = None, *,
                            domain: str | None = None) -> builtins.list[str]:
        """The current value, then the one a rotation replaced while its grace period
        lasts: verify JWTs (or webhook signatures) against each in turn. Each is an
        audited read."""
        out = [self.get(name, org, domain=domain)]
        got = self._previous(name, org, domain, None, required=False)
        if got is not None and got[0] != out[0]:
            out.append(got[0])
        return out

    def get_previous(self, name: str, org: str | None = None, *, domain: str | None = None,
                     env: str | None = None) -> tuple[str, int | None]:
        """(value, the version it was) of the value a rotation replaced, while its grace
        period lasts (AWS's ``AWSPREVIOUS`` stage): one audited read, ``detail``
        ``{"stage": "previous"}``. NotFound when there is none: never rotated with a
        grace period, or the period is over."""
        got = self._previous(name, org, domain, env, required=True)
        if got is None:  # required: NotFound was raised
            raise AssertionError("unreachable")
        return got

    def _previous(self, name: str, org: str | None, domain: str | None, env: str | None,
                  *, required: bool) -> tuple[str, int | None] | None:
        from keysafe.rotation.engine import previous_record

        ref, path = self.resolve(name, org, domain, env)
        try:
            got = previous_record(self.backend, path)
            if got is not None and not self._previous_readable(path, got[1]):
                got = None
            if got is None and required:
                raise NotFound(f"{name} has no previous value: it was not rotated with a "
                               "grace period, or the period is over")
        except KeysafeError as exc:
            self._fail("read", ref, path, exc)
            raise
        if got is not None and self.audit_reads:
            self.record("read", path, "ok", org=ref.org, version=got[1],
                        detail={"stage": "previous"})
        return got

    def decryption_keys(self, name: str, org: str | None = None, *,
                        domain: str | None = None, env: str | None = None
                        ) -> builtins.list[tuple[int, str]]:
        """(version, value) of every kept version that is not destroyed, newest first:
        for data encrypted with an encryption key, so that a rotation does not strand
        it. Store the version beside each ciphertext (as a key id) and decrypt with the
        value of that version; encrypt with the first. Each value is one audited read.
        A version the store no longer keeps (``max_versions``) or destroyed is gone:
        re-encrypt data before its key version falls out."""
        out: builtins.list[tuple[int, str]] = []
        for info in sorted(self.versions(name, org, domain=domain, env=env),
                           key=lambda v: v.version, reverse=True):
            if info.destroyed:
                continue
            try:
                value = self.read(name, org, domain=domain, env=env, version=info.version)[0]
            except NotFound:
                if not out:
                    raise  # the newest one must be there
                continue  # trimmed or destroyed by another process meanwhile
            out.append((info.version, value))
        return out

    def has(self, name: str, org: str | None = None, *, domain: str | None = None,
            env: str | None = None) -> bool:
        """Whether the secret exists and is not deleted. Never reads the value."""
        try:
            self.describe(name, org, domain=domain, env=env)
        except NotFound:
            return False
        return True

    def describe(self, name: str, org: str | None = None, *, domain: str | None = None,
                 env: str | None = None, include_deleted: bool = False) -> SecretMetadata:
        ref, path = self.resolve(name, org, domain, env)
        try:
            meta = self.backend.describe(path, include_deleted=include_deleted)
        except KeysafeError as exc:
            self._fail("describe", ref, path, exc)
            raise
        if self.audit_reads:
            self.record("describe", path, "ok", org=ref.org)
        return meta

    def list(self, org: str | None = None, *, domain: str | None = None,
             env: str | None = None,
             include_deleted: bool = False) -> builtins.list[SecretMetadata]:
        """Metadata of every secret in the scope (an org, optionally a domain)."""
        return self._scoped(org, domain, env, lambda prefix: self.backend.list(
            prefix, include_deleted=include_deleted))

    def list_due(self, window: DueWindow, org: str | None = None, *,
                 domain: str | None = None) -> builtins.list[SecretMetadata]:
        """``list``, narrowed to the secrets ``window`` asks for (a scan for due rotations):
        found by the store itself where it can (``DueListing``), else filtered here."""
        b = self.backend
        if isinstance(b, DueListing):
            return self._scoped(org, domain, None, lambda prefix: b.list_due(prefix, window))
        return self._scoped(org, domain, None, lambda prefix: [
            m for m in b.list(prefix) if window.matches(m)])

    def _scoped(self, org: str | None, domain: str | None, env: str | None,
                fetch: Callable[[str], builtins.list[SecretMetadata]]
                ) -> builtins.list[SecretMetadata]:
        env = env or self.env
        if org is not None:
            self.ref("x", org, domain=domain, env=env)  # validates the scope segments
        prefix = self.prefix(org, domain, env)
        out = []
        for meta in fetch(prefix):
            try:
                ref = self.naming.parse(meta.path, app=self.app, env=env)
            except KeysafeError:
                continue  # not written by this template
            if ((org is None or ref.org == org) and (domain is None or ref.domain == domain)
                    and ref.env == env and ref.app == self.app):
                out.append(meta)
        if self.audit_reads:
            self.record("list", prefix, "ok", org=org, detail={"count": len(out)})
        return out

    def put_generated(self, name: str, org: str | None = None, *,
                      length: int | None = None, alphabet: str | None = None,
                      domain: str | None = None, env: str | None = None,
                      **kw: Any) -> VersionInfo:
        """Store a random value (``keysafe.rotation.rotators.random_value``) that nobody
        sees: a JWT, session or encryption secret's first value, or a password keysafe
        hands to both sides. It is never returned; read it as any other. ``length`` and
        ``alphabet`` default to what a rotation of the secret would make (its
        ``rotator.length`` / ``rotator.alphabet`` options, else 64 and urlsafe).
        Refused (InvalidValue) for a catalog secret a provider issues: a made-up key
        would not work there. ``kw``: as ``put``."""
        from keysafe.rotation.rotators import random_value

        ref, path = self.resolve(name, org, domain, env)
        entry = self.catalog.get(ref.name)
        try:
            if entry is not None and entry.provider is not None:
                raise InvalidValue(f"{ref.name} is issued by {entry.provider}: a value "
                                   "keysafe made up would not work there; store the one "
                                   f"{entry.provider} gave you")
            if length is None or alphabet is None:
                try:
                    tags = self.backend.describe(path).tags
                except NotFound:
                    tags = {}
                alphabet = alphabet or tags.get("rotator.alphabet", "urlsafe")
                if length is None:
                    raw = tags.get("rotator.length", "64")
                    if not raw.isdigit():
                        raise InvalidValue(f"the rotator.length option of {ref.name} is "
                                           f"not a number: {raw[:20]!r}")
                    length = int(raw)
            value = random_value(length, alphabet)
        except KeysafeError as exc:
            self._fail("write", ref, path, exc)
            raise
        return self.put(name, value, org, domain=domain, env=env, **kw)

    def put(self, name: str, value: str, org: str | None = None, *,
            domain: str | None = None, env: str | None = None,
            expected_version: int | None = None, description: str | None = None,
            secret_type: str | None = None, tags: Mapping[str, str] | None = None,
            rotation_days: int | None = None, expires_at: datetime | None = None,
            check_format: bool = True) -> VersionInfo:
        """Write a new version (create or overwrite). ``expected_version`` gives
        check-and-set (0: must not exist yet). ``tags`` replace the secret's tags, except
        its rotation settings (``rotator``, ``rotator.*``, ...), which stay unless given
        here too (``keysafe rotate configure`` sets them)."""
        ref, path = self.resolve(name, org, domain, env)
        try:
            self._check_value(ref, value, check_format)
            if secret_type is not None:
                from keysafe.catalog import SECRET_TYPES

                if secret_type not in SECRET_TYPES:
                    raise InvalidValue(f"unknown secret type {secret_type!r}; types are "
                                       f"{', '.join(SECRET_TYPES)}")
        except KeysafeError as exc:
            self._fail("write", ref, path, exc)
            raise
        entry = self.catalog.get(ref.name)
        meta = MetadataUpdate(
            description=description,
            secret_type=secret_type or (entry.secret_type if entry else None),
            tags=dict(tags) if tags is not None else None,
            rotation_days=rotation_days, expires_at=_utc(expires_at),
            last_rotated=datetime.now(UTC),
        )

        def run(ctx: WriteContext) -> Any:
            m = meta if tags is None else meta._replace(tags=self._kept_tags(path, tags))
            return self.backend.put(path, value, ctx=ctx, expected_version=expected_version,
                                    meta=m)

        info: VersionInfo = self._write("write", ref, path, run, lambda r: r.version)
        return info

    def _kept_tags(self, path: str, tags: Mapping[str, str]) -> dict[str, str]:
        """``tags`` with the secret's rotation settings kept (those not in ``tags``)."""
        from keysafe.rotation.policy import is_rotation_tag

        try:
            old = self.backend.describe(path, include_deleted=True).tags
        except NotFound:
            old = {}
        return {**{k: v for k, v in old.items() if is_rotation_tag(k)}, **tags}

    def _previous_version(self, path: str) -> int | None:
        """The version ``path``'s previous-value record holds (None: no record)."""
        from keysafe.rotation.engine import record_path

        try:
            was = self.backend.describe(record_path(path, "previous")).tags.get(
                "rotation.version", "")
        except NotFound:
            return None
        return int(was) if was.isdigit() else None

    def _previous_readable(self, path: str, version: int | None) -> bool:
        """Whether a previous value may be read: its secret is live (not deleted) and the
        version it copies, if the store still lists it, is not destroyed."""
        try:
            self.backend.describe(path)
        except NotFound:
            return False
        if version is None or not isinstance(self.backend, Versioned):
            return True
        return not any(v.version == version and v.destroyed
                       for v in self.backend.versions(path))

    def check_value(self, name: str, value: object, org: str | None = None, *,
                    domain: str | None = None, check_format: bool = True) -> None:
        """Raise what ``put`` would for ``value`` (not text, empty, too large, not the
        provider's format), without writing or recording anything: a form's check."""
        ref, _ = self.resolve(name, org, domain, None)
        self._check_value(ref, value, check_format)

    def _check_value(self, ref: SecretRef, value: object, check_format: bool) -> None:
        if not isinstance(value, str):
            raise InvalidValue(f"value for {ref.name} must be text, not {type(value).__name__}")
        if value == "":
            raise InvalidValue(f"value for {ref.name} is empty")
        size = len(value.encode())
        if size > self.max_value_bytes:
            raise ValueTooLarge(
                f"value for {ref.name} is {size} bytes; the limit is {self.max_value_bytes}")
        if check_format:
            entry = self.catalog.get(ref.name)
            problem = entry.check_format(value) if entry else None
            if problem:
                raise InvalidValue(f"{ref.name}: {problem}")

    def delete(self, name: str, org: str | None = None, *, domain: str | None = None,
               env: str | None = None, force: bool = False) -> None:
        """Soft delete (restorable within the recovery window); ``force`` purges now."""
        ref, path = self.resolve(name, org, domain, env)
        b = self.backend
        if force:
            self._write("purge" if isinstance(b, Recoverable) else "delete", ref, path,
                        lambda ctx: self._purge(path, ctx))
            return
        self._write("delete", ref, path, lambda ctx: b.delete(path, ctx=ctx))

    def _purge(self, path: str, ctx: WriteContext) -> None:
        """``path`` gone now (purged, or deleted where the store keeps no deleted
        secrets), and its rotation records with it (``_gone``)."""
        remove_now(self.backend, path, ctx=ctx)
        self._gone(path, ctx)

    def _gone(self, path: str, ctx: WriteContext,
              kinds: tuple[str, ...] = ("previous", "pending")) -> None:
        """After a purge (or a destroy of the version kept as previous): the rotation
        records that hold a copy of a value go too, so no value outlives its secret."""
        from keysafe.rotation.engine import record_path

        for kind in kinds:
            with contextlib.suppress(NotFound):
                remove_now(self.backend, record_path(path, kind), ctx=ctx)

    def restore(self, name: str, org: str | None = None, *, domain: str | None = None,
                env: str | None = None) -> SecretMetadata:
        """Undo a soft delete within the recovery window."""
        ref, path = self.resolve(name, org, domain, env)
        b = self._need(Recoverable, "restore")
        try:
            meta = self.backend.describe(path, include_deleted=True)
        except KeysafeError as exc:
            self._fail("restore", ref, path, exc)
            raise
        problem = None
        if meta.deleted_at is None:
            problem = Conflict(f"secret {path} is not deleted", path=path)
        else:
            ends = meta.deleted_at + self.recovery_window
            if datetime.now(UTC) > ends:
                problem = Conflict(f"the recovery window for {path} ended at "
                                   f"{ends.isoformat(timespec='seconds')}", path=path)
        if problem is not None:
            self._fail("restore", ref, path, problem)
            raise problem
        result: SecretMetadata = self._write(
            "restore", ref, path, lambda ctx: b.restore(path, ctx=ctx))
        return result

    def destroy(self, name: str, versions: builtins.list[int], org: str | None = None, *,
                domain: str | None = None, env: str | None = None,
                keep_current: bool = False) -> builtins.list[int]:
        """Crypto-shred the given versions; their values can never be read again. As in
        Vault, the current version may go too: the secret then exists and reads as not
        found. ``keep_current`` refuses that (Conflict, nothing destroyed), as the server
        and the CLI do."""
        ref, path = self.resolve(name, org, domain, env)
        b = self._need(Destroyable, "destroy single versions")

        def run(ctx: WriteContext) -> builtins.list[int]:
            if keep_current:
                current = self.backend.describe(path, include_deleted=True).current_version
                if current in versions:
                    raise Conflict(f"version {current} of {ref.name} is the current one: "
                                   "write a new version or roll back first, then destroy "
                                   "it", path=path, current_version=current)
            out: builtins.list[int] = b.destroy(path, list(versions), ctx=ctx)
            if self._previous_version(path) in versions:
                self._gone(path, ctx, kinds=("previous",))  # its copy is shredded too
            return out

        done: builtins.list[int] = self._write("destroy", ref, path, run,
                                               detail={"versions": sorted(versions)})
        return done

    def versions(self, name: str, org: str | None = None, *, domain: str | None = None,
                 env: str | None = None) -> builtins.list[VersionInfo]:
        ref, path = self.resolve(name, org, domain, env)
        b = self._need(Versioned, "versions")
        try:
            out: builtins.list[VersionInfo] = b.versions(path)
        except KeysafeError as exc:
            self._fail("versions", ref, path, exc)
            raise
        if self.audit_reads:
            self.record("versions", path, "ok", org=ref.org)
        return out

    def rollback(self, name: str, version: int, org: str | None = None, *,
                 domain: str | None = None, env: str | None = None) -> VersionInfo:
        """Make an old version current again, as a new version (Vault's rollback)."""
        ref, path = self.resolve(name, org, domain, env)
        try:
            old, _ = self.backend.get(path, version)
            current = self.backend.describe(path).current_version
        except KeysafeError as exc:
            self._fail("rollback", ref, path, exc, version)
            raise
        info: VersionInfo = self._write(
            "rollback", ref, path,
            lambda ctx: self.backend.put(path, old, ctx=ctx, expected_version=current,
                                         meta=MetadataUpdate(last_rotated=ctx.now)),
            lambda r: r.version, detail={"from_version": version})
        return info

    def update_metadata(self, name: str, org: str | None = None, *,
                        domain: str | None = None, env: str | None = None,
                        **fields: Any) -> SecretMetadata:
        ref, path = self.resolve(name, org, domain, env)
        b = self._need(MetadataWritable, "update_metadata")
        upd = MetadataUpdate(**_utc_fields(fields))
        result: SecretMetadata = self._write(
            "update_metadata", ref, path, lambda ctx: b.update_metadata(path, upd, ctx=ctx),
            detail={"fields": sorted(fields)})
        return result

    def mark_exposed(self, name: str, org: str | None = None, *, where: str,
                     domain: str | None = None, env: str | None = None) -> SecretMetadata:
        """Record that the current value was found in the open (``where``: a file and
        line, a commit, a ticket): it is due for rotation at once, whatever its period,
        until a new value is written. Tagged ``exposed=<where>``; no new version."""
        from keysafe.rotation.policy import EXPOSED_AT, EXPOSED_TAG

        if not where or not where.isprintable():
            raise InvalidValue("say where the value was exposed (printable text)")
        return self.update_tags(name, org, domain=domain, env=env,
                                set_tags={EXPOSED_TAG: where[:256]}, last_rotated=EXPOSED_AT)

    def update_tags(self, name: str, org: str | None = None, *,
                    set_tags: Mapping[str, str] | None = None, unset: Iterable[str] = (),
                    domain: str | None = None, env: str | None = None,
                    **fields: Any) -> SecretMetadata:
        """Set and remove some tags, keeping the others (and set other metadata
        ``fields``), with no new version. The tags are read inside the write: on the
        embedded store and PostgreSQL the write lock covers both, so a concurrent
        writer's tags (a rotation's) are never lost; a cloud store is read and written
        back in two calls, one right after the other."""
        ref, path = self.resolve(name, org, domain, env)
        b = self._need(MetadataWritable, "update_metadata")
        changes, drop = dict(set_tags or {}), builtins.list(unset)
        fields = _utc_fields(fields)

        def apply(ctx: WriteContext) -> SecretMetadata:
            tags = {**b.describe(path).tags, **changes}
            for key in drop:
                tags.pop(key, None)
            result: SecretMetadata = b.update_metadata(
                path, MetadataUpdate(tags=tags, **fields), ctx=ctx)
            return result

        result: SecretMetadata = self._write(
            "update_metadata", ref, path, apply,
            detail={"fields": sorted({"tags", *fields}), "tags_set": sorted(changes),
                    "tags_unset": sorted(drop)})
        return result

    def purge_expired(self) -> builtins.list[str]:
        """Purge every soft-deleted secret whose recovery window has ended."""
        b = self._need(Recoverable, "purge")
        done = []
        for path in b.deleted_before(datetime.now(UTC) - self.recovery_window):
            ref = self.parse(path) if self.naming.matches(path) else None
            try:
                self._write("purge", ref or SecretRef("x", "-"), path,
                            lambda ctx, p=path: self._purge(p, ctx),  # type: ignore[misc]
                            detail={"reason": "recovery window ended"})
                done.append(path)
            except NotFound:
                continue
        return done

    def _need(self, cap: type, what: str) -> Any:
        if not isinstance(self.backend, cap):
            raise Unsupported(f"the {self.backend.name} backend cannot {what}")
        return self.backend

    # -- JSON credentials (spec 000) -----------------------------------------------
    def get_json(self, name: str, org: str | None = None, *, domain: str | None = None,
                 env: str | None = None, fresh: bool = False) -> dict[str, Any]:
        return json_object(self.get(name, org, domain=domain, env=env, fresh=fresh), name)

    def get_json_field(self, name: str, field: str, org: str | None = None, *,
                       domain: str | None = None, env: str | None = None,
                       version: int | None = None) -> Any:
        """One field of JSON credentials (of version ``version``, else the current one):
        NotFound if the field is missing, InvalidValue if the value is not an object."""
        return json_field(self.get(name, org, domain=domain, env=env, version=version),
                          name, field)

    def put_json(self, name: str, data: Mapping[str, Any], org: str | None = None, *,
                 domain: str | None = None, env: str | None = None,
                 expected_version: int | None = None, check_format: bool = False,
                 **kw: Any) -> VersionInfo:
        """Store ``data`` as a JSON object; ``check_format``: hold it to the catalog's
        format check (its required fields), as a plain ``put`` would."""
        if not isinstance(data, Mapping):
            raise InvalidValue(f"credentials for {name} must be a JSON object")
        return self.put(name, json.dumps(dict(data), sort_keys=True), org, domain=domain,
                        env=env, expected_version=expected_version,
                        check_format=check_format, **kw)

    def update_json(self, name: str, changes: Mapping[str, Any], org: str | None = None, *,
                    domain: str | None = None, env: str | None = None,
                    attempts: int = 5, expected_version: int | None = None,
                    check_format: bool = False) -> VersionInfo:
        """Merge ``changes`` into the stored object, keeping other keys. A field set to
        None is removed. Uses check-and-set, retrying (with backoff) when another
        process got there first; writers in this process take turns. With
        ``expected_version`` the merge applies to that version only (Conflict
        otherwise, no retry; 0: the secret must not exist). ``check_format``: the merged
        object must pass the catalog's format check (its required fields)."""
        _, path = self.resolve(name, org, domain, env)
        with self._merge_locks.setdefault(path, threading.Lock()):
            return self._update_json(name, changes, org, domain, env,
                                     1 if expected_version is not None else attempts,
                                     expected_version, check_format)

    def _update_json(self, name: str, changes: Mapping[str, Any], org: str | None,
                     domain: str | None, env: str | None, attempts: int,
                     expected: int | None, check_format: bool) -> VersionInfo:
        for attempt in range(attempts):
            try:
                meta = self.describe(name, org, domain=domain, env=env, include_deleted=True)
            except NotFound:
                current, data = 0, {}
            else:
                # A soft-deleted secret starts again from an empty object (the write
                # revives it, as put does).
                current = meta.current_version
                data = ({} if meta.deleted else
                        self.get_json(name, org, domain=domain, env=env, fresh=True))
            if expected is not None and expected != current:
                raise Conflict(f"{name} is at version {current}, not {expected}",
                               path=self.path(name, org, domain=domain, env=env),
                               current_version=current)
            for k, v in changes.items():
                if v is None:
                    data.pop(k, None)
                else:
                    data[k] = v
            try:
                return self.put_json(name, data, org, domain=domain, env=env,
                                     expected_version=current, check_format=check_format)
            except Conflict:
                if attempt == attempts - 1:
                    raise
                import random

                time.sleep(random.uniform(0, 0.01 * 2**attempt))  # jitter, not secrecy
        raise AssertionError("unreachable")

    # -- spec 001 -----------------------------------------------------------------
    def get_llm_api_key(self, org: str, provider: str,
                        domain: str | None = None) -> str | None:
        """The domain's key for ``provider``, else the org's shared key, else None."""
        found = self.find_llm_api_key(org, provider, domain)
        return found[1] if found is not None else None

    def find_llm_api_key(self, org: str, provider: str, domain: str | None = None, *,
                         fallback: bool = True,
                         allowed: Callable[[str, str], bool] | None = None
                         ) -> tuple[str, str] | None:
        """(path, value) of the key ``get_llm_api_key`` returns, or None. The catalog's
        name (``openai_api_key``) first, then its kebab-case spelling
        (``openai-api-key``, spec 000's layout), in the domain, then (``fallback``) in
        the org's default domain. ``allowed(domain, name)``: only those are tried (a
        caller's scopes), so one it may not read is neither read nor told apart."""
        entry = self.catalog.for_provider(provider)
        name = entry.name if entry else f"{provider.lower()}_api_key"
        names = dict.fromkeys([name, name.replace("_", "-")])
        scopes = [domain] if domain and domain != self.default_domain else []
        if fallback or not scopes:
            scopes.append(self.default_domain)
        for d in scopes:
            for n in names:
                if allowed is not None and not allowed(d, n):
                    continue
                try:
                    value = self.get(n, org, domain=d)
                except NotFound:
                    continue
                return self.path(n, org, domain=d), value
        return None

    def rotate(self, name: str, org: str, *, domain: str | None = None) -> Outcome:
        """Rotate one secret now with its rotator, by the protocol of docs/rotation.md
        (spec 004's ``rotate_secret``); the outcome carries the new version. Raises
        RotationError when it cannot (ManualRotation, with a reminder recorded, for a
        secret only a person can issue); the current version is then unchanged.
        Overrides, grace period and event webhooks come from the settings this manager
        was built from."""
        from keysafe.rotation.engine import RotationEngine

        # One engine per manager: its per-secret locks keep two threads from rotating
        # the same secret at once (a manager made by as_actor gets its own).
        engine = self._rotation
        if engine is None or engine.mgr is not self:
            engine = self._rotation = (RotationEngine.from_settings(self, self._settings)
                                       if self._settings is not None
                                       else RotationEngine(self))
        return engine.rotate(name, org, domain=domain)

    def check_key(self, name: str, value: str | None = None, org: str | None = None, *,
                  domain: str | None = None, env: str | None = None,
                  refuse: bool = False, check_format: bool = True) -> KeyCheck:
        """Ask the secret's provider whether a key works (docs/key-checks.md): ``value``
        before saving it, or the stored current value when ``value`` is None. The
        verdict (valid, rejected, unknown, unsupported, off) is audited as
        ``check_key``; the key goes only to the catalog entry's check URL.

        ``refuse``: a rejected key raises KeyRejected, recorded as a refused write (for
        a caller about to save ``value``); an unknown verdict does not. A ``value``
        given is first checked as ``put`` checks it (size, and the catalog's format
        unless ``check_format`` is false): a key pasted into the wrong slot is not sent
        to the wrong provider."""
        from keysafe import keycheck

        ref, path = self.resolve(name, org, domain, env)
        action = "write" if refuse else "check_key"
        version = None
        try:
            if value is not None:
                self._check_value(ref, value, check_format)
            else:
                value, version = self.backend.get(path)  # NotFound before any verdict
        except KeysafeError as exc:
            self._fail(action, ref, path, exc)
            raise
        entry = self.catalog.get(ref.name)
        s = self._settings
        check = entry.check if entry is not None else None
        if s is not None and not s.key_checks:
            result = keycheck.KeyCheck("off", "key checks are turned off (KEYSAFE_KEY_CHECKS)")
        elif entry is None or check is None:
            what = entry.display_name if entry else ref.name
            result = keycheck.KeyCheck("unsupported", f"keysafe knows no live check for "
                                                      f"{what} (a catalog file can add one)")
        else:
            result = keycheck.run(check, value, provider=entry.provider,
                                  display=entry.display_name,
                                  timeout=s.key_check_timeout if s is not None else 5.0)
        self.record("check_key", path, result.outcome, org=ref.org, version=version,
                    detail={"host": check.host if check else None, "status": result.status})
        self.count(f"key_checks_{result.outcome}")
        if refuse and result.rejected:
            assert entry is not None
            # status None: refused here (the value cannot be a key), not by the provider.
            cls = KeyRejected if result.status is not None else InvalidValue
            refused = cls(f"{entry.display_name}: {result.detail}; nothing was saved",
                          path=path)
            self._fail("write", ref, path, refused)
            raise refused
        return result

    # -- maintenance ----------------------------------------------------------------
    def ping(self) -> None:
        self.backend.ping()
        if self.state is not None:
            self.state.ping()

    def audit_query(self, flt: AuditFilter | None = None) -> builtins.list[AuditEvent]:
        self.audit.flush()
        return self.audit.store.query(flt or AuditFilter())

    def audit_verify(self, archives: Sequence[Path] = (),
                     anchors: Sequence[Anchor] = ()) -> VerifyResult:
        """Check the hash chain in the store, from where archiving left it; with
        ``archives`` (files from ``audit_archive``, oldest first), check those instead
        (and the store too when ``anchors`` are given). ``anchors``
        (keysafe.manager.anchors): records that must still be there, unchanged."""
        from keysafe.manager.anchors import Tap
        from keysafe.manager.archive import base_of, verify_archives

        self.audit.flush()
        tap = Tap(anchors)
        if not archives:
            result, base = self._verify_store(tap)
            return tap.judge(result, base, in_files=False, env=self.env)
        base = base_of(self.audit.store)
        result = verify_archives(archives, base, tap.watch if anchors else None)
        if anchors:  # an anchor may be in the files or in the store: walk both
            more, _ = self._verify_store(tap)
            result = VerifyResult(result.ok and more.ok, result.checked + more.checked,
                                  [*result.problems, *more.problems],
                                  (*result.notes, *more.notes))
        return tap.judge(result, base, in_files=True, env=self.env)

    def _verify_store(self, tap: Tap) -> tuple[VerifyResult, tuple[int, str] | None]:
        from keysafe.manager.archive import base_of

        store = self.audit.store
        snapshot = getattr(store, "snapshot", None)
        if snapshot is not None:
            with snapshot() as (base, head, rows):
                return verify_rows(tap.rows(rows), head, base), base
        base = base_of(store)
        return verify_rows(tap.rows(store.scan()), store.head(), base), base

    def audit_archive(self, before: datetime, dest: Path,
                      progress: Progress | None = None) -> ArchiveResult:
        """Move the audit records older than ``before`` to the JSON-lines file ``dest``
        and remove them from the store; the chain stays verifiable (see
        keysafe.manager.archive). Recorded as ``audit_archive``."""
        from keysafe.manager.archive import archive

        def run() -> ArchiveResult:
            if before > datetime.now(UTC):
                raise InvalidValue(f"{before.isoformat()} is in the future: only past "
                                   "records can be archived")
            return archive(self.audit.store, to_us(before), dest, progress=progress)

        return self._audit_job("audit_archive", run,
                               lambda r: {"records": r.records, "through": r.through})

    def compact(self) -> CompactResult | None:
        """Give back the space that removed records left (after ``audit_archive``): an
        SQLite file (the embedded store, or the audit file beside a cloud store) is
        VACUUMed, PostgreSQL's audit table VACUUM ANALYZEd. None where the store has
        nothing to compact (memory). Recorded as ``compact``."""
        fn: Callable[[], CompactResult] | None = getattr(self.audit.store, "compact", None)
        if fn is None:
            return None
        return self._audit_job("compact", fn, lambda r: {"bytes_before": r.bytes_before,
                                                         "bytes_after": r.bytes_after})

    def _audit_job(self, action: str, run: Callable[[], T],
                   detail: Callable[[T], dict[str, Any]]) -> T:
        """``run()`` on the audit log's own store, after the buffered records are in:
        recorded as ``action``, ok with ``detail(result)``, else the error's code (and
        the error raised)."""
        self.audit.flush()
        try:
            res = run()
        except KeysafeError as exc:
            self.record(action, None, exc.code, durable=False)
            raise
        self.record(action, None, "ok", durable=True, detail=detail(res))
        return res

    def rekey(self, progress: Progress | None = None) -> int:
        """Re-wrap every data key with the active master key (see ``keysafe rekey``)."""
        b = self._need(Rekeyable, "rekey")
        try:
            n: int = b.rewrap_all(progress)
        except KeysafeError as exc:
            self.record("rekey", None, exc.code, durable=True)
            raise
        self.record("rekey", None, "ok", durable=True, detail={"rewrapped": n})
        return n

    def count(self, stat: str) -> None:
        """Add one to a counter of ``stats()`` (for events of several threads: the
        key checks' server threads; the read path's hot counters stay unlocked)."""
        with self._count_lock:
            self._stats[stat] = self._stats.get(stat, 0) + 1

    def stats(self) -> dict[str, int]:
        return {**self._stats, "cache_entries": len(self.cache),
                "audit_failures": self.audit.failures}


def _utc(when: datetime | None) -> datetime | None:
    """A time given to a write, in UTC: a naive one is taken as UTC (as the CLI and the
    API take it), never as this machine's local time."""
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=UTC)


def _utc_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: _utc(v) if isinstance(v, datetime) else v for k, v in fields.items()}
