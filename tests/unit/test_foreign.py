"""How ``keysafe import --from-store`` names what it finds (keysafe.foreign), with the
built-in catalog and no store."""

from __future__ import annotations

import json

import pytest

from keysafe.catalog import _builtin_catalog
from keysafe.errors import InvalidName
from keysafe.foreign import entries_of, parse_map, resolve

CATALOG = _builtin_catalog()


@pytest.mark.parametrize(("key", "context", "name", "known"), [
    ("OPENAI_API_KEY", "", "openai_api_key", True),  # a catalog variable
    ("HF_TOKEN", "", "hf_api_token", True),  # ... or one of its aliases
    ("jwt-secret", "auth", "jwt_secret", True),  # spelled as a variable
    ("anthropic", "api-keys", "anthropic_api_key", True),  # an LLM provider
    ("openai-key", "", "openai_api_key", True),
    ("mistral_api_key", "", "mistral_api_key", True),
    ("url", "database", "database_url", True),  # with the secret's last segment
    ("url", "", "url", False),
    ("partner-token", "billing", "partner_token", False),
    ("Weird Key!", "", "weird_key", False),
])
def test_resolve(key: str, context: str, name: str, known: bool) -> None:
    assert resolve(key, CATALOG, context=context) == (name, known)


def test_a_flat_json_object_gives_one_entry_per_key() -> None:
    value = json.dumps({"OPENAI_API_KEY": "sk-1", "port": 5432, "debug": True})
    got = entries_of("app/prod/api-keys", value, CATALOG)
    assert [(e.variable, e.name, e.value, e.env_var) for e in got] == [
        ("app/prod/api-keys#OPENAI_API_KEY", "openai_api_key", "sk-1", "OPENAI_API_KEY"),
        ("app/prod/api-keys#port", "port", "5432", None),
        ("app/prod/api-keys#debug", "debug", "true", None),
    ]


@pytest.mark.parametrize("value", [
    "plain text", "{not json", "{}", json.dumps({"a": {"nested": 1}}), json.dumps({"a": None}),
    json.dumps(["a"]),
])
def test_anything_else_is_one_secret_named_by_the_name(value: str) -> None:
    (e,) = entries_of("/ragstar/prod/anthropic-api-key", value, CATALOG)
    assert (e.variable, e.name, e.value, e.known) == (
        "/ragstar/prod/anthropic-api-key", "anthropic_api_key", value, True)


def test_a_listed_name_is_named_by_what_follows_the_prefix() -> None:
    (e,) = entries_of("aragora-database-url", "postgresql://x", CATALOG, prefix="aragora-")
    assert e.name == "database_url"
    (e,) = entries_of("/app/prod/OPENAI_API_KEY", "sk-1", CATALOG, prefix="/app/prod/")
    assert (e.name, e.env_var) == ("openai_api_key", "OPENAI_API_KEY")


@pytest.mark.parametrize(("name", "prefix", "expected"), [
    ("aragora-anthropic-key", "ARAGORA-", "anthropic_api_key"),  # Azure: any case
    ("aragora/prod/anthropic", "aragora/", "anthropic_api_key"),  # deeper: last segment
    ("aragora/production/anthropic", "aragora/prod", "anthropic_api_key"),  # mid-segment
    ("aragora-anthropic-key", "aragora-anth", "aragora_anthropic_key"),  # mid-word
])
def test_the_rest_after_a_prefix_is_used_only_when_it_is_one_segment(
        name: str, prefix: str, expected: str) -> None:
    (e,) = entries_of(name, "x", CATALOG, prefix=prefix)
    assert e.name == expected


def test_keysafe_settings_are_never_imported_whatever_their_case() -> None:
    from keysafe.importer import _plan

    got = entries_of("x/app", json.dumps({"keysafe_master_key": "k", "KEYSAFE_ENV": "e"}),
                     CATALOG)
    plans = _plan(got, CATALOG, include_unknown=True, check_format=True,
                  max_value_bytes=65536, unknown_hint="{name}")
    assert [(p.status, p.reason) for p in plans] == [
        ("skipped", "a keysafe setting, never imported")] * 2


def test_map_wins_and_whole_keeps_the_object() -> None:
    value = json.dumps({"anthropic": "a", "stripe": "s"})
    got = entries_of("x/keys", value, CATALOG,
                     mapping={"stripe": "stripe_secret_key", "x/keys#anthropic": "claude"})
    assert [(e.name, e.known) for e in got] == [("claude", True), ("stripe_secret_key", True)]
    (whole,) = entries_of("x/keys", value, CATALOG, mapping={"x/keys": "keys"}, split=False)
    assert (whole.name, whole.value) == ("keys", value)


@pytest.mark.parametrize(("pairs", "words"), [
    (["novalue"], "expected KEY=NAME"), (["=x"], "expected KEY=NAME"),
    (["k="], "expected KEY=NAME"), (["k=a/b"], "name"),
])
def test_parse_map_refuses_bad_pairs(pairs: list[str], words: str) -> None:
    with pytest.raises(InvalidName, match=words):
        parse_map(pairs)
    assert parse_map(["a = b", "x/y#k=c", "team=ml/keys#openai=x"]) == {
        "a": "b", "x/y#k": "c", "team=ml/keys#openai": "x"}
