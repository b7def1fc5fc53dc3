"""Azure Key Vault (``azurekv:https://<vault>.vault.azure.net/keys/<key>``), through
azure-keyvault-keys (the ``azure`` extra).

A Key Vault RSA key encrypts at most a few hundred bytes, less than a key ring, so the
ring is sealed as Key Vault's own documentation prescribes for larger data: under a
fresh AES-256-GCM data key (``cryptography``), with the purpose as associated data, and
that data key is wrapped by the vault key (WrapKey, RSA-OAEP-256). The text kept in the
wrapped document is base64 of a small JSON object::

    {"v": 2, "kid": "https://<vault>/keys/<key>/<version>", "alg": "RSA-OAEP-256",
     "wrapped_key": "<b64>", "nonce": "<b64>", "ciphertext": "<b64>", "sig": "<b64>"}

``kid`` names the key version that wrapped the data key: unwrapping uses that version,
so the ring keeps opening after the key is rotated for as long as that version is
enabled; it must be a version of the configured key (an object naming another vault or
key is refused as altered, and nothing is sent there).

``sig`` is the same key version's RS256 signature (Key Vault's Sign) over the SHA-256 of
the other fields. Wrapping needs only the public key, so without it anyone who had
read the public key and could write the key file could make a ring that opens; the
signature needs the vault's private key, as AWS, GCP and Transit need their Encrypt
permission. It is checked (Verify, locally with the public key when ``get`` is allowed)
before anything is unwrapped. Format 1 (no signature) is refused.

Access: ``wrapKey`` and ``sign`` (init, rekey, wrap), ``unwrapKey`` and ``get`` or
``verify`` (every start). Credentials come from DefaultAzureCredential (workload or
managed identity, environment, Azure CLI).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from typing import Any
from urllib.parse import urlsplit

from keysafe.crypto.kms import PURPOSE_BYTES, KmsKey, call_kms
from keysafe.errors import (
    BackendUnavailable,
    ConfigError,
    IntegrityError,
    KeysafeError,
    PermissionDenied,
)

ALG = "RSA-OAEP-256"
SIGNATURE_ALG = "RS256"
_FORMAT = 2
_FIELDS = ("alg", "ciphertext", "kid", "nonce", "v", "wrapped_key")
_KEY_NAME = re.compile(r"[0-9a-zA-Z-]{1,127}")
_VERSION = re.compile(r"[0-9a-zA-Z]{1,64}")


def parse_key_url(url: str) -> tuple[str, str]:
    """(vault URL, key name) of ``https://<vault>/keys/<key>``; ConfigError otherwise."""
    u = urlsplit(url)
    parts = u.path.strip("/").split("/")
    if (u.scheme != "https" or not u.hostname or u.query or u.fragment or len(parts) != 2
            or parts[0] != "keys" or not _KEY_NAME.fullmatch(parts[1])):
        raise ConfigError(f"KEYSAFE_MASTER_KEY_KMS 'azurekv:{url}': expected "
                          "azurekv:https://<vault>.vault.azure.net/keys/<key> (a key, not "
                          "a key version: unwrapping picks the version that wrapped)")
    return f"https://{u.netloc}", parts[1]


class AzureKeyVaultKey(KmsKey):
    """An Azure Key Vault (or Managed HSM) RSA key wrapping the data key that seals the
    ring."""

    def __init__(self, vault_url: str, name: str, *, credential: Any = None,
                 client_kwargs: dict[str, Any] | None = None) -> None:
        self.vault_url = vault_url.rstrip("/")
        self.name = name
        self._credential = credential
        self._client_kwargs = client_kwargs or {}
        self._clients: dict[str, Any] = {}
        self._sdk: Any = None
        self._exc: Any = None

    @property
    def reference(self) -> str:
        return f"azurekv:{self.vault_url}/keys/{self.name}"

    def _client(self, key_id: str) -> Any:
        client = self._clients.get(key_id)
        if client is not None:
            return client
        from keysafe.backends._sdk import require_sdk

        self._sdk = require_sdk("azure.keyvault.keys.crypto", "azure")
        self._exc = require_sdk("azure.core.exceptions", "azure")
        if self._credential is None:
            identity = require_sdk("azure.identity", "azure")
            self._credential = identity.DefaultAzureCredential()
        kwargs: dict[str, Any] = {"retry_total": 3, "retry_backoff_factor": 0.4,
                                  "retry_backoff_max": 8, **self._client_kwargs}
        try:
            client = self._sdk.CryptographyClient(key_id, self._credential, **kwargs)
        except ValueError as exc:
            raise ConfigError(f"KMS {self.reference}: {exc}") from None
        self._clients[key_id] = client
        return client

    def encrypt(self, plaintext: bytes) -> str:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(12)
        sealed = AESGCM(data_key).encrypt(nonce, plaintext, PURPOSE_BYTES)
        client = self._client(f"{self.vault_url}/keys/{self.name}")
        # Wrapped locally (the client read the public key: its kid has the version) or
        # by the vault (the client then answers with the versionless id it was given):
        # the version comes from Key Vault's own answer when there is one.
        answered: list[str] = []

        def kid_of(pipeline_response: Any) -> None:
            try:
                kid = pipeline_response.http_response.json().get("kid")
            except Exception:  # not JSON, not an object: the client's own error follows
                return
            if isinstance(kid, str) and kid:
                answered.append(kid)

        # The request carries the data key: a failure is raised with nothing chained.
        result = call_kms(lambda: client.wrap_key(self._sdk.KeyWrapAlgorithm.rsa_oaep_256,
                                                  data_key, raw_response_hook=kid_of),
                          lambda exc: self._map(exc, "wrapKey"), secret=True)
        kid = answered[-1] if answered else str(result.key_id or "")
        signer = self._client(self._key_url(self._version_of(kid)))
        doc: dict[str, Any] = {
            "v": _FORMAT, "kid": kid, "alg": ALG,
            "wrapped_key": base64.b64encode(bytes(result.encrypted_key)).decode(),
            "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(sealed).decode()}
        signed = call_kms(lambda: signer.sign(self._sdk.SignatureAlgorithm.rs256,
                                              _digest(doc)),
                          lambda exc: self._map(exc, "sign"), secret=False)
        doc["sig"] = base64.b64encode(bytes(signed.signature)).decode()
        return base64.b64encode(json.dumps(doc, sort_keys=True).encode()).decode()

    def decrypt(self, ciphertext: str) -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        altered = (f"KMS {self.reference}: the wrapped key ring's ciphertext is not the "
                   "form this key makes (the key file was altered)")
        try:
            doc = json.loads(base64.b64decode(ciphertext, validate=True))
            kid, wrapped = str(doc["kid"]), base64.b64decode(doc["wrapped_key"], validate=True)
            nonce = base64.b64decode(doc["nonce"], validate=True)
            sealed = base64.b64decode(doc["ciphertext"], validate=True)
            signature = base64.b64decode(doc.get("sig", ""), validate=True)
            fmt = doc.get("v")
            ok = fmt in (1, _FORMAT) and doc.get("alg") == ALG and len(nonce) == 12
        except (binascii.Error, ValueError, TypeError, KeyError, AttributeError,
                RecursionError):
            ok = False
        if not ok:
            raise IntegrityError(altered)
        version = self._version_of(kid)  # another vault or key: refused, nothing sent
        if fmt != _FORMAT or not signature:
            raise IntegrityError(f"KMS {self.reference}: the wrapped key ring is not signed "
                                 "by the vault key (a format 1 ring, made before keysafe "
                                 "signed them, or the key file was altered): unwrap it with "
                                 "the keysafe that wrapped it and wrap it again")
        client = self._client(self._key_url(version))
        verified = call_kms(lambda: client.verify(self._sdk.SignatureAlgorithm.rs256,
                                                  _digest(doc), signature),
                            lambda exc: self._map(exc, "verify"), secret=False)
        if not verified.is_valid:
            raise IntegrityError(f"KMS {self.reference}: the wrapped key ring's signature "
                                 "does not verify with the key that it names: the key file "
                                 "was altered")
        result = call_kms(lambda: client.unwrap_key(self._sdk.KeyWrapAlgorithm.rsa_oaep_256,
                                                    wrapped),
                          lambda exc: self._map(exc, "unwrapKey"), secret=False)
        try:
            return AESGCM(bytes(result.key)).decrypt(nonce, sealed, PURPOSE_BYTES)
        except (InvalidTag, ValueError):
            raise IntegrityError(f"KMS {self.reference}: the key ring does not open with the "
                                 "unwrapped data key: it was altered, or sealed for another "
                                 "purpose") from None

    def _key_url(self, version: str) -> str:
        return f"{self.vault_url}/keys/{self.name}/{version}"

    def _version_of(self, kid: str) -> str:
        """The version in ``kid``, which must be a version of this key in this vault."""
        prefix = f"{self.vault_url}/keys/{self.name}/"
        version = kid[len(prefix):] if kid.lower().startswith(prefix.lower()) else ""
        if not _VERSION.fullmatch(version):
            raise IntegrityError(f"KMS {self.reference}: the wrapped key ring names key "
                                 f"{kid[:200]!r}, not a version of this key (the key file "
                                 "was altered)")
        return version

    def _map(self, exc: BaseException, action: str) -> KeysafeError | None:
        """The keysafe error for a Key Vault failure in ``action`` (the operation as Key
        Vault names it: wrapKey, unwrapKey, sign, verify). Key Vault's text is kept only
        for denials (it names the caller and the permission, not the request)."""
        from keysafe.backends.azure import CREDENTIAL_HINT, error_codes, no_credentials

        e = self._exc
        ref = self.reference
        missing = no_credentials(exc, e.ClientAuthenticationError)
        if missing is not None:
            return ConfigError(f"KMS {ref}: no Azure credentials ({missing}); "
                               f"{CREDENTIAL_HINT}")
        status = getattr(exc, "status_code", None)
        codes = error_codes(exc)
        why = ", ".join(sorted(codes)) or (str(status) if status else type(exc).__name__)
        if isinstance(exc, e.ResourceNotFoundError):
            return ConfigError(f"KMS {ref}: the key (or the version that wrapped the ring) "
                               f"does not exist ({why})")
        if status == 403 and codes & {"KeyDisabled", "Disabled"}:
            return ConfigError(f"KMS {ref}: cannot {action} with this key: it is disabled "
                               f"({why})")
        if status == 403 and "KeyOperationForbidden" in codes:
            return ConfigError(f"KMS {ref}: the key does not allow {action} ({why}); its "
                               "operations must include wrapKey, unwrapKey, sign and verify "
                               "(az keyvault key set-attributes --ops wrapKey unwrapKey sign "
                               "verify)")
        if isinstance(exc, e.ClientAuthenticationError) or status in (401, 403):
            message = str(getattr(exc, "message", "") or "").splitlines()
            return PermissionDenied(f"KMS {ref} denied {action} "
                                    f"({message[0][:300] if message else why})")
        if isinstance(exc, e.ServiceRequestError | e.ServiceResponseError) \
                or status in (408, 429, 500, 502, 503, 504):
            return BackendUnavailable(f"KMS {ref} is unavailable or throttling ({why}); "
                                      "retry later")
        if status == 400 and action in ("unwrapKey", "verify"):
            return IntegrityError(f"KMS {ref} refused to {action} the wrapped key ring "
                                  f"({why}): it was altered, or made by another key")
        if status == 400:
            return ConfigError(f"KMS {ref} refused to {action} with this key ({why}): is it "
                               "an RSA key that allows wrapKey, unwrapKey, sign and verify?")
        if isinstance(exc, e.AzureError):
            return KeysafeError(f"KMS {ref}: {action} failed ({type(exc).__name__})")
        return None


#: Put before what is signed, so a signature the key makes for anything else (a digest
#: of some other data) never passes for a ring's.
_SIGNED_CONTEXT = b"keysafe master key ring envelope v2\0"


def _digest(doc: dict[str, Any]) -> bytes:
    """SHA-256 of the signed fields of a wrapped-ring document, in one canonical form."""
    signed = {k: doc[k] for k in _FIELDS}
    return hashlib.sha256(_SIGNED_CONTEXT + json.dumps(
        signed, sort_keys=True, separators=(",", ":")).encode()).digest()
