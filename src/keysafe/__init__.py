"""keysafe: secrets management for multi-tenant applications.

The public surface is re-exported here; everything else is private and may change.
"""

from typing import TYPE_CHECKING

from keysafe.config import Settings, load_settings
from keysafe.errors import (
    AuditError,
    BackendUnavailable,
    ConfigError,
    Conflict,
    CredentialRejected,
    IntegrityError,
    InvalidName,
    InvalidValue,
    KeyRejected,
    KeysafeError,
    NotFound,
    PermissionDenied,
    RotationError,
    Unsupported,
    ValueTooLarge,
)
from keysafe.manager.audit import AuditFilter
from keysafe.manager.manager import SecretManager
from keysafe.models import AuditEvent, SecretMetadata, VersionInfo
from keysafe.naming import NamingTemplate, SecretRef
from keysafe.secret import Secret

if TYPE_CHECKING:
    from keysafe.aio_client import AsyncKeysafeClient
    from keysafe.client import KeysafeClient
    from keysafe.manager.aio import AsyncSecretManager

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # asyncio costs tens of milliseconds to import; a CLI `get` should not pay for it.
    if name == "AsyncSecretManager":
        from keysafe.manager.aio import AsyncSecretManager

        return AsyncSecretManager
    if name == "KeysafeClient":
        from keysafe.client import KeysafeClient

        return KeysafeClient
    if name == "AsyncKeysafeClient":
        from keysafe.aio_client import AsyncKeysafeClient

        return AsyncKeysafeClient
    raise AttributeError(f"module 'keysafe' has no attribute {name!r}")

__all__ = [
    "AsyncKeysafeClient",
    "AsyncSecretManager",
    "AuditError",
    "AuditEvent",
    "AuditFilter",
    "BackendUnavailable",
    "ConfigError",
    "Conflict",
    "CredentialRejected",
    "IntegrityError",
    "InvalidName",
    "InvalidValue",
    "KeyRejected",
    "KeysafeClient",
    "KeysafeError",
    "NamingTemplate",
    "NotFound",
    "PermissionDenied",
    "RotationError",
    "Secret",
    "SecretManager",
    "SecretMetadata",
    "SecretRef",
    "Settings",
    "Unsupported",
    "ValueTooLarge",
    "VersionInfo",
    "__version__",
    "load_settings",
]
