"""Organisations as a whole (``keysafe org ls | rm | restore`` through a server): what
each holds, a tenant's offboarding, and its undoing. Values never leave the store."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from keysafe.server.deps import LONG_JOBS, Ctx, get_ctx
from keysafe.server.schemas import OrgList, OrgRemoved, OrgRestored

router = APIRouter(tags=["orgs"])
CtxDep = Annotated[Ctx, Depends(get_ctx)]


@router.get("/api/orgs", response_model=OrgList)
def org_list(ctx: CtxDep) -> OrgList:
    """Every org with secrets in this environment that the caller covers: live and
    deleted counts and domains (``keysafe org ls``), of the secrets its scopes cover."""
    from keysafe.orgs import summaries

    ctx.require("list", None)
    ident, keep, orgs = ctx.identity, None, None
    if ident.orgs is not None:
        # Without a {domain} in the paths, domain scopes cannot apply (as on every
        # route): an org this token covers only in part is left out.
        domains = "domain" in ctx.mgr.naming.fields
        orgs = [o for o in ident.domains if domains or ident.whole(o)]

        def keep(ref: Any) -> bool:
            return ctx.covers_name(ref.org, ref.domain, ref.name)
    rows = summaries(ctx.mgr, keep, orgs)
    ctx.audit("list", None, "ok", org=None, detail={"orgs": len(rows)})
    return OrgList(orgs=[r.to_dict() for r in rows])


@router.delete("/api/orgs/{org_id}", response_model=OrgRemoved)
async def org_remove(org_id: str, ctx: CtxDep, purge: bool = False, dry_run: bool = False,
                     keep_tokens: bool = False) -> OrgRemoved:
    """A tenant's offboarding (``keysafe org rm``): every secret of the org deleted in
    every domain (restorable within the recovery window; ``purge``: destroyed now) and
    the tokens that covered only this org revoked (``keep_tokens``: left alone).
    ``dry_run``: what would happen, changing nothing. Admins of the whole org."""
    from keysafe.backends.base import Recoverable
    from keysafe.orgs import remove_org, tally, tokens_only_for
    from keysafe.server.tokenstore import record_event

    # A store without soft delete (SSM) removes for good: that needs destroy.
    purge = purge or not isinstance(ctx.mgr.backend, Recoverable)
    ctx.require("tokens", org_id)
    ctx.require_whole("destroy" if purge else "delete", org_id, "removing the org")
    tokens = ctx.state.tokens

    def remove() -> tuple[list[Any], list[Any]]:
        steps = remove_org(ctx.mgr, org_id, purge=purge, dry_run=dry_run)
        revoked = []
        for t in [] if keep_tokens else tokens_only_for(tokens, org_id):
            if not dry_run:
                record_event(ctx.mgr, "token_revoke", tokens.revoke(t.id))
            revoked.append(t)
        return steps, revoked

    # Many writes: off the loop, and not one long job in the group commit.
    steps, revoked = await asyncio.get_running_loop().run_in_executor(LONG_JOBS, remove)
    return OrgRemoved(organization_id=org_id, purged=purge, dry_run=dry_run,
                      secrets=[s.to_dict() for s in steps],
                      tokens_revoked=[t.id for t in revoked],
                      tokens=[{"id": t.id, "name": t.name, "env": t.env} for t in revoked],
                      summary=tally(steps),
                      recovery_window_days=ctx.mgr.recovery_window.days)


@router.post("/api/orgs/{org_id}/restore", response_model=OrgRestored)
async def org_restore(org_id: str, ctx: CtxDep, dry_run: bool = False) -> OrgRestored:
    """The undoing of an offboarding without ``purge`` (``keysafe org restore``): every
    secret of the org the last removal deleted, still within its recovery window, is
    restored (revoked tokens stay revoked). ``dry_run``: which would be, changing
    nothing. 404 when the org was never removed. Admins of the whole org, as for the
    removal."""
    from keysafe.orgs import restore_org, tally

    # As for the removal it undoes: an admin of the whole org.
    ctx.require("tokens", org_id)
    ctx.require_whole("restore", org_id, "restoring the org")
    steps = await asyncio.get_running_loop().run_in_executor(
        LONG_JOBS, lambda: restore_org(ctx.mgr, org_id, dry_run=dry_run))
    return OrgRestored(organization_id=org_id, dry_run=dry_run,
                       secrets=[s.to_dict() for s in steps], summary=tally(steps))
