"""Rotators: the part of a rotation that knows the target system.

Each is a small class behind one interface, found by name among the built-ins or the
``keysafe.rotators`` entry-point group. Options come from the
secret's tags (``rotator.<option>``), so a rotation is configured where the secret is.

The engine calls, in order: ``generate`` (the pending value), ``apply`` (set it in the
target), ``test`` (prove it works there), and after promotion and the grace period,
``retire`` (revoke the previous credential). ``rollback`` undoes ``apply`` when a later
step fails, so the current credential keeps working.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from keysafe.errors import ConfigError, InvalidValue, RotationError
from keysafe.errors import ManualRotation as ManualRotation  # defined with the errors


@dataclass
class RotationContext:
    """What a rotator may know: never other secrets' values, except through ``read``."""

    path: str
    name: str
    org: str
    domain: str
    options: Mapping[str, str]
    #: Reads another secret of the same org and domain (e.g. an admin credential).
    read: Callable[[str], str] = field(repr=False, default=lambda n: "")
    #: The current value (None when the secret does not exist yet).
    current: str | None = field(repr=False, default=None)


@runtime_checkable
class Rotator(Protocol):
    name: str

    def generate(self, ctx: RotationContext) -> str: ...

    def apply(self, ctx: RotationContext, new: str) -> None: ...

    def test(self, ctx: RotationContext, new: str) -> None: ...

    def rollback(self, ctx: RotationContext, new: str) -> None: ...

    def retire(self, ctx: RotationContext, old: str) -> None: ...


class _NoTarget:
    """Secrets that live only in keysafe: nothing to set, undo or revoke elsewhere."""

    #: The engine may run all four steps in one store transaction.
    local = True

    def apply(self, ctx: RotationContext, new: str) -> None:
        return None

    def rollback(self, ctx: RotationContext, new: str) -> None:
        return None

    def retire(self, ctx: RotationContext, old: str) -> None:
        return None


def check_known(name: str, rotator: str, options: Mapping[str, str],
                known: tuple[str, ...]) -> None:
    """ConfigError naming an option ``rotator`` does not take (a typo would otherwise
    be ignored until the rotation it was meant for)."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        takes = ", ".join(known) if known else "no options"
        raise ConfigError(f"the {rotator} rotator of {name} does not take "
                          f"{', '.join('rotator.' + k for k in unknown)}; it takes {takes}")


def wait_option(ctx: RotationContext, default: float) -> float:
    """``rotator.wait``: seconds a test step retries while the provider accepts a new
    key (eventual consistency), 0 to 600; ConfigError naming a bad value."""
    raw = ctx.options.get("wait", str(default))
    try:
        wait = float(raw)
    except ValueError:
        # Never the value: options are the operator's, not shown through the API.
        raise ConfigError(f"rotator.wait for {ctx.name} must be seconds (a number)"
                          ) from None
    if not 0 <= wait <= 600:
        raise ConfigError(f"rotator.wait for {ctx.name} must be 0 to 600 seconds")
    return wait


def stored_json(value: str | None, what: str, *, kind: str, shape: str) -> Any:
    """The stored credential ``value`` parsed as JSON for a rotator. RotationError,
    never showing the value: "``what`` has no current ``kind`` to rotate" (None), or
    "``what`` does not hold ``shape``" (not JSON). Callers check the shape."""
    if value is None:
        raise RotationError(f"{what} has no current {kind} to rotate")
    try:
        return json.loads(value)
    except ValueError:
        raise RotationError(f"{what} does not hold {shape}") from None


def options_context(name: str, options: Mapping[str, str]) -> RotationContext:
    """A context for checking options alone (no secret, no target)."""
    return RotationContext(path="", name=name, org="", domain="", options=options)


ALPHABETS = {
    "urlsafe": string.ascii_letters + string.digits + "-_",
    "alnum": string.ascii_letters + string.digits,
    "hex": "0123456789abcdef",
    "printable": string.ascii_letters + string.digits + "!#%&()*+,-./:;<=>?@[]^_{|}~",
}
#: Characters a generated value may have: at least 32 (192 bits or more from urlsafe).
MIN_LENGTH, MAX_LENGTH = 32, 4096


def random_value(length: int = 64, alphabet: str = "urlsafe") -> str:
    """``length`` characters drawn from ``alphabet`` (one of ALPHABETS) by the ``secrets``
    module: what the random rotator makes, for a first value no person has to see.
    InvalidValue naming the bad length or alphabet."""
    if alphabet not in ALPHABETS:
        raise InvalidValue(f"alphabet {alphabet!r} is not one of {', '.join(ALPHABETS)}")
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise InvalidValue(f"length {length} is out of range: a generated value has "
                           f"{MIN_LENGTH} to {MAX_LENGTH} characters")
    chars = ALPHABETS[alphabet]
    return "".join(secrets.choice(chars) for _ in range(length))


class RandomRotator(_NoTarget):
    """Random symmetric keys, JWT and session secrets. Options: ``length`` (characters,
    default 64, at least 32), ``alphabet`` (urlsafe, alnum, hex, printable)."""

    name = "random"
    OPTIONS = ("length", "alphabet")

    def check_options(self, name: str, options: Mapping[str, str]) -> None:
        check_known(name, self.name, options, self.OPTIONS)
        self._params(options_context(name, options))

    def _params(self, ctx: RotationContext) -> tuple[int, str]:
        try:
            n = int(ctx.options.get("length", "64"))
        except ValueError:
            raise ConfigError(f"rotator.length for {ctx.name} must be a number") from None
        alpha = ctx.options.get("alphabet", "urlsafe")
        if alpha not in ALPHABETS:
            raise ConfigError(f"rotator.alphabet for {ctx.name} must be one of "
                              f"{', '.join(ALPHABETS)}")
        if not MIN_LENGTH <= n <= MAX_LENGTH:
            raise ConfigError(f"rotator.length for {ctx.name} must be {MIN_LENGTH} to "
                              f"{MAX_LENGTH}")
        return n, alpha

    def generate(self, ctx: RotationContext) -> str:
        return random_value(*self._params(ctx))

    def test(self, ctx: RotationContext, new: str) -> None:
        n, alpha = self._params(ctx)
        if len(new) != n or any(c not in ALPHABETS[alpha] for c in new):
            raise RotationError(f"generated value for {ctx.name} does not match its policy")
        # As bytes: compare_digest refuses str with non-ASCII characters.
        if ctx.current is not None and hmac.compare_digest(new.encode(), ctx.current.encode()):
            raise RotationError(f"new value for {ctx.name} equals the current one")


class ManualRotator(_NoTarget):
    """Keys only a person can issue (most third-party API keys): opens a reminder."""

    name = "manual"

    def check_options(self, name: str, options: Mapping[str, str]) -> None:
        check_known(name, self.name, options, ())

    def generate(self, ctx: RotationContext) -> str:
        raise ManualRotation(f"{ctx.name} ({ctx.org}) must be rotated by hand: issue a new "
                             "key with the provider, then `keysafe put` it")

    def test(self, ctx: RotationContext, new: str) -> None:  # pragma: no cover - never reached
        return None


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The signature keysafe sends in ``X-Keysafe-Signature``: ``t=<unix>,v1=<hex>``, an
    HMAC-SHA256 of ``"<unix>." + body`` (the Stripe-style scheme, so replays of an old
    body with a new time do not verify)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(body: bytes, header: str, secret: str, *, tolerance: float = 300,
                     now: float | None = None) -> bool:
    """Receivers' check of ``X-Keysafe-Signature`` (also used by keysafe's tests)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        ts = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(body, secret, ts).encode(), header.encode())


class WebhookRotator:
    """Third-party API keys through the team's own endpoint. Options: ``url`` (required),
    ``secret_name`` (a keysafe secret in the same scope holding the HMAC key; default
    ``rotation_webhook_secret``), ``timeout`` (seconds, default 30).

    keysafe POSTs JSON ``{"action": "create"|"test"|"rollback"|"retire", "org", "domain",
    "name", "value"?}`` signed in ``X-Keysafe-Signature``. ``create`` answers
    ``{"value": "<new key>"}`` (the team's code asks the provider for a key); ``test``
    answers 2xx if the key works; ``rollback`` and ``retire`` revoke the key they carry.
    """

    name = "webhook"
    OPTIONS = ("url", "secret_name", "timeout")

    def check_options(self, name: str, options: Mapping[str, str]) -> None:
        check_known(name, self.name, options, self.OPTIONS)
        ctx = options_context(name, options)
        self._url(ctx)
        self._timeout(ctx)

    @staticmethod
    def _url(ctx: RotationContext) -> str:
        url = ctx.options.get("url")
        if not url or not url.startswith(("https://", "http://")):
            raise ConfigError(f"rotator.url for {ctx.name} must be an http(s) URL")
        return url

    @staticmethod
    def _timeout(ctx: RotationContext) -> float:
        try:
            timeout = float(ctx.options.get("timeout", "30"))
        except ValueError:
            timeout = -1.0
        if not 0 < timeout <= 600:
            raise ConfigError(f"rotator.timeout for {ctx.name} must be seconds, "
                              "more than 0 and at most 600")
        return timeout

    def _call(self, ctx: RotationContext, action: str, value: str | None = None) -> Any:
        import urllib.error
        import urllib.request

        url = self._url(ctx)
        key = ctx.read(ctx.options.get("secret_name", "rotation_webhook_secret"))
        payload: dict[str, Any] = {"action": action, "org": ctx.org, "domain": ctx.domain,
                                   "name": ctx.name}
        if value is not None:
            payload["value"] = value
        body = json.dumps(payload, sort_keys=True).encode()
        req = urllib.request.Request(url, data=body, method="POST", headers={  # noqa: S310
            "Content-Type": "application/json",
            "X-Keysafe-Signature": sign(body, key, int(time.time()))})
        timeout = self._timeout(ctx)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - checked
                raw = resp.read(1 << 20)
        except urllib.error.HTTPError as exc:
            raise RotationError(f"rotation webhook for {ctx.name} answered {exc.code} to "
                                f"{action}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise RotationError(f"rotation webhook for {ctx.name} unreachable during "
                                f"{action}: {type(exc).__name__}") from None
        if action != "create":
            return {}  # a 2xx is the answer; any body is ignored
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise RotationError(f"rotation webhook for {ctx.name} answered create with a "
                                "body that is not JSON") from None

    def generate(self, ctx: RotationContext) -> str:
        answer = self._call(ctx, "create")
        value = answer.get("value") if isinstance(answer, dict) else None
        if not isinstance(value, str) or not value:
            raise RotationError(f"rotation webhook for {ctx.name} returned no value")
        return value

    def apply(self, ctx: RotationContext, new: str) -> None:
        return None  # the endpoint's create already made the key live

    def test(self, ctx: RotationContext, new: str) -> None:
        self._call(ctx, "test", new)

    def rollback(self, ctx: RotationContext, new: str) -> None:
        self._call(ctx, "rollback", new)

    def retire(self, ctx: RotationContext, old: str) -> None:
        self._call(ctx, "retire", old)


BUILTIN: dict[str, str] = {
    "random": "keysafe.rotation.rotators:RandomRotator",
    "manual": "keysafe.rotation.rotators:ManualRotator",
    "webhook": "keysafe.rotation.rotators:WebhookRotator",
    "postgres": "keysafe.rotation.postgres:PostgresPasswordRotator",
    "aws-iam": "keysafe.rotation.aws_iam:AwsIamAccessKeyRotator",
    "gcp-sa": "keysafe.rotation.gcp_sa:GcpServiceAccountKeyRotator",
}


def load_rotator(name: str) -> Rotator:
    """A rotator by built-in name or entry point (group ``keysafe.rotators``);
    ConfigError naming the choices when unknown. Never ``module:Class``: the name comes
    from a stored tag, and a tag must not choose a module to import."""
    import importlib

    target = BUILTIN.get(name)
    if target is None:
        from importlib.metadata import entry_points

        for ep in entry_points(group="keysafe.rotators"):
            if ep.name == name:
                obj = ep.load()
                return obj() if isinstance(obj, type) else obj  # type: ignore[no-any-return]
        raise ConfigError(f"unknown rotator {name!r}; built in: {', '.join(BUILTIN)} "
                          "(or a keysafe.rotators entry point)")
    module, _, cls = target.partition(":")
    try:
        obj = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load rotator {name!r}: {exc}") from None
    return obj() if isinstance(obj, type) else obj  # type: ignore[no-any-return]


def options_of(tags: Mapping[str, str]) -> dict[str, str]:
    """``rotator.<option>`` tags, without the prefix."""
    return {k[8:]: v for k, v in tags.items() if k.startswith("rotator.")}
