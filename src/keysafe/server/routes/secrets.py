"""Spec 001's secrets endpoints, exactly as documented, and the verbs around them."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from time import time
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, Query, Response

from keysafe.catalog import ROTATION_DAYS
from keysafe.errors import InvalidValue, KeysafeError, ManualRotation, NotFound
from keysafe.models import SecretMetadata, VersionInfo
from keysafe.naming import SecretRef
from keysafe.rotation.policy import (
    MANUAL_SYMMETRIC,
    is_exposed,
    is_rotation_detail,
    rotator_for,
)
from keysafe.server.deps import LONG_JOBS, Ctx, TooManyAttempts, get_ctx
from keysafe.server.schemas import (
    Destroy,
    DestroyOut,
    Done,
    ExposedMark,
    FieldsWrite,
    KeyCheckOut,
    KeyCheckRequest,
    LlmKey,
    MetadataPatch,
    Rollback,
    RotationOut,
    SecretGenerate,
    SecretList,
    SecretStatus,
    SecretValue,
    SecretWrite,
    VersionList,
    VersionOut,
    WellKnown,
    WriteResult,
)

router = APIRouter(tags=["secrets"])
CtxDep = Annotated[Ctx, Depends(get_ctx)]
DomainQ = Annotated[str | None, Query(max_length=128, description="domain; default shared")]
MAX_FIELD = 256
FieldQ = Annotated[str | None, Query(max_length=MAX_FIELD, description=(
    "one field of JSON credentials: only it is returned (empty: the whole value)"))]
StageQ = Annotated[Literal["current", "previous"] | None, Query(description=(
    "`previous`: the value a rotation replaced, while its grace period lasts"))]
NO_STORE = {"Cache-Control": "no-store"}


def shown_tags(tags: dict[str, str]) -> dict[str, str]:
    """Tags as the API shows them: a rotator's options (a URL, the name of the secret
    that signs for it) and the protocol's bookkeeping stay with the operator."""
    return {k: v for k, v in tags.items() if not is_rotation_detail(k)}


def status_of(ctx: Ctx, ref: SecretRef, meta: SecretMetadata | None) -> SecretStatus:
    entry = ctx.mgr.catalog.get(ref.name)
    fields: dict[str, Any] = {
        "configured": False, "secret_name": ref.name, "organization_id": ref.org,
        "domain_id": ref.domain, "display_name": entry.display_name if entry else None,
        "category": entry.category if entry else None}
    if meta is not None:
        days = meta.rotation_days
        if days is None and entry is not None:
            days = entry.effective_rotation_days
        if days is None and meta.secret_type:
            days = ROTATION_DAYS.get(meta.secret_type)
        since = meta.last_rotated or meta.updated_at
        due = since + timedelta(days=days) if days else None
        exposed = is_exposed(meta)
        if exposed:
            due = meta.created_at  # due since it was stored, whatever its period
        fields.update(
            configured=not meta.deleted, version=meta.current_version,
            created_at=meta.created_at, updated_at=meta.updated_at,
            updated_by=meta.updated_by, description=meta.description,
            secret_type=meta.secret_type, tags=shown_tags(meta.tags), rotation_days=days,
            last_rotated=meta.last_rotated, rotation_due=due,
            rotation_overdue=bool(due and due.timestamp() < time() and not meta.deleted),
            exposed=exposed,
            deleted=meta.deleted,
            recoverable_until=(meta.deleted_at + ctx.mgr.recovery_window
                               if meta.deleted_at else None),
            rotator=rotator_for(meta, entry), created_by=meta.created_by,
            expires_at=meta.expires_at, deleted_at=meta.deleted_at,
            versions_kept=meta.versions)
    # Built once, from trusted values: no second validation pass on the hot path.
    return SecretStatus.model_construct(**fields)


@router.get("/api/secrets/well-known", response_model=WellKnown)
def well_known(ctx: CtxDep) -> WellKnown:
    """The catalog of well-known secrets by category (spec 001)."""
    cats = ctx.mgr.catalog.categories()
    checks = ctx.state.settings.key_checks
    return WellKnown(categories={c: [e.to_dict(checks=checks) for e in entries]
                                 for c, entries in cats.items()})


@router.get("/api/secrets/{org_id}/{secret_name}", response_model=SecretStatus)
def secret_status(org_id: str, secret_name: str, ctx: CtxDep,
                  domain_id: DomainQ = None) -> SecretStatus:
    """Status only: whether the secret is configured, and its metadata. Never the value."""
    return status_core(ctx, org_id, secret_name, domain_id).status


def is_remote(mgr: Any) -> bool:
    """Whether the store is across a network (PostgreSQL, cloud stores, Vault): its calls
    then run in worker threads; the embedded store answers faster than a thread hop."""
    return bool(getattr(mgr.backend, "remote", False))


@dataclass(frozen=True, slots=True)
class Status:
    """A finished status response, as the server caches it (never holds a value)."""

    path: str
    status: SecretStatus
    body: bytes
    #: When rotation_overdue changes by the clock alone (epoch seconds), if it can.
    flips_at: float | None


def status_core(ctx: Ctx, org_id: str, secret_name: str, domain_id: str | None) -> Status:
    st = status_cached(ctx, org_id, secret_name, domain_id)
    return st if st is not None else status_read(ctx, org_id, secret_name, domain_id)


def status_cached(ctx: Ctx, org_id: str, secret_name: str, domain_id: str | None
                  ) -> Status | None:
    """Checks permission first (so the cache tells no one about another org's names),
    then answers from the server's cache, audited; None on a miss.

    Entries live in the manager's cache as meta entries: every write through the
    manager, and every change another replica announces, drops them with the values."""
    ctx.require("status", org_id, secret_name, domain_id)
    e = ctx.mgr.cache.get_meta((secret_name, org_id, domain_id))
    if e is None:
        return None
    st = cast(Status, e)
    if st.flips_at is not None and (time() > st.flips_at) != st.status.rotation_overdue:
        return None  # rotation came due since: the body says otherwise now
    ctx.audit("status", st.path, "ok", org=org_id)
    return st


def status_read(ctx: Ctx, org_id: str, secret_name: str, domain_id: str | None) -> Status:
    """The status from the store (a cache miss), cached unless a write to the secret
    began meanwhile. The caller has checked permission (``status_cached``)."""
    mgr = ctx.mgr
    ref, path = mgr.resolve(secret_name, org_id, domain_id, None)
    generation = mgr.cache.generation(path)
    try:
        meta: SecretMetadata | None = mgr.backend.describe(path, include_deleted=True)
    except NotFound:
        meta = None  # "not configured" is cached too: a put drops it like any entry
    status = status_of(ctx, ref, meta)
    due = status.rotation_due
    st = Status(path, status, status.model_dump_json().encode(),
                due.timestamp() if due is not None and not status.deleted else None)
    mgr.cache.put_meta((secret_name, org_id, domain_id), path, st, generation)
    ctx.audit("status", path, "ok", org=org_id)
    return st


@router.put("/api/secrets/{org_id}/{secret_name}", response_model=WriteResult)
async def secret_write(org_id: str, secret_name: str, body: SecretWrite,
                       ctx: CtxDep) -> WriteResult:
    """Blind write: create or overwrite. The value is never returned or logged."""
    return await write_core(ctx, org_id, secret_name, body)


async def write_core(ctx: Ctx, org_id: str, secret_name: str, body: SecretWrite
                     ) -> WriteResult:
    ctx.require("write", org_id, secret_name, body.domain_id)
    ref, path = ctx.mgr.resolve(secret_name, org_id, body.domain_id, None)
    check = None
    if body.check_key:
        # Before the write, outside its group commit: the provider may take seconds.
        check = await _check_key(ctx, secret_name, body.secret_value, org_id,
                                 body.domain_id, refuse=True, check_format=body.check_format)

    def put() -> VersionInfo:
        return ctx.mgr.put(
            secret_name, body.secret_value, org_id, domain=body.domain_id,
            expected_version=body.expected_version, description=body.description,
            secret_type=body.secret_type, tags=body.tags, rotation_days=body.rotation_days,
            expires_at=body.expires_at, check_format=body.check_format)

    info = await ctx.write(put, path)
    return written(ref, info, f"Secret '{secret_name}' has been updated successfully",
                   key_check=check)


@router.post("/api/secrets/{org_id}/{secret_name}/generate", response_model=WriteResult)
async def secret_generate(org_id: str, secret_name: str, body: SecretGenerate,
                          ctx: CtxDep) -> WriteResult:
    """Store a random value the server makes (a JWT, session or encryption secret's
    first value, a password): it is never returned, so nobody has seen it. Its length
    and alphabet default to what a rotation of the secret would make. 422 for a
    catalog secret a provider issues (a made-up key would not work there)."""
    ctx.require("write", org_id, secret_name, body.domain_id)
    ref, path = ctx.mgr.resolve(secret_name, org_id, body.domain_id, None)

    def put() -> VersionInfo:
        return ctx.mgr.put_generated(
            secret_name, org_id, length=body.length, alphabet=body.alphabet,
            domain=body.domain_id, expected_version=body.expected_version,
            description=body.description, secret_type=body.secret_type,
            tags=body.tags, rotation_days=body.rotation_days, expires_at=body.expires_at,
            check_format=body.check_format)

    info = await ctx.write(put, path)
    return written(ref, info, f"Secret '{secret_name}' has been generated and stored")


def written(ref: SecretRef, info: VersionInfo, message: str,
            key_check: KeyCheckOut | None = None) -> WriteResult:
    """The answer to a write: the new version, when and by whom."""
    return WriteResult(message=message, secret_name=ref.name, organization_id=ref.org,
                       domain_id=ref.domain, version=info.version,
                       created_at=info.created_at, created_by=info.created_by,
                       key_check=key_check)


class KeyChecksLimited(TooManyAttempts):
    """429: this principal asked for too many key checks in the last minute."""

    title = "Too many key checks"
    detail = "too many live key checks by this identity in the last minute " \
             "(KEYSAFE_KEY_CHECK_RATE)"



#: Key checks wait on providers (up to KEYSAFE_KEY_CHECK_TIMEOUT, DNS included): their
#: own few threads, so slow providers never hold the threads that serve reads.
_CHECKS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="key-check")


async def _check_key(ctx: Ctx, name: str, value: str | None, org: str, domain: str | None,
                     *, refuse: bool = False, check_format: bool = True) -> KeyCheckOut:
    limiter = ctx.state.key_checks if ctx.state is not None else None
    loop = asyncio.get_running_loop()
    # Counted in the store shared with the other workers and replicas: off the loop.
    wait = (await loop.run_in_executor(_CHECKS, limiter.take, ctx.identity.principal)
            if limiter is not None else None)
    if wait is not None:
        ctx.mgr.record("check_key", ctx.mgr.path(name, org, domain=domain), "rate_limited",
                       org=org)
        ctx.mgr.count("key_checks_rate_limited")
        raise KeyChecksLimited(wait)
    result = await loop.run_in_executor(
        _CHECKS, lambda: ctx.mgr.check_key(name, value, org, domain=domain, refuse=refuse,
                                           check_format=check_format))
    return KeyCheckOut(**result.to_dict())


@router.post("/api/secrets/{org_id}/{secret_name}/check", response_model=KeyCheckOut)
async def secret_check(org_id: str, secret_name: str, ctx: CtxDep,
                       body: KeyCheckRequest | None = None,
                       domain_id: DomainQ = None) -> KeyCheckOut:
    """Ask the secret's provider whether a key works: the value sent (nothing is
    saved), or the stored value when none is sent. Never returns the key; needs the
    write permission (a settings page's "test key" button). The domain comes from the
    body or, as for the other endpoints, the ``domain_id`` query."""
    body = body or KeyCheckRequest()
    domain = body.domain_id or domain_id
    ctx.require("write", org_id, secret_name, domain)
    return await _check_key(ctx, secret_name, body.secret_value, org_id, domain)


@router.delete("/api/secrets/{org_id}/{secret_name}", response_model=Done)
async def secret_delete(org_id: str, secret_name: str, ctx: CtxDep, domain_id: DomainQ = None,
                        force: bool = False) -> Done:
    """Soft delete (restorable within the recovery window); ``force`` purges now."""
    ctx.require("destroy" if force else "delete", org_id, secret_name, domain_id)
    _, path = ctx.mgr.resolve(secret_name, org_id, domain_id, None)
    await ctx.write(lambda: ctx.mgr.delete(secret_name, org_id, domain=domain_id,
                                           force=force), path)
    what = "purged" if force else "deleted (restorable)"
    return Done(message=f"Secret '{secret_name}' {what}")


@router.patch("/api/secrets/{org_id}/{secret_name}", response_model=SecretStatus)
async def secret_patch(org_id: str, secret_name: str, body: MetadataPatch,
                       ctx: CtxDep) -> SecretStatus:
    """Change a secret's description or some of its tags without a new version: the
    tags named are set (null removes one), the others stay, read and written under the
    store's write lock."""
    ctx.require("write", org_id, secret_name, body.domain_id)
    ref, path = ctx.mgr.resolve(secret_name, org_id, body.domain_id, None)
    tags = body.tags or {}
    fields: dict[str, Any] = {k: v for k, v in (("description", body.description),
                                                 ("expires_at", body.expires_at))
                              if v is not None}
    meta = await ctx.write(lambda: ctx.mgr.update_tags(
        secret_name, org_id, domain=body.domain_id,
        set_tags={k: v for k, v in tags.items() if v is not None},
        unset=[k for k, v in tags.items() if v is None], **fields), path)
    return status_of(ctx, ref, meta)


@router.post("/api/secrets/{org_id}/{secret_name}/exposed", response_model=SecretStatus)
async def secret_exposed(org_id: str, secret_name: str, body: ExposedMark,
                         ctx: CtxDep) -> SecretStatus:
    """Record that the current value was found in the open (``keysafe import`` of a
    committed file, ``scan --import``): due for rotation at once, whatever its period,
    until a new value is written; the ``exposed`` tag says where. No new version."""
    ctx.require("write", org_id, secret_name, body.domain_id)
    ref, path = ctx.mgr.resolve(secret_name, org_id, body.domain_id, None)
    meta = await ctx.write(lambda: ctx.mgr.mark_exposed(
        secret_name, org_id, domain=body.domain_id, where=body.where), path)
    return status_of(ctx, ref, meta)


@router.patch("/api/secrets/{org_id}/{secret_name}/fields", response_model=WriteResult)
async def secret_fields(org_id: str, secret_name: str, body: FieldsWrite,
                        ctx: CtxDep) -> WriteResult:
    """Blind write of some fields of a JSON credential (``update_credentials``): a new
    version holding the stored object with these fields set (null removes one); the
    others are kept without the caller ever seeing them."""
    ctx.require("write", org_id, secret_name, body.domain_id)
    ref, path = ctx.mgr.resolve(secret_name, org_id, body.domain_id, None)
    info = await ctx.write(lambda: ctx.mgr.update_json(
        secret_name, body.fields, org_id, domain=body.domain_id,
        expected_version=body.expected_version, check_format=True), path)
    return written(ref, info, f"Secret '{secret_name}' has been updated successfully")


@router.post("/api/secrets/{org_id}/{secret_name}/rotate", response_model=RotationOut)
async def secret_rotate(org_id: str, secret_name: str, ctx: CtxDep,
                        domain_id: DomainQ = None, dry_run: bool = False) -> RotationOut:
    """Rotate now with the secret's rotator (spec 004's ``rotate_secret``): a new value
    the caller never sees. 409 ``rotation_manual`` when only a person can issue one (no
    reminder is recorded: ``keysafe rotate due`` keeps those); 409 ``rotation_busy`` when
    another process is rotating it; 500 ``rotation_error`` when a step fails, the
    current version unchanged. ``dry_run``: outcome ``planned`` with the rotator and
    the rotation status, changing nothing (``keysafe rotate NAME --dry-run``)."""
    ctx.require("write", org_id, secret_name, domain_id)
    ref, path = ctx.mgr.resolve(secret_name, org_id, domain_id, None)
    entry = ctx.mgr.catalog.get(secret_name)
    if dry_run:
        from keysafe.rotation.policy import Policy

        policy = Policy.from_settings(ctx.mgr.catalog, ctx.state.settings)
        meta = await asyncio.get_running_loop().run_in_executor(
            None, lambda: ctx.mgr.describe(secret_name, org_id, domain=domain_id))
        st = policy.state(meta, ref.org, ref.domain, ref.name)
        ctx.audit("rotation_plan", path, "ok", org=org_id, version=st.version,
                  detail={"rotator": st.rotator, "status": st.status})
        return RotationOut(secret_name=secret_name, organization_id=org_id,
                           domain_id=ref.domain, outcome="planned", version=st.version,
                           detail=f"rotator {st.rotator}; {st.status}")

    def rotate() -> Any:
        meta = ctx.mgr.backend.describe(path)
        if rotator_for(meta, entry) == "manual":
            # Said at once, without a reminder or an event each time someone asks.
            stype = meta.secret_type or (entry.secret_type if entry else None)
            if stype in MANUAL_SYMMETRIC:
                raise ManualRotation(f"{secret_name} encrypts data: keysafe rotates it only "
                                     "once the application decrypts with every kept "
                                     "version (keysafe rotate configure ... --rotator "
                                     "random; docs/rotation.md#encryption-keys)")
            raise ManualRotation(f"{secret_name} can only be rotated by a person: issue "
                                 "a new value with its provider and save it")
        return ctx.mgr.rotate(secret_name, org_id, domain=domain_id)

    # Several steps, maybe a provider's API: off the loop and outside the group commit.
    out = await asyncio.get_running_loop().run_in_executor(LONG_JOBS, rotate)
    return RotationOut(secret_name=secret_name, organization_id=org_id,
                       domain_id=ref.domain, outcome=out.outcome, version=out.version,
                       step=out.step, detail=out.detail)


@router.post("/api/secrets/{org_id}/{secret_name}/destroy", response_model=DestroyOut)
async def secret_destroy(org_id: str, secret_name: str, body: Destroy,
                         ctx: CtxDep) -> DestroyOut:
    """Crypto-shred chosen versions (admins): their data keys are gone for good. Not the
    current version: the secret would look configured and read as not found."""
    ctx.require("destroy", org_id, secret_name, body.domain_id)
    ref, path = ctx.mgr.resolve(secret_name, org_id, body.domain_id, None)

    done = await ctx.write(lambda: ctx.mgr.destroy(
        secret_name, sorted(set(body.versions)), org_id, domain=body.domain_id,
        keep_current=True), path)
    return DestroyOut(secret_name=secret_name, organization_id=org_id,
                      domain_id=ref.domain, destroyed=done)


@router.post("/api/secrets/{org_id}/{secret_name}/restore", response_model=SecretStatus)
async def secret_restore(org_id: str, secret_name: str, ctx: CtxDep,
                         domain_id: DomainQ = None) -> SecretStatus:
    ctx.require("restore", org_id, secret_name, domain_id)
    _, path = ctx.mgr.resolve(secret_name, org_id, domain_id, None)
    meta = await ctx.write(lambda: ctx.mgr.restore(secret_name, org_id, domain=domain_id),
                           path)
    return status_of(ctx, ctx.mgr.ref(secret_name, org_id, domain=domain_id), meta)


@router.get("/api/secrets/{org_id}/{secret_name}/versions", response_model=VersionList)
def secret_versions(org_id: str, secret_name: str, ctx: CtxDep,
                    domain_id: DomainQ = None) -> VersionList:
    """Version history: metadata only."""
    ctx.require("versions", org_id, secret_name, domain_id)
    ref, path = ctx.mgr.resolve(secret_name, org_id, domain_id, None)
    try:
        meta = ctx.mgr.backend.describe(path)
    except KeysafeError as exc:
        ctx.audit("versions", path, exc.code, org=org_id)
        raise
    versions = ctx.mgr.versions(secret_name, org_id, domain=domain_id)
    ctx.audit("versions", path, "ok", org=org_id)
    return VersionList(secret_name=secret_name, organization_id=org_id, domain_id=ref.domain,
                       current_version=meta.current_version,
                       versions=[VersionOut(version=v.version, created_at=v.created_at,
                                            created_by=v.created_by, destroyed=v.destroyed)
                                 for v in versions])


@router.post("/api/secrets/{org_id}/{secret_name}/rollback", response_model=WriteResult)
async def secret_rollback(org_id: str, secret_name: str, body: Rollback,
                          ctx: CtxDep) -> WriteResult:
    """Make an old version current again (as a new version)."""
    ctx.require("rollback", org_id, secret_name, body.domain_id)
    ref, path = ctx.mgr.resolve(secret_name, org_id, body.domain_id, None)
    info = await ctx.write(lambda: ctx.mgr.rollback(secret_name, body.version, org_id,
                                                    domain=body.domain_id), path)
    return written(ref, info, f"Secret '{secret_name}' rolled back to version "
                              f"{body.version} as version {info.version}")


@router.get("/api/secrets/{org_id}/{secret_name}/value", response_model=SecretValue,
            responses={200: {"headers": {"Cache-Control": {"schema": {"type": "string"}}}}})
async def secret_value(org_id: str, secret_name: str, ctx: CtxDep, response: Response,
                       domain_id: DomainQ = None,
                       version: Annotated[int | None, Query(
                           ge=0, le=2**31 - 1, description=(
                               "read this version (0: the current one, read from the "
                               "store) and say which in `version`"))] = None,
                       field: FieldQ = None,
                       stage: StageQ = None,
                       ) -> SecretValue:
    """The one path that returns a value: service identities only, audited on its own,
    never cached by clients. With `field`, only that field of JSON credentials is
    returned (an empty `field` is the whole value, as the External Secrets Operator's
    webhook provider sends for a `remoteRef` without `property`). `stage=previous` is
    the value a rotation replaced, while its grace period lasts (404 otherwise)."""
    response.headers.update(NO_STORE)
    return await value_core(ctx, org_id, secret_name, domain_id, version, field or None,
                            stage == "previous")


async def value_core(ctx: Ctx, org_id: str, secret_name: str, domain_id: str | None,
                     version: int | None = None, field: str | None = None,
                     previous: bool = False) -> SecretValue:
    ctx.require("read", org_id, secret_name, domain_id)
    if field is not None and len(field) > MAX_FIELD:
        raise InvalidValue(f"field names are at most {MAX_FIELD} characters")
    if previous and version is not None:
        raise InvalidValue("stage=previous and version each choose the value read; give "
                           "one of them")
    mgr = ctx.mgr
    # The path as plain strings (what the manager's read remembers too), not a SecretRef:
    # at a million names every read resolves a new one, and strings are not GC-tracked.
    path = mgr._where(secret_name, org_id, domain_id, None)[0]
    detail = {**({"field": field} if field is not None else {}),
              **({"stage": "previous"} if previous else {})} or None
    got: int | None = None
    try:
        if version is not None or previous:
            # A chosen version, the current one with its number, or the previous one:
            # from the store.
            def read() -> tuple[str, int | None]:
                if previous:
                    return mgr.get_previous(secret_name, org_id, domain=domain_id)
                return mgr.read(secret_name, org_id, domain=domain_id,
                                version=version or None)

            value, got = (await asyncio.get_running_loop().run_in_executor(None, read)
                          if is_remote(mgr) else read())
        elif is_remote(mgr):
            # A network store's round trip must not hold up the event loop: hits are
            # answered here, misses read on the loop where the store can (PostgreSQL),
            # else in a worker thread.
            value = await mgr.get_async(secret_name, org_id, domain=domain_id)
        else:
            value = mgr.get(secret_name, org_id, domain=domain_id)
    except NotFound:
        await ctx.audit_durable("read_value", path, "not_found", org=org_id,
                                version=version or None, detail=detail)
        raise
    encoded: bool | None = None
    if field is not None:
        try:
            value, encoded = field_value(value, secret_name, field)
        except KeysafeError as exc:
            await ctx.audit_durable("read_value", path, exc.code, org=org_id, version=got,
                                    detail=detail)
            raise
    await ctx.audit_durable("read_value", path, "ok", org=org_id, version=got,
                            detail=detail)
    return SecretValue(secret_name=secret_name, organization_id=org_id,
                       domain_id=domain_id or mgr.default_domain, value=value, version=got,
                       field=field, field_json=encoded)


def field_value(raw: str, name: str, field: str) -> tuple[str, bool]:
    """(text, is JSON) of one field of JSON credentials: a string as is, anything else
    as its JSON text. InvalidValue if the value is not a JSON object, NotFound if it has
    no such field (neither names the value)."""
    import json

    from keysafe.manager.manager import json_field

    got = json_field(raw, name, field)
    if isinstance(got, str):
        return got, False
    return json.dumps(got, separators=(",", ":"), ensure_ascii=False), True


@router.get("/api/orgs/{org_id}/llm-keys/{provider}", response_model=LlmKey)
async def llm_key(org_id: str, provider: str, ctx: CtxDep, response: Response,
                  domain_id: DomainQ = None) -> LlmKey:
    """Spec 001's get_llm_api_key over HTTP: the domain's key, else the org's shared key."""
    response.headers.update(NO_STORE)
    ctx.require("read", org_id, domain=domain_id or ctx.mgr.default_domain)
    # The org's shared key as the fallback only for a caller that covers it.
    # Only the keys the caller's scopes cover are tried (name scopes included): one it
    # may not read is never read, and answers as if it were absent.
    found = ctx.mgr.find_llm_api_key(
        org_id, provider, domain_id,
        fallback=ctx.identity.covers_domain(org_id, ctx.mgr.default_domain),
        allowed=lambda d, n: ctx.covers_name(org_id, d, n))
    # The path of the key disclosed (the domain's, or the org's shared fallback), so a
    # search of the audit log for that secret finds this read too.
    await ctx.audit_durable("read_value", found[0] if found else f"llm:{provider}",
                            "ok" if found else "not_found", org=org_id,
                            detail={"provider": provider})
    if found is None:
        raise NotFound(f"no {provider} key configured for this org")
    return LlmKey(organization_id=org_id, provider=provider, domain_id=domain_id,
                  value=found[1])


@router.get("/api/orgs/{org_id}/secrets", response_model=SecretList)
def secret_list(org_id: str, ctx: CtxDep, domain_id: DomainQ = None,
                include_deleted: bool = False) -> SecretList:
    """Every secret of an org (or one domain) with status and metadata; of the domains
    the caller covers only, when its scopes name some domains of the org."""
    domain_id = domain_id or None
    ctx.require("list", org_id, domain=domain_id)
    # Only the covered domains are listed (and recorded as listed).
    metas = [m for d in ctx.domains_to_read(org_id, domain_id)
             for m in ctx.mgr.list(org_id, domain=d, include_deleted=include_deleted)]
    pairs = [(ctx.mgr.parse(m.path), m) for m in metas]
    if ctx.identity.names:  # name scopes: only the secrets they cover are listed
        pairs = [(r, m) for r, m in pairs if ctx.covers_name(r.org, r.domain, r.name)]
    ctx.audit("list", None, "ok", org=org_id, detail={"count": len(pairs)})
    return SecretList(organization_id=org_id, domain_id=domain_id,
                      secrets=[status_of(ctx, r, m) for r, m in pairs])
