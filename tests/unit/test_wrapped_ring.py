"""The wrapped key ring's format and rules (keysafe.crypto.wrapped, KeyRing with a
``kms``), with a local AES-GCM key standing in for the KMS: the real KMS clients are
tested against moto and OpenBao in tests/integration/test_master_key_kms_*.py."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keysafe.config import load_settings
from keysafe.crypto import wrapped
from keysafe.crypto.keys import KeyRing, load_keyring
from keysafe.crypto.kms import kms_for
from keysafe.crypto.kms.aws import AwsKms
from keysafe.crypto.kms.azure import AzureKeyVaultKey
from keysafe.crypto.kms.gcp import GcpKms
from keysafe.crypto.kms.vault import VaultTransit
from keysafe.errors import BackendUnavailable, ConfigError, IntegrityError


class LocalKms:
    """A ``Kms`` whose key is in memory; counts its calls; can be switched off."""

    def __init__(self, reference: str = "awskms:alias/local") -> None:
        self.reference = reference
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))
        self.decrypts = 0
        self.down = False

    def encrypt(self, plaintext: bytes) -> str:
        if self.down:
            raise BackendUnavailable(f"KMS {self.reference} is unreachable")
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plaintext, b"ring")).decode()

    def decrypt(self, ciphertext: str) -> bytes:
        if self.down:
            raise BackendUnavailable(f"KMS {self.reference} is unreachable")
        self.decrypts += 1
        raw = base64.b64decode(ciphertext)
        try:
            return self._aead.decrypt(raw[:12], raw[12:], b"ring")
        except InvalidTag:
            raise IntegrityError(f"KMS {self.reference}: altered") from None


@pytest.fixture(autouse=True)
def _fresh_process_cache() -> None:
    wrapped.forget()


def _forms(ring: KeyRing) -> list[bytes]:
    out = []
    for kid in ring.ids:
        raw = ring.key(kid)
        out += [raw, base64.b64encode(raw), raw.hex().encode()]
    return out


def test_save_writes_only_the_wrapped_form_and_reads_back(tmp_path: Path) -> None:
    kms = LocalKms()
    ring = KeyRing.generate().with_kms(kms)
    path = ring.save(tmp_path / "master.key")
    doc = json.loads(path.read_text())
    assert set(doc) == {"format", "version", "kms", "ciphertext"}
    assert (doc["format"], doc["version"], doc["kms"]) == (wrapped.FORMAT, 1, kms.reference)
    for form in _forms(ring):
        assert form not in path.read_bytes()
        assert form not in repr(ring).encode()
    assert repr(ring).endswith(f"kms={kms.reference!r})")
    back = KeyRing.from_file(path, kms)
    assert (back.active, back.ids, back.kms) == (ring.active, ring.ids, kms)
    assert back.key(ring.active) == ring.key(ring.active)


def test_each_ciphertext_is_unwrapped_once_per_process(tmp_path: Path) -> None:
    kms = LocalKms()
    path = KeyRing.generate().with_kms(kms).save(tmp_path / "master.key")
    assert kms.decrypts == 1  # the check of the fresh ciphertext before writing
    for _ in range(3):
        KeyRing.from_file(path, kms)
    assert kms.decrypts == 1  # remembered from the save
    wrapped.forget()
    KeyRing.from_file(path, kms)
    KeyRing.from_file(path, kms)
    assert kms.decrypts == 2


def test_plaintext_with_a_kms_configured_is_refused(tmp_path: Path) -> None:
    kms = LocalKms()
    path = KeyRing.generate().save(tmp_path / "master.key")
    with pytest.raises(ConfigError, match=r"plaintext key ring.*keysafe master-key wrap"):
        KeyRing.from_file(path, kms)
    raw = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(ConfigError, match="KEYSAFE_MASTER_KEY holds a plaintext"):
        KeyRing.from_env_value(raw, kms)


def test_wrapped_without_or_with_another_kms_names_the_references(tmp_path: Path) -> None:
    kms = LocalKms()
    path = KeyRing.generate().with_kms(kms).save(tmp_path / "master.key")
    with pytest.raises(ConfigError, match=r"KEYSAFE_MASTER_KEY_KMS=awskms:alias/local"):
        KeyRing.from_file(path)
    other = LocalKms("vault-transit:transit/other")
    with pytest.raises(ConfigError) as info:
        KeyRing.from_file(path, other)
    assert "awskms:alias/local" in str(info.value)
    assert "vault-transit:transit/other" in str(info.value)


def test_env_value_holds_the_wrapped_ring() -> None:
    kms = LocalKms()
    ring = KeyRing.generate().with_kms(kms)
    value = json.dumps(ring.to_document())
    back = KeyRing.from_env_value(value, kms)
    assert back.ids == ring.ids
    assert back.path is None
    assert back.kms is kms
    with pytest.raises(ConfigError, match="not valid JSON"):
        KeyRing.from_env_value("{nope", kms)
    with pytest.raises(ConfigError, match="unknown key ring format"):
        KeyRing.from_env_value(json.dumps({"format": "x"}), kms)


def test_a_failing_kms_leaves_the_old_file(tmp_path: Path) -> None:
    kms = LocalKms()
    path = KeyRing.generate().save(tmp_path / "master.key")
    before = path.read_bytes()
    kms.down = True
    with pytest.raises(BackendUnavailable):
        KeyRing.from_file(path).with_kms(kms).save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]


def test_load_keyring_creates_the_file_wrapped(tmp_path: Path) -> None:
    kms = LocalKms()
    ring = load_keyring(None, tmp_path / "master.key", create=True, announce=False, kms=kms)
    assert wrapped.is_wrapped(json.loads((tmp_path / "master.key").read_text()))
    assert ring.kms is kms
    rotated, _ = ring.with_new_active()
    assert rotated.kms is kms
    assert rotated.without(ring.ids).kms is kms


def test_references() -> None:
    assert isinstance(kms_for("awskms:alias/keysafe"), AwsKms)
    aws = kms_for("awskms:arn:aws:kms:eu-west-1:111122223333:key/1234abcd")
    assert aws.reference == "awskms:arn:aws:kms:eu-west-1:111122223333:key/1234abcd"
    vt = kms_for("vault-transit:team/transit/keysafe")
    assert isinstance(vt, VaultTransit)
    assert (vt.mount, vt.key, vt.reference) == ("team/transit", "keysafe",
                                                "vault-transit:team/transit/keysafe")
    for bad in ("alias/keysafe", "awskms:", "vault-transit:keysafe", "gcpkms:x", "kms:x"):
        with pytest.raises(ConfigError, match="KEYSAFE_MASTER_KEY_KMS"):
            kms_for(bad)


GCP_KEY = "projects/my-proj/locations/europe-west1/keyRings/keysafe/cryptoKeys/ring"


def test_gcp_references(tmp_path: Path) -> None:
    gcp = kms_for(f"gcpkms:{GCP_KEY}")
    assert isinstance(gcp, GcpKms)
    assert (gcp.name, gcp.reference, gcp.endpoint) == (GCP_KEY, f"gcpkms:{GCP_KEY}", None)
    s = load_settings({"KEYSAFE_HOME": str(tmp_path),
                       "KEYSAFE_MASTER_KEY_KMS": f"gcpkms:{GCP_KEY}",
                       "KEYSAFE_MASTER_KEY_KMS_ENDPOINT": "cloudkms-ks.p.googleapis.com"})
    gcp = kms_for(f"gcpkms:{GCP_KEY}", s)
    assert isinstance(gcp, GcpKms)
    assert gcp.endpoint == "cloudkms-ks.p.googleapis.com"
    row = next(r for r in s.describe() if r[0] == "master_key_kms_endpoint")
    assert row[2] == "env KEYSAFE_MASTER_KEY_KMS_ENDPOINT"
    for bad in (f"{GCP_KEY}/cryptoKeyVersions/3",  # a version, not the key
                "projects/p/locations/global/keyRings/r",
                "projects/p/keyRings/r/cryptoKeys/k",
                "projects/p/locations/global/keyRings/r/cryptoKeys/k k"):
        with pytest.raises(ConfigError, match="gcpkms:projects/<project>"):
            kms_for(f"gcpkms:{bad}")


def test_azure_references() -> None:
    az = kms_for("azurekv:https://ks-vault.vault.azure.net/keys/master-ring")
    assert isinstance(az, AzureKeyVaultKey)
    assert (az.vault_url, az.name) == ("https://ks-vault.vault.azure.net", "master-ring")
    assert az.reference == "azurekv:https://ks-vault.vault.azure.net/keys/master-ring"
    hsm = kms_for("azurekv:https://ks.managedhsm.azure.net/keys/ring/")
    assert hsm.reference == "azurekv:https://ks.managedhsm.azure.net/keys/ring"
    for bad in ("http://ks-vault.vault.azure.net/keys/ring",  # never in the clear
                "https://ks-vault.vault.azure.net/keys/ring/0123456789abcdef",  # a version
                "https://ks-vault.vault.azure.net/secrets/ring",
                "https://ks-vault.vault.azure.net/keys/ring_1",
                "https://ks-vault.vault.azure.net/keys/ring?x=1",
                "ks-vault/keys/ring"):
        with pytest.raises(ConfigError, match="azurekv:https://<vault>"):
            kms_for(f"azurekv:{bad}")


def test_azure_ciphertexts_naming_another_key_are_refused_before_any_call() -> None:
    """A key file altered to name another vault (or key) must not send anything there:
    refused as altered, with no client made."""
    az = kms_for("azurekv:https://ks-vault.vault.azure.net/keys/ring")
    assert isinstance(az, AzureKeyVaultKey)

    def doc(kid: str) -> str:
        body = {"v": 1, "alg": "RSA-OAEP-256", "kid": kid,
                "wrapped_key": base64.b64encode(b"k").decode(),
                "nonce": base64.b64encode(b"n" * 12).decode(),
                "ciphertext": base64.b64encode(b"c").decode()}
        return base64.b64encode(json.dumps(body).encode()).decode()

    for kid in ("https://evil.example/keys/ring/0123abcd",
                "https://ks-vault.vault.azure.net/keys/other/0123abcd",
                "https://ks-vault.vault.azure.net/keys/ring/",
                "https://ks-vault.vault.azure.net/keys/ring/0123/../x"):
        with pytest.raises(IntegrityError, match="not a version of this key"):
            az.decrypt(doc(kid))
    for junk in ("not base64!", base64.b64encode(b"[1, 2]").decode(),
                 base64.b64encode(b'{"v": 2}').decode(),
                 base64.b64encode(b"[" * 100_000 + b"]" * 100_000).decode()):  # too deep
        with pytest.raises(IntegrityError, match="altered"):
            az.decrypt(junk)
    # An unsigned envelope (format 1, or no signature) is refused before any call.
    with pytest.raises(IntegrityError, match="not signed by the vault key"):
        az.decrypt(doc("https://ks-vault.vault.azure.net/keys/ring/0123abcd"))
    assert az._clients == {}


def test_the_setting_and_its_source(tmp_path: Path) -> None:
    s = load_settings({"KEYSAFE_HOME": str(tmp_path),
                       "KEYSAFE_MASTER_KEY_KMS": "awskms:alias/keysafe"})
    assert s.master_key_kms == "awskms:alias/keysafe"
    row = next(r for r in s.describe() if r[0] == "master_key_kms")
    assert row == ("master_key_kms", "awskms:alias/keysafe", "env KEYSAFE_MASTER_KEY_KMS")
    (tmp_path / "keysafe.toml").write_text(
        '[keysafe]\nmaster_key_kms = "vault-transit:transit/keysafe"\n')
    s = load_settings({"KEYSAFE_HOME": str(tmp_path)})
    assert s.master_key_kms == "vault-transit:transit/keysafe"
    assert s.sources["master_key_kms"].startswith("file ")


def test_no_sdk_is_imported_until_the_kms_is_called() -> None:
    code = ("import sys, keysafe.crypto.kms as k, keysafe.crypto.keys; "
            "k.kms_for('awskms:alias/x'); k.kms_for('vault-transit:transit/x'); "
            "k.kms_for('gcpkms:projects/p/locations/l/keyRings/r/cryptoKeys/k'); "
            "k.kms_for('azurekv:https://ks.vault.azure.net/keys/ring'); "
            "assert not {'boto3', 'botocore', 'hvac', 'google', 'azure'} & set(sys.modules), "
            "sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_failed_call_carrying_key_material_never_chains_the_sdk_error() -> None:
    """``secret=True``: whatever the mapper does (maps, gives up, fails itself), the
    SDK's error, which may hold the request, is neither raised nor reachable from what
    is raised; ``secret=False`` keeps it as the cause."""
    from keysafe.crypto.kms import call_kms
    from keysafe.errors import KeysafeError, PermissionDenied

    material = "ring-material-" + os.urandom(8).hex()

    def fails() -> None:
        raise RuntimeError(f"request body: {material}")

    def reachable(exc: BaseException) -> bool:
        seen, todo = set(), [exc]
        while todo:
            e = todo.pop()
            if id(e) in seen:
                continue
            seen.add(id(e))
            if material in str(e):
                return True
            todo += [x for x in (e.__cause__, e.__context__) if x is not None]
        return False

    def mapper_fails(exc: BaseException) -> KeysafeError | None:
        raise ValueError("the mapper broke")

    def mapper_needs_sdk(exc: BaseException) -> KeysafeError | None:
        raise ConfigError("install keysafe[azure]")

    for mapper, kind in ((lambda exc: PermissionDenied("denied"), PermissionDenied),
                         (lambda exc: None, KeysafeError), (mapper_fails, KeysafeError),
                         (mapper_needs_sdk, ConfigError)):
        with pytest.raises(kind) as info:
            call_kms(fails, mapper, secret=True)
        assert not reachable(info.value)
        assert info.value.__traceback__ is None or info.value.__cause__ is None
    with pytest.raises(PermissionDenied) as info:
        call_kms(fails, lambda exc: PermissionDenied("denied"), secret=False)
    assert isinstance(info.value.__cause__, RuntimeError)
