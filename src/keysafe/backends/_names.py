"""Reversible, collision-free mapping of keysafe paths to names a cloud store accepts.

keysafe paths use letters, digits, ``/``, ``.``, ``_`` and ``-`` (and may begin with
``/``). GCP Secret Manager secret ids allow only ``[A-Za-z0-9_-]`` (255 characters);
Azure Key Vault secret names allow only ``[0-9A-Za-z-]`` (127 characters) and compare
case-insensitively. Both codecs here use ``-`` as the one escape character and map
each path character to a fixed code word:

==========  ===================  ======================
character   GCP secret id        Azure secret name
==========  ===================  ======================
``a``-``z`` itself               itself
``0``-``9`` itself               itself
``A``-``Z`` itself               ``-c`` + lower case
``_``       itself               ``-u``
``/``       ``--``               ``--``
``-``       ``-h``               ``-h``
``.``       ``-d``               ``-d``
==========  ===================  ======================

so ``agentfoundry/dev/acme-corp/card-services/openai_api_key`` is the GCP id
``agentfoundry--dev--acme-hcorp--card-hservices--openai_api_key`` and the Azure name
``agentfoundry--dev--acme-hcorp--card-hservices--openai-uapi-ukey``.

Why it is safe: every code word that is not a single literal character starts with
``-`` and the character after the ``-`` says which code word it is, so the code is
prefix-free: a name decodes in exactly one way (reversible), and two different paths
never share a name (collision-free). The Azure code emits only lower-case letters, so
two names equal under Azure's case rule are equal outright, and paths differing only
in case (``C/x`` and ``c/x``) still get different names. The encoding is applied
character by character, so ``encode(prefix)`` is a prefix of ``encode(path)`` exactly
when ``path`` starts with ``prefix``: listing by prefix can filter on encoded names.

A name in the store that is not a valid encoding (created by other tools, such as
``my-secret``, where ``-s`` is no code word) decodes to ``None`` and is not a keysafe
secret.
"""

from __future__ import annotations

from dataclasses import dataclass

from keysafe.errors import InvalidName

__all__ = ["AZURE", "GCP", "NameCodec"]

_LOWER = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
_UPPER = _LOWER.upper()
#: Characters a keysafe path may contain.
PATH_CHARS = frozenset(_LOWER + _UPPER + _DIGITS + "/._-")


@dataclass(frozen=True)
class NameCodec:
    """One store's mapping. ``store`` and ``what`` name it in error messages."""

    store: str
    what: str
    max_length: int
    #: Path characters copied as they are (everything else is escaped).
    literal: frozenset[str]
    #: Escaped characters: path character -> the letter after ``-``.
    escapes: dict[str, str]
    #: True when the store compares names case-insensitively (upper case is escaped).
    case_insensitive: bool = False

    def encode(self, path: str) -> str:
        """The store name for ``path``. Raises InvalidName naming the store when the
        path has a character keysafe paths cannot hold or the name is too long."""
        if not isinstance(path, str) or not path:
            raise InvalidName(f"an empty path has no {self.store} {self.what}")
        name = self._encode(path)
        if len(name) > self.max_length:
            raise InvalidName(
                f"path {path!r} maps to a {self.store} {self.what} of {len(name)} "
                f"characters; {self.store} allows at most {self.max_length}")
        return name

    def encode_prefix(self, prefix: str) -> str:
        """The encoding of a list prefix: may be empty and is not length-checked."""
        return self._encode(prefix)

    def _encode(self, path: str) -> str:
        out: list[str] = []
        for ch in path:
            if ch in self.literal:
                out.append(ch)
            elif ch in self.escapes:
                out.append("-" + self.escapes[ch])
            elif self.case_insensitive and ch in _UPPER:
                out.append("-c" + ch.lower())
            else:
                raise InvalidName(
                    f"path {path!r} contains {ch!r}, which has no {self.store} mapping; "
                    "paths may hold letters, digits, '/', '.', '_' and '-'")
        return "".join(out)

    def decode(self, name: str) -> str | None:
        """The path ``name`` encodes, or None when it is not a valid encoding."""
        if not name:
            return None
        if self.case_insensitive:
            name = name.lower()
        out: list[str] = []
        i, n = 0, len(name)
        while i < n:
            ch = name[i]
            if ch != "-":
                if ch not in self.literal:
                    return None
                out.append(ch)
                i += 1
                continue
            if i + 1 >= n:
                return None
            code = name[i + 1]
            if code == "c" and self.case_insensitive:
                if i + 2 >= n or name[i + 2] not in _LOWER:
                    return None
                out.append(name[i + 2].upper())
                i += 3
                continue
            original = self._unescape().get(code)
            if original is None:
                return None
            out.append(original)
            i += 2
        return "".join(out)

    def _unescape(self) -> dict[str, str]:
        return {v: k for k, v in self.escapes.items()}

    def same(self, a: str, b: str) -> bool:
        """Whether the store treats two names as the same secret."""
        return a.lower() == b.lower() if self.case_insensitive else a == b


#: GCP Secret Manager: ids are ``[A-Za-z0-9_-]{1,255}`` and case-sensitive.
GCP = NameCodec(
    store="GCP Secret Manager", what="secret id", max_length=255,
    literal=frozenset(_LOWER + _UPPER + _DIGITS + "_"),
    escapes={"/": "-", "-": "h", ".": "d"},
)

#: Azure Key Vault: names are ``[0-9A-Za-z-]{1,127}`` and case-insensitive.
AZURE = NameCodec(
    store="Azure Key Vault", what="secret name", max_length=127,
    literal=frozenset(_LOWER + _DIGITS),
    escapes={"/": "-", "-": "h", ".": "d", "_": "u"},
    case_insensitive=True,
)
