"""The ``gcp-sa`` rotator: a new service account key made through IAM's REST API,
proven by a token exchange and promoted; the old key working through the grace period
and deleted by retire; failures that change nothing; no private key in any message or
audit record.

STAND-IN: no GCP server can run here. IAM and the token endpoint are
``standins/gcpiam_standin.py``, a loopback server speaking IAM's documented v1 REST API
for service account keys and Google's JWT-bearer token grant (it verifies each
assertion's RS256 signature); it is not the real service. The rotator reaches it
through KEYSAFE_GCP_IAM_ENDPOINT and KEYSAFE_GCP_TOKEN_URI, with google-auth's
service account credentials and AuthorizedSession."""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standins.gcpiam_standin import GcpIamStandin

from keysafe.config import load_settings
from keysafe.errors import ConfigError, RotationError
from keysafe.manager.audit import AuditFilter
from keysafe.manager.manager import SecretManager
from keysafe.rotation.engine import RotationEngine
from keysafe.rotation.gcp_sa import GcpServiceAccountKeyRotator

pytest.importorskip("google.oauth2.service_account")

ORG, NAME = "acme", "gcp_service_account"
APP = "app@ks-test.iam.gserviceaccount.com"
ADMIN = "key-admin@ks-test.iam.gserviceaccount.com"
GRACE = timedelta(hours=1)


@pytest.fixture
def iam(monkeypatch: pytest.MonkeyPatch) -> Iterator[GcpIamStandin]:
    with GcpIamStandin() as s:
        monkeypatch.setenv("KEYSAFE_GCP_IAM_ENDPOINT", s.url)
        monkeypatch.setenv("KEYSAFE_GCP_TOKEN_URI", s.token_uri)
        yield s


@pytest.fixture
def mgr(tmp_path: Path) -> Iterator[SecretManager]:
    m = SecretManager.from_settings(load_settings({"KEYSAFE_HOME": str(tmp_path)}))
    yield m
    m.close()


def current(mgr: SecretManager) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(mgr.get(NAME, ORG, fresh=True))
    return out


def test_rotate_then_retire(mgr: SecretManager, iam: GcpIamStandin) -> None:
    old = iam.create_account(APP)
    old["team_note"] = "ci deployer"  # a field of the team's own: kept
    mgr.put_json(NAME, old, ORG, tags={"rotator": "gcp-sa"}, check_format=True)
    engine = RotationEngine(mgr, grace=GRACE)

    out = engine.rotate(NAME, ORG)

    assert (out.outcome, out.version) == ("rotated", 2)
    new = current(mgr)
    assert new["client_email"] == APP
    assert new["private_key_id"] != old["private_key_id"]
    assert new["private_key"] != old["private_key"]
    assert new["team_note"] == "ci deployer"
    assert iam.key_ids(APP) == sorted([old["private_key_id"], new["private_key_id"]])
    # The old key keeps working through the grace period (a token for it).
    assert json.loads(engine.previous(NAME, ORG) or "{}") == old

    assert engine.retire_expired() == []  # not yet
    later = datetime.now(UTC) + GRACE * 2
    assert engine.retire_expired(now=later) == [mgr.path(NAME, ORG)]
    assert iam.key_ids(APP) == [new["private_key_id"]]

    mgr.audit.flush()
    text = "\n".join(json.dumps(e.to_dict(), default=str)
                     for e in mgr.audit_query(AuditFilter(action="rotate")))
    for key in (old, new):
        assert key["private_key"].splitlines()[1] not in text
    assert [e.outcome for e in mgr.audit_query(AuditFilter(action="rotate"))] == [
        "pending_created", "ok", "retired"]


def test_an_admin_account_manages_the_keys(mgr: SecretManager, iam: GcpIamStandin) -> None:
    iam.self_manage = False
    app = iam.create_account(APP)
    admin = iam.create_account(ADMIN)
    mgr.put_json("gcp_key_admin", admin, ORG)
    mgr.put_json(NAME, app, ORG, tags={"rotator": "gcp-sa",
                                       "rotator.admin_secret": "gcp_key_admin"})
    # Without the grant, IAM refuses and nothing changes.
    with pytest.raises(RotationError, match=r"refused to list .*HTTP 403 PERMISSION_DENIED"
                                            r".*roles/iam.serviceAccountKeyAdmin"):
        RotationEngine(mgr, grace=GRACE).rotate(NAME, ORG)
    assert current(mgr) == app

    iam.grant(ADMIN, APP)
    RotationEngine(mgr, grace=GRACE).rotate(NAME, ORG)
    assert current(mgr)["private_key_id"] != app["private_key_id"]
    assert len(iam.key_ids(APP)) == 2


def test_a_key_not_accepted_in_time_is_deleted_and_nothing_changes(
        mgr: SecretManager, iam: GcpIamStandin) -> None:
    old = iam.create_account(APP)
    mgr.put_json(NAME, old, ORG, tags={"rotator": "gcp-sa", "rotator.wait": "0"})
    iam.accept_delay = 3600  # the new key never becomes usable within the wait

    with pytest.raises(RotationError, match="failed at step test") as info:
        RotationEngine(mgr, grace=GRACE).rotate(NAME, ORG)

    assert "was not accepted for a token" in info.value.message
    assert current(mgr) == old
    assert iam.key_ids(APP) == [old["private_key_id"]]  # the new key was rolled back
    shown = "".join(traceback.format_exception(info.value))
    assert old["private_key"].splitlines()[1] not in shown


def test_a_new_key_accepted_after_a_while_is_waited_for(mgr: SecretManager,
                                                         iam: GcpIamStandin) -> None:
    old = iam.create_account(APP)
    mgr.put_json(NAME, old, ORG, tags={"rotator": "gcp-sa", "rotator.wait": "20"})
    iam.accept_delay = 2.5
    out = RotationEngine(mgr, grace=GRACE).rotate(NAME, ORG)
    assert out.outcome == "rotated"


def test_at_the_key_limit_the_rotation_stops_before_making_one(
        mgr: SecretManager, iam: GcpIamStandin) -> None:
    old = iam.create_account(APP)
    for _ in range(9):
        iam._new_key(APP)
    mgr.put_json(NAME, old, ORG, tags={"rotator": "gcp-sa"})
    with pytest.raises(RotationError, match="has 10 user-managed keys, IAM's limit"):
        RotationEngine(mgr, grace=GRACE).rotate(NAME, ORG)
    assert len(iam.key_ids(APP)) == 10
    assert current(mgr) == old


@pytest.mark.parametrize(("value", "message"), [
    ("not json", "does not hold a service account key file"),
    (json.dumps({"type": "service_account", "client_email": APP}),
     "needs a service account key file with client_email"),
])
def test_a_value_that_is_not_a_key_file_fails_at_create(
        mgr: SecretManager, iam: GcpIamStandin, value: str, message: str) -> None:
    mgr.put(NAME, value, ORG, tags={"rotator": "gcp-sa"}, check_format=False)
    with pytest.raises(RotationError, match=message):
        RotationEngine(mgr, grace=GRACE).rotate(NAME, ORG)
    assert mgr.describe(NAME, ORG).current_version == 1


def test_a_deleted_account_is_named(mgr: SecretManager, iam: GcpIamStandin) -> None:
    iam.self_manage = False
    app = iam.create_account(APP)
    mgr.put_json("gcp_key_admin", iam.create_account(ADMIN), ORG)
    iam.grant(ADMIN, APP)
    mgr.put_json(NAME, app, ORG, tags={"rotator": "gcp-sa",
                                       "rotator.admin_secret": "gcp_key_admin"})
    del iam.accounts[APP]  # deleted in the console since
    with pytest.raises(RotationError, match=f"GCP IAM knows no service account {APP}"):
        RotationEngine(mgr, grace=GRACE).rotate(NAME, ORG)
    assert current(mgr) == app


def test_endpoints_and_options_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    rot = GcpServiceAccountKeyRotator()
    rot.check_options(NAME, {"admin_secret": "gcp_key_admin", "wait": "30"})
    for opts, why in [({"wait": "forever"}, "must be seconds"),
                      ({"wait": "601"}, "0 to 600"),
                      ({"user": "x"}, "does not take rotator.user")]:
        with pytest.raises(ConfigError, match=why):
            rot.check_options(NAME, opts)
    from keysafe.rotation.gcp_sa import _endpoint

    monkeypatch.setenv("KEYSAFE_GCP_IAM_ENDPOINT", "http://iam.example.com")
    with pytest.raises(ConfigError, match="is not https"):
        _endpoint("KEYSAFE_GCP_IAM_ENDPOINT", "https://iam.googleapis.com")
    monkeypatch.delenv("KEYSAFE_GCP_IAM_ENDPOINT")
    assert _endpoint("KEYSAFE_GCP_IAM_ENDPOINT", "https://iam.googleapis.com") == \
        "https://iam.googleapis.com"


def test_a_key_made_but_not_usable_is_deleted_at_once(mgr: SecretManager,
                                                      iam: GcpIamStandin) -> None:
    """IAM made a key but its answer holds no usable key file: the rotation fails at
    create, and the key IAM made (named in the answer) is deleted, not left behind to
    count against the 10-key limit."""
    old = iam.create_account(APP)
    mgr.put_json(NAME, old, ORG, tags={"rotator": "gcp-sa", "rotator.wait": "0"})
    iam.broken_create = True
    with pytest.raises(RotationError, match="failed at step create") as info:
        RotationEngine(mgr, grace=GRACE).rotate(NAME, ORG)
    assert "without a key file" in info.value.message
    assert current(mgr) == old
    assert iam.key_ids(APP) == [old["private_key_id"]]
