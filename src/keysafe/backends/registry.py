"""Opening the configured store: built-in backends plus the ``keysafe.backends``
entry-point group, so third parties add a store by installing a package."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from keysafe.backends.base import ForeignReadable, SecretBackend
from keysafe.config import Settings
from keysafe.errors import ConfigError, Unsupported
from keysafe.manager.audit import (
    AuditDB,
    AuditLog,
    JsonlSink,
    MemoryAuditStore,
    Sink,
    SQLiteAuditStore,
)


class Store(NamedTuple):
    backend: SecretBackend
    audit: AuditLog
    #: The PostgreSQL store that keeps what a cloud store cannot (the audit chain,
    #: tokens, job locks, change notices), from KEYSAFE_STATE_DATABASE_URL; else None.
    state: Any = None


def _audit_log(settings: Settings, store: Any) -> AuditLog:
    sinks: list[Sink] = [JsonlSink(settings.audit_file)] if settings.audit_file else []
    if settings.event_changes and settings.event_webhooks:
        from keysafe.rotation.events import ChangeEvents, Events

        sinks.append(ChangeEvents(Events.from_settings(settings)))
    return AuditLog(store, required=settings.audit_required, sinks=sinks)


def _open_sqlite(settings: Settings) -> Store:
    from keysafe.backends.sqlite import SQLiteBackend
    from keysafe.crypto.keys import load_keyring
    from keysafe.crypto.kms import kms_from_settings

    # A key file is created on first use only for local work; elsewhere a missing
    # key is a configuration error, never a silently new (and unbacked-up) key.
    create = settings.profile in ("local", "test")
    ring = load_keyring(settings.master_key, settings.key_file, create=create,
                        kms=kms_from_settings(settings))
    backend = SQLiteBackend(settings.sqlite_path, ring, max_versions=settings.max_versions,
                            synchronous=settings.sqlite_synchronous)
    return Store(backend, _audit_log(settings, SQLiteAuditStore(backend)))


def _open_postgres(settings: Settings) -> Store:
    from keysafe.backends.postgres import PostgresAuditStore, PostgresBackend

    backend = PostgresBackend.from_settings(settings)
    return Store(backend, _audit_log(settings, PostgresAuditStore(backend)))


def _open_memory(settings: Settings) -> Store:
    from keysafe.backends.memory import MemoryBackend

    return Store(MemoryBackend(max_versions=settings.max_versions),
                 _audit_log(settings, MemoryAuditStore()))


def _local_audit(settings: Settings) -> SQLiteAuditStore:
    """The audit chain for stores that cannot keep it: a local SQLite file."""
    return SQLiteAuditStore(AuditDB(settings.home / "audit.db"))


_BUILTIN: dict[str, Callable[[Settings], Store]] = {
    "sqlite": _open_sqlite,
    "memory": _open_memory,
    "postgres": _open_postgres,
}

#: Stores that live elsewhere: "module:Class", imported only when chosen. Each class
#: has ``from_settings(settings)``; its SDK is an optional extra named here.
EXTERNAL: dict[str, tuple[str, str]] = {
    "aws-sm": ("keysafe.backends.aws_sm:AwsSecretsManagerBackend", "aws"),
    "aws-ssm": ("keysafe.backends.aws_ssm:AwsParameterStoreBackend", "aws"),
    "vault": ("keysafe.backends.vault:VaultBackend", "vault"),
    "gcp": ("keysafe.backends.gcp:GcpSecretManagerBackend", "gcp"),
    "azure": ("keysafe.backends.azure:AzureKeyVaultBackend", "azure"),
    "env": ("keysafe.backends.env:EnvBackend", ""),
    "chain": ("keysafe.backends.chain:ChainBackend", ""),
}


#: The built-in stores that read other tools' secrets (ForeignReadable).
FOREIGN_READERS = ("aws-sm", "aws-ssm", "vault", "gcp", "azure")


def _external_class(name: str) -> Any:
    import importlib

    target, _extra = EXTERNAL[name]
    module, _, cls_name = target.partition(":")
    return getattr(importlib.import_module(module), cls_name)


def _open_external(name: str, settings: Settings) -> Store:
    return _with_state(_external_class(name).from_settings(settings), settings)


def _with_state(backend: SecretBackend, settings: Settings) -> Store:
    """A store that keeps no state of its own: its audit chain in KEYSAFE_HOME, or,
    with KEYSAFE_STATE_DATABASE_URL, in that PostgreSQL database (shared by every
    replica, with the tokens, job locks and change notices)."""
    if not settings.state_database_url:
        return Store(backend, _audit_log(settings, _local_audit(settings)))
    from keysafe.backends.postgres import PostgresAuditStore, PostgresBackend

    try:
        state = PostgresBackend.from_settings(
            settings.with_overrides(database_url=settings.state_database_url))
    except BaseException:
        backend.close()
        raise
    return Store(backend, _audit_log(settings, PostgresAuditStore(state)), state)


def _plugin_class(name: str) -> Any:
    from importlib.metadata import entry_points

    for ep in entry_points(group="keysafe.backends"):
        if ep.name == name:
            return ep.load()
    return None


def open_foreign(settings: Settings) -> ForeignReadable:
    """The store the settings name, to read secrets other tools wrote there (``keysafe
    import --from-store``), with no audit log of its own. Unsupported, before anything
    is built, for a store that cannot read them (sqlite, postgres, memory, env, chain,
    or a plugin without ``foreign_names`` and ``read_foreign``)."""
    name = settings.backend
    cls = _external_class(name) if name in EXTERNAL else _plugin_class(name)
    if cls is None or not issubclass(cls, ForeignReadable):
        raise Unsupported(f"the {name} backend holds only keysafe's own secrets; "
                          f"--from-store reads {', '.join(FOREIGN_READERS)}")
    backend: ForeignReadable = cls.from_settings(settings)
    return backend


def available() -> list[str]:
    from importlib.metadata import entry_points

    names = set(_BUILTIN) | set(EXTERNAL)
    names.update(ep.name for ep in entry_points(group="keysafe.backends"))
    return sorted(names)


def open_store(settings: Settings) -> Store:
    """The backend and audit log the settings name. Raises ConfigError for an unknown
    backend, with the names that are available."""
    opener = _BUILTIN.get(settings.backend)
    if opener is not None:
        # These keep their audit chain and tokens themselves: KEYSAFE_STATE_DATABASE_URL
        # is not theirs (a migration from one of them may run with it set for the other).
        return opener(settings)
    if settings.backend in EXTERNAL:
        return _open_external(settings.backend, settings)

    cls = _plugin_class(settings.backend)
    if cls is not None:
        return _with_state(cls.from_settings(settings), settings)
    raise ConfigError(f"unknown backend {settings.backend!r}; available: "
                      f"{', '.join(available())}")
