"""Rotating the master key of a PostgreSQL store shared by replicas: a replica whose
ring holds both keys follows the database's active key before and after the re-wrap; a
replica with only the old key refuses to write (and to read re-wrapped values) rather
than seal values the others cannot open."""

from __future__ import annotations

import pytest

from keysafe.backends.base import WriteContext
from keysafe.backends.postgres import PostgresAuditStore, PostgresBackend
from keysafe.crypto.keys import KeyRing
from keysafe.errors import ConfigError
from keysafe.manager.audit import AuditLog
from keysafe.manager.manager import SecretManager

P = "keysafe/production/acme/shared/"


def ctx() -> WriteContext:
    return WriteContext.make("test")


def test_rekey_across_replicas(pg_url: str) -> None:
    old = KeyRing.generate()
    new_only = KeyRing.generate()
    both = KeyRing({new_only.active: new_only.key(new_only.active),
                    old.active: old.key(old.active)}, new_only.active)
    a = PostgresBackend(pg_url, old, pool_max=2)
    b = PostgresBackend(pg_url, both, pool_max=2)
    try:
        for i in range(5):
            a.put(f"{P}s{i}", f"value-{i}", ctx=ctx())
        # B holds the new key first, but the database still says the old one is active:
        # B seals with the old key, so A can still read what B writes.
        b.put(f"{P}s0", "from-b", ctx=ctx())
        assert a.get(f"{P}s0") == ("from-b", 2)
        assert b.key_ids_in_use() == {old.active}

        mgr = SecretManager(b, audit=AuditLog(PostgresAuditStore(b)), env="production")
        n = mgr.rekey()
        assert n == 6  # every retained version
        assert b.key_ids_in_use() == {new_only.active}
        assert b.get(f"{P}s3") == ("value-3", 1)
        b.put(f"{P}s3", "after", ctx=ctx())
        assert b.versions(f"{P}s3")[-1].key_id == new_only.active

        # A, with the old key only, must be restarted with the new ring.
        with pytest.raises(ConfigError, match="restart"):
            a.put(f"{P}s4", "stale", ctx=ctx())
        with pytest.raises(ConfigError, match="does not have"):
            a.get(f"{P}s1")
        assert b.get(f"{P}s4") == ("value-4", 1)  # A's refused write changed nothing
        # A fresh process with the old ring alone is refused at start.
        with pytest.raises(ConfigError, match="same KEYSAFE_MASTER_KEY"):
            PostgresBackend(pg_url, old, pool_max=1)
        assert mgr.audit_verify().ok
    finally:
        a.close()
        b.close()
