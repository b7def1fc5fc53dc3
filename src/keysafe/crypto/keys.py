"""Master keys: a ring of 256-bit keys with ids, one of them active.

Sources, in order: ``KEYSAFE_MASTER_KEY`` (base64 of 32 bytes, or ``kid:base64`` pairs
separated by commas, the first active), else a key file (JSON, mode 0600) that is
created on first local use. Old keys stay in the ring after ``rekey`` until every
data key has been re-wrapped, so a half-finished rekey never strands a value.

With KEYSAFE_MASTER_KEY_KMS set, either source holds the ring *wrapped* by that KMS key
(``wrapped.py``): a ring then carries its ``kms`` and saves itself wrapped, and a
plaintext ring is refused (``keysafe master-key wrap`` converts one).
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
from typing import TYPE_CHECKING, Any

from keysafe.crypto import wrapped
from keysafe.errors import ConfigError
from keysafe.fsutil import fsync_dir

if TYPE_CHECKING:
    from keysafe.crypto.kms import Kms

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


def _plaintext_refused(kms: Kms, where: str) -> ConfigError:
    return ConfigError(f"KEYSAFE_MASTER_KEY_KMS is {kms.reference}, but {where} holds a "
                       "plaintext key ring; wrap it with `keysafe master-key wrap` (or "
                       "unset KEYSAFE_MASTER_KEY_KMS)")


class KeyRing:
    """Master keys by id; ``active`` wraps new data keys. ``kms``: the KMS key the ring
    is kept wrapped by (None: kept in plaintext)."""

    def __init__(self, keys: Mapping[str, bytes], active: str, *,
                 path: Path | None = None, kms: Kms | None = None) -> None:
        if active not in keys:
            raise ConfigError(f"active master key id {active!r} is not in the key ring")
        for kid, k in keys.items():
            if len(k) != KEY_BYTES:
                raise ConfigError(f"master key {kid!r} must be {KEY_BYTES} bytes")
        self._keys = dict(keys)
        self.active = active
        self.path = path
        self.kms = kms

    def __repr__(self) -> str:
        wrapped_by = f", kms={self.kms.reference!r}" if self.kms is not None else ""
        return f"KeyRing(active={self.active!r}, ids={sorted(self._keys)!r}{wrapped_by})"

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
    def from_env_value(cls, value: str, kms: Kms | None = None) -> KeyRing:
        """The ring in KEYSAFE_MASTER_KEY: plaintext pairs, or a wrapped ring (a JSON
        object) that ``kms`` must unwrap. Raises ConfigError (malformed, or plaintext
        while ``kms`` is given) and what unwrapping raises."""
        if wrapped.looks_wrapped(value):
            try:
                doc: Any = json.loads(value)
            except ValueError:
                raise ConfigError("KEYSAFE_MASTER_KEY looks like JSON but is not valid "
                                  "JSON") from None
            if not wrapped.is_wrapped(doc):
                raise ConfigError("KEYSAFE_MASTER_KEY is a JSON object but not a wrapped "
                                  "key ring")
            ring = cls._parse(wrapped.unwrap(doc, kms, "KEYSAFE_MASTER_KEY"),
                              "the wrapped key ring in KEYSAFE_MASTER_KEY")
            ring.kms = kms
            return ring
        if kms is not None:
            raise _plaintext_refused(kms, "KEYSAFE_MASTER_KEY")
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
    def from_file(cls, path: Path, kms: Kms | None = None) -> KeyRing:
        """The ring in a key file, plaintext or wrapped (then ``kms`` unwraps it).

        Raises ConfigError (unreadable or malformed file, plaintext while ``kms`` is
        given, wrapped by another KMS key) and what unwrapping raises.
        """
        try:
            data: Any = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read master key file {path}: {exc}") from None
        if wrapped.is_wrapped(data):
            ring = cls._parse(wrapped.unwrap(data, kms, f"the key file {path}"),
                              f"the wrapped master key file {path}")
            ring.path, ring.kms = path, kms
            return ring
        if kms is not None:
            raise _plaintext_refused(kms, f"the key file {path}")
        ring = cls._from_data(data, f"master key file {path}")
        ring.path = path
        return ring

    @classmethod
    def _parse(cls, plaintext: bytes, where: str) -> KeyRing:
        try:
            data: Any = json.loads(plaintext)
        except ValueError:
            raise ConfigError(f"{where}: the unwrapped key ring is not JSON") from None
        return cls._from_data(data, where)

    @classmethod
    def _from_data(cls, data: Any, where: str) -> KeyRing:
        try:
            keys = {str(k): _decode_key(v, where) for k, v in data["keys"].items()}
            return cls(keys, str(data["active"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # The exception names a field or a type, never a key's bytes.
            raise ConfigError(f"cannot read {where}: {exc}") from None

    def _plain_data(self) -> dict[str, Any]:
        return {"active": self.active,
                "keys": {k: base64.b64encode(v).decode() for k, v in self._keys.items()}}

    def to_document(self) -> dict[str, Any]:
        """What the key file holds: the ring, or with a KMS the ring wrapped by it (one
        Encrypt and one Decrypt call)."""
        if self.kms is None:
            return self._plain_data()
        return wrapped.wrap(json.dumps(self._plain_data()).encode(), self.kms)

    def save(self, path: Path | None = None) -> Path:
        """Write the ring to its key file atomically, mode 0600: wrapped if it has a
        ``kms``. Raises ConfigError (no key file) and, wrapped, what the KMS raises; the
        old file is then left as it was."""
        target = path or self.path
        if target is None:
            raise ConfigError("this key ring came from KEYSAFE_MASTER_KEY; it has no key file")
        data = self.to_document()
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self._write_tmp(target, data)
        try:
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)  # it holds the ring: never left behind
            raise
        # Durable before anyone (rekey) re-wraps data keys to a key only this file has.
        fsync_dir(target.parent)
        self.path = target
        return target

    def create_exclusive(self, target: Path) -> bool:
        """Write the ring to ``target`` only if no key file exists there (atomically:
        two first users racing end up with one key). False if one already existed."""
        data = self.to_document()
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self._write_tmp(target, data)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        fsync_dir(target.parent)
        self.path = target
        return True

    @staticmethod
    def _write_tmp(target: Path, data: dict[str, Any]) -> Path:
        import tempfile

        fd, name = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return Path(name)

    def with_new_active(self) -> tuple[KeyRing, str]:
        key = os.urandom(KEY_BYTES)
        kid = derived_key_id(key)
        keys = dict(self._keys)
        keys[kid] = key
        return KeyRing(keys, kid, path=self.path, kms=self.kms), kid

    def without(self, kids: list[str]) -> KeyRing:
        keys = {k: v for k, v in self._keys.items() if k not in kids or k == self.active}
        return KeyRing(keys, self.active, path=self.path, kms=self.kms)

    def with_kms(self, kms: Kms | None) -> KeyRing:
        """The same keys, to be saved wrapped by ``kms`` (None: in plaintext)."""
        return KeyRing(self._keys, self.active, path=self.path, kms=kms)


def load_keyring(master_key: str | None, key_file: Path, *, create: bool,
                 announce: bool = True, kms: Kms | None = None) -> KeyRing:
    """The ring from the env value, else the key file, creating it when allowed
    (wrapped by ``kms`` when given: KEYSAFE_MASTER_KEY_KMS).

    Raises ConfigError when no key is configured and ``create`` is False, and what
    ``KeyRing.from_env_value`` / ``from_file`` raise.
    """
    if master_key:
        return KeyRing.from_env_value(master_key, kms)
    if key_file.is_file():
        return KeyRing.from_file(key_file, kms)
    if not create:
        raise ConfigError(
            f"no master key: set KEYSAFE_MASTER_KEY or create {key_file} with `keysafe init`"
        )
    ring = KeyRing.generate().with_kms(kms)
    if not ring.create_exclusive(key_file):
        return KeyRing.from_file(key_file, kms)  # another process created it first
    if announce:
        how = f", wrapped by the KMS key {kms.reference}" if kms is not None else ""
        print(
            f"keysafe: created a new master key at {key_file} (mode 0600{how}). "
            "Back it up: without it the secrets in this store cannot be read.",
            file=sys.stderr,
        )
    return ring
