"""Telling a random secret from everything else that sits in a ``password = ...`` slot:
Shannon entropy, character classes, placeholders, templates, identifiers and hashes.

Each test is cheap and conservative in the same direction: when unsure, say "not a
secret", because a scanner that cries wolf gets its findings baselined away wholesale.
"""

from __future__ import annotations

import math
import re
from collections import Counter

__all__ = [
    "char_classes",
    "has_digit",
    "looks_like_identifier",
    "looks_like_template",
    "looks_placeholder",
    "shannon",
    "weak_password",
]


def shannon(text: str) -> float:
    """Shannon entropy in bits per character (0 for an empty string)."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def has_digit(text: str) -> bool:
    return any(c.isdigit() for c in text)


def char_classes(text: str) -> int:
    """How many of lower case, upper case, digits and other characters occur."""
    return sum((any(c.islower() for c in text), any(c.isupper() for c in text),
                any(c.isdigit() for c in text), any(not c.isalnum() for c in text)))


#: Words that mark an example value. Deliberately not "test": Stripe's sk_test_ keys and
#: a team's staging credentials are real secrets.
_PLACEHOLDER_WORDS = (
    "xxxx", "your", "example", "placeholder", "dummy", "sample", "changeme", "change_me",
    "change-me", "redacted", "replace", "insert", "fixme", "todo", "here", "fake", "notreal",
    "not_real", "not-real", "invalid", "foobar", "lorem", "****", "....", "<", ">", "…",
)
_RUN = re.compile(r"(.)\1{4,}")  # five of the same character: aaaaa, 00000, -----
_SEQUENCES = ("0123456", "1234567", "2345678", "3456789", "abcdefg", "bcdefgh", "qwerty",
              "ABCDEFG", "abcdef0123", "9876543")


def looks_placeholder(value: str) -> bool:
    """An example or filler value: ``sk-xxxx``, ``<your-key>``, ``AAAAAAAA``, ``123456789``."""
    low = value.lower()
    if any(w in low for w in _PLACEHOLDER_WORDS):
        return True
    if _RUN.search(value):
        return True
    return any(s in value for s in _SEQUENCES)


_TEMPLATE = re.compile(
    r"\$\{[^}]*\}|\$\([^)]*\)|\{\{.*\}\}|\{%.*%\}|%\([A-Za-z_][A-Za-z0-9_]*\)[sdr]"
    r"|\{[A-Za-z_][A-Za-z0-9_.]*\}|^\$[A-Za-z_]|^%[A-Za-z_]+%$"
    r"|^\{|^@|^env:|^vault:|^keysafe://|^secret:|^ref\+|^arn:|^projects/")


def looks_like_template(value: str) -> bool:
    """A reference to a value kept elsewhere: ``${VAR}``, ``{{ secret }}``, ``%(x)s``,
    ``$VAR``, a ``keysafe://`` reference, an ARN or a secret manager resource name."""
    return _TEMPLATE.search(value) is not None


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z_.\-]*")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HASHES = re.compile(
    r"(?:pbkdf2_sha\d+|argon2|bcrypt|scrypt|sha1|sha256|md5|crypt|SCRAM-SHA-256)\$"
    r"|^\$\d[a-z]?\$")


def looks_like_identifier(value: str) -> bool:
    """Code, not data: dotted or snake_case names without digits (``settings.SECRET_KEY``,
    ``django_tests_secret_key``), a UUID, or a password hash format."""
    if _IDENTIFIER.fullmatch(value) and len(value) < 40:
        return True
    if _UUID.fullmatch(value):
        return True
    if _HASHES.search(value):
        return True
    # Words joined by separators, all lower case or all upper case: a constant's name.
    parts = re.split(r"[._\-/:]", value)
    return len(parts) >= 3 and all(p.isalpha() for p in parts if p)


#: Fragments that make a password a demo value rather than a credential.
_WEAK = ("pass", "secret", "admin", "test", "letmein", "qwerty", "hunter", "welcome",
         "default", "guest", "user", "root", "demo", "example", "mysql", "postgres", "redis",
         "django", "token", "1234", "abcd", "foo", "bar", "baz", "scott", "tiger", "strong",
         "private", "p4ss", "changeit")
#: Undo the usual letter-for-digit swaps before looking for those words (S3cret, P@ss).
_LEET = str.maketrans("0134579@$!", "oieastgasi")


def weak_password(value: str) -> bool:
    """A password no one would keep secret: short, one or two character classes, or made
    of the words every tutorial uses."""
    if len(value) < 10:
        return True
    low = value.lower()
    if any(w in low or w in low.translate(_LEET) for w in _WEAK):
        return True
    if char_classes(value) < 3 and not (len(value) >= 16 and shannon(value) >= 3.5):
        return True
    return shannon(value) < 2.5
