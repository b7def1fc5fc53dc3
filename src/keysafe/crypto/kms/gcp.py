"""GCP Cloud KMS (``gcpkms:projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>``),
through google-cloud-kms (the ``gcp`` extra) on its REST transport.

The key is a symmetric ENCRYPT_DECRYPT key. Encrypt uses its primary version; the
ciphertext names the version that made it, so Decrypt needs only the key's name and
keeps working after a rotation for as long as the old version is enabled. The purpose
goes in as additional authenticated data. Every request and answer is checked with
CRC-32C, as Google asks of Cloud KMS clients: a payload corrupted on the way is an
IntegrityError, never a wrong ring.

IAM: ``roles/cloudkms.cryptoKeyEncrypterDecrypter`` on the key (Encrypt for init,
rekey and wrap; Decrypt at every start). Credentials are application-default ones
(GOOGLE_APPLICATION_CREDENTIALS, workload identity, the metadata server, or
``gcloud auth application-default login``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from keysafe.crypto.kms import PURPOSE_BYTES, KmsKey, call_kms
from keysafe.errors import (
    BackendUnavailable,
    ConfigError,
    IntegrityError,
    KeysafeError,
    PermissionDenied,
)

#: Cloud KMS Encrypt takes at most 64 KiB of plaintext.
GCP_MAX_PLAINTEXT = 64 * 1024
_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


def _crc(data: bytes) -> int:
    from keysafe.backends.gcp import crc32c

    return crc32c(data)


class GcpKms(KmsKey):
    """A GCP Cloud KMS symmetric key; Encrypt and Decrypt with the purpose as additional
    authenticated data, each checked end to end with CRC-32C."""

    def __init__(self, name: str, *, endpoint: str | None = None, credentials: Any = None,
                 timeout: float = 30.0, retry_timeout: float = 5.0) -> None:
        self.name = name
        self.endpoint = endpoint or None
        self.timeout = timeout
        self.retry_timeout = retry_timeout
        self._credentials = credentials
        self._client: Any = None
        self._exc: Any = None
        self._transient: tuple[type[BaseException], ...] = ()
        self._retry: Any = None

    @property
    def reference(self) -> str:
        return f"gcpkms:{self.name}"

    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        from keysafe.backends._sdk import require_sdk

        kms = require_sdk("google.cloud.kms_v1", "gcp")
        self._exc = require_sdk("google.api_core.exceptions", "gcp")
        retry = require_sdk("google.api_core.retry", "gcp")
        auth_exc = require_sdk("google.auth.exceptions", "gcp")
        e = self._exc
        transient: list[type[BaseException]] = [
            e.TooManyRequests, e.ServiceUnavailable, e.GatewayTimeout, e.InternalServerError,
            e.BadGateway, e.DeadlineExceeded, e.RetryError, auth_exc.TransportError]
        try:
            requests_exc = require_sdk("requests.exceptions", "gcp")
            transient += [requests_exc.ConnectionError, requests_exc.Timeout]
        except ConfigError:  # pragma: no cover - requests comes with the REST transport
            pass
        self._transient = tuple(transient)
        # Both calls are safe to repeat (Encrypt makes a fresh ciphertext; nothing is
        # stored), so both are retried with backoff on throttling and outages.
        self._retry = retry.Retry(predicate=retry.if_exception_type(*self._transient),
                                  initial=0.1, maximum=2.0, multiplier=2.0,
                                  timeout=self.retry_timeout)
        credentials = self._credentials
        if credentials is None:
            auth = require_sdk("google.auth", "gcp")
            try:
                credentials, _ = auth.default(scopes=_SCOPES)
            except auth_exc.DefaultCredentialsError as exc:
                raise ConfigError(
                    f"KMS {self.reference}: no GCP credentials ({exc}); run `gcloud auth "
                    "application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
                ) from None
        if self.endpoint and "://" in self.endpoint:
            from urllib.parse import urlsplit

            from keysafe.hosts import cleartext_to_another_machine

            u = urlsplit(self.endpoint)
            if cleartext_to_another_machine(u.scheme, u.hostname):
                raise ConfigError(f"KMS {self.reference}: the endpoint {u.scheme}://"
                                  f"{u.hostname} is not https, and the key ring would cross "
                                  "the network in the clear: use an https:// endpoint")
        options = {"api_endpoint": self.endpoint} if self.endpoint else None
        try:
            self._client = kms.KeyManagementServiceClient(
                credentials=credentials, transport="rest", client_options=options)
        except Exception as exc:  # bad options, an endpoint it cannot use
            raise ConfigError(f"KMS {self.reference}: cannot create a client "
                              f"({type(exc).__name__})") from None
        return self._client

    def encrypt(self, plaintext: bytes) -> str:
        if len(plaintext) > GCP_MAX_PLAINTEXT:
            raise ConfigError(f"KMS {self.reference}: the key ring is {len(plaintext)} bytes "
                              f"serialised; Cloud KMS encrypts at most {GCP_MAX_PLAINTEXT} "
                              "(drop retired keys with `keysafe rekey`)")
        client = self._connect()
        request = {"name": self.name, "plaintext": plaintext,
                   "additional_authenticated_data": PURPOSE_BYTES,
                   "plaintext_crc32c": _crc(plaintext),
                   "additional_authenticated_data_crc32c": _crc(PURPOSE_BYTES)}
        # The request carries the ring: a failure is raised with nothing chained.
        resp = call_kms(lambda: client.encrypt(request=request, retry=self._retry,
                                               timeout=self.timeout),
                        lambda exc: self._map(exc, "encrypt"), secret=True)
        ciphertext = bytes(resp.ciphertext)
        if not (resp.verified_plaintext_crc32c
                and resp.verified_additional_authenticated_data_crc32c):
            raise IntegrityError(f"KMS {self.reference} did not confirm the checksums of "
                                 "the request: it may have been corrupted on the way; "
                                 "nothing was written")
        if resp.ciphertext_crc32c is None or _crc(ciphertext) != int(resp.ciphertext_crc32c):
            raise IntegrityError(f"KMS {self.reference}: the ciphertext's checksum is "
                                 "missing or does not match (corrupted on the way); nothing "
                                 "was written")
        return base64.b64encode(ciphertext).decode()

    def decrypt(self, ciphertext: str) -> bytes:
        try:
            blob = base64.b64decode(ciphertext, validate=True)
        except (binascii.Error, ValueError):
            raise IntegrityError(f"KMS {self.reference}: the wrapped key ring's ciphertext "
                                 "is not base64 (the key file was altered)") from None
        client = self._connect()
        request = {"name": self.name, "ciphertext": blob, "ciphertext_crc32c": _crc(blob),
                   "additional_authenticated_data": PURPOSE_BYTES,
                   "additional_authenticated_data_crc32c": _crc(PURPOSE_BYTES)}
        resp = call_kms(lambda: client.decrypt(request=request, retry=self._retry,
                                               timeout=self.timeout),
                        lambda exc: self._map(exc, "decrypt"), secret=False)
        plaintext = bytes(resp.plaintext)
        if resp.plaintext_crc32c is None or _crc(plaintext) != int(resp.plaintext_crc32c):
            raise IntegrityError(f"KMS {self.reference}: the decrypted key ring's checksum "
                                 "is missing or does not match (corrupted on the way)")
        return plaintext

    def _map(self, exc: BaseException, action: str) -> KeysafeError | None:
        """The keysafe error for a Cloud KMS failure; Google's text is left out except
        for denials (which name the principal and permission, not the request)."""
        from keysafe.backends._sdk import require_sdk
        from keysafe.backends.gcp import api_status

        e = self._exc
        auth_exc = require_sdk("google.auth.exceptions", "gcp")
        ref = self.reference
        status = api_status(exc)
        if isinstance(exc, auth_exc.RefreshError):
            return PermissionDenied(f"KMS {ref}: the GCP credentials were refused "
                                    f"({type(exc).__name__}); sign in again")
        if isinstance(exc, e.NotFound):
            return ConfigError(f"KMS {ref}: the key does not exist")
        if isinstance(exc, e.Forbidden | e.Unauthorized):
            message = str(getattr(exc, "message", "") or "").splitlines()
            return PermissionDenied(f"KMS {ref} denied {action} "
                                    f"({status or getattr(exc, 'code', '')}: "
                                    f"{message[0][:300] if message else ''}); the caller "
                                    "needs roles/cloudkms.cryptoKeyEncrypterDecrypter")
        if isinstance(exc, self._transient):
            return BackendUnavailable(f"KMS {ref} is unavailable or throttling "
                                      f"({type(exc).__name__}); retry later")
        if isinstance(exc, e.BadRequest) and status == "FAILED_PRECONDITION":
            return ConfigError(
                f"KMS {ref}: cannot {action} with this key (FAILED_PRECONDITION): the key "
                "version is disabled or destroyed, or the key is not a symmetric "
                "ENCRYPT_DECRYPT key")
        if isinstance(exc, e.BadRequest) and action == "decrypt":
            return IntegrityError(
                f"KMS {ref} refused to decrypt the wrapped key ring "
                f"({status or 'HTTP 400'}): it was altered, or wrapped by another key or "
                "for another purpose")
        if isinstance(exc, e.BadRequest):
            return ConfigError(f"KMS {ref} refused to {action} the key ring "
                               f"({status or 'HTTP 400'})")
        if isinstance(exc, e.GoogleAPICallError):
            return KeysafeError(f"KMS {ref}: {action} failed ({type(exc).__name__})")
        return None
