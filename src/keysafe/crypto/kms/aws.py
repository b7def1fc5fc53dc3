"""AWS KMS: a symmetric key, through boto3 (``awskms:<key id | key ARN | alias/name>``)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from keysafe.crypto.kms import PURPOSE, KmsKey, call_kms
from keysafe.errors import BackendUnavailable, ConfigError, IntegrityError, KeysafeError, NotFound

#: AWS KMS Encrypt takes at most 4096 bytes of plaintext (a ring of about 50 keys).
AWS_MAX_PLAINTEXT = 4096


class AwsKms(KmsKey):
    """A symmetric AWS KMS key; Encrypt and Decrypt with the purpose as EncryptionContext.

    IAM: kms:Encrypt (init, rekey, wrap) and kms:Decrypt (every start) on the key.
    """

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        self._client: Any = None
        self._sdk: Any = None

    @property
    def reference(self) -> str:
        return f"awskms:{self.key_id}"

    def _connect(self) -> tuple[Any, Any]:
        if self._client is None:
            from keysafe.backends import _aws

            self._sdk = _aws.load_sdk()
            self._client = _aws.make_client("kms", _aws.ClientOptions(),
                                            store=f"KMS {self.reference}")
        return self._client, self._sdk

    def encrypt(self, plaintext: bytes) -> str:
        if len(plaintext) > AWS_MAX_PLAINTEXT:
            raise ConfigError(f"KMS {self.reference}: the key ring is {len(plaintext)} bytes "
                              f"serialised; AWS KMS encrypts at most {AWS_MAX_PLAINTEXT} "
                              "(drop retired keys with `keysafe rekey`)")
        blob = self._call("encrypt", secret=True, KeyId=self.key_id,
                          Plaintext=plaintext, EncryptionContext=PURPOSE)["CiphertextBlob"]
        return base64.b64encode(blob).decode()

    def decrypt(self, ciphertext: str) -> bytes:
        try:
            blob = base64.b64decode(ciphertext, validate=True)
        except (binascii.Error, ValueError):
            raise IntegrityError(f"KMS {self.reference}: the wrapped key ring's ciphertext "
                                 "is not base64 (the key file was altered)") from None
        plaintext: bytes = self._call("decrypt", CiphertextBlob=blob,
                                      KeyId=self.key_id,
                                      EncryptionContext=PURPOSE)["Plaintext"]
        return plaintext

    def _call(self, op: str, *, secret: bool = False, **kwargs: Any) -> dict[str, Any]:
        """One KMS call, its failure mapped here."""
        client, sdk = self._connect()
        result: dict[str, Any] = call_kms(lambda: getattr(client, op)(**kwargs),
                                          lambda exc: self._map(sdk, exc, op), secret=secret)
        return result

    def _map(self, sdk: Any, exc: BaseException, action: str) -> KeysafeError | None:
        from keysafe.backends import _aws

        ref = self.reference
        code = _aws.error_code(sdk, exc)
        if code in ("InvalidCiphertextException", "IncorrectKeyException"):
            return IntegrityError(
                f"KMS {ref} refused to decrypt the wrapped key ring ({code}): it was "
                "altered, or wrapped by another key or for another purpose")
        if code in ("NotFoundException", "DisabledException", "KMSInvalidStateException",
                    "InvalidKeyUsageException", "KeyUnavailableException"):
            retry = code == "KeyUnavailableException"
            cls = BackendUnavailable if retry else ConfigError
            return cls(f"KMS {ref}: cannot {action} with this key ({code}); check that "
                       "it exists, is enabled and is a symmetric ENCRYPT_DECRYPT key")
        mapped = _aws.map_error(sdk, exc, store=f"KMS {ref}", action=action,
                                path="the master key ring")
        if isinstance(mapped, NotFound):  # a missing key, in AWS's other spelling
            return ConfigError(f"KMS {ref}: the key does not exist")
        return mapped
