"""Identities, roles and the credentials that carry them.

Tokens look like ``ks_<id>_<secret>``: the id finds the row, the secret is checked
against a SHA-256 digest in constant time. Tokens are 256-bit random, shown once and
stored only as digests, so a plain hash (not a password KDF) is the right tool.
A host platform's JWTs (HS256 shared secret or RS256 via JWKS) are accepted too.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keysafe.config import Settings
from keysafe.errors import InvalidValue, KeysafeError, NotFound, PermissionDenied
from keysafe.naming import validate_segment

if TYPE_CHECKING:
    import ipaddress

    from keysafe.server.tokenstore import TokenStore
    from keysafe.server.trust import TrustFile, TrustVerifier, _Keys

    Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Networks one token may be bound to (Vault's token_bound_cidrs).
MAX_CIDRS = 50

ROLES: dict[str, frozenset[str]] = {
    # Blind write: only service identities may read values; admins manage, not read.
    "admin": frozenset({"status", "list", "write", "delete", "restore", "rollback",
                        "versions", "destroy", "audit", "tokens"}),
    "writer": frozenset({"status", "list", "write", "delete", "restore", "rollback",
                         "versions"}),
    "viewer": frozenset({"status", "list", "versions"}),
    "service": frozenset({"status", "read"}),
}
ALL_ORGS = "*"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: a token or a JWT subject, its roles and its scopes: the orgs it
    covers, each whole (``acme``), some of its domains only (``acme/card-services``),
    or some secrets of a domain (``acme/shared/openai_api_key``, ``acme/shared/db_*``:
    a name or a shell-style pattern)."""

    name: str
    roles: frozenset[str]
    orgs: frozenset[str] | None  # scopes, "org" or "org/domain"; None: every org
    kind: str = "token"
    token_id: str | None = None
    expires_at: float | None = None
    permissions: frozenset[str] = field(default=frozenset())
    # org -> the domains covered, None for every domain of it (from ``orgs``)
    domains: dict[str, frozenset[str] | None] = field(default_factory=dict, compare=False)
    # (org, domain) -> the name patterns covered there; absent: every name
    names: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict,
                                                         compare=False)
    # A workload token's claims its trust maps into every audit record (run, pod)
    claims: dict[str, str] = field(default_factory=dict, compare=False)
    # The networks a token works from (Vault's token_bound_cidrs); None: any address
    networks: tuple[Network, ...] | None = field(default=None, compare=False)

    def allows_address(self, client: str) -> bool:
        """Whether a request from ``client`` (the peer's address) may use this identity:
        any, unless bound to networks; a peer that is not an IP address (a test
        client, a Unix socket) is in none of them."""
        if self.networks is None:
            return True
        import ipaddress

        try:
            addr = ipaddress.ip_address(client)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
        return any(addr in net for net in self.networks)

    def __post_init__(self) -> None:
        perms: set[str] = set()
        for r in self.roles:
            perms |= ROLES.get(r, frozenset())
        object.__setattr__(self, "permissions", frozenset(perms))
        object.__setattr__(self, "domains", scope_map(self.orgs or ()))
        object.__setattr__(self, "names", name_map(self.orgs or ()))

    def covers(self, org: str) -> bool:
        """The org, or some of its domains."""
        return self.orgs is None or org in self.domains

    def covers_domain(self, org: str, domain: str) -> bool:
        if self.orgs is None:
            return True
        if org not in self.domains:
            return False
        some = self.domains[org]
        return some is None or domain in some

    def covers_name(self, org: str, domain: str, name: str) -> bool:
        """The secret ``name`` of that org and domain: the domain whole, or a pattern
        of a name scope matches it (case-sensitively, as names are)."""
        if not self.covers_domain(org, domain):
            return False
        pats = self.names.get((org, domain))
        return pats is None or _matcher(pats).fullmatch(name) is not None

    def whole(self, org: str) -> bool:
        """Every domain of the org (what org-wide operations need: its audit log, its
        tokens, a listing without a domain is filtered otherwise)."""
        return self.orgs is None or (org in self.domains and self.domains[org] is None)

    def includes(self, scopes: frozenset[str] | None) -> bool:
        """Whether these scopes (another token's) lie within this identity's."""
        if self.orgs is None:
            return True
        if scopes is None:
            return False
        for scope in scopes:
            org, domain, name = split_scope(scope)
            if not domain:
                ok = self.whole(org)
            elif not name:  # a whole domain: only from a scope without name limits there
                ok = self.covers_domain(org, domain) and (org, domain) not in self.names
            else:  # a name scope: the same pattern, or a whole domain, of this identity
                pats = self.names.get((org, domain))
                ok = self.covers_domain(org, domain) and (pats is None or name in pats)
            if not ok:
                return False
        return True

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    @property
    def principal(self) -> str:
        return f"{self.kind}:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "roles": sorted(self.roles),
                "orgs": None if self.orgs is None else sorted(self.orgs),
                "permissions": sorted(self.permissions), "token_id": self.token_id}


def check_roles(roles: list[str]) -> frozenset[str]:
    if not roles:
        raise InvalidValue("a token needs at least one role")
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise InvalidValue(f"unknown role {bad[0]!r}; roles are {', '.join(sorted(ROLES))}")
    return frozenset(roles)


_NAME_PATTERN = re.compile(r"[A-Za-z0-9*?][A-Za-z0-9._*?-]{0,127}")


@functools.lru_cache(maxsize=1024)
def _matcher(patterns: frozenset[str]) -> re.Pattern[str]:
    """One compiled expression for a set of name patterns (``*`` and ``?``, as
    fnmatch, case-sensitive): a listing tests every name once, whatever their number."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in sorted(patterns)))


def split_scope(scope: str) -> tuple[str, str, str]:
    """(org, domain, name pattern) of a scope; "" for the parts it leaves out."""
    org, _, rest = scope.partition("/")
    domain, _, name = rest.partition("/")
    return org, domain, name


def check_cidrs(cidrs: list[str] | None) -> list[str] | None:
    """The networks a token is bound to, each a CIDR block (``10.0.0.0/8``,
    ``2001:db8::/32``) or one address, in canonical form; None (or empty): any address.
    InvalidValue naming a bad one."""
    if not cidrs:
        return None
    if len(cidrs) > MAX_CIDRS:
        raise InvalidValue(f"{len(cidrs)} networks for one token; the limit is {MAX_CIDRS}")
    return sorted({str(_network(c)) for c in cidrs})


def networks_of(cidrs: list[str]) -> tuple[Network, ...]:
    return tuple(_network(c) for c in cidrs)


def _network(cidr: str) -> Network:
    import ipaddress

    try:
        return ipaddress.ip_network(str(cidr).strip(), strict=False)
    except ValueError:
        raise InvalidValue(f"{str(cidr)[:64]!r} is not a network: give a CIDR block "
                           "(10.0.0.0/8, 2001:db8::/32) or an address") from None


def check_orgs(orgs: list[str] | None) -> frozenset[str] | None:
    """Scopes: ``org`` (all its domains), ``org/domain`` (that domain only) or
    ``org/domain/name`` (those secrets only: a name, or a pattern with ``*`` and ``?``);
    ``*`` (or None) for every org."""
    if orgs is None or ALL_ORGS in orgs:
        return None
    if not orgs:
        raise InvalidValue("a token needs at least one org (or '*' for all)")
    out = set()
    for scope in orgs:
        if scope.count("/") > 2:
            raise InvalidValue(f"scope {scope!r} has too many parts: give org, "
                               "org/domain or org/domain/name")
        org, domain, name = split_scope(scope)
        validate_segment("org", org)
        if "/" in scope:
            validate_segment("domain", domain)
        if scope.count("/") == 2 and not _NAME_PATTERN.fullmatch(name):
            raise InvalidValue(f"scope {scope!r}: the name must be a secret name or a "
                               "pattern of letters, digits, '.', '_', '-', '*' and '?'")
        out.add(scope)
    return frozenset(out)


def check_domain_scopes(orgs: Iterable[str] | None, naming_fields: Iterable[str]) -> None:
    """Refuse ``org/domain`` scopes where paths have no domain segment (every domain is
    then the same secret, so a domain scope would be no limit at all)."""
    if "domain" in naming_fields:
        return
    scoped = sorted(o for o in orgs or () if "/" in o)
    if scoped:
        raise InvalidValue(f"scope {scoped[0]!r} names a domain, but the naming template "
                           "has no {domain}: give whole orgs")


def scope_map(scopes: Iterable[str]) -> dict[str, frozenset[str] | None]:
    """org -> the domains the scopes name (a name scope names its domain), or None when
    one names the whole org."""
    some: dict[str, set[str]] = {}
    whole: set[str] = set()
    for scope in scopes:
        org, domain, _ = split_scope(scope)
        if domain:
            some.setdefault(org, set()).add(domain)
        else:
            whole.add(org)
    out: dict[str, frozenset[str] | None] = {o: frozenset(d) for o, d in some.items()}
    out.update(dict.fromkeys(whole))
    return out


def name_map(scopes: Iterable[str]) -> dict[tuple[str, str], frozenset[str]]:
    """(org, domain) -> the name patterns where only name scopes cover that domain
    (a scope for the whole org or domain lifts the limit)."""
    listed = list(scopes)
    free = {(o, d) for o, d, n in map(split_scope, listed) if not n}
    whole = {o for o, d, _ in map(split_scope, listed) if not d}
    pats: dict[tuple[str, str], set[str]] = {}
    for org, domain, name in map(split_scope, listed):
        if name and org not in whole and (org, domain) not in free:
            pats.setdefault((org, domain), set()).add(name)
    return {k: frozenset(v) for k, v in pats.items()}


def orgs_of(scopes: Iterable[str]) -> set[str]:
    return {scope.partition("/")[0] for scope in scopes}


#: JWTs remembered per server process (per login: host platform, workload trusts).
VERIFIED_TOKENS = 4096


class VerifiedTokens:
    """JWTs verified before, by the SHA-256 of the token (never the token itself), with
    the identity each gave: until it expires (plus ``leeway``), while its ``still`` check
    holds (the keys that verified it stand), at most ``size`` of them, oldest dropped
    first. So a client presenting the same token on every request pays for one
    signature check."""

    def __init__(self, size: int = VERIFIED_TOKENS) -> None:
        self.size = size
        self._d: dict[bytes, tuple[Identity, float, Callable[[], bool]]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, token: str) -> Identity | None:
        if not self._d:
            return None
        key = self._key(token)
        hit = self._d.get(key)
        if hit is None:
            return None
        ident, until, still = hit
        if time.time() <= until and still():
            return ident
        self._d.pop(key, None)
        return None

    def put(self, token: str, ident: Identity, *, leeway: float = 0.0,
            still: Callable[[], bool] = lambda: True) -> None:
        if ident.expires_at is None:
            return
        with self._lock:
            self._d[self._key(token)] = (ident, ident.expires_at + leeway, still)
            while len(self._d) > self.size:
                self._d.pop(next(iter(self._d)))

    def __len__(self) -> int:
        return len(self._d)


class JwtVerifier:
    """A host platform's JWTs (HS256 with a shared secret, or RS256 keys from a JWKS
    URL, roles and orgs in claims), and workload tokens from the issuers of a trust file
    (keysafe.server.trust), told apart by their ``iss``."""

    def __init__(self, settings: Settings, trusts: TrustVerifier | None = None, *,
                 trust_stamp: tuple[int, int, int] | None = None) -> None:
        self.settings = settings
        self._trust_file: TrustFile | None = None
        self._trusts_seen: TrustVerifier | None = trusts
        if trusts is not None:
            from keysafe.server.trust import TrustFile

            self._trust_file = TrustFile(settings, trusts, trust_stamp)
        self._jwks: _Keys | None = None  # KEYSAFE_JWT_JWKS_URL's keys, made on first use
        self._verified = VerifiedTokens()  # host platform JWTs accepted before

    @property
    def trusts(self) -> TrustVerifier | None:
        """The workload trusts in force (the trust file is re-read when it changes)."""
        return self._trust_file.get() if self._trust_file is not None else None

    @property
    def enabled(self) -> bool:
        return bool(self.settings.jwt_hs256_secret or self.settings.jwt_jwks_url
                    or self._trust_file)

    def verify_why(self, token: str) -> tuple[Identity | None, str]:
        """The identity, or None and why a workload token was refused ('' for others)."""
        trusts = self.trusts
        if trusts is not self._trusts_seen:
            # The trust file changed: a host JWT remembered before may now belong to an
            # issuer a trust names (read one way only), so forget them all.
            self._trusts_seen, self._verified = trusts, VerifiedTokens()
        if trusts is not None:
            # Tokens accepted before, before any decoding: the usual case.
            known = trusts.remembered(token) or self._verified.get(token)
            if known is not None:
                return known, ""
            import jwt

            try:
                whole = jwt.decode_complete(token, options={"verify_signature": False})
            except jwt.PyJWTError:
                return None, ""
            iss = whole["payload"].get("iss")
            if isinstance(iss, str) and iss in trusts.issuers:
                return trusts.verify(token, whole)
        return self._host_jwt(token), ""

    def start(self) -> None:
        """Fetch every key set now (KEYSAFE_JWT_JWKS_URL's and the trusts'), so the first
        requests find their keys; a failure is logged and retried on use."""
        if self.settings.jwt_jwks_url:
            from keysafe.errors import KeysafeError
            from keysafe.server.trust import log_fetch_failure

            try:
                self._host_keys().refresh()
            except KeysafeError as exc:
                log_fetch_failure(exc)
        trusts = self.trusts
        if trusts is not None:
            trusts.start()

    def _host_keys(self) -> _Keys:
        if self._jwks is None:
            from keysafe.server.trust import host_keys

            self._jwks = host_keys(self.settings)
        return self._jwks

    def _host_jwt(self, token: str) -> Identity | None:
        s = self.settings
        if not (s.jwt_hs256_secret or s.jwt_jwks_url):
            return None
        ident = self._verified.get(token)
        if ident is not None:
            return ident
        keys = self._host_keys() if s.jwt_jwks_url else None
        generation = keys.current() if keys is not None else 0
        ident = self._host_claims(token)
        if ident is not None:
            if keys is not None:  # tied to the key set that verified it
                held = keys
                self._verified.put(token, ident,
                                   still=lambda: held.current() == generation)
            else:
                self._verified.put(token, ident)
        return ident

    def _host_claims(self, token: str) -> Identity | None:
        import jwt

        s = self.settings
        opts: dict[str, Any] = {"require": ["exp", "sub"]}
        kwargs: dict[str, Any] = {"options": opts}
        if s.jwt_audience:
            kwargs["audience"] = s.jwt_audience
        if s.jwt_issuer:
            kwargs["issuer"] = s.jwt_issuer
        try:
            header = jwt.get_unverified_header(token)
            alg = header.get("alg")
            if alg == "HS256" and s.jwt_hs256_secret:
                claims = jwt.decode(token, s.jwt_hs256_secret, algorithms=["HS256"], **kwargs)
            elif alg == "RS256" and s.jwt_jwks_url:
                # Never a fetch on this thread: the keys are refreshed in the background.
                key = self._host_keys().key_for(header.get("kid"))
                claims = jwt.decode(token, key, algorithms=["RS256"], **kwargs)
            else:
                return None
        except jwt.PyJWTError:
            return None
        if s.jwt_env_claim:
            claimed = claims.get(s.jwt_env_claim)
            if not isinstance(claimed, str) or claimed.lower() != s.env:
                return None  # a token for another environment (or none): no identity here
        roles = claims.get(s.jwt_role_claim)
        orgs = claims.get(s.jwt_org_claim)
        try:
            roles_l = [roles] if isinstance(roles, str) else list(roles or [])
            orgs_l = [orgs] if isinstance(orgs, str) else list(orgs or [])
            if not all(isinstance(x, str) for x in roles_l + orgs_l):
                return None
            r = check_roles(roles_l)
            o = check_orgs(orgs_l) if orgs_l else frozenset()
        except (KeysafeError, TypeError, ValueError):  # a bad claim is no identity
            return None
        if o == frozenset():
            return None
        return Identity(str(claims["sub"]), r, o, kind="jwt",
                        expires_at=float(claims["exp"]))


class SharedLimiter:
    """``limit`` events per client in ``window`` seconds across every process sharing the
    token store (the server's workers, or its replicas on PostgreSQL), counted in its
    ``rate_events`` table: for rare, costly events such as live key checks."""

    def __init__(self, tokens: TokenStore, kind: str, limit: int, window: float) -> None:
        self._tokens, self._kind = tokens, kind
        self.limit, self.window = limit, window

    def take(self, client: str) -> float | None:
        """None when counted, else the seconds to wait (as AuthLimiter.take)."""
        return self._tokens.take(f"{self._kind}:{client}", self.limit, self.window)


class AuthLimiter:
    """Slows a client that keeps failing authentication: after ``limit`` failures in
    ``window`` seconds it gets 429 until the oldest failure ages out."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float | None:
        q = self._fails.get(client)
        if not q or len(q) < self.limit:
            return None
        now = time.monotonic()
        with self._lock:
            while q and q[0] <= now - self.window:
                q.popleft()
            if len(q) < self.limit:
                return None
            return max(1.0, q[0] + self.window - now)

    def take(self, client: str) -> float | None:
        """Count one event for ``client`` unless it is over the limit, in one step:
        None when it was counted, else the seconds to wait (a limit on any event, not
        only failures; ``limit`` 0 is no limit)."""
        if self.limit <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            q = self._queue(client)
            while q and q[0] <= now - self.window:
                q.popleft()
            if len(q) >= self.limit:
                return max(1.0, q[0] + self.window - now)
            q.append(now)
            return None

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._queue(client).append(now)

    def _queue(self, client: str) -> deque[float]:
        """``client``'s event times (hold the lock)."""
        if len(self._fails) > 100_000:
            self._fails.clear()  # bounded memory under a spray of clients
        return self._fails.setdefault(client, deque(maxlen=max(self.limit, 1)))


def require(identity: Identity, permission: str, org: str | None,
            domain: str | None = None) -> None:
    """Raise NotFound for another org (existence is not revealed), PermissionDenied for a
    domain of the org the caller's scopes leave out, or a missing permission."""
    if org is not None and not identity.covers(org):
        raise NotFound("not found")
    if domain is not None and org is not None and not identity.covers_domain(org, domain):
        raise PermissionDenied(f"{identity.principal} does not cover domain {domain!r} "
                               f"of org {org!r}")
    if not identity.can(permission):
        raise PermissionDenied(f"{identity.principal} may not {permission} here")
