"""Live key checks: ask a provider whether an API key works before keysafe saves it
(spec 001: "Validate API keys before saving, if a validation endpoint is available"),
and whether a stored or freshly rotated one still does (spec 004: "validation after
rotation", "verify the old secret still works").

A check is one HTTPS request to a read-only endpoint of the provider's API that needs
the key and costs nothing: listing models, "who am I", a key-info call. An AWS access
key pair (``kind="aws-sts"``) is asked of STS ``GetCallerIdentity``, signed with the
pair through boto3 (the ``aws`` extra), at the endpoint boto3 is configured for
(``AWS_ENDPOINT_URL``, ``LOCALSTACK_ENDPOINT``), never one a value names. The answer
decides:

- ``valid``: a 2xx answer (and, where the provider answers 200 to a bad key, its
  ``ok_field`` is true);
- ``rejected``: the provider refused the key (401, or the statuses the check lists, or
  ``ok_field`` false), or the value cannot be a key (never sent);
- ``unknown``: no verdict (unreachable, timeout, throttled, 5xx, a redirect, a 403
  that may only mean the key lacks one permission, an answer that breaks HTTP or lacks
  ``ok_field``). A caller saving a key saves it and
  says the check could not be made: an outage at the provider must not stop a team
  from storing a key;
- ``unsupported``: no check is known for this secret; ``off``: checks are turned off
  (``KEYSAFE_KEY_CHECKS=off``, for air-gapped installs).

The key goes only to the URL of the catalog entry, which comes from keysafe's own
table or a team's catalog file, never from a request; over HTTPS (plain HTTP only to a
loopback address, for a local gateway or a test stand-in, and never through a proxy),
without following redirects. No result, message or log line carries the key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from keysafe.errors import ConfigError, KeysafeError
from keysafe.hosts import is_loopback_host

if TYPE_CHECKING:
    from keysafe.manager.manager import SecretManager
    from keysafe.rotation.events import Events

__all__ = ["BUILTIN_CHECKS", "KeyCheck", "LiveCheck", "Outcome", "run"]

Outcome = Literal["valid", "rejected", "unknown", "unsupported", "off"]
_AUTH_SCHEMES = ("bearer", "token")
_USER_AGENT = "keysafe-key-check/1"
#: How much of an answer is read to find ``ok_field`` (a key-info answer is small).
_MAX_ANSWER = 64 * 1024


@dataclass(frozen=True, slots=True)
class LiveCheck:
    """How to ask a provider about a key.

    ``auth``: ``bearer`` (``Authorization: Bearer KEY``), ``token``
    (``Authorization: Token KEY``, Deepgram) or ``header:NAME`` (the key alone in
    header NAME: Anthropic's ``x-api-key``). ``headers``: fixed extra headers (an API
    version). ``ok_field``: a JSON field of a 2xx answer that must be true (Slack answers
    200 with ``"ok": false`` to a bad token). ``reject``: the statuses that mean the key
    was refused (Google answers 400 to a bad key)."""

    url: str
    method: str = "GET"
    auth: str = "bearer"
    headers: tuple[tuple[str, str], ...] = ()
    ok_field: str | None = None
    reject: tuple[int, ...] = (401,)
    #: ``http`` (the request above), or ``aws-sts`` (an AWS key pair, asked of STS; the
    #: URL then only names the service for people). Team files make ``http`` checks.
    kind: str = "http"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "?"

    def to_dict(self) -> dict[str, Any]:
        """What the catalog shows of a check: where it goes, never how a key is sent."""
        return {"host": self.host, "method": self.method}

    @classmethod
    def from_raw(cls, raw: object, where: str) -> LiveCheck:
        """A check from a team catalog file's ``check`` table; ConfigError naming the
        field when a part of it is unusable."""
        if isinstance(raw, str):
            raw = {"url": raw}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: field 'check': expected a table with a url, "
                              f"not {type(raw).__name__}")
        known = ("url", "method", "auth", "headers", "ok_field", "reject")
        unknown = sorted(str(k) for k in raw if k not in known)
        if unknown:
            raise ConfigError(f"{where}: field 'check': unknown key {unknown[0]!r}; "
                              f"known keys are {', '.join(known)}")

        def fail(key: str, problem: str) -> ConfigError:
            return ConfigError(f"{where}: field 'check.{key}': {problem}")

        url = raw.get("url")
        if not isinstance(url, str) or not url:
            raise fail("url", "missing or not a string")
        problem = url_problem(url)
        if problem:
            raise fail("url", problem)
        method = raw.get("method", "GET")
        if method not in ("GET", "POST"):
            raise fail("method", "must be GET or POST")
        auth = raw.get("auth", "bearer")
        if not isinstance(auth, str) or not (
                auth in _AUTH_SCHEMES or (auth.startswith("header:") and _token(auth[7:]))):
            raise fail("auth", "must be bearer, token or header:NAME")
        headers = raw.get("headers", {})
        if not isinstance(headers, Mapping) or not all(
                isinstance(k, str) and _token(k) and isinstance(v, str) and _printable(v)
                for k, v in headers.items()):
            raise fail("headers", "must be a table of header names to printable text")
        ok_field = raw.get("ok_field")
        if ok_field is not None and (not isinstance(ok_field, str) or not ok_field):
            raise fail("ok_field", "must be a field name")
        reject = raw.get("reject", [401])
        if not isinstance(reject, list) or not reject or not all(
                isinstance(s, int) and not isinstance(s, bool) and 400 <= s <= 499
                for s in reject):
            raise fail("reject", "must be a list of 4xx statuses")
        return cls(url=url, method=method, auth=auth,
                   headers=tuple(sorted(headers.items())), ok_field=ok_field,
                   reject=tuple(reject))


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """A check's verdict. ``detail`` is for people and never holds the key."""

    outcome: Outcome
    detail: str
    provider: str | None = None
    status: int | None = None

    @property
    def rejected(self) -> bool:
        return self.outcome == "rejected"

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "detail": self.detail, "provider": self.provider,
                "status": self.status}


def _token(name: str) -> bool:
    """An HTTP header name (RFC 9110 token characters)."""
    return bool(name) and all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~")
                              for c in name)


def _printable(text: str) -> bool:
    return all(" " <= c <= "~" for c in text)


def url_problem(url: str) -> str | None:
    """Why ``url`` may not receive a key, or None: it must be https, or http to a
    loopback address (a local gateway, a test stand-in), with no credentials in it."""
    try:
        u = urlsplit(url)
        host = u.hostname
        u.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if not host:
        return "must be an absolute https:// URL"
    if u.username or u.password:
        return "must not carry credentials"
    if u.scheme == "https":
        return None
    if u.scheme == "http" and is_loopback_host(host):
        return None
    return "must be https:// (plain http:// only to a loopback address)"


def _opener(direct: bool) -> Any:
    """urllib's opener without redirects: a redirect is an answer (``unknown``), never
    followed, since urllib would send the key's header on to the new location. An
    https check goes through the machine's proxy (HTTPS_PROXY / NO_PROXY), which sees
    only the TLS tunnel; ``direct`` (a plain-http check, which is always to loopback)
    uses no proxy, so the key never crosses a proxy in clear text.
    Imported here: urllib.request costs milliseconds that no other command pays."""
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    handlers: list[Any] = [NoRedirect()]
    if direct:
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


def run(check: LiveCheck, value: str, *, provider: str | None, display: str,
        timeout: float = 5.0) -> KeyCheck:
    """Ask the provider about ``value`` (surrounding whitespace ignored, as when it is
    pasted). Never raises for what the provider or the network does. ``detail`` names
    the check's host, never the key; ``display`` names the secret where the problem is
    the value itself."""
    import http.client
    import urllib.error
    import urllib.request

    if check.kind == "aws-sts":
        return _aws_sts(value, provider=provider, display=display, timeout=timeout)
    key = value.strip()
    host = check.host
    if not key or not _printable(key):
        # An HTTP header cannot carry it (and http.client would quote it in its error).
        # Refused here: status None says the provider was never asked.
        return KeyCheck("rejected", f"{display}: the value has characters no API key has "
                                    "(line breaks, control or non-ASCII characters); it "
                                    "was not sent", provider)
    problem = url_problem(check.url)
    if problem:
        return KeyCheck("unknown", f"the check's URL {problem}", provider)
    headers = {"User-Agent": _USER_AGENT, "Accept": "application/json",
               **dict(check.headers)}
    if check.auth == "bearer":
        headers["Authorization"] = f"Bearer {key}"
    elif check.auth == "token":
        headers["Authorization"] = f"Token {key}"
    else:
        headers[check.auth[7:]] = key
    data = b"" if check.method == "POST" else None
    # The scheme was checked by url_problem above: https, or http to loopback only.
    req = urllib.request.Request(check.url, data=data, headers=headers,  # noqa: S310
                                 method=check.method)
    try:
        with _opener(direct=check.url.startswith("http:")).open(req, timeout=timeout) as resp:
            status = resp.status
            body = resp.read(_MAX_ANSWER + 1) if check.ok_field else b""
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
        if status in check.reject:
            return KeyCheck("rejected", f"{host} refused this key (HTTP {status})",
                            provider, status)
        if 300 <= status < 400:
            return KeyCheck("unknown", f"{host} answered with a redirect (HTTP {status}), "
                                       "which is not followed", provider, status)
        hint = (" (the key may be valid but lack the permission the check needs)"
                if status == 403 else " (throttled)" if status == 429 else "")
        return KeyCheck("unknown", f"{host} answered HTTP {status}{hint}", provider, status)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError,
            ValueError) as exc:
        # HTTPException: an answer that breaks HTTP (a bad status line, a cut-off body).
        reason = getattr(exc, "reason", None) or exc
        return KeyCheck("unknown", f"could not reach {host} "
                                   f"({type(reason).__name__}: {_reason(reason)})", provider)
    if check.ok_field:
        ok = _field(body, check.ok_field)
        if ok is None:
            # Not the provider's JSON (a proxy's page, a cut-off answer): no verdict.
            return KeyCheck("unknown", f"{host} answered without a JSON "
                                       f"'{check.ok_field}' field", provider, status)
        if ok is not True:
            # Slack: 200 with {"ok": false, "error": "invalid_auth"}.
            return KeyCheck("rejected", f"{host} refused this key ({check.ok_field} is "
                                        "not true)", provider, status)
    return KeyCheck("valid", f"{host} accepted this key", provider, status)


#: STS error codes that mean the pair itself was refused.
_AWS_REFUSED = frozenset({"InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken",
                          "ExpiredTokenException", "UnrecognizedClientException",
                          "AccessDenied", "InvalidAccessKeyId"})


def _aws_sts(value: str, *, provider: str | None, display: str, timeout: float) -> KeyCheck:
    """Ask STS GetCallerIdentity, signed with the pair in ``value`` (a JSON object with
    access_key_id and secret_access_key, and session_token if temporary). The answer's
    ARN names the identity; AWS's error text is never shown, only its code."""
    from keysafe.backends._aws import client_for_pair

    try:
        pair = json.loads(value)
    except ValueError:
        pair = None
    if not isinstance(pair, dict) or not all(
            isinstance(pair.get(f), str) and pair[f] and _printable(pair[f])
            for f in ("access_key_id", "secret_access_key")):
        return KeyCheck("rejected", f"{display}: not an AWS key pair (a JSON object with "
                                    "access_key_id and secret_access_key); it was not sent",
                        provider)
    try:
        from keysafe.backends._sdk import require_sdk

        config = require_sdk("botocore.config", "aws")
        exc = require_sdk("botocore.exceptions", "aws")
        client = client_for_pair("sts", pair, config=config.Config(
            connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1},
            user_agent_extra="keysafe-key-check"))
    except ConfigError as missing:
        return KeyCheck("unknown", f"STS could not be asked: {missing.message}", provider)
    host = urlsplit(client.meta.endpoint_url).hostname or "sts"
    try:
        who = client.get_caller_identity()
    except exc.ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", "")) or "?"
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _AWS_REFUSED:
            return KeyCheck("rejected", f"{host} refused this key pair ({code})", provider,
                            status)
        return KeyCheck("unknown", f"{host} answered {code}", provider, status)
    except (exc.BotoCoreError, OSError) as err:
        return KeyCheck("unknown", f"could not reach {host} ({type(err).__name__})",
                        provider)
    arn = str(who.get("Arn", ""))
    return KeyCheck("valid", f"{host} accepted this key pair ({arn[:200]})", provider, 200)


def _field(body: bytes, name: str) -> object | None:
    """``name`` of a JSON object answer; None when the answer is not one (or is over
    the size read) or lacks the field."""
    if len(body) > _MAX_ANSWER:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get(name) if isinstance(data, dict) else None


def _reason(reason: object) -> str:
    """A network error's text, short. It cannot hold the key: the key is only ever in a
    request header, which no socket or TLS error quotes."""
    text = str(getattr(reason, "strerror", None) or reason)
    return text[:120]


#: Catalog name -> the provider's own key check. Read-only endpoints that need the key
#: and cost nothing; sources: each provider's API reference (docs/key-checks.md).
BUILTIN_CHECKS: Mapping[str, LiveCheck] = {
    "openai_api_key": LiveCheck(url="https://api.openai.com/v1/models"),
    # STS GetCallerIdentity: needs no permission, so any working pair passes.
    "aws_access_key": LiveCheck(url="https://sts.amazonaws.com/", method="POST",
                                kind="aws-sts"),
    "anthropic_api_key": LiveCheck(url="https://api.anthropic.com/v1/models",
                                   auth="header:x-api-key",
                                   headers=(("anthropic-version", "2023-06-01"),)),
    "deepgram_api_key": LiveCheck(url="https://api.deepgram.com/v1/auth/token",
                                  auth="token"),
    "elevenlabs_api_key": LiveCheck(url="https://api.elevenlabs.io/v1/user",
                                    auth="header:xi-api-key"),
    # Google answers 400 (API_KEY_INVALID) to a key it does not know.
    "google_api_key": LiveCheck(
        url="https://generativelanguage.googleapis.com/v1beta/models",
        auth="header:x-goog-api-key", reject=(400, 401)),
    "openrouter_api_key": LiveCheck(url="https://openrouter.ai/api/v1/key"),
    "mistral_api_key": LiveCheck(url="https://api.mistral.ai/v1/models"),
    "hf_api_token": LiveCheck(url="https://huggingface.co/api/whoami-v2"),
    "groq_api_key": LiveCheck(url="https://api.groq.com/openai/v1/models"),
    "cohere_api_key": LiveCheck(url="https://api.cohere.com/v1/check-api-key", method="POST",
                                ok_field="valid"),
    "together_api_key": LiveCheck(url="https://api.together.xyz/v1/models"),
    "github_token": LiveCheck(url="https://api.github.com/user",
                              headers=(("X-GitHub-Api-Version", "2022-11-28"),)),
    "notion_api_token": LiveCheck(url="https://api.notion.com/v1/users/me",
                                  headers=(("Notion-Version", "2022-06-28"),)),
    "slack_bot_token": LiveCheck(url="https://slack.com/api/auth.test", method="POST",
                                 ok_field="ok"),
    "stripe_secret_key": LiveCheck(url="https://api.stripe.com/v1/balance"),
}


# -- stored keys ---------------------------------------------------------------------


def stored(mgr: SecretManager, org: str | None = None,
           domain: str | None = None) -> list[tuple[str, str, str]]:
    """(name, org, domain) of every live stored secret that has a live check: in
    ``org`` (every org of the manager's app and environment when None), in ``domain``
    (every domain when None)."""
    out = []
    for meta in mgr.list(org, domain=domain):
        ref = mgr.parse(meta.path)
        entry = mgr.catalog.get(ref.name)
        if entry is not None and entry.check is not None:
            out.append((ref.name, ref.org, ref.domain))
    return out


def sweep(mgr: SecretManager, events: Events | None = None) -> dict[str, int]:
    """Check every stored key of every org (the server's ``check-keys`` job,
    ``KEYSAFE_KEY_CHECK_INTERVAL``): each verdict audited as ``check_key``; a key its
    provider now refuses (revoked, expired) also goes out as a ``key.rejected`` event
    to the event webhooks. Returns the count of each verdict."""
    counts: dict[str, int] = {}
    for name, org, domain in stored(mgr):
        try:
            result = mgr.check_key(name, None, org, domain=domain)
        except KeysafeError:
            counts["error"] = counts.get("error", 0) + 1  # audited by check_key
            continue
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
        if result.rejected and events is not None:
            events.emit("key.rejected", {"path": mgr.path(name, org, domain=domain),
                                         "org": org, "detail": result.detail})
    return counts
