"""Envelope encryption for the stores keysafe keeps itself (SQLite, PostgreSQL)."""

from keysafe.crypto.envelope import Envelope, Sealed
from keysafe.crypto.keys import KeyRing

__all__ = ["Envelope", "KeyRing", "Sealed"]
