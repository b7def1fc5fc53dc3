"""Finding secrets in one text: the known-format rules first, then high-entropy values
assigned to secret-sounding names, then the inline allow comments.

Both passes work on the whole text with ``re.finditer`` (a per-line loop in Python would
be several times slower on a large tree); line numbers are computed only for matches.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keysafe.scanning.entropy import (
    char_classes,
    has_digit,
    looks_like_identifier,
    looks_like_template,
    looks_placeholder,
    shannon,
    weak_password,
)
from keysafe.scanning.findings import Finding, Hidden, Source

if TYPE_CHECKING:
    from keysafe.catalog import Catalog
    from keysafe.scanning.rules import Rule

__all__ = ["Detector", "ScanResult", "file_kind"]

#: ``# keysafe: allow`` / ``keysafe:allow`` on a line keeps its findings out of the report;
#: detect-secrets' ``pragma: allowlist secret`` is honoured too, so a migrated repository
#: keeps its reviewed exceptions.
_ALLOW = re.compile(r"keysafe:\s?allow|pragma:\s?allowlist[ -]secret", re.IGNORECASE)

#: Places worth a closer look: a secret-sounding word, the rest of its name, an
#: assignment and the start of a value of 8+ characters. Searched over the whole text
#: (in C); only its matches' lines are parsed with ``_ASSIGN``.
_KEYWORD_PATTERN = (
    r"(?:key|secret|token|passw|pwd|passphrase|credential)[a-z0-9_.\-]{0,60}"
    r"(?:\\?[\"'])?\]?[ \t]*(?::=|=>|==|=|:|,)[ \t]*(?:[rbu]{0,2}\\?[\"'`])?[^\s\"'`\\]{8}")
#: Run over the lower-cased text: several times faster than an IGNORECASE search.
_KEYWORD = re.compile(_KEYWORD_PATTERN)
#: For the rare text whose lower-casing changes its length (U+0130), so offsets differ.
_KEYWORD_I = re.compile(_KEYWORD_PATTERN, re.IGNORECASE)

#: name, an optional closing quote or ] (a quoted key, a subscript), an assignment or
#: mapping (or the comma of ``getenv("NAME", "default")``), an optional opening quote
#: (with Python's string prefixes), and a run of non-space characters.
_ASSIGN = re.compile(
    r"""(?P<name>[A-Za-z_][A-Za-z0-9_.\-]{0,120})
        (?P<kq>\\?["'])?\]?
        [ \t]*(?P<sep>:=|=>|==|=|:|,)[ \t]*
        (?:[rbuRBU]{0,2}(?P<q>\\?["'`]))?
        (?P<value>[^\s"'`\\]{1,512})""",
    re.VERBOSE,
)

#: Characters a secret value may contain; anything with brackets, parentheses or commas is
#: an expression or a list, not one value.
_VALUE_CHARS = re.compile(r"[A-Za-z0-9+/=_\-.~!@#$%^&*?|:]+")

_SPLIT = re.compile(r"[._\-\s]+|(?<=[a-z0-9])(?=[A-Z])")
_PASSWORD_WORDS = frozenset({"password", "passwd", "pwd", "passphrase", "pass", "pw"})
_SECRET_WORDS = frozenset({"secret", "token", "apikey", "credential", "secretkey",
                           "accesstoken", "authtoken", "privatekey"})
#: Words before "key" that make it a credential (not a cache, sort or primary key).
_KEY_QUALIFIERS = frozenset({
    "api", "secret", "access", "private", "auth", "signing", "encryption", "master",
    "client", "app", "application", "account", "service", "webhook", "session", "hmac",
    "jwt", "license", "subscription", "consumer", "storage", "shared", "sign", "crypt",
    "encrypt", "decryption", "admin", "write", "read", "ingest", "deploy",
})
#: Trailing words that do not change what a name holds (``API_KEY_PROD``, ``token_b64``).
_NOISE = frozenset({"value", "str", "string", "b64", "base64", "hex", "raw", "prod",
                    "production", "dev", "staging", "live", "env", "default", "new", "old",
                    "v1", "v2", "1", "2"})

#: File kinds in which ``NAME=value`` without quotes is a value, not an expression.
_CONFIG_SUFFIXES = frozenset({
    ".env", ".ini", ".cfg", ".conf", ".config", ".properties", ".yaml", ".yml", ".toml",
    ".sh", ".bash", ".zsh", ".envrc", ".txt", ".tfvars", ".hcl", ".service", ".rc",
    ".md", ".rst", ".json", ".ipynb", "",
})


def file_kind(path: str) -> str:
    """"config" where unquoted values are values; "code" where they are expressions."""
    name = path.rsplit("/", 1)[-1].lower()
    if name.startswith(".env") or name.endswith(".env") or name in ("dockerfile", "procfile"):
        return "config"
    dot = name.rfind(".")
    suffix = name[dot:] if dot > 0 else ""
    return "config" if suffix in _CONFIG_SUFFIXES else "code"


@dataclass(frozen=True, slots=True)
class ScanResult:
    findings: tuple[Finding, ...]
    allowed: int  # findings dropped by an inline allow comment


@dataclass(slots=True)
class _Candidate:
    start: int
    end: int
    rule: str
    title: str
    entry: str | None
    variable: str | None
    priority: int


class Detector:
    """Scans texts with a fixed rule set and catalog; reusable across files."""

    def __init__(self, rules: Sequence[Rule], catalog: Catalog, *,
                 entropy: bool = True) -> None:
        self.rules = tuple(rules)
        self.catalog = catalog
        self.entropy = entropy

    # -- names ----------------------------------------------------------------------
    def classify_name(self, name: str) -> tuple[str, str | None] | None:
        """("catalog"|"password"|"secret", catalog entry name) for a secret-sounding name,
        else None. ``settings.OPENAI_API_KEY`` and ``openaiApiKey`` count as the catalog's
        ``OPENAI_API_KEY``."""
        last = name.rsplit(".", 1)[-1].strip("-_")
        if not last:
            return None
        words = [w.lower() for w in _SPLIT.split(last) if w]
        entry = self.catalog.by_env_var("_".join(words)) if words else None
        if entry is not None:
            password = entry.secret_type == "password" or words[-1] in _PASSWORD_WORDS
            kind = "password" if password else "catalog"
            return kind, entry.name
        while words and words[-1] in _NOISE:
            words.pop()
        if not words:
            return None
        w = words[-1]
        if w in _PASSWORD_WORDS:
            if w in ("pass", "pw") and (len(words) < 2 or words[-2] not in (
                    "db", "database", "user", "admin", "smtp", "mail", "email", "ldap",
                    "root", "sql", "redis", "login", "account")):
                return None
            return "password", None
        if w in _SECRET_WORDS or (w == "key" and len(words) >= 2
                                  and words[-2] in _KEY_QUALIFIERS):
            return "secret", None
        if w in ("secrets", "tokens", "keys") or (w.endswith("key") and w[:-3] in _KEY_QUALIFIERS):
            return "secret", None
        return None

    # -- values ---------------------------------------------------------------------
    @staticmethod
    def plausible(value: str, kind: str, *, quoted: bool = True) -> bool:
        """Whether a value assigned to a name of ``kind`` looks like a real secret."""
        if not quoted and not _VALUE_CHARS.fullmatch(value):
            return False
        if looks_like_template(value) or "://" in value or value.startswith(("/", "./", "~")):
            return False
        if looks_placeholder(value) or looks_like_identifier(value):
            return False
        if kind == "password":
            return not weak_password(value) and len(value) <= 128
        n = len(value)
        low = value.lower()
        if any(w in low for w in ("secret", "passw", "token", "test", "default", "key")):
            return False
        if re.fullmatch(r"[0-9a-f]+|[0-9A-F]+", value):
            # Hex: API keys are 32+ digits of it (Deepgram, ElevenLabs, Flask's token_hex).
            return n >= 32 and shannon(value) >= 3.0
        if re.fullmatch(r"[0-9]+", value):
            return False
        min_len = 16 if kind == "catalog" else 20
        if n < min_len:
            return False
        entropy = shannon(value)
        if not has_digit(value):
            # Random text without a single digit is rare below 32 characters; words are not.
            return n >= 32 and char_classes(value) >= 2 and entropy >= 4.0
        return entropy >= (3.0 if kind == "catalog" else 3.5 if n < 24 else 3.7)

    # -- scanning -------------------------------------------------------------------
    def scan(self, text: str, path: str, *, source: Source = "file",
             commit: str | None = None, config: bool | None = None) -> ScanResult:
        """``config``: whether ``NAME=value`` without quotes is a value (default: by the
        file's kind, ``file_kind``)."""
        cands: list[_Candidate] = []
        for priority, rule in enumerate(self.rules):
            if not any(h in text for h in rule.hints):
                continue
            for m in rule.regex.finditer(text):
                value = m.group(rule.secret_group)
                if rule.check is not None and not rule.check(value):
                    continue
                start, end = m.span(rule.secret_group)
                cands.append(_Candidate(start, end, rule.id, rule.title,
                                        _entry_for(rule, value), None, priority))
        if self.entropy:
            if config is None:
                config = file_kind(path) == "config"
            cands.extend(self._assignments(text, config, len(self.rules)))
        if not cands:
            return ScanResult((), 0)
        return self._finish(text, path, cands, source, commit)

    def _assignments(self, text: str, config: bool, priority: int) -> list[_Candidate]:
        out: list[_Candidate] = []
        seen_line = -1
        low = text.lower()
        matches = _KEYWORD.finditer(low) if len(low) == len(text) else _KEYWORD_I.finditer(text)
        for km in matches:
            if km.start() <= seen_line:
                continue
            ls = text.rfind("\n", 0, km.start()) + 1
            le = text.find("\n", km.start())
            le = len(text) if le < 0 else le
            seen_line = le
            if le - ls > 4000:
                continue  # minified code or a data blob: no assignments worth reading
            line = text[ls:le]
            for m in _ASSIGN.finditer(line):
                cand = self._assignment(m, line, ls, config, priority)
                if cand is not None:
                    out.append(cand)
        return out

    def _assignment(self, m: re.Match[str], line: str, offset: int, config: bool,
                    priority: int) -> _Candidate | None:
        name, sep, q, value = m.group("name"), m.group("sep"), m.group("q"), m.group("value")
        if sep == "," and not m.group("kq"):
            return None  # f(token, "x"): a positional argument, not token's value
        if sep == "," and not q:
            return None
        if q:
            # A quoted value must end at its closing quote (a space inside means prose).
            if line[m.end("value"):m.end("value") + len(q)] != q:
                return None
        else:
            if not config or sep in (",", "=="):
                return None
            value = value.rstrip(",;")
        if len(value) < 8:
            return None
        kind = self.classify_name(name)
        if kind is None or not self.plausible(value, kind[0], quoted=bool(q)):
            return None
        start = offset + m.start("value")
        return _Candidate(start, start + len(value), "high-entropy-assignment",
                          "High-entropy value assigned to a secret name", kind[1],
                          name.rsplit(".", 1)[-1], priority)

    def _finish(self, text: str, path: str, cands: list[_Candidate], source: Source,
                commit: str | None) -> ScanResult:
        cands.sort(key=lambda c: (c.priority, c.start))
        taken: list[tuple[int, int]] = []
        kept: list[_Candidate] = []
        for c in cands:
            if any(c.start < e and s < c.end for s, e in taken):
                continue  # an earlier (more specific) rule already reported this text
            taken.append((c.start, c.end))
            kept.append(c)
        kept.sort(key=lambda c: c.start)
        findings: list[Finding] = []
        allowed = 0
        line, pos = 1, 0
        for c in kept:
            line += text.count("\n", pos, c.start)  # incremental: kept is sorted
            pos = c.start
            ls = text.rfind("\n", 0, c.start) + 1
            le = text.find("\n", c.start)
            le = len(text) if le < 0 else le
            if _ALLOW.search(text, ls, le) or (ls > 0 and _allowed_above(text, ls)):
                allowed += 1
                continue
            end_line = line + text.count("\n", c.start, c.end)
            els = text.rfind("\n", 0, c.end) + 1 if end_line > line else ls
            findings.append(Finding(
                rule=c.rule, title=c.title, path=path, line=line,
                column=c.start - ls + 1, end_line=end_line, end_column=c.end - els + 1,
                secret=Hidden(text[c.start:c.end]), entry=c.entry, variable=c.variable,
                source=source, commit=commit, start=c.start, end=c.end))
        return ScanResult(tuple(findings), allowed)


def _allowed_above(text: str, ls: int) -> bool:
    """``# keysafe: allow`` alone on the line before also allows the next line (for files
    where a trailing comment would become part of the value, such as .env)."""
    prev = text[text.rfind("\n", 0, ls - 1) + 1:ls - 1].strip()
    return prev.startswith(("#", "//", ";", "--", "<!--", "/*", "*")) and \
        _ALLOW.search(prev) is not None


def _entry_for(rule: Rule, value: str) -> str | None:
    if rule.id == "database-url" and value.startswith("redis"):
        return "redis_url"
    return rule.entry
