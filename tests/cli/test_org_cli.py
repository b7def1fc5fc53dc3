"""``keysafe org ls | rm | restore``: a tenant's offboarding (every secret of an org in
every domain, and the tokens that covered only that org) and its undoing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keysafe import SecretManager
from keysafe.manager.audit import AuditFilter

CANARY = "canary-org-" + "k" * 24


def seed(put: Callable[..., Any], kc: Callable[..., Any]) -> dict[str, str]:
    put("openai_api_key", "sk-" + CANARY, org="acme")
    put("partner_key", CANARY + "p", "--domain", "cards", org="acme")
    put("openai_api_key", "sk-" + CANARY + "g", org="globex")
    tokens = {}
    for name, orgs in (("acme-app", ["acme"]), ("acme-cards", ["acme/cards"]),
                       ("shared", ["acme", "globex"])):
        args = [a for o in orgs for a in ("--org", o)]
        r = kc("token", "create", "--name", name, "--role", "viewer", *args, "--json")
        assert r.code == 0, r.err
        tokens[name] = r.json()["id"]
    return tokens


def test_offboarding_and_its_undoing(put: Callable[..., Any], kc: Callable[..., Any]) -> None:
    tokens = seed(put, kc)
    # Deleted on purpose before the offboarding: its undoing leaves it deleted.
    put("leaked_key", CANARY + "x", org="acme")
    assert kc("rm", "leaked_key", "--org", "acme").code == 0
    outputs = []
    r = kc("org", "ls", "--json")
    assert r.json() == [
        {"org": "acme", "secrets": 2, "deleted": 1, "domains": ["cards", "shared"]},
        {"org": "globex", "secrets": 1, "deleted": 0, "domains": ["shared"]}]
    # A dry run changes nothing.
    r = kc("org", "rm", "acme", "--dry-run", "--json")
    outputs.append(r.out)
    assert r.code == 0, r.err
    assert r.json()["summary"] == {"would_delete": 2}
    assert {t["name"] for t in r.json()["tokens_revoked"]} == {"acme-app", "acme-cards"}
    # Declined: nothing changes either (exit 1).
    r = kc("org", "rm", "acme", input="n\n")
    assert r.code == 1
    assert "cancelled; nothing was changed" in r.err
    assert "every environment" not in r.err  # these tokens are bound to this one
    assert kc("org", "ls", "--json").json()[0]["secrets"] == 2
    # Done: every secret of the org deleted (restorable), its own tokens revoked.
    r = kc("org", "rm", "acme", "--yes", "--json")
    outputs.append(r.out)
    assert r.code == 0, r.err
    assert r.json()["summary"] == {"deleted": 2}
    listed = {t["name"]: t["revoked_at"] for t in kc("token", "list", "--json").json()}
    assert listed["acme-app"]
    assert listed["acme-cards"]
    assert listed["shared"] is None  # it covers globex too: left for a person to narrow
    assert kc("org", "ls", "--json").json()[0] == {
        "org": "acme", "secrets": 0, "deleted": 3, "domains": ["cards", "shared"]}
    assert kc("get", "openai_api_key", "--org", "globex").code == 0
    with SecretManager.from_env() as m:
        deletes = m.audit_query(AuditFilter(action="delete", org="acme"))
        revokes = m.audit_query(AuditFilter(action="token_revoke"))
    assert len(deletes) == 3  # the leaked key's, then the offboarding's two
    assert {e.detail["token_id"] for e in revokes} == {tokens["acme-app"],
                                                      tokens["acme-cards"]}
    # Undone within the recovery window (an org never removed has nothing to undo).
    r = kc("org", "restore", "globex")
    assert r.code == 3
    assert "no removal to undo" in r.err
    r = kc("org", "restore", "acme", "--json")
    assert r.json()["summary"] == {"restored": 2}
    assert kc("get", "partner_key", "--org", "acme", "--domain", "cards").code == 0
    assert kc("get", "leaked_key", "--org", "acme").code == 3  # stays deleted
    # Purged: gone for good, soft-deleted ones included; nothing left to restore.
    kc("rm", "openai_api_key", "--org", "acme")
    r = kc("org", "rm", "acme", "--purge", "--yes", "--json")
    outputs.append(r.out)
    assert r.json()["summary"] == {"purged": 3}
    assert kc("org", "restore", "acme", "--json").json()["summary"] == {}
    assert [o["org"] for o in kc("org", "ls", "--json").json()] == ["globex"]
    for text in outputs:
        assert CANARY not in text


def test_bad_input_names_the_problem(kc: Callable[..., Any]) -> None:
    r = kc("org", "rm", "../etc", "--yes")
    assert r.code == 2
    assert "org" in r.err
    r = kc("org", "rm", "nobody", "--yes", "--json")
    assert (r.code, r.json()["summary"]) == (0, {})
