"""The master key ring wrapped by AWS KMS (KEYSAFE_MASTER_KEY_KMS=awskms:...), against
moto's KMS in server mode on loopback, through the real ``keysafe`` script: each
command is a fresh process that unwraps the ring once, as a deployment would."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from aws_fixtures import MotoAws, aws  # noqa: F401 - aws: module fixture
from bao_fixtures import free_port
from kms_helpers import Cli, assert_no_key, missing_sdk_names_the_extra, wrapped_doc

from keysafe.cli import exitcodes

PURPOSE = {"keysafe": "master-key-ring"}


@pytest.fixture(scope="module")
def kms_key(aws: MotoAws) -> str:  # noqa: F811
    """A symmetric key with an alias; its reference."""
    kms = aws.client("kms")
    key_id = kms.create_key(Description="keysafe master key ring")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/keysafe-test", TargetKeyId=key_id)
    return "awskms:alias/keysafe-test"


@pytest.fixture
def cli(tmp_path: Path, aws: MotoAws, kms_key: str) -> Cli:  # noqa: F811
    return Cli(tmp_path / "home", KEYSAFE_MASTER_KEY_KMS=kms_key,
               AWS_ENDPOINT_URL_KMS=aws.url)


def plaintext_ring(aws: MotoAws, doc: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    """The ring, decrypted by a plain boto3 client: the format is the plaintext key file
    encrypted under the purpose, nothing keysafe-private."""
    out = aws.client("kms").decrypt(CiphertextBlob=base64.b64decode(doc["ciphertext"]),
                                    EncryptionContext=PURPOSE)
    ring: dict[str, Any] = json.loads(out["Plaintext"])
    return ring


def _closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_init_writes_a_wrapped_key_file_and_values_read_back(
        cli: Cli, aws: MotoAws, kms_key: str) -> None:  # noqa: F811
    r = cli("init", "--json")
    assert r.code == 0, r.err
    assert r.json()["kms"] == kms_key
    doc = wrapped_doc(cli.key_file)
    assert doc["kms"] == kms_key
    assert stat.S_IMODE(cli.key_file.stat().st_mode) == 0o600
    ring = plaintext_ring(aws, doc)
    assert r.json()["active_key_id"] == ring["active"]

    cli.put("service_token", "sk-wrapped-value-1")
    got = cli.get("service_token")  # a fresh process: unwraps again
    assert (got.code, got.out) == (0, "sk-wrapped-value-1"), got.err

    human = cli("init")
    assert "already there" in human.err
    assert_no_key(ring, cli.key_file.read_bytes(), r.out, r.err, human.out, human.err,
                  got.err, (cli.home / "keysafe.db").read_bytes())


def test_first_local_use_creates_the_wrapped_file(cli: Cli, aws: MotoAws) -> None:  # noqa: F811
    r = cli("put", "x", "--org", "acme", input="first-use-value")
    assert r.code == 0, r.err
    assert "wrapped by the KMS key awskms:" in r.err
    doc = wrapped_doc(cli.key_file)
    assert_no_key(plaintext_ring(aws, doc), cli.key_file.read_bytes())
    assert cli.get("x").out == "first-use-value"


def test_doctor_shows_the_reference_and_its_source(cli: Cli, aws: MotoAws,  # noqa: F811
                                                   kms_key: str) -> None:
    cli("init")
    r = cli("doctor", "--json")
    assert r.code == 0, r.err
    data = r.json()
    row = next(s for s in data["settings"] if s["setting"] == "master_key_kms")
    assert row == {"setting": "master_key_kms", "value": kms_key,
                   "source": "env KEYSAFE_MASTER_KEY_KMS"}
    check = next(c for c in data["checks"] if c["name"] == "master key")
    assert check["status"] == "ok"
    assert f"wrapped by KMS {kms_key}" in check["detail"]
    human = cli("doctor")
    assert "master_key_kms" in human.out
    assert kms_key in human.out
    ring = plaintext_ring(aws, wrapped_doc(cli.key_file))
    assert_no_key(ring, r.out, r.err, human.out, human.err)


def test_rekey_keeps_the_ring_wrapped(cli: Cli, aws: MotoAws, kms_key: str) -> None:  # noqa: F811
    cli("init")
    cli.put("a", "value-a")
    old = plaintext_ring(aws, wrapped_doc(cli.key_file))
    r = cli("rekey", "--json")
    assert r.code == 0, r.err
    assert r.json()["kms"] == kms_key
    new = plaintext_ring(aws, wrapped_doc(cli.key_file))
    assert new["active"] == r.json()["active_key_id"] != old["active"]
    assert list(new["keys"]) == [new["active"]]
    assert cli.get("a").out == "value-a"
    assert not list(cli.home.glob("*.tmp"))
    assert_no_key(old, cli.key_file.read_bytes(), r.out, r.err)
    assert_no_key(new, cli.key_file.read_bytes(), r.out, r.err)


def test_wrap_and_unwrap_round_trip(cli: Cli, aws: MotoAws, kms_key: str) -> None:  # noqa: F811
    # A plaintext deployment: no KMS setting.
    assert cli("init", KEYSAFE_MASTER_KEY_KMS=None).code == 0
    cli.put("a", "value-a", KEYSAFE_MASTER_KEY_KMS=None)
    plain = json.loads(cli.key_file.read_text())
    assert "keys" in plain

    # Plaintext while the KMS is configured: refused, clearly.
    r = cli.get("a")
    assert r.code == exitcodes.CONFIG
    assert "plaintext key ring" in r.err
    assert "keysafe master-key wrap" in r.err

    # Declining the question changes nothing.
    r = cli("master-key", "wrap", input="n\n")
    assert r.code != 0
    assert json.loads(cli.key_file.read_text()) == plain

    r = cli("master-key", "wrap", "--yes", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert (out["action"], out["changed"], out["kms"]) == ("wrap", True, kms_key)
    assert out["active_key_id"] == plain["active"]
    doc = wrapped_doc(cli.key_file)
    assert plaintext_ring(aws, doc) == plain
    assert stat.S_IMODE(cli.key_file.stat().st_mode) == 0o600
    assert cli.get("a").out == "value-a"
    assert_no_key(plain, cli.key_file.read_bytes(), r.out, r.err)

    again = cli("master-key", "wrap", "--yes", "--json")
    assert again.code == 0
    assert again.json()["changed"] is False
    assert wrapped_doc(cli.key_file) == doc

    r = cli("master-key", "unwrap", "--yes", "--json")
    assert r.code == 0, r.err
    assert (r.json()["action"], r.json()["changed"]) == ("unwrap", True)
    assert_no_key(plain, r.out, r.err)
    assert json.loads(cli.key_file.read_text()) == plain
    assert stat.S_IMODE(cli.key_file.stat().st_mode) == 0o600
    assert cli.get("a", KEYSAFE_MASTER_KEY_KMS=None).out == "value-a"
    assert not list(cli.home.glob("*.tmp"))


def test_a_wrapped_file_without_the_setting_names_the_reference(
        cli: Cli, kms_key: str) -> None:
    cli("init")
    r = cli.get("a", KEYSAFE_MASTER_KEY_KMS=None)
    assert r.code == exitcodes.CONFIG
    assert f"KEYSAFE_MASTER_KEY_KMS={kms_key}" in r.err


def test_kms_master_key_in_the_environment(cli: Cli, aws: MotoAws,  # noqa: F811
                                           kms_key: str) -> None:
    """KEYSAFE_MASTER_KEY can carry the wrapped ring (a Kubernetes Secret)."""
    raw = base64.b64encode(bytes(range(32))).decode()
    r = cli("master-key", "wrap", "--json", KEYSAFE_MASTER_KEY=f"k1:{raw}")
    assert r.code == 0, r.err
    value = r.json()["wrapped_value"]
    assert r.json()["changed"] is False
    assert not cli.key_file.exists()
    assert raw not in value
    assert raw not in r.out
    doc = json.loads(value)
    assert plaintext_ring(aws, doc) == {"active": "k1", "keys": {"k1": raw}}

    cli.put("a", "from-env-ring", KEYSAFE_MASTER_KEY=value)
    assert cli.get("a", KEYSAFE_MASTER_KEY=value).out == "from-env-ring"
    # The same keys in plaintext read it too (no KMS setting): it is one ring.
    assert cli.get("a", KEYSAFE_MASTER_KEY=f"k1:{raw}",
                   KEYSAFE_MASTER_KEY_KMS=None).out == "from-env-ring"
    doctor = cli("doctor", "--json", KEYSAFE_MASTER_KEY=value)
    assert doctor.code == 0, doctor.err
    assert "wrapped by KMS" in json.dumps(doctor.json())
    assert raw not in doctor.out
    # Unwrapping an environment value would have to print keys: refused.
    r = cli("master-key", "unwrap", "--yes", KEYSAFE_MASTER_KEY=value)
    assert r.code == exitcodes.CONFIG
    assert "never prints" in r.err
    r = cli("rekey", KEYSAFE_MASTER_KEY=value)
    assert r.code == exitcodes.CONFIG
    assert "wrapped key ring" in r.err


def test_another_kms_key_is_a_config_error_naming_both(
        cli: Cli, aws: MotoAws, kms_key: str) -> None:  # noqa: F811
    cli("init")
    cli.put("a", "value-a")
    other = aws.client("kms").create_key()["KeyMetadata"]["KeyId"]
    before = cli.key_file.read_bytes()
    for args in (("get", "a", "--org", "acme"), ("rekey",), ("master-key", "unwrap", "--yes"),
                 ("master-key", "wrap", "--yes")):
        r = cli(*args, KEYSAFE_MASTER_KEY_KMS=f"awskms:{other}")
        assert r.code == exitcodes.CONFIG, (args, r.err)
        assert kms_key in r.err
        assert f"awskms:{other}" in r.err
        assert cli.key_file.read_bytes() == before


def test_kms_down_is_backend_unavailable_and_changes_nothing(
        cli: Cli, kms_key: str) -> None:
    cli("init")
    cli.put("a", "value-a")
    before = cli.key_file.read_bytes()
    down = _closed_port_url()
    for args in (("get", "a", "--org", "acme"), ("rekey",),
                 ("master-key", "unwrap", "--yes"), ("doctor",)):
        r = cli(*args, "--json", AWS_ENDPOINT_URL_KMS=down)
        assert r.code == exitcodes.UNAVAILABLE, (args, r.err)
        err = json.loads(r.err.strip().splitlines()[-1])
        assert err["error"] == "backend_unavailable"
        assert kms_key in err["message"]
        assert cli.key_file.read_bytes() == before
    # Converting a plaintext ring while the KMS is down leaves the plaintext file.
    cli("master-key", "unwrap", "--yes")
    plain = cli.key_file.read_bytes()
    r = cli("master-key", "wrap", "--yes", AWS_ENDPOINT_URL_KMS=down)
    assert r.code == exitcodes.UNAVAILABLE
    assert cli.key_file.read_bytes() == plain
    assert not list(cli.home.glob("*.tmp"))


def test_stopped_kms_server(tmp_path: Path, kms_key: str) -> None:
    """A KMS that was there at init and is gone at the next start."""
    from aws_fixtures import start_moto

    moto = start_moto()
    kms = moto.client("kms")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    cli = Cli(tmp_path / "home", KEYSAFE_MASTER_KEY_KMS=f"awskms:{key_id}",
              AWS_ENDPOINT_URL_KMS=moto.url)
    try:
        assert cli("init").code == 0
        cli.put("a", "value-a")
    finally:
        moto.stop()
    r = cli.get("a")
    assert r.code == exitcodes.UNAVAILABLE
    assert f"awskms:{key_id}" in r.err
    assert "unreachable" in r.err


def test_tampered_ciphertext_is_an_integrity_error(cli: Cli) -> None:
    cli("init")
    cli.put("a", "value-a")
    doc = json.loads(cli.key_file.read_text())
    blob = bytearray(base64.b64decode(doc["ciphertext"]))
    blob[-1] ^= 0x01
    doc["ciphertext"] = base64.b64encode(bytes(blob)).decode()
    cli.key_file.write_text(json.dumps(doc))
    r = cli.get("a")
    assert r.code == exitcodes.INTEGRITY, r.err
    assert "altered" in r.err
    doc["ciphertext"] = "not base64!"
    cli.key_file.write_text(json.dumps(doc))
    assert cli.get("a").code == exitcodes.INTEGRITY
    doc["version"] = 2
    cli.key_file.write_text(json.dumps(doc))
    r = cli.get("a")
    assert r.code == exitcodes.CONFIG
    assert "upgrade keysafe" in r.err


def test_missing_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       kms_key: str) -> None:
    missing_sdk_names_the_extra(monkeypatch, tmp_path, "boto3", kms_key, "aws")


def test_rewrap_in_memory_and_onto_another_key(cli: Cli, aws: MotoAws,  # noqa: F811
                                               kms_key: str) -> None:
    cli("init")
    cli.put("a", "value-a")
    doc = wrapped_doc(cli.key_file)
    ring = plaintext_ring(aws, doc)
    # The same key (after a KMS key rotation): a new ciphertext of the same ring.
    r = cli("master-key", "rewrap", "--yes", "--json")
    assert r.code == 0, r.err
    assert (r.json()["action"], r.json()["changed"], r.json()["kms"]) == ("rewrap", True,
                                                                           kms_key)
    again = wrapped_doc(cli.key_file)
    assert again["ciphertext"] != doc["ciphertext"]
    assert plaintext_ring(aws, again) == ring
    # Onto another KMS key: --from names the one that wrapped it.
    other = aws.client("kms").create_key()["KeyMetadata"]["KeyId"]
    new_ref = f"awskms:{other}"
    r = cli("master-key", "rewrap", "--yes", KEYSAFE_MASTER_KEY_KMS=new_ref)
    assert r.code == exitcodes.CONFIG  # without --from: wrapped by another key
    assert kms_key in r.err
    r = cli("master-key", "rewrap", "--yes", "--from", kms_key, "--json",
            KEYSAFE_MASTER_KEY_KMS=new_ref)
    assert r.code == 0, r.err
    moved = wrapped_doc(cli.key_file)
    assert moved["kms"] == new_ref
    assert plaintext_ring(aws, moved) == ring
    assert cli.get("a", KEYSAFE_MASTER_KEY_KMS=new_ref).out == "value-a"
    assert cli.get("a").code == exitcodes.CONFIG  # the old reference no longer fits
    assert_no_key(ring, cli.key_file.read_bytes(), r.out, r.err)
    assert not list(cli.home.glob("*.tmp"))
    # A plaintext ring is wrap's job.
    r = cli("master-key", "rewrap", "--yes", KEYSAFE_MASTER_KEY_KMS=new_ref,
            KEYSAFE_MASTER_KEY=base64.b64encode(bytes(32)).decode())
    assert r.code == exitcodes.CONFIG
    assert "master-key wrap" in r.err


def test_a_ciphertext_without_the_purpose_is_refused(cli: Cli, aws: MotoAws,  # noqa: F811
                                                     kms_key: str) -> None:
    """The ring is bound to its purpose: the same key's ciphertext of a ring made for
    anything else (no EncryptionContext) does not unwrap."""
    cli("init")
    doc = wrapped_doc(cli.key_file)
    ring = plaintext_ring(aws, doc)
    blob = aws.client("kms").encrypt(KeyId=kms_key.partition(":")[2],
                                     Plaintext=json.dumps(ring).encode())["CiphertextBlob"]
    cli.key_file.write_text(json.dumps({**doc, "ciphertext": base64.b64encode(blob).decode()}))
    r = cli.get("a")
    assert r.code in (exitcodes.INTEGRITY, exitcodes.PERMISSION_DENIED), r.err
    assert kms_key in r.err
