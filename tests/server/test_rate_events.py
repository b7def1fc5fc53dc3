"""Limits counted in the token store's rate_events table, so every worker of a server
(and, on PostgreSQL, every replica: tests/postgres) counts against one budget."""

from __future__ import annotations

import time
from pathlib import Path

from keysafe.server.auth import SharedLimiter
from keysafe.server.tokenstore import TokenStore


def test_two_workers_share_one_budget(tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    a, b = TokenStore(db), TokenStore(db)  # two processes' connections to one file
    try:
        la, lb = (SharedLimiter(t, "key_check", 3, 60.0) for t in (a, b))
        assert [la.take("token:ci"), lb.take("token:ci"), la.take("token:ci")] == [None] * 3
        for limiter in (la, lb):
            wait = limiter.take("token:ci")
            assert wait is not None
            assert 1.0 <= wait <= 60.0
        assert lb.take("token:other") is None  # per identity
        assert SharedLimiter(a, "key_check", 0, 60.0).take("token:ci") is None  # no limit
        # Events older than the window no longer count, and are cleared away.
        short = [SharedLimiter(t, "burst", 1, 0.2) for t in (a, b)]
        assert short[0].take("x") is None
        assert short[1].take("x") is not None
        time.sleep(0.25)
        assert short[1].take("x") is None
        assert a._db.one("SELECT count(*) FROM rate_events WHERE bucket = ?",
                         ("burst:x",)) == (1,)
    finally:
        a.close()
        b.close()
