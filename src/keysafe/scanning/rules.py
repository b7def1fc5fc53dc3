"""Known key formats: one rule per provider format, with the prefix, charset and length
that provider documents and boundaries on both sides.

The catalog's format checks (``WellKnownSecret.pattern``) are loose full-match checks for
a value already in a secret's slot; a scanner meets the same formats inside arbitrary
text, so each rule here adds boundaries (no letter, digit, ``_``, ``-``, ``+`` or ``/``
just before or after: a key is never the middle of a longer token or of a base64 blob)
and a post-check that turns away placeholders (``sk-xxxx...``, ``AKIA...EXAMPLE``).
Rules map to catalog entries by name, so a finding knows the secret it would be imported
as; catalog entries from a team file whose pattern starts with a literal prefix get a rule
of their own (``rules_for``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keysafe.scanning.entropy import has_digit, looks_placeholder, shannon

if TYPE_CHECKING:
    from keysafe.catalog import Catalog

__all__ = ["Rule", "builtin_rules", "rules_for"]

#: Before a key: not part of a longer token, a base64 blob or a path; an escaped newline
#: (``\n`` inside a JSON or notebook string) counts as a boundary.
_L = r"(?:(?<=\\[nrt])|(?<![A-Za-z0-9_+/\\-]))"
#: After a key: not followed by more token characters.
_R = r"(?![A-Za-z0-9_+/-])"


@dataclass(frozen=True, slots=True)
class Rule:
    """One detector. ``secret`` is the regex group holding the value (0: the whole match)."""

    id: str
    title: str
    pattern: str
    #: Literal strings one of which must occur for the rule to match at all: a cheap
    #: ``in`` test skips the regex for most files.
    hints: tuple[str, ...]
    #: The catalog entry a finding is imported as (None: derived from the variable).
    entry: str | None = None
    secret_group: int | str = 0
    #: Extra check on the matched value; False drops the match (placeholders, examples).
    check: Callable[[str], bool] | None = None
    description: str = ""

    @property
    def regex(self) -> re.Pattern[str]:
        return compiled(self.pattern)


@functools.lru_cache(maxsize=512)
def compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _random_body(prefix_len: int, *, min_entropy: float = 3.0,
                 need_digit: bool = True) -> Callable[[str], bool]:
    """A check that the part after the prefix looks random, not like a placeholder."""

    def check(value: str) -> bool:
        body = value[prefix_len:]
        if looks_placeholder(body):
            return False
        if need_digit and not has_digit(body):
            return False
        return shannon(body) >= min_entropy

    return check


def _openai(value: str) -> bool:
    body = re.sub(r"^sk-(?:proj|svcacct|admin|None)-", "", value)
    if body == value:
        body = value[3:]
    return not looks_placeholder(body) and has_digit(body) and shannon(body) >= 3.5


def _aws_key_id(value: str) -> bool:
    # AWS's documentation uses AKIAIOSFODNN7EXAMPLE; real IDs never end in EXAMPLE.
    return not value.endswith("EXAMPLE") and not looks_placeholder(value[4:]) \
        and shannon(value[4:]) >= 2.5


def _aws_secret(value: str) -> bool:
    return "EXAMPLE" not in value and not looks_placeholder(value) and shannon(value) >= 4.0


def _db_password(password: str) -> bool:
    from keysafe.scanning.entropy import looks_like_template, weak_password

    if looks_like_template(password) or looks_placeholder(password):
        return False
    return not weak_password(password)


def _private_key(value: str) -> bool:
    # The header alone is in every TLS library's docs; a key has a body of base64.
    body = "".join(value.splitlines()[1:-1])
    body = re.sub(r"^(?:Proc-Type|DEK-Info|Comment):.*$", "", body)
    return len(body) >= 64 and not looks_placeholder(body) and shannon(body) >= 4.5


def _db_url_check(url: str) -> bool:
    m = re.search(r"://[^:/@]*:([^@]*)@", url)
    return m is not None and _db_password(m.group(1))


def _jwt(value: str) -> bool:
    import base64
    import json

    header = value.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except ValueError:
        return False
    return isinstance(decoded, dict) and "alg" in decoded


def builtin_rules() -> tuple[Rule, ...]:
    """The built-in rules, most specific first (an overlap keeps the earlier rule)."""
    return (
        Rule("anthropic-api-key", "Anthropic API key",
             _L + r"sk-ant-(?:api\d\d-|admin\d\d-|oat\d\d-)?[A-Za-z0-9_-]{32,}" + _R,
             ("sk-ant-",), "anthropic_api_key", check=_random_body(7, min_entropy=3.5)),
        Rule("openrouter-api-key", "OpenRouter API key",
             _L + r"sk-or-(?:v1-)?[A-Za-z0-9_-]{32,}" + _R,
             ("sk-or-",), "openrouter_api_key", check=_random_body(6, min_entropy=3.0)),
        Rule("openai-api-key", "OpenAI API key",
             _L + r"sk-(?!ant-|or-)(?:(?:proj|svcacct|admin|None)-)?[A-Za-z0-9_-]{32,}" + _R,
             ("sk-",), "openai_api_key", check=_openai),
        Rule("slack-bot-token", "Slack bot token",
             _L + r"xoxb-[0-9]{8,}-[0-9]{8,}-[A-Za-z0-9]{20,}" + _R,
             ("xoxb-",), "slack_bot_token", check=_random_body(5)),
        Rule("slack-app-token", "Slack app-level token",
             _L + r"xapp-\d-[A-Z0-9]{8,}-\d{8,}-[A-Za-z0-9]{32,}" + _R,
             ("xapp-",), "slack_app_token", check=_random_body(5)),
        Rule("slack-token", "Slack token",
             _L + r"xox[aprseo]-[0-9]{6,}-[A-Za-z0-9-]{20,}" + _R,
             ("xoxa-", "xoxp-", "xoxr-", "xoxs-", "xoxe-", "xoxo-"), None,
             check=_random_body(5)),
        Rule("slack-webhook-url", "Slack incoming webhook URL",
             r"https://hooks\.slack\.com/(?:services|workflows|triggers)/"
             r"T[A-Z0-9]{6,}/[A-Z0-9]{6,}/[A-Za-z0-9]{20,}" + _R,
             ("hooks.slack.com",), "slack_webhook_url",
             check=lambda v: _random_body(0)(v.rsplit("/", 1)[-1])),
        Rule("github-token", "GitHub token",
             _L + r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})" + _R,
             ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), "github_token",
             check=_random_body(4, min_entropy=3.5)),
        Rule("gitlab-token", "GitLab personal access token",
             _L + r"glpat-[A-Za-z0-9_-]{20,}" + _R, ("glpat-",), "gitlab_token",
             check=_random_body(6)),
        Rule("aws-access-key-id", "AWS access key ID",
             _L + r"(?:AKIA|ASIA)[A-Z0-9]{16}" + _R, ("AKIA", "ASIA"), "aws_access_key_id",
             check=_aws_key_id),
        Rule("aws-secret-access-key", "AWS secret access key",
             r"(?i:aws_?secret_?(?:access_?)?key)(?:\\?[\"'])?\]?[ \t]*(?::=|=>|=|:)[ \t]*"
             r"(?:\\?[\"'])?(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
             ("ecret",), "aws_secret_access_key", secret_group="secret", check=_aws_secret),
        Rule("stripe-secret-key", "Stripe secret key",
             _L + r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,}" + _R,
             ("sk_live_", "sk_test_", "rk_live_", "rk_test_"), "stripe_secret_key",
             check=_random_body(8, min_entropy=3.5)),
        Rule("stripe-webhook-secret", "Stripe webhook signing secret",
             _L + r"whsec_[A-Za-z0-9+/=]{24,}" + _R, ("whsec_",), "stripe_webhook_secret",
             check=_random_body(6)),
        Rule("huggingface-token", "Hugging Face token",
             _L + r"hf_[A-Za-z0-9]{30,}" + _R, ("hf_",), "hf_api_token",
             check=_random_body(3, min_entropy=3.5)),
        Rule("google-api-key", "Google API key",
             _L + r"AIza[0-9A-Za-z_-]{35}" + _R, ("AIza",), "google_api_key",
             check=_random_body(4, min_entropy=3.5, need_digit=False)),
        Rule("groq-api-key", "Groq API key",
             _L + r"gsk_[A-Za-z0-9]{40,}" + _R, ("gsk_",), "groq_api_key",
             check=_random_body(4, min_entropy=3.5)),
        Rule("notion-token", "Notion integration token",
             _L + r"(?:ntn_[A-Za-z0-9]{40,}|secret_[A-Za-z0-9]{43})" + _R,
             ("ntn_", "secret_"), "notion_api_token",
             check=lambda v: _random_body(v.index("_") + 1, min_entropy=4.0)(v)),
        Rule("sendgrid-api-key", "SendGrid API key",
             _L + r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}" + _R, ("SG.",),
             "sendgrid_api_key", check=_random_body(3, min_entropy=4.0)),
        Rule("npm-token", "npm access token",
             _L + r"npm_[A-Za-z0-9]{36}" + _R, ("npm_",), "npm_token",
             check=_random_body(4, min_entropy=3.5)),
        Rule("pypi-token", "PyPI API token",
             _L + r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}" + _R, ("pypi-AgEI",),
             "pypi_token", check=_random_body(5)),
        Rule("telegram-bot-token", "Telegram bot token",
             r"(?<![A-Za-z0-9_:])\d{8,10}:AA[A-Za-z0-9_-]{33}" + _R, (":AA",),
             "telegram_bot_token", check=lambda v: _random_body(v.index(":") + 3)(v)),
        Rule("mailchimp-api-key", "Mailchimp API key",
             _L + r"[0-9a-f]{32}-us\d{1,2}" + _R, ("-us",), "mailchimp_api_key",
             check=lambda v: shannon(v[:32]) >= 3.2),
        Rule("azure-storage-key", "Azure storage account key",
             r"AccountKey=(?P<secret>[A-Za-z0-9+/]{86}==)", ("AccountKey=",),
             "azure_storage_key", secret_group="secret",
             check=lambda v: shannon(v) >= 4.5),
        Rule("private-key", "Private key",
             r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
             r"(?:\\[nr]|[\s\S]){64,12000}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
             ("PRIVATE KEY",), "private_key",
             check=lambda v: _private_key(v.replace("\\n", "\n").replace("\\r", ""))),
        Rule("database-url", "Connection URL with a password",
             r"(?<![A-Za-z0-9+.-])(?:postgres(?:ql)?|mysql|mariadb|mssql|sqlserver|oracle|"
             r"mongodb(?:\+srv)?|rediss?|amqps?|cockroachdb)(?:\+[a-z0-9]+)?://"
             r"[^\s:/@\"'`<>{}$]{1,64}:(?P<password>[^\s/@\"'`<>]{1,128})@[^\s\"'`<>]+",
             ("://",), "database_url", check=_db_url_check),
        Rule("jwt", "JSON Web Token",
             _L + r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{20,}" + _R,
             ("eyJ",), None, check=_jwt),
    )


_PREFIX = re.compile(r"[A-Za-z0-9_]+[-_.]?")


def _literal_prefix(pattern: str) -> str:
    """The literal characters a catalog pattern starts with ('' when it starts with a class
    or group): ``xoxb-[A-Za-z0-9-]{10,}`` -> ``xoxb-``."""
    m = _PREFIX.match(pattern)
    if m is None:
        return ""
    prefix = m.group(0)
    nxt = pattern[m.end():m.end() + 1]
    if nxt in ("?", "*", "{"):  # the last character is optional or repeated
        prefix = prefix[:-1]
    return prefix


@functools.lru_cache(maxsize=8)
def _rules_for_cached(catalog: Catalog) -> tuple[Rule, ...]:
    rules = list(builtin_rules())
    # Connection URLs are covered by database-url, which insists on a real password.
    covered = {r.entry for r in rules} | {"redis_url"}
    for entry in catalog:
        if entry.pattern is None or entry.name in covered:
            continue
        prefix = _literal_prefix(entry.pattern)
        if len(prefix) < 3:
            continue  # too generic to search free text for (an AWS secret key, a JWT secret)
        rules.append(Rule(
            f"catalog-{entry.name.replace('_', '-')}", entry.display_name,
            _L + f"(?:{entry.pattern})" + _R, (prefix,), entry.name,
            check=_random_body(len(prefix))))
    return tuple(rules)


def rules_for(catalog: Catalog) -> tuple[Rule, ...]:
    """The built-in rules plus one per catalog entry (from a team file) that has a
    prefixed format and no built-in rule."""
    return _rules_for_cached(catalog)
