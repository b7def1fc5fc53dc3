"""Undo and after-commit hooks across sibling savepoints (the server's group commit runs
each write of a batch in a savepoint of its own): a savepoint that was released belongs
to the transaction around it, so a later sibling's rollback neither runs its undo hooks
nor drops its after-commit hooks (a reviewer found change events lost and buffered read
records stored twice this way)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keysafe.backends.base import UndoHooks
from keysafe.backends.sqlite import SQLiteBackend
from keysafe.crypto.keys import KeyRing


def test_undo_hooks_released_savepoints_join_their_parent() -> None:
    ran: list[str] = []
    h = UndoHooks()
    h.add(2, lambda: ran.append("undo first"))   # savepoint 1 of the batch...
    h.after(2, lambda: ran.append("after first"))
    h.released(1)                                 # ...released
    h.add(2, lambda: ran.append("undo second"))  # savepoint 2...
    h.after(2, lambda: ran.append("after second"))
    h.undone(above=1)                             # ...rolled back
    assert ran == ["undo second"]
    h.committed()
    assert ran == ["undo second", "after first"]


def sibling_savepoints(tx: Callable[[], Any], on_commit: Callable[[Callable[[], object]], None],
                       on_rollback: Callable[[Callable[[], object]], None]) -> list[str]:
    ran: list[str] = []

    def second() -> None:
        with tx():
            on_commit(lambda: ran.append("after second"))
            on_rollback(lambda: ran.append("undo second"))
            raise RuntimeError("the second write fails")

    with tx():
        with tx():
            on_commit(lambda: ran.append("after first"))
            on_rollback(lambda: ran.append("undo first"))
        with pytest.raises(RuntimeError):
            second()
        assert ran == ["undo second"]
    return ran


def test_sqlite_sibling_savepoints(tmp_path: Path) -> None:
    b = SQLiteBackend(tmp_path / "ks.db", KeyRing.generate())
    assert sibling_savepoints(b.transaction, b.on_commit, b.on_rollback) == [
        "undo second", "after first"]
    b.close()
