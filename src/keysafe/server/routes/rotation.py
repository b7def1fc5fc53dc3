"""Rotation as a whole (``keysafe rotate status`` through a server): when each secret
the caller covers is due, by the server's own policy. No value, and no rotator option
(a URL, the name of the secret that signs for it): only the rotator's name."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from keysafe.errors import ConfigError, InvalidValue, PermissionDenied
from keysafe.naming import validate_segment
from keysafe.rotation.engine import RotationEngine
from keysafe.rotation.policy import Policy, parse_overrides, parse_window, sort_states
from keysafe.server.deps import Ctx, get_ctx
from keysafe.server.routes.secrets import status_of
from keysafe.server.schemas import RotationConfig, RotationStatusList, SecretStatus

router = APIRouter(tags=["rotation"])
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
    scopes = [(o, d) for o in orgs for d in _domains(ident, o, domain_id)]
    settings = ctx.state.settings
    engine = RotationEngine(ctx.mgr, policy=Policy(
        ctx.mgr.catalog, parse_overrides(settings.rotation_overrides),
        parse_window(settings.rotation_window)))
    states = [s for o, d in scopes for s in engine.states(o, d)
              if ident.orgs is None or (ident.covers_domain(s.org, s.domain)
                                        and ctx.covers_name(s.org, s.domain, s.name))]
    ctx.audit("rotation_status", None, "ok", org=org_id,
              detail={"count": len(states), **({"domain": domain_id} if domain_id else {})})
    return RotationStatusList(secrets=[s.to_dict() for s in sort_states(states)])


def _domains(ident: Any, org: str | None, domain: str | None) -> list[str | None]:
    """The domains of ``org`` to read: the one asked for, else those the caller's
    scopes name (None: every domain)."""
    if domain is not None:
        return [domain]
    some = ident.domains.get(org) if org is not None and ident.orgs is not None else None
    return list(sorted(some)) if some is not None else [None]


@router.put("/api/secrets/{org_id}/{secret_name}/rotation", response_model=SecretStatus)
async def rotation_configure(org_id: str, secret_name: str, body: RotationConfig,
                             ctx: CtxDep) -> SecretStatus:
    """How a secret rotates (``keysafe rotate configure``): its rotator, the rotator's
    options (added to those set before) and its period, checked before anything is
    stored (422 naming the problem), with no new version; ``dry_run``: checked only.
    Admins of every org only: a rotator's options point the server at a URL or a
    database, which an org's own administrators must not choose. The answer is the
    status, which shows the rotator but not its options."""
    from keysafe.rotation.configure import configure_rotation

    if not ctx.identity.can("tokens") or ctx.identity.orgs is not None:
        ctx.audit("update_metadata", None, "denied", org=org_id,
                  detail={"reason": "PermissionDenied", "needs": "every org"})
        raise PermissionDenied("configuring a rotator points the server at a URL or a "
                               "database: an admin of every org only")
    ctx.require("write", org_id, secret_name, body.domain_id)
    ref, path = ctx.mgr.resolve(secret_name, org_id, body.domain_id, None)

    def configure() -> Any:
        try:
            return configure_rotation(ctx.mgr, secret_name, org_id, domain=body.domain_id,
                                      rotator=body.rotator, options=body.options,
                                      period_days=body.period_days, dry_run=body.dry_run)
        except ConfigError as exc:  # the rotator or its options: bad input here
            raise InvalidValue(exc.message) from None

    if body.dry_run:
        meta = configure()
    else:
        meta = await ctx.write(configure, path)
    return status_of(ctx, ref, meta)
