"""Fixtures shared by every test directory. Keep this small."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def tmp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean keysafe environment: KEYSAFE_HOME is a fresh directory, no other
    KEYSAFE_* or ENVIRONMENT variable is set, and the working directory is a fresh
    directory too (so no stray keysafe.toml is found)."""
    for var in list(os.environ):
        if var.startswith("KEYSAFE_") or var == "ENVIRONMENT":
            monkeypatch.delenv(var)
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("KEYSAFE_HOME", str(home))
    monkeypatch.chdir(work)
    return home
