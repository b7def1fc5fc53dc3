"""The ``aws-iam`` rotator against moto's IAM and STS in server mode on loopback: a new
access key made, proven with GetCallerIdentity and promoted; the old one working
through the grace period and deleted by retire; failures that change nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aws_fixtures import MotoAws, aws  # noqa: F401 - aws: module fixture

from keysafe.config import load_settings
from keysafe.errors import ConfigError, RotationError
from keysafe.manager.audit import AuditFilter
from keysafe.manager.manager import SecretManager
from keysafe.rotation.engine import RotationEngine

ORG, NAME = "acme", "deploy_aws_key"
GRACE = timedelta(hours=1)


@pytest.fixture
def mgr(tmp_path: Path, aws: MotoAws, monkeypatch: pytest.MonkeyPatch  # noqa: F811
        ) -> Iterator[SecretManager]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.url)  # IAM and STS: moto's server
    m = SecretManager.from_settings(load_settings({"KEYSAFE_HOME": str(tmp_path)}))
    yield m
    m.close()


def user_with_key(aws: MotoAws, user: str) -> dict[str, Any]:  # noqa: F811
    iam = aws.client("iam")
    iam.create_user(UserName=user)
    k = iam.create_access_key(UserName=user)["AccessKey"]
    return {"access_key_id": k["AccessKeyId"], "secret_access_key": k["SecretAccessKey"],
            "region": "us-east-1"}


def keys_of(aws: MotoAws, user: str) -> dict[str, str]:  # noqa: F811
    meta = aws.client("iam").list_access_keys(UserName=user)["AccessKeyMetadata"]
    return {k["AccessKeyId"]: k["Status"] for k in meta}


def current(mgr: SecretManager) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(mgr.get(NAME, ORG, fresh=True))
    return out


def test_rotate_then_retire(mgr: SecretManager, aws: MotoAws) -> None:  # noqa: F811
    old = user_with_key(aws, "deployer")
    mgr.put_json(NAME, old, ORG, tags={"rotator": "aws-iam"})  # the user found by STS
    # The catalog's pair entry checks both fields (the panel asks for them one by one).
    mgr.put_json("aws_access_key", old, ORG, check_format=True)
    engine = RotationEngine(mgr, grace=GRACE)
    out = engine.rotate(NAME, ORG)
    assert (out.outcome, out.version) == ("rotated", 2)
    new = current(mgr)
    assert new["access_key_id"] != old["access_key_id"]
    assert new["region"] == "us-east-1"  # other fields kept
    assert keys_of(aws, "deployer") == {old["access_key_id"]: "Active",
                                        new["access_key_id"]: "Active"}
    path = mgr.path(NAME, ORG)
    assert engine.retire_expired() == []  # the grace period: the old key still works
    assert engine.retire_expired(now=datetime.now(UTC) + GRACE * 2) == [path]
    assert keys_of(aws, "deployer") == {new["access_key_id"]: "Active"}
    # Again, with the user named and an inactive leftover key, which goes first.
    iam = aws.client("iam")
    stale = iam.create_access_key(UserName="deployer")["AccessKey"]["AccessKeyId"]
    iam.update_access_key(UserName="deployer", AccessKeyId=stale, Status="Inactive")
    mgr.update_tags(NAME, ORG, set_tags={"rotator.user": "deployer"})
    assert engine.rotate(NAME, ORG).outcome == "rotated"
    third = current(mgr)
    assert set(keys_of(aws, "deployer")) == {new["access_key_id"], third["access_key_id"]}
    # Nothing in the audit log or the outcome holds a key.
    records = repr(mgr.audit_query(AuditFilter()))
    for k in (old, new, third):
        assert k["secret_access_key"] not in records


def test_another_active_key_stops_the_rotation(mgr: SecretManager,
                                               aws: MotoAws) -> None:  # noqa: F811
    old = user_with_key(aws, "busy-user")
    other = aws.client("iam").create_access_key(UserName="busy-user")["AccessKey"]
    mgr.put_json(NAME, old, ORG, tags={"rotator": "aws-iam"})
    engine = RotationEngine(mgr, grace=GRACE)
    with pytest.raises(RotationError, match="another active access key"):
        engine.rotate(NAME, ORG)
    assert current(mgr) == old
    assert keys_of(aws, "busy-user") == {old["access_key_id"]: "Active",
                                         other["AccessKeyId"]: "Active"}


def test_a_key_iam_does_not_know_fails_the_rotation_and_changes_nothing(
        mgr: SecretManager, aws: MotoAws) -> None:  # noqa: F811
    bogus = {"access_key_id": "AKIAFAKEFAKEFAKE0000", "secret_access_key": "x" * 40}
    mgr.put_json(NAME, bogus, ORG, tags={"rotator": "aws-iam", "rotator.wait": "0"})
    with pytest.raises(RotationError, match=r"IAM knows no access key \.\.\.0000"):
        RotationEngine(mgr, grace=GRACE).rotate(NAME, ORG)
    assert current(mgr) == bogus
    assert "x" * 40 not in repr(mgr.audit_query(AuditFilter()))


def test_options_are_checked_when_configured() -> None:
    from keysafe.rotation.aws_iam import AwsIamAccessKeyRotator

    r = AwsIamAccessKeyRotator()
    r.check_options(NAME, {"user": "u", "wait": "5"})
    for bad in ({"wait": "soon"}, {"wait": "9999"}, {"users": "u"}):
        with pytest.raises(ConfigError):
            r.check_options(NAME, bad)


def test_an_admin_key_rotates_a_path_user_whose_key_was_deactivated(
        mgr: SecretManager, aws: MotoAws) -> None:  # noqa: F811
    """A leaked key is deactivated first, then rotated with an admin key; the user has
    an IAM path; the old key is deleted at retire even after the secret's delete."""
    iam = aws.client("iam")
    iam.create_user(UserName="ci-bot", Path="/automation/")
    k = iam.create_access_key(UserName="ci-bot")["AccessKey"]
    old = {"access_key_id": k["AccessKeyId"], "secret_access_key": k["SecretAccessKey"]}
    iam.update_access_key(UserName="ci-bot", AccessKeyId=old["access_key_id"],
                          Status="Inactive")
    admin = user_with_key(aws, "key-admin")
    mgr.put_json("aws_admin", admin, ORG)
    mgr.put_json(NAME, old, ORG, tags={"rotator": "aws-iam", "rotator.user": "ci-bot",
                                        "rotator.admin_secret": "aws_admin"})
    engine = RotationEngine(mgr, grace=GRACE)
    assert engine.rotate(NAME, ORG).outcome == "rotated"
    new = current(mgr)
    assert keys_of(aws, "ci-bot") == {old["access_key_id"]: "Inactive",
                                      new["access_key_id"]: "Active"}
    mgr.delete(NAME, ORG)  # a soft delete: the retire still finds its way
    assert engine.retire_expired(now=datetime.now(UTC) + GRACE * 2) == [mgr.path(NAME, ORG)]
    assert keys_of(aws, "ci-bot") == {new["access_key_id"]: "Active"}
