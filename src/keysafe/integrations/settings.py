"""A pydantic-settings source: ``BaseSettings`` fields read from keysafe.

```python
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from keysafe.integrations.settings import KeysafeSettingsSource

class Settings(BaseSettings):
    model_config = SettingsConfigDict(keysafe_org="acme-corp", keysafe_domain="llm")
    openai_api_key: SecretStr                      # secret openai_api_key
    database_url: str = Field(json_schema_extra={"keysafe": "postgres_url"})
    debug: bool = Field(False, json_schema_extra={"keysafe": False})  # never from keysafe

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, KeysafeSettingsSource(settings_cls),
                dotenv_settings, file_secret_settings)
```

A field's secret is, in order: ``json_schema_extra={"keysafe": "name"}`` on the field
(``False`` leaves the field out), the ``keysafe_names`` mapping in the model config
(field -> name or ``False``), else the field's own name. The org and domain come from
the constructor, else ``keysafe_org`` / ``keysafe_domain`` in the model config. A
secret that does not exist is simply absent (the next source or the default applies).
Needs ``pip install 'keysafe[settings]'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from keysafe.errors import ConfigError, NotFound

try:
    from pydantic.fields import FieldInfo
    from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
except ImportError:  # pragma: no cover - depends on the install
    raise ConfigError("keysafe.integrations.settings needs pydantic-settings, which is not "
                      "installed; install it with: pip install 'keysafe[settings]'") from None

if TYPE_CHECKING:
    from keysafe.manager.manager import SecretManager
    from keysafe.workloads.sources import Source

__all__ = ["KeysafeSettingsSource"]


class KeysafeSettingsSource(PydanticBaseSettingsSource):
    """Settings fields from keysafe secrets (see the module docstring).

    ``manager``: a SecretManager (default: ``SecretManager.from_env()``, built on first
    use); or ``source``: a ``keysafe.workloads.sources`` source such as ServerSource,
    to read through a keysafe server. Raises ConfigError when no org is configured;
    other keysafe errors (the store unavailable, permission denied) propagate, and
    never carry a value.
    """

    def __init__(self, settings_cls: type[BaseSettings], *, org: str | None = None,
                 domain: str | None = None, names: Mapping[str, str | bool] | None = None,
                 manager: SecretManager | None = None, source: Source | None = None) -> None:
        super().__init__(settings_cls)
        cfg: Mapping[str, Any] = self.config
        self.org = org or cfg.get("keysafe_org")
        self.domain = domain or cfg.get("keysafe_domain")
        if not self.org:
            raise ConfigError(f"KeysafeSettingsSource for {settings_cls.__name__} needs an "
                              "org: pass org=... or set keysafe_org in model_config")
        self.names: dict[str, str | bool] = {**dict(cfg.get("keysafe_names") or {}),
                                             **dict(names or {})}
        self._manager = manager
        self._source = source

    def __repr__(self) -> str:
        return f"KeysafeSettingsSource(org={self.org!r}, domain={self.domain!r})"

    def secret_name(self, field_name: str, field: FieldInfo) -> str | None:
        """The secret behind a field, or None when the field is not read from keysafe."""
        extra = field.json_schema_extra
        chosen: object = field_name
        if isinstance(extra, dict) and "keysafe" in extra:
            chosen = extra["keysafe"]
        elif field_name in self.names:
            chosen = self.names[field_name]
        if chosen is False or chosen is None:
            return None
        if not isinstance(chosen, str) or not chosen:
            raise ConfigError(f"{self.settings_cls.__name__}.{field_name}: the keysafe "
                              "secret name must be a non-empty string or False")
        return chosen

    def _read(self, name: str) -> str | None:
        try:
            if self._source is not None:
                return self._source.read(str(self.org), self.domain, name)[0]
            if self._manager is None:
                from keysafe.manager.manager import SecretManager

                self._manager = SecretManager.from_env()
            return self._manager.get(name, self.org, domain=self.domain)
        except NotFound:
            return None

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = self.secret_name(field_name, field)
        key = field.alias or field_name
        if name is None:
            return None, key, False
        return self._read(name), key, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, is_complex = self.get_field_value(field, field_name)
            if value is None:
                continue
            try:
                out[key] = self.prepare_field_value(field_name, field, value, is_complex)
            except ValueError:
                # json's message quotes the text it choked on: report the field only.
                raise ConfigError(f"{self.settings_cls.__name__}.{field_name}: the keysafe "
                                  "secret does not hold the JSON this field needs") from None
        return out
