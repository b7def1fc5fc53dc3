"""An org's removal and its undoing run one at a time in a process: a restore started
while the removal it would undo is still deleting (or a second removal) is a Conflict
that changes nothing; dry runs never wait."""

from __future__ import annotations

from pathlib import Path

import pytest

from keysafe import SecretManager
from keysafe.errors import Conflict
from keysafe.orgs import remove_org, restore_org


def test_removal_and_restore_of_one_org_do_not_overlap(tmp_home: Path) -> None:
    with SecretManager.from_env() as mgr:
        for name in ("a_key", "b_key", "c_key"):
            mgr.put(name, "v" * 20, "acme")
        mgr.put("a_key", "v" * 20, "globex")
        seen: list[str] = []

        def meanwhile(done: int, total: int) -> None:
            if done != 1:
                return
            for label, call in (("restore", lambda: restore_org(mgr, "acme")),
                                ("remove", lambda: remove_org(mgr, "acme"))):
                with pytest.raises(Conflict, match="being removed or restored"):
                    call()
                seen.append(label)
            # A dry run, and another org, go ahead.
            assert [s.outcome for s in remove_org(mgr, "acme", dry_run=True)] == \
                ["would_delete"] * 2
            assert [s.outcome for s in remove_org(mgr, "globex")] == ["deleted"]

        steps = remove_org(mgr, "acme", progress=meanwhile)
        assert seen == ["restore", "remove"]
        assert [s.outcome for s in steps] == ["deleted"] * 3
        # Once it ends, the undoing restores all three.
        assert [s.outcome for s in restore_org(mgr, "acme")] == ["restored"] * 3
        assert mgr.get("c_key", "acme") == "v" * 20
