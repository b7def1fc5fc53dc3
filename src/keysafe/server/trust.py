"""Workload identity: the JWTs that CI systems and clusters issue, trusted by policy.

A trust file (``KEYSAFE_JWT_TRUST_FILE``, YAML) lists the issuers keysafe believes and
what their tokens may do, as AWS IAM's OIDC trust policies and Vault's JWT auth roles
do: a GitHub Actions job, or a Kubernetes pod with a projected service account token,
calls keysafe with the token its platform gave it, and no keysafe token is handed out
or stored anywhere.

A token is accepted by a trust when its signature verifies with the issuer's published
keys (asymmetric algorithms only), its ``iss`` is the trust's issuer, its ``aud`` names
the trust's audience, it is within its lifetime (``exp`` required, at most
``max_lifetime`` long), and its subject and bound claims match. It then carries the
trust's roles and scopes. Trusts are tried in the file's order; the first that accepts
the token wins. Each refusal has a reason, for the server's log and for
``keysafe trust check``; never the token itself.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import ssl
import threading
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from keysafe.durations import parse_interval
from keysafe.errors import ConfigError, KeysafeError
from keysafe.hosts import is_loopback_host, plain_http_allowed
from keysafe.server.auth import Identity, check_domain_scopes, check_orgs, check_roles

logger = logging.getLogger("keysafe.server.trust")

#: Only asymmetric signatures: a trust never shares a secret with its issuer, and an
#: HS256 token "signed" with a public key is refused outright.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
#: Clock skew allowed on exp, nbf and iat, as Vault's JWT auth allows by default (60 s).
LEEWAY = 60.0
DEFAULT_MAX_LIFETIME = "24h"
FIELDS = ("name", "issuer", "audience", "subject", "claims", "roles", "scopes", "env",
          "max_lifetime", "jwks_url", "jwks_file", "jwks_ca_file", "jwks_token_file")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_FETCH_TIMEOUT = 5.0
#: An unknown ``kid`` makes keysafe fetch the key set again at most this often (where
#: PyJWT supports it), so a flood of made-up kids is not a flood of fetches.
REFRESH_COOLDOWN = 30.0


@dataclass(frozen=True)
class Trust:
    """One entry of the trust file, checked."""

    name: str
    issuer: str
    audience: tuple[str, ...]
    roles: frozenset[str]
    scopes: frozenset[str] | None  # None: every org ("*")
    subject: tuple[str, ...] = ()  # patterns; empty: any subject
    claims: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()  # (path, patterns)
    env: tuple[str, ...] = ()  # the environments it applies in; empty: every one
    max_lifetime: float = 86_400.0
    jwks_url: str | None = None
    jwks_file: Path | None = None
    jwks_ca_file: Path | None = None
    jwks_token_file: Path | None = None

    @property
    def keys_from(self) -> str:
        """Where the issuer's keys come from, for people."""
        if self.jwks_file is not None:
            return f"file {self.jwks_file}"
        if self.jwks_url is not None:
            return self.jwks_url
        return f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "issuer": self.issuer, "audience": list(self.audience),
                "subject": list(self.subject),
                "claims": {"/".join(p): list(v) for p, v in self.claims},
                "roles": sorted(self.roles),
                "scopes": sorted(self.scopes) if self.scopes is not None else ["*"],
                "env": list(self.env), "max_lifetime_s": self.max_lifetime,
                "keys_from": self.keys_from}


@dataclass
class Decision:
    """What the trusts made of one token: the identity, or why each refused it."""

    identity: Identity | None = None
    trust: str | None = None
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (trust, why)

    def summary(self) -> str:
        if self.identity is not None:
            return f"accepted by trust {self.trust!r}"
        return "; ".join(f"{t}: {why}" if t else why for t, why in self.reasons) \
            or "no trust applies"


# -- the trust file -----------------------------------------------------------------


def load_trusts(path: str | os.PathLike[str], *,
                naming_fields: Iterable[str] | None = None) -> list[Trust]:
    """The trusts of a YAML (or JSON) file: ``trusts:`` and a list of entries.
    ConfigError naming the file, the entry and the field for anything wrong.
    ``naming_fields``: the naming template's fields, to refuse domain scopes a template
    without ``{domain}`` cannot honour."""
    import yaml

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the trust file {p}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"the trust file {p} is not valid YAML{where}") from None
    if not isinstance(doc, Mapping) or set(doc) != {"trusts"} \
            or not isinstance(doc["trusts"], list):
        raise ConfigError(f"the trust file {p} must hold one key, 'trusts', with a list of "
                          "entries")
    out: list[Trust] = []
    for i, raw in enumerate(doc["trusts"], 1):
        label = f"{p}: trust #{i}"
        if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
            label = f"{p}: trust {raw['name']!r}"
        try:
            trust = _trust(raw, base=p.parent, naming_fields=naming_fields)
        except (KeysafeError, ValueError, TypeError) as exc:
            raise ConfigError(f"{label}: {exc}") from None
        if any(t.name == trust.name for t in out):
            raise ConfigError(f"{label}: the name is used by an earlier trust")
        out.append(trust)
    return out


def _strings(value: Any, what: str, *, required: bool = False) -> tuple[str, ...]:
    if value is None:
        if required:
            raise ValueError(f"'{what}' is required")
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) and x for x in items):
        raise ValueError(f"'{what}' must be a string or a list of non-empty strings")
    if required and not items:
        raise ValueError(f"'{what}' must not be empty")
    return tuple(items)


def _url(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"'{what}' must be a URL")
    u = urlsplit(value)
    if u.scheme not in ("https", "http") or not u.hostname:
        raise ValueError(f"'{what}' {value!r} is not an https:// URL")
    if u.scheme == "http" and not is_loopback_host(u.hostname) and not plain_http_allowed():
        raise ValueError(f"'{what}' {value!r} is plain http to another machine: anyone on "
                         "the path could hand keysafe their own keys; use https (or set "
                         "KEYSAFE_ALLOW_HTTP=1 where the network itself is encrypted)")
    return value


def _file(value: Any, what: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"'{what}' must be a file path")
    p = Path(value)
    return p if p.is_absolute() else base / p


def _trust(raw: Any, *, base: Path, naming_fields: Iterable[str] | None) -> Trust:
    if not isinstance(raw, Mapping):
        raise ValueError("an entry must be a mapping of fields")
    unknown = sorted(str(k) for k in raw if k not in FIELDS)
    if unknown:
        raise ValueError(f"unknown field '{unknown[0]}'; known fields are "
                         f"{', '.join(FIELDS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError("'name' is required: letters, digits, '.', '_' and '-', at most "
                         "63 characters")
    issuer = raw.get("issuer")
    if not isinstance(issuer, str) or not issuer:
        raise ValueError("'issuer' is required: the exact 'iss' of the tokens")
    audience = _strings(raw.get("audience"), "audience", required=True)
    roles = check_roles(list(_strings(raw.get("roles"), "roles", required=True)))
    scopes_l = list(_strings(raw.get("scopes"), "scopes", required=True))
    scopes = check_orgs(scopes_l)
    if naming_fields is not None:
        check_domain_scopes(scopes_l, naming_fields)
    claims_raw = raw.get("claims") or {}
    if not isinstance(claims_raw, Mapping):
        raise ValueError("'claims' must map claim names to a value or a list of values")
    claims = []
    for key, want in claims_raw.items():
        if not isinstance(key, str) or not key or any(not p for p in key.split("/")):
            raise ValueError(f"claim name {key!r} is not a name or a path like "
                             "kubernetes.io/namespace")
        if key in ("iss", "aud", "exp", "nbf", "iat"):
            raise ValueError(f"claim '{key}' is checked by its own field, not under claims")
        if isinstance(want, bool):
            want = "true" if want else "false"
        claims.append((tuple(key.split("/")), _strings(want, f"claims.{key}",
                                                       required=True)))
    lifetime = raw.get("max_lifetime", DEFAULT_MAX_LIFETIME)
    if not isinstance(lifetime, str):
        raise ValueError("'max_lifetime' must be a duration like 1h or 15m")
    jwks_url = _url(raw["jwks_url"], "jwks_url") if raw.get("jwks_url") else None
    jwks_file = _file(raw["jwks_file"], "jwks_file", base) if raw.get("jwks_file") else None
    if jwks_url and jwks_file:
        raise ValueError("give 'jwks_url' or 'jwks_file', not both")
    if jwks_url is None and jwks_file is None:
        _url(issuer, "issuer")  # the keys are discovered from it
    ca = raw.get("jwks_ca_file")
    bearer = raw.get("jwks_token_file")
    if jwks_file is not None and (ca or bearer):
        raise ValueError("'jwks_ca_file' and 'jwks_token_file' are for fetching keys; "
                         "with 'jwks_file' nothing is fetched")
    return Trust(
        name=name, issuer=issuer, audience=audience, roles=roles, scopes=scopes,
        subject=_strings(raw.get("subject"), "subject"), claims=tuple(claims),
        env=tuple(e.lower() for e in _strings(raw.get("env"), "env")),
        max_lifetime=parse_interval(lifetime, "max_lifetime"),
        jwks_url=jwks_url, jwks_file=jwks_file,
        jwks_ca_file=_file(ca, "jwks_ca_file", base) if ca else None,
        jwks_token_file=_file(bearer, "jwks_token_file", base) if bearer else None)


# -- the issuers' keys --------------------------------------------------------------


class _Keys:
    """One trust's signing keys: a JWKS URL (given, or discovered from the issuer's
    OpenID configuration), or a JWKS file (re-read when a token names a key it lacks
    and the file has changed)."""

    def __init__(self, trust: Trust) -> None:
        self.trust = trust
        self._lock = threading.Lock()
        self._client: Any = None
        self._file_set: Any = None
        self._file_mtime: float | None = None

    def key_for(self, token: str) -> Any:
        """The PyJWK that should have signed ``token``; jwt.PyJWTError if none."""
        import jwt

        kid = jwt.get_unverified_header(token).get("kid")
        if self.trust.jwks_file is not None:
            return self._from_file(kid)
        client = self._jwks_client()
        if kid is None:
            keys = client.get_signing_keys()
            if len(keys) != 1:
                raise jwt.InvalidTokenError("the token names no key (kid) and the issuer "
                                            "publishes several")
            return keys[0]
        return client.get_signing_key(kid)

    def _from_file(self, kid: str | None) -> Any:
        import jwt

        path = self.trust.jwks_file
        assert path is not None
        with self._lock:
            try:
                mtime = path.stat().st_mtime
                if self._file_set is None or (mtime != self._file_mtime
                                              and self._find(kid) is None):
                    self._file_set = jwt.PyJWKSet.from_json(path.read_text(encoding="utf-8"))
                    self._file_mtime = mtime
            except OSError as exc:
                raise jwt.InvalidTokenError(f"cannot read the key file {path}: "
                                            f"{exc.strerror or exc}") from None
            key = self._find(kid)
        if key is None:
            raise jwt.InvalidTokenError(f"no key {kid!r} in {path}" if kid else
                                        f"the token names no key (kid) and {path} holds "
                                        "several")
        return key

    def _find(self, kid: str | None) -> Any:
        keys = [k for k in self._file_set.keys if k.public_key_use in (None, "sig")] \
            if self._file_set is not None else []
        if kid is None:
            return keys[0] if len(keys) == 1 else None
        return next((k for k in keys if k.key_id == kid), None)

    def _context(self) -> ssl.SSLContext | None:
        ca = self.trust.jwks_ca_file
        return ssl.create_default_context(cafile=str(ca)) if ca is not None else None

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "keysafe", "Accept": "application/json"}
        bearer = self.trust.jwks_token_file
        if bearer is not None:
            # Re-read for every fetch: a projected service account token is rotated.
            headers["Authorization"] = "Bearer " + bearer.read_text(encoding="utf-8").strip()
        return headers

    def _jwks_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = _make_client(self)
            return self._client

    def discover(self) -> str:
        """The issuer's ``jwks_uri``, from its OpenID configuration."""
        import jwt

        url = self.trust.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            # The issuer was checked to be https (or loopback http) when the file loaded.
            req = urllib.request.Request(url, headers=self._headers())  # noqa: S310
            handlers: list[Any] = [_NoRedirect()]
            if (ctx := self._context()) is not None:
                handlers.append(urllib.request.HTTPSHandler(context=ctx))
            opener = urllib.request.build_opener(*handlers)
            with opener.open(req, timeout=_FETCH_TIMEOUT) as resp:
                doc = json.load(resp)
            jwks_uri = _url(doc.get("jwks_uri") if isinstance(doc, dict) else None,
                            "jwks_uri")
        except (OSError, ValueError) as exc:
            raise jwt.PyJWKClientConnectionError(
                f"cannot discover the keys of {self.trust.issuer}: {exc}") from None
        return jwks_uri


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Discovery answers where it is asked, as PyJWKClient's fetches do."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _make_client(keys: _Keys) -> Any:
    import jwt

    class _Client(jwt.PyJWKClient):
        def fetch_data(self) -> Any:
            self.headers = keys._headers()
            return super().fetch_data()

    url = keys.trust.jwks_url or keys.discover()
    kwargs: dict[str, Any] = {"cache_keys": True, "lifespan": 300, "timeout": _FETCH_TIMEOUT,
                              "ssl_context": keys._context(), "headers": keys._headers()}
    try:
        return _Client(url, cooldown_duration=REFRESH_COOLDOWN, **kwargs)
    except TypeError:  # PyJWT before the cooldown: every unknown kid fetches
        return _Client(url, **kwargs)


# -- verifying ----------------------------------------------------------------------


def _claim(claims: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = claims
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _as_texts(value: Any) -> list[str] | None:
    """A claim's value(s) as text to match: strings, numbers, booleans (as true/false),
    or a list of them; None for anything else (an object, a missing claim)."""
    items = value if isinstance(value, list) else [value]
    out = []
    for x in items:
        if isinstance(x, bool):
            out.append("true" if x else "false")
        elif isinstance(x, (str, int, float)):
            out.append(str(x))
        else:
            return None
    return out


def _matches(values: list[str], patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(v, p) for v in values for p in patterns)


class TrustVerifier:
    """The trusts of one server (in its environment), with their keys."""

    def __init__(self, trusts: list[Trust], env: str) -> None:
        self.trusts = trusts
        self.env = env.lower()
        self._keys = {t.name: _Keys(t) for t in trusts}
        self.issuers = frozenset(t.issuer for t in trusts)

    def verify(self, token: str) -> Identity | None:
        decision = self.check(token)
        if decision.identity is None:
            logger.info("workload token refused: %s", decision.summary())
        return decision.identity

    def check(self, token: str) -> Decision:
        import jwt

        out = Decision()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            out.reasons.append(("", "not a JWT"))
            return out
        iss = unverified.get("iss")
        if header.get("alg") not in ALGORITHMS:
            out.reasons.append(("", f"algorithm {header.get('alg')!r} is not accepted "
                                    f"(only {', '.join(ALGORITHMS)})"))
            return out
        for trust in self.trusts:
            if trust.issuer != iss:
                out.reasons.append((trust.name, f"issuer is {trust.issuer!r}, the token's "
                                                f"is {iss!r}"))
                continue
            if trust.env and self.env not in trust.env:
                out.reasons.append((trust.name, f"applies in {', '.join(trust.env)}, this "
                                                f"server is {self.env}"))
                continue
            why, claims = self._verified(trust, token)
            if claims is None:
                out.reasons.append((trust.name, why))
                continue
            why = self._bound(trust, claims)
            if why:
                out.reasons.append((trust.name, why))
                continue
            out.identity = Identity(f"{trust.name}:{claims['sub']}", trust.roles,
                                    trust.scopes, kind="jwt",
                                    expires_at=float(claims["exp"]))
            out.trust = trust.name
            return out
        return out

    def _verified(self, trust: Trust, token: str) -> tuple[str, dict[str, Any] | None]:
        """The token's claims if its signature, issuer, audience and times hold."""
        import jwt

        try:
            key = self._keys[trust.name].key_for(token)
            claims = jwt.decode(token, key, algorithms=list(ALGORITHMS),
                                audience=list(trust.audience), issuer=trust.issuer,
                                leeway=LEEWAY,
                                options={"require": ["exp", "iat", "sub"]})
        except jwt.ExpiredSignatureError:
            return "the token has expired", None
        except jwt.InvalidAudienceError:
            return f"audience is not {' or '.join(trust.audience)}", None
        except jwt.PyJWKClientError as exc:
            return f"cannot get the issuer's keys: {_short(exc)}", None
        except jwt.PyJWTError as exc:
            return _short(exc), None
        lifetime = float(claims["exp"]) - float(claims["iat"])
        if lifetime > trust.max_lifetime + LEEWAY:
            return (f"the token lives {lifetime / 3600:.1f} h, longer than max_lifetime "
                    f"({trust.max_lifetime / 3600:g} h)"), None
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            return "the token has no subject", None
        return "", claims

    @staticmethod
    def _bound(trust: Trust, claims: Mapping[str, Any]) -> str:
        """Why the subject or a bound claim does not match ('' when all do)."""
        if trust.subject and not _matches([claims["sub"]], trust.subject):
            return f"subject {claims['sub']!r} is not {' or '.join(trust.subject)}"
        for path, patterns in trust.claims:
            name = "/".join(path)
            values = _as_texts(_claim(claims, path))
            if values is None:
                return f"claim {name} is missing or not text"
            if not _matches(values, patterns):
                shown = values[0] if len(values) == 1 else values
                return f"claim {name} is {shown!r}, not {' or '.join(patterns)}"
        return ""


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def trust_verifier(settings: Any) -> TrustVerifier | None:
    """The trusts of KEYSAFE_JWT_TRUST_FILE for a server with these settings (None when
    unset); ConfigError for a bad file, and for a KEYSAFE_JWT_ISSUER that a trust names
    too (each issuer is read one way only)."""
    if not settings.jwt_trust_file:
        return None
    from keysafe.naming import NamingTemplate

    trusts = load_trusts(settings.jwt_trust_file,
                         naming_fields=NamingTemplate(settings.naming_template).fields)
    if settings.jwt_issuer and any(t.issuer == settings.jwt_issuer for t in trusts):
        raise ConfigError(f"KEYSAFE_JWT_ISSUER {settings.jwt_issuer!r} is also the issuer of "
                          f"a trust in {settings.jwt_trust_file}: give its tokens one way in")
    return TrustVerifier(trusts, settings.env)
