"""One rotation of a secret at a time: in one process the rotations take turns; another
process holding the secret (a file lock in KEYSAFE_HOME, or PostgreSQL's advisory lock,
tests/postgres) makes a second one fail fast with Conflict instead of taking the first
one's pending value for a crash's."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from keysafe import Conflict, SecretManager
from keysafe.scheduler import hold_locally

ORG = "acme"


def test_a_rotation_held_elsewhere_is_refused(tmp_home: Path) -> None:
    with SecretManager.from_env() as mgr:
        mgr.put("encryption_key", "e" * 48, ORG, tags={"rotator": "random"})
        path = mgr.path("encryption_key", ORG)
        with hold_locally(tmp_home / "jobs", f"rotate:{path}") as held:
            assert held
            with pytest.raises(Conflict, match="running in another process"):
                mgr.rotate("encryption_key", ORG)
        assert mgr.describe("encryption_key", ORG).current_version == 1
        assert mgr.rotate("encryption_key", ORG).version == 2  # released: goes ahead


def test_rotations_through_request_copies_take_turns(tmp_home: Path) -> None:
    """The server's per-request managers (as_actor) share one lock per secret."""
    with SecretManager.from_env() as mgr:
        mgr.put("encryption_key", "e" * 48, ORG, tags={"rotator": "random"})
        copies = [mgr.as_actor(f"token:t{i}") for i in range(4)]
        errors: list[BaseException] = []

        def go(m: SecretManager) -> None:
            try:
                m.rotate("encryption_key", ORG)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=go, args=(m,)) for m in copies]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert mgr.describe("encryption_key", ORG).current_version == 5


def test_a_run_leaves_alone_what_changed_since_it_was_selected(tmp_home: Path) -> None:
    """A scheduled run chose the secret at version 1; an HTTP rotation took its turn
    first: the run skips it instead of rotating it twice."""
    from keysafe.rotation.engine import RotationEngine

    with SecretManager.from_env() as mgr:
        mgr.put("encryption_key", "e" * 48, ORG, tags={"rotator": "random"})
        engine = RotationEngine(mgr)
        assert mgr.rotate("encryption_key", ORG).version == 2
        out = engine.rotate("encryption_key", ORG, selected=1)
        assert (out.outcome, out.version) == ("skipped", 2)
        # Held by another process during a run: reported as busy, not failed.
        path = mgr.path("encryption_key", ORG)
        with hold_locally(tmp_home / "jobs", f"rotate:{path}"):
            results = engine.run("all", org=ORG)
        assert [(r.name, r.outcome) for r in results if r.name == "encryption_key"] == [
            ("encryption_key", "busy")]
