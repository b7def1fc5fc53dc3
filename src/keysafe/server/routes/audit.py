"""Audit query: admins read their orgs' records (never values; there are none)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from keysafe.errors import InvalidValue, PermissionDenied
from keysafe.manager.access import access_report
from keysafe.manager.audit import AuditFilter
from keysafe.server.deps import Ctx, get_ctx
from keysafe.server.schemas import (
    AccessReportOut,
    AnchorOut,
    AuditPage,
    AuditRecord,
    VerifyIn,
    VerifyOut,
)

router = APIRouter(tags=["audit"])
#: One walk of the chain at a time (a long read of every record), on a thread of its
#: own: never in the way of rotations and org removals, nor of another's walk.
_VERIFY = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-verify")
CtxDep = Annotated[Ctx, Depends(get_ctx)]


def _scope(ctx: Ctx, org_id: str | None) -> None:
    """Admins read their orgs' records; a token limited to some orgs must name one, and
    one limited to some domains of it reads none (its records span the whole org)."""
    if org_id is None and ctx.identity.orgs is not None:
        ctx.require("audit", None)
        raise PermissionDenied("name an org_id: this token covers only some orgs")
    if org_id is None:
        ctx.require("audit", None)
    else:
        ctx.require_whole("audit", org_id, "the org's audit log")


def _every_org(ctx: Ctx, action: str, what: str) -> None:
    """The whole chain is every org's records: an admin of every org only (a denial is
    audited)."""
    ctx.require_every_org("audit", action, f"{what} covers every org's records: an admin "
                                           "of every org only")


@router.post("/api/audit/anchor", response_model=AnchorOut)
def audit_anchor(ctx: CtxDep) -> AnchorOut:
    """An audit anchor: an ``audit_anchor`` record committed durably, and its number and
    hash, to keep where the store's administrators cannot write (``keysafe audit verify
    --anchors``). It covers every org's records: an admin of every org only."""
    from keysafe.manager.anchors import take

    _every_org(ctx, "audit_anchor", "the audit anchor")
    return AnchorOut(**take(ctx.mgr).to_dict())  # recorded as its own audit_anchor record


@router.post("/api/audit/verify", response_model=VerifyOut)
async def audit_verify(ctx: CtxDep, body: VerifyIn | None = None) -> VerifyOut:
    """``keysafe audit verify`` on the server's store: the hash chain walked from where
    archiving left it, and each anchor given (``keysafe audit anchor``) checked; every
    edited, removed or reordered record named. Recorded as ``audit_verify``. An admin of
    every org only."""
    from keysafe.manager.anchors import gather

    _every_org(ctx, "audit_verify", "the audit chain")
    wanted = gather((d, f"anchor {i}") for i, d in
                    enumerate(body.anchors if body is not None else [], 1))
    result = await asyncio.get_running_loop().run_in_executor(
        _VERIFY, lambda: ctx.mgr.audit_verify((), wanted))
    ctx.audit("audit_verify", None, "ok" if result.ok else "integrity_error", org=None,
              detail={"checked": result.checked, "problems": len(result.problems),
                      "anchors": len(wanted)})
    return VerifyOut(**result.to_dict())


@router.get("/api/audit/report", response_model=AccessReportOut)
def audit_report(ctx: CtxDep, org_id: Annotated[str | None, Query(max_length=128)] = None,
                 since: datetime | None = None, until: datetime | None = None,
                 max_denied: Annotated[int, Query(ge=1)] = 5,
                 max_not_found: Annotated[int, Query(ge=1)] = 20,
                 max_secrets: Annotated[int, Query(ge=1)] = 100,
                 unread: bool = True) -> AccessReportOut:
    """``keysafe audit report``: each identity's activity over the window (default the
    last 7 days) and the findings worth a look."""
    _scope(ctx, org_id)
    now = datetime.now(UTC)
    t_since = since or now - timedelta(days=7)
    t_until = until or now
    if t_since.tzinfo is None:
        t_since = t_since.replace(tzinfo=UTC)
    if t_until.tzinfo is None:
        t_until = t_until.replace(tzinfo=UTC)
    if t_until <= t_since:
        raise InvalidValue("until must be after since")
    rep = access_report(ctx.mgr, since=t_since, until=t_until, org=org_id,
                        max_denied=max_denied, max_not_found=max_not_found,
                        max_secrets=max_secrets, unread=unread)
    ctx.audit("audit_report", None, "ok", org=org_id,
              detail={"findings": len(rep.findings)})
    return AccessReportOut(**rep.to_dict())


@router.get("/api/audit", response_model=AuditPage)
def audit_query(ctx: CtxDep,
                org_id: Annotated[str | None, Query(max_length=128)] = None,
                action: Annotated[str | None, Query(max_length=64)] = None,
                actor: Annotated[str | None, Query(max_length=256)] = None,
                path: Annotated[str | None, Query(max_length=1024)] = None,
                outcome: Annotated[str | None, Query(max_length=64)] = None,
                since: datetime | None = None, until: datetime | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                before: Annotated[int | None, Query(
                    ge=1, description="only records older than this seq (the next page: "
                                      "the last seq of this one)")] = None) -> AuditPage:
    """Newest first. A token limited to some orgs must name one of them."""
    _scope(ctx, org_id)
    flt = AuditFilter(org=org_id, action=action, actor=actor, path=path, outcome=outcome,
                      since=since, until=until, limit=limit, newest_first=True,
                      before_seq=before)
    records = ctx.mgr.audit_query(flt)
    ctx.audit("audit_query", None, "ok", org=org_id, detail={"count": len(records)})
    return AuditPage(records=[AuditRecord(**{k: v for k, v in r.to_dict().items()
                                             if k not in ("prev_hash", "hash")})
                              for r in records])
