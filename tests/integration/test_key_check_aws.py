"""The live check of an AWS access key pair (``aws_access_key``: STS GetCallerIdentity,
signed with the pair) against moto's STS and IAM in server mode on loopback, with
moto's request authentication turned on for the module (``/moto-api/reset-auth``), so
that a wrong secret or an unknown key id is refused as AWS refuses it. Through the
library and ``keysafe put --check-key`` as a real process."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_fixtures import MotoAws, aws  # noqa: F401 - the module's moto server

from keysafe import AuditFilter, InvalidValue, KeyRejected, SecretManager
from keysafe.backends.memory import MemoryBackend

KEYSAFE = str(Path(sys.executable).parent / "keysafe")
CANARY = "CANARY" + secrets.token_hex(8)


def moto_auth(moto: MotoAws, count: str) -> None:
    """Turn moto's request authentication on ("0") or off ("inf") for every server of
    this process (its setting is module-global)."""
    req = urllib.request.Request(moto.url + "/moto-api/reset-auth", data=count.encode(),
                                 method="POST", headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


@pytest.fixture(scope="module")
def pair(aws: MotoAws) -> Iterator[dict[str, str]]:  # noqa: F811
    iam = aws.client("iam")
    iam.create_user(UserName="ci-deployer")
    key = iam.create_access_key(UserName="ci-deployer")["AccessKey"]
    moto_auth(aws, "0")
    try:
        yield {"access_key_id": key["AccessKeyId"],
               "secret_access_key": key["SecretAccessKey"]}
    finally:
        moto_auth(aws, "inf")


@pytest.fixture
def mgr(aws: MotoAws, monkeypatch: pytest.MonkeyPatch) -> SecretManager:  # noqa: F811
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.url)
    return SecretManager(MemoryBackend(), actor="tester")


def test_a_working_pair_is_valid_and_names_its_identity(mgr: SecretManager,
                                                        pair: dict[str, str]) -> None:
    r = mgr.check_key("aws_access_key", json.dumps(pair), "acme")
    assert r.outcome == "valid", r.detail
    assert "user/ci-deployer" in r.detail
    assert "127.0.0.1" in r.detail  # the configured endpoint, never one a value names


@pytest.mark.parametrize(("change", "code"), [
    ({"secret_access_key": "wrong" + CANARY}, "SignatureDoesNotMatch"),
    ({"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": CANARY},
     "InvalidClientTokenId"),
])
def test_a_refused_pair_is_rejected_by_code(mgr: SecretManager, pair: dict[str, str],
                                            change: dict[str, str], code: str) -> None:
    r = mgr.check_key("aws_access_key", json.dumps({**pair, **change}), "acme")
    assert r.outcome == "rejected"
    assert code in r.detail
    assert CANARY not in r.detail
    assert pair["secret_access_key"] not in r.detail


def test_not_a_pair_is_never_sent(mgr: SecretManager, aws: MotoAws) -> None:  # noqa: F811
    for value in ("AKIA" + "A" * 16, json.dumps({"access_key_id": "AKIA" + "A" * 16}),
                  "[1, 2]"):
        with pytest.raises(InvalidValue, match="AWS Access Key"):
            mgr.check_key("aws_access_key", value, "acme")  # the catalog's format first
        r = mgr.check_key("aws_access_key", value, "acme", check_format=False)
        assert r.outcome == "rejected"
        assert "not an AWS key pair" in r.detail
        assert r.status is None  # STS was never asked


def test_an_unreachable_sts_is_unknown(monkeypatch: pytest.MonkeyPatch,
                                       pair: dict[str, str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    r = SecretManager(MemoryBackend()).check_key("aws_access_key", json.dumps(pair), "acme")
    assert r.outcome == "unknown"
    assert "could not reach 127.0.0.1" in r.detail


def test_put_check_key_refuses_a_bad_pair_and_saves_a_good_one(
        tmp_home: Path, aws: MotoAws, pair: dict[str, str]) -> None:  # noqa: F811
    env: dict[str, Any] = {k: v for k, v in os.environ.items()
                           if not k.startswith("KEYSAFE_")}
    env.update(KEYSAFE_HOME=str(tmp_home), KEYSAFE_ACTOR="tester", AWS_ENDPOINT_URL=aws.url)

    def ks(*args: str, value: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([KEYSAFE, *args], input=value, capture_output=True,
                              text=True, env=env, timeout=60)

    bad = json.dumps({**pair, "secret_access_key": "wrong" + CANARY})
    r = ks("put", "aws_access_key", "--org", "acme", "--credentials", "--check-key",
           value=bad)
    assert r.returncode == 2, r.stderr
    assert "refused this key pair (SignatureDoesNotMatch); nothing was saved" in r.stderr
    assert ks("has", "aws_access_key", "--org", "acme").returncode == 3
    r = ks("put", "aws_access_key", "--org", "acme", "--credentials", "--check-key",
           "--json", value=json.dumps(pair))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["key_check"]["outcome"] == "valid"
    assert CANARY not in r.stdout + r.stderr


def test_the_manager_raises_for_a_rejected_pair_on_put(mgr: SecretManager,
                                                       pair: dict[str, str]) -> None:
    with pytest.raises(KeyRejected, match="SignatureDoesNotMatch"):
        mgr.check_key("aws_access_key", json.dumps({**pair, "secret_access_key": "wrong"}),
                      "acme", refuse=True)
    assert not mgr.has("aws_access_key", "acme")
    events = mgr.audit_query(AuditFilter(action="write"))
    assert [e.outcome for e in events] == ["key_rejected"]
