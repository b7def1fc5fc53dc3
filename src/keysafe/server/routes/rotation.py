"""Rotation as a whole (``keysafe rotate status`` through a server): when each secret
the caller covers is due, by the server's own policy. No value, and no rotator option
(a URL, the name of the secret that signs for it): only the rotator's name."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from keysafe.rotation.engine import RotationEngine
from keysafe.rotation.policy import Policy, parse_overrides, parse_window, sort_states
from keysafe.server.deps import Ctx, get_ctx
from keysafe.server.schemas import RotationStatusList

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
    settings = ctx.state.settings
    engine = RotationEngine(ctx.mgr, policy=Policy(
        ctx.mgr.catalog, parse_overrides(settings.rotation_overrides),
        parse_window(settings.rotation_window)))
    states = [s for o in orgs for s in engine.states(o, domain_id)
              if ident.orgs is None or (ident.covers_domain(s.org, s.domain)
                                        and ctx.covers_name(s.org, s.domain, s.name))]
    ctx.audit("rotation_status", None, "ok", org=org_id,
              detail={"count": len(states), **({"domain": domain_id} if domain_id else {})})
    return RotationStatusList(secrets=[s.to_dict() for s in sort_states(states)])
