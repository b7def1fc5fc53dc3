"""Fixtures for the PostgreSQL tests: a real server (see keysafe.testing.postgres),
session-wide, and a fresh database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keysafe.testing.postgres import PgServer, PgUnavailable, start_pg, stop_pg


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        server = start_pg()
    except PgUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        stop_pg(server)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = pg_server.create_db()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_db(name)
