"""The in-memory reference backend against the shipped conformance suite."""

from __future__ import annotations

from keysafe.backends.base import SecretBackend
from keysafe.backends.memory import MemoryBackend
from keysafe.testing import BackendConformance


class TestMemoryBackend(BackendConformance):
    def make_backend(self, *, max_versions: int = 10) -> SecretBackend:
        return MemoryBackend(max_versions=max_versions)


