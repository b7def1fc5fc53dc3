"""A client for a keysafe server: the library's verbs over HTTP with a token, for
programs that must not hold the master key (docs/client.md).

Standard library only (``http.client``): a program that reads its keys through the
server needs neither ``cryptography`` nor a store driver. Errors are the library's own
KeysafeErrors, chosen by the problem's ``code`` (else its HTTP status); their messages
are the server's, which never hold a value.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from keysafe.errors import (
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidValue,
    KeysafeError,
    NotFound,
    PermissionDenied,
    ValueTooLarge,
)
from keysafe.fsutil import file_stamp
from keysafe.hosts import cleartext_to_another_machine, shown_url

if TYPE_CHECKING:
    from datetime import datetime
    from http.client import HTTPConnection

    from keysafe.manager.cache import SecretCache
    from keysafe.secret import Secret

USER_AGENT = "keysafe-client"


#: The environment variable that holds a token for the CLI (never a setting in a file).
TOKEN_ENV = "KEYSAFE_TOKEN"


class TokenFile:
    """A token kept in a file that its issuer rewrites, as the kubelet rewrites a
    projected service account token: read again whenever the file changes, so a
    long-running client (``keysafe run --watch``) keeps presenting a live token. If the
    file is briefly missing or empty, the last token read is used."""

    def __init__(self, path: str | os.PathLike[str], what: str = "the token file") -> None:
        self.path = Path(path)
        self.what = what  # for messages: where the path came from
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""
        if not self.value():
            raise ConfigError(f"{self.what} {self.path} is empty")

    def __repr__(self) -> str:  # never the token
        return f"TokenFile({str(self.path)!r})"

    def value(self) -> str:
        try:
            stamp = file_stamp(self.path)
            if stamp != self._stamp:
                token = self.path.read_text(encoding="utf-8").strip()
                if token:
                    self._token, self._stamp = token, stamp
        except OSError as exc:
            if not self._token:
                raise ConfigError(f"cannot read {self.what} {self.path}: "
                                  f"{exc.strerror or exc}") from None
        return self._token


def env_token(name: str = TOKEN_ENV) -> str | TokenFile | None:
    """The token in the environment variable ``name``, else in the file that ``name``
    + ``_FILE`` names (``KEYSAFE_TOKEN_FILE``: a projected service account token, a CI
    job's OIDC token, a mounted secret), else None. ConfigError for an unreadable file."""
    token = os.environ.get(name, "").strip()
    if token:
        return token
    path = os.environ.get(name + "_FILE", "").strip()
    return TokenFile(path, f"{name}_FILE") if path else None


def error_for(code: str | None, status: int) -> type[KeysafeError]:
    """The KeysafeError class for a problem's ``code``, else its HTTP status."""
    from keysafe import errors

    for cls in vars(errors).values():
        if (isinstance(cls, type) and issubclass(cls, KeysafeError)
                and vars(cls).get("code") == code):
            return cls
    if status in (401, 403):
        return PermissionDenied
    if status == 404:
        return NotFound
    if status == 409:
        return Conflict
    if status == 413:
        return ValueTooLarge
    if status in (400, 422):
        return InvalidValue
    return BackendUnavailable


#: A write goes on a fresh connection when the kept one has been idle this long: a
#: server or proxy may have closed it, and a write is never sent twice.
IDLE_RECONNECT = 2.0


def _check_token(token: str, where: str = "the token") -> str:
    """``token``, or ConfigError if it cannot go in a header (a line break, a space or
    another control character inside it: a file or variable holding more than one)."""
    if not token.isprintable() or " " in token:
        raise ConfigError(f"{where} holds a space, line break or control character: a "
                          "token is one word (the request was not sent)")
    return token


class HttpTransport:
    """One kept-alive connection to a keysafe server, with a bearer token. A GET that
    finds the connection closed by the server is sent once more; a write is never sent
    twice, and goes on a fresh connection after IDLE_RECONNECT seconds without use. Not
    thread-safe: one per thread."""

    def __init__(self, url: str, token: str | TokenFile | None, *, timeout: float = 30.0,
                 what: str = "keysafe server URL", user_agent: str = USER_AGENT) -> None:
        shown = shown_url(url)  # for errors and reprs: no user info, query or fragment
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:  # a port out of range, an unclosed [IPv6 address
            raise InvalidValue(f"{what} {shown!r} is not a valid URL (its host or port "
                               "cannot be read)") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidValue(f"{what} {shown!r} is not an http:// or https:// URL")
        if cleartext_to_another_machine(parts.scheme, parts.hostname):
            # The token goes with every request, and values come back in the answers.
            raise InvalidValue(f"{what} {shown!r} is plain http to another machine: the "
                               "token and values would cross the network in the clear; use "
                               "https (or set KEYSAFE_ALLOW_HTTP=1 where the network itself "
                               "is encrypted, as in a service mesh)")
        if not token:
            raise ConfigError("no token for the keysafe server (KEYSAFE_TOKEN, or a file "
                              "holding one in KEYSAFE_TOKEN_FILE)")
        if isinstance(token, str):
            _check_token(token)
        self.url = shown
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = port
        self._base = parts.path.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._agent = user_agent
        self._conn: HTTPConnection | None = None
        self._used = 0.0  # time.monotonic() of the last answer on _conn

    def __repr__(self) -> str:  # never the token
        return f"HttpTransport({self.url!r})"

    def _connection(self) -> HTTPConnection:
        if self._conn is None:
            import http.client

            cls = (http.client.HTTPSConnection if self._scheme == "https"
                   else http.client.HTTPConnection)
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        return self._conn

    def request(self, method: str, path: str, query: Mapping[str, Any] | None = None,
                body: Any = None) -> Any:
        """The answer's JSON (None for an empty one), or the KeysafeError it stands for."""
        q = {k: v for k, v in (query or {}).items() if v is not None}
        target = self._base + path + (f"?{urlencode(q)}" if q else "")
        token = (self._token if isinstance(self._token, str)
                 else _check_token(self._token.value(), self._token.what))
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
                   "User-Agent": self._agent}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if method != "GET" and time.monotonic() - self._used > IDLE_RECONNECT:
            self.close()
        last: OSError | None = None
        for _attempt in range(2 if method == "GET" else 1):
            conn = self._connection()
            try:
                conn.request(method, target, body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except TimeoutError as exc:  # the server is slow, not gone: not sent again
                last = exc
                self.close()
                break
            except (OSError, ConnectionError) as exc:
                last = exc
                self.close()
                continue
            except Exception as exc:  # http.client.HTTPException and friends
                self.close()
                raise BackendUnavailable(f"keysafe server at {self.url}: bad HTTP answer "
                                         f"({type(exc).__name__})") from None
            self._used = time.monotonic()
            if 200 <= resp.status < 300:
                if not data:
                    return None
                try:
                    return json.loads(data)
                except ValueError:
                    raise BackendUnavailable(f"keysafe server at {self.url} answered with "
                                             "something that is not JSON") from None
            raise self._problem(resp.status, data)
        reason = (last.strerror if last is not None and last.strerror
                  else type(last).__name__)
        raise BackendUnavailable(f"cannot reach the keysafe server at {self.url}: {reason}")

    @staticmethod
    def _problem(status: int, body: bytes) -> KeysafeError:
        code: str | None = None
        detail = f"HTTP {status}"
        data = None
        with contextlib.suppress(ValueError):
            data = json.loads(body)
        if isinstance(data, dict):
            code = data.get("code") if isinstance(data.get("code"), str) else None
            if isinstance(data.get("detail"), str):
                detail = data["detail"]
        cls = error_for(code, status)
        exc = cls(f"keysafe server: {detail}")
        if isinstance(exc, Conflict) and isinstance(data, dict):
            current = data.get("current_version")
            exc.current_version = current if isinstance(current, int) else None
        return exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


#: The most audit records GET /api/audit answers with at once.
AUDIT_PAGE = 1000
#: What a server's /api/catalog lists in ``features`` when DELETE /api/orgs/{org} takes
#: ``dry_run`` and ``keep_tokens`` (an older one ignores them, and removes the org).
ORG_REMOVE_PLAN = "org_remove_plan"
#: ... and when GET /api/audit takes ``before`` (an older one answers the first page
#: again).
AUDIT_BEFORE = "audit_before"
#: ... and the routes an older server lacks: GET /api/orgs, POST
#: /api/orgs/{org}/restore, POST /api/audit/verify.
ORG_LIST = "org_list"
ORG_RESTORE = "org_restore"
AUDIT_VERIFY = "audit_verify"
#: ... and when writes take ``expires_at`` (an older one refuses the field: 422).
EXPIRES_AT = "expires_at"
#: ... and POST /api/secrets/{org}/{name}/exposed (``keysafe import`` and ``scan
#: --import`` of values found in the open).
MARK_EXPOSED = "mark_exposed"
#: ... and GET /api/rotation (``keysafe rotate status``).
ROTATION_STATUS = "rotation_status"
#: ... and PUT /api/secrets/{org}/{name}/rotation (``keysafe rotate configure``).
ROTATION_CONFIGURE = "rotation_configure"
#: ... and POST /api/rotation/run (``keysafe rotate due|all|...``, ``--read-by``).
ROTATION_RUN = "rotation_run"
#: ... and POST /api/rotation/retire (``keysafe rotate retire``).
ROTATION_RETIRE = "rotation_retire"
#: ... and when POST …/rotate takes ``dry_run`` (an older one ignores it, and rotates).
ROTATE_DRY_RUN = "rotate_dry_run"
#: ... and when PUT …/rotation takes ``unset_options`` (an older one refuses the field).
ROTATION_UNSET_OPTIONS = "rotation_unset_options"
#: Everything this release's server lists.
FEATURES = (ORG_REMOVE_PLAN, AUDIT_BEFORE, ORG_LIST, ORG_RESTORE, AUDIT_VERIFY, EXPIRES_AT,
            MARK_EXPOSED, ROTATION_STATUS, ROTATION_CONFIGURE, ROTATION_RUN, ROTATION_RETIRE,
            ROTATE_DRY_RUN, ROTATION_UNSET_OPTIONS)


_HASH = re.compile(r"[0-9a-f]{64}")


def _rotation_state(row: object) -> bool:
    """Whether ``row`` is one secret's rotation state as GET /api/rotation gives it."""
    return (isinstance(row, dict)
            and all(isinstance(row.get(k), str) for k in (
                "path", "name", "org", "domain", "period_source", "last_rotated",
                "status", "rotator"))
            and isinstance(row.get("version"), int)
            and isinstance(row.get("period_days"), int | None)
            and isinstance(row.get("secret_type"), str | None)
            and isinstance(row.get("next_due"), str | None)
            and all(isinstance(row.get(k), bool) for k in ("needs_window", "exposed")))


def _given(**fields: Any) -> dict[str, Any]:
    """A request body of the fields given (None: left out, the server's default)."""
    return {k: v for k, v in fields.items() if v is not None}


def _steps(rows: Any) -> bool:
    """Whether an answer's ``secrets`` is a list of per-secret outcomes."""
    return isinstance(rows, list) and all(
        isinstance(r, dict) and "path" in r and "outcome" in r for r in rows)


def _iso(text: str) -> str:
    """An ISO time as the library writes it (``+00:00``, not ``Z``); as given when it is
    not one."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).isoformat()
    except ValueError:
        return text


def _seg(kind: str, value: str) -> str:
    from keysafe.naming import validate_segment

    return quote(validate_segment(kind, value), safe="")


def field_answer(data: Any, field: str, name: str, url: str) -> tuple[Any, int | None]:
    """(field, version read) from a ``GET …/value?field=`` answer: a string as is,
    anything else decoded from its JSON; BackendUnavailable for an answer without it."""
    value = data.get("value") if isinstance(data, dict) else None
    if not isinstance(value, str) or data.get("field") != field:
        raise BackendUnavailable(f"keysafe server at {url} sent no field {field!r} of "
                                 f"{name} (a server older than field reads?)")
    got = data.get("version")
    return (json.loads(value) if data.get("field_json") else value,
            got if isinstance(got, int) else None)


class KeysafeClient:
    """The library's verbs against a keysafe server, as the token's roles allow: a
    service token reads values (``get``, ``get_json``, ``get_llm_api_key``); a writer
    writes blind (``put``, ``update_json``) and manages (``delete``, ``restore``,
    ``rollback``, ``rotate``, ``update_tags``); anyone sees status (``describe``,
    ``has``, ``list``, ``versions``). Domains default to the server's (``shared``).

    >>> with KeysafeClient("https://keysafe.internal", token) as ks:
    ...     key = ks.get_llm_api_key("acme-corp", "openai", domain="card-services")

    ``cache_ttl`` (seconds; off by default) keeps the current values ``get``,
    ``get_json`` and ``get_llm_api_key`` read for that long, bounded by
    ``cache_max_entries``; ``stale_if_error`` serves an expired one for that much
    longer while the server cannot be reached, so an outage does not take reads down.
    A write through this client expires what it cached; other writers are seen when an
    entry expires, or at once with ``fresh=True``. A refusal (the token revoked) empties
    the cache; a secret found missing leaves it.
    """

    def __init__(self, url: str, token: str | TokenFile | None, *,
                 timeout: float = 30.0, cache_ttl: float = 0.0,
                 cache_max_entries: int = 10_000, stale_if_error: float = 0.0,
                 _shared_cache: SecretCache | None = None) -> None:
        self.transport = HttpTransport(url, token, timeout=timeout)
        cache = _shared_cache  # AsyncKeysafeClient's threads, one token: never another's
        if cache is None and cache_ttl > 0:
            from keysafe.manager.cache import SecretCache

            cache = SecretCache(cache_ttl, cache_max_entries, stale_if_error)
        self.cache = cache
        #: What the server's last /api/catalog listed in ``features`` (None: not asked).
        self._features: frozenset[str] | None = None

    @property
    def url(self) -> str:
        return self.transport.url

    def __repr__(self) -> str:  # never the token
        return f"KeysafeClient({self.url!r})"

    def __enter__(self) -> KeysafeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    # -- helpers --
    def _secret(self, org: str, name: str, tail: str = "") -> str:
        return f"/api/secrets/{_seg('org', org)}/{_seg('name', name)}{tail}"

    def _req(self, method: str, path: str, query: Mapping[str, Any] | None = None,
             body: Any = None) -> Any:
        cache = self.cache
        if cache is None or method == "GET" or path.endswith("/check"):
            return self.transport.request(method, path, query, body)
        # A write through this client: what it cached may be stale once it lands, so
        # nothing is fresh before it is sent (a read racing it cannot cache the old
        # value) nor after (whatever happened); expired values stay for stale-if-error.
        cache.expire_all()
        try:
            return self.transport.request(method, path, query, body)
        finally:
            cache.expire_all()

    def _cached(self, key: tuple[str | None, ...], path: str, fresh: bool,
                fetch: Callable[[], str | None]) -> str | None:
        """``fetch()`` through the cache (None, nothing to keep, is not kept): a hit
        unless ``fresh``; on BackendUnavailable an expired value within stale-if-error;
        a refusal empties the cache (the token may be revoked) and a missing secret
        drops its entry."""
        cache = self.cache
        assert cache is not None
        if not fresh:
            hit = cache.get(key)
            if hit is not None:
                return hit
        gen = cache.generation(path)
        try:
            value = fetch()
        except BackendUnavailable:
            stale = cache.get_stale(key)
            if stale is None:
                raise
            return stale
        except PermissionDenied:
            cache.clear()
            raise
        except NotFound:
            cache.invalidate(path)
            raise
        if value is None:
            cache.invalidate(path)
        else:
            cache.put(key, path, value, gen)
        return value

    @staticmethod
    def _with_domain(body: dict[str, Any], domain: str | None) -> dict[str, Any]:
        if domain:
            body["domain_id"] = domain
        return body

    # -- reading (service role) --
    def get_secret(self, name: str, org: str, *, domain: str | None = None,
                   version: int | None = None) -> Secret:
        """``get``, the value wrapped in a ``keysafe.Secret``."""
        from keysafe.secret import Secret

        return Secret(self.get(name, org, domain=domain, version=version))

    def get(self, name: str, org: str, *, domain: str | None = None,
            version: int | None = None, fresh: bool = False) -> str:
        """The current value (from the cache when there is one, unless ``fresh``), or
        version ``version``'s."""
        if version is not None:
            return self.read(name, org, domain=domain, version=version)[0]
        if self.cache is None:
            return self._value(name, org, domain, None)[0]
        value = self._cached((name, org, domain), f"{org}/{domain or ''}/{name}", fresh,
                             lambda: self._value(name, org, domain, None)[0])
        assert value is not None
        return value

    def read(self, name: str, org: str, *, domain: str | None = None,
             version: int | None = None) -> tuple[str, int]:
        """(value, version): the current version (from the store, not the server's
        cache), or version ``version``, and which one it is."""
        value, got = self._value(name, org, domain, version or 0)
        if got is None:
            raise BackendUnavailable(f"keysafe server at {self.url} did not say which "
                                     f"version of {name} it sent")
        return value, got

    def _value(self, name: str, org: str, domain: str | None,
               version: int | None, stage: str | None = None) -> tuple[str, int | None]:
        data = self._req("GET", self._secret(org, name, "/value"),
                         {"domain_id": domain, "version": version, "stage": stage})
        value = data.get("value") if isinstance(data, dict) else None
        if not isinstance(value, str):
            raise BackendUnavailable(f"keysafe server at {self.url} sent no value for {name}")
        got = data.get("version")
        return value, got if isinstance(got, int) else None

    def get_previous(self, name: str, org: str, *, domain: str | None = None
                     ) -> tuple[str, int | None]:
        """(value, the version it was) of the value a rotation replaced, while its grace
        period lasts (``?stage=previous``); NotFound when there is none."""
        return self._value(name, org, domain, None, stage="previous")

    def verification_values(self, name: str, org: str, *, domain: str | None = None
                            ) -> builtins.list[str]:
        """The current value, then the one a rotation replaced while its grace period
        lasts: verify JWTs (or webhook signatures) against each in turn. The current
        one is read past the cache: after a rotation elsewhere it is the new one."""
        out = [self.get(name, org, domain=domain, fresh=True)]
        try:
            old = self.get_previous(name, org, domain=domain)[0]
        except NotFound:
            return out
        if old != out[0]:
            out.append(old)
        return out

    def get_json(self, name: str, org: str, *, domain: str | None = None) -> dict[str, Any]:
        from keysafe.manager.manager import json_object

        return json_object(self.get(name, org, domain=domain), name)

    def get_json_field(self, name: str, field: str, org: str, *,
                       domain: str | None = None, version: int | None = None) -> Any:
        """One field of JSON credentials (of version ``version``, else the current one),
        picked out by the server (``?field=``): only that field crosses the network. A
        string as is, anything else decoded from its JSON. NotFound if the secret, the
        version or the field is missing, InvalidValue if the value is not JSON
        credentials."""
        return self._field(name, field, org, domain, version)[0]

    def read_json_field(self, name: str, field: str, org: str, *,
                        domain: str | None = None, version: int | None = None
                        ) -> tuple[Any, int]:
        """(field, version): as ``get_json_field``, with the version it was read from
        (the current one from the store, not the server's cache, unless ``version``)."""
        got, at = self._field(name, field, org, domain, version or 0)
        if at is None:
            raise BackendUnavailable(f"keysafe server at {self.url} did not say which "
                                     f"version of {name} it sent")
        return got, at

    def _field(self, name: str, field: str, org: str, domain: str | None,
               version: int | None) -> tuple[Any, int | None]:
        if not field:
            raise InvalidValue("field is empty; name one field of the JSON credentials")
        data = self._req("GET", self._secret(org, name, "/value"),
                         {"domain_id": domain, "version": version, "field": field})
        return field_answer(data, field, name, self.url)

    def get_llm_api_key(self, org: str, provider: str, *,
                        domain: str | None = None, fresh: bool = False) -> str | None:
        """Spec 001: the domain's key, else the org's shared key, else None (through the
        cache when there is one, unless ``fresh``; None is never cached)."""
        if self.cache is None:
            return self._llm_key(org, provider, domain)
        return self._cached(("llm", org, provider, domain),
                            f"{org}/{domain or ''}/llm:{provider}", fresh,
                            lambda: self._llm_key(org, provider, domain))

    def _llm_key(self, org: str, provider: str, domain: str | None) -> str | None:
        try:
            data = self._req("GET", f"/api/orgs/{_seg('org', org)}/llm-keys/"
                                    f"{quote(provider, safe='')}", {"domain_id": domain})
        except NotFound:
            return None
        value = data.get("value") if isinstance(data, dict) else None
        return value if isinstance(value, str) else None

    # -- status (any role) --
    def describe(self, name: str, org: str, *, domain: str | None = None) -> dict[str, Any]:
        """The status and metadata (SecretStatus): never the value."""
        data: dict[str, Any] = self._req("GET", self._secret(org, name),
                                         {"domain_id": domain})
        return data

    def has(self, name: str, org: str, *, domain: str | None = None) -> bool:
        return bool(self.describe(name, org, domain=domain).get("configured"))

    def list(self, org: str, *, domain: str | None = None,
             include_deleted: bool = False) -> list[dict[str, Any]]:
        data = self._req("GET", f"/api/orgs/{_seg('org', org)}/secrets",
                         {"domain_id": domain,
                          "include_deleted": "true" if include_deleted else None})
        secrets: list[dict[str, Any]] = data.get("secrets", [])
        return secrets

    def versions(self, name: str, org: str, *, domain: str | None = None
                 ) -> builtins.list[dict[str, Any]]:
        data = self._req("GET", self._secret(org, name, "/versions"), {"domain_id": domain})
        versions: list[dict[str, Any]] = data.get("versions", [])
        return versions

    def whoami(self) -> dict[str, Any]:
        data: dict[str, Any] = self._req("GET", "/api/whoami")
        return data

    # -- administration (admin role): tokens and the audit log --
    def create_token(self, name: str, roles: Iterable[str], orgs: Iterable[str], *,
                     expires_in_days: int | None = None,
                     cidrs: Iterable[str] | None = None) -> dict[str, Any]:
        """A new token within the caller's own orgs (``"*"``: every org); the answer's
        ``token`` is shown this once, the rest is the token's record."""
        body: dict[str, Any] = {"name": name, "roles": list(roles), "orgs": list(orgs)}
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        if cidrs is not None:
            body["cidrs"] = list(cidrs)
        data = self._req("POST", "/api/tokens", body=body)
        if not (isinstance(data, dict) and isinstance(data.get("token"), str)):
            raise self._odd("a new token", " (it may have been made: see the token list)")
        return {**self._token_record(data), "token": data["token"]}

    def tokens(self) -> builtins.list[dict[str, Any]]:
        """The tokens the caller administers (never a token itself)."""
        data = self._req("GET", "/api/tokens")
        if not isinstance(data, list):
            raise self._odd("the token list")
        return [self._token_record(t) for t in data]

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        """Revoke a token at once; ``already_revoked`` says it had been revoked before
        (which then changed nothing). ``token_id`` is its 12-hex-digit id; anything else
        is NotFound at once."""
        from keysafe.naming import TOKEN_ID, token_not_found

        if not TOKEN_ID.fullmatch(token_id):  # never sent (a pasted token), nor repeated
            raise NotFound(token_not_found(token_id))
        data = self._req("DELETE", f"/api/tokens/{token_id}")
        # An older server does not say whether it was revoked before: taken as not.
        return {**self._token_record(data),
                "already_revoked": data.get("already_revoked") is True}

    def audit(self, *, org: str | None = None, action: str | None = None,
              actor: str | None = None, path: str | None = None, outcome: str | None = None,
              since: datetime | None = None, until: datetime | None = None,
              limit: int = 100, before: int | None = None) -> builtins.list[dict[str, Any]]:
        """Audit records, newest first: at most ``limit`` (1 to 1,000, the server's cap),
        older than record ``before`` when given (the next page: the last seq of the one
        before). A token for some orgs only must name one of them."""
        if not 1 <= limit <= AUDIT_PAGE:
            raise InvalidValue(f"limit must be from 1 to {AUDIT_PAGE}, not {limit}")
        query = {"org_id": org, "action": action, "actor": actor, "path": path,
                 "outcome": outcome, "limit": limit, "before": before,
                 "since": since.isoformat() if since else None,
                 "until": until.isoformat() if until else None}
        data = self._req("GET", "/api/audit", query)
        records = data.get("records") if isinstance(data, dict) else None
        if not (isinstance(records, list)
                and all(isinstance(r, dict) and isinstance(r.get("seq"), int)
                        and isinstance(r.get("ts"), str) for r in records)):
            raise self._odd("audit records")
        return [{**r, "ts": _iso(r["ts"])} for r in records]

    def access_report(self, *, since: datetime, until: datetime | None = None,
                      org: str | None = None, max_denied: int = 5, max_not_found: int = 20,
                      max_secrets: int = 100, unread: bool = True) -> dict[str, Any]:
        """``keysafe audit report`` over the window (``GET /api/audit/report``): each
        identity's activity and the findings; a token for some orgs must name one."""
        query = {"org_id": org, "since": since.isoformat(),
                 "until": until.isoformat() if until else None, "max_denied": max_denied,
                 "max_not_found": max_not_found, "max_secrets": max_secrets,
                 "unread": "true" if unread else "false"}
        data = self._req("GET", "/api/audit/report", query)
        if not (isinstance(data, dict) and isinstance(data.get("actors"), list)
                and isinstance(data.get("findings"), list)):
            raise self._odd("an access report")
        return data

    def _token_record(self, data: Any) -> dict[str, Any]:
        """A token's record from the server, its times as the library writes them."""
        if not (isinstance(data, dict) and isinstance(data.get("id"), str)
                and isinstance(data.get("name"), str) and isinstance(data.get("roles"), list)
                and "orgs" in data and isinstance(data.get("created_at"), str)):
            raise self._odd("a token's record")
        out = {k: v for k, v in data.items() if k not in ("token", "already_revoked")}
        for k in ("created_at", "expires_at", "revoked_at", "last_used_at"):
            if isinstance(out.get(k), str):
                out[k] = _iso(out[k])
        return out

    def _odd(self, what: str, more: str = "") -> BackendUnavailable:
        return BackendUnavailable(f"keysafe server at {self.url} answered with something "
                                  f"that is not {what}{more}")

    # -- writing (writer or admin role): blind --
    def put(self, name: str, value: str, org: str, *, domain: str | None = None,
            expected_version: int | None = None, description: str | None = None,
            tags: Mapping[str, str] | None = None, check_key: bool = False,
            secret_type: str | None = None, check_format: bool = True,
            expires_at: datetime | None = None) -> int:
        """Writes a new version; returns its number. ``expected_version``: check-and-set
        (0: must not exist). ``check_key``: the provider is asked first (docs/key-checks.md).
        ``check_format=False`` skips the catalog's format check of a well-known name.
        ``expires_at``: when the secret expires (in the future)."""
        return int(self._put(name, value, org, domain=domain,
                             expected_version=expected_version, description=description,
                             tags=tags, check_key=check_key, secret_type=secret_type,
                             check_format=check_format, expires_at=expires_at)["version"])

    # The _put, _fields and _rollback answers are the server's whole WriteResult (version,
    # created_at, created_by, key_check): the CLI's adapter (keysafe.cli.remote) shows them.
    def _put(self, name: str, value: str, org: str, *, domain: str | None,
             expected_version: int | None, description: str | None,
             tags: Mapping[str, str] | None, check_key: bool, secret_type: str | None,
             check_format: bool, expires_at: datetime | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"secret_value": value, **self._expiry(expires_at)}
        if expected_version is not None:
            body["expected_version"] = expected_version
        if description is not None:
            body["description"] = description
        if tags is not None:
            body["tags"] = dict(tags)
        if check_key:
            body["check_key"] = True
        if secret_type is not None:
            body["secret_type"] = secret_type
        if not check_format:
            body["check_format"] = False
        data: dict[str, Any] = self._req("PUT", self._secret(org, name),
                                         body=self._with_domain(body, domain))
        return data

    def generate(self, name: str, org: str, *, domain: str | None = None,
                 length: int | None = None, alphabet: str | None = None,
                 expected_version: int | None = None, description: str | None = None,
                 tags: Mapping[str, str] | None = None,
                 expires_at: datetime | None = None) -> int:
        """A random value made and stored by the server (``POST …/generate``), never sent
        back; returns the new version. ``length``/``alphabet``: default, what a
        rotation of the secret would make."""
        return int(self._generate(name, org, domain=domain, length=length,
                                  alphabet=alphabet, expected_version=expected_version,
                                  description=description, tags=tags,
                                  expires_at=expires_at)["version"])

    def _generate(self, name: str, org: str, *, domain: str | None, **fields: Any
                  ) -> dict[str, Any]:
        body = {**self._expiry(fields.pop("expires_at", None)),
                **{k: dict(v) if k == "tags" else v for k, v in fields.items()
                   if v is not None}}
        data: dict[str, Any] = self._req("POST", self._secret(org, name, "/generate"),
                                         body=self._with_domain(body, domain))
        return data

    def put_json(self, name: str, data: Mapping[str, Any], org: str, *,
                 domain: str | None = None, expected_version: int | None = None) -> int:
        return self.put(name, json.dumps(dict(data), sort_keys=True), org, domain=domain,
                        expected_version=expected_version)

    def update_json(self, name: str, changes: Mapping[str, str | None], org: str, *,
                    domain: str | None = None, expected_version: int | None = None) -> int:
        """Spec 000's update_credentials: these fields set (None removes one), the
        others kept by the server unseen; returns the new version."""
        return int(self._fields(name, changes, org, domain=domain,
                                expected_version=expected_version)["version"])

    def _fields(self, name: str, changes: Mapping[str, str | None], org: str, *,
                domain: str | None, expected_version: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"fields": dict(changes)}
        if expected_version is not None:
            body["expected_version"] = expected_version
        data: dict[str, Any] = self._req("PATCH", self._secret(org, name, "/fields"),
                                         body=self._with_domain(body, domain))
        return data

    def update_tags(self, name: str, org: str, *, domain: str | None = None,
                    set_tags: Mapping[str, str] | None = None, unset: Iterable[str] = (),
                    description: str | None = None,
                    expires_at: datetime | None = None) -> dict[str, Any]:
        """Tags, description and expiry without a new version; returns the status."""
        tags: dict[str, str | None] = {**dict(set_tags or {}), **dict.fromkeys(unset)}
        body: dict[str, Any] = self._expiry(expires_at)
        if tags:
            body["tags"] = tags
        if description is not None:
            body["description"] = description
        data: dict[str, Any] = self._req("PATCH", self._secret(org, name),
                                         body=self._with_domain(body, domain))
        return data

    def mark_exposed(self, name: str, org: str, *, where: str,
                     domain: str | None = None) -> dict[str, Any]:
        """Record that the current value was found in the open (``where``: a file and
        line, a commit, a ticket): due for rotation at once, until a new value is
        written. No new version; returns the status (``exposed`` true). ``where`` is
        kept to its first 256 characters, as the library keeps it."""
        self._needs(MARK_EXPOSED, "it cannot mark a value exposed")
        data = self._req("POST", self._secret(org, name, "/exposed"),
                         body=self._with_domain({"where": where[:256]}, domain))
        if not (isinstance(data, dict) and data.get("exposed") is True):
            raise self._odd("a secret's status after marking it exposed")
        return data

    def rotation_status(self, org: str | None = None, *,
                        domain: str | None = None) -> builtins.list[dict[str, Any]]:
        """Each secret's rotation state by the server's policy, overdue first (``keysafe
        rotate status``): of ``org`` (one ``domain``'s), or of every org the token
        covers; as ``RotationState.to_dict``, never a value or a rotator's options."""
        self._needs(ROTATION_STATUS, "it cannot show rotation status")
        data = self._req("GET", "/api/rotation", {"org_id": org, "domain_id": domain})
        rows = data.get("secrets") if isinstance(data, dict) else None
        if not (isinstance(rows, list) and all(map(_rotation_state, rows))):
            raise self._odd("a rotation status")
        return rows

    def configure_rotation(self, name: str, org: str, *, domain: str | None = None,
                           rotator: str | None = None,
                           options: Mapping[str, str] | None = None,
                           unset_options: Iterable[str] = (),
                           period_days: int | None = None,
                           dry_run: bool = False) -> dict[str, Any]:
        """How a secret rotates (``keysafe rotate configure``): its rotator, options
        (added to those set before; ``unset_options`` removed) and period in days (0:
        never scheduled), checked by the server before anything is stored; an admin of
        every org only. Returns the status (the rotator, never its options)."""
        self._needs(ROTATION_CONFIGURE, "it cannot configure rotation")
        drop = [unset_options] if isinstance(unset_options, str) else list(unset_options)
        if drop:
            self._needs(ROTATION_UNSET_OPTIONS, "it cannot remove a rotator's options")
        body = _given(dry_run=dry_run, rotator=rotator, period_days=period_days,
                      options=dict(options) if options else None,
                      unset_options=drop or None)
        data = self._req("PUT", self._secret(org, name, "/rotation"),
                         body=self._with_domain(body, domain))
        if not (isinstance(data, dict) and isinstance(data.get("tags"), dict)):
            raise self._odd("a secret's status after configuring its rotation")
        return data

    def rotate_selection(self, selection: str, org: str | None = None, *,
                         domain: str | None = None, dry_run: bool = False,
                         read_by: str | None = None,
                         since: datetime | None = None) -> dict[str, Any]:
        """Rotate a selection now (``due``, ``all``, ``symmetric``, ``api-keys``,
        ``database``) in ``org`` (one ``domain``'s; every org: an admin of every org),
        or plan it (``dry_run``); ``read_by``: only what that identity read since
        ``since`` (offboarding). ``{results: [{path, name, org, outcome, version, step,
        detail}], summary, records_by}``, never a value."""
        self._needs(ROTATION_RUN, "it cannot rotate a selection")
        body = _given(selection=selection, dry_run=dry_run, org_id=org, domain_id=domain,
                      read_by=read_by, since=since.isoformat() if since is not None else None)
        data: dict[str, Any] = self._req("POST", "/api/rotation/run", body=body)
        results = data.get("results") if isinstance(data, dict) else None
        if not (isinstance(results, list) and all(
                isinstance(r, dict) and isinstance(r.get("outcome"), str)
                and isinstance(r.get("name"), str) and isinstance(r.get("org"), str)
                and isinstance(r.get("path"), str) for r in results)
                and isinstance(data.get("records_by"), int | None)):
            raise self._odd("a rotation run's outcomes")
        return data

    def retire_previous(self, *, dry_run: bool = False) -> builtins.list[str]:
        """Previous values past their grace period revoked and dropped (``dry_run``:
        listed); the secrets' paths. An admin of every org only."""
        self._needs(ROTATION_RETIRE, "it cannot retire previous values for a client")
        data = self._req("POST", "/api/rotation/retire",
                         {"dry_run": "true" if dry_run else None})
        done = data.get("retired") if isinstance(data, dict) else None
        if not (isinstance(done, list) and all(isinstance(p, str) for p in done)):
            raise self._odd("a list of retired values")
        return done

    def delete(self, name: str, org: str, *, domain: str | None = None,
               force: bool = False) -> None:
        self._req("DELETE", self._secret(org, name),
                  {"domain_id": domain, "force": "true" if force else None})

    def restore(self, name: str, org: str, *, domain: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = self._req("POST", self._secret(org, name, "/restore"),
                                         {"domain_id": domain})
        return data

    def rollback(self, name: str, version: int, org: str, *,
                 domain: str | None = None) -> int:
        return int(self._rollback(name, version, org, domain=domain)["version"])

    def _rollback(self, name: str, version: int, org: str, *,
                  domain: str | None) -> dict[str, Any]:
        data: dict[str, Any] = self._req("POST", self._secret(org, name, "/rollback"),
                                         body=self._with_domain({"version": version}, domain))
        return data

    def check_key(self, name: str, org: str, *, value: str | None = None,
                  domain: str | None = None) -> dict[str, Any]:
        """Ask the provider whether a key works (docs/key-checks.md): ``value`` (nothing
        is saved), or the stored value when None. The verdict, never the key."""
        body: dict[str, Any] = {} if value is None else {"secret_value": value}
        data: dict[str, Any] = self._req("POST", self._secret(org, name, "/check"),
                                         body=self._with_domain(body, domain))
        return data

    def catalog(self) -> dict[str, Any]:
        """The server's catalog by category, with its app, environment, naming template,
        default domain, value size limit and recovery window."""
        data = self._req("GET", "/api/catalog")
        if not isinstance(data, dict):
            raise self._odd("a catalog")
        features = data.get("features", [])
        if not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
            raise self._odd("a catalog", " (its features are not a list of names)")
        self._features = frozenset(features)
        return data

    def rotate(self, name: str, org: str, *, domain: str | None = None,
               dry_run: bool = False) -> dict[str, Any]:
        """Spec 004's rotate_secret: the outcome and the new version, never the value.
        ``dry_run``: outcome ``planned``, changing nothing (a server that lists
        ``rotate_dry_run``; ConfigError otherwise, before anything is sent: an older one
        would ignore it and rotate)."""
        if dry_run:
            self._needs(ROTATE_DRY_RUN, "it would ignore dry_run and rotate")
        data = self._req("POST", self._secret(org, name, "/rotate"),
                         {"domain_id": domain, "dry_run": "true" if dry_run else None})
        if not (isinstance(data, dict) and isinstance(data.get("outcome"), str)
                and isinstance(data.get("version"), int | None)):
            raise self._odd("a rotation's outcome")
        return data

    def delete_org(self, org: str, *, purge: bool = False, dry_run: bool = False,
                   keep_tokens: bool = False) -> dict[str, Any]:
        """A tenant's offboarding: every secret of the org deleted (``purge``: destroyed
        now) and the tokens that covered only it revoked (``keep_tokens``: left alone);
        the outcome per secret. ``dry_run``: what would happen, changing nothing; both
        need a server that says it takes them (ConfigError otherwise, before anything is
        sent: an older server would ignore them and remove the org)."""
        if dry_run or keep_tokens:
            self._needs(ORG_REMOVE_PLAN, "it would ignore dry_run and keep_tokens and "
                                         "remove the org")
        flag = {True: "true", False: None}
        data = self._req("DELETE", f"/api/orgs/{_seg('org', org)}",
                         {"purge": flag[purge], "dry_run": flag[dry_run],
                          "keep_tokens": flag[keep_tokens]})
        if not (isinstance(data, dict) and _steps(data.get("secrets"))
                and isinstance(data.get("tokens", []), list)
                and (not dry_run or data.get("dry_run") is True)):
            raise self._odd("an org removal" + (" plan" if dry_run else ""))
        return data

    def orgs(self) -> builtins.list[dict[str, Any]]:
        """Every org with secrets in the server's environment that the token covers:
        ``{org, secrets, deleted, domains}`` (live and soft-deleted counts, of the
        secrets its scopes cover)."""
        self._needs(ORG_LIST, "it cannot list orgs")
        data = self._req("GET", "/api/orgs")
        rows = data.get("orgs") if isinstance(data, dict) else None
        if not (isinstance(rows, list) and all(
                isinstance(r, dict) and isinstance(r.get("org"), str)
                and isinstance(r.get("secrets"), int) and isinstance(r.get("deleted"), int)
                and isinstance(r.get("domains"), list)
                and all(isinstance(d, str) for d in r["domains"]) for r in rows)):
            raise self._odd("a list of orgs")
        return rows

    def restore_org(self, org: str, *, dry_run: bool = False) -> dict[str, Any]:
        """Undo an offboarding without ``purge``: every secret of the org the last
        removal deleted, still within its recovery window, restored (revoked tokens
        stay revoked); the outcome per secret. ``dry_run``: which would be."""
        self._needs(ORG_RESTORE, "it cannot restore an org")
        data = self._req("POST", f"/api/orgs/{_seg('org', org)}/restore",
                         {"dry_run": "true" if dry_run else None})
        if not (isinstance(data, dict) and _steps(data.get("secrets"))
                and data.get("dry_run") is dry_run):
            raise self._odd("an org restore" + (" plan" if dry_run else ""))
        return data

    def audit_verify(self, anchors: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
        """The server checks its audit chain, and each anchor given (as ``keysafe audit
        anchor`` wrote it): ``{ok, checked, problems: [{seq, problem}], notes}``. What
        the server says about its own store: keep anchors elsewhere for a check that
        does not trust it."""
        self._needs(AUDIT_VERIFY, "it cannot check its audit chain for a client")
        data = self._req("POST", "/api/audit/verify", body={"anchors": list(anchors)})
        if not (isinstance(data, dict) and isinstance(data.get("ok"), bool)
                and isinstance(data.get("checked"), int)
                and isinstance(data.get("problems"), list)
                and all(isinstance(p, dict) and isinstance(p.get("seq"), int)
                        and isinstance(p.get("problem"), str) for p in data["problems"])
                # "ok" and the problems must agree: a broken chain never reads as intact.
                and data["ok"] is not bool(data["problems"])
                and isinstance(data.get("notes", []), list)
                and all(isinstance(n, str) for n in data.get("notes", []))):
            raise self._odd("an audit verification")
        return data

    def audit_anchor(self) -> dict[str, Any]:
        """An audit anchor of the server's log (an ``audit_anchor`` record committed
        durably): ``{kind, seq, hash, taken_at, env}``, to keep where the server's
        administrators cannot write."""
        data = self._req("POST", "/api/audit/anchor")
        if not (isinstance(data, dict) and isinstance(data.get("seq"), int)
                and isinstance(data.get("hash"), str) and _HASH.fullmatch(data["hash"])
                and data.get("kind") == "keysafe-audit-anchor"):
            raise self._odd("an audit anchor")
        return data

    def _expiry(self, when: datetime | None) -> dict[str, Any]:
        """``expires_at`` for a write's body (nothing when None), once the server says it
        takes one (an older one refuses the field)."""
        if when is None:
            return {}
        self._needs(EXPIRES_AT, "it does not take an expiry")
        return {"expires_at": when.isoformat()}

    def _needs(self, feature: str, without: str) -> None:
        """ConfigError, before anything is sent, when the server does not list
        ``feature`` in /api/catalog (an older release: ``without`` says what then)."""
        if self._features is None:
            self.catalog()
        if feature not in (self._features or ()):
            raise ConfigError(f"the keysafe server at {self.url} is older than this "
                              f"keysafe: {without}; upgrade it first")

    def destroy(self, name: str, versions: Iterable[int], org: str, *,
                domain: str | None = None) -> builtins.list[int]:
        data = self._req("POST", self._secret(org, name, "/destroy"),
                         body=self._with_domain({"versions": list(versions)}, domain))
        return [int(v) for v in data["destroyed"]]
