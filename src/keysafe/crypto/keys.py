"""Master keys: a ring of 256-bit keys with ids, one of them active.

Sources, in order: ``KEYSAFE_MASTER_KEY`` (base64 of 32 bytes, or ``kid:base64`` pairs
separated by commas, the first active), else a key file (JSON, mode 0600) that is
created on first local use. Old keys stay in the ring after ``rekey`` until every
data key has been re-wrapped, so a half-finished rekey never strands a value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keysafe.errors import ConfigError

KEY_BYTES = 32


def _decode_key(text: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: master key is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"{where}: master key must be {KEY_BYTES} bytes, got {len(raw)}")
    return raw


def derived_key_id(key: bytes) -> str:
    """A stable, non-secret id for a key given without one (first 8 bytes of a hash)."""
    return "k-" + hashlib.sha256(b"keysafe-kid\0" + key).hexdigest()[:16]


class KeyRing:
    """Master keys by id; ``active`` wraps new data keys."""

    def __init__(self, keys: Mapping[str, bytes], active: str, *,
                 path: Path | None = None) -> None:
        if active not in keys:
            raise ConfigError(f"active master key id {active!r} is not in the key ring")
        for kid, k in keys.items():
            if len(k) != KEY_BYTES:
                raise ConfigError(f"master key {kid!r} must be {KEY_BYTES} bytes")
        self._keys = dict(keys)
        self.active = active
        self.path = path

    def __repr__(self) -> str:
        return f"KeyRing(active={self.active!r}, ids={sorted(self._keys)!r})"

    def key(self, kid: str) -> bytes:
        try:
            return self._keys[kid]
        except KeyError:
            raise ConfigError(
                f"master key {kid!r} is not available; a value was sealed with it "
                "(restore the key file or KEYSAFE_MASTER_KEY that had it)"
            ) from None

    @property
    def ids(self) -> list[str]:
        return list(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    @classmethod
    def generate(cls) -> KeyRing:
        key = os.urandom(KEY_BYTES)  # the CSPRNG secrets.token_bytes wraps; no `random` import
        return cls({derived_key_id(key): key}, derived_key_id(key))

    @classmethod
    def from_env_value(cls, value: str) -> KeyRing:
        keys: dict[str, bytes] = {}
        first: str | None = None
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if ":" in part:
                kid, _, b64 = part.partition(":")
                kid = kid.strip()
                if not kid:
                    raise ConfigError("KEYSAFE_MASTER_KEY: a key id before ':' is empty")
                key = _decode_key(b64, "KEYSAFE_MASTER_KEY")
            else:
                key = _decode_key(part, "KEYSAFE_MASTER_KEY")
                kid = derived_key_id(key)
            if kid in keys:
                raise ConfigError(f"KEYSAFE_MASTER_KEY: key id {kid!r} is given twice")
            keys[kid] = key
            if first is None:
                first = kid
        if first is None:
            raise ConfigError("KEYSAFE_MASTER_KEY is empty")
        return cls(keys, first)

    @classmethod
    def from_file(cls, path: Path) -> KeyRing:
        try:
            data: Any = json.loads(path.read_text())
            keys = {str(k): _decode_key(v, str(path)) for k, v in data["keys"].items()}
            return cls(keys, str(data["active"]), path=path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"cannot read master key file {path}: {exc}") from None

    def save(self, path: Path | None = None) -> Path:
        """Write the ring to its key file atomically, mode 0600."""
        target = path or self.path
        if target is None:
            raise ConfigError("this key ring came from KEYSAFE_MASTER_KEY; it has no key file")
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {
            "active": self.active,
            "keys": {k: base64.b64encode(v).decode() for k, v in self._keys.items()},
        }
        tmp = self._write_tmp(target, data)
        os.replace(tmp, target)
        self.path = target
        return target

    def create_exclusive(self, target: Path) -> bool:
        """Write the ring to ``target`` only if no key file exists there (atomically:
        two first users racing end up with one key). False if one already existed."""
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {"active": self.active,
                "keys": {k: base64.b64encode(v).decode() for k, v in self._keys.items()}}
        tmp = self._write_tmp(target, data)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        self.path = target
        return True

    @staticmethod
    def _write_tmp(target: Path, data: dict[str, Any]) -> Path:
        import tempfile

        fd, name = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        return Path(name)

    def with_new_active(self) -> tuple[KeyRing, str]:
        key = os.urandom(KEY_BYTES)
        kid = derived_key_id(key)
        keys = dict(self._keys)
        keys[kid] = key
        return KeyRing(keys, kid, path=self.path), kid

    def without(self, kids: list[str]) -> KeyRing:
        keys = {k: v for k, v in self._keys.items() if k not in kids or k == self.active}
        return KeyRing(keys, self.active, path=self.path)


def load_keyring(master_key: str | None, key_file: Path, *, create: bool,
                 announce: bool = True) -> KeyRing:
    """The ring from the env value, else the key file, creating it when allowed.

    Raises ConfigError when no key is configured and ``create`` is False.
    """
    if master_key:
        return KeyRing.from_env_value(master_key)
    if key_file.is_file():
        return KeyRing.from_file(key_file)
    if not create:
        raise ConfigError(
            f"no master key: set KEYSAFE_MASTER_KEY or create {key_file} with `keysafe init`"
        )
    ring = KeyRing.generate()
    if not ring.create_exclusive(key_file):
        return KeyRing.from_file(key_file)  # another process created it first
    if announce:
        print(
            f"keysafe: created a new master key at {key_file} (mode 0600). "
            "Back it up: without it the secrets in this store cannot be read.",
            file=sys.stderr,
        )
    return ring
