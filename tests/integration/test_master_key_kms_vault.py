"""The master key ring wrapped by a Vault / OpenBao Transit key
(KEYSAFE_MASTER_KEY_KMS=vault-transit:<mount>/<key>), against a real ``bao server -dev``
on loopback, through the real ``keysafe`` script (a fresh process per command)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from bao_fixtures import BaoServer, bao, free_port  # noqa: F401 - bao: module fixture
from kms_helpers import (
    Cli,
    init_put_get_rekey_doctor,
    missing_sdk_names_the_extra,
    wrap_unwrap_round_trip,
    wrapped_doc,
)

from keysafe.cli import exitcodes

hvac = pytest.importorskip("hvac")

MOUNT, KEY = "transit", "keysafe"
REF = f"vault-transit:{MOUNT}/{KEY}"
AD = base64.b64encode(b"keysafe=master-key-ring").decode()


@pytest.fixture(scope="module")
def transit(bao: BaoServer) -> Any:  # noqa: F811
    """The Transit engine with one key, set up with hvac; a root client."""
    c = hvac.Client(url=bao.url, token=bao.token)
    c.sys.enable_secrets_engine("transit", path=MOUNT)
    c.secrets.transit.create_key(KEY, mount_point=MOUNT)
    c.secrets.transit.create_key("other", mount_point=MOUNT)
    return c


@pytest.fixture
def cli(tmp_path: Path, bao: BaoServer, transit: Any) -> Cli:  # noqa: F811
    return Cli(tmp_path / "home", KEYSAFE_MASTER_KEY_KMS=REF, VAULT_ADDR=bao.url,
               VAULT_TOKEN=bao.token)


def plaintext_ring(transit: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """Decrypted by a plain hvac client: the plaintext key file under the purpose."""
    r = transit.secrets.transit.decrypt_data(KEY, doc["ciphertext"], mount_point=MOUNT,
                                             associated_data=AD)
    ring: dict[str, Any] = json.loads(base64.b64decode(r["data"]["plaintext"]))
    return ring


def test_init_put_get_rekey_and_doctor(cli: Cli, transit: Any) -> None:
    init_put_get_rekey_doctor(cli, REF, lambda doc: plaintext_ring(transit, doc))
    assert wrapped_doc(cli.key_file)["ciphertext"].startswith("vault:v1:")


def test_wrap_unwrap_round_trip(cli: Cli, transit: Any) -> None:
    wrap_unwrap_round_trip(cli, lambda doc: plaintext_ring(transit, doc))


def test_another_transit_key_names_both(cli: Cli) -> None:
    cli("init")
    r = cli("get", "a", "--org", "acme", KEYSAFE_MASTER_KEY_KMS=f"vault-transit:{MOUNT}/other")
    assert r.code == exitcodes.CONFIG
    assert REF in r.err
    assert f"vault-transit:{MOUNT}/other" in r.err


def test_vault_down_is_backend_unavailable(cli: Cli) -> None:
    cli("init")
    cli.put("a", "value-a")
    before = cli.key_file.read_bytes()
    for args in (("get", "a", "--org", "acme"), ("rekey",), ("master-key", "unwrap", "--yes")):
        r = cli(*args, VAULT_ADDR=f"http://127.0.0.1:{free_port()}")
        assert r.code == exitcodes.UNAVAILABLE, (args, r.err)
        assert f"KMS {REF}" in r.err
        assert cli.key_file.read_bytes() == before


def test_tampered_ciphertext_is_an_integrity_error(cli: Cli) -> None:
    cli("init")
    cli.put("a", "value-a")
    doc = json.loads(cli.key_file.read_text())
    body = bytearray(base64.b64decode(doc["ciphertext"].removeprefix("vault:v1:")))
    body[-1] ^= 0x01
    doc["ciphertext"] = "vault:v1:" + base64.b64encode(bytes(body)).decode()
    cli.key_file.write_text(json.dumps(doc))
    r = cli.get("a")
    assert r.code == exitcodes.INTEGRITY, r.err
    assert "message authentication failed" in r.err
    assert REF in r.err


def test_a_token_without_decrypt_is_denied_before_anything_is_written(
        cli: Cli, bao: BaoServer, transit: Any) -> None:  # noqa: F811
    """Wrapping asks Transit to decrypt its answer first: a one-way policy leaves the
    plaintext file in place, never an unreadable wrapped one."""
    transit.sys.create_or_update_policy(
        "keysafe-encrypt-only", f'path "{MOUNT}/encrypt/{KEY}" {{ capabilities = ["update"] }}')
    token = transit.auth.token.create(policies=["keysafe-encrypt-only"])["auth"]["client_token"]
    cli("init", KEYSAFE_MASTER_KEY_KMS=None)
    before = cli.key_file.read_bytes()
    r = cli("master-key", "wrap", "--yes", VAULT_TOKEN=token)
    assert r.code == exitcodes.PERMISSION_DENIED, r.err
    assert REF in r.err
    assert cli.key_file.read_bytes() == before

    # The documented policy (encrypt and decrypt, no create) is enough.
    transit.sys.create_or_update_policy("keysafe-master-key", (
        f'path "{MOUNT}/encrypt/{KEY}" {{ capabilities = ["update"] }}\n'
        f'path "{MOUNT}/decrypt/{KEY}" {{ capabilities = ["update"] }}\n'))
    token = transit.auth.token.create(policies=["keysafe-master-key"])["auth"]["client_token"]
    r = cli("master-key", "wrap", "--yes", VAULT_TOKEN=token)
    assert r.code == 0, r.err
    assert cli.get("missing", VAULT_TOKEN=token).code == exitcodes.NOT_FOUND


def test_malformed_reference_is_a_config_error(cli: Cli) -> None:
    for ref in ("vault-transit:keysafe", "gcpkms:x", "awskms:"):
        r = cli("get", "a", "--org", "acme", KEYSAFE_MASTER_KEY_KMS=ref)
        assert r.code == exitcodes.CONFIG, (ref, r.err)
        assert "KEYSAFE_MASTER_KEY_KMS" in r.err


def test_missing_hvac_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing_sdk_names_the_extra(monkeypatch, tmp_path, "hvac", REF, "vault")


def test_key_rotation_then_rewrap(tmp_path: Path, bao: BaoServer,  # noqa: F811
                                  transit: Any) -> None:
    """After a Transit key rotation the ring stays readable; raising
    min_decryption_version before re-wrapping is a configuration error naming it;
    `master-key rewrap` moves the ring to the newest version."""
    transit.secrets.transit.create_key("rotating", mount_point=MOUNT)
    ref = f"vault-transit:{MOUNT}/rotating"
    cli = Cli(tmp_path / "home", KEYSAFE_MASTER_KEY_KMS=ref, VAULT_ADDR=bao.url,
              VAULT_TOKEN=bao.token)
    assert cli("init").code == 0
    cli.put("a", "rotating-value")
    assert wrapped_doc(cli.key_file)["ciphertext"].startswith("vault:v1:")
    transit.secrets.transit.rotate_key("rotating", mount_point=MOUNT)
    assert cli.get("a").out == "rotating-value"  # old versions still decrypt
    transit.secrets.transit.update_key_configuration("rotating", mount_point=MOUNT,
                                                     min_decryption_version=2)
    r = cli.get("a")
    assert r.code == exitcodes.CONFIG
    assert "min_decryption_version" in r.err
    transit.secrets.transit.update_key_configuration("rotating", mount_point=MOUNT,
                                                     min_decryption_version=1)
    r = cli("master-key", "rewrap", "--yes", "--json")
    assert r.code == 0, r.err
    assert wrapped_doc(cli.key_file)["ciphertext"].startswith("vault:v2:")
    transit.secrets.transit.update_key_configuration("rotating", mount_point=MOUNT,
                                                     min_decryption_version=2)
    assert cli.get("a").out == "rotating-value"


def test_plain_http_to_another_host_is_refused(tmp_path: Path) -> None:
    """The ring would cross the connection: refused before any request."""
    cli = Cli(tmp_path / "home", KEYSAFE_MASTER_KEY_KMS=REF,
              VAULT_ADDR="http://vault.example.invalid:8200", VAULT_TOKEN="t")
    r = cli("init")
    assert r.code == exitcodes.CONFIG
    assert "not https" in r.err
    assert not cli.key_file.exists()
