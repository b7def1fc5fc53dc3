"""A value found in the open (``mark_exposed``): due for rotation at once, whatever its
period, for the status, the scheduled scan and the server; a new value clears it."""

from __future__ import annotations

from pathlib import Path

import pytest

from keysafe import InvalidValue, SecretManager
from keysafe.rotation.engine import RotationEngine

ORG = "acme"


def test_an_exposed_value_is_due_until_replaced(tmp_home: Path) -> None:
    with SecretManager.from_env() as mgr:
        mgr.put("encryption_key", "e" * 48, ORG, tags={"rotator": "random"})
        mgr.put("misc_note", "n" * 20, ORG)  # no period, no rotator: never scheduled
        engine = RotationEngine(mgr)
        assert {s.name: s.status for s in engine.states(ORG)} == {
            "encryption_key": "ok", "misc_note": "unscheduled"}
        for name in ("encryption_key", "misc_note"):
            meta = mgr.mark_exposed(name, ORG, where="app/settings.py:12")
            assert meta.tags["exposed"] == "app/settings.py:12"
            assert meta.current_version == 1  # no new version
        states = {s.name: s for s in engine.states(ORG)}
        assert {n: (s.status, s.exposed) for n, s in states.items()} == {
            "encryption_key": ("overdue", True), "misc_note": ("overdue", True)}
        # The scheduled scan finds both by time, as the store selects them.
        assert sorted(s.name for s in engine.due(ORG)) == ["encryption_key", "misc_note"]
        out = {o.name: o.outcome for o in engine.run("due", org=ORG)}
        assert out == {"encryption_key": "rotated", "misc_note": "reminder"}
        # A new value is not exposed any more (the tag stays, as a record).
        mgr.put("misc_note", "m" * 20, ORG)
        states = {s.name: s for s in engine.states(ORG)}
        assert not states["encryption_key"].exposed
        assert (states["misc_note"].status, states["misc_note"].exposed) == (
            "unscheduled", False)
        with pytest.raises(InvalidValue):
            mgr.mark_exposed("misc_note", ORG, where="")


def test_an_exposed_value_with_no_schedule_is_still_found_by_the_due_scan(
        tmp_home: Path) -> None:
    """Period 0 (never scheduled) and no policy rule at all: the store's own due query
    still finds the exposed value (the mark is a time it selects on)."""
    with SecretManager.from_env() as mgr:
        mgr.put("session_secret", "s" * 48, ORG, rotation_days=0)
        engine = RotationEngine(mgr)
        assert engine.due(ORG) == []
        mgr.mark_exposed("session_secret", ORG, where="ticket 4711")
        assert [s.name for s in engine.due(ORG)] == ["session_secret"]
        sent = engine.remind()
        assert [s.name for s in sent] == ["session_secret"]
