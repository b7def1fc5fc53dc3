"""The CLI holds the tags a user sets (``put --tag``, ``tag --set``) to the HTTP API's
rule (keysafe.tags): at most 50 per request, names of 1 to 128 printable characters,
values up to 256 printable characters, no rotation settings, ``env_var`` a variable
name. A refused tag exits 2 naming it, and nothing is stored or changed. Rotation
settings still go in through ``keysafe rotate configure``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from keysafe.cli import exitcodes
from keysafe.cli.options import parse_tags
from keysafe.server.schemas import MetadataPatch, SecretWrite
from keysafe.tags import MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS

ORG = "acme"
LONG_NAME = "k" * 300


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wide terminal, so rich's error box does not break a message inside a word."""
    monkeypatch.setenv("COLUMNS", "500")


def one_line(text: str) -> str:
    """The error text without rich's box and its line breaks."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def status(kc: Callable[..., Any], name: str) -> Any:
    r = kc("status", name, "--org", ORG, "--json")
    assert r.code == 0, r.err
    return r.json()


@pytest.fixture
def tagged(kc: Callable[..., Any], put: Callable[..., Any]) -> dict[str, Any]:
    """A secret with one tag, and its status as the tests start."""
    put("db_password", "pw-tag-limits", "--tag", "team=payments")
    return status(kc, "db_password")


# (tag items, what the error says)
BAD: list[tuple[list[str], str]] = [
    ([f"{LONG_NAME}=a\tb"], f"tag name '{'k' * 40}': 1 to {MAX_TAG_KEY} printable characters"),
    (["team=a\tb"], f"tag 'team': the value must be at most {MAX_TAG_VALUE} printable "
                    "characters"),
    ([f"team={'v' * (MAX_TAG_VALUE + 1)}"], "tag 'team': the value must be at most"),
    (["bad\x07name=x"], "tag name 'bad\\x07name': 1 to"),
    ([f"t{i}=v" for i in range(MAX_TAGS + 1)],
     f"{MAX_TAGS + 1} tags in one request; the limit is {MAX_TAGS}"),
    (["rotator=https://attacker.example/rotate"],
     "tag 'rotator' is reserved for rotation settings"),
    (["rotator.url=https://attacker.example/rotate"],
     "tag 'rotator.url' is reserved for rotation settings"),
    (["rotation.step=commit"], "tag 'rotation.step' is reserved for rotation settings"),
    (["maintenance_window=no"], "tag 'maintenance_window' is reserved for rotation"),
    (["env_var=1BAD"], "tag 'env_var' must be an environment variable name"),
    (["env_var=X=1; rm -rf /"], "tag 'env_var' must be an environment variable name"),
]
IDS = ["long-name", "tab-in-value", "long-value", "control-char-name", "too-many",
       "rotator", "rotator-option", "rotation-detail", "maintenance-window",
       "env-var-digit", "env-var-shell"]


def _flags(flag: str, items: list[str]) -> list[str]:
    return [arg for item in items for arg in (flag, item)]


@pytest.mark.parametrize(("items", "message"), BAD, ids=IDS)
def test_put_refuses_a_bad_tag_and_stores_nothing(kc, items: list[str],
                                                  message: str) -> None:
    r = kc("put", "new_secret", "--org", ORG, *_flags("--tag", items), input="pw-value")
    assert r.code == exitcodes.USAGE, r.err
    assert message in one_line(r.err)
    assert "'--tag'" in r.err
    assert LONG_NAME not in r.err  # only a short prefix of an over-long name
    assert "pw-value" not in r.out + r.err
    assert kc("has", "new_secret", "--org", ORG).code == exitcodes.NOT_FOUND


@pytest.mark.parametrize(("items", "message"), BAD, ids=IDS)
def test_tag_set_refuses_a_bad_tag_and_changes_nothing(kc, tagged, items: list[str],
                                                       message: str) -> None:
    r = kc("tag", "db_password", "--org", ORG, *_flags("--set", items))
    assert r.code == exitcodes.USAGE, r.err
    assert message in one_line(r.err)
    assert "'--set'" in r.err
    assert LONG_NAME not in r.err
    assert status(kc, "db_password") == tagged


def test_the_reported_command_exits_2_and_changes_nothing(ks, kc, tagged) -> None:
    """The report, through the installed script: an over-long name with a tab in its
    value used to be stored (exit 0)."""
    r = ks("tag", "db_password", "--org", ORG, "--set", f"{LONG_NAME}=a\tb")
    assert r.code == exitcodes.USAGE, r.err
    assert f"tag name '{'k' * 40}': 1 to {MAX_TAG_KEY} printable characters" in r.err
    assert LONG_NAME not in r.err
    assert status(kc, "db_password") == tagged


def test_put_generate_refuses_a_bad_tag(kc) -> None:
    r = kc("put", "session_secret", "--org", ORG, "--generate", "--tag", "rotator=x")
    assert r.code == exitcodes.USAGE
    assert "reserved for rotation settings" in one_line(r.err)
    assert kc("has", "session_secret", "--org", ORG).code == exitcodes.NOT_FOUND


def test_with_json_the_error_still_names_the_tag(kc) -> None:
    r = kc("put", "new_secret", "--org", ORG, "--tag", f"{LONG_NAME}=v", "--json",
           input="pw-value")
    assert r.code == exitcodes.USAGE
    assert f"tag name '{'k' * 40}'" in one_line(r.err)
    assert LONG_NAME not in r.err


def test_tags_within_the_limits_are_stored(kc, put) -> None:
    """The limits themselves are allowed: 50 tags, a 128-character name, a
    256-character value (spaces and unicode are printable), a good env_var."""
    items = [f"t{i}=v" for i in range(MAX_TAGS - 3)]
    items += [f"{'n' * MAX_TAG_KEY}={'v' * MAX_TAG_VALUE}", "owner=Zoë Smith",
              "env_var=DATABASE_PASSWORD"]
    put("db_password", "pw-ok", *_flags("--tag", items))
    tags = status(kc, "db_password")["tags"]
    assert len(tags) == MAX_TAGS
    assert tags["n" * MAX_TAG_KEY] == "v" * MAX_TAG_VALUE
    assert tags["env_var"] == "DATABASE_PASSWORD"
    r = kc("tag", "db_password", "--org", ORG, *_flags("--set", items), "--json")
    assert r.code == 0, r.err


def test_tag_unset_and_set_still_work(kc, tagged) -> None:
    r = kc("tag", "db_password", "--org", ORG, "--set", "owner=ml", "--unset", "team",
           "--json")
    assert r.code == 0, r.err
    assert r.json()["tags"] == {"owner": "ml"}


def test_rotate_configure_still_sets_rotator_tags(kc, put) -> None:
    """Rotation settings go through ``rotate configure`` (its ``--option`` items are
    not user tags): still accepted, and then kept by a plain ``tag --set``."""
    put("session_secret", "s" * 64)
    r = kc("rotate", "configure", "session_secret", "--org", ORG, "--rotator", "random",
           "--option", "length=48", "--option", "alphabet=hex", "--json")
    assert r.code == 0, r.err
    want = {"rotator": "random", "rotator.length": "48", "rotator.alphabet": "hex"}
    assert r.json()["tags"] == want
    r = kc("tag", "session_secret", "--org", ORG, "--set", "team=auth", "--json")
    assert r.code == 0, r.err
    assert r.json()["tags"] == {**want, "team": "auth"}


def test_only_tag_options_are_checked() -> None:
    """``--option`` (rotator options) and ``--label`` (Kubernetes labels) share the
    KEY=VALUE syntax but are not tags: the tag rule does not apply to them."""
    many = [f"k{i}=v" for i in range(MAX_TAGS + 1)]
    assert parse_tags(["url=https://x", "rotation.x=1"], "--option") == {
        "url": "https://x", "rotation.x": "1"}
    assert parse_tags(many, "--label") is not None
    assert parse_tags(["rotator=random"], "--anything", user_tags=False) == {
        "rotator": "random"}
    with pytest.raises(Exception, match="reserved for rotation"):
        parse_tags(["rotator=random"], "--anything", user_tags=True)


@pytest.mark.parametrize(("items", "message"), BAD, ids=IDS)
def test_the_api_refuses_the_same_tags_with_the_same_message(items: list[str],
                                                             message: str) -> None:
    """One rule: the request bodies refuse what the CLI refuses, in the same words."""
    tags = dict(item.split("=", 1) for item in items)
    with pytest.raises(ValidationError) as exc:
        SecretWrite(secret_value="v", tags=tags)
    assert any(message in e["msg"] for e in exc.value.errors())
    with pytest.raises(ValidationError):
        MetadataPatch(tags=tags)


def test_tag_unset_is_checked_as_the_api_checks_it(kc) -> None:
    """The names removed count and are checked too: an unprintable or over-long name,
    or more than MAX_TAGS set and removed together, is exit 2 and changes nothing."""
    assert kc("put", "k", "--org", ORG, "--tag", "team=a", input="v").code == 0
    for args in (["--unset", "k" * 200], ["--unset", "a\tb"],
                 [*[f"--set=s{i}=v" for i in range(30)],
                  *[f"--unset=u{i}" for i in range(MAX_TAGS - 29)]]):
        r = kc("tag", "k", "--org", ORG, *args)
        assert r.code == 2, (args[:2], r.err)
    assert kc("status", "k", "--org", ORG, "--json").json()["tags"] == {"team": "a"}
