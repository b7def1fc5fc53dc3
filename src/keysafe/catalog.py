"""The well-known secrets catalog: what each common secret is called, where it lives in
the environment, what its value looks like and how often it should rotate.

The built-in list covers every secret the specs name (spec 001's llm, integrations and
infrastructure tables first, in their order, then the database, application, cloud and
billing secrets of specs 000, 002, 003 and 004). A team can extend or override it with a
TOML or JSON file (``Catalog.load``).

Format checks are deliberately loose (prefix + charset + minimum length): their job is to
catch a key pasted into the wrong slot or a placeholder saved by mistake, never to reject
a real key because a provider lengthened its format.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

from keysafe.errors import ConfigError
from keysafe.keycheck import BUILTIN_CHECKS, LiveCheck

__all__ = [
    "ROTATION_DAYS",
    "SECRET_TYPES",
    "Catalog",
    "SecretType",
    "WellKnownSecret",
]

SecretType = Literal[
    "api_key",
    "oauth_token",
    "database",
    "jwt",
    "encryption_key",
    "password",
    "webhook_secret",
    "cloud_credential",
    "connection_url",
    "generic",
]
SECRET_TYPES: tuple[str, ...] = get_args(SecretType)

# Spec 004's rotation schedule. Types the spec does not list follow the nearest listed one:
# passwords and connection URLs carry database credentials (90); webhook signing secrets are
# symmetric keys whose rotation needs the sender's cooperation, like JWT secrets (180); cloud
# access keys follow the usual IAM guidance (90, also spec 003's figure for keys).
ROTATION_DAYS: Mapping[str, int | None] = MappingProxyType(
    {
        "api_key": 30,
        "oauth_token": 30,
        "database": 90,
        "jwt": 180,
        "encryption_key": 180,
        "password": 90,
        "webhook_secret": 180,
        "cloud_credential": 90,
        "connection_url": 90,
        "generic": None,
    }
)

_NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_-]*"
_ENV_VAR_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    # Compiled on first use, not at import: most CLI invocations never check a format.
    return re.compile(pattern)


def _key(name: str) -> str:
    """Lookup key: case-insensitive, with '-' and '_' equivalent."""
    return name.strip().lower().replace("-", "_")


#: How the catalog compares names (``Catalog.get``), for code that holds only names.
lookup_key = _key


def _article(phrase: str) -> str:
    """'a' or 'an' for a display name, reading initialisms by letter ("an AWS", "an n8n")."""
    if not phrase:
        return "a"
    first = phrase[0]
    initialism = len(phrase) > 1 and (phrase[1].isupper() or phrase[1].isdigit())
    if initialism:
        return "an" if first.upper() in "AEFHILMNORSX" else "a"
    return "an" if first.lower() in "aeiou" else "a"


@dataclass(frozen=True, slots=True)
class WellKnownSecret:
    """One catalog entry. Holds no secret value: only what a value should look like."""

    name: str
    display_name: str
    description: str
    category: str
    env_var: str
    placeholder: str = ""
    pattern: str | None = None
    secret_type: str = "api_key"
    rotation_days: int | None = None
    provider: str | None = None
    aliases: tuple[str, ...] = ()
    json_fields: tuple[str, ...] = ()
    #: (field, VARIABLE) pairs: a JSON credential's fields that ``run``, ``export`` and
    #: ``sync kubernetes`` also give as variables of their own (AWS_ACCESS_KEY_ID ...),
    #: as the SDKs read them.
    field_env_vars: tuple[tuple[str, str], ...] = ()
    format_hint: str = ""
    #: How to ask the provider whether a key works (keysafe.keycheck); None: no check.
    check: LiveCheck | None = None

    @property
    def effective_rotation_days(self) -> int | None:
        """Days between scheduled rotations; None when there is no schedule.

        ``rotation_days`` None falls back to ``ROTATION_DAYS[secret_type]``; 0 turns the
        schedule off (a team file cannot write None in TOML).
        """
        if self.rotation_days is None:
            return ROTATION_DAYS.get(self.secret_type)
        return self.rotation_days or None

    @property
    def has_format_check(self) -> bool:
        return self.pattern is not None or bool(self.json_fields)

    def check_format(self, value: str) -> str | None:
        """None when ``value`` looks right (or no format is known); otherwise a short message
        naming the problem. The message never contains the value, not even part of it."""
        stripped = value.strip()
        if not stripped:
            return "the value is empty"
        if self.placeholder and stripped == self.placeholder.strip():
            return f"this is the {self.display_name} example placeholder, not a real value"
        if self.pattern is not None and not _compiled(self.pattern).fullmatch(stripped):
            return self._mismatch()
        if self.json_fields:
            return self._check_json(stripped)
        return None

    def to_dict(self, *, checks: bool = True) -> dict[str, object]:
        """JSON-ready description for the API and the web panel (spec 001's well-known
        list). ``checks`` False (live key checks turned off) shows no live check."""
        return {
            "secret_name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "category": self.category,
            "env_var": self.env_var,
            "placeholder": self.placeholder,
            "secret_type": self.secret_type,
            "rotation_days": self.effective_rotation_days,
            "provider": self.provider,
            "has_format_check": self.has_format_check,
            "format_hint": self.format_hint,
            "json_fields": list(self.json_fields),
            "field_env_vars": dict(self.field_env_vars),
            "aliases": list(self.aliases),
            "live_check": self.check.to_dict() if self.check and checks else None,
        }

    def _mismatch(self) -> str:
        message = f"this does not look like {_article(self.display_name)} {self.display_name}"
        return f"{message} ({self.format_hint})" if self.format_hint else message

    def _check_json(self, text: str) -> str | None:
        import json  # only JSON credentials need it

        # "<Display name>: problem" reads well for plural names ("Slack App Credentials").
        expected = f"{self.display_name}: expected a JSON object with the fields " + ", ".join(
            self.json_fields
        )
        try:
            data = json.loads(text)
        except ValueError:
            # The decoder's message can quote the offending text; say nothing about it.
            return expected
        if not isinstance(data, dict):
            return expected
        # Field names come from the catalog, never from the value's own keys.
        missing = [f for f in self.json_fields if f not in data]
        if missing:
            return f"{self.display_name}: missing the field(s) {', '.join(missing)}"
        empty = [f for f in self.json_fields if data[f] in (None, "", {}, [])]
        if empty:
            return f"{self.display_name}: empty field(s) {', '.join(empty)}"
        return None


def _builtin_entries() -> tuple[WellKnownSecret, ...]:
    """The built-in catalog, in declaration order (spec 001's tables come first)."""
    return (
        # --- llm: spec 001's table, then specs 000, 002, 003; extras last ---
        WellKnownSecret(
            name="openai_api_key",
            display_name="OpenAI API Key",
            description="API key for GPT models",
            category="llm",
            env_var="OPENAI_API_KEY",
            placeholder="sk-...",
            # sk-ant- / sk-or- are other providers' keys pasted into the wrong slot.
            pattern=r"sk-(?!ant-|or-)[A-Za-z0-9_-]{20,}",
            provider="openai",
            format_hint="OpenAI keys start with sk- or sk-proj-, not sk-ant- or sk-or-",
        ),
        WellKnownSecret(
            name="anthropic_api_key",
            display_name="Anthropic API Key",
            description="API key for Claude models",
            category="llm",
            env_var="ANTHROPIC_API_KEY",
            placeholder="sk-ant-...",
            pattern=r"sk-ant-[A-Za-z0-9_-]{20,}",
            provider="anthropic",
            aliases=("CLAUDE_API_KEY",),
            format_hint="Anthropic keys start with sk-ant-",
        ),
        WellKnownSecret(
            name="deepgram_api_key",
            display_name="Deepgram API Key",
            description="API key for Deepgram speech-to-text",
            category="llm",
            env_var="DEEPGRAM_API_KEY",
            placeholder="...",
            provider="deepgram",
        ),
        WellKnownSecret(
            name="elevenlabs_api_key",
            display_name="ElevenLabs API Key",
            description="API key for ElevenLabs text-to-speech",
            category="llm",
            env_var="ELEVENLABS_API_KEY",
            placeholder="...",
            provider="elevenlabs",
            aliases=("ELEVEN_API_KEY",),
        ),
        WellKnownSecret(
            name="google_api_key",
            display_name="Google Gemini API Key",
            description="API key for Google Gemini models",
            category="llm",
            env_var="GOOGLE_API_KEY",
            placeholder="AIza...",
            pattern=r"AIza[0-9A-Za-z_-]{35}",
            provider="google",
            aliases=("GEMINI_API_KEY", "GOOGLE_GENAI_API_KEY"),
            format_hint="Google API keys are AIza followed by 35 letters, digits, _ or -",
        ),
        WellKnownSecret(
            name="openrouter_api_key",
            display_name="OpenRouter API Key",
            description="API key for OpenRouter (fallback and multi-model routing)",
            category="llm",
            env_var="OPENROUTER_API_KEY",
            placeholder="sk-or-...",
            pattern=r"sk-or-[A-Za-z0-9_-]{20,}",
            provider="openrouter",
            format_hint="OpenRouter keys start with sk-or-",
        ),
        WellKnownSecret(
            name="mistral_api_key",
            display_name="Mistral API Key",
            description="API key for Mistral models",
            category="llm",
            env_var="MISTRAL_API_KEY",
            placeholder="...",
            provider="mistral",
        ),
        WellKnownSecret(
            name="hf_api_token",
            display_name="Hugging Face Token",
            description="Access token for the Hugging Face Hub and Inference API",
            category="llm",
            env_var="HF_API_TOKEN",
            placeholder="hf_...",
            pattern=r"hf_[A-Za-z0-9]{30,}",
            provider="huggingface",
            aliases=(
                "HF_TOKEN",
                "HUGGINGFACE_TOKEN",
                "HUGGING_FACE_HUB_TOKEN",
                "huggingface_api_token",
            ),
            format_hint="Hugging Face tokens start with hf_",
        ),
        WellKnownSecret(
            name="groq_api_key",
            display_name="Groq API Key",
            description="API key for models served by Groq",
            category="llm",
            env_var="GROQ_API_KEY",
            placeholder="gsk_...",
            pattern=r"gsk_[A-Za-z0-9]{20,}",
            provider="groq",
            format_hint="Groq keys start with gsk_",
        ),
        WellKnownSecret(
            name="cohere_api_key",
            display_name="Cohere API Key",
            description="API key for Cohere models",
            category="llm",
            env_var="COHERE_API_KEY",
            placeholder="...",
            provider="cohere",
            aliases=("CO_API_KEY",),
        ),
        WellKnownSecret(
            name="together_api_key",
            display_name="Together AI API Key",
            description="API key for models on Together AI",
            category="llm",
            env_var="TOGETHER_API_KEY",
            placeholder="...",
            provider="together",
            aliases=("TOGETHERAI_API_KEY",),
        ),
        # --- integrations: spec 001's table; Slack from specs 000 and 004 ---
        WellKnownSecret(
            name="github_token",
            display_name="GitHub Token",
            description="Token for the GitHub API",
            category="integrations",
            env_var="GITHUB_TOKEN",
            placeholder="ghp_...",
            pattern=r"gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}",
            provider="github",
            aliases=("GH_TOKEN",),
            format_hint="GitHub tokens start with ghp_, github_pat_, gho_, ghu_, ghs_ or ghr_",
        ),
        WellKnownSecret(
            name="notion_api_token",
            display_name="Notion API Token",
            description="Internal integration token for the Notion API",
            category="integrations",
            env_var="NOTION_API_TOKEN",
            placeholder="ntn_...",
            # secret_ is the prefix Notion used before it switched to ntn_.
            pattern=r"(?:ntn|secret)_[A-Za-z0-9]{20,}",
            provider="notion",
            aliases=("NOTION_TOKEN", "NOTION_API_KEY"),
            format_hint="Notion tokens start with ntn_ or secret_",
        ),
        WellKnownSecret(
            name="n8n_api_key",
            display_name="n8n API Key",
            description="API key for n8n workflows",
            category="integrations",
            env_var="N8N_API_KEY",
            placeholder="...",
            provider="n8n",
        ),
        WellKnownSecret(
            name="slack_bot_token",
            display_name="Slack Bot Token",
            description="Bot user OAuth token for the Slack API",
            category="integrations",
            env_var="SLACK_BOT_TOKEN",
            placeholder="xoxb-...",
            pattern=r"xoxb-[A-Za-z0-9-]{10,}",
            secret_type="oauth_token",
            provider="slack",
            aliases=("slack_token", "SLACK_TOKEN"),
            format_hint="Slack bot tokens start with xoxb-",
        ),
        WellKnownSecret(
            name="slack_app_token",
            display_name="Slack App Token",
            description="App-level token for Slack Socket Mode",
            category="integrations",
            env_var="SLACK_APP_TOKEN",
            placeholder="xapp-...",
            pattern=r"xapp-[A-Za-z0-9-]{10,}",
            provider="slack",
            format_hint="Slack app-level tokens start with xapp-",
        ),
        WellKnownSecret(
            name="slack_signing_secret",
            display_name="Slack Signing Secret",
            description="Verifies that incoming requests were sent by Slack",
            category="integrations",
            env_var="SLACK_SIGNING_SECRET",
            placeholder="...",
            secret_type="webhook_secret",
            provider="slack",
        ),
        WellKnownSecret(
            name="slack",
            display_name="Slack App Credentials",
            description="A Slack app's bot token, signing secret and app token, as one JSON object",
            category="integrations",
            env_var="SLACK_CREDENTIALS",
            placeholder=(
                '{"bot_token": "xoxb-...", "signing_secret": "...", "app_token": "xapp-..."}'
            ),
            secret_type="oauth_token",
            provider="slack",
            json_fields=("bot_token", "signing_secret", "app_token"),
            field_env_vars=(("bot_token", "SLACK_BOT_TOKEN"),
                            ("signing_secret", "SLACK_SIGNING_SECRET"),
                            ("app_token", "SLACK_APP_TOKEN")),
            format_hint="a JSON object with bot_token, signing_secret and app_token",
        ),
        # --- infrastructure: spec 001's table ---
        WellKnownSecret(
            name="livekit_api_key",
            display_name="LiveKit API Key",
            description="API key for LiveKit real-time audio and video",
            category="infrastructure",
            env_var="LIVEKIT_API_KEY",
            placeholder="API...",
            provider="livekit",
        ),
        WellKnownSecret(
            name="livekit_api_secret",
            display_name="LiveKit API Secret",
            description="Secret paired with the LiveKit API key; signs LiveKit access tokens",
            category="infrastructure",
            env_var="LIVEKIT_API_SECRET",
            placeholder="...",
            provider="livekit",
        ),
        # --- database: specs 002, 003, 004 ---
        WellKnownSecret(
            name="database_url",
            display_name="Database URL",
            description="PostgreSQL connection string",
            category="database",
            env_var="DATABASE_URL",
            placeholder="postgresql://...",
            # Other SQL schemes and SQLAlchemy's scheme+driver form are accepted so that a
            # team on MySQL is not told its URL is wrong; "..." alone is not a URL.
            pattern=r"(?:postgres(?:ql)?|mysql|mariadb|sqlite|mssql|cockroachdb)(?:\+[A-Za-z0-9_]+)?://(?=\S*[A-Za-z0-9])\S+",
            secret_type="database",
            aliases=("DB_URL", "POSTGRES_URL"),
            format_hint="database URLs look like postgresql://user:password@host:5432/dbname",
        ),
        WellKnownSecret(
            name="database_password",
            display_name="Database Password",
            description="Password of the application's database user",
            category="database",
            env_var="DATABASE_PASSWORD",
            placeholder="...",
            secret_type="database",
            aliases=("DB_PASSWORD", "POSTGRES_PASSWORD", "PGPASSWORD"),
        ),
        WellKnownSecret(
            name="redis_url",
            display_name="Redis URL",
            description="Redis connection string",
            category="database",
            env_var="REDIS_URL",
            placeholder="redis://...",
            pattern=r"rediss?(?:\+sentinel)?://(?=\S*[A-Za-z0-9])\S+",
            secret_type="connection_url",
            format_hint="Redis URLs start with redis:// or rediss://",
        ),
        # --- application: specs 002, 003, 004 ---
        WellKnownSecret(
            name="jwt_secret",
            display_name="JWT Secret",
            description="Signs and verifies authentication tokens",
            category="application",
            env_var="JWT_SECRET",
            placeholder="...",
            # Spec 002 asks for 32+ characters; RFC 7518 wants HS256 keys of 256 bits or more.
            pattern=r"\S{32,}",
            secret_type="jwt",
            aliases=("JWT_SECRET_KEY", "ARAGORA_JWT_SECRET"),
            format_hint="JWT secrets need at least 32 characters and no spaces",
        ),
        WellKnownSecret(
            name="session_secret",
            display_name="Session Secret",
            description="Signs session cookies",
            category="application",
            env_var="SESSION_SECRET",
            placeholder="...",
            # A signing secret, as a JWT's: rotated in the maintenance window, the old one
            # verifying for the grace period (verification_values).
            secret_type="jwt",
            aliases=("SESSION_SECRET_KEY",),
        ),
        WellKnownSecret(
            name="encryption_key",
            display_name="Encryption Key",
            description="Symmetric key for application-level data encryption",
            category="application",
            env_var="ENCRYPTION_KEY",
            placeholder="...",
            secret_type="encryption_key",
        ),
        WellKnownSecret(
            name="secret_key",
            display_name="Application Secret Key",
            description="The application's signing key (JWT signing key)",
            category="application",
            env_var="SECRET_KEY",
            placeholder="...",
            # Spec 003: the JWT signing key, held to jwt_secret's rule.
            pattern=r"\S{32,}",
            secret_type="jwt",
            aliases=("APP_SECRET_KEY", "DJANGO_SECRET_KEY"),
            format_hint="a signing key needs at least 32 characters and no spaces",
        ),
        # --- cloud: specs 000, 003 ---
        WellKnownSecret(
            name="aws_access_key_id",
            display_name="AWS Access Key ID",
            description="Identifies an AWS IAM access key; pairs with the secret access key",
            category="cloud",
            env_var="AWS_ACCESS_KEY_ID",
            placeholder="AKIA...",
            pattern=r"(?:AKIA|ASIA)[A-Z0-9]{16}",
            secret_type="cloud_credential",
            provider="aws",
            format_hint="AWS access key IDs are AKIA or ASIA followed by 16 capitals and digits",
        ),
        WellKnownSecret(
            name="aws_secret_access_key",
            display_name="AWS Secret Access Key",
            description="Secret half of an AWS IAM access key",
            category="cloud",
            env_var="AWS_SECRET_ACCESS_KEY",
            placeholder="...",
            pattern=r"[A-Za-z0-9/+=]{40}",
            secret_type="cloud_credential",
            provider="aws",
            format_hint="AWS secret access keys are 40 letters, digits, / or +",
        ),
        WellKnownSecret(
            name="aws_access_key",
            display_name="AWS Access Key (pair)",
            description="An IAM user's access key as one JSON object, so both halves "
                        "change together (the aws-iam rotator rotates it)",
            category="cloud",
            env_var="AWS_ACCESS_KEY",
            placeholder='{"access_key_id": "AKIA...", "secret_access_key": "..."}',
            secret_type="cloud_credential",
            provider="aws",
            json_fields=("access_key_id", "secret_access_key"),
            field_env_vars=(("access_key_id", "AWS_ACCESS_KEY_ID"),
                            ("secret_access_key", "AWS_SECRET_ACCESS_KEY")),
        ),
        WellKnownSecret(
            name="gcp_service_account",
            display_name="GCP Service Account",
            description="Google Cloud service account key (the JSON key file)",
            category="cloud",
            env_var="GCP_SERVICE_ACCOUNT",
            placeholder='{"type": "service_account", "project_id": "...", ...}',
            secret_type="cloud_credential",
            provider="gcp",
            aliases=("GCP_SERVICE_ACCOUNT_JSON", "GCP_SERVICE_ACCOUNT_KEY"),
            json_fields=("type", "project_id", "private_key_id", "private_key", "client_email"),
            format_hint="the JSON key file of a service account",
        ),
        # --- billing: spec 002 ---
        WellKnownSecret(
            name="stripe_secret_key",
            display_name="Stripe Secret Key",
            description="Secret API key for Stripe billing",
            category="billing",
            env_var="STRIPE_SECRET_KEY",
            placeholder="sk_live_...",
            pattern=r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",
            provider="stripe",
            aliases=("STRIPE_API_KEY",),
            format_hint="Stripe secret keys start with sk_live_, sk_test_, rk_live_ or rk_test_",
        ),
        WellKnownSecret(
            name="stripe_webhook_secret",
            display_name="Stripe Webhook Secret",
            description="Verifies the signatures of Stripe webhook events",
            category="billing",
            env_var="STRIPE_WEBHOOK_SECRET",
            placeholder="whsec_...",
            pattern=r"whsec_[A-Za-z0-9+/=]{20,}",
            secret_type="webhook_secret",
            provider="stripe",
            format_hint="Stripe webhook secrets start with whsec_",
        ),
    )


class Catalog:
    """An ordered, read-only set of well-known secrets with lookups by name, alias and env var."""

    __slots__ = ("_by_env", "_by_key", "_entries")

    def __init__(self, entries: Iterable[WellKnownSecret]) -> None:
        # Keyed by normalised name so that a later "openai-api-key" replaces "openai_api_key";
        # a replaced entry keeps its original position.
        self._entries: dict[str, WellKnownSecret] = {}
        for entry in entries:
            self._entries[_key(entry.name)] = entry
        # Names win over env vars, env vars over aliases, earlier entries over later ones.
        self._by_key: dict[str, WellKnownSecret] = dict(self._entries)
        for entry in self._entries.values():
            self._by_key.setdefault(_key(entry.env_var), entry)
        for entry in self._entries.values():
            for alias in entry.aliases:
                self._by_key.setdefault(_key(alias), entry)
        self._by_env: dict[str, WellKnownSecret] = {}
        for entry in self._entries.values():
            self._by_env.setdefault(entry.env_var.upper(), entry)
        for entry in self._entries.values():
            for alias in entry.aliases:
                self._by_env.setdefault(alias.upper(), entry)

    @classmethod
    def builtin(cls) -> Catalog:
        """The built-in catalog, built on first use and shared afterwards."""
        return _builtin_catalog()

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Catalog:
        """The built-in catalog extended and overridden by a team file.

        The file is TOML (``[[secret]]`` tables) or JSON (``{"secrets": [...]}``), chosen
        by its suffix, with ``WellKnownSecret`` field names. An entry whose name matches a
        built-in one overrides only the fields it gives; a new entry needs ``name``,
        ``display_name`` and ``category`` (``env_var`` defaults to the upper-cased name).

        Raises ConfigError, naming the file, the entry and the field, when the file cannot
        be read or parsed, has an unknown field, a wrong type, an unknown secret type, a
        bad regular expression, or the same name twice.
        """
        base = _builtin_catalog()
        if path is None:
            return base
        file = Path(path)
        raw_entries = _read_team_file(file)
        merged: dict[str, WellKnownSecret] = {_key(e.name): e for e in base}
        seen: dict[str, int] = {}
        for index, raw in enumerate(raw_entries, start=1):
            entry = _entry_from_raw(file, index, raw, merged)
            key = _key(entry.name)
            if key in seen:
                raise ConfigError(
                    f"{file}: entry {index} ({entry.name}): field 'name': "
                    f"the same secret is already defined by entry {seen[key]}"
                )
            seen[key] = index
            merged[key] = entry
        return cls(merged.values())

    @classmethod
    def from_api(cls, categories: object) -> Catalog:
        """The catalog a keysafe server serves, from the ``categories`` of its
        ``/api/catalog`` answer (``WellKnownSecret.to_dict`` with its ``pattern``), so
        that a client maps variables to names as the server does (a team's entries
        included), in the server's order (``position``; an older server's categories
        otherwise). Entries that are not in that shape are left out, and a pattern that
        does not compile is dropped (the server checks formats on every write anyway);
        no live check is carried."""
        groups = categories.values() if isinstance(categories, dict) else ()
        raws = [r for group in groups if isinstance(group, list) for r in group
                if isinstance(r, dict)]
        if all(isinstance(r.get("position"), int) for r in raws):
            # The server's own order: it decides which entry an alias names.
            raws.sort(key=lambda r: int(r["position"]))
        return cls(e for e in map(_entry_from_api, raws) if e is not None)

    def get(self, name: str) -> WellKnownSecret | None:
        """The entry for a name, alias or env var; case-insensitive, '-' same as '_'."""
        return self._by_key.get(_key(name))

    def by_env_var(self, env_var: str) -> WellKnownSecret | None:
        """The entry whose env var or alias is ``env_var`` (case-insensitive)."""
        return self._by_env.get(env_var.strip().upper())

    def for_provider(self, provider: str) -> WellKnownSecret | None:
        """The llm entry for an LLM provider ("openai", "anthropic", "google", ...).

        Falls back to ``{provider}_api_key`` so that names known only as aliases
        ("gemini") still resolve.
        """
        wanted = provider.strip().lower()
        for entry in self._entries.values():
            if entry.category == "llm" and (entry.provider or "").lower() == wanted:
                return entry
        fallback = self.get(f"{wanted}_api_key")
        if fallback is not None and fallback.category == "llm":
            return fallback
        return None

    def categories(self) -> dict[str, list[WellKnownSecret]]:
        """Category -> entries, both in declaration order."""
        out: dict[str, list[WellKnownSecret]] = {}
        for entry in self._entries.values():
            out.setdefault(entry.category, []).append(entry)
        return out

    def env_var_for(self, name: str) -> str:
        """The catalog's env var for ``name``, else ``name`` upper-cased with '-' -> '_'."""
        entry = self.get(name)
        if entry is not None:
            return entry.env_var
        return name.strip().upper().replace("-", "_")

    def __iter__(self) -> Iterator[WellKnownSecret]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __repr__(self) -> str:
        return f"Catalog({len(self._entries)} entries)"


def _entry_from_api(raw: object) -> WellKnownSecret | None:
    """One entry of a server's /api/catalog answer; None when it is not in that shape."""
    if not isinstance(raw, dict):
        return None

    def text(key: str) -> str:
        value = raw.get(key)
        return value if isinstance(value, str) else ""

    def texts(key: str) -> tuple[str, ...]:
        value = raw.get(key)
        return (tuple(v for v in value if isinstance(v, str)) if isinstance(value, list)
                else ())

    name, env_var = text("secret_name"), text("env_var")
    if not (_compiled(_NAME_PATTERN).fullmatch(name)
            and _compiled(_ENV_VAR_PATTERN).fullmatch(env_var)):
        return None
    pattern: str | None = text("pattern") or None
    if pattern is not None:
        try:
            _compiled(pattern)
        except re.error:
            pattern = None
    days = raw.get("rotation_days")
    pairs = raw.get("field_env_vars")
    return WellKnownSecret(
        name=name, display_name=text("display_name") or name,
        description=text("description"), category=text("category") or "other",
        env_var=env_var, placeholder=text("placeholder"), pattern=pattern,
        secret_type=text("secret_type") or "generic",
        # The server sends the effective period: None there means no schedule (0 here).
        rotation_days=days if isinstance(days, int) and not isinstance(days, bool)
        and days >= 0 else 0,
        provider=text("provider") or None, aliases=texts("aliases"),
        json_fields=texts("json_fields"),
        field_env_vars=tuple((k, v) for k, v in pairs.items()
                             if isinstance(k, str) and isinstance(v, str))
        if isinstance(pairs, dict) else (),
        format_hint=text("format_hint"))


@functools.cache
def _builtin_catalog() -> Catalog:
    return Catalog(replace(e, check=BUILTIN_CHECKS.get(e.name)) for e in _builtin_entries())


# --- team files -------------------------------------------------------------------------


@functools.cache
def _field_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(WellKnownSecret))


_STR_FIELDS = frozenset(
    {
        "name",
        "display_name",
        "description",
        "category",
        "env_var",
        "placeholder",
        "secret_type",
        "format_hint",
    }
)
# An empty string (TOML has no null) clears these: pattern = "" removes a format check.
_OPTIONAL_STR_FIELDS = frozenset({"pattern", "provider"})
_TUPLE_FIELDS = frozenset({"aliases", "json_fields"})
_REQUIRED_FOR_NEW = ("display_name", "category")


def _read_team_file(file: Path) -> list[object]:
    """The raw entry list of a team catalog file; ConfigError when unreadable or malformed."""
    suffix = file.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(
            f"{file}: unsupported catalog file type {file.suffix or '(none)'!r}; use .toml or .json"
        )
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the catalog file: {exc.strerror}") from exc
    document: Any
    if suffix == ".toml":
        import tomllib

        try:
            document = tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
        list_key, shape = "secret", "[[secret]] tables"
    else:
        import json

        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{file}: not valid JSON: {exc}") from exc
        list_key, shape = "secrets", 'an object {"secrets": [...]}'
    if not isinstance(document, dict):
        raise ConfigError(f"{file}: expected {shape}")
    unknown = sorted(k for k in document if k != list_key)
    if unknown:
        raise ConfigError(
            f"{file}: unknown top-level key(s) {', '.join(map(repr, unknown))}; expected {shape}"
        )
    entries = document.get(list_key, [])
    if not isinstance(entries, list):
        raise ConfigError(f"{file}: {list_key!r} must be a list; expected {shape}")
    return entries


def _entry_from_raw(
    file: Path, index: int, raw: object, known: Mapping[str, WellKnownSecret]
) -> WellKnownSecret:
    """Validate one raw entry and merge it over the known entry of the same name, if any."""
    where = f"{file}: entry {index}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table of fields, got {type(raw).__name__}")
    name = raw.get("name")
    if isinstance(name, str) and name:
        where = f"{where} ({name})"

    def fail(field: str, problem: str) -> ConfigError:
        return ConfigError(f"{where}: field {field!r}: {problem}")

    known_fields = _field_names()
    unknown = sorted(str(k) for k in raw if k not in known_fields)
    if unknown:
        raise fail(unknown[0], f"unknown field; known fields are {', '.join(known_fields)}")
    if not isinstance(name, str) or not name:
        raise fail("name", "missing or not a string")
    if not _compiled(_NAME_PATTERN).fullmatch(name):
        raise fail("name", "must start with a letter and use only letters, digits, '_' and '-'")

    values: dict[str, object] = {}
    for field, value in raw.items():
        if field in _STR_FIELDS:
            if not isinstance(value, str):
                raise fail(field, f"must be a string, not {type(value).__name__}")
            values[field] = value
        elif field in _OPTIONAL_STR_FIELDS:
            if value is not None and not isinstance(value, str):
                raise fail(field, f"must be a string, not {type(value).__name__}")
            values[field] = value or None
        elif field in _TUPLE_FIELDS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise fail(field, "must be a list of strings")
            values[field] = tuple(value)
        elif field == "field_env_vars":
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str)
                    and _compiled(_ENV_VAR_PATTERN).fullmatch(v) for k, v in value.items()):
                raise fail(field, "must be a table of field = \"VARIABLE\" (letters, digits "
                                  "and '_', not starting with a digit)")
            values[field] = tuple(value.items())
        elif field == "check":
            # false or "" turns a built-in check off; a URL or a table sets one.
            values[field] = (None if value is False or value == ""
                             else LiveCheck.from_raw(value, where))
        elif field == "rotation_days":
            # bool is an int subclass; `rotation_days = true` is a mistake, not 1 day.
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise fail(field, "must be a whole number of days (0 turns rotation off)")
            values[field] = value

    secret_type = values.get("secret_type")
    if secret_type is not None and secret_type not in SECRET_TYPES:
        raise fail("secret_type", f"unknown secret type; use one of {', '.join(SECRET_TYPES)}")
    env_var = values.get("env_var")
    if isinstance(env_var, str) and not _compiled(_ENV_VAR_PATTERN).fullmatch(env_var):
        raise fail("env_var", "must be letters, digits and '_', not starting with a digit")
    for field in ("display_name", "category"):
        if field in values and not str(values[field]).strip():
            raise fail(field, "must not be empty")
    pattern = values.get("pattern")
    if isinstance(pattern, str):
        try:
            _compiled(pattern)
        except re.error as exc:
            raise fail("pattern", f"invalid regular expression: {exc}") from exc

    base = known.get(_key(name))
    if base is not None:
        values.pop("name")  # the built-in spelling stays canonical
        return replace(base, **values)  # type: ignore[arg-type]
    for field in _REQUIRED_FOR_NEW:
        if field not in values:
            raise fail(field, "missing (required for a secret that is not built in)")
    canonical = _key(name)
    values["name"] = canonical
    values.setdefault("description", "")
    values.setdefault("env_var", canonical.upper())
    return WellKnownSecret(**values)  # type: ignore[arg-type]
