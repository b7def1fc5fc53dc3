"""VerifiedTokens: JWTs verified before, remembered by digest until they expire."""

from __future__ import annotations

import time

import pytest

from keysafe.server.auth import Identity, VerifiedTokens


def ident(name: str, expires_in: float = 60.0) -> Identity:
    return Identity(name, frozenset({"service"}), frozenset({"acme"}), kind="jwt",
                    expires_at=time.time() + expires_in)


def test_remembered_until_expiry_while_the_keys_stand(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = VerifiedTokens(size=2)
    a = ident("a")
    cache.put("token-a", a, leeway=10)
    assert cache.get("token-a") == a
    assert cache.get("token-b") is None
    # Only digests are kept: the token itself is nowhere in the cache.
    assert all(isinstance(k, bytes) and len(k) == 32 for k in cache._d)
    assert "token-a" not in repr(cache._d)
    later = time.time() + 60 + 11
    monkeypatch.setattr("keysafe.server.auth.time.time", lambda: later)
    assert cache.get("token-a") is None
    assert len(cache) == 0


def test_withdrawn_keys_and_the_size_bound() -> None:
    cache = VerifiedTokens(size=2)
    standing = [True]
    cache.put("t1", ident("one"), still=lambda: standing[0])
    cache.put("t2", ident("two"))
    cache.put("t3", ident("three"))  # the oldest, t1, goes
    assert cache.get("t1") is None
    assert cache.get("t2") is not None
    cache.put("t4", ident("four"), still=lambda: standing[0])
    standing[0] = False  # the keys that verified it were replaced
    assert cache.get("t4") is None
    never = Identity("n", frozenset({"service"}), frozenset({"acme"}), kind="jwt")
    cache.put("t5", never)  # no expiry: never remembered
    assert cache.get("t5") is None
