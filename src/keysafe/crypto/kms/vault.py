"""Vault or OpenBao Transit (``vault-transit:<mount>/<key>``), through hvac and the
vault backend's connection."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from keysafe.crypto.kms import PURPOSE_AD, KmsKey
from keysafe.errors import ConfigError, IntegrityError, InvalidValue, KeysafeError, NotFound

if TYPE_CHECKING:
    from keysafe.config import Settings

_T = TypeVar("_T")


class VaultTransit(KmsKey):
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
                associated_data=PURPOSE_AD)
            return str(r["data"]["ciphertext"])

        # echo=False: the request carries the ring, so Vault's text is left out.
        return self._run("encrypt", run, echo=False)

    def decrypt(self, ciphertext: str) -> bytes:
        def run(c: Any) -> str:
            r = c.secrets.transit.decrypt_data(self.key, ciphertext, mount_point=self.mount,
                                               associated_data=PURPOSE_AD)
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
