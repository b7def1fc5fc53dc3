"""Tests for the well-known secrets catalog (keysafe.catalog)."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import string
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from keysafe.catalog import ROTATION_DAYS, SECRET_TYPES, Catalog, WellKnownSecret
from keysafe.errors import ConfigError

# Samples are built from a provider's public prefix plus random characters: realistic in
# shape, never a real key.
_rng = random.Random(20240601)
ALNUM = string.ascii_letters + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
URLSAFE = ALNUM + "_-"
BASE64 = ALNUM + "/+"


def rand(n: int, alphabet: str = ALNUM) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


def gcp_key_json() -> str:
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "demo-project",
            "private_key_id": rand(40, HEX),
            "private_key": "-----BEGIN PRIVATE KEY-----\n"
            + rand(64, BASE64)
            + "\n-----END PRIVATE KEY-----\n",
            "client_email": "svc@demo-project.iam.gserviceaccount.com",
            "client_id": rand(21, string.digits),
        }
    )


def slack_json() -> str:
    return json.dumps(
        {
            "bot_token": f"xoxb-{rand(13, string.digits)}-{rand(24)}",
            "signing_secret": rand(32, HEX),
            "app_token": f"xapp-1-A{rand(10, UPPER_ALNUM)}-{rand(64, HEX)}",
        }
    )


# Every entry with a format check must appear here (test_every_format_check_has_samples).
VALID_SAMPLES: dict[str, list[Callable[[], str]]] = {
    "openai_api_key": [
        lambda: "sk-" + rand(48),
        lambda: "sk-proj-" + rand(156, URLSAFE),
        lambda: "sk-svcacct-" + rand(120, URLSAFE),
    ],
    "anthropic_api_key": [lambda: "sk-ant-api03-" + rand(93, URLSAFE) + "AA"],
    "google_api_key": [lambda: "AIza" + rand(35, URLSAFE)],
    "openrouter_api_key": [lambda: "sk-or-v1-" + rand(64, HEX)],
    "hf_api_token": [lambda: "hf_" + rand(34, string.ascii_letters)],
    "groq_api_key": [lambda: "gsk_" + rand(52)],
    "github_token": [
        lambda: "ghp_" + rand(36),
        lambda: "gho_" + rand(36),
        lambda: "ghs_" + rand(36),
        lambda: "github_pat_" + rand(22) + "_" + rand(59),
    ],
    "notion_api_token": [lambda: "ntn_" + rand(46), lambda: "secret_" + rand(43)],
    "slack_bot_token": [
        lambda: f"xoxb-{rand(13, string.digits)}-{rand(13, string.digits)}-{rand(24)}"
    ],
    "slack_app_token": [
        lambda: f"xapp-1-A{rand(10, UPPER_ALNUM)}-{rand(13, string.digits)}-{rand(64, HEX)}"
    ],
    "slack": [slack_json],
    "database_url": [
        lambda: f"postgresql://app:{rand(24)}@db.internal:5432/app",
        lambda: f"postgres://app:{rand(24)}@localhost/app?sslmode=require",
        lambda: f"postgresql+psycopg://app:{rand(24)}@db:5432/app",
    ],
    "redis_url": [
        lambda: f"redis://:{rand(24)}@cache:6379/0",
        lambda: f"rediss://default:{rand(24)}@cache.example.com:6380",
        lambda: "redis://localhost:6379",
    ],
    "jwt_secret": [lambda: rand(48, URLSAFE), lambda: rand(64, HEX)],
    "secret_key": [lambda: rand(50, URLSAFE), lambda: "django-insecure-" + rand(50, HEX)],
    "aws_access_key_id": [
        lambda: "AKIA" + rand(16, UPPER_ALNUM),
        lambda: "ASIA" + rand(16, UPPER_ALNUM),
    ],
    "aws_secret_access_key": [lambda: rand(40, BASE64)],
    "aws_access_key": [lambda: json.dumps({"access_key_id": "AKIA" + rand(16, UPPER_ALNUM),
                                           "secret_access_key": rand(40, BASE64)})],
    "gcp_service_account": [gcp_key_json],
    "stripe_secret_key": [
        lambda: "sk_live_" + rand(99),
        lambda: "sk_test_" + rand(24),
        lambda: "rk_live_" + rand(99),
    ],
    "stripe_webhook_secret": [lambda: "whsec_" + rand(32)],
}

# Values that must not pass any format check: wrong prefix, prose, a URL, a JSON array.
WRONG_VALUES = [
    "not-a-real-value",
    "hello world this is not a key",
    "https://example.com/callback",
    "[1, 2, 3]",
]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.builtin()


def entry(catalog: Catalog, name: str) -> WellKnownSecret:
    found = catalog.get(name)
    assert found is not None, name
    return found


# --- the built-in list ----------------------------------------------------------------


SPEC_001 = {
    "llm": [
        ("openai_api_key", "OpenAI API Key"),
        ("anthropic_api_key", "Anthropic API Key"),
        ("deepgram_api_key", "Deepgram API Key"),
        ("elevenlabs_api_key", "ElevenLabs API Key"),
    ],
    "integrations": [
        ("github_token", "GitHub Token"),
        ("notion_api_token", "Notion API Token"),
        ("n8n_api_key", "n8n API Key"),
    ],
    "infrastructure": [
        ("livekit_api_key", "LiveKit API Key"),
        ("livekit_api_secret", "LiveKit API Secret"),
    ],
}


def test_categories_start_with_spec_001_tables_in_order(catalog: Catalog) -> None:
    cats = catalog.categories()
    assert list(cats)[:3] == ["llm", "integrations", "infrastructure"]
    for category, expected in SPEC_001.items():
        got = [(e.name, e.display_name) for e in cats[category]]
        assert got[: len(expected)] == expected, category


def test_openai_entry_matches_spec_001_card(catalog: Catalog) -> None:
    openai = entry(catalog, "openai_api_key")
    assert openai.description == "API key for GPT models"
    assert openai.placeholder == "sk-..."
    assert openai.category == "llm"
    assert openai.provider == "openai"


def test_categories_cover_every_entry(catalog: Catalog) -> None:
    cats = catalog.categories()
    assert {
        "llm",
        "integrations",
        "infrastructure",
        "database",
        "application",
        "cloud",
        "billing",
    } <= set(cats)
    flattened = [e for entries in cats.values() for e in entries]
    assert sorted(flattened, key=lambda e: e.name) == sorted(catalog, key=lambda e: e.name)
    # Within a category, entries keep declaration order.
    for category, entries in cats.items():
        assert entries == [e for e in catalog if e.category == category]


@pytest.mark.parametrize(
    "name",
    [
        # spec 000, 002, 003, 004 and the brief's extras
        "google_api_key",
        "database_url",
        "database_password",
        "redis_url",
        "jwt_secret",
        "session_secret",
        "encryption_key",
        "secret_key",
        "stripe_secret_key",
        "stripe_webhook_secret",
        "openrouter_api_key",
        "mistral_api_key",
        "hf_api_token",
        "slack_bot_token",
        "slack",
        "aws_access_key_id",
        "aws_secret_access_key",
        "gcp_service_account",
        "groq_api_key",
        "cohere_api_key",
        "together_api_key",
    ],
)
def test_builtin_has_every_spec_secret(catalog: Catalog, name: str) -> None:
    assert entry(catalog, name).name == name


def test_entries_are_well_formed(catalog: Catalog) -> None:
    keys: set[str] = set()
    for e in catalog:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", e.name), e.name
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", e.env_var), e.env_var
        for field in ("display_name", "description", "category", "placeholder"):
            assert getattr(e, field), f"{e.name}: empty {field}"
        assert e.secret_type in SECRET_TYPES, e.name
        if e.pattern is not None:
            re.compile(e.pattern)
            assert e.format_hint, f"{e.name}: a format check needs a hint for its message"
        if e.category == "llm":
            assert e.provider, e.name
        key = e.name.replace("-", "_").lower()
        assert key not in keys
        keys.add(key)


def test_no_alias_or_env_var_points_at_two_entries(catalog: Catalog) -> None:
    owner: dict[str, str] = {}
    for e in catalog:
        for label in (e.name, e.env_var, *e.aliases):
            k = label.lower().replace("-", "_")
            assert owner.setdefault(k, e.name) == e.name, f"{label} used by {owner[k]} and {e.name}"


def test_entries_are_frozen(catalog: Catalog) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry(catalog, "openai_api_key").env_var = "X"  # type: ignore[misc]


def test_builtin_is_built_once() -> None:
    assert Catalog.builtin() is Catalog.builtin()
    assert Catalog.load() is Catalog.builtin()
    assert Catalog.load(None) is Catalog.builtin()


def test_import_builds_nothing() -> None:
    code = (
        "import keysafe.catalog as c\n"
        "assert c._builtin_catalog.cache_info().currsize == 0\n"
        "assert c._compiled.cache_info().currsize == 0\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- format checks --------------------------------------------------------------------


def test_every_format_check_has_samples(catalog: Catalog) -> None:
    checked = {e.name for e in catalog if e.has_format_check}
    assert checked == set(VALID_SAMPLES)


@pytest.mark.parametrize("name", sorted(VALID_SAMPLES))
def test_format_check_accepts_realistic_samples(catalog: Catalog, name: str) -> None:
    e = entry(catalog, name)
    for make in VALID_SAMPLES[name]:
        sample = make()
        assert e.check_format(sample) is None, f"{name} rejected a sample shaped {sample[:7]}..."
        # Pasted values often carry a trailing newline or spaces.
        assert e.check_format(f"  {sample}\n") is None


@pytest.mark.parametrize("name", sorted(VALID_SAMPLES))
def test_format_check_rejects_wrong_values(catalog: Catalog, name: str) -> None:
    e = entry(catalog, name)
    for wrong in WRONG_VALUES:
        message = e.check_format(wrong)
        assert message is not None, f"{name} accepted {wrong!r}"
        assert wrong not in message


@pytest.mark.parametrize(
    ("slot", "pasted"),
    [
        ("openai_api_key", "anthropic_api_key"),
        ("openai_api_key", "openrouter_api_key"),
        ("anthropic_api_key", "openai_api_key"),
        ("stripe_secret_key", "stripe_webhook_secret"),
        ("slack_bot_token", "slack_app_token"),
        ("aws_access_key_id", "aws_secret_access_key"),
        ("github_token", "hf_api_token"),
    ],
)
def test_format_check_rejects_a_key_in_the_wrong_slot(
    catalog: Catalog, slot: str, pasted: str
) -> None:
    value = VALID_SAMPLES[pasted][0]()
    message = entry(catalog, slot).check_format(value)
    assert message is not None
    assert value not in message


def test_format_check_message_names_the_problem(catalog: Catalog) -> None:
    message = entry(catalog, "openai_api_key").check_format("pk-" + rand(40))
    assert message is not None
    assert message.startswith("this does not look like an OpenAI API Key (")
    assert "sk-" in message
    aws = entry(catalog, "aws_access_key_id").check_format("nope")
    assert aws is not None
    assert aws.startswith("this does not look like an AWS Access Key ID")


@pytest.mark.parametrize("name", sorted(VALID_SAMPLES))
def test_messages_never_contain_the_value(catalog: Catalog, name: str) -> None:
    e = entry(catalog, name)
    marker = "Zq" + rand(30)
    candidates = [
        marker,
        f"sk-{marker} with spaces",
        f"{e.placeholder}{marker}",
        json.dumps({marker: marker}),
        '{"bot_token": "' + marker + '", broken',
        json.dumps([marker]),
    ]
    for value in candidates:
        message = e.check_format(value)
        if message is not None:
            assert marker not in message
            assert marker[:8] not in message


def test_every_placeholder_fails_its_own_check(catalog: Catalog) -> None:
    for e in catalog:
        assert e.check_format(e.placeholder) is not None, e.name
        if e.pattern is not None:
            assert not re.fullmatch(e.pattern, e.placeholder.strip()), e.name


def test_empty_value_is_rejected_everywhere(catalog: Catalog) -> None:
    for e in catalog:
        assert e.check_format("") == "the value is empty"
        assert e.check_format("  \n") == "the value is empty"


def test_entries_without_a_known_format_accept_anything_nonempty(catalog: Catalog) -> None:
    for name in ("deepgram_api_key", "mistral_api_key", "livekit_api_secret", "database_password"):
        e = entry(catalog, name)
        assert not e.has_format_check
        assert e.check_format(rand(40)) is None


def test_json_credentials_name_missing_fields(catalog: Catalog) -> None:
    slack = entry(catalog, "slack")
    assert slack.json_fields == ("bot_token", "signing_secret", "app_token")
    partial = json.dumps({"bot_token": "xoxb-" + rand(30), "signing_secret": rand(32, HEX)})
    assert slack.check_format(partial) == "Slack App Credentials: missing the field(s) app_token"
    blank = json.loads(slack_json())
    blank["signing_secret"] = ""
    message = slack.check_format(json.dumps(blank))
    assert message is not None
    assert "signing_secret" in message
    assert slack.check_format("xoxb-" + rand(30)) is not None  # a bare token, not JSON
    gcp = entry(catalog, "gcp_service_account")
    assert gcp.check_format(json.dumps({"type": "service_account"})) is not None


# --- rotation -------------------------------------------------------------------------


def test_rotation_defaults_follow_spec_004(catalog: Catalog) -> None:
    assert ROTATION_DAYS["database"] == 90
    assert ROTATION_DAYS["api_key"] == 30
    assert ROTATION_DAYS["jwt"] == 180
    assert ROTATION_DAYS["encryption_key"] == 180
    assert ROTATION_DAYS["oauth_token"] == 30
    assert ROTATION_DAYS["generic"] is None
    assert set(ROTATION_DAYS) == set(SECRET_TYPES)
    expected = {
        "database-url": 90,
        "database-password": 90,
        "openai-api-key": 30,
        "anthropic-api-key": 30,
        "github-token": 30,
        "slack-token": 30,
        "jwt-secret": 180,
        "session-secret": 180,
        "encryption-key": 180,
    }
    for name, days in expected.items():
        assert entry(catalog, name).effective_rotation_days == days, name


def test_rotation_days_override_and_opt_out() -> None:
    base = WellKnownSecret("x", "X", "", "custom", "X", secret_type="database")
    assert base.effective_rotation_days == 90
    assert dataclasses.replace(base, rotation_days=7).effective_rotation_days == 7
    assert dataclasses.replace(base, rotation_days=0).effective_rotation_days is None
    assert dataclasses.replace(base, secret_type="generic").effective_rotation_days is None


def test_rotation_defaults_are_read_only() -> None:
    with pytest.raises(TypeError):
        ROTATION_DAYS["api_key"] = 1  # type: ignore[index]


# --- lookups --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("openai_api_key", "openai_api_key"),
        ("openai-api-key", "openai_api_key"),  # spec 000 / 004 kebab names
        ("OpenAI-API-Key", "openai_api_key"),
        ("OPENAI_API_KEY", "openai_api_key"),
        ("HF_TOKEN", "hf_api_token"),
        ("huggingface-token", "hf_api_token"),
        ("HUGGINGFACE_TOKEN", "hf_api_token"),
        ("hf-api-token", "hf_api_token"),
        ("slack-token", "slack_bot_token"),
        ("gemini-api-key", "google_api_key"),
        ("ARAGORA_JWT_SECRET", "jwt_secret"),
        ("database-password", "database_password"),
        ("slack", "slack"),
    ],
)
def test_get_by_name_alias_env_var_and_kebab(catalog: Catalog, query: str, name: str) -> None:
    assert entry(catalog, query).name == name
    assert query in catalog


def test_get_unknown(catalog: Catalog) -> None:
    assert catalog.get("no_such_secret") is None
    assert "no_such_secret" not in catalog
    assert 42 not in catalog


@pytest.mark.parametrize(
    "env_var",
    [
        # spec 003's table and spec 002's required/optional tables
        "SECRET_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "GCP_SERVICE_ACCOUNT",
        "HF_API_TOKEN",
        "ARAGORA_JWT_SECRET",
        "OPENROUTER_API_KEY",
        "MISTRAL_API_KEY",
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
    ],
)
def test_by_env_var_knows_every_spec_env_var(catalog: Catalog, env_var: str) -> None:
    found = catalog.by_env_var(env_var)
    assert found is not None
    assert env_var in (found.env_var, *found.aliases)


def test_by_env_var_is_case_insensitive_and_exact(catalog: Catalog) -> None:
    hf = catalog.by_env_var("hf_token")
    assert hf is not None
    assert hf.name == "hf_api_token"
    assert catalog.by_env_var("openai_api_key") is entry(catalog, "openai_api_key")
    assert catalog.by_env_var("OPENAI-API-KEY") is None
    assert catalog.by_env_var("NOPE") is None


@pytest.mark.parametrize(
    ("provider", "name"),
    [
        ("openai", "openai_api_key"),
        ("OpenAI", "openai_api_key"),
        ("anthropic", "anthropic_api_key"),
        ("google", "google_api_key"),
        ("gemini", "google_api_key"),
        ("huggingface", "hf_api_token"),
        ("deepgram", "deepgram_api_key"),
    ],
)
def test_for_provider(catalog: Catalog, provider: str, name: str) -> None:
    found = catalog.for_provider(provider)
    assert found is not None
    assert found.name == name


def test_for_provider_only_returns_llm_entries(catalog: Catalog) -> None:
    assert catalog.for_provider("github") is None
    assert catalog.for_provider("stripe") is None
    assert catalog.for_provider("nobody") is None


def test_env_var_for(catalog: Catalog) -> None:
    assert catalog.env_var_for("openai-api-key") == "OPENAI_API_KEY"
    assert catalog.env_var_for("huggingface_token") == "HF_API_TOKEN"
    assert catalog.env_var_for("my-custom-secret") == "MY_CUSTOM_SECRET"


def test_constructor_later_entries_override_earlier() -> None:
    a = WellKnownSecret("thing", "Thing", "first", "custom", "THING")
    b = WellKnownSecret("other", "Other", "", "custom", "OTHER")
    c = WellKnownSecret("Thing", "Thing 2", "second", "custom", "THING2")
    cat = Catalog([a, b, c])
    assert len(cat) == 2
    assert [e.description for e in cat] == ["second", ""]
    assert cat.get("thing") is c
    assert cat.get("THING2") is c


def test_to_dict_is_json_ready(catalog: Catalog) -> None:
    for e in catalog:
        d = e.to_dict()
        json.dumps(d)
        assert d["secret_name"] == e.name
        assert d["rotation_days"] == e.effective_rotation_days
        assert isinstance(d["has_format_check"], bool)
        assert isinstance(d["json_fields"], list)
        for k in (
            "display_name",
            "description",
            "category",
            "env_var",
            "placeholder",
            "secret_type",
            "provider",
        ):
            assert d[k] == getattr(e, k)
    d = entry(catalog, "openai_api_key").to_dict()
    assert d["has_format_check"] is True
    assert d["rotation_days"] == 30
    assert entry(catalog, "slack").to_dict()["json_fields"] == [
        "bot_token",
        "signing_secret",
        "app_token",
    ]


# --- team files -----------------------------------------------------------------------


TEAM_TOML = """
[[secret]]
name = "openai_api_key"
rotation_days = 14
description = "Team OpenAI key"

[[secret]]
name = "datadog-api-key"
display_name = "Datadog API Key"
category = "monitoring"
placeholder = "dd-..."
pattern = "[a-f0-9]{32}"
format_hint = "Datadog API keys are 32 hex characters"

[[secret]]
name = "jwt-secret"
pattern = ""
aliases = ["AUTH_JWT_SECRET"]
"""

TEAM_JSON = {
    "secrets": [
        {"name": "openai_api_key", "rotation_days": 14, "description": "Team OpenAI key"},
        {
            "name": "datadog-api-key",
            "display_name": "Datadog API Key",
            "category": "monitoring",
            "placeholder": "dd-...",
            "pattern": "[a-f0-9]{32}",
            "format_hint": "Datadog API keys are 32 hex characters",
        },
        {"name": "jwt-secret", "pattern": None, "aliases": ["AUTH_JWT_SECRET"]},
    ]
}


@pytest.fixture(params=["toml", "json"])
def team_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "toml":
        path = tmp_path / "catalog.toml"
        path.write_text(TEAM_TOML)
    else:
        path = tmp_path / "catalog.json"
        path.write_text(json.dumps(TEAM_JSON))
    return path


def test_team_file_extends_and_overrides(team_file: Path) -> None:
    builtin = Catalog.builtin()
    cat = Catalog.load(team_file)
    assert len(cat) == len(builtin) + 1

    openai = entry(cat, "openai_api_key")
    assert openai.effective_rotation_days == 14
    assert openai.description == "Team OpenAI key"
    # Fields the file does not give are kept from the built-in entry.
    assert openai.pattern == entry(builtin, "openai_api_key").pattern
    assert openai.display_name == "OpenAI API Key"
    assert list(cat).index(openai) == 0

    jwt = entry(cat, "JWT_SECRET")
    assert jwt.name == "jwt_secret"
    assert jwt.pattern is None
    assert not jwt.has_format_check
    assert jwt.check_format("short") is None
    assert entry(cat, "AUTH_JWT_SECRET") is jwt

    dd = entry(cat, "datadog-api-key")
    assert dd.name == "datadog_api_key"
    assert dd.env_var == "DATADOG_API_KEY"
    assert dd.secret_type == "api_key"
    assert dd.effective_rotation_days == 30
    assert dd.check_format(rand(32, HEX)) is None
    assert dd.check_format("dd-...") is not None
    assert [e.name for e in cat.categories()["monitoring"]] == ["datadog_api_key"]

    # The built-in catalog is untouched.
    assert entry(builtin, "openai_api_key").effective_rotation_days == 30


def test_empty_team_file_is_the_builtin(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("")
    assert [e.name for e in Catalog.load(path)] == [e.name for e in Catalog.builtin()]


def toml_entry(body: str) -> str:
    return f'[[secret]]\nname = "thing"\ndisplay_name = "Thing"\ncategory = "custom"\n{body}\n'


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (toml_entry('colour = "red"'), r"entry 1 \(thing\): field 'colour': unknown field"),
        (toml_entry('pattern = "sk-[a-z"'), r"entry 1 \(thing\): field 'pattern': invalid regular"),
        (toml_entry('secret_type = "magic"'), r"field 'secret_type': unknown secret type"),
        (toml_entry("rotation_days = -1"), r"field 'rotation_days'"),
        (toml_entry("rotation_days = true"), r"field 'rotation_days'"),
        (toml_entry('rotation_days = "30"'), r"field 'rotation_days'"),
        (toml_entry('aliases = "THING"'), r"field 'aliases': must be a list of strings"),
        (toml_entry("provider = 3"), r"field 'provider': must be a string"),
        (toml_entry('env_var = "1BAD-VAR"'), r"field 'env_var'"),
        (toml_entry('field_env_vars = { id = "1BAD" }'), r"field 'field_env_vars'"),
        (toml_entry('field_env_vars = ["ID"]'), r"field 'field_env_vars': must be a table"),
        ('[[secret]]\nname = "thing"\ncategory = "custom"\n', r"field 'display_name': missing"),
        ('[[secret]]\ndisplay_name = "Thing"\n', r"entry 1: field 'name': missing"),
        ('[[secret]]\nname = "has space"\n', r"field 'name'"),
        (toml_entry("") + toml_entry(""), r"entry 2 \(thing\): field 'name': .*entry 1"),
        ('[[secret]]\nname = "openai_api_key"\npattern = "("\n', r"openai_api_key.*'pattern'"),
        ('[[secrets]]\nname = "x"\n', r"unknown top-level key"),
        ("secret = 3\n", r"must be a list"),
        ("[[secret]\n", r"not valid TOML"),
    ],
)
def test_bad_toml_file_names_the_problem(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "team.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        Catalog.load(path)
    message = str(info.value)
    assert str(path) in message
    assert re.search(expected, message), message


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"secrets": [{"name": "openai_api_key", "colour": "red"}]}, r"field 'colour'"),
        ({"secrets": [{"name": "openai_api_key", "pattern": "[z-a]"}]}, r"field 'pattern'"),
        ({"secrets": ["openai_api_key"]}, r"entry 1: expected a table"),
        ({"secrets": {"name": "x"}}, r"must be a list"),
        ({"secret": []}, r"unknown top-level key"),
        ([], r"expected an object"),
    ],
)
def test_bad_json_file_names_the_problem(tmp_path: Path, document: object, expected: str) -> None:
    path = tmp_path / "team.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError) as info:
        Catalog.load(path)
    assert str(path) in str(info.value)
    assert re.search(expected, str(info.value)), str(info.value)


def test_unreadable_or_unknown_files(tmp_path: Path) -> None:
    broken = tmp_path / "team.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Catalog.load(broken)
    with pytest.raises(ConfigError, match="cannot read"):
        Catalog.load(tmp_path / "missing.toml")
    yaml = tmp_path / "team.yaml"
    yaml.write_text("secret: []")
    with pytest.raises(ConfigError, match="unsupported catalog file type"):
        Catalog.load(yaml)


def test_team_file_field_variables(tmp_path: Path) -> None:
    """``field_env_vars``: a team's JSON credential gives its fields as variables too."""
    path = tmp_path / "team.toml"
    path.write_text(toml_entry('json_fields = ["client_id", "client_secret"]\n'
                               'field_env_vars = { client_id = "THING_CLIENT_ID", '
                               'client_secret = "THING_CLIENT_SECRET" }'))
    entry = Catalog.load(path).get("thing")
    assert entry is not None
    assert entry.field_env_vars == (("client_id", "THING_CLIENT_ID"),
                                    ("client_secret", "THING_CLIENT_SECRET"))
    assert entry.to_dict()["field_env_vars"] == {"client_id": "THING_CLIENT_ID",
                                                 "client_secret": "THING_CLIENT_SECRET"}


# -- a server's catalog, as a client reads it ---------------------------------------------
def test_a_servers_catalog_reads_back_as_the_same_entries() -> None:
    """What /api/catalog sends (to_dict with the pattern) gives back every entry with
    the same lookups, format checks and rotation periods (no live checks: the server
    runs those)."""
    base = Catalog.builtin()
    sent = {cat: [{**e.to_dict(), "pattern": e.pattern} for e in entries]
            for cat, entries in base.categories().items()}
    got = Catalog.from_api(sent)
    assert [e.name for e in got] == [e.name for e in base]
    for a in base:
        b = got.get(a.name)
        assert b is not None
        assert b.check is None
        assert (b.env_var, b.aliases, b.pattern, b.json_fields, b.field_env_vars,
                b.placeholder, b.effective_rotation_days, b.secret_type) == (
            a.env_var, a.aliases, a.pattern, a.json_fields, a.field_env_vars,
            a.placeholder, a.effective_rotation_days, a.secret_type)
    assert got.by_env_var("HF_TOKEN") is got.get("hf_api_token")


def test_odd_entries_from_a_server_are_left_out() -> None:
    sent = {"x": [None, "text", {"secret_name": "no env var"},
                  {"secret_name": "ok_key", "env_var": "OK_KEY", "pattern": "(",
                   "aliases": ["OK", 3], "rotation_days": True,
                   "field_env_vars": {"a": 1}}],
            "y": "not a list"}
    got = Catalog.from_api(sent)
    (entry,) = list(got)
    assert (entry.name, entry.pattern, entry.aliases, entry.field_env_vars) == (
        "ok_key", None, ("OK",), ())
    assert entry.effective_rotation_days is None  # no schedule said: none assumed
    assert entry.check_format("anything") is None
    assert list(Catalog.from_api(None)) == []


def test_a_servers_order_decides_an_alias_clash() -> None:
    """Categories regroup the entries; ``position`` gives back the server's order, in
    which an earlier entry's alias wins."""
    sent = {"llm": [{"secret_name": "corp_llm_token", "env_var": "CORP_LLM_TOKEN",
                     "aliases": ["GH_TOKEN"], "position": 1}],
            "integrations": [{"secret_name": "github_token", "env_var": "GITHUB_TOKEN",
                              "aliases": ["GH_TOKEN"], "position": 0}]}
    got = Catalog.from_api(sent)
    assert [e.name for e in got] == ["github_token", "corp_llm_token"]
    entry = got.by_env_var("GH_TOKEN")
    assert entry is not None
    assert entry.name == "github_token"
