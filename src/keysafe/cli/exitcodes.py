"""Exit codes and error reporting: the one place a KeysafeError becomes an exit status.

Kept free of typer and rich so the fast ``get`` path can use it. Messages come from
the error itself, which never carries a value (errors.py); unexpected exceptions are
reported by type only, since their text was never vetted for secrets.
"""

from __future__ import annotations

import os
import sys
from typing import Final

OK: Final = 0
UNEXPECTED: Final = 1
USAGE: Final = 2
NOT_FOUND: Final = 3
PERMISSION_DENIED: Final = 4
CONFLICT: Final = 5
INTEGRITY: Final = 6
UNAVAILABLE: Final = 7
CONFIG: Final = 8
UNSUPPORTED: Final = 9
AUDIT: Final = 10
ROTATION: Final = 11
#: ``keysafe scan`` reported at least one secret (the convention of detect-secrets and
#: gitleaks, so pre-commit and CI treat it as a failure).
FINDINGS: Final = 1

#: KeysafeError.code -> exit status. Subclasses with their own code fall back along
#: their MRO (a future ``Throttled(BackendUnavailable)`` still exits 7).
BY_ERROR_CODE: Final[dict[str, int]] = {
    "invalid_name": USAGE,
    "invalid_value": USAGE,
    "value_too_large": USAGE,
    "not_found": NOT_FOUND,
    "permission_denied": PERMISSION_DENIED,
    "conflict": CONFLICT,
    "integrity_error": INTEGRITY,
    "backend_unavailable": UNAVAILABLE,
    "config_error": CONFIG,
    "unsupported": UNSUPPORTED,
    "audit_error": AUDIT,
    "rotation_error": ROTATION,
}

#: (exit status, meaning) for the docs and ``keysafe --help``.
TABLE: Final[tuple[tuple[int, str], ...]] = (
    (OK, "success"),
    (UNEXPECTED, "unexpected error, or a confirmation was declined"),
    (USAGE, "invalid input or usage: bad name, bad or too large value, bad option"),
    (NOT_FOUND, "the secret or version does not exist (or is deleted)"),
    (PERMISSION_DENIED, "permission denied"),
    (CONFLICT, "conflict: check-and-set mismatch, or a state that forbids the operation"),
    (INTEGRITY, "integrity error: stored data or the audit chain failed verification"),
    (UNAVAILABLE, "backend unavailable; retrying later may work"),
    (CONFIG, "configuration error (settings, master key, key file)"),
    (UNSUPPORTED, "the configured backend cannot do this"),
    (AUDIT, "the audit log could not record the operation, so it was refused"),
    (ROTATION, "a rotation step failed"),
    (130, "interrupted (Ctrl-C); long jobs such as migrate resume where they stopped"),
)


def exit_code_for(exc: BaseException) -> int:
    """The exit status for an exception: its KeysafeError code, else UNEXPECTED."""
    for cls in type(exc).__mro__:
        code = vars(cls).get("code")
        if isinstance(code, str) and code in BY_ERROR_CODE:
            return BY_ERROR_CODE[code]
    return UNEXPECTED


def emit_error(code: str, message: str, status: int, *, as_json: bool) -> int:
    """Write ``keysafe: error: message`` (or a JSON object) to stderr; return ``status``."""
    if as_json:
        import json

        line = json.dumps({"error": code, "message": message, "exit_code": status})
    else:
        line = f"keysafe: error: {message}"
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    return status


def report(exc: BaseException, *, as_json: bool) -> int:
    """Report any exception raised by a command; return its exit status.

    KeysafeError: its message (vetted: never a value). Anything else: its type, and the
    traceback only when KEYSAFE_DEBUG is set, because a foreign exception's text or
    locals may hold whatever the failing code was handling.
    """
    from keysafe.errors import KeysafeError

    if isinstance(exc, KeysafeError):
        return emit_error(exc.code, exc.message, exit_code_for(exc), as_json=as_json)
    if isinstance(exc, OSError) and exc.filename is not None:
        # The OS's own words about a file are safe and much more useful than a type.
        message = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    else:
        message = f"unexpected {type(exc).__name__} (set KEYSAFE_DEBUG=1 for details)"
    if os.environ.get("KEYSAFE_DEBUG"):
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    return emit_error("unexpected", message, UNEXPECTED, as_json=as_json)
