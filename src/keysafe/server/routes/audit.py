"""Audit query: admins read their orgs' records (never values; there are none)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from keysafe.errors import PermissionDenied
from keysafe.manager.audit import AuditFilter
from keysafe.server.deps import Ctx, get_ctx
from keysafe.server.schemas import AuditPage, AuditRecord

router = APIRouter(tags=["audit"])
CtxDep = Annotated[Ctx, Depends(get_ctx)]


@router.get("/api/audit", response_model=AuditPage)
def audit_query(ctx: CtxDep,
                org_id: Annotated[str | None, Query(max_length=128)] = None,
                action: Annotated[str | None, Query(max_length=64)] = None,
                actor: Annotated[str | None, Query(max_length=256)] = None,
                path: Annotated[str | None, Query(max_length=1024)] = None,
                outcome: Annotated[str | None, Query(max_length=64)] = None,
                since: datetime | None = None, until: datetime | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> AuditPage:
    """Newest first. A token limited to some orgs must name one of them."""
    if org_id is None and ctx.identity.orgs is not None:
        ctx.require("audit", None)
        raise PermissionDenied("name an org_id: this token covers only some orgs")
    ctx.require("audit", org_id)
    flt = AuditFilter(org=org_id, action=action, actor=actor, path=path, outcome=outcome,
                      since=since, until=until, limit=limit, newest_first=True)
    records = ctx.mgr.audit_query(flt)
    ctx.audit("audit_query", None, "ok", org=org_id, detail={"count": len(records)})
    return AuditPage(records=[AuditRecord(**{k: v for k, v in r.to_dict().items()
                                             if k not in ("prev_hash", "hash")})
                              for r in records])
