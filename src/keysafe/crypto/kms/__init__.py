"""External key-management services that wrap the master key ring
(``KEYSAFE_MASTER_KEY_KMS``).

keysafe never wraps the ring itself: the KMS encrypts the serialised ring under a key
that never leaves it, and decrypts it once per process at start (``wrapped.py`` keeps
the result for the process). One small class per KMS behind the ``Kms`` protocol, in a
module of its own; each only translates its SDK and maps its errors, always naming the
KMS reference, never a key.

References (``scheme:rest``):

- ``awskms:<key id | key ARN | alias/name>``: AWS KMS through boto3, region and
  endpoint from the standard AWS environment (AWS_REGION / AWS_DEFAULT_REGION,
  AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_KMS, credentials chain). ``aws.py``.
- ``vault-transit:<mount>/<key>``: Vault or OpenBao Transit through hvac, reached and
  logged in to exactly as the vault backend is (VAULT_ADDR, VAULT_TOKEN,
  VAULT_NAMESPACE, and the vault profile's options when the backend is vault).
  ``vault.py``.
- ``gcpkms:projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>``: GCP Cloud KMS
  through google-cloud-kms, with application-default credentials; the API endpoint
  from KEYSAFE_MASTER_KEY_KMS_ENDPOINT when set (a Private Service Connect endpoint).
  ``gcp.py``.
- ``azurekv:https://<vault>.vault.azure.net/keys/<key>``: an Azure Key Vault (or
  Managed HSM) RSA key through azure-keyvault-keys, with DefaultAzureCredential; it
  wraps a data key that seals the ring (an RSA key cannot encrypt a whole ring).
  ``azure.py``.

SDKs are imported on the first call, never at import time or construction.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from keysafe.errors import ConfigError, KeysafeError

if TYPE_CHECKING:
    from keysafe.config import Settings

_T = TypeVar("_T")

#: What a wrapped ring is for, bound into every ciphertext (AWS EncryptionContext,
#: Transit and Cloud KMS associated data): a ciphertext made for anything else does not
#: decrypt here.
PURPOSE = {"keysafe": "master-key-ring"}
PURPOSE_BYTES = b"keysafe=master-key-ring"
PURPOSE_AD = base64.b64encode(PURPOSE_BYTES).decode()
SCHEMES = ("awskms", "vault-transit", "gcpkms", "azurekv")
#: The reference forms, for messages.
REFERENCE_FORMS = ("awskms:<key id, ARN or alias/name>, vault-transit:<mount>/<key>, "
                   "gcpkms:projects/<project>/locations/<location>/keyRings/<ring>/"
                   "cryptoKeys/<key> or azurekv:https://<vault>.vault.azure.net/keys/<key>")
_GCP_KEY = re.compile(r"projects/[A-Za-z0-9.:_-]+/locations/[a-z0-9-]+/keyRings/"
                      r"[A-Za-z0-9_-]{1,63}/cryptoKeys/[A-Za-z0-9_-]{1,63}")


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


class KmsKey:
    """What every KMS key class shares: shown by its reference (which is not secret)."""

    @property
    def reference(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reference!r})"


def call_kms(fn: Callable[[], _T], mapper: Callable[[BaseException], KeysafeError | None],
             *, secret: bool) -> _T:
    """One KMS call, a failure mapped by ``mapper`` (None: raised as it is). ``secret``:
    the request carries key material (the ring, a data key), so the SDK's error (which
    may hold the request) is never raised or chained: what is raised is the mapped
    error, or the mapper's own KeysafeError, or a KeysafeError naming only the type,
    each with no cause, context or traceback to reach it."""
    try:
        return fn()
    except KeysafeError:
        raise
    except Exception as exc:
        if not secret:
            mapped = mapper(exc)
            if mapped is None:
                raise
            raise mapped from exc
        try:
            mapped = mapper(exc)
        except KeysafeError as own:  # e.g. an SDK part the mapper needs is missing
            mapped = own
        except Exception:
            mapped = None
        if mapped is None:
            mapped = KeysafeError(f"the KMS call failed ({type(exc).__name__})")
        mapped.__cause__ = mapped.__context__ = None
        mapped.__traceback__ = None
    raise mapped  # outside the handler: nothing chained


def kms_for(reference: str, settings: Settings | None = None) -> Kms:
    """The KMS client for a reference (cheap: no SDK is imported yet).

    Raises ConfigError for an unknown scheme or a malformed reference.
    """
    ref = reference.strip()
    scheme, sep, rest = ref.partition(":")
    rest = rest.strip()
    if not sep or scheme not in SCHEMES:
        raise ConfigError(f"KEYSAFE_MASTER_KEY_KMS {ref!r}: expected {REFERENCE_FORMS}")
    if scheme == "awskms":
        if not rest:
            raise ConfigError(f"KEYSAFE_MASTER_KEY_KMS {ref!r}: the AWS KMS key is empty")
        from keysafe.crypto.kms.aws import AwsKms

        return AwsKms(rest)
    if scheme == "gcpkms":
        if not _GCP_KEY.fullmatch(rest):
            raise ConfigError(
                f"KEYSAFE_MASTER_KEY_KMS {ref!r}: expected gcpkms:projects/<project>/"
                "locations/<location>/keyRings/<ring>/cryptoKeys/<key> (a key, not a key "
                "version: decrypting picks the version that encrypted)")
        from keysafe.crypto.kms.gcp import GcpKms

        return GcpKms(rest, endpoint=settings.master_key_kms_endpoint if settings else None)
    if scheme == "azurekv":
        from keysafe.crypto.kms.azure import AzureKeyVaultKey, parse_key_url

        return AzureKeyVaultKey(*parse_key_url(rest))
    mount, _, key = rest.strip("/").rpartition("/")
    if not mount or not key:
        raise ConfigError(f"KEYSAFE_MASTER_KEY_KMS {ref!r}: expected "
                          "vault-transit:<mount>/<key>, e.g. vault-transit:transit/keysafe")
    from keysafe.crypto.kms.vault import VaultTransit

    return VaultTransit(mount, key, settings)


def kms_from_settings(settings: Settings) -> Kms | None:
    """The KMS named by ``master_key_kms``, or None when the ring is not wrapped."""
    ref = settings.master_key_kms
    return kms_for(ref, settings) if ref else None
