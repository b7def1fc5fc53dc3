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
