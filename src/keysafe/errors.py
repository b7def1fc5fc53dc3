"""One small error hierarchy for the library, the server and the CLI.

Every error carries a stable ``code`` (used by the HTTP error table and the CLI exit
codes) and a message that names the problem. No message ever contains a secret value:
errors are built from names, paths and versions only.
"""

from __future__ import annotations


class KeysafeError(Exception):
    """Base of every error keysafe raises on purpose."""

    code = "error"
    #: True when retrying the same call later may succeed (outages, throttling).
    retryable = False

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return self.message


class NotFound(KeysafeError):
    """The secret (or the version asked for) does not exist, or is deleted."""

    code = "not_found"


class Conflict(KeysafeError):
    """A check-and-set mismatch, or a state that forbids the operation."""

    code = "conflict"

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        current_version: int | None = None,
    ) -> None:
        super().__init__(message, path=path)
        self.current_version = current_version


class PermissionDenied(KeysafeError):
    """The caller may not do this."""

    code = "permission_denied"


class InvalidName(KeysafeError):
    """A name segment or path does not follow the naming rules."""

    code = "invalid_name"

    def __init__(self, message: str, *, segment: str | None = None) -> None:
        super().__init__(message)
        self.segment = segment


class InvalidValue(KeysafeError):
    """A value is empty, not text, or fails its catalog format check."""

    code = "invalid_value"


class ValueTooLarge(InvalidValue):
    """A value is over the configured (or the store's) size limit."""

    code = "value_too_large"


class KeyRejected(InvalidValue):
    """The provider refused the key when asked (``check_key``): it was not saved."""

    code = "key_rejected"


class Unsupported(KeysafeError):
    """The configured backend cannot do this (it lacks the capability)."""

    code = "unsupported"


class BackendUnavailable(KeysafeError):
    """The store could not be reached or throttled us; retrying later may work."""

    code = "backend_unavailable"
    retryable = True


class IntegrityError(KeysafeError):
    """Stored ciphertext or an audit record failed verification."""

    code = "integrity_error"


class ConfigError(KeysafeError):
    """Configuration is missing or wrong (a setting, a key file, a profile)."""

    code = "config_error"


class AuditError(KeysafeError):
    """The audit log could not record an event while audit is required."""

    code = "audit_error"


class RotationError(KeysafeError):
    """A rotation step failed; the current version is left as it was."""

    code = "rotation_error"


class RotationBusy(Conflict):
    """Another process is rotating this secret now (409 over HTTP, exit 5)."""

    code = "rotation_busy"


class ManualRotation(RotationError):
    """Only a person can issue this credential: a reminder was opened instead."""

    code = "rotation_manual"


class CredentialRejected(KeysafeError):
    """Raised by the caller's own code (not keysafe) inside ``SecretManager.use`` when a
    target system refused the credential: keysafe then reads the secret fresh (it may have
    been rotated) and retries once."""

    code = "credential_rejected"
