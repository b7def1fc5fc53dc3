"""Tokens are bound to the environment they were made in (server.db, SQLite): a
development and a production server never take each other's tokens, and a server.db
from before the binding gains the column with its tokens working anywhere."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from keysafe.server.tokenstore import TokenStore


def test_a_token_works_only_in_its_environment(tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    dev = TokenStore(db, env="development")
    token, info = dev.create(name="runner", roles=["service"], orgs=["acme"],
                             created_by="test")
    assert info.env == "development"
    assert info.to_dict()["env"] == "development"
    assert dev.authenticate(token) is not None
    prod = TokenStore(db, env="production")
    assert prod.authenticate(token) is None
    dev.close()
    prod.close()


def test_an_old_server_db_gains_the_column(tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    old = sqlite3.connect(db)
    old.execute("CREATE TABLE tokens (id TEXT PRIMARY KEY, digest TEXT NOT NULL, "
                "name TEXT NOT NULL, roles TEXT NOT NULL, orgs TEXT, created_at REAL NOT NULL, "
                "created_by TEXT NOT NULL, expires_at REAL, revoked_at REAL, "
                "last_used_at REAL)")
    old.commit()
    old.close()
    first = TokenStore(db, env="staging")  # adds the column; tokens made now are bound
    token, _ = first.create(name="a", roles=["viewer"], orgs=None, created_by="t")
    first.close()
    # A row made before the binding (env NULL) works in any environment.
    conn = sqlite3.connect(db)
    conn.execute("UPDATE tokens SET env = NULL")
    conn.commit()
    conn.close()
    anywhere = TokenStore(db, env="production")
    assert anywhere.authenticate(token) is not None
    assert anywhere.list()[0].env is None
    anywhere.close()


def test_an_org_removal_revokes_this_environments_tokens_only(tmp_path: Path) -> None:
    from keysafe.orgs import tokens_only_for

    db = tmp_path / "server.db"
    dev, prod = TokenStore(db, env="dev"), TokenStore(db, env="production")
    dev.create(name="dev-app", roles=["service"], orgs=["acme"], created_by="t")
    prod.create(name="prod-app", roles=["service"], orgs=["acme"], created_by="t")
    _, legacy = prod.create(name="old-app", roles=["service"], orgs=["acme"],
                            created_by="t")
    conn = sqlite3.connect(db)
    conn.execute("UPDATE tokens SET env = NULL WHERE id = ?", (legacy.id,))
    conn.commit()
    conn.close()
    assert sorted(t.name for t in tokens_only_for(prod, "acme")) == ["old-app", "prod-app"]
    assert sorted(t.name for t in tokens_only_for(dev, "acme")) == ["dev-app", "old-app"]
    dev.close()
    prod.close()


def test_each_environment_lists_revokes_and_bootstraps_its_own(tmp_path: Path) -> None:
    from keysafe.errors import NotFound

    db = tmp_path / "server.db"
    dev, prod = TokenStore(db, env="dev"), TokenStore(db, env="production")
    assert dev.create_first(name="bootstrap-admin", roles=["admin"], orgs=None,
                            created_by="t") is not None
    # Production on the same database still gets its own first admin token, same name.
    made = prod.create_first(name="bootstrap-admin", roles=["admin"], orgs=None,
                             created_by="t")
    assert made is not None
    assert made[1].env == "production"
    assert [t.env for t in prod.list()] == ["production"]
    dev_token = dev.list()[0]
    with pytest.raises(NotFound):
        prod.revoke(dev_token.id)
    assert dev.get(dev_token.id).revoked_at is None
    dev.close()
    prod.close()
