"""The PostgreSQL store against the shipped conformance suite, on a real PostgreSQL
server (the Debian package, started by the tests on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keysafe.backends.base import SecretBackend
from keysafe.backends.postgres import PostgresBackend
from keysafe.crypto.keys import KeyRing
from keysafe.testing import BackendConformance


@pytest.fixture(scope="module", autouse=True)
def pg_module_db(pg_server) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """One database for the module (each test works under its own path prefix)."""
    name = pg_server.create_db()
    TestPostgresBackend.url = pg_server.url(name)
    yield TestPostgresBackend.url
    pg_server.drop_db(name)


class TestPostgresBackend(BackendConformance):
    ring = KeyRing.generate()
    url = ""

    def make_backend(self, *, max_versions: int = 10) -> SecretBackend:
        return PostgresBackend(self.url, self.ring, max_versions=max_versions, pool_max=4)
