"""The embedded SQLite store against the shipped conformance suite."""

from __future__ import annotations

import uuid

from keysafe.backends.base import SecretBackend
from keysafe.backends.sqlite import SQLiteBackend
from keysafe.crypto.keys import KeyRing
from keysafe.testing import BackendConformance


class TestSQLiteBackend(BackendConformance):
    def make_backend(self, *, max_versions: int = 10) -> SecretBackend:
        db = self.tmp_path / f"{uuid.uuid4().hex[:8]}.db"
        return SQLiteBackend(db, KeyRing.generate(), max_versions=max_versions)

