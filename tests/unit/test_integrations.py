"""The pydantic-settings source and the FastAPI dependency, over a real manager (memory
store) and a real FastAPI app (TestClient)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from keysafe import SecretManager
from keysafe.backends.memory import MemoryBackend
from keysafe.errors import ConfigError
from keysafe.integrations.fastapi import ScopedSecrets, secrets_dependency
from keysafe.integrations.settings import KeysafeSettingsSource

OPENAI = "sk-" + "a1" * 16
CANARY = "canary-settings-\u00e9-51c"


@pytest.fixture
def mgr() -> SecretManager:
    m = SecretManager(MemoryBackend(), actor="tester")
    m.put("openai_api_key", OPENAI, "acme")
    m.put("postgres_url", "postgresql://u:p@db/app", "acme")
    m.put("openai_api_key", "sk-" + "d4" * 16, "acme", domain="llm")
    m.put("feature_flags", '{"beta": true, "limit": 3}', "acme")
    m.put("not_json_field", CANARY, "acme")
    m.put("debug", "true", "acme")
    return m


def settings_class(mgr: SecretManager, **source_kw: Any) -> type[BaseSettings]:
    class AppSettings(BaseSettings):
        model_config = SettingsConfigDict(keysafe_org="acme",  # type: ignore[typeddict-unknown-key]
                                          keysafe_names={"db": "postgres_url"})
        openai_api_key: SecretStr
        db: str
        feature_flags: dict[str, Any] = {}
        debug: bool = Field(False, json_schema_extra={"keysafe": False})
        missing_one: str = "default"
        timeout: int = 5

        @classmethod
        def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings,
                    KeysafeSettingsSource(settings_cls, manager=mgr, **source_kw))

    return AppSettings


def test_settings_fields_from_keysafe(mgr: SecretManager, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("TIMEOUT", "9")
    s: Any = settings_class(mgr)()
    assert s.openai_api_key.get_secret_value() == OPENAI
    assert s.db == "postgresql://u:p@db/app"  # model config mapping
    assert s.feature_flags == {"beta": True, "limit": 3}  # complex field: JSON
    assert s.debug is False  # json_schema_extra keysafe=False: never read
    assert s.missing_one == "default"  # absent secret: the default applies
    assert s.timeout == 9  # other sources still work
    assert OPENAI not in repr(s)


def test_settings_domain_and_field_override(mgr: SecretManager) -> None:
    s: Any = settings_class(mgr, domain="llm")
    # In the llm domain only openai_api_key exists; db is required -> init value.
    obj = s(db="given")
    assert obj.openai_api_key.get_secret_value() == "sk-" + "d4" * 16

    class Named(BaseSettings):
        llm_key: str = Field("", json_schema_extra={"keysafe": "openai_api_key"})

        @classmethod
        def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                       **rest: PydanticBaseSettingsSource
                                       ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (KeysafeSettingsSource(settings_cls, org="acme", manager=mgr),)

    assert Named().llm_key == OPENAI


def test_settings_errors_never_show_values(mgr: SecretManager,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    class NoOrg(BaseSettings):
        x: str = ""

    with pytest.raises(ConfigError, match="needs an org"):
        KeysafeSettingsSource(NoOrg, manager=mgr)

    class Bad(BaseSettings):
        model_config = SettingsConfigDict(keysafe_org="acme")  # type: ignore[typeddict-unknown-key]
        not_json_field: dict[str, int] = {}

        @classmethod
        def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                       **rest: PydanticBaseSettingsSource
                                       ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (KeysafeSettingsSource(settings_cls, manager=mgr),)

    with pytest.raises(ConfigError) as err:
        Bad()
    assert "not_json_field" in str(err.value)
    assert CANARY not in str(err.value)
    assert CANARY not in repr(err.value.__cause__)
    assert err.value.__cause__ is None
    assert CANARY not in caplog.text


# -- FastAPI ----------------------------------------------------------------------------
def make_app(mgr: SecretManager, **kw: Any) -> FastAPI:
    app = FastAPI()
    # A default rather than Annotated: this module's annotations are strings that
    # FastAPI resolves in the module's globals, where a local alias does not exist.
    dep = Depends(secrets_dependency(mgr, **kw))

    @app.get("/orgs/{org_id}/llm")
    def llm(org_id: str, secrets: ScopedSecrets = dep) -> dict[str, Any]:
        key = secrets.get_llm_api_key("openai")
        if key is not None:
            assert secrets.get_secret("openai_api_key") == key  # the domain's, or shared
        return {"org": secrets.org, "domain": secrets.domain, "has_key": key is not None,
                "key_tail": key[-4:] if key else None, "repr": repr(secrets)}

    @app.get("/me/secrets")
    def mine(secrets: ScopedSecrets = dep) -> dict[str, Any]:
        return {"org": secrets.org, "names": sorted(m.path.rsplit("/", 1)[1]
                                                     for m in secrets.list())}

    return app


def test_fastapi_dependency_scopes_to_the_request_org(mgr: SecretManager) -> None:
    mgr.put("openai_api_key", "sk-" + "e5" * 16, "globex")
    with TestClient(make_app(mgr)) as c:
        r = c.get("/orgs/acme/llm")
        assert r.status_code == 200
        assert r.json() == {"org": "acme", "domain": None, "has_key": True,
                            "key_tail": OPENAI[-4:], "repr": "ScopedSecrets(org='acme', "
                                                             "domain=None)"}
        r = c.get("/orgs/acme/llm", params={"domain_id": "llm"})
        assert r.json()["key_tail"] == "d4d4"
        assert c.get("/orgs/globex/llm").json()["key_tail"] == "e5e5"
        assert c.get("/orgs/nobody/llm").json()["has_key"] is False
        r = c.get("/orgs/bad org!/llm")
        assert r.status_code == 400
        assert "org" in r.json()["detail"]
        assert c.get("/me/secrets").status_code == 400  # no org in the request


def test_fastapi_org_from_caller_and_actor(mgr: SecretManager) -> None:
    app = make_app(mgr, org_from=lambda req: req.headers["x-tenant"],
                   actor=lambda req: f"user:{req.headers['x-user']}")
    with TestClient(app) as c:
        r = c.get("/me/secrets", headers={"x-tenant": "acme", "x-user": "ann"})
        assert r.status_code == 200
        assert "openai_api_key" in r.json()["names"]
    events = mgr.audit_query()
    assert any(e.actor == "user:ann" and e.action == "list" for e in events)
    for e in events:
        assert OPENAI not in str(e)
