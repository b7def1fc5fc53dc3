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

import functools
import hashlib
import json
import logging
import os
import re
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from keysafe.config import Settings, url_origin
from keysafe.durations import parse_interval
from keysafe.errors import BackendUnavailable, ConfigError, KeysafeError
from keysafe.fsutil import file_stamp
from keysafe.hosts import cleartext_to_another_machine
from keysafe.server.auth import (
    Identity,
    VerifiedTokens,
    check_domain_scopes,
    check_orgs,
    check_roles,
)

logger = logging.getLogger("keysafe.server.trust")

#: Only asymmetric signatures: a trust never shares a secret with its issuer, and an
#: HS256 token "signed" with a public key is refused outright.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
#: Clock skew allowed on exp, nbf and iat, as Vault's JWT auth allows by default (60 s).
LEEWAY = 60.0
DEFAULT_MAX_LIFETIME = "24h"
FIELDS = ("name", "issuer", "audience", "subject", "claims", "roles", "scopes", "env",
          "max_lifetime", "jwks_url", "jwks_file", "jwks_ca_file", "jwks_token_file",
          "audit_claims")
#: At most this many claims go into audit records, each cut to AUDIT_CLAIM_CHARS.
MAX_AUDIT_CLAIMS = 10
AUDIT_CLAIM_CHARS = 200
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_FETCH_TIMEOUT = 5.0
#: Fetched key sets are refreshed (in the background) this often.
KEY_LIFESPAN = 300.0
#: A token naming a key not held makes keysafe fetch the key set again at most this
#: often, so a flood of made-up kids is not a flood of fetches.
REFRESH_COOLDOWN = 30.0
#: The largest discovery document or key set read.
MAX_DOCUMENT = 1 << 20


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
    audit_claims: tuple[tuple[str, ...], ...] = ()  # claim paths recorded in audit

    @property
    def keys_from(self) -> str:
        """Where the issuer's keys come from, for people."""
        if self.jwks_file is not None:
            return f"file {self.jwks_file}"
        if self.jwks_url is not None:
            return url_origin(self.jwks_url) if "@" in self.jwks_url or "?" in self.jwks_url \
                else self.jwks_url
        return f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "issuer": self.issuer, "audience": list(self.audience),
                "subject": list(self.subject),
                "claims": {"/".join(p): list(v) for p, v in self.claims},
                "roles": sorted(self.roles),
                "scopes": sorted(self.scopes) if self.scopes is not None else ["*"],
                "env": list(self.env), "max_lifetime_s": self.max_lifetime,
                "audit_claims": ["/".join(p) for p in self.audit_claims],
                "keys_from": self.keys_from}


@dataclass
class Decision:
    """What the trusts made of one token: the identity, or why each refused it."""

    identity: Identity | None = None
    trust: str | None = None
    generation: int = 0  # of the keys that verified the token
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (trust, why)

    def summary(self) -> str:
        """Why the token was refused, trust by trust."""
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
    except UnicodeDecodeError:
        raise ConfigError(f"the trust file {p} is not UTF-8 text") from None
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
    items = [value] if isinstance(value, (str, int)) and not isinstance(value, bool) \
        else value
    if isinstance(items, list):  # a number written unquoted (repository_owner_id: 123)
        items = [str(x) if isinstance(x, int) and not isinstance(x, bool) else x
                 for x in items]
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
    if cleartext_to_another_machine(u.scheme, u.hostname):
        raise ValueError(f"'{what}' {value!r} is plain http to another machine: anyone on "
                         "the path could hand keysafe their own keys; use https (or set "
                         "KEYSAFE_ALLOW_HTTP=1 where the network itself is encrypted)")
    return value


def _file(value: Any, what: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"'{what}' must be a file path")
    p = Path(value)
    p = p if p.is_absolute() else base / p
    try:
        ok = p.is_file() and os.access(p, os.R_OK)
    except OSError:
        ok = False
    if not ok:
        raise ValueError(f"'{what}' {str(p)!r} is not a readable file")
    return p


def _trust(raw: Any, *, base: Path, naming_fields: Iterable[str] | None) -> Trust:
    if not isinstance(raw, Mapping):
        raise ValueError("an entry must be a mapping of fields")
    unknown = sorted(str(k) for k in raw if k not in FIELDS)
    if unknown:
        raise ValueError(f"unknown field '{unknown[0]}'; known fields are "
                         f"{', '.join(FIELDS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError("'name' is required, and is letters, digits, '.', '_' and '-' "
                         "(at most 63 characters)")
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
    subject = _strings(raw.get("subject"), "subject")
    if not any(p.strip("*") for p in subject) and not any(
            p.strip("*") for _, want in claims for p in want):
        # An issuer such as GitHub's signs tokens for every repository on GitHub, and a
        # job chooses its own audience: without a bound subject or claim, a trust would
        # let anyone in.
        raise ValueError("bind 'subject' or at least one of 'claims' to something other "
                         "than '*': the issuer signs tokens for others too")
    audit_claims = []
    for key in _strings(raw.get("audit_claims"), "audit_claims"):
        if any(not p for p in key.split("/")):
            raise ValueError(f"audit claim {key!r} is not a name or a path like "
                             "kubernetes.io/pod/name")
        audit_claims.append(tuple(key.split("/")))
    if len(audit_claims) > MAX_AUDIT_CLAIMS:
        raise ValueError(f"'audit_claims' names {len(audit_claims)} claims; at most "
                         f"{MAX_AUDIT_CLAIMS}")
    lifetime = raw.get("max_lifetime", DEFAULT_MAX_LIFETIME)
    if not isinstance(lifetime, str):
        raise ValueError("'max_lifetime' must be a duration like 1h or 15m")
    if raw.get("jwks_url") and raw.get("jwks_file"):
        raise ValueError("give 'jwks_url' or 'jwks_file', not both")
    jwks_url = _url(raw["jwks_url"], "jwks_url") if raw.get("jwks_url") else None
    jwks_file = _file(raw["jwks_file"], "jwks_file", base) if raw.get("jwks_file") else None
    if jwks_url is None and jwks_file is None:
        try:
            _url(issuer, "issuer")
        except ValueError as exc:
            raise ValueError(f"{exc}; without 'jwks_url' or 'jwks_file' the keys are "
                             "discovered from the issuer, so it must be https") from None
    ca = raw.get("jwks_ca_file")
    bearer = raw.get("jwks_token_file")
    if jwks_file is not None and (ca or bearer):
        raise ValueError("'jwks_ca_file' and 'jwks_token_file' are for fetching keys; "
                         "with 'jwks_file' nothing is fetched")
    return Trust(
        name=name, issuer=issuer, audience=audience, roles=roles, scopes=scopes,
        subject=subject, claims=tuple(claims),
        env=tuple(e.lower() for e in _strings(raw.get("env"), "env")),
        max_lifetime=parse_interval(lifetime, "max_lifetime"),
        jwks_url=jwks_url, jwks_file=jwks_file,
        jwks_ca_file=_file(ca, "jwks_ca_file", base) if ca else None,
        jwks_token_file=_file(bearer, "jwks_token_file", base) if bearer else None,
        audit_claims=tuple(audit_claims))


# -- the issuers' keys --------------------------------------------------------------


class _Keys:
    """The signing keys of one key source (shared by the trusts that name it): a JWKS URL
    (given, or discovered from the issuer's OpenID configuration), or a JWKS file.

    A request never waits on the network: fetched keys are kept, and a background
    fetch starts when a request finds them older than KEY_LIFESPAN seconds, or (at most
    every REFRESH_COOLDOWN seconds) names a key not held, which is refused meanwhile. A
    failed fetch keeps the last good keys. A key file is read again whenever it
    changes; an unreadable or malformed one keeps the last good keys too."""

    def __init__(self, trust: Trust) -> None:
        self.trust = trust
        self._lock = threading.Lock()
        self._keys: dict[str | None, Any] | None = None  # kid -> PyJWK
        self._digest = b""  # of the key set's document, to tell a changed set
        self._stamp_failed: tuple[int, int, int] | None = None  # a key file refused
        self._fetch_lock = threading.Lock()  # one fetch at a time
        self._stamp: tuple[int, int, int] | None = None  # the key file's
        self._fetched = 0.0  # monotonic time of the last successful fetch
        self._tried = -REFRESH_COOLDOWN  # ... and of the last attempt
        self._busy = False
        self._jwks_uri: str | None = trust.jwks_url
        self.error: str | None = None  # why the last fetch failed
        #: Bumped whenever the keys are replaced: a token verified under an older set is
        #: verified again (a key the issuer withdrew stops working at once).
        self.generation = 0

    def current(self) -> int:
        """The generation of the keys a token would be verified with now (a key file
        changed, or a fetched set due a refresh, is seen to first)."""
        if self.trust.jwks_file is not None:
            self._read_file()
        else:
            self._maybe_refresh(None)
        return self.generation

    def key_for(self, kid: str | None) -> Any:
        """The key ``kid`` names (the only key, when ``kid`` is None); InvalidTokenError
        with the reason if none."""
        import jwt

        if self.trust.jwks_file is not None:
            self._read_file()
        else:
            self._maybe_refresh(kid)
        keys = self._keys or {}
        if kid is None:
            if len(keys) == 1:
                return next(iter(keys.values()))
            raise jwt.InvalidTokenError("the token names no key (kid) and the issuer has "
                                        f"{len(keys)} keys")
        key = keys.get(kid)
        if key is None:
            why = f"; the last fetch failed: {self.error}" if self.error else ""
            raise jwt.InvalidTokenError(f"the issuer's keys hold no key {kid!r} (yet){why}")
        return key

    # -- a key file ---------------------------------------------------------------
    @staticmethod
    def _peek(path: Path) -> tuple[int, int, int] | None:
        try:
            return file_stamp(path)
        except OSError:
            return None

    def _read_file(self) -> None:
        import jwt

        path = self.trust.jwks_file
        assert path is not None
        try:
            stamp = file_stamp(path)
            if stamp == self._stamp:
                return
            text = path.read_text(encoding="utf-8")
            keys = _key_map(jwt.PyJWKSet.from_json(text))
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            if self._stamp_failed is not None and self._stamp_failed == self._peek(path):
                return  # the same bad file: said once already
            self.error = f"cannot read the key file {path}: {_short(exc)}"
            self._stamp_failed = self._peek(path)
            logger.warning("trust %s: %s (keeping the keys read before)", self.trust.name,
                           self.error)
            return
        self._replace(keys, text)
        self._stamp = stamp

    # -- fetched keys ---------------------------------------------------------------
    def _maybe_refresh(self, kid: str | None) -> None:
        now = time.monotonic()
        stale = now - self._fetched > KEY_LIFESPAN
        missing = self._keys is None or (kid is not None and kid not in self._keys)
        if not (stale or missing) or now - self._tried < REFRESH_COOLDOWN:
            return
        with self._lock:
            if self._busy:
                return
            self._busy, self._tried = True, now
        threading.Thread(target=self._refresh_quietly, name=f"keysafe-keys-{self.trust.name}",
                         daemon=True).start()

    def _refresh_quietly(self) -> None:
        try:
            self.refresh()
        except Exception as exc:  # a background thread reports, never raises
            logger.warning("trust %s: cannot get the issuer's keys: %s", self.trust.name,
                           _short(exc))
        finally:
            with self._lock:
                self._busy = False

    def refresh(self) -> None:
        """Fetch the key set now (discovering where it is first, once). On failure the
        last good keys stay and ``error`` says why; KeysafeError is raised."""
        import jwt

        if self.trust.jwks_file is not None:
            self._read_file()
            return
        with self._fetch_lock:  # a start-up fetch and a background one never overlap
            self._tried = time.monotonic()
            try:
                if self._jwks_uri is None:
                    self._jwks_uri = self._discover()
                doc = self._get(self._jwks_uri)
                keys = _key_map(jwt.PyJWKSet.from_dict(doc))
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                self.error = _short(exc)
                raise BackendUnavailable(f"trust {self.trust.name}: cannot get the "
                                         f"issuer's keys: {self.error}") from None
            self._replace(keys, json.dumps(doc, sort_keys=True))
            self._fetched = time.monotonic()

    def _replace(self, keys: dict[str | None, Any], text: str) -> None:
        """Take a fresh key set; the generation moves only when the keys changed (a
        refresh that brings the same keys keeps the tokens verified with them)."""
        digest = hashlib.sha256(text.encode()).digest()
        with self._lock:
            # The keys first, then the generation: a reader that sees the new generation
            # sees the new keys (one that sees the old generation verifies conservatively).
            self._keys, self.error = keys, None
            if digest != self._digest:
                self._digest = digest
                self.generation += 1

    def _discover(self) -> str:
        doc = self._get(self.trust.issuer.rstrip("/") + "/.well-known/openid-configuration")
        # OpenID Connect Discovery: the document must be the issuer's own.
        if doc.get("issuer", "").rstrip("/") != self.trust.issuer.rstrip("/"):
            raise ValueError(f"the discovery document names issuer {doc.get('issuer')!r}, "
                             f"not {self.trust.issuer!r}")
        return _url(doc.get("jwks_uri"), "jwks_uri")

    def _get(self, url: str) -> dict[str, Any]:
        """One JSON document: no redirects, at most MAX_DOCUMENT bytes, keysafe's bearer
        token only to the issuer's own origin or the configured jwks_url's."""
        headers = {"User-Agent": "keysafe", "Accept": "application/json"}
        bearer = self.trust.jwks_token_file
        if bearer is not None and _origin(url) in self._bearer_origins():
            # Read for every fetch: a projected service account token is rotated.
            headers["Authorization"] = "Bearer " + bearer.read_text(encoding="utf-8").strip()
        handlers: list[Any] = [_NoRedirect()]
        ca = self.trust.jwks_ca_file
        if ca is not None:
            handlers.append(urllib.request.HTTPSHandler(
                context=ssl.create_default_context(cafile=str(ca))))
        # Every URL here was checked to be https (or loopback http) when the file loaded.
        req = urllib.request.Request(url, headers=headers)  # noqa: S310
        with urllib.request.build_opener(*handlers).open(req, timeout=_FETCH_TIMEOUT) as resp:
            body = resp.read(MAX_DOCUMENT + 1)
        if len(body) > MAX_DOCUMENT:
            raise ValueError(f"{url_origin(url)} answered more than {MAX_DOCUMENT} bytes")
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise ValueError(f"{url_origin(url)} did not answer a JSON object")
        return doc

    def _bearer_origins(self) -> set[str]:
        out = {_origin(self.trust.issuer)}
        if self.trust.jwks_url:
            out.add(_origin(self.trust.jwks_url))
        return out


def _origin(url: str) -> str:
    u = urlsplit(url)
    return f"{u.scheme}://{(u.hostname or '').lower()}:{u.port or ''}"


def _key_map(keyset: Any) -> dict[str | None, Any]:
    """kid -> key, for the keys meant for signatures."""
    return {k.key_id: k for k in keyset.keys if k.public_key_use in (None, "sig")}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Keys are taken from where they were asked for, never from where a redirect points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# -- verifying ----------------------------------------------------------------------

_MISSING = object()


def _claim(claims: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = claims
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _as_texts(value: Any) -> list[str] | None:
    """A claim's value(s) as text to match: strings, numbers, booleans (as true/false),
    or a list of them; None for anything else (an object, null)."""
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


@functools.lru_cache(maxsize=1024)
def _pattern(text: str) -> re.Pattern[str]:
    """``*`` matches any run of characters (``/`` and ``:`` included); every other
    character only itself."""
    return re.compile(".*".join(re.escape(part) for part in text.split("*")), re.DOTALL)


def _matches(values: list[str], patterns: tuple[str, ...]) -> bool:
    return any(_pattern(p).fullmatch(v) for v in values for p in patterns)


def _key_source(t: Trust) -> tuple[Any, ...]:
    return (t.issuer, t.jwks_url, t.jwks_file, t.jwks_ca_file, t.jwks_token_file)


class TrustVerifier:
    """The trusts of one server (in its environment), with their keys."""

    def __init__(self, trusts: list[Trust], env: str,
                 keys_from: TrustVerifier | None = None) -> None:
        """``keys_from``: an earlier verifier whose key sources (and the keys they hold)
        are taken over where a trust still names the same one."""
        self.trusts = trusts
        self.env = env.lower()
        sources: dict[tuple[Any, ...], _Keys] = {}
        if keys_from is not None:
            known = {_key_source(k.trust): k for k in keys_from._sources}
            for t in trusts:
                if _key_source(t) in known and _key_source(t) not in sources:
                    kept = sources[_key_source(t)] = known[_key_source(t)]
                    kept.trust = t  # the same source; messages name the trust in force
        self._fresh = {_key_source(t) for t in trusts} - set(sources)
        self._keys = {t.name: sources.setdefault(_key_source(t), _Keys(t)) for t in trusts}
        self._sources: list[_Keys] = list(sources.values())
        self.issuers = frozenset(t.issuer for t in trusts)
        self._cache = VerifiedTokens()

    def start(self, *, only_new: bool = False) -> None:
        """Fetch every key set now (a server calls this once before serving, so the
        first requests find their keys; ``only_new``: those not taken over from an
        earlier verifier); a failure is logged and retried on use."""
        for keys in self._sources:
            if only_new and _key_source(keys.trust) not in self._fresh:
                continue
            try:
                keys.refresh()
            except KeysafeError as exc:
                log_fetch_failure(exc)

    def verify(self, token: str, unverified: Mapping[str, Any] | None = None
               ) -> tuple[Identity | None, str]:
        """The token's identity, or None and why (for the log and the audit record).
        ``unverified``: PyJWT's ``decode_complete`` of it without the signature, when
        the caller has it already.

        A token accepted once is remembered (by its SHA-256, until it expires, at most
        auth.VERIFIED_TOKENS of them) with the generation of the keys that verified it:
        a workload presenting the same token on every request pays for one signature
        check, and a key the issuer withdraws stops working as soon as the key set is
        fetched again and found changed."""
        known = self.remembered(token)
        if known is not None:
            return known, ""
        decision = self.check(token, unverified)
        ident = decision.identity
        if ident is None:
            why = decision.summary()
            logger.info("workload token refused: %s", why)
            return None, why
        assert decision.trust is not None
        source, generation = self._keys[decision.trust], decision.generation
        self._cache.put(token, ident, leeway=LEEWAY,
                        still=lambda: source.current() == generation)
        return ident, ""

    def remembered(self, token: str) -> Identity | None:
        """The identity of a token accepted before, unexpired, whose keys are still the
        ones that verified it; else None."""
        return self._cache.get(token)

    def check(self, token: str, unverified: Mapping[str, Any] | None = None) -> Decision:
        import jwt

        out = Decision()
        try:
            whole = unverified if unverified is not None else jwt.decode_complete(
                token, options={"verify_signature": False})
            header, payload = whole["header"], whole["payload"]
        except jwt.PyJWTError:
            out.reasons.append(("", "not a JWT"))
            return out
        iss = payload.get("iss")
        kid = header.get("kid")
        if header.get("alg") not in ALGORITHMS:
            out.reasons.append(("", f"algorithm {_clean(header.get('alg'))} is not accepted "
                                    f"(only {', '.join(ALGORITHMS)})"))
            return out
        if not isinstance(iss, str) or (kid is not None and not isinstance(kid, str)):
            out.reasons.append(("", "the token's iss (or kid) is not a string"))
            return out
        for trust in self.trusts:
            if trust.issuer != iss:
                out.reasons.append((trust.name, f"issuer is {trust.issuer!r}, the token's "
                                                f"is {_clean(iss)}"))
                continue
            if trust.env and self.env not in trust.env:
                out.reasons.append((trust.name, f"applies in {', '.join(trust.env)}, this "
                                                f"server is {self.env}"))
                continue
            generation = self._keys[trust.name].current()  # before: the cautious side
            why, claims = self._verified(trust, token, kid)
            if claims is None:
                out.reasons.append((trust.name, why))
                continue
            why = self._bound(trust, claims)
            if why:
                out.reasons.append((trust.name, why))
                continue
            # kind "workload": never mistaken for a host platform's JWT user (jwt:<sub>).
            out.identity = Identity(f"{trust.name}:{claims['sub']}", trust.roles,
                                    trust.scopes, kind="workload",
                                    expires_at=float(claims["exp"]),
                                    claims=_audited(trust, claims))
            out.trust = trust.name
            out.generation = generation
            return out
        return out

    def _verified(self, trust: Trust, token: str, kid: str | None
                  ) -> tuple[str, dict[str, Any] | None]:
        """The token's claims if its signature, issuer, audience and times hold."""
        import jwt

        try:
            key = self._keys[trust.name].key_for(kid)
            claims = jwt.decode(token, key, algorithms=list(ALGORITHMS),
                                audience=list(trust.audience), issuer=trust.issuer,
                                leeway=LEEWAY,
                                options={"require": ["exp", "iat", "sub"]})
        except jwt.ExpiredSignatureError:
            return "the token has expired", None
        except jwt.InvalidAudienceError:
            return f"audience is not {' or '.join(trust.audience)}", None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            return _short(exc), None
        try:
            lifetime = float(claims["exp"]) - float(claims["iat"])
        except (TypeError, ValueError):
            return "exp or iat is not a number", None
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
            return f"subject {_clean(claims['sub'])} is not {' or '.join(trust.subject)}"
        for path, patterns in trust.claims:
            name = "/".join(path)
            raw = _claim(claims, path)
            if raw is _MISSING:
                return f"claim {name} is missing"
            values = _as_texts(raw)
            if values is None:
                return f"claim {name} is not text, a number or a list of them"
            if not _matches(values, patterns):
                return (f"claim {name} is {_clean(values[0] if len(values) == 1 else values)}"
                        f", not {' or '.join(patterns)}")
        return ""


def _audited(trust: Trust, claims: Mapping[str, Any]) -> dict[str, str]:
    """The claims ``trust`` maps into audit records, as text, cut short (a missing one
    is left out)."""
    out = {}
    for path in trust.audit_claims:
        values = _as_texts(_claim(claims, path))
        if values:
            text = ",".join(values)
            out["/".join(path)] = text[:AUDIT_CLAIM_CHARS]
    return out


def _clean(value: Any) -> str:
    """A token's value for a message: repr'd and cut short, so nothing a token carries can
    forge a log line."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _short(exc: Exception) -> str:
    text = "".join(c if c.isprintable() else "?" for c in (str(exc) or type(exc).__name__))
    return text if len(text) <= 200 else text[:197] + "..."


def log_fetch_failure(exc: Exception) -> None:
    logger.warning("%s (retried when a token needs them)", exc)


def host_keys(settings: Settings) -> _Keys:
    """The key set of KEYSAFE_JWT_JWKS_URL (a host platform's login), kept and refreshed
    as the trusts' are: fetched in the background, never on a request."""
    url = settings.jwt_jwks_url or ""
    host = Trust(name="host-jwt", issuer=settings.jwt_issuer or url, audience=(),
                 roles=frozenset(), scopes=None, jwks_url=url)
    return _Keys(host)


def trust_file_stamp(settings: Settings) -> tuple[int, int, int] | None:
    """The trust file's stamp now (None if unset or unreadable): take it before loading,
    for TrustFile."""
    if not settings.jwt_trust_file:
        return None
    try:
        return file_stamp(Path(settings.jwt_trust_file))
    except OSError:
        return None


def trust_verifier(settings: Settings) -> TrustVerifier | None:
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


#: How often, at most, a server looks at its trust file for a change.
RELOAD_CHECK = 2.0


class TrustFile:
    """A server's trusts, loaded again when KEYSAFE_JWT_TRUST_FILE changes (looked at on
    use, at most every RELOAD_CHECK seconds), so a new trust needs no restart. A new file
    is checked as at start; a bad one (or one gone) is logged and the trusts in force
    stay. Keys of sources the new file still names are kept; new ones are fetched in the
    background. Tokens remembered under the old trusts are verified again."""

    def __init__(self, settings: Settings, current: TrustVerifier,
                 stamp: tuple[int, int, int] | None = None) -> None:
        """``stamp``: the file's, taken before ``current`` was loaded from it (so an edit
        made while the server started is not missed); taken now if not given."""
        self.settings = settings
        self.path = Path(settings.jwt_trust_file or "")
        self.current = current
        self._stamp = stamp if stamp is not None else self._peek()
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self.reloads = 0

    def _peek(self) -> tuple[int, int, int] | None:
        try:
            return file_stamp(self.path)
        except OSError:
            return None

    def get(self) -> TrustVerifier:
        now = time.monotonic()
        if now - self._checked >= RELOAD_CHECK:
            self._checked = now
            stamp = self._peek()
            if stamp != self._stamp and self._lock.acquire(blocking=False):
                try:
                    self._reload(stamp)
                finally:
                    self._lock.release()
        return self.current

    def _reload(self, stamp: tuple[int, int, int] | None) -> None:
        self._stamp = stamp
        if stamp is None:
            logger.warning("the trust file %s is gone: the trusts in force stay", self.path)
            return
        try:
            loaded = trust_verifier(self.settings)
        except Exception as exc:  # never into the request that happened to look
            why = exc if isinstance(exc, KeysafeError) else type(exc).__name__
            logger.warning("the changed trust file is refused, the trusts in force stay: "
                           "%s", why)
            return
        assert loaded is not None
        fresh = TrustVerifier(loaded.trusts, self.settings.env, keys_from=self.current)

        def take_over() -> None:
            # The new trusts take over once the keys they newly name are fetched (or
            # failed): until then the trusts in force answer.
            fresh.start(only_new=True)
            self.current = fresh
            self.reloads += 1
            logger.warning("the trust file %s changed: %d trust(s) now", self.path,
                           len(fresh.trusts))

        if fresh._fresh:
            threading.Thread(target=take_over, name="keysafe-trust-keys",
                             daemon=True).start()
        else:
            take_over()
