"""Secret naming: a reference (app, env, org, domain, name) and the template that
turns it into a store path and back.

The default template is ``{app}/{env}/{org}/{domain}/{name}``; templates may add fixed
text around a field (``/{app}/{env}/org-{org}/{domain}/{name}``) so that existing
layouts (spec 000, spec 001) are reachable by configuration alone.
"""

from __future__ import annotations

import operator
import re
from functools import cached_property, lru_cache
from typing import NamedTuple, TypeGuard

from keysafe.errors import InvalidName

FIELDS = ("app", "env", "org", "domain", "name")
DEFAULT_TEMPLATE = "{app}/{env}/{org}/{domain}/{name}"
DEFAULT_DOMAIN = "shared"
MAX_SEGMENT = 128
_SEGMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SEGMENT_CHARS = re.compile(r"[A-Za-z0-9._-]*")
_FIELD_RE = re.compile(r"\{([A-Za-z0-9_]*)\}")


def is_segment(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a valid path segment (``validate_segment`` says why not)."""
    return (value.__class__ is str and len(value) <= MAX_SEGMENT
            and _SEGMENT_RE.fullmatch(value) is not None)


#: What a caller's request id must look like to be recorded with its audit records
#: (the server's X-Request-ID, a Django request's); anything else is replaced or dropped.
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: A token's id (``ks_<id>_<secret>``): 12 hex digits. Anything else given as an id is
#: never echoed back (a whole token pasted where its id belongs must not be repeated).
TOKEN_ID = re.compile(r"[0-9a-f]{12}")


def token_not_found(token_id: str) -> str:
    """"token … not found", naming the id only when it is shaped like one."""
    if TOKEN_ID.fullmatch(token_id):
        return f"token {token_id} not found"
    return ("no token has that id (an id is 12 hex digits, as `keysafe token list` shows; "
            "a token itself is never an id)")


def validate_segment(kind: str, value: object) -> str:
    """Return ``value`` if it is a valid ``kind`` segment, else raise InvalidName naming why."""
    if is_segment(value):
        return value  # valid (the checks below only find out why a segment is not)
    if not isinstance(value, str):
        raise InvalidName(f"{kind} must be a string, not {type(value).__name__}", segment=kind)
    if value == "":
        raise InvalidName(f"{kind} is empty", segment=kind)
    if value in (".", ".."):
        raise InvalidName(f"{kind} {value!r} is not allowed (relative segment)", segment=kind)
    if len(value) > MAX_SEGMENT:
        raise InvalidName(
            f"{kind} is {len(value)} characters long; the limit is {MAX_SEGMENT}", segment=kind
        )
    if not _SEGMENT_RE.fullmatch(value):
        bad = sorted({c for c in value if not (c.isascii() and (c.isalnum() or c in "._-"))})
        if bad:
            shown = ", ".join(repr(c) for c in bad[:5])
            why = f"contains {shown}; allowed are letters, digits, '.', '_' and '-'"
        else:
            why = "must start with a letter or digit"
        raise InvalidName(f"{kind} {value!r} {why}", segment=kind)
    return value


@lru_cache(maxsize=8192)
def _valid_scope(app: str, env: str, org: str, domain: str) -> None:
    # The same few scopes recur across millions of names: validate each once.
    for kind, value in (("app", app), ("env", env), ("org", org), ("domain", domain)):
        validate_segment(kind, value)


class SecretRef(NamedTuple):
    """Where a secret lives, independent of any template."""

    name: str
    org: str
    domain: str = DEFAULT_DOMAIN
    env: str = "local"
    app: str = "keysafe"

    def validate(self) -> SecretRef:
        _validate(self.app, self.env, self.org, self.domain, self.name)
        return self


def _validate(app: str, env: str, org: str, domain: str, name: str) -> None:
    """A reference's segments, scope first (each scope once), then the name."""
    _valid_scope(app, env, org, domain)
    validate_segment("name", name)


def _check_braces(template: str) -> None:
    """Only plain ``{field}`` placeholders: no ``{}``, ``{0}``, conversions or specs."""
    rest = _FIELD_RE.sub("", template)
    if "{" in rest or "}" in rest:
        raise InvalidName(f"naming template {template!r} has a brace that is not a "
                          f"plain field; use only {', '.join('{' + f + '}' for f in FIELDS)}")


class NamingTemplate:
    """Formats a SecretRef into a path and parses a path back into a SecretRef."""

    def __init__(self, template: str = DEFAULT_TEMPLATE) -> None:
        _check_braces(template)
        fields = _FIELD_RE.findall(template)
        unknown = [f for f in fields if f not in FIELDS]
        if unknown:
            raise InvalidName(
                f"naming template {template!r} has unknown field {{{unknown[0]}}}; "
                f"known fields are {', '.join('{' + f + '}' for f in FIELDS)}"
            )
        for required in ("org", "name"):
            if required not in fields:
                raise InvalidName(f"naming template {template!r} lacks {{{required}}}")
        if len(set(fields)) != len(fields):
            raise InvalidName(f"naming template {template!r} repeats a field")
        # Between two fields there must be a character no segment may contain, or
        # parse() could split a path differently from how format() joined it
        # ({org}-{name} with name "b-c").
        between = _FIELD_RE.split(template)[2:-1:2]
        if any(_SEGMENT_CHARS.fullmatch(lit) for lit in between):
            raise InvalidName(f"naming template {template!r} is ambiguous: separate "
                              "fields with '/' (or another character names cannot hold)")
        self.template = template
        self.fields = tuple(fields)
        # format() as one %-substitution of the fields in template order (str.format
        # with keywords costs a microsecond on the path of every uncached read).
        self._pct = "%s".join(lit.replace("%", "%%") for lit in _FIELD_RE.split(template)[::2])
        self._values = operator.attrgetter(*fields)
        self._order = operator.itemgetter(*(FIELDS.index(f) for f in fields))

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        pattern, pos = "", 0
        for m in _FIELD_RE.finditer(self.template):
            pattern += re.escape(self.template[pos : m.start()])
            pattern += f"(?P<{m.group(1)}>[A-Za-z0-9][A-Za-z0-9._-]*)"
            pos = m.end()
        pattern += re.escape(self.template[pos:])
        return re.compile(pattern)

    def format(self, ref: SecretRef) -> str:
        return self._pct % self._values(ref)  # a tuple: a template has two fields or more

    def path_of(self, app: str, env: str, org: str, domain: str, name: str) -> str:
        """``format(SecretRef(name, org, domain, env, app).validate())`` without the
        SecretRef: an uncached read of a name not seen before pays for no object."""
        _validate(app, env, org, domain, name)
        path: str = self._pct % self._order((app, env, org, domain, name))
        return path

    def parse(self, path: str, *, app: str = "keysafe", env: str = "local") -> SecretRef:
        """Parse a full path; fields missing from the template take ``app``/``env``."""
        m = self._regex.fullmatch(path)
        if not m:
            raise InvalidName(f"path {path!r} does not match the naming template {self.template!r}")
        got = m.groupdict()
        return SecretRef(
            name=got["name"],
            org=got["org"],
            domain=got.get("domain") or DEFAULT_DOMAIN,
            env=got.get("env") or env,
            app=got.get("app") or app,
        ).validate()

    def prefix(self, *, app: str, env: str, org: str | None = None,
               domain: str | None = None) -> str:
        """The longest literal path prefix that every secret of this scope shares."""
        values = {"app": app, "env": env, "org": org, "domain": domain}
        out, pos = "", 0
        for m in _FIELD_RE.finditer(self.template):
            out += self.template[pos : m.start()]
            v = values.get(m.group(1))
            if v is None:
                return out
            out += v
            pos = m.end()
        return out + self.template[pos:]

    def matches(self, path: str) -> bool:
        return self._regex.fullmatch(path) is not None
