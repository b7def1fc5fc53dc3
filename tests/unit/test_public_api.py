"""The public surface: ``keysafe.__all__`` and what importing keysafe costs."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import keysafe

HEAVY = ("typer", "rich", "boto3", "botocore", "fastapi", "starlette", "uvicorn", "hvac",
         "pytest", "psycopg", "google", "azure")


def test_all_is_sorted_and_unique() -> None:
    assert keysafe.__all__ == sorted(keysafe.__all__)
    assert len(set(keysafe.__all__)) == len(keysafe.__all__)


@pytest.mark.parametrize("name", keysafe.__all__)
def test_every_public_name_is_importable(name: str) -> None:
    module = importlib.import_module("keysafe")
    assert getattr(module, name) is not None
    exec(f"from keysafe import {name}", {})  # the spelling users write


def test_the_core_surface_is_public() -> None:
    expected = {"SecretManager", "AsyncSecretManager", "Settings", "load_settings",
                "SecretRef", "NamingTemplate", "SecretMetadata", "VersionInfo", "AuditEvent",
                "KeysafeError", "NotFound", "Conflict", "PermissionDenied", "InvalidName",
                "ValueTooLarge", "BackendUnavailable", "IntegrityError", "ConfigError",
                "RotationError"}
    assert expected <= set(keysafe.__all__)


def test_public_errors_share_one_base() -> None:
    errors = [getattr(keysafe, n) for n in keysafe.__all__
              if isinstance(getattr(keysafe, n), type)
              and issubclass(getattr(keysafe, n), BaseException)]
    assert errors
    for err in errors:
        assert issubclass(err, keysafe.KeysafeError), err
        assert isinstance(err.code, str)


def test_version() -> None:
    assert isinstance(keysafe.__version__, str)
    assert keysafe.__version__[0].isdigit()


def test_import_is_light() -> None:
    code = ("import json, sys; import keysafe; "
            "print(json.dumps(sorted(m for m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    loaded = json.loads(out.stdout)
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == []
    assert "keysafe.testing" not in loaded


def test_testing_package_exports_the_conformance_suite() -> None:
    import keysafe.testing
    from keysafe.testing.conformance import BackendConformance

    assert keysafe.testing.__all__ == ["BackendConformance"]
    assert keysafe.testing.BackendConformance is BackendConformance
    assert not BackendConformance.__name__.startswith("Test")


def test_records_are_frozen_named_tuples_with_fresh_defaults() -> None:
    """The records keysafe hands out: frozen, changed by ``_replace``, and each one's
    mutable default its own (a reader may change the copy it was given)."""
    from datetime import UTC, datetime

    from keysafe.config import Settings
    from keysafe.models import AuditEvent, SecretMetadata, VersionInfo

    now = datetime.now(UTC)
    a = SecretMetadata("p/a", 1, now, now)
    b = SecretMetadata("p/b", 1, now, now, tags=None)
    assert a.tags == {}
    assert b.tags == {}
    assert a.tags is not b.tags
    a.tags["x"] = "1"
    assert SecretMetadata("p/c", 1, now, now).tags == {}
    with pytest.raises(AttributeError):
        a.path = "other"  # type: ignore[misc]
    moved = a._replace(deleted_at=now)
    assert type(moved) is SecretMetadata
    assert moved.deleted
    assert not a.deleted
    assert json.loads(json.dumps(moved.to_dict()))["deleted"] is True
    e1 = AuditEvent(1, now, "me", "read", "p/a", 1, "ok")
    e2 = AuditEvent(2, now, "me", "read", "p/a", 1, "ok")
    assert e1.detail == {}
    assert e1.detail is not e2.detail
    assert e1.to_dict()["detail"] is not e1.detail
    assert VersionInfo(2, now).to_dict()["created_at"] == now.isoformat()
    s1, s2 = Settings(), Settings(env="prod")
    assert s1.home.name == ".keysafe"
    assert s1.sources is not s2.sources
    assert s1.backend_options is not s2.backend_options
    assert s2._replace(env="stage").profile == "staging"


def test_records_copy_and_pickle() -> None:
    import copy
    import pickle
    from datetime import UTC, datetime

    from keysafe.config import Settings
    from keysafe.models import AuditEvent, SecretMetadata

    now = datetime.now(UTC)
    for rec in (SecretMetadata("p", 1, now, now, tags={"a": "1"}),
                AuditEvent(1, now, "me", "read", "p", 1, "ok"),
                Settings(env="prod", backend_options={"k": "v"})):
        assert pickle.loads(pickle.dumps(rec)) == rec
        assert copy.deepcopy(rec) == rec
        assert type(copy.copy(rec)) is type(rec)


def test_settings_repr_leaves_secrets_out() -> None:
    from keysafe.config import Settings

    canary = "canary-7f3a9c"
    s = Settings(master_key=canary, database_url=f"postgresql://u:{canary}@h/db",
                 jwt_hs256_secret=canary, event_webhook_secret=canary,
                 backend_options={"token": canary})
    assert canary not in repr(s)
    assert canary not in str(s)
    assert "env='local'" in repr(s)
