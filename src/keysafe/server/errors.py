"""The one table from keysafe errors to HTTP statuses, rendered as RFC 9457
problem+json. Messages are the errors' own (they never hold a value)."""

from __future__ import annotations

import json
from typing import Any

from keysafe import errors as e

#: error class -> (HTTP status, title). First match in MRO order wins.
ERROR_TABLE: dict[type[e.KeysafeError], tuple[int, str]] = {
    e.NotFound: (404, "Not found"),
    e.Conflict: (409, "Conflict"),
    e.PermissionDenied: (403, "Forbidden"),
    e.InvalidName: (422, "Invalid name"),
    e.ValueTooLarge: (413, "Value too large"),
    e.KeyRejected: (422, "Key rejected by its provider"),
    e.InvalidValue: (422, "Invalid value"),
    e.Unsupported: (501, "Not supported by this backend"),
    e.BackendUnavailable: (503, "Backend unavailable"),
    e.AuditError: (503, "Audit log unavailable"),
    e.IntegrityError: (500, "Integrity error"),
    e.ConfigError: (500, "Configuration error"),
    e.ManualRotation: (409, "Rotation needs a person"),
    e.RotationError: (500, "Rotation failed"),
    e.KeysafeError: (500, "Error"),
}
PROBLEM = "application/problem+json"


def status_for(exc: e.KeysafeError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return 500, "Error"


def problem(status: int, title: str, detail: str, *, code: str,
            request_id: str | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"type": f"https://keysafe.dev/problems/{code}", "title": title,
                            "status": status, "detail": detail, "code": code}
    if request_id:
        body["request_id"] = request_id
    body.update(extra)
    return json.dumps(body).encode()


#: Seconds a client should wait before retrying a request the store could not serve
#: (an outage or a database failover).
RETRY_AFTER_SECONDS = 2


def retry_headers(exc: e.KeysafeError) -> dict[str, str]:
    """``Retry-After`` for errors worth retrying (the store or audit log unavailable)."""
    return {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.retryable else {}


def from_exception(exc: e.KeysafeError, request_id: str | None) -> tuple[int, bytes]:
    status, title = status_for(exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, e.Conflict) and exc.current_version is not None:
        extra["current_version"] = exc.current_version
    if status >= 500 and not isinstance(exc, e.BackendUnavailable | e.AuditError):
        detail = "internal error; see the server log with this request id"
    else:
        detail = exc.message
    return status, problem(status, title, detail, code=exc.code, request_id=request_id,
                           **extra)
