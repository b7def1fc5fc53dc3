"""External key-management services that wrap the master key ring
(``KEYSAFE_MASTER_KEY_KMS``).

keysafe never wraps the ring itself: the KMS encrypts the serialised ring under a key
that never leaves it, and decrypts it once per process at start (``wrapped.py`` keeps
the result for the process). One small class per KMS behind the ``Kms`` protocol; each only
translates its SDK and maps its errors, always naming the KMS reference, never a key.

References (``scheme:rest``):

- ``awskms:<key id | key ARN | alias/name>``: AWS KMS through boto3, region and
  endpoint from the standard AWS environment (AWS_REGION / AWS_DEFAULT_REGION,
  AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_KMS, credentials chain).
- ``vault-transit:<mount>/<key>``: Vault or OpenBao Transit through hvac, reached and
  logged in to exactly as the vault backend is (VAULT_ADDR, VAULT_TOKEN,
  VAULT_NAMESPACE, and the vault profile's options when the backend is vault).

SDKs are imported on the first call, never at import time or construction.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from keysafe.errors import (
    BackendUnavailable,
    ConfigError,
    IntegrityError,
    InvalidValue,
    KeysafeError,
    NotFound,
)

if TYPE_CHECKING:
    from keysafe.config import Settings

_T = TypeVar("_T")

#: What a wrapped ring is for, bound into every ciphertext (AWS EncryptionContext,
#: Transit associated data): a ciphertext made for anything else does not decrypt here.
PURPOSE = {"keysafe": "master-key-ring"}
_PURPOSE_AD = base64.b64encode(b"keysafe=master-key-ring").decode()
#: AWS KMS Encrypt takes at most 4096 bytes of plaintext (a ring of about 50 keys).
AWS_MAX_PLAINTEXT = 4096
SCHEMES = ("awskms", "vault-transit")


class Kms(Protocol):
    """Encrypts and decrypts the serialised key ring with a key kept in a KMS."""

    @property
    def reference(self) -> str:
        """The KEYSAFE_MASTER_KEY_KMS value naming the key (not secret)."""
        ...

    def encrypt(self, plaintext: bytes) -> str:
        """The KMS ciphertext of ``plaintext``, as text."""
        ...

    def decrypt(self, ciphertext: str) -> bytes:
        """The plaintext of ``ciphertext``; IntegrityError if it was altered or made
        by another key or for another purpose."""
        ...


def kms_for(reference: str, settings: Settings | None = None) -> Kms:
    """The KMS client for a reference (cheap: no SDK is imported yet).

    Raises ConfigError for an unknown scheme or a malformed reference.
    """
    ref = reference.strip()
    scheme, sep, rest = ref.partition(":")
    rest = rest.strip()
    if not sep or scheme not in SCHEMES:
        raise ConfigError(f"KEYSAFE_MASTER_KEY_KMS {ref!r}: expected awskms:<key id, ARN "
                          "or alias/name> or vault-transit:<mount>/<key>")
    if scheme == "awskms":
        if not rest:
            raise ConfigError(f"KEYSAFE_MASTER_KEY_KMS {ref!r}: the AWS KMS key is empty")
        return AwsKms(rest)
    mount, _, key = rest.strip("/").rpartition("/")
    if not mount or not key:
        raise ConfigError(f"KEYSAFE_MASTER_KEY_KMS {ref!r}: expected "
                          "vault-transit:<mount>/<key>, e.g. vault-transit:transit/keysafe")
    return VaultTransit(mount, key, settings)


def kms_from_settings(settings: Settings) -> Kms | None:
    """The KMS named by ``master_key_kms``, or None when the ring is not wrapped."""
    ref = settings.master_key_kms
    return kms_for(ref, settings) if ref else None


class AwsKms:
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

    def __repr__(self) -> str:
        return f"AwsKms({self.reference!r})"

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
        """One KMS call, its failure mapped here. ``secret``: the request carries the
        ring, so the AWS error is raised unchained (a traceback would print it)."""
        client, sdk = self._connect()
        try:
            result: dict[str, Any] = getattr(client, op)(**kwargs)
            return result
        except Exception as exc:
            mapped = self._map(sdk, exc, op)
            if mapped is None:
                raise
            if not secret:
                raise mapped from exc
        raise mapped  # outside the handler: nothing chained

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


class VaultTransit:
    """A Vault / OpenBao Transit key (aes256-gcm96, the default type, or
    chacha20-poly1305), with the purpose as associated data.

    Policy: ``update`` on ``<mount>/encrypt/<key>`` and ``<mount>/decrypt/<key>``
    (without ``create``, a mistyped key name is an error rather than a new key).
    """

    def __init__(self, mount: str, key: str, settings: Settings | None = None) -> None:
        self.mount = mount
        self.key = key
        self._settings = settings
        self._backend: Any = None

    @property
    def reference(self) -> str:
        return f"vault-transit:{self.mount}/{self.key}"

    def __repr__(self) -> str:
        return f"VaultTransit({self.reference!r})"

    def _vault(self) -> Any:
        """A VaultBackend on the Transit mount: the vault backend's address, namespace,
        login, TLS, retries and error mapping. Only with KEYSAFE_BACKEND=vault are the
        vault profile's options (AppRole, Kubernetes login, TLS) used; otherwise
        VAULT_ADDR, VAULT_TOKEN (or ~/.vault-token) and VAULT_NAMESPACE. ConfigError for
        plain http to another host than this one."""
        if self._backend is None:
            from keysafe.backends.vault import VaultBackend

            s = self._settings
            if s is not None and s.backend == "vault":
                opts = dict(s.backend_options)
                opts["mount"] = self.mount
                self._backend = VaultBackend.from_settings(s._replace(backend_options=opts))
            else:
                self._backend = VaultBackend(mount=self.mount)
            from urllib.parse import urlsplit

            from keysafe.hosts import cleartext_to_another_machine

            u = urlsplit(self._backend.url)
            if cleartext_to_another_machine(u.scheme, u.hostname):
                self._backend = None
                raise ConfigError(f"KMS {self.reference}: Vault at {u.scheme}://{u.hostname} "
                                  "is not https, and the key ring would cross the network "
                                  "in the clear: use an https:// VAULT_ADDR")
        return self._backend

    def encrypt(self, plaintext: bytes) -> str:
        def run(c: Any) -> str:
            r = c.secrets.transit.encrypt_data(
                self.key, base64.b64encode(plaintext).decode(), mount_point=self.mount,
                associated_data=_PURPOSE_AD)
            return str(r["data"]["ciphertext"])

        # echo=False: the request carries the ring, so Vault's text is left out.
        return self._run("encrypt", run, echo=False)

    def decrypt(self, ciphertext: str) -> bytes:
        def run(c: Any) -> str:
            r = c.secrets.transit.decrypt_data(self.key, ciphertext, mount_point=self.mount,
                                               associated_data=_PURPOSE_AD)
            return str(r["data"]["plaintext"])

        try:
            return base64.b64decode(self._run("decrypt", run, echo=True), validate=True)
        except IntegrityError:
            raise
        except (binascii.Error, ValueError):
            raise IntegrityError(f"KMS {self.reference} returned a plaintext that is not "
                                 "base64") from None

    def _run(self, action: str, fn: Callable[[Any], _T], *, echo: bool) -> _T:
        ref = self.reference
        try:
            return self._vault().call(fn, echo=echo)  # type: ignore[no-any-return]
        except InvalidValue as exc:  # Vault answered 400: a bad ciphertext or key
            if "key not found" in exc.message:
                raise ConfigError(f"KMS {ref}: the Transit key does not exist") from None
            if "disallowed by policy" in exc.message:
                raise ConfigError(f"KMS {ref}: the ring was wrapped with a key version below "
                                  "the Transit key's min_decryption_version: lower it, run "
                                  "`keysafe master-key rewrap`, then raise it again"
                                  ) from None
            if action == "decrypt":
                detail = exc.message.partition(": ")[2] or "rejected"
                raise IntegrityError(f"KMS {ref} refused to decrypt the wrapped key ring "
                                     f"({detail}): it was altered, or wrapped by another "
                                     "key or for another purpose") from None
            raise ConfigError(f"KMS {ref} refused to {action} the key ring (is it an "
                              "aes256-gcm96 or chacha20-poly1305 key?)") from None
        except NotFound:
            raise ConfigError(f"KMS {ref}: no Transit engine is mounted at "
                              f"{self.mount}/") from None
        except KeysafeError as exc:
            # Same kind (unavailable, denied, config), with the KMS reference in front.
            raise type(exc)(f"KMS {ref}: {exc.message}") from None
