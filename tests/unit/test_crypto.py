"""Tests for envelope encryption and master keys (keysafe.crypto)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from keysafe.crypto.envelope import NONCE, Envelope, Sealed
from keysafe.crypto.keys import KEY_BYTES, KeyRing, derived_key_id, load_keyring
from keysafe.errors import ConfigError, IntegrityError

PATH = "agentfoundry/dev/acme-corp/card-services/openai_api_key"
VALUE = b"sk-canary-0123456789abcdef"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
def env(ring: KeyRing) -> Envelope:
    return Envelope(ring)


@pytest.fixture
def sealed(env: Envelope) -> Sealed:
    return env.seal(PATH, 3, VALUE)


# -- seal and open ------------------------------------------------------------------
@pytest.mark.parametrize("plain", [b"", b"x", VALUE, "ünïcode ✓\n".encode(), os.urandom(65536)])
def test_round_trip(env: Envelope, plain: bytes) -> None:
    s = env.seal(PATH, 1, plain)
    assert env.open(PATH, 1, s) == plain
    assert s.key_id == env.keyring.active
    assert len(s.ciphertext) == NONCE + len(plain) + 16
    assert len(s.wrapped_key) == NONCE + 32 + 16


def test_ciphertext_hides_the_value(env: Envelope, sealed: Sealed) -> None:
    assert VALUE not in sealed.ciphertext
    assert VALUE not in sealed.wrapped_key


def test_every_seal_is_fresh(env: Envelope) -> None:
    a, b = env.seal(PATH, 1, VALUE), env.seal(PATH, 1, VALUE)
    assert a.ciphertext != b.ciphertext
    assert a.wrapped_key != b.wrapped_key
    assert a.ciphertext[:NONCE] != b.ciphertext[:NONCE]


def test_a_second_envelope_on_the_same_ring_opens(ring: KeyRing, sealed: Sealed) -> None:
    assert Envelope(ring).open(PATH, 3, sealed) == VALUE


# -- tampering ---------------------------------------------------------------------------
def test_every_ciphertext_byte_is_authenticated(env: Envelope, sealed: Sealed) -> None:
    for i in range(len(sealed.ciphertext)):
        bad = sealed._replace(ciphertext=flip(sealed.ciphertext, i))
        with pytest.raises(IntegrityError, match="failed verification"):
            env.open(PATH, 3, bad)


def test_every_wrapped_key_byte_is_authenticated(env: Envelope, sealed: Sealed) -> None:
    for i in range(len(sealed.wrapped_key)):
        bad = sealed._replace(wrapped_key=flip(sealed.wrapped_key, i))
        with pytest.raises(IntegrityError, match="failed verification"):
            env.open(PATH, 3, bad)


@pytest.mark.parametrize("field", ["ciphertext", "wrapped_key"])
@pytest.mark.parametrize("cut", [0, 1, NONCE, NONCE + 1, -1])
def test_truncated_or_extended_rows_fail(env: Envelope, sealed: Sealed, field: str,
                                         cut: int) -> None:
    data: bytes = getattr(sealed, field)
    for bad_data in (data[:cut], data + b"\x00"):
        with pytest.raises(IntegrityError):
            env.open(PATH, 3, sealed._replace(**{field: bad_data}))


def test_swapped_parts_fail(env: Envelope, sealed: Sealed) -> None:
    other = env.seal(PATH, 3, b"other value")
    with pytest.raises(IntegrityError):
        env.open(PATH, 3, sealed._replace(wrapped_key=other.wrapped_key))
    with pytest.raises(IntegrityError):
        env.open(PATH, 3, sealed._replace(ciphertext=other.ciphertext))


@pytest.mark.parametrize(("path", "version"), [
    (PATH + "x", 3), (PATH[:-1], 3), (PATH.replace("acme-corp", "other-corp"), 3),
    (PATH, 2), (PATH, 4), (PATH, 30), (PATH, 0),
])
def test_opening_at_another_place_fails(env: Envelope, sealed: Sealed, path: str,
                                        version: int) -> None:
    with pytest.raises(IntegrityError) as exc_info:
        env.open(path, version, sealed)
    assert exc_info.value.path == path
    assert VALUE.decode() not in str(exc_info.value)


def test_opening_with_another_key_id_in_the_ring_fails(ring: KeyRing, sealed: Sealed) -> None:
    bigger, new_kid = ring.with_new_active()
    with pytest.raises(IntegrityError):
        Envelope(bigger).open(PATH, 3, sealed._replace(key_id=new_kid))


def test_opening_with_an_unknown_key_id_is_a_config_error(env: Envelope,
                                                          sealed: Sealed) -> None:
    with pytest.raises(ConfigError, match="'k-unknown' is not available"):
        env.open(PATH, 3, sealed._replace(key_id="k-unknown"))


def test_opening_with_another_master_key_fails(ring: KeyRing, sealed: Sealed) -> None:
    # Same key id, different key bytes: a wrong or corrupted key file.
    impostor = KeyRing({ring.active: os.urandom(KEY_BYTES)}, ring.active)
    with pytest.raises(IntegrityError):
        Envelope(impostor).open(PATH, 3, sealed)
    with pytest.raises(ConfigError):
        Envelope(KeyRing.generate()).open(PATH, 3, sealed)


# -- rewrap --------------------------------------------------------------------------
def test_rewrap_changes_key_id_and_still_opens(ring: KeyRing, sealed: Sealed) -> None:
    bigger, new_kid = ring.with_new_active()
    assert bigger.active == new_kid != ring.active
    moved = Envelope(bigger).rewrap(PATH, 3, sealed)
    assert moved.key_id == new_kid
    assert moved.ciphertext == sealed.ciphertext
    assert moved.wrapped_key != sealed.wrapped_key
    assert Envelope(bigger).open(PATH, 3, moved) == VALUE
    only_new = bigger.without([ring.active])
    assert only_new.ids == [new_kid]
    assert Envelope(only_new).open(PATH, 3, moved) == VALUE
    with pytest.raises(ConfigError):
        Envelope(only_new).open(PATH, 3, sealed)


def test_rewrap_with_the_active_key_is_a_no_op(env: Envelope, sealed: Sealed) -> None:
    assert env.rewrap(PATH, 3, sealed) is sealed


def test_rewrap_refuses_a_tampered_or_moved_key(ring: KeyRing, sealed: Sealed) -> None:
    bigger, _ = ring.with_new_active()
    with pytest.raises(IntegrityError):
        Envelope(bigger).rewrap(PATH, 3, sealed._replace(wrapped_key=flip(sealed.wrapped_key, 20)))
    with pytest.raises(IntegrityError):
        Envelope(bigger).rewrap(PATH + "x", 3, sealed)
    with pytest.raises(IntegrityError):
        Envelope(bigger).rewrap(PATH, 4, sealed)


def test_without_keeps_the_active_key(ring: KeyRing) -> None:
    assert ring.without([ring.active]).ids == [ring.active]


# -- key ring: file ------------------------------------------------------------------
def test_key_file_is_owner_only_and_round_trips(tmp_path: Path, ring: KeyRing) -> None:
    bigger, _ = ring.with_new_active()
    target = tmp_path / "keys" / "master.key"
    assert bigger.save(target) == target
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) & 0o077 == 0
    assert not list(target.parent.glob("*.tmp"))
    loaded = KeyRing.from_file(target)
    assert loaded.active == bigger.active
    assert sorted(loaded.ids) == sorted(bigger.ids)
    for kid in bigger.ids:
        assert loaded.key(kid) == bigger.key(kid)
    assert loaded.path == target
    sealed = Envelope(bigger).seal(PATH, 1, VALUE)
    assert Envelope(loaded).open(PATH, 1, sealed) == VALUE


def test_save_replaces_an_existing_file_owner_only(tmp_path: Path, ring: KeyRing) -> None:
    target = tmp_path / "master.key"
    target.write_text("old")
    target.chmod(0o644)
    ring.save(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert KeyRing.from_file(target).active == ring.active


def test_ring_from_env_has_no_file(ring: KeyRing) -> None:
    with pytest.raises(ConfigError, match="no key file"):
        ring.save()


@pytest.mark.parametrize("content", [
    "not json", "{}", '{"keys": {}}', '{"active": "a", "keys": {"a": "%%%"}}',
    '{"active": "b", "keys": {"a": "' + b64(bytes(32)) + '"}}',
    '{"active": "a", "keys": {"a": "' + b64(bytes(16)) + '"}}', "[]",
])
def test_bad_key_files(tmp_path: Path, content: str) -> None:
    target = tmp_path / "master.key"
    target.write_text(content)
    with pytest.raises(ConfigError):
        KeyRing.from_file(target)


def test_load_keyring_creates_a_key_file_only_when_allowed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "home" / "master.key"
    with pytest.raises(ConfigError, match="no master key"):
        load_keyring(None, target, create=False)
    assert not target.exists()
    created = load_keyring(None, target, create=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    err = capsys.readouterr().err
    assert str(target) in err
    assert "Back it up" in err
    assert b64(created.key(created.active)) not in err
    again = load_keyring(None, target, create=False)
    assert again.active == created.active
    assert capsys.readouterr().err == ""


def test_load_keyring_prefers_the_env_value(tmp_path: Path, ring: KeyRing) -> None:
    target = tmp_path / "master.key"
    ring.save(target)
    key = os.urandom(KEY_BYTES)
    got = load_keyring(b64(key), target, create=False)
    assert got.active == derived_key_id(key)


# -- key ring: KEYSAFE_MASTER_KEY -----------------------------------------------------
def test_env_value_bare_base64() -> None:
    key = os.urandom(KEY_BYTES)
    r = KeyRing.from_env_value(b64(key))
    assert r.active == derived_key_id(key)
    assert r.key(r.active) == key
    assert r.path is None
    assert KeyRing.from_env_value(f"  {b64(key)}\n").active == r.active


def test_env_value_kid_pairs_first_active() -> None:
    k1, k2, k3 = (os.urandom(KEY_BYTES) for _ in range(3))
    r = KeyRing.from_env_value(f"new:{b64(k1)}, old:{b64(k2)},{b64(k3)},")
    assert r.active == "new"
    assert sorted(r.ids) == sorted(["new", "old", derived_key_id(k3)])
    assert (r.key("new"), r.key("old"), r.key(derived_key_id(k3))) == (k1, k2, k3)


def test_derived_key_id_is_stable_and_not_the_key() -> None:
    key = os.urandom(KEY_BYTES)
    assert derived_key_id(key) == derived_key_id(key)
    assert derived_key_id(key) != derived_key_id(os.urandom(KEY_BYTES))
    assert derived_key_id(key).startswith("k-")
    assert key.hex()[:16] not in derived_key_id(key)


@pytest.mark.parametrize(("value", "why"), [
    ("", "empty"),
    (" , ,", "empty"),
    (b64(bytes(16)), "must be 32 bytes, got 16"),
    (b64(bytes(33)), "must be 32 bytes, got 33"),
    (b64(bytes(32))[:-4], "must be 32 bytes"),
    ("not base64 at all!", "not valid base64"),
    (bytes(32).hex(), "must be 32 bytes, got 48"),
    ("kid:", "must be 32 bytes, got 0"),
    ("kid:***", "not valid base64"),
    (f"a:{b64(bytes(32))},b:{b64(bytes(8))}", "must be 32 bytes, got 8"),
])
def test_bad_env_values(value: str, why: str) -> None:
    with pytest.raises(ConfigError) as exc_info:
        KeyRing.from_env_value(value)
    msg = str(exc_info.value)
    assert why in msg
    assert "KEYSAFE_MASTER_KEY" in msg
    for part in value.replace(":", ",").split(","):
        if len(part.strip()) > 8:
            assert part.strip() not in msg  # never echo (part of) a key


@pytest.mark.parametrize("value", [
    f":{b64(bytes(32))}",
    f":{b64(bytes(32))},b:{b64(bytes(range(32)))}",
    f"a:{b64(bytes(32))},a:{b64(bytes(range(32)))}",
])
def test_env_value_key_ids_are_non_empty_and_unique(value: str) -> None:
    with pytest.raises(ConfigError):
        KeyRing.from_env_value(value)


def test_ring_constructor_checks() -> None:
    with pytest.raises(ConfigError, match="not in the key ring"):
        KeyRing({"a": bytes(32)}, "b")
    with pytest.raises(ConfigError, match="must be 32 bytes"):
        KeyRing({"a": bytes(31)}, "a")


# -- no key material in reprs -----------------------------------------------------------
def test_reprs_hold_no_key_material(tmp_path: Path) -> None:
    key = os.urandom(KEY_BYTES)
    ring = KeyRing.from_env_value(f"main:{b64(key)}")
    bigger, _ = ring.with_new_active()
    sealed = Envelope(bigger).seal(PATH, 1, VALUE)
    texts = [repr(ring), str(ring), repr(bigger), repr(sealed), str(sealed),
             repr(Envelope(bigger)), repr([sealed])]
    secrets = [b64(key), key.hex(), repr(key), b64(sealed.wrapped_key),
               sealed.wrapped_key.hex(), repr(sealed.wrapped_key)[2:30],
               repr(sealed.ciphertext)[2:30], sealed.ciphertext.hex(), VALUE.decode()]
    for kid in bigger.ids:
        k = bigger.key(kid)
        secrets += [b64(k), k.hex(), repr(k)[2:30]]
    for text in texts:
        for s in secrets:
            assert s not in text, text
    assert "main" in repr(ring)
    assert repr(sealed) == f"Sealed(key_id={bigger.active!r}, {len(sealed.ciphertext)} bytes)"


def test_key_file_content_is_the_only_place_keys_are_written(tmp_path: Path,
                                                           ring: KeyRing) -> None:
    target = ring.save(tmp_path / "master.key")
    data = json.loads(target.read_text())
    assert data == {"active": ring.active, "keys": {ring.active: b64(ring.key(ring.active))}}
