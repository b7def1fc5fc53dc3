"""Tests for secret naming: templates, format/parse, segment validation (keysafe.naming)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keysafe.errors import InvalidName, KeysafeError
from keysafe.naming import (
    DEFAULT_DOMAIN,
    DEFAULT_TEMPLATE,
    FIELDS,
    MAX_SEGMENT,
    NamingTemplate,
    SecretRef,
    validate_segment,
)

SPEC_000 = "/{app}/{env}/org-{org}/{domain}/{name}"
VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
segments = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", fullmatch=True)
refs = st.builds(SecretRef, name=segments, org=segments, domain=segments, env=segments,
                 app=segments)


# -- the two layouts the specs name -------------------------------------------------
def test_default_template_spec_001_layout() -> None:
    t = NamingTemplate()
    assert t.template == DEFAULT_TEMPLATE == "{app}/{env}/{org}/{domain}/{name}"
    ref = SecretRef("openai_api_key", "acme-corp", "card-services", env="dev",
                    app="agentfoundry")
    assert t.format(ref) == "agentfoundry/dev/acme-corp/card-services/openai_api_key"


def test_spec_000_template_layout() -> None:
    t = NamingTemplate(SPEC_000)
    ref = SecretRef("openai-api-key", "123", "llm", env="local", app="ragstar")
    assert t.format(ref) == "/ragstar/local/org-123/llm/openai-api-key"
    assert t.parse("/ragstar/local/org-123/llm/openai-api-key") == ref


def test_ref_defaults() -> None:
    ref = SecretRef("stripe_secret_key", "acme")
    assert (ref.domain, ref.env, ref.app) == (DEFAULT_DOMAIN, "local", "keysafe")
    assert DEFAULT_DOMAIN == "shared"
    assert NamingTemplate().format(ref) == "keysafe/local/acme/shared/stripe_secret_key"
    assert ref.validate() is ref


def test_parse_default_template() -> None:
    ref = NamingTemplate().parse("agentfoundry/dev/acme-corp/card-services/openai_api_key")
    assert ref == SecretRef("openai_api_key", "acme-corp", "card-services", "dev",
                            "agentfoundry")


def test_parse_fills_fields_the_template_lacks() -> None:
    t = NamingTemplate("{org}/{name}")
    assert t.parse("acme/db_url", app="shop", env="prod") == SecretRef(
        "db_url", "acme", DEFAULT_DOMAIN, "prod", "shop")
    assert t.parse("acme/db_url") == SecretRef("db_url", "acme")
    assert t.format(SecretRef("db_url", "acme", env="prod")) == "acme/db_url"


# -- parse is the inverse of format ---------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(ref=refs, template=st.sampled_from([DEFAULT_TEMPLATE, SPEC_000,
                                            "secrets/{env}/{app}/{org}:{domain}/{name}"]))
def test_parse_inverts_format(ref: SecretRef, template: str) -> None:
    t = NamingTemplate(template)
    path = t.format(ref)
    assert t.matches(path)
    assert t.parse(path) == ref
    assert t.format(t.parse(path)) == path


@settings(max_examples=150, deadline=None)
@given(ref=refs, template=st.sampled_from([DEFAULT_TEMPLATE, SPEC_000,
                                            "secrets/{env}/{app}/{org}:{domain}/{name}"]))
def test_path_of_is_format_of_the_validated_ref(ref: SecretRef, template: str) -> None:
    t = NamingTemplate(template)
    assert t.path_of(ref.app, ref.env, ref.org, ref.domain, ref.name) == t.format(ref)


def test_path_of_validates_like_a_ref() -> None:
    t = NamingTemplate()
    with pytest.raises(InvalidName, match="name") as e1:
        t.path_of("keysafe", "local", "acme", "shared", "../x")
    with pytest.raises(InvalidName) as e2:
        SecretRef("../x", "acme").validate()
    assert str(e1.value) == str(e2.value)
    with pytest.raises(InvalidName, match="org"):
        t.path_of("keysafe", "local", "ac me", "shared", "x")


@settings(max_examples=150, deadline=None)
@given(ref=refs)
def test_formatted_paths_start_with_their_scope_prefix(ref: SecretRef) -> None:
    for template in (DEFAULT_TEMPLATE, SPEC_000):
        t = NamingTemplate(template)
        path = t.format(ref)
        assert path.startswith(t.prefix(app=ref.app, env=ref.env))
        assert path.startswith(t.prefix(app=ref.app, env=ref.env, org=ref.org))
        assert path.startswith(t.prefix(app=ref.app, env=ref.env, org=ref.org,
                                        domain=ref.domain))


# -- segment validation ------------------------------------------------------------
@pytest.mark.parametrize("value", ["a", "A", "0", "openai_api_key", "acme-corp", "org.1",
                                   "a..b", "x-", "a" * MAX_SEGMENT])
def test_valid_segments_pass(value: str) -> None:
    assert validate_segment("name", value) == value


INVALID = [
    ("", "empty"),
    (".", "relative"),
    ("..", "relative"),
    ("a/b", "'/'"),
    ("/", "'/'"),
    ("has space", "' '"),
    (" lead", "' '"),
    ("trail ", "' '"),
    ("tab\there", "'\\t'"),
    ("new\nline", "'\\n'"),
    ("nul\x00", "'\\x00'"),
    ("café", "'é'"),
    ("ключ", "'к'"),
    ("🔑", "'🔑'"),
    ("a" * (MAX_SEGMENT + 1), f"limit is {MAX_SEGMENT}"),
    ("-lead", "must start with a letter or digit"),
    (".hidden", "must start with a letter or digit"),
    ("_lead", "must start with a letter or digit"),
    ("a:b", "':'"),
    ("a*", "'*'"),
]


@pytest.mark.parametrize("kind", FIELDS)
@pytest.mark.parametrize(("value", "why"), INVALID)
def test_invalid_segments_raise_and_say_why(kind: str, value: str, why: str) -> None:
    with pytest.raises(InvalidName) as exc_info:
        validate_segment(kind, value)
    msg = str(exc_info.value)
    assert msg.startswith(kind + " "), msg
    assert why in msg, msg
    assert exc_info.value.segment == kind
    assert exc_info.value.code == "invalid_name"

    fields = {"name": "n", "org": "o", "domain": "d", "env": "e", "app": "a"}
    fields[kind] = value
    with pytest.raises(InvalidName) as exc_info:
        SecretRef(**fields).validate()
    assert exc_info.value.segment == kind


@pytest.mark.parametrize("value", [None, 5, b"bytes", ["a"]])
def test_non_string_segment(value: object) -> None:
    with pytest.raises(InvalidName, match="name must be a string"):
        validate_segment("name", value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=140))
def test_validation_accepts_exactly_the_allowed_segments(value: str) -> None:
    allowed = VALID.fullmatch(value) is not None and len(value) <= MAX_SEGMENT
    if allowed:
        assert validate_segment("org", value) == value
    else:
        with pytest.raises(InvalidName, match=r"\Aorg "):
            validate_segment("org", value)


@pytest.mark.parametrize("path", [
    "agentfoundry/dev/acme corp/card-services/key",
    "agentfoundry/dev/../card-services/key",
    "agentfoundry/dev/acme/card-services",
    "agentfoundry/dev/acme/card-services/key/extra",
    "/agentfoundry/dev/acme/card-services/key",
    "agentfoundry/dev/acme//key",
    "",
])
def test_parse_rejects_paths_off_the_template(path: str) -> None:
    with pytest.raises(InvalidName, match="does not match the naming template"):
        NamingTemplate().parse(path)


def test_parse_validates_segment_length() -> None:
    path = "agentfoundry/dev/acme/shared/" + "k" * (MAX_SEGMENT + 1)
    with pytest.raises(InvalidName, match=f"name is {MAX_SEGMENT + 1} characters long"):
        NamingTemplate().parse(path)


def test_spec_000_template_rejects_a_path_without_the_org_prefix() -> None:
    t = NamingTemplate(SPEC_000)
    assert not t.matches("/ragstar/local/123/llm/openai-api-key")
    with pytest.raises(InvalidName):
        t.parse("/ragstar/local/123/llm/openai-api-key")


# -- templates ----------------------------------------------------------------------
@pytest.mark.parametrize(("template", "why"), [
    ("{app}/{env}/{tenant}/{name}", "unknown field {tenant}"),
    ("{app}/{env}/{org}/{domain}/{secret}", "unknown field {secret}"),
    ("{app}/{env}/{domain}/{name}", "lacks {org}"),
    ("{app}/{env}/{org}/{domain}", "lacks {name}"),
    ("static/path", "lacks {org}"),
    ("", "lacks {org}"),
    ("{org}/{org}/{name}", "repeats a field"),
])
def test_bad_templates_are_rejected(template: str, why: str) -> None:
    with pytest.raises(InvalidName) as exc_info:
        NamingTemplate(template)
    assert why in str(exc_info.value)


@pytest.mark.parametrize("template", [
    "{app}/{env}/{org}/{Domain}/{name}",
    "{app}/{env}/{org}/{domain}/{name}/{}",
    "{app}/{env}/{org}/{domain}/{name}/{0}",
    "{app!r}/{env}/{org}/{domain}/{name}",
    "{app}/{env}/{org}/{domain:>8}/{name}",
])
def test_templates_with_stray_braces_are_rejected(template: str) -> None:
    try:
        t = NamingTemplate(template)
    except InvalidName:
        return
    ref = SecretRef("key", "acme", "llm", "dev", "shop")
    try:
        path = t.format(ref)
    except KeysafeError:
        return
    assert t.parse(path) == ref


@pytest.mark.parametrize(("template", "ref"), [
    ("{app}/{env}/{org}-{name}", SecretRef("b-c", "a")),
    ("{app}/{env}/{org}.{domain}.{name}", SecretRef("c", "a", "b.d")),
    ("{app}/{env}/{org}{name}", SecretRef("bc", "a")),
])
def test_ambiguous_templates_are_rejected_or_round_trip(template: str,
                                                        ref: SecretRef) -> None:
    try:
        t = NamingTemplate(template)
    except InvalidName:
        return
    assert t.parse(t.format(ref)) == ref


# -- prefix --------------------------------------------------------------------------
def test_prefix_default_template() -> None:
    t = NamingTemplate()
    assert t.prefix(app="agentfoundry", env="dev") == "agentfoundry/dev/"
    assert t.prefix(app="agentfoundry", env="dev", org="acme-corp") == "agentfoundry/dev/acme-corp/"
    assert (t.prefix(app="agentfoundry", env="dev", org="acme-corp", domain="card-services")
            == "agentfoundry/dev/acme-corp/card-services/")
    # A domain without an org cannot narrow a template that puts the org first.
    assert t.prefix(app="agentfoundry", env="dev", domain="llm") == "agentfoundry/dev/"


def test_prefix_spec_000_template() -> None:
    t = NamingTemplate(SPEC_000)
    assert t.prefix(app="ragstar", env="local") == "/ragstar/local/org-"
    assert t.prefix(app="ragstar", env="local", org="123") == "/ragstar/local/org-123/"
    assert t.prefix(app="ragstar", env="local", org="123", domain="llm") == (
        "/ragstar/local/org-123/llm/")


def test_org_prefix_does_not_cover_a_longer_org() -> None:
    t = NamingTemplate()
    prefix = t.prefix(app="a", env="dev", org="org1")
    assert t.format(SecretRef("k", "org1", env="dev", app="a")).startswith(prefix)
    assert not t.format(SecretRef("k", "org10", env="dev", app="a")).startswith(prefix)


def test_matches() -> None:
    t = NamingTemplate()
    assert t.matches("agentfoundry/dev/acme-corp/card-services/openai_api_key")
    assert not t.matches("agentfoundry/dev/acme-corp/openai_api_key")
    assert not t.matches("agentfoundry/dev/acme corp/card-services/openai_api_key")
