"""The wrapped form of the master key ring: what the key file (or KEYSAFE_MASTER_KEY)
holds when KEYSAFE_MASTER_KEY_KMS is set.

A small JSON object, self-describing and versioned::

    {"format": "keysafe-wrapped-master-key-ring", "version": 1,
     "kms": "awskms:alias/keysafe", "ciphertext": "<the KMS's ciphertext, as text>"}

``ciphertext`` is the KMS encryption of the plaintext key file's JSON
(``{"active": ..., "keys": {kid: base64}}``), bound to its purpose by the KMS
(``kms.PURPOSE``). The plaintext keys are never in the object. ``kms`` says which key
must decrypt it; it has to equal KEYSAFE_MASTER_KEY_KMS, so a swapped file cannot
point keysafe at another KMS.

Each distinct ciphertext is decrypted once per process and kept in memory (the keys
are in memory as soon as the store is open anyway): a CLI command or a server worker
that opens the store several times asks the KMS once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keysafe.errors import ConfigError, IntegrityError

if TYPE_CHECKING:
    from keysafe.crypto.kms import Kms

FORMAT = "keysafe-wrapped-master-key-ring"
VERSION = 1
_CACHE_MAX = 16
#: (KMS reference, ciphertext) -> the serialised ring it decrypts to.
_unwrapped: dict[tuple[str, str], bytes] = {}


def looks_wrapped(text: str | None) -> bool:
    """Whether a KEYSAFE_MASTER_KEY value (or key file text) is a JSON document, as the
    wrapped form is (the plaintext forms are base64 or ``kid:base64`` pairs)."""
    return (text or "").lstrip().startswith("{")


def is_wrapped(data: object) -> bool:
    """True if ``data`` (a parsed key file or KEYSAFE_MASTER_KEY) is a wrapped ring."""
    return isinstance(data, dict) and "format" in data and "keys" not in data


def reference_of(doc: dict[str, Any], where: str) -> str:
    """The KMS reference a wrapped ring names; ConfigError if the object is malformed
    or from a newer keysafe."""
    if doc.get("format") != FORMAT:
        raise ConfigError(f"{where}: unknown key ring format {str(doc.get('format'))[:60]!r}")
    if doc.get("version") != VERSION:
        raise ConfigError(f"{where}: wrapped key ring version {doc.get('version')!r} is not "
                          f"supported (this keysafe reads version {VERSION}); upgrade keysafe")
    ref, ct = doc.get("kms"), doc.get("ciphertext")
    if not isinstance(ref, str) or not ref or not isinstance(ct, str) or not ct:
        raise ConfigError(f"{where}: a wrapped key ring needs the string fields kms and "
                          "ciphertext")
    return ref


def wrap(plaintext: bytes, kms: Kms) -> dict[str, Any]:
    """The wrapped object for a serialised ring. The KMS is asked to decrypt its own
    answer before anything is written, so a key that can encrypt but not decrypt (a
    missing kms:Decrypt, a one-way policy) never leaves an unreadable key file.

    Raises what the KMS raises (BackendUnavailable, PermissionDenied, ConfigError), and
    IntegrityError if the round trip does not give the ring back.
    """
    ciphertext = kms.encrypt(plaintext)
    if kms.decrypt(ciphertext) != plaintext:
        raise IntegrityError(f"KMS {kms.reference}: decrypting the freshly wrapped key ring "
                             "did not give it back; nothing was written")
    _remember(kms.reference, ciphertext, plaintext)
    return {"format": FORMAT, "version": VERSION, "kms": kms.reference,
            "ciphertext": ciphertext}


def unwrap(doc: dict[str, Any], kms: Kms | None, where: str) -> bytes:
    """The serialised ring in a wrapped object, decrypted by ``kms`` (once per process).

    Raises ConfigError when no KMS is configured or it is not the one the object names
    (both references are given; neither is secret), and what the KMS raises:
    BackendUnavailable (unreachable), PermissionDenied, IntegrityError (altered).
    """
    ref = reference_of(doc, where)
    if kms is None:
        raise ConfigError(f"{where} holds a key ring wrapped by the KMS key {ref}; set "
                          f"KEYSAFE_MASTER_KEY_KMS={ref} to unwrap it")
    if kms.reference != ref:
        raise ConfigError(f"{where} holds a key ring wrapped by the KMS key {ref}, but "
                          f"KEYSAFE_MASTER_KEY_KMS is {kms.reference}; set it to the key "
                          "that wrapped the ring (spelt the same way)")
    ciphertext = str(doc["ciphertext"])
    cached = _unwrapped.get((ref, ciphertext))
    if cached is not None:
        return cached
    plaintext = kms.decrypt(ciphertext)
    _remember(ref, ciphertext, plaintext)
    return plaintext


def _remember(ref: str, ciphertext: str, plaintext: bytes) -> None:
    if len(_unwrapped) >= _CACHE_MAX:
        _unwrapped.pop(next(iter(_unwrapped)), None)
    _unwrapped[(ref, ciphertext)] = plaintext


def forget() -> None:
    """Drop every unwrapped ring this process holds (tests; a process that wants the
    next open to ask the KMS again)."""
    _unwrapped.clear()
