"""Settings: ``KEYSAFE_*`` environment variables over an optional ``keysafe.toml``,
over defaults. Nothing is built at import time; ``load_settings()`` reads the sources
when called and remembers where every value came from (``keysafe doctor`` shows it).
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from keysafe.errors import ConfigError

#: Environment spellings and the backend profile each selects.
ENV_PROFILES: Mapping[str, str] = {
    "local": "local",
    "dev": "development",
    "development": "development",
    "stage": "staging",
    "staging": "staging",
    "prod": "production",
    "production": "production",
    "test": "test",
}


def profile_for(env: str) -> str:
    """The backend profile an environment name selects (``prod`` -> ``production``)."""
    return ENV_PROFILES.get(env.lower(), env.lower())


class _Fields(NamedTuple):
    env: str = "local"
    app: str = "keysafe"
    naming_template: str = "{app}/{env}/{org}/{domain}/{name}"
    default_domain: str = "shared"
    default_org: str | None = None
    backend: str = "sqlite"
    home: Path = None  # type: ignore[assignment]  # ~/.keysafe: see Settings.__new__
    master_key: str | None = None
    master_key_file: Path | None = None
    master_key_kms: str | None = None
    master_key_kms_endpoint: str | None = None
    database_url: str | None = None
    state_database_url: str | None = None
    db_pool_max: int = 10
    db_auto_upgrade: bool = True
    max_value_bytes: int = 64 * 1024
    max_versions: int = 10
    recovery_window_days: int = 7
    cache_ttl: float = 30.0
    cache_max_entries: int = 10_000
    cache_stale_if_error: float = 0.0
    audit_required: bool = True
    audit_reads: bool = True
    audit_file: Path | None = None
    sqlite_synchronous: str = "FULL"
    catalog_file: Path | None = None
    actor: str | None = None
    server_url: str | None = None
    # -- server (keysafe serve) --
    host: str = "127.0.0.1"
    port: int = 8787
    cors_origins: str = ""
    ui_frame_ancestors: str = "'none'"
    max_body_bytes: int = 256 * 1024
    auth_fail_limit: int = 20
    auth_fail_window: float = 60.0
    jwt_hs256_secret: str | None = None
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_org_claim: str = "org"
    jwt_role_claim: str = "role"
    jwt_env_claim: str | None = None
    jwt_trust_file: str | None = None
    server_cache_ttl: float = 5.0
    server_workers: int = 1
    purge_interval: float = 3600.0
    rotation_interval: float = 3600.0
    rotation_grace_hours: float = 24.0
    rotation_overrides: str = ""
    rotation_window: str = ""
    event_webhooks: str = ""
    audit_anchor_interval: float = 0.0
    audit_anchor_file: str | None = None
    event_webhook_secret: str | None = None
    #: Also send secret.* events for every change (rotation.events.ChangeEvents).
    event_changes: bool = False
    key_checks: bool = True
    key_check_timeout: float = 5.0
    key_check_rate: int = 30
    key_check_interval: float = 0.0
    access_report_interval: float = 0.0
    backend_options: dict[str, Any] = None  # type: ignore[assignment]  # a new dict each
    config_file: Path | None = None
    sources: dict[str, str] = None  # type: ignore[assignment]  # a new dict each


class Settings(_Fields):
    """Effective configuration. ``sources`` maps a field to where its value came from.

    A ``typing.NamedTuple`` (built by keyword), not a dataclass: every keysafe
    process loads it, and the dataclasses machinery costs a fresh ``keysafe get`` about
    a fifth of its start-up. ``home`` defaults to ``~/.keysafe``; secret settings are
    left out of the repr."""

    __slots__ = ()

    def __new__(cls, *whole: Any, **values: Any) -> Settings:
        if whole:  # every field in order (copy and pickle build it so)
            return super().__new__(cls, *whole, **values)
        if values.get("home") is None:
            values["home"] = Path.home() / ".keysafe"
        for name in ("backend_options", "sources"):
            if values.get(name) is None:
                values[name] = {}
        return super().__new__(cls, **values)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={_masked(k, v)!r}"
                          for k, v in zip(self._fields, self, strict=True)
                          if k not in _NOT_SHOWN)
        return f"Settings({shown})"

    @property
    def profile(self) -> str:
        return profile_for(self.env)

    @property
    def sqlite_path(self) -> Path:
        return self.home / "keysafe.db"

    @property
    def server_db_path(self) -> Path:
        return self.home / "server.db"

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def key_file(self) -> Path:
        return self.master_key_file or (self.home / "master.key")

    def with_overrides(self, **changes: Any) -> Settings:
        sources = dict(self.sources)
        for k in changes:
            sources[k] = "argument"
        return self._replace(sources=sources, **changes)

    def describe(self) -> list[tuple[str, str, str]]:
        """(setting, shown value, source) rows; secret settings are masked."""
        rows = []
        for name, v in zip(self._fields, self, strict=True):
            if name in ("sources", "backend_options"):
                continue
            if name in _SECRET_FIELDS and v:
                shown = "******** (set)"
            elif v is None:
                shown = "-"
            else:
                shown = str(_masked(name, v))
            rows.append((name, shown, self.sources.get(name, "default")))
        if self.backend_options:
            rows.append(("backend_options", ", ".join(sorted(self.backend_options)),
                         self.sources.get("backend_options", "default")))
        return rows


#: Stores that keep their audit chain and tokens themselves (KEYSAFE_STATE_DATABASE_URL
#: is not for them).
SELF_CONTAINED = frozenset({"sqlite", "memory", "postgres"})


def uses_state_database(settings: Settings) -> bool:
    """Whether these settings keep keysafe's own state in KEYSAFE_STATE_DATABASE_URL."""
    return bool(settings.state_database_url) and settings.backend not in SELF_CONTAINED


_SECRET_FIELDS = frozenset({"master_key", "database_url", "state_database_url",
                            "jwt_hs256_secret",
                            "event_webhook_secret"})
_NOT_SHOWN = _SECRET_FIELDS | {"backend_options"}
#: Settings holding URLs that may carry a credential (a Slack-style webhook's path, a
#: query token, a user:password@): shown as scheme://host only.
_URL_LIST_FIELDS = frozenset({"event_webhooks", "server_url"})


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, with "/..." when anything followed: what
    may be shown of a URL that can carry a credential in its user info, path or query."""
    from urllib.parse import urlsplit

    try:
        u = urlsplit(url.strip())
        host = u.hostname or "?"
        port = f":{u.port}" if u.port else ""
    except ValueError:
        return "(unparseable URL)"
    rest = "/..." if (u.path not in ("", "/") or u.query or u.fragment or u.username
                      or u.password) else ""
    return f"{u.scheme}://{host}{port}{rest}" if u.scheme else "(unparseable URL)"


def _masked(name: str, v: Any) -> Any:
    if name in _URL_LIST_FIELDS and v:
        return ", ".join(url_origin(u) for u in str(v).split(",") if u.strip())
    return v

#: Spec 003's SECRETS_BACKEND values -> keysafe backends.
_SECRETS_BACKENDS: Mapping[str, str] = {"env": "env", "aws": "aws-sm", "gcp": "gcp",
                                        "vault": "vault", "azure": "azure",
                                        "sqlite": "sqlite", "local": "sqlite"}

#: Settings a keysafe.toml may not set (field -> the environment variable that can).
_ENV_ONLY: Mapping[str, str] = {"server_url": "KEYSAFE_SERVER_URL"}

# Environment variable -> field. KEYSAFE_ENV falls back to ENVIRONMENT (specs 000, 001).
_ENV_VARS: Mapping[str, str] = {
    "KEYSAFE_ENV": "env",
    "KEYSAFE_APP": "app",
    "KEYSAFE_NAMING_TEMPLATE": "naming_template",
    "KEYSAFE_DEFAULT_DOMAIN": "default_domain",
    "KEYSAFE_DEFAULT_ORG": "default_org",
    "KEYSAFE_BACKEND": "backend",
    "KEYSAFE_HOME": "home",
    "KEYSAFE_MASTER_KEY": "master_key",
    "KEYSAFE_MASTER_KEY_FILE": "master_key_file",
    "KEYSAFE_MASTER_KEY_KMS": "master_key_kms",
    "KEYSAFE_MASTER_KEY_KMS_ENDPOINT": "master_key_kms_endpoint",
    "KEYSAFE_DATABASE_URL": "database_url",
    "KEYSAFE_STATE_DATABASE_URL": "state_database_url",
    "KEYSAFE_DB_POOL_MAX": "db_pool_max",
    "KEYSAFE_DB_AUTO_UPGRADE": "db_auto_upgrade",
    "KEYSAFE_MAX_VALUE_BYTES": "max_value_bytes",
    "KEYSAFE_MAX_VERSIONS": "max_versions",
    "KEYSAFE_RECOVERY_WINDOW_DAYS": "recovery_window_days",
    "KEYSAFE_CACHE_TTL": "cache_ttl",
    "KEYSAFE_CACHE_MAX_ENTRIES": "cache_max_entries",
    "KEYSAFE_CACHE_STALE_IF_ERROR": "cache_stale_if_error",
    "KEYSAFE_AUDIT_REQUIRED": "audit_required",
    "KEYSAFE_AUDIT_READS": "audit_reads",
    "KEYSAFE_AUDIT_FILE": "audit_file",
    "KEYSAFE_SQLITE_SYNCHRONOUS": "sqlite_synchronous",
    "KEYSAFE_CATALOG_FILE": "catalog_file",
    "KEYSAFE_ACTOR": "actor",
    "KEYSAFE_SERVER_URL": "server_url",
    "KEYSAFE_HOST": "host",
    "KEYSAFE_PORT": "port",
    "KEYSAFE_CORS_ORIGINS": "cors_origins",
    "KEYSAFE_UI_FRAME_ANCESTORS": "ui_frame_ancestors",
    "KEYSAFE_MAX_BODY_BYTES": "max_body_bytes",
    "KEYSAFE_AUTH_FAIL_LIMIT": "auth_fail_limit",
    "KEYSAFE_AUTH_FAIL_WINDOW": "auth_fail_window",
    "KEYSAFE_JWT_HS256_SECRET": "jwt_hs256_secret",
    "KEYSAFE_JWT_JWKS_URL": "jwt_jwks_url",
    "KEYSAFE_JWT_AUDIENCE": "jwt_audience",
    "KEYSAFE_JWT_ISSUER": "jwt_issuer",
    "KEYSAFE_JWT_ORG_CLAIM": "jwt_org_claim",
    "KEYSAFE_JWT_ROLE_CLAIM": "jwt_role_claim",
    "KEYSAFE_JWT_ENV_CLAIM": "jwt_env_claim",
    "KEYSAFE_JWT_TRUST_FILE": "jwt_trust_file",
    "KEYSAFE_SERVER_CACHE_TTL": "server_cache_ttl",
    "KEYSAFE_SERVER_WORKERS": "server_workers",
    "KEYSAFE_PURGE_INTERVAL": "purge_interval",
    "KEYSAFE_ROTATION_INTERVAL": "rotation_interval",
    "KEYSAFE_ROTATION_GRACE_HOURS": "rotation_grace_hours",
    "KEYSAFE_ROTATION_OVERRIDES": "rotation_overrides",
    "KEYSAFE_ROTATION_WINDOW": "rotation_window",
    "KEYSAFE_EVENT_WEBHOOKS": "event_webhooks",
    "KEYSAFE_AUDIT_ANCHOR_INTERVAL": "audit_anchor_interval",
    "KEYSAFE_AUDIT_ANCHOR_FILE": "audit_anchor_file",
    "KEYSAFE_EVENT_WEBHOOK_SECRET": "event_webhook_secret",
    "KEYSAFE_EVENT_CHANGES": "event_changes",
    "KEYSAFE_KEY_CHECKS": "key_checks",
    "KEYSAFE_KEY_CHECK_TIMEOUT": "key_check_timeout",
    "KEYSAFE_KEY_CHECK_RATE": "key_check_rate",
    "KEYSAFE_KEY_CHECK_INTERVAL": "key_check_interval",
    "KEYSAFE_ACCESS_REPORT_INTERVAL": "access_report_interval",
}
# Each setting's declared type, as written (NamedTuple keeps it as a ForwardRef).
_TYPES: dict[str, str] = {k: getattr(t, "__forward_arg__", str(t))
                          for k, t in _Fields.__annotations__.items()}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, raw: Any, source: str) -> Any:
    kind = _TYPES[name]
    try:
        if kind.startswith("bool"):
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
            raise ValueError("expected true or false")
        if kind.startswith("int"):
            if isinstance(raw, bool | float):
                raise ValueError("expected a whole number")
            value = int(raw)
            if value < 0:
                raise ValueError("must not be negative")
            return value
        if kind.startswith("float"):
            if isinstance(raw, bool):
                raise ValueError("expected a number")
            f = float(raw)
            if not math.isfinite(f):
                raise ValueError("must be a finite number")
            if f < 0:
                raise ValueError("must not be negative")
            return f
        if kind.startswith("Path"):
            return Path(os.path.expanduser(str(raw))) if raw not in ("", None) else None
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name} from {source}: {raw!r} is not valid ({exc})") from None


def coerce_setting(name: str, raw: Any, source: str) -> Any:
    """``raw`` as setting ``name``'s type (``backend_options``: a table of options);
    ConfigError naming the setting and ``source`` when it is unknown or unusable."""
    if name == "backend_options":
        if not isinstance(raw, Mapping):
            raise ConfigError(f"setting backend_options from {source} must be a mapping "
                              f"of option names to values, not {type(raw).__name__}")
        return dict(raw)
    if name not in _TYPES or name in ("sources", "config_file"):
        raise ConfigError(f"unknown setting {name!r} (from {source})")
    if not isinstance(raw, str | int | float | os.PathLike):
        raise ConfigError(f"setting {name} from {source} must be text, a number or a "
                          f"path, not {type(raw).__name__}")
    return _coerce(name, raw, source)


def _find_config_file(environ: Mapping[str, str], home: Path) -> Path | None:
    explicit = environ.get("KEYSAFE_CONFIG")
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise ConfigError(f"KEYSAFE_CONFIG names {p}, which is not a file")
        return p
    for candidate in (Path.cwd() / "keysafe.toml", home / "keysafe.toml"):
        if candidate.is_file():
            return candidate
    return None


def load_settings(
    environ: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Build Settings from the environment, the config file and defaults.

    Raises ConfigError naming the setting and source when a value is unusable.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    home_raw = environ.get("KEYSAFE_HOME")
    home = Path(home_raw).expanduser() if home_raw else Settings().home
    cfg_path = _find_config_file(environ, home)
    profile_options: dict[str, Any] = {}
    if cfg_path is not None:
        import tomllib

        try:
            data = tomllib.loads(cfg_path.read_text())
        except (OSError, ValueError) as exc:  # TOMLDecodeError is a ValueError
            raise ConfigError(f"cannot read config file {cfg_path}: {exc}") from None
        section = data.get("keysafe", data)
        if not isinstance(section, dict):
            raise ConfigError(f"config file {cfg_path}: [keysafe] must be a table")
        section = dict(section)
        profiles = section.pop("profiles", None)
        top = data.get("profiles") if "keysafe" in data else None
        if profiles is not None and top is not None:
            raise ConfigError(f"config file {cfg_path}: profiles given twice "
                              "([keysafe.profiles] and [profiles])")
        profiles = profiles if profiles is not None else (top or {})
        extra = set(data) - {"keysafe", "profiles"} if "keysafe" in data else set()
        if extra:
            raise ConfigError(f"config file {cfg_path}: unknown table {sorted(extra)[0]!r}")
        for key, raw in section.items():
            if key not in _TYPES or key in ("sources", "config_file", "backend_options"):
                raise ConfigError(f"config file {cfg_path}: unknown setting {key!r}")
            if key in _ENV_ONLY:
                raise ConfigError(f"config file {cfg_path}: {key} is taken only from "
                                  f"{_ENV_ONLY[key]}: a file checked out with a project "
                                  "must not send values and tokens to another server")
            values[key] = _coerce(key, raw, str(cfg_path))
            sources[key] = f"file {cfg_path}"
        profile_options = dict(profiles) if isinstance(profiles, dict) else {}

    for var, key in _ENV_VARS.items():
        if var in environ and environ[var] != "":
            values[key] = _coerce(key, environ[var], var)
            sources[key] = f"env {var}"
    if "env" not in values and environ.get("ENVIRONMENT"):
        values["env"] = _coerce("env", environ["ENVIRONMENT"], "ENVIRONMENT")
        sources["env"] = "env ENVIRONMENT"
    legacy = environ.get("SECRETS_BACKEND", "").strip().lower()
    if (legacy and not environ.get("KEYSAFE_BACKEND") and not values.get("database_url")
            and "backend" not in overrides):
        # Spec 003's own switch (env, aws, gcp, vault; azure, sqlite, local too), read as
        # KEYSAFE_BACKEND.
        if legacy not in _SECRETS_BACKENDS:
            raise ConfigError(f"SECRETS_BACKEND={legacy!r} is not one of "
                              f"{', '.join(sorted(_SECRETS_BACKENDS))}: set KEYSAFE_BACKEND")
        values["backend"] = _SECRETS_BACKENDS[legacy]
        sources["backend"] = "env SECRETS_BACKEND"

    for key, raw in overrides.items():
        if key not in _TYPES:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = raw
        sources[key] = "argument"

    env = str(values.get("env", "local")).lower()
    values["env"] = env
    # The environment's profile may name a backend and its options (spec 000/001:
    # local uses the embedded store, production uses the team's cloud store).
    prof = profile_options.get(profile_for(env)) or profile_options.get(env) or {}
    if prof:
        if not isinstance(prof, dict):
            raise ConfigError(f"config file {cfg_path}: profile {env!r} must be a table")
        prof = dict(prof)
        # The profile's backend beats the file's plain default, not an explicit
        # KEYSAFE_BACKEND or argument.
        backend_src = sources.get("backend", "")
        if "backend" in prof and not backend_src.startswith(("env ", "argument")):
            values["backend"] = str(prof.pop("backend"))
            sources["backend"] = f"file {cfg_path} [profiles.{profile_for(env)}]"
        else:
            prof.pop("backend", None)
        given = values.get("backend_options") or {}
        values["backend_options"] = {**prof, **given}  # an argument's options win
        sources["backend_options"] = (f"file {cfg_path} [profiles.{profile_for(env)}]"
                                      + (" and argument" if given else ""))
    if values.get("database_url") and "backend" not in values:
        # A database URL alone selects the PostgreSQL store (no KEYSAFE_BACKEND needed).
        values["backend"] = "postgres"
        sources["backend"] = f"implied by database_url ({sources['database_url']})"
    if cfg_path is not None:
        values["config_file"] = cfg_path
        sources["config_file"] = "found"
    sync = str(values.get("sqlite_synchronous", "FULL")).upper()
    if sync not in ("FULL", "NORMAL", "EXTRA"):
        raise ConfigError(f"setting sqlite_synchronous from "
                          f"{sources.get('sqlite_synchronous', 'argument')}: {sync!r} is not "
                          "valid (use FULL, EXTRA or NORMAL)")
    if "sqlite_synchronous" in values:
        values["sqlite_synchronous"] = sync
    if "key_check_timeout" in values and not values["key_check_timeout"] > 0:
        raise ConfigError(f"setting key_check_timeout from "
                          f"{sources.get('key_check_timeout', 'argument')}: must be more "
                          "than 0 seconds")
    settings = Settings(**values, sources=sources)
    if not settings.server_url:  # through a server, the CLI never opens the home
        _check_home(Path(settings.home), sources.get("home"))
    return settings


def _check_home(home: Path, source: str | None) -> None:
    """ConfigError when ``home``, or the directory it would be created in, is not a
    directory: it could never hold the key file or the store. One stat when it is a
    directory; anything else the OS refuses (permissions) is left to whoever opens it."""
    at = home
    while True:
        try:
            st = os.stat(at)
            break
        except (FileNotFoundError, NotADirectoryError):
            if at.parent == at:
                return
            at = at.parent
        except (OSError, ValueError):
            return
    if stat.S_ISDIR(st.st_mode):
        return
    what = (f"the default KEYSAFE_HOME {home}" if source is None
            else f"KEYSAFE_HOME {home}" if source == "env KEYSAFE_HOME"
            else f"home {home} (from {source})")
    why = "is not a directory" if at == home else f"cannot be created: {at} is not a directory"
    raise ConfigError(f"{what} {why}: set KEYSAFE_HOME to a directory (created on first "
                      "use if missing)")
