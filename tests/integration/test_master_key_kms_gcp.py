"""The master key ring wrapped by a GCP Cloud KMS key
(KEYSAFE_MASTER_KEY_KMS=gcpkms:projects/.../cryptoKeys/<key>), through the real
``keysafe`` script (a fresh process per command) and the official google-cloud-kms
client on its REST transport.

STAND-IN: no GCP server can run here. The KMS is ``standins/gcpkms_standin.py``, a
loopback server speaking Cloud KMS's documented v1 REST API (encrypt, decrypt, CRC-32C
checks, key versions and their states, errors); it is not the real service. The
processes find it through KEYSAFE_MASTER_KEY_KMS_ENDPOINT and get their credentials
the standard way, from GOOGLE_APPLICATION_CREDENTIALS."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bao_fixtures import free_port
from kms_helpers import (
    Cli,
    assert_no_key,
    init_put_get_rekey_doctor,
    missing_sdk_names_the_extra,
    wrap_unwrap_round_trip,
)
from standins.gcpkms_standin import GcpKmsStandin

from keysafe.cli import exitcodes
from keysafe.errors import IntegrityError

kms_v1 = pytest.importorskip("google.cloud.kms_v1")

RING = "projects/ks-test/locations/europe-west1/keyRings/keysafe"
KEY = f"{RING}/cryptoKeys/master-ring"
REF = f"gcpkms:{KEY}"
AAD = b"keysafe=master-key-ring"


@pytest.fixture(scope="module")
def standin() -> Iterator[GcpKmsStandin]:
    server = GcpKmsStandin()
    server.start()
    server.create_key(KEY)
    server.create_key(f"{RING}/cryptoKeys/other")
    server.create_key(f"{RING}/cryptoKeys/signing", purpose="ASYMMETRIC_SIGN")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _reset(standin: GcpKmsStandin) -> Iterator[None]:
    yield
    standin.deny(None)
    standin.fail_next(0)


@pytest.fixture
def cli(tmp_path: Path, standin: GcpKmsStandin) -> Cli:
    creds = standin.authorized_user_file(tmp_path / "adc.json")
    return Cli(tmp_path / "home", KEYSAFE_MASTER_KEY_KMS=REF,
               KEYSAFE_MASTER_KEY_KMS_ENDPOINT=standin.url,
               GOOGLE_APPLICATION_CREDENTIALS=str(creds))


def plain_client(standin: GcpKmsStandin) -> Any:
    """The official client as another team's tooling would use it."""
    return kms_v1.KeyManagementServiceClient(
        credentials=standin.user_credentials(), transport="rest",
        client_options={"api_endpoint": standin.url})


def plaintext_ring(standin: GcpKmsStandin, doc: dict[str, Any],
                   key: str = KEY) -> dict[str, Any]:
    """Decrypted by the plain client: the plaintext key file under the purpose."""
    out = plain_client(standin).decrypt(request={
        "name": key, "ciphertext": base64.b64decode(doc["ciphertext"]),
        "additional_authenticated_data": AAD})
    ring: dict[str, Any] = json.loads(out.plaintext)
    return ring


def test_init_put_get_rekey_and_doctor(cli: Cli, standin: GcpKmsStandin) -> None:
    calls = len(standin.calls)
    report = init_put_get_rekey_doctor(cli, REF, lambda doc: plaintext_ring(standin, doc))
    row = next(s for s in report["settings"] if s["setting"] == "master_key_kms_endpoint")
    assert row["source"] == "env KEYSAFE_MASTER_KEY_KMS_ENDPOINT"
    # Decrypt requests carry only ciphertext: no key of any ring ever written here.
    seen = list(zip(standin.calls, standin.bodies, strict=True))[calls:]
    rings = [json.loads(base64.b64decode(json.loads(b)["plaintext"]))
             for (op, _), b in seen if op == "encrypt"]
    decrypts = [b for (op, _), b in seen if op == "decrypt"]
    assert len(rings) >= 2
    assert decrypts
    for ring in rings:
        assert_no_key(ring, *decrypts)


def test_wrap_unwrap_round_trip(cli: Cli, standin: GcpKmsStandin) -> None:
    wrap_unwrap_round_trip(cli, lambda doc: plaintext_ring(standin, doc))


def test_key_rotation_then_rewrap(tmp_path: Path, standin: GcpKmsStandin) -> None:
    """A rotated key keeps decrypting with the version that encrypted; disabling that
    version stops the process (exit 8, naming the key); `rewrap` moves the ring to the
    primary version, after which the old one can go."""
    key = standin.create_key(f"{RING}/cryptoKeys/rotating")
    ref = f"gcpkms:{key}"
    cli = Cli(tmp_path / "home", KEYSAFE_MASTER_KEY_KMS=ref,
              KEYSAFE_MASTER_KEY_KMS_ENDPOINT=standin.url,
              GOOGLE_APPLICATION_CREDENTIALS=str(standin.authorized_user_file(tmp_path)))
    assert cli("init").code == 0
    cli.put("a", "rotating-value")
    assert standin.rotate(key) == 2
    assert cli.get("a").out == "rotating-value"  # version 1 still decrypts
    standin.set_version_state(key, 1, "DISABLED")
    r = cli.get("a")
    assert r.code == exitcodes.CONFIG, r.err
    assert ref in r.err
    assert "FAILED_PRECONDITION" in r.err
    standin.set_version_state(key, 1, "ENABLED")
    before = cli.key_file.read_bytes()
    r = cli("master-key", "rewrap", "--yes", "--json")
    assert r.code == 0, r.err
    assert cli.key_file.read_bytes() != before
    standin.set_version_state(key, 1, "DISABLED")
    assert cli.get("a").out == "rotating-value"


def test_another_key_names_both(cli: Cli) -> None:
    cli("init")
    other = f"gcpkms:{RING}/cryptoKeys/other"
    r = cli("get", "a", "--org", "acme", KEYSAFE_MASTER_KEY_KMS=other)
    assert r.code == exitcodes.CONFIG
    assert REF in r.err
    assert other in r.err


def test_a_ciphertext_moved_to_another_key_is_an_integrity_error(cli: Cli) -> None:
    """The file says `other`, the setting says `other`: Cloud KMS itself refuses a
    ciphertext that another key made."""
    cli("init")
    doc = json.loads(cli.key_file.read_text())
    other = f"gcpkms:{RING}/cryptoKeys/other"
    doc["kms"] = other
    cli.key_file.write_text(json.dumps(doc))
    r = cli.get("a", KEYSAFE_MASTER_KEY_KMS=other)
    assert r.code == exitcodes.INTEGRITY, r.err
    assert other in r.err


def test_tampered_ciphertext_is_an_integrity_error(cli: Cli) -> None:
    cli("init")
    cli.put("a", "value-a")
    doc = json.loads(cli.key_file.read_text())
    body = bytearray(base64.b64decode(doc["ciphertext"]))
    body[-1] ^= 0x01
    doc["ciphertext"] = base64.b64encode(bytes(body)).decode()
    cli.key_file.write_text(json.dumps(doc))
    r = cli.get("a")
    assert r.code == exitcodes.INTEGRITY, r.err
    assert REF in r.err
    doc["ciphertext"] = "not base64!"
    cli.key_file.write_text(json.dumps(doc))
    r = cli.get("a")
    assert r.code == exitcodes.INTEGRITY, r.err
    assert "not base64" in r.err


@pytest.mark.parametrize(("key", "words"), [("signing", "ENCRYPT_DECRYPT"),
                                            ("missing", "does not exist")])
def test_an_unusable_key_is_a_config_error(tmp_path: Path, standin: GcpKmsStandin,
                                           key: str, words: str) -> None:
    """A key for signing, or none at all: exit 8 naming why, and no key file."""
    cli = Cli(tmp_path / "home", KEYSAFE_MASTER_KEY_KMS=f"gcpkms:{RING}/cryptoKeys/{key}",
              KEYSAFE_MASTER_KEY_KMS_ENDPOINT=standin.url,
              GOOGLE_APPLICATION_CREDENTIALS=str(standin.authorized_user_file(tmp_path)))
    r = cli("init")
    assert r.code == exitcodes.CONFIG, r.err
    assert words in r.err
    assert not cli.key_file.exists()


def test_decrypt_denied_leaves_the_plaintext_file(cli: Cli, standin: GcpKmsStandin) -> None:
    """Wrapping asks Cloud KMS to decrypt its answer first: an identity that may only
    encrypt leaves the plaintext file in place, never an unreadable wrapped one."""
    cli("init", KEYSAFE_MASTER_KEY_KMS=None)
    before = cli.key_file.read_bytes()
    standin.deny("decrypt")
    r = cli("master-key", "wrap", "--yes")
    assert r.code == exitcodes.PERMISSION_DENIED, r.err
    assert REF in r.err
    assert "cryptoKeyEncrypterDecrypter" in r.err
    assert cli.key_file.read_bytes() == before
    standin.deny(None)
    assert cli("master-key", "wrap", "--yes").code == 0


def test_kms_down_is_backend_unavailable_and_changes_nothing(
        cli: Cli, standin: GcpKmsStandin) -> None:
    cli("init")
    cli.put("a", "value-a")
    before = cli.key_file.read_bytes()
    r = cli.get("a", KEYSAFE_MASTER_KEY_KMS_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    assert r.code == exitcodes.UNAVAILABLE, r.err
    assert f"KMS {REF}" in r.err
    standin.fail_next(1000, status=503)
    r = cli("rekey")
    assert r.code == exitcodes.UNAVAILABLE, r.err
    assert cli.key_file.read_bytes() == before
    standin.fail_next(0)
    standin.fail_next(1, status=503)  # one outage is retried away
    assert cli.get("a").out == "value-a"


def test_plain_http_endpoint_on_another_host_is_refused(tmp_path: Path,
                                                       standin: GcpKmsStandin) -> None:
    cli = Cli(tmp_path / "home", KEYSAFE_MASTER_KEY_KMS=REF,
              KEYSAFE_MASTER_KEY_KMS_ENDPOINT="http://kms.example.invalid",
              GOOGLE_APPLICATION_CREDENTIALS=str(standin.authorized_user_file(tmp_path)))
    r = cli("init")
    assert r.code == exitcodes.CONFIG
    assert "not https" in r.err
    assert not cli.key_file.exists()


def test_no_credentials_is_a_config_error(tmp_path: Path, standin: GcpKmsStandin) -> None:
    cli = Cli(tmp_path / "home", KEYSAFE_MASTER_KEY_KMS=REF,
              KEYSAFE_MASTER_KEY_KMS_ENDPOINT=standin.url,
              GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "missing.json"))
    r = cli("init")
    assert r.code == exitcodes.CONFIG, r.err
    assert "GOOGLE_APPLICATION_CREDENTIALS" in r.err
    assert not cli.key_file.exists()


def test_checksums_are_verified(monkeypatch: pytest.MonkeyPatch, standin: GcpKmsStandin) -> None:
    """A payload corrupted between Cloud KMS and keysafe (which the CRC-32C fields are
    there to catch) is an integrity error, never a wrong ring."""
    from keysafe.crypto.kms.gcp import GcpKms

    kms = GcpKms(KEY, endpoint=standin.url, credentials=standin.user_credentials())
    ciphertext = kms.encrypt(b'{"ring": 1}')
    assert kms.decrypt(ciphertext) == b'{"ring": 1}'
    client = kms._connect()
    real_decrypt, real_encrypt = client.decrypt, client.encrypt

    def corrupt_plaintext(**kw: Any) -> Any:
        resp = real_decrypt(**kw)
        resp.plaintext = b'{"ring": 2}'
        return resp

    def unverified(**kw: Any) -> Any:
        resp = real_encrypt(**kw)
        resp.verified_plaintext_crc32c = False
        return resp

    def aad_unverified(**kw: Any) -> Any:
        resp = real_encrypt(**kw)
        resp.verified_additional_authenticated_data_crc32c = False
        return resp

    def corrupt_ciphertext(**kw: Any) -> Any:
        resp = real_encrypt(**kw)
        resp.ciphertext = bytes(resp.ciphertext)[:-1] + b"!"
        return resp

    def without_checksum(real: Any, field_name: str) -> Any:
        # A proxy that drops the field: it arrives unset, and no checksum is no check.
        def call(**kw: Any) -> Any:
            resp = real(**kw)
            setattr(resp, field_name, None)
            return resp
        return call

    monkeypatch.setattr(client, "decrypt", corrupt_plaintext)
    with pytest.raises(IntegrityError, match="checksum"):
        kms.decrypt(ciphertext)
    monkeypatch.setattr(client, "decrypt", without_checksum(real_decrypt, "plaintext_crc32c"))
    with pytest.raises(IntegrityError, match="checksum is missing or does not match"):
        kms.decrypt(ciphertext)
    for fault, words in ((unverified, "did not confirm"), (aad_unverified, "did not confirm"),
                         (corrupt_ciphertext, "checksum is missing or does not match"),
                         (without_checksum(real_encrypt, "ciphertext_crc32c"),
                          "checksum is missing or does not match")):
        monkeypatch.setattr(client, "encrypt", fault)
        with pytest.raises(IntegrityError, match=words):
            kms.encrypt(b'{"ring": 1}')


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing_sdk_names_the_extra(monkeypatch, tmp_path, "google.cloud.kms_v1", REF, "gcp")
