"""Fixtures shared by every test directory. Keep this small."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture(autouse=True)
def _key_checks_stay_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches a real provider: a live key check (keysafe.keycheck) to any host
    but a loopback stand-in fails as unreachable, in this process, before connecting."""
    import urllib.error
    from urllib.parse import urlsplit

    from keysafe import keycheck
    from keysafe.hosts import is_loopback_host

    real = keycheck._opener

    def guarded(*args: Any, **kwargs: Any) -> Any:
        opener = real(*args, **kwargs)
        open_ = opener.open

        def open_loopback(req: Any, *args: Any, **kwargs: Any) -> Any:
            if not is_loopback_host(urlsplit(req.full_url).hostname or ""):
                raise urllib.error.URLError("tests reach no provider")
            return open_(req, *args, **kwargs)

        opener.open = open_loopback
        return opener

    monkeypatch.setattr(keycheck, "_opener", guarded)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A real PostgreSQL server on loopback for the whole session (Debian's package, run
    as the postgres user: keysafe.testing.postgres); skipped where there is none."""
    from keysafe.testing.postgres import PgUnavailable, start_pg, stop_pg

    try:
        server = start_pg()
    except PgUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        stop_pg(server)
