"""Envelope encryption: a fresh AES-256-GCM data key per version, wrapped by a master key.

The associated data binds each ciphertext to its place: the value to ``path`` and
``version``, the wrapped data key to ``path``, ``version`` and the master key id. A row
copied to another path or version, or altered in any byte, fails to open with an
IntegrityError; it never yields a wrong value.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keysafe.crypto.keys import KeyRing
from keysafe.errors import IntegrityError

NONCE = 12


class Sealed(NamedTuple):
    """What a store keeps for one version. Only ciphertext; safe to log sizes of."""

    key_id: str
    wrapped_key: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"Sealed(key_id={self.key_id!r}, {len(self.ciphertext)} bytes)"


def _aad(path: str, version: int) -> bytes:
    return b"keysafe/v1\x00" + path.encode() + b"\x00" + str(version).encode()


class Envelope:
    """Seals and opens values with a KeyRing."""

    def __init__(self, keyring: KeyRing) -> None:
        self.keyring = keyring
        self._kek: dict[str, AESGCM] = {}

    def _aead(self, kid: str) -> AESGCM:
        aead = self._kek.get(kid)
        if aead is None:
            aead = self._kek[kid] = AESGCM(self.keyring.key(kid))
        return aead

    def seal(self, path: str, version: int, plaintext: bytes) -> Sealed:
        kid = self.keyring.active
        aad = _aad(path, version)
        dek = AESGCM.generate_key(256)
        nonces = os.urandom(2 * NONCE)
        n1, n2 = nonces[:NONCE], nonces[NONCE:]
        ciphertext = n1 + AESGCM(dek).encrypt(n1, plaintext, aad)
        wrapped = n2 + self._aead(kid).encrypt(n2, dek, aad + b"\x00" + kid.encode())
        return Sealed(kid, wrapped, ciphertext)

    def open(self, path: str, version: int, sealed: Sealed) -> bytes:
        """Raises IntegrityError if anything about the row is not what was sealed."""
        return self.open_parts(path, version, sealed.key_id, sealed.wrapped_key,
                               sealed.ciphertext)

    def open_parts(self, path: str, version: int, key_id: str, w: bytes, c: bytes) -> bytes:
        """``open`` for a stored row's columns, without building a Sealed first."""
        aad = _aad(path, version)
        try:
            aead = self._kek.get(key_id) or self._aead(key_id)
            dek = aead.decrypt(w[:NONCE], w[NONCE:], aad + b"\x00" + key_id.encode())
            return AESGCM(dek).decrypt(c[:NONCE], c[NONCE:], aad)
        except (InvalidTag, ValueError):
            raise IntegrityError(
                f"stored ciphertext for {path} version {version} failed verification "
                "(altered, or moved from another place)",
                path=path,
            ) from None

    def rewrap(self, path: str, version: int, sealed: Sealed) -> Sealed:
        """The same data key, wrapped by the active master key (for ``rekey``)."""
        kid = self.keyring.active
        if sealed.key_id == kid:
            return sealed
        aad = _aad(path, version)
        w = sealed.wrapped_key
        try:
            dek = self._aead(sealed.key_id).decrypt(
                w[:NONCE], w[NONCE:], aad + b"\x00" + sealed.key_id.encode()
            )
        except (InvalidTag, ValueError):
            raise IntegrityError(
                f"wrapped key for {path} version {version} failed verification", path=path
            ) from None
        n = os.urandom(NONCE)
        wrapped = n + self._aead(kid).encrypt(n, dek, aad + b"\x00" + kid.encode())
        return Sealed(kid, wrapped, sealed.ciphertext)
