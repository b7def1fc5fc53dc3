"""``keysafe put --generate``: a random value nobody sees (spec 002's "JWT Secret: 32+
char secret"; AWS's GetRandomPassword, but stored at once and never printed)."""

from __future__ import annotations

import json
import string

import pytest


def test_generated_value_is_stored_and_never_printed(ks):
    r = ks("put", "jwt_secret", "--org", "acme", "--generate")
    assert r.code == 0, r.err
    value = ks("get", "jwt_secret", "--org", "acme").out
    assert len(value) == 64
    assert set(value) <= set(string.ascii_letters + string.digits + "-_")
    assert value not in r.out + r.err
    assert "shown to nobody" in r.err + r.out
    # Another generation is another value: a new version.
    r = ks("put", "jwt_secret", "--org", "acme", "--generate", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["version"] == 2
    assert json.loads(r.out)["generated"] is True
    assert ks("get", "jwt_secret", "--org", "acme").out != value
    audit = ks("audit", "--org", "acme", "--json")
    assert value not in audit.out


def test_length_and_alphabet(ks):
    r = ks("put", "db_pw", "--org", "acme", "--generate", "--length", "40", "--alphabet",
           "hex")
    assert r.code == 0, r.err
    value = ks("get", "db_pw", "--org", "acme").out
    assert len(value) == 40
    assert set(value) <= set("0123456789abcdef")


def test_a_rotation_shape_is_the_default(ks):
    """What a rotation would make: the secret's rotator.length / rotator.alphabet."""
    assert ks("put", "sess", "--org", "acme", "--generate").code == 0
    assert ks("rotate", "configure", "sess", "--org", "acme", "--rotator", "random",
              "--option", "length=48", "--option", "alphabet=alnum").code == 0
    assert ks("put", "sess", "--org", "acme", "--generate").code == 0
    value = ks("get", "sess", "--org", "acme").out
    assert len(value) == 48
    assert set(value) <= set(string.ascii_letters + string.digits)


@pytest.mark.parametrize(("args", "message"), [
    (["openai_api_key", "--generate"], "issued by openai"),
    (["x", "--generate", "--alphabet", "nope"], "alphabet 'nope' is not one of"),
    (["x", "--generate", "--length", "8"], "--length"),
    (["x", "--length", "40"], "go with --generate"),
    (["x", "--generate", "--value", "abc"], "not with --value"),
    (["x", "--generate", "--credentials"], "not with --credentials"),
    (["x", "--generate", "--check-key"], "not with --check-key"),
    (["x", "--generate", "--merge"], "not with --merge"),
])
def test_refusals_store_nothing(ks, args, message):
    r = ks("put", *args, "--org", "acme")
    assert r.code == 2, (r.out, r.err)
    assert message in r.err
    assert ks("ls", "--org", "acme", "--json").json() == []


def test_tags_keep_the_rotation_settings(ks):
    """``--tag`` replaces a secret's tags, but not how it rotates (``rotate configure``
    sets that): a reviewer saw put --generate --tag drop the rotator silently."""
    assert ks("put", "jwt_secret", "--org", "acme", "--generate").code == 0
    assert ks("rotate", "configure", "jwt_secret", "--org", "acme", "--rotator", "random",
              "--option", "length=48").code == 0
    for args in (["--generate"], ["--value", "v" * 48]):
        assert ks("put", "jwt_secret", "--org", "acme", *args, "--tag", "team=x").code == 0
        tags = ks("status", "jwt_secret", "--org", "acme", "--json").json()["tags"]
        assert tags["team"] == "x"
        assert tags["rotator"] == "random"
    assert len(ks("get", "jwt_secret", "--org", "acme").out) == 48


def test_no_format_check_goes_through(ks):
    r = ks("put", "database_url", "--org", "acme", "--generate")
    assert r.code == 2  # random characters are not a database URL
    r = ks("put", "database_url", "--org", "acme", "--generate", "--no-format-check")
    assert r.code == 0, r.err
