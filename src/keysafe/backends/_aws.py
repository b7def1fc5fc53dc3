"""What the two AWS backends share: clients built from settings and the standard AWS
sources, the one table that maps AWS errors onto keysafe's, and the encoding of the
small metadata records keysafe keeps in resource tags.

Private: ``aws_sm`` and ``aws_ssm`` are the public surface. boto3 and botocore are
imported only when a client is built (``pip install 'keysafe[aws]'``); they are untyped,
so clients are ``Any`` at this boundary.
"""

from __future__ import annotations

import os
import random
import string
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from keysafe.backends._sdk import require_sdk
from keysafe.backends.base import not_found
from keysafe.errors import (
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidName,
    InvalidValue,
    KeysafeError,
    PermissionDenied,
    ValueTooLarge,
)
from keysafe.models import MetadataUpdate

#: Tags keysafe owns on a secret or parameter; never shown as (or taken from) user tags.
TAG_PREFIX = "keysafe:"
#: AWS reserves this prefix; such tags are neither shown nor touched.
AWS_TAG_PREFIX = "aws:"

NOT_FOUND = frozenset({"ResourceNotFoundException", "ParameterNotFound",
                       "ParameterVersionNotFound"})
DENIED = frozenset({"AccessDeniedException", "AccessDenied", "UnauthorizedOperation",
                    "UnrecognizedClientException", "InvalidSignatureException",
                    "ExpiredTokenException", "InvalidClientTokenId", "SignatureDoesNotMatch",
                    "KMSAccessDeniedException"})
#: Errors that mean "not now": the request was refused before it changed anything.
THROTTLED = frozenset({"ThrottlingException", "Throttling", "TooManyUpdates",
                       "RequestLimitExceeded", "TooManyRequestsException",
                       "RequestThrottled", "RequestThrottledException", "SlowDown",
                       "PriorRequestNotComplete"})
#: Server-side failures after which the outcome of a write is unknown.
SERVER_FAULT = frozenset({"InternalServiceError", "InternalServerError",
                          "InternalFailure", "InternalServiceErrorException",
                          "ServiceUnavailable", "ServiceUnavailableException"})
EXISTS = frozenset({"ResourceExistsException", "ParameterAlreadyExists"})
QUOTA = frozenset({"LimitExceededException", "ParameterLimitExceeded",
                   "ParameterMaxVersionLimitExceeded", "TooManyTagsError",
                   "HierarchyLevelLimitExceededException"})


@dataclass(frozen=True)
class ClientOptions:
    """Where and how to reach AWS. Unset fields fall back to the environment:
    AWS_REGION / AWS_DEFAULT_REGION, AWS_ENDPOINT_URL (and the per-service
    AWS_ENDPOINT_URL_*), else LOCALSTACK_ENDPOINT, AWS_PROFILE, and the usual
    credential chain."""

    region: str | None = None
    endpoint_url: str | None = None
    profile_name: str | None = None
    max_attempts: int = 3
    connect_timeout: float = 3.0
    read_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("AWS max_attempts must be at least 1")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ConfigError("AWS connect_timeout and read_timeout must be positive")


_CLIENT_KEYS = frozenset(f.name for f in fields(ClientOptions))
_INT_KEYS = frozenset({"max_attempts"})
_FLOAT_KEYS = frozenset({"connect_timeout", "read_timeout"})


def split_options(options: Mapping[str, Any], own: frozenset[str],
                  store: str) -> tuple[ClientOptions, dict[str, Any]]:
    """Client options and the backend's own options from a profile's table; an unknown
    key is a ConfigError (a typo must not silently fall back to a default)."""
    unknown = sorted(set(options) - _CLIENT_KEYS - own)
    if unknown:
        allowed = ", ".join(sorted(_CLIENT_KEYS | own))
        raise ConfigError(f"{store}: unknown option {unknown[0]!r}; allowed: {allowed}")
    client: dict[str, Any] = {}
    for key in _CLIENT_KEYS & set(options):
        raw = options[key]
        try:
            if key in _INT_KEYS:
                client[key] = int(raw)
            elif key in _FLOAT_KEYS:
                client[key] = float(raw)
            else:
                client[key] = None if raw in (None, "") else str(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{store}: option {key} = {raw!r} is not valid") from None
    return ClientOptions(**client), {k: options[k] for k in own & set(options)}


@dataclass(frozen=True)
class Sdk:
    """botocore's exception classes, loaded with the client (never at import time)."""

    ClientError: type[Exception]
    BotoCoreError: type[Exception]
    connection_errors: tuple[type[Exception], ...]
    unsent_errors: tuple[type[Exception], ...]
    config_errors: tuple[type[Exception], ...]


def load_sdk() -> Sdk:
    require_sdk("boto3", "aws")
    exc = require_sdk("botocore.exceptions", "aws")
    return Sdk(
        ClientError=exc.ClientError,
        BotoCoreError=exc.BotoCoreError,
        # Any failure to get an answer: the request may or may not have been applied.
        connection_errors=(exc.HTTPClientError, exc.ConnectionError),
        # Failures before the request left this machine: it was certainly not applied.
        unsent_errors=(exc.EndpointConnectionError, exc.ConnectTimeoutError),
        config_errors=(exc.NoRegionError, exc.NoCredentialsError,
                       exc.PartialCredentialsError, exc.ProfileNotFound),
    )


# Building a boto3 session loads the service models (about 0.3 s); clients made from one
# session share them, so sessions are kept per (profile, region). Session.client is not
# thread-safe, hence the lock.
_sessions: dict[tuple[str | None, str | None], Any] = {}
_sessions_lock = threading.Lock()


#: boto3 service name -> its name in botocore's AWS_ENDPOINT_URL_<SERVICE> variables.
_SERVICE_IDS = {"secretsmanager": "SECRETS_MANAGER", "ssm": "SSM"}


def endpoint_for(service: str, opts: ClientOptions) -> str | None:
    """The endpoint option, else LocalStack's ``LOCALSTACK_ENDPOINT`` (specs 000 and 001
    set it for development) when no ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_<SERVICE>``
    is set (botocore reads those itself); None: AWS."""
    if opts.endpoint_url:
        return opts.endpoint_url
    own = "AWS_ENDPOINT_URL_" + _SERVICE_IDS.get(service, service.upper())
    if os.environ.get("AWS_ENDPOINT_URL") or os.environ.get(own):
        return None
    return os.environ.get("LOCALSTACK_ENDPOINT") or None


def client_for_pair(service: str, key: Mapping[str, Any], *, region: str | None = None,
                    config: Any = None) -> Any:
    """A boto3 client signing with the access key pair ``key`` (access_key_id,
    secret_access_key, session_token if temporary): not the process's own credentials.
    The region is ``region``, else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1; the
    endpoint as ``endpoint_for`` says (LocalStack, AWS_ENDPOINT_URL)."""
    boto3 = require_sdk("boto3", "aws")
    session = boto3.session.Session(
        aws_access_key_id=key["access_key_id"],
        aws_secret_access_key=key["secret_access_key"],
        aws_session_token=key.get("session_token") or None,
        region_name=(region or os.environ.get("AWS_REGION")
                     or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"))
    return session.client(service, endpoint_url=endpoint_for(service, ClientOptions()),
                          config=config)


def make_client(service: str, opts: ClientOptions, *, store: str,
                max_attempts: int | None = None) -> Any:
    """A boto3 client with bounded retries (botocore's "standard" mode: exponential
    backoff with jitter on throttling and connection errors) and bounded timeouts."""
    boto3 = require_sdk("boto3", "aws")
    config_mod = require_sdk("botocore.config", "aws")
    sdk = load_sdk()
    config = config_mod.Config(
        retries={"mode": "standard", "max_attempts": max_attempts or opts.max_attempts},
        connect_timeout=opts.connect_timeout, read_timeout=opts.read_timeout,
        user_agent_extra="keysafe")
    kwargs: dict[str, Any] = {"config": config}
    endpoint = endpoint_for(service, opts)
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    # botocore itself reads only AWS_DEFAULT_REGION; the AWS CLI and the other SDKs
    # (and spec 001's set-up) use AWS_REGION too.
    region = opts.region or os.environ.get("AWS_REGION") or None
    key = (opts.profile_name, region)
    try:
        with _sessions_lock:
            session = _sessions.get(key)
            if session is None:
                session = boto3.session.Session(profile_name=opts.profile_name,
                                                region_name=region)
                _sessions[key] = session
            return session.client(service, **kwargs)
    except sdk.config_errors as exc:
        raise ConfigError(f"{store}: {exc}; set the region (AWS_REGION or the profile's "
                          "region option) and credentials the usual AWS way") from exc


def error_code(sdk: Sdk, exc: BaseException) -> str | None:
    if isinstance(exc, sdk.ClientError):
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def is_unsent(sdk: Sdk, exc: BaseException) -> bool:
    """True when the request certainly changed nothing (never sent, or refused as
    throttled), so sending it again cannot duplicate a write."""
    return isinstance(exc, sdk.unsent_errors) or error_code(sdk, exc) in THROTTLED


def map_error(sdk: Sdk, exc: BaseException, *, store: str, action: str, path: str,
              version: int | None = None) -> KeysafeError | None:
    """The keysafe error for an AWS failure, or None if ``exc`` is not from botocore.

    AWS's own message is left out, except for access denials (it names the principal
    and the action, which is what an operator needs): validation messages echo request
    parameters, and a request parameter may be the secret value.
    """
    if isinstance(exc, sdk.ClientError):
        code = error_code(sdk, exc) or "UnknownError"
        status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get(
            "HTTPStatusCode", 0)
        if code in NOT_FOUND:
            return not_found(path, version)
        if code in DENIED:
            message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", ""))
            return PermissionDenied(f"{store} denied {action} on {path} ({code}: "
                                    f"{message[:300]})", path=path)
        if code in THROTTLED or code in SERVER_FAULT or (isinstance(status, int)
                                                         and status >= 500):
            return BackendUnavailable(f"{store} is throttling or failing ({code}) while "
                                      f"trying to {action} {path}; retry later", path=path)
        if code in EXISTS:
            return Conflict(f"{path} already exists in {store}", path=path)
        if code in QUOTA:
            return KeysafeError(f"{store} refused to {action} {path}: a quota or limit "
                                f"was reached ({code})", path=path)
        return KeysafeError(f"{store} refused to {action} {path} ({code})", path=path)
    if isinstance(exc, sdk.connection_errors):
        return BackendUnavailable(f"{store} is unreachable ({type(exc).__name__}) while "
                                  f"trying to {action} {path}; retry later", path=path)
    if isinstance(exc, sdk.config_errors):
        return ConfigError(f"{store}: {exc}")
    if isinstance(exc, sdk.BotoCoreError):
        return KeysafeError(f"{store}: {action} {path} failed ({type(exc).__name__})",
                            path=path)
    return None


class Refused(Exception):
    """An AWS error code the calling backend asked to handle itself."""

    def __init__(self, code: str, exc: BaseException) -> None:
        super().__init__(code)
        self.code = code
        self.exc = exc


class Caller:
    """Runs one SDK call and maps its failure; the one place foreign errors become
    keysafe errors. ``expect`` lists codes returned to the backend as ``Refused``."""

    def __init__(self, client: Any, sdk: Sdk, store: str) -> None:
        self.client = client
        self.sdk = sdk
        self.store = store

    def __call__(self, op: str, path: str, *, action: str | None = None,
                 version: int | None = None, expect: frozenset[str] = frozenset(),
                 secret: bool = False, **kwargs: Any) -> dict[str, Any]:
        """``secret=True`` marks a request that carries a value: its AWS error is then
        raised with no link to the original (neither cause nor context), because a
        printed traceback would show AWS's message, and that may echo the value."""
        try:
            result: dict[str, Any] = getattr(self.client, op)(**kwargs)
            return result
        except Exception as exc:
            code = error_code(self.sdk, exc)
            if code is not None and code in expect:
                raise Refused(code, exc) from None
            mapped = map_error(self.sdk, exc, store=self.store, action=action or op,
                               path=path, version=version)
            if mapped is None:
                raise
            if not secret:
                raise mapped from exc
        raise mapped  # outside the handler, so nothing is chained


def backoff(attempt: int, *, base: float = 0.05, cap: float = 2.0) -> float:
    """Full-jitter exponential backoff, in seconds, for attempt 0, 1, 2, ..."""
    return random.uniform(0, min(cap, base * 2**attempt))


def paginate(call: Callable[..., dict[str, Any]], key: str, token_in: str,
             token_out: str, **kwargs: Any) -> list[Any]:
    """Every item under ``key`` across pages (bounded: a store that repeats a token
    would otherwise loop forever)."""
    items: list[Any] = []
    token: str | None = None
    for _ in range(100_000):
        page = call(**kwargs, **({token_in: token} if token else {}))
        items.extend(page.get(key) or [])
        token = page.get(token_out) or None
        if not token:
            return items
    raise BackendUnavailable("listing did not finish: the store kept returning pages")


# -- checks before calling ---------------------------------------------------------------
def check_size(value: str, limit: int, store: str, path: str, hint: str = "") -> None:
    size = len(value.encode())
    if size > limit:
        raise ValueTooLarge(f"{store} holds at most {limit} bytes per value{hint}; the value "
                            f"for {path} is {size} bytes (nothing was written)", path=path)
    if size == 0:
        raise InvalidValue(f"{store} cannot store an empty value ({path})", path=path)


def check_user_tags(tags: Mapping[str, str] | None, store: str) -> None:
    for k, v in (tags or {}).items():
        if k.startswith((TAG_PREFIX, AWS_TAG_PREFIX)):
            raise InvalidValue(f"tag {k!r}: the prefixes {TAG_PREFIX!r} and "
                               f"{AWS_TAG_PREFIX!r} are reserved in {store}")
        if not 1 <= len(k) <= 128 or len(v) > 256:
            raise InvalidValue(f"tag {k!r}: {store} takes keys of 1-128 characters and "
                               "values of up to 256")


def invalid_name(store: str, path: str, rule: str) -> InvalidName:
    return InvalidName(f"{path!r} is not a valid {store} name: {rule}")


# -- metadata kept in tags -----------------------------------------------------------------
# AWS tag values take letters, digits, spaces and _ . : / = + - @ only. Actor names may
# hold anything, so other characters are written as =XX (their UTF-8 bytes); '=' itself
# is escaped too, which keeps the encoding reversible.
_TAG_SAFE = frozenset(string.ascii_letters + string.digits + "_.:/+-@")


def tag_text(s: str) -> str:
    return "".join(c if c in _TAG_SAFE else "".join(f"={b:02X}" for b in c.encode())
                   for c in s)


def untag_text(s: str) -> str:
    out = bytearray()
    i = 0
    while i < len(s):
        pair = s[i + 1:i + 3]
        if s[i] == "=" and len(pair) == 2 and all(c in string.hexdigits for c in pair):
            out.append(int(pair, 16))
            i += 3
            continue
        out.extend(s[i].encode())
        i += 1
    return out.decode(errors="replace")


def stamp(when: datetime, actor: str | None, *extra: str) -> str:
    """"<iso time> [extra ...] <actor>" within a tag value's 256 characters."""
    head = " ".join([when.astimezone(UTC).isoformat(), *extra])
    who = tag_text(actor or "")[: 255 - len(head)]
    if "=" in who[-2:]:  # never cut an escape in half
        who = who[: who.rindex("=")]
    return f"{head} {who}"


def parse_stamp(raw: str | None, extra: int = 0) -> tuple[datetime, list[str], str | None]:
    """Inverse of ``stamp``; raises ValueError on a malformed value."""
    if not raw:
        raise ValueError("empty stamp")
    parts = raw.split(" ", 1 + extra)
    when = parse_time(parts[0])
    if when is None:
        raise ValueError("no time")
    rest = parts[1:]
    actor = untag_text(rest[extra]) if len(rest) > extra and rest[extra] else None
    return when, rest[:extra], actor


def parse_time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    d = datetime.fromisoformat(raw)
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def aws_time(value: Any) -> datetime | None:
    """A timestamp from a boto3 response, as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), UTC)


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tag_dict(tags: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}


def user_tags(tags: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if not k.startswith((TAG_PREFIX, AWS_TAG_PREFIX))}


# Metadata fields without a native home in either store.
_TYPE = TAG_PREFIX + "type"
_ROTATION_DAYS = TAG_PREFIX + "rotation-days"
_EXPIRES_AT = TAG_PREFIX + "expires-at"
_LAST_ROTATED = TAG_PREFIX + "last-rotated"


def meta_tag_changes(meta: MetadataUpdate | None,
                     current: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """(tags to set, tag keys to remove) for a MetadataUpdate. The description is not
    here: both stores have a native field for it. Given tags replace the user's tags."""
    put: dict[str, str] = {}
    if meta is None:
        return put, []
    if meta.secret_type is not None:
        put[_TYPE] = tag_text(meta.secret_type)
    if meta.rotation_days is not None:
        put[_ROTATION_DAYS] = str(meta.rotation_days)
    if meta.expires_at is not None:
        put[_EXPIRES_AT] = meta.expires_at.astimezone(UTC).isoformat()
    if meta.last_rotated is not None:
        put[_LAST_ROTATED] = meta.last_rotated.astimezone(UTC).isoformat()
    remove: list[str] = []
    if meta.tags is not None:
        put.update(meta.tags)
        remove = [k for k in user_tags(current) if k not in meta.tags]
    return put, remove


def meta_fields(tags: Mapping[str, str]) -> dict[str, Any]:
    """SecretMetadata keyword arguments kept in tags (tolerant of values written by hand:
    a malformed one reads as unset rather than making the secret unreadable)."""
    out: dict[str, Any] = {"tags": user_tags(tags)}
    out["secret_type"] = untag_text(tags[_TYPE]) if _TYPE in tags else None
    try:
        out["rotation_days"] = int(tags[_ROTATION_DAYS]) if _ROTATION_DAYS in tags else None
    except ValueError:
        out["rotation_days"] = None
    for field, key in (("expires_at", _EXPIRES_AT), ("last_rotated", _LAST_ROTATED)):
        try:
            out[field] = parse_time(tags.get(key))
        except ValueError:
            out[field] = None
    return out
