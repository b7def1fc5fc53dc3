"""The master key ring wrapped by an Azure Key Vault key
(KEYSAFE_MASTER_KEY_KMS=azurekv:https://<vault>/keys/<key>), through the real
``keysafe`` script (a fresh process per command) and the official
azure-keyvault-keys and azure-identity clients.

STAND-IN: no Azure server can run here. The vault is ``standins/azure_keys_standin.py``,
a loopback HTTPS server speaking Key Vault's documented keys REST API (get, wrapKey,
unwrapKey with RSA-OAEP-256, sign and verify with RS256, versions, disabled keys,
challenge authentication, errors)
and an App Service managed-identity token endpoint; it is not the real service. The
processes reach it with no test-only option: DefaultAzureCredential gets its token from
the managed-identity endpoint, and the certificate is trusted through
REQUESTS_CA_BUNDLE."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kms_helpers import (
    Cli,
    audit_outcomes,
    init_put_get_rekey_doctor,
    missing_sdk_names_the_extra,
    wrap_unwrap_round_trip,
    wrapped_doc,
)
from standins.azure_keys_standin import AzureKeyVaultKeysStandin
from standins.azure_standin import FakeTokenCredential, make_certificate

from keysafe.cli import exitcodes

crypto = pytest.importorskip("azure.keyvault.keys.crypto")

AAD = b"keysafe=master-key-ring"


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureKeyVaultKeysStandin]:
    cert, key = make_certificate(tmp_path_factory.mktemp("azure-keys-tls"))
    server = AzureKeyVaultKeysStandin(cert, key)
    server.start()
    server.create_key("master-ring")
    server.create_key("other")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _reset(standin: AzureKeyVaultKeysStandin) -> Iterator[None]:
    yield
    standin.allow(None)
    standin.fail_next(0)


def ref_of(standin: AzureKeyVaultKeysStandin, key: str = "master-ring") -> str:
    return f"azurekv:{standin.vault_url}/keys/{key}"


def cli_for(tmp_path: Path, standin: AzureKeyVaultKeysStandin, key: str = "master-ring") -> Cli:
    return Cli(tmp_path / "home", KEYSAFE_MASTER_KEY_KMS=ref_of(standin, key),
               **standin.managed_identity_env())


@pytest.fixture
def cli(tmp_path: Path, standin: AzureKeyVaultKeysStandin) -> Cli:
    return cli_for(tmp_path, standin)


def envelope(doc: dict[str, Any]) -> dict[str, Any]:
    env: dict[str, Any] = json.loads(base64.b64decode(doc["ciphertext"]))
    return env


def plaintext_ring(standin: AzureKeyVaultKeysStandin, doc: dict[str, Any]) -> dict[str, Any]:
    """Opened with the plain client and ``cryptography``: the documented envelope."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    env = envelope(doc)
    client = crypto.CryptographyClient(env["kid"], FakeTokenCredential(),
                                      **standin.client_kwargs())
    data_key = client.unwrap_key(crypto.KeyWrapAlgorithm.rsa_oaep_256,
                                 base64.b64decode(env["wrapped_key"])).key
    plain = AESGCM(data_key).decrypt(base64.b64decode(env["nonce"]),
                                     base64.b64decode(env["ciphertext"]), AAD)
    ring: dict[str, Any] = json.loads(plain)
    return ring


def test_init_put_get_rekey_and_doctor(cli: Cli, standin: AzureKeyVaultKeysStandin) -> None:
    # The vault sees data keys only, never the ring: in no request body.
    init_put_get_rekey_doctor(cli, ref_of(standin), lambda doc: plaintext_ring(standin, doc),
                              *standin.bodies)
    env = envelope(wrapped_doc(cli.key_file))
    assert env["kid"] == standin.kid("master-ring")  # the version that wrapped
    assert (env["v"], env["alg"]) == (2, "RSA-OAEP-256")
    assert env["sig"]


def test_wrap_unwrap_round_trip(cli: Cli, standin: AzureKeyVaultKeysStandin) -> None:
    wrap_unwrap_round_trip(cli, lambda doc: plaintext_ring(standin, doc))


def test_without_get_the_vault_wraps_and_its_version_is_kept(
        cli: Cli, standin: AzureKeyVaultKeysStandin) -> None:
    """wrapKey and unwrapKey alone (no `get`, a common grant): the client cannot read the
    public key and has the vault wrap; the version comes from the vault's answer."""
    standin.deny("get")
    del standin.calls[:]
    r = cli("init")
    assert r.code == 0, r.err
    assert envelope(wrapped_doc(cli.key_file))["kid"] == standin.kid("master-ring")
    assert any(op == "wrapkey" for op, _ in standin.calls)  # the vault wrapped
    cli.put("a", "value-a")
    assert cli.get("a").out == "value-a"


def test_key_rotation_then_rewrap(tmp_path: Path, standin: AzureKeyVaultKeysStandin) -> None:
    """After a rotation the ring still opens with the version that wrapped it; a
    disabled version stops the process (exit 8, naming the key); `rewrap` moves the
    ring to the current version, after which the old one may be disabled."""
    first = standin.create_key("rotating")
    cli = cli_for(tmp_path, standin, "rotating")
    assert cli("init").code == 0
    cli.put("a", "rotating-value")
    second = standin.rotate("rotating")
    assert cli.get("a").out == "rotating-value"
    version = first.rsplit("/", 1)[1]
    standin.set_enabled("rotating", version, False)
    r = cli.get("a")
    assert r.code == exitcodes.CONFIG, r.err
    assert ref_of(standin, "rotating") in r.err
    assert "disabled" in r.err
    standin.set_enabled("rotating", version, True)
    r = cli("master-key", "rewrap", "--yes", "--json")
    assert r.code == 0, r.err
    assert envelope(wrapped_doc(cli.key_file))["kid"] == second
    standin.set_enabled("rotating", version, False)
    assert cli.get("a").out == "rotating-value"


def test_unwrap_denied_leaves_the_plaintext_file(cli: Cli,
                                                 standin: AzureKeyVaultKeysStandin) -> None:
    """Wrapping asks the vault to unwrap its answer first: an identity that may only
    wrap leaves the plaintext file in place, never an unreadable wrapped one."""
    cli("init", KEYSAFE_MASTER_KEY_KMS=None)
    before = cli.key_file.read_bytes()
    standin.deny("unwrapkey")
    r = cli("master-key", "wrap", "--yes")
    assert r.code == exitcodes.PERMISSION_DENIED, r.err
    assert ref_of(standin) in r.err
    assert cli.key_file.read_bytes() == before
    assert audit_outcomes(cli, "master_key_wrap") == [("started", None),
                                                      ("permission_denied", None)]


def _altered(cli: Cli, **change: Any) -> None:
    doc = json.loads(cli.key_file.read_text())
    env = envelope(doc)
    env.update(change)
    doc["ciphertext"] = base64.b64encode(json.dumps(env).encode()).decode()
    cli.key_file.write_text(json.dumps(doc))


def test_tampering_is_an_integrity_error(cli: Cli, standin: AzureKeyVaultKeysStandin) -> None:
    cli("init")
    cli.put("a", "value-a")
    good = cli.key_file.read_text()
    env = envelope(json.loads(good))

    def flipped(field: str) -> str:
        raw = bytearray(base64.b64decode(env[field]))
        raw[-1] ^= 0x01
        return base64.b64encode(bytes(raw)).decode()

    for change in ({"ciphertext": flipped("ciphertext")},   # the sealed ring
                   {"wrapped_key": flipped("wrapped_key")},  # the vault refuses it
                   {"nonce": flipped("nonce")}):
        cli.key_file.write_text(good)
        _altered(cli, **change)
        r = cli.get("a")
        assert r.code == exitcodes.INTEGRITY, (change, r.err)
        assert ref_of(standin) in r.err

    # A file naming another key (or vault) is refused before anything is sent there.
    cli.key_file.write_text(good)
    other = standin.kid("other")
    _altered(cli, kid=other)
    calls = len(standin.calls)
    r = cli.get("a")
    assert r.code == exitcodes.INTEGRITY, r.err
    assert "not a version of this key" in r.err
    assert not [c for c in standin.calls[calls:] if c[1] == other]


def test_another_key_names_both(cli: Cli, standin: AzureKeyVaultKeysStandin) -> None:
    cli("init")
    other = ref_of(standin, "other")
    r = cli("get", "a", "--org", "acme", KEYSAFE_MASTER_KEY_KMS=other)
    assert r.code == exitcodes.CONFIG
    assert ref_of(standin) in r.err
    assert other in r.err


def test_vault_down_is_backend_unavailable_and_changes_nothing(
        cli: Cli, standin: AzureKeyVaultKeysStandin) -> None:
    cli("init")
    cli.put("a", "value-a")
    before = cli.key_file.read_bytes()
    standin.fail_next(1000, status=503)
    for args in (("get", "a", "--org", "acme"), ("rekey",)):
        r = cli(*args)
        assert r.code == exitcodes.UNAVAILABLE, (args, r.err)
        assert f"KMS {ref_of(standin)}" in r.err
        assert cli.key_file.read_bytes() == before
    standin.fail_next(0)
    assert cli.get("a").out == "value-a"


def test_a_missing_key_is_a_config_error(tmp_path: Path,
                                         standin: AzureKeyVaultKeysStandin) -> None:
    cli = cli_for(tmp_path, standin, "missing")
    r = cli("init")
    assert r.code == exitcodes.CONFIG, r.err
    assert "does not exist" in r.err
    assert not cli.key_file.exists()


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing_sdk_names_the_extra(monkeypatch, tmp_path, "azure.keyvault.keys.crypto",
                                "azurekv:https://ks.vault.azure.net/keys/ring", "azure")


def _forged(standin: AzureKeyVaultKeysStandin, good: dict[str, Any], *,
            sign_with: str | None, fmt: int = 2) -> dict[str, Any]:
    """A wrapped ring made from the vault key's PUBLIC key alone (what anyone who read
    it could make), signed by ``sign_with`` (None: no signature)."""
    import hashlib
    import os

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    kid = standin.kid("master-ring")
    public = standin.keys["master-ring"].versions[-1].private.public_key()
    ring = json.dumps(plaintext_ring(standin, good)).encode()
    data_key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(12)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                        label=None)
    env: dict[str, Any] = {
        "v": fmt, "kid": kid, "alg": "RSA-OAEP-256",
        "wrapped_key": base64.b64encode(public.encrypt(data_key, oaep)).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(AESGCM(data_key).encrypt(nonce, ring, AAD)).decode()}
    if sign_with is not None:
        digest = hashlib.sha256(b"keysafe master key ring envelope v2\0" + json.dumps(
            env, sort_keys=True, separators=(",", ":")).encode()).digest()
        private = standin.keys[sign_with].versions[-1].private
        env["sig"] = base64.b64encode(private.sign(
            digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))).decode()
    doc = dict(good)
    doc["ciphertext"] = base64.b64encode(json.dumps(env).encode()).decode()
    return doc


def test_a_ring_made_with_the_public_key_alone_is_refused(
        cli: Cli, standin: AzureKeyVaultKeysStandin) -> None:
    """Wrapping needs only the public key; the signature needs the vault. A forged ring
    (unsigned, format 1, or signed by another key) never opens, and nothing is
    unwrapped; the same ring signed by the vault key opens (the forgery is otherwise
    perfect)."""
    cli("init")
    cli.put("a", "value-a")
    good = json.loads(cli.key_file.read_text())
    for sign_with, fmt, words in ((None, 2, "not signed"), (None, 1, "not signed"),
                                  ("other", 2, "does not verify")):
        cli.key_file.write_text(json.dumps(_forged(standin, good, sign_with=sign_with,
                                                   fmt=fmt)))
        calls = len(standin.calls)
        r = cli.get("a")
        assert r.code == exitcodes.INTEGRITY, (sign_with, fmt, r.err)
        assert words in r.err
        assert ref_of(standin) in r.err
        assert not [c for c in standin.calls[calls:] if c[0] == "unwrapkey"]
    cli.key_file.write_text(json.dumps(_forged(standin, good, sign_with="master-ring")))
    assert cli.get("a").out == "value-a"


def test_sign_denied_wraps_nothing(cli: Cli, standin: AzureKeyVaultKeysStandin) -> None:
    """An identity without `sign` cannot wrap: exit 4 naming the operation, and no key
    file is written."""
    standin.deny("sign")
    r = cli("init")
    assert r.code == exitcodes.PERMISSION_DENIED, r.err
    assert "denied sign" in r.err
    assert ref_of(standin) in r.err
    assert not cli.key_file.exists()


def test_without_get_the_signature_is_verified_by_the_vault(
        cli: Cli, standin: AzureKeyVaultKeysStandin) -> None:
    """A replica granted unwrapKey and verify but not get: the client cannot read the
    public key, so the vault verifies."""
    assert cli("init").code == 0
    cli.put("a", "value-a")
    standin.deny("get")
    del standin.calls[:]
    assert cli.get("a").out == "value-a"
    assert [op for op, _ in standin.calls if op in ("verify", "unwrapkey")] == \
        ["verify", "unwrapkey"]


def test_no_azure_credentials_is_a_config_error(tmp_path: Path,
                                               standin: AzureKeyVaultKeysStandin) -> None:
    """DefaultAzureCredential with no source that works (here: environment credentials
    only, none set): exit 8 naming what was tried, not a denial."""
    cli = Cli(tmp_path / "home", KEYSAFE_MASTER_KEY_KMS=ref_of(standin),
              AZURE_TOKEN_CREDENTIALS="EnvironmentCredential",
              REQUESTS_CA_BUNDLE=standin.ca_bundle)
    for var in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
                "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT"):
        cli.env.pop(var, None)
    r = cli("init")
    assert r.code == exitcodes.CONFIG, r.err
    assert "no Azure credentials" in r.err
    assert "EnvironmentCredential" in r.err
    assert not cli.key_file.exists()


def test_a_key_without_sign_names_its_operations(tmp_path: Path,
                                                 standin: AzureKeyVaultKeysStandin) -> None:
    """A key made for wrapping alone (`--ops wrapKey unwrapKey`) cannot sign the ring:
    exit 8 saying which operations the key needs, not a denial; nothing written."""
    standin.create_key("wrap-only", key_ops=("wrapKey", "unwrapKey"))
    cli = cli_for(tmp_path, standin, "wrap-only")
    r = cli("init")
    assert r.code == exitcodes.CONFIG, r.err
    assert "does not allow sign" in r.err
    assert "set-attributes --ops wrapKey unwrapKey sign verify" in r.err
    assert not cli.key_file.exists()
