"""keysafe: secrets management for multi-tenant applications.

The public surface is re-exported here; everything else is private and may change.
"""

from keysafe.config import Settings, load_settings
from keysafe.errors import (
    AuditError,
    BackendUnavailable,
    ConfigError,
    Conflict,
    IntegrityError,
    InvalidName,
    InvalidValue,
    KeysafeError,
    NotFound,
    PermissionDenied,
    RotationError,
    Unsupported,
    ValueTooLarge,
)
from keysafe.manager.aio import AsyncSecretManager
from keysafe.manager.audit import AuditFilter
from keysafe.manager.manager import SecretManager
from keysafe.models import AuditEvent, SecretMetadata, VersionInfo
from keysafe.naming import NamingTemplate, SecretRef

__version__ = "0.1.0"

__all__ = [
    "AsyncSecretManager",
    "AuditError",
    "AuditEvent",
    "AuditFilter",
    "BackendUnavailable",
    "ConfigError",
    "Conflict",
    "IntegrityError",
    "InvalidName",
    "InvalidValue",
    "KeysafeError",
    "NamingTemplate",
    "NotFound",
    "PermissionDenied",
    "RotationError",
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
