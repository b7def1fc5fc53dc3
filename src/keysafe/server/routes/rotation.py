"""Rotation through a server, beyond one secret's ``POST …/rotate``: when each secret
the caller covers is due (``keysafe rotate status``), how a secret rotates (``rotate
configure``), a selection rotated now (``rotate due|all|...``, ``--read-by``), and the
retiring of previous values (``rotate retire``), all by the server's own policy. No
value, and no rotator option (a URL, the name of the secret that signs for it): only
the rotator's name."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from keysafe.errors import ConfigError, InvalidValue, PermissionDenied
from keysafe.naming import validate_segment
from keysafe.rotation.engine import RotationEngine
from keysafe.rotation.policy import Policy, sort_states
from keysafe.server.deps import Ctx, get_ctx
from keysafe.server.routes.secrets import status_of
from keysafe.server.schemas import (
    RetiredOut,
    RotationConfig,
    RotationRun,
    RotationRunOut,
    RotationStatusList,
    SecretStatus,
)

router = APIRouter(tags=["rotation"])
log = logging.getLogger("keysafe.server")
#: Rotation runs take turns on a thread of their own (LONG_JOBS stays free for single
#: rotations and org removals, whatever a run waits on).
RUNS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keysafe-rotation-run")
CtxDep = Annotated[Ctx, Depends(get_ctx)]
OrgQ = Annotated[str | None, Query(max_length=128, description="one org; default: every "
                                                                "org the caller covers")]
DomainQ = Annotated[str | None, Query(max_length=128, description="one domain")]


@router.get("/api/rotation", response_model=RotationStatusList)
def rotation_status(ctx: CtxDep, org_id: OrgQ = None,
                    domain_id: DomainQ = None) -> RotationStatusList:
    """Every secret's rotation state, overdue first (exposed ones first among them):
    its period and where that comes from, last rotation, next due date, status
    (``overdue``, ``due_soon``, ``ok``, ``unscheduled``), rotator and whether a
    maintenance window holds it back; of the orgs, domains and names the caller
    covers. Reads every secret in scope, as ``keysafe rotate status`` does."""
    org_id, domain_id = org_id or None, domain_id or None
    if domain_id is not None:
        validate_segment("domain", domain_id)  # 422 naming it, whoever asks
    ident = ctx.identity
    ctx.require("list", org_id, domain=domain_id if org_id else None)
    orgs: list[str | None]
    if org_id is not None:
        orgs = [org_id]
    elif ident.orgs is None:
        orgs = [None]
    else:
        # Without a {domain} in the paths, domain scopes cannot apply (as on every
        # route): an org this token covers only in part is left out.
        domains = "domain" in ctx.mgr.naming.fields
        orgs = [o for o in sorted(ident.domains) if domains or ident.whole(o)]
    # Only the domains the caller covers are read: a token for one domain of a large
    # org does not have the whole org judged on each request.
    scopes = [(o, d) for o in orgs for d in ctx.domains_to_read(o, domain_id)]
    engine = RotationEngine(ctx.mgr, policy=Policy.from_settings(ctx.mgr.catalog,
                                                                  ctx.state.settings))
    states = [s for o, d in scopes for s in engine.states(o, d)
              if ident.orgs is None or (ident.covers_domain(s.org, s.domain)
                                        and ctx.covers_name(s.org, s.domain, s.name))]
    ctx.audit("rotation_status", None, "ok", org=org_id,
              detail={"count": len(states), **({"domain": domain_id} if domain_id else {})})
    return RotationStatusList(secrets=[s.to_dict() for s in sort_states(states)])


@router.put("/api/secrets/{org_id}/{secret_name}/rotation", response_model=SecretStatus)
async def rotation_configure(org_id: str, secret_name: str, body: RotationConfig,
                             ctx: CtxDep) -> SecretStatus:
    """How a secret rotates (``keysafe rotate configure``): its rotator, the rotator's
    options (added to those set before; ``unset_options``, which must be set, removed)
    and its period, checked before anything is stored (422 naming the problem), with no
    new version; ``dry_run``: checked only.
    Admins of every org only: a rotator's options point the server at a URL or a
    database, which an org's own administrators must not choose. The answer is the
    status, which shows the rotator but not its options."""
    from keysafe.rotation.configure import configure_rotation

    ctx.require_every_org("tokens", "update_metadata", "configuring a rotator (its "
                          "options point the server at a URL or a database) needs an "
                          "admin of every org", org=org_id, name=secret_name,
                          domain=body.domain_id)
    ctx.require("write", org_id, secret_name, body.domain_id)
    ref, path = ctx.mgr.resolve(secret_name, org_id, body.domain_id, None)

    def configure() -> Any:
        try:
            return configure_rotation(ctx.mgr, secret_name, org_id, domain=body.domain_id,
                                      rotator=body.rotator, options=body.options,
                                      unset_options=body.unset_options or (),
                                      period_days=body.period_days, dry_run=body.dry_run)
        except ConfigError as exc:  # the rotator or its options: bad input here
            raise InvalidValue(exc.message) from None

    if body.dry_run:  # a read and a rotator's import: off the loop all the same
        meta = await asyncio.get_running_loop().run_in_executor(None, configure)
    else:
        meta = await ctx.write(configure, path)
    return status_of(ctx, ref, meta)


@router.post("/api/rotation/run", response_model=RotationRunOut)
async def rotation_run(body: RotationRun, ctx: CtxDep) -> RotationRunOut:
    """A selection rotated now, as ``keysafe rotate due|all|...`` does on a store (each
    secret's outcome; failures are reported per secret, the rest goes on), or planned
    with ``dry_run``. Within one org (one domain's), writers of it; a selection across
    every org, admins of every org. ``read_by`` (offboarding) reads the audit log, so
    it needs the ``audit`` permission there too."""
    from datetime import UTC, datetime, timedelta

    from keysafe.orgs import tally

    org, domain = body.org_id or None, body.domain_id or None
    if domain is not None:
        validate_segment("domain", domain)
    if org is None:
        ctx.require_every_org("tokens", "rotation_run",
                              "rotating a selection of every org needs an admin of every "
                              "org")
        if domain is not None:
            raise InvalidValue("domain_id goes with org_id: rotate one org's domain")
    else:
        ctx.require("write", org, domain=domain)
        if domain is None:
            ctx.require_whole("write", org, "rotating a selection of the org")
        elif (org, domain) in ctx.identity.names:
            # A selection is every secret of the domain: not for a token that covers
            # some names of it only.
            ctx.audit("rotation_run", None, "denied", org=org, detail={
                "reason": "PermissionDenied", "needs": "whole domain", "domain": domain})
            raise PermissionDenied(f"{ctx.identity.principal} covers only some secrets of "
                                   f"{org}/{domain}; a selection needs all of them")
        if body.read_by is not None:
            ctx.require("audit", org, domain=domain)
    since = body.since or datetime.now(UTC) - timedelta(days=90)
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    engine = RotationEngine.from_settings(ctx.mgr, ctx.state.settings)
    readers = (body.read_by, since) if body.read_by is not None else None
    # How many records the actor has is the org's audit data: only for a caller who
    # may read the whole org's (or every org's) log.
    count = body.read_by is not None and (org is None or ctx.identity.whole(org))

    def run() -> tuple[list[Any], int | None]:
        seen = engine.records_by(readers[0], since, org) if count and readers else None
        return engine.run(body.selection, org=org, domain=domain, dry_run=body.dry_run,
                          read_by=readers, remind=False), seen

    # Many rotations, maybe providers' APIs: off the loop, outside the group commit, and
    # on their own thread, taking turns, so that they never hold a single rotation or an
    # org's removal waiting.
    results, seen = await asyncio.get_running_loop().run_in_executor(RUNS, run)
    for r in results:
        if r.outcome == "failed":
            # A rotator's error can name its options (a URL, an admin secret) or quote
            # a provider: the operator reads it here and in the audit log.
            log.warning("rotation run %s: %s failed at step %s: %s", ctx.request_id,
                        r.path, r.step, r.detail)
    shown = [_public(r) for r in results]
    summary = tally(results)
    ctx.audit("rotation_run", None, "ok", org=org, detail={
        "selection": body.selection, "dry_run": body.dry_run, "summary": summary,
        **({"domain": domain} if domain else {}),
        **({"read_by": body.read_by} if body.read_by is not None else {})})
    return RotationRunOut(selection=body.selection, organization_id=org,
                          dry_run=body.dry_run, results=shown, summary=summary,
                          records_by=seen)


@router.post("/api/rotation/retire", response_model=RetiredOut)
async def rotation_retire(ctx: CtxDep, dry_run: bool = False) -> RetiredOut:
    """Previous values whose grace period has ended, revoked by their rotators and
    dropped (``keysafe rotate retire``; the server also does it on its schedule), or
    listed with ``dry_run``. Every org's: admins of every org only."""
    ctx.require_every_org("tokens", "rotation_retire", "retiring previous values of every "
                          "org needs an admin of every org")
    engine = RotationEngine.from_settings(ctx.mgr, ctx.state.settings)
    done = await asyncio.get_running_loop().run_in_executor(
        RUNS, lambda: engine.retire_expired(dry_run=dry_run))
    ctx.audit("rotation_retire", None, "ok", org=None,
              detail={"dry_run": dry_run, "count": len(done)})
    return RetiredOut(dry_run=dry_run, retired=done)


def _public(outcome: Any) -> dict[str, Any]:
    """An outcome as the API shows it: a failure's reason stays in the server's log
    and audit log (as ``POST …/rotate`` keeps it), only its step is said."""
    out: dict[str, Any] = outcome.to_dict()
    if outcome.outcome == "failed":
        out["detail"] = (f"the rotation failed at step {outcome.step or 'create'}; the "
                         "current version is unchanged (the server's log says why)")
    return out
