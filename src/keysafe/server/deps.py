"""Per-request context: who is calling, from where, and a manager acting for them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from keysafe.config import Settings
from keysafe.errors import KeysafeError, PermissionDenied
from keysafe.manager.manager import SecretManager
from keysafe.server.auth import AuthLimiter, Identity, JwtVerifier, SharedLimiter, require
from keysafe.server.tokenstore import TokenStore

#: Long requests (a rotation, which may wait on providers and rotators; an org's
#: removal or restore, many writes): their own threads, off the loop and the group
#: commit.
LONG_JOBS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="long-job")


class AuthFailed(Exception):
    """401: no usable credential."""


class TooManyAttempts(Exception):
    """429: this client failed authentication too often."""

    title = "Too many failed attempts"
    detail = "too many failed authentication attempts from this client"

    def __init__(self, retry_after: float) -> None:
        super().__init__(self.detail)
        self.retry_after = retry_after


@dataclass
class ServerState:
    settings: Settings
    manager: SecretManager
    tokens: TokenStore
    jwt: JwtVerifier
    limiter: AuthLimiter
    metrics: Any = None
    writes: Any = None  # BatchPump of write jobs (group commit)
    audits: Any = None  # BatchPump of read audit records (group commit)
    scheduler: Any = None  # periodic jobs (purge of expired soft deletes)
    #: Live key checks per principal and minute (a writer's token is not a free oracle
    #: for testing keys found elsewhere); None: no limit.
    key_checks: AuthLimiter | SharedLimiter | None = None

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()
        for pump in (self.writes, self.audits):
            if pump is not None:
                pump.close()
        self.manager.close()
        self.tokens.close()


@dataclass
class Ctx:
    identity: Identity
    mgr: SecretManager
    client: str
    request_id: str
    state: Any = None

    def require(self, permission: str, org: str | None, name: str | None = None,
                domain: str | None = None) -> None:
        """Checks, and audits a denial (with the path asked for) before raising it. The
        domain is checked against the caller's scopes when one is given, or for a
        secret (``name``) in the default domain; the name against its name scopes."""
        if not domain and name is not None:
            domain = self.mgr.default_domain  # "" too: the manager reads it so
        try:
            if org is not None and self.identity.covers(org) \
                    and not self.identity.whole(org) and "domain" not in self.mgr.naming.fields:
                # Paths without a domain segment: every domain is the same secret.
                raise PermissionDenied(
                    f"{self.identity.principal} covers only some domains of org {org!r}, "
                    "and the naming template has no {domain}: domain scopes cannot apply")
            require(self.identity, permission, org, domain)
            # Only a credential with name scopes has more to check than the domain.
            if (name is not None and org is not None and domain is not None
                    and self.identity.names and not self.covers_name(org, domain, name)):
                raise PermissionDenied(f"{self.identity.principal} does not cover secret "
                                       f"{name!r} of {org}/{domain}")
        except Exception as exc:
            path = self.path_asked(name, org, domain)
            detail = {"reason": type(exc).__name__}
            if domain is not None:
                detail["domain"] = domain
            self.mgr.record(permission, path, "denied", org=org, detail=detail)
            raise

    def require_every_org(self, permission: str, action: str, reason: str, *,
                          org: str | None = None, name: str | None = None,
                          domain: str | None = None) -> None:
        """A credential for every org with ``permission`` (the platform's operator), for
        what spans orgs or points the server at something; a denial is recorded as
        ``action`` (in ``org``, with the path asked for) and raised with ``reason``."""
        if not self.identity.can(permission) or self.identity.orgs is not None:
            self.audit(action, self.path_asked(name, org, domain), "denied", org=org,
                       detail={"reason": "PermissionDenied", "needs": "every org"})
            raise PermissionDenied(reason)

    def domains_to_read(self, org: str | None, domain: str | None) -> list[str | None]:
        """The domains of ``org`` a listing reads: the one asked for, else those the
        caller's scopes name (None: every domain)."""
        if domain is not None:
            return [domain]
        some = (self.identity.domains.get(org)
                if org is not None and self.identity.orgs is not None else None)
        return list(sorted(some)) if some is not None else [None]

    def path_asked(self, name: str | None, org: str | None,
                   domain: str | None) -> str | None:
        """The path a request named, for its denial's record; None when it names no
        secret, or one whose name cannot make a path."""
        if name is None or org is None:
            return None
        try:
            return self.mgr.path(name, org, domain=domain)
        except KeysafeError:
            return None

    def covers_name(self, org: str, domain: str, name: str) -> bool:
        """The caller's scopes cover the secret, as asked for and as the store spells
        it: a store that folds spellings together (the env backend: case, '-' and '.')
        must not let another spelling past a name scope."""
        if not self.identity.covers_name(org, domain, name):
            return False
        canonical = getattr(self.mgr.backend, "canonical_name", None)
        return canonical is None or self.identity.covers_name(org, domain, canonical(name))

    def require_whole(self, permission: str, org: str, what: str) -> None:
        """``require``, and every domain of the org (org-wide data or changes); a denial
        is audited like any other."""
        self.require(permission, org)
        if not self.identity.whole(org):
            self.mgr.record(permission, None, "denied", org=org,
                            detail={"reason": "PermissionDenied", "needs": "whole org"})
            raise PermissionDenied(f"{self.identity.principal} covers only some domains of "
                                   f"org {org!r}; {what} needs all of them")

    def audit(self, action: str, path: str | None, outcome: str, *, org: str | None,
              version: int | None = None, detail: dict[str, Any] | None = None) -> None:
        self.mgr.record(action, path, outcome, org=org, version=version, detail=detail)

    async def write(self, fn: Any, path: str | None) -> Any:
        """Run a manager write in the server's group commit and wait for its commit."""
        st: ServerState = self.state
        return await st.writes.submit((fn, path))

    async def audit_durable(self, action: str, path: str | None, outcome: str, *,
                            org: str | None, version: int | None = None,
                            detail: dict[str, Any] | None = None) -> None:
        """Recorded before the response goes out; concurrent requests share a commit."""
        st: ServerState = self.state
        await st.audits.submit(self.mgr.draft(action, path, outcome, org=org,
                                              version=version, detail=detail))


def state_of(request: Request) -> ServerState:
    st: ServerState = request.app.state.keysafe
    return st


def request_id(request: Request) -> str:
    rid: str = request.scope.get("state", {}).get("request_id", "")
    return rid


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def authenticate(request: Request) -> Identity:
    return authenticate_raw(state_of(request), request.headers.get("authorization", ""),
                            client_of(request), request_id(request))


def authenticate_raw(st: ServerState, header: str, client: str, rid: str) -> Identity:
    """The identity behind an Authorization header; AuthFailed or TooManyAttempts."""
    wait = st.limiter.retry_after(client)
    if wait is not None:
        st.manager.as_actor("anonymous", client=client, request_id=rid).record(
            "authenticate", None, "rate_limited")
        raise TooManyAttempts(wait)
    scheme, _, cred = header.partition(" ")
    ident: Identity | None = None
    why = ""
    if scheme.lower() == "bearer" and cred:
        cred = cred.strip()
        if cred.startswith("ks_"):
            ident = st.tokens.authenticate(cred)
        elif st.jwt.enabled:
            ident, why = st.jwt.verify_why(cred)
    elsewhere = ident is not None and not ident.allows_address(client)
    if ident is None or elsewhere:
        st.limiter.failed(client)
        m = st.manager.as_actor("anonymous", client=client, request_id=rid)
        detail = {"reason": "missing" if not header else "invalid"}
        if elsewhere and ident is not None:
            # A live token from outside its networks: as refused as a wrong one, and
            # the record says which token and why (never the token).
            detail = {"reason": "address", "token": ident.principal}
        if why:  # which trust refused a workload token, and why (never the token)
            detail["workload"] = why[:500]
        m.record("authenticate", None, "denied", detail=detail)
        raise AuthFailed()
    return ident


async def get_ctx(request: Request) -> Ctx:
    """FastAPI dependency: the authenticated caller's context."""
    return make_ctx(state_of(request), request.headers.get("authorization", ""),
                    client_of(request), request_id(request))


def make_ctx(st: ServerState, authorization: str, client: str, rid: str) -> Ctx:
    ident = authenticate_raw(st, authorization, client, rid)
    context = {"claims": ident.claims} if ident.claims else None
    return Ctx(ident, st.manager.as_actor(ident.principal, client=client, request_id=rid,
                                          context=context),
               client, rid, st)
