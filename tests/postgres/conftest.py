"""Fixtures for the PostgreSQL tests: a fresh database per test on the session's real
server (``pg_server``, tests/conftest.py), and replicas' backends on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from keysafe.backends.postgres import PostgresBackend
from keysafe.crypto.keys import KeyRing
from keysafe.testing.postgres import PgServer


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = pg_server.create_db()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_db(name)


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
def backends(pg_url: str, ring: KeyRing) -> Iterator[Callable[..., PostgresBackend]]:
    """Open replicas on the test's database (``url``, ``key`` and PostgresBackend's
    options may be given; pool of 4 by default); all closed at the end."""
    made: list[PostgresBackend] = []

    def make(url: str | None = None, key: KeyRing | None = None,
             **kw: Any) -> PostgresBackend:
        kw.setdefault("pool_max", 4)
        b = PostgresBackend(url or pg_url, key or ring, **kw)
        made.append(b)
        return b

    yield make
    for b in reversed(made):
        b.close()
