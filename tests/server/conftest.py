"""Fixtures for the server tests (helpers are in serverkit.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from keysafe.server.app import KeysafeApp

from .serverkit import build_app


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh KEYSAFE_HOME, and no other KEYSAFE_* variable in the environment."""
    for var in list(os.environ):
        if var.startswith("KEYSAFE_") or var == "ENVIRONMENT":
            monkeypatch.delenv(var)
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("KEYSAFE_HOME", str(h))
    monkeypatch.chdir(tmp_path)
    return h


@pytest.fixture
def app(home: Path) -> KeysafeApp:
    return build_app(home)


@pytest.fixture
def client(app: KeysafeApp) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c
