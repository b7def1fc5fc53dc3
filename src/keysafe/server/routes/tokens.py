"""Token management: admins create, list and revoke tokens within their own orgs."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from keysafe.errors import NotFound, PermissionDenied
from keysafe.naming import token_not_found
from keysafe.server.auth import (
    Identity,
    check_cidrs,
    check_domain_scopes,
    networks_of,
    orgs_of,
)
from keysafe.server.deps import Ctx, get_ctx, state_of
from keysafe.server.schemas import TokenCreate, TokenCreated, TokenOut, TokenRevoked
from keysafe.server.tokenstore import TokenInfo, record_event

router = APIRouter(tags=["tokens"])
CtxDep = Annotated[Ctx, Depends(get_ctx)]


def _within(ident: Identity, orgs: list[str] | None) -> bool:
    """Whether every org (or domain of one) the token covers is one the caller
    administers."""
    return ident.includes(None if orgs is None else frozenset(orgs))


@router.get("/api/whoami")
def whoami(ctx: CtxDep) -> dict[str, object]:
    return ctx.identity.to_dict()


@router.post("/api/tokens", response_model=TokenCreated, status_code=201,
             responses={201: {"headers": {"Cache-Control": {"schema": {"type": "string"}}}}})
def token_create(body: TokenCreate, ctx: CtxDep, request: Request) -> TokenCreated:
    """A new token, shown once in this response and never again."""
    orgs = None if "*" in body.orgs else body.orgs
    check_domain_scopes(orgs, ctx.mgr.naming.fields)
    for org in orgs_of(body.orgs) if orgs is not None else [None]:
        ctx.require("tokens", org)
    if not _within(ctx.identity, orgs):
        raise PermissionDenied("a token may only cover orgs (and domains) you administer")
    if "service" in body.roles and ctx.identity.orgs is not None:
        # Blind write: an org admin must not be able to grant itself value reads.
        raise PermissionDenied("only an admin of every org may create service tokens")
    ttl = timedelta(days=body.expires_in_days) if body.expires_in_days else None
    if ctx.identity.expires_at is not None:
        # As in Vault: a credential makes none that outlives it (a CI job's five-minute
        # workload token cannot mint a permanent one).
        left = timedelta(seconds=max(ctx.identity.expires_at - time.time(), 1.0))
        ttl = left if ttl is None else min(ttl, left)
    cidrs = _networks_within(ctx.identity, body.cidrs)
    token, info = state_of(request).tokens.create(
        name=body.name, roles=body.roles, orgs=orgs, created_by=ctx.identity.principal,
        ttl=ttl, cidrs=cidrs)
    record_event(ctx.mgr, "token_create", info)
    return TokenCreated(token=token, **info.to_dict())


def _networks_within(creator: Identity, cidrs: list[str] | None) -> list[str] | None:
    """The new token's networks: as asked, each inside one of the creator's when the
    creator is bound to networks (a token made from inside a network is not a way out
    of it; none asked for: the creator's own)."""
    nets = check_cidrs(cidrs)
    if creator.networks is None:
        return nets
    if nets is None:
        return [str(n) for n in creator.networks]
    for net in networks_of(nets):
        if not any(net.version == mine.version and net.subnet_of(mine)  # type: ignore[arg-type]
                   for mine in creator.networks):
            raise PermissionDenied(f"network {net} is outside the networks your own token "
                                   "works from")
    return nets


def _visible(ctx: Ctx, info: TokenInfo) -> bool:
    return _within(ctx.identity, info.orgs)


@router.get("/api/tokens", response_model=list[TokenOut])
def token_list(ctx: CtxDep, request: Request) -> list[TokenOut]:
    if not ctx.identity.can("tokens"):
        ctx.require("tokens", None)
    out = [TokenOut(**t.to_dict()) for t in state_of(request).tokens.list()
           if _visible(ctx, t)]
    ctx.audit("token_list", None, "ok", org=None, detail={"count": len(out)})
    return out


@router.delete("/api/tokens/{token_id}", response_model=TokenRevoked)
def token_revoke(token_id: str, ctx: CtxDep, request: Request) -> TokenRevoked:
    ctx.require("tokens", None)
    store = state_of(request).tokens
    info = store.get(token_id)
    if not _visible(ctx, info) or not store.works_here(info):
        raise NotFound(token_not_found(token_id))
    already = info.revoked_at is not None
    if not already:  # revoking twice changes (and records) nothing
        info = store.revoke(token_id)
        record_event(ctx.mgr, "token_revoke", info)
    return TokenRevoked(**info.to_dict(), already_revoked=already)
