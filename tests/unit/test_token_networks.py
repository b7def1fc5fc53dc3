"""Tokens bound to networks (Vault's token_bound_cidrs): a stolen token is useless from
outside the networks it was made for. Checked against the request's peer address."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from keysafe.errors import InvalidValue
from keysafe.server.auth import Identity
from keysafe.server.tokenstore import TokenStore


def test_networks_are_kept_in_canonical_form_and_checked(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "server.db", env="production")
    token, info = store.create(name="runner", roles=["service"], orgs=["acme"],
                               created_by="test",
                               cidrs=["10.1.2.3/8", "2001:db8::1", " 192.168.0.0/24 "])
    assert info.cidrs == ["10.0.0.0/8", "192.168.0.0/24", "2001:db8::1/128"]
    assert store.get(info.id).to_dict()["cidrs"] == info.cidrs
    ident = store.authenticate(token)
    assert ident is not None
    for ok in ("10.200.0.1", "192.168.0.77", "2001:db8::1", "::ffff:10.0.0.9"):
        assert ident.allows_address(ok), ok
    for no in ("11.0.0.1", "192.168.1.1", "2001:db8::2", "127.0.0.1", "testclient", ""):
        assert not ident.allows_address(no), no
    _, anywhere = store.create(name="any", roles=["viewer"], orgs=None, created_by="t")
    assert anywhere.cidrs is None
    store.close()


@pytest.mark.parametrize(("cidrs", "words"), [
    (["10.0.0.0/33"], "'10.0.0.0/33' is not a network"),
    (["nope"], "'nope' is not a network"),
    ([f"10.0.0.{i}" for i in range(51)], "the limit is 50"),
])
def test_a_bad_network_is_named_and_nothing_is_made(tmp_path: Path, cidrs: list[str],
                                                    words: str) -> None:
    store = TokenStore(tmp_path / "server.db")
    with pytest.raises(InvalidValue, match=words):
        store.create(name="x", roles=["viewer"], orgs=["acme"], created_by="t",
                     cidrs=cidrs)
    assert store.list() == []
    store.close()


def test_an_old_server_db_gains_the_column(tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    old = sqlite3.connect(db)
    old.execute("CREATE TABLE tokens (id TEXT PRIMARY KEY, digest TEXT NOT NULL, "
                "name TEXT NOT NULL, roles TEXT NOT NULL, orgs TEXT, created_at REAL NOT NULL, "
                "created_by TEXT NOT NULL, expires_at REAL, revoked_at REAL, "
                "last_used_at REAL, env TEXT)")
    old.execute("INSERT INTO tokens VALUES ('t1', 'd', 'old', '[\"viewer\"]', NULL, 0, 'x', "
                "NULL, NULL, NULL, NULL)")
    old.commit()
    old.close()
    store = TokenStore(db)
    assert store.list()[0].cidrs is None  # made before the binding: any address
    store.close()


def test_an_unbound_identity_allows_any_address() -> None:
    assert Identity("x", frozenset({"viewer"}), None).allows_address("testclient")
