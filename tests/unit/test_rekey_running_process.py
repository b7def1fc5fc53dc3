"""A process that was running during `keysafe rekey` must not seal new versions with the
removed key: it picks up the new key file, and old values stay readable."""

from __future__ import annotations

import pytest

from keysafe import InvalidValue, SecretManager, load_settings
from keysafe.maintenance import rekey


def test_writer_open_during_rekey_uses_the_new_key(tmp_home: object) -> None:
    settings = load_settings()
    running = SecretManager.from_settings(settings)
    running.put("openai_api_key", "sk-before-rekey-0123456789abcdefghij", "acme")
    old_kid = running.backend.envelope.keyring.active  # type: ignore[attr-defined]

    result = rekey(settings)  # as `keysafe rekey` in another process would
    assert result is not None

    running.put("custom", "written after the rekey", "acme")
    fresh = SecretManager.from_settings(load_settings())
    new_kid = fresh.backend.envelope.keyring.active  # type: ignore[attr-defined]
    assert new_kid != old_kid
    assert fresh.backend.key_ids_in_use() == {new_kid}  # type: ignore[attr-defined]
    assert fresh.get("custom", "acme") == "written after the rekey"
    assert running.get("openai_api_key", "acme", fresh=True).startswith("sk-before")
    running.close()
    fresh.close()


def test_read_returns_value_and_version_with_one_audit_record(tmp_home: object) -> None:
    mgr = SecretManager.from_settings(load_settings())
    mgr.put("custom", "one", "acme")
    mgr.put("custom", "two", "acme")
    before = len(mgr.audit_query())
    assert mgr.read("custom", "acme") == ("two", 2)
    assert mgr.read("custom", "acme", version=1) == ("one", 1)
    assert len(mgr.audit_query()) == before + 2
    mgr.close()


def test_unknown_secret_type_is_refused(tmp_home: object) -> None:
    mgr = SecretManager.from_settings(load_settings())
    with pytest.raises(InvalidValue, match="unknown secret type 'weird'"):
        mgr.put("custom", "v", "acme", secret_type="weird")
    assert not mgr.has("custom", "acme")
    mgr.put("custom", "v", "acme", secret_type="password")
    mgr.close()
