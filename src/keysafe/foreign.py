"""Adopting secrets that other tools wrote into a cloud store (``keysafe import
--from-store``): the layouts specs 002 and 003 set up by hand, such as one AWS secret
``aragora/production/api-keys`` holding ``{"anthropic": ..., "openai": ...}``, a Vault
KV entry with the same keys, or GCP secrets named ``aragora-anthropic-key``.

A source is a store name, or a prefix ending in ``*`` for every name under it. A value
that is a flat JSON object (a Vault KV map reads as one) becomes one secret per key;
any other value becomes one secret. Each key (or, for a whole value, the rest of the
name after the prefix, else its last segment) is named by, in order: ``--map``, the
catalog's variables (``OPENAI_API_KEY``; ``jwt-secret`` as ``JWT_SECRET``), an LLM
provider (``anthropic``, ``openai-key``), and the catalog variable the key makes with
the name's last segment (``url`` in ``.../database`` as ``DATABASE_URL``). What is
left is unknown: imported under its lower-cased name only when asked.

The source is only read (never changed); keysafe's own audit log records the writes.
Values are never part of a result, a message or an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from keysafe.errors import InvalidName, KeysafeError, NotFound
from keysafe.importer import Entry, ImportItem, ImportResult, import_entries
from keysafe.naming import validate_segment

if TYPE_CHECKING:
    from keysafe.backends.base import ForeignReadable
    from keysafe.catalog import Catalog
    from keysafe.importer import Target

__all__ = ["entries_of", "import_from_store", "parse_map", "resolve"]

#: A key that reads as an environment variable: kept as the secret's ``env_var`` tag.
_ENV_VAR = re.compile(r"[A-Z_][A-Z0-9_]*")
_PROVIDER_KEY = re.compile(r"(?i)([a-z0-9]+?)(?:[-_.]api)?(?:[-_.](?:key|token))?")
_OWN = "KEYSAFE_"
_UNKNOWN = ("no catalog name fits; --map KEY=NAME names it, or --include-unknown "
            "imports it as {name}")


def _upper(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").upper()


def parse_map(pairs: list[str] | None) -> dict[str, str]:
    """``KEY=NAME`` pairs (KEY: a JSON key, a store name, or ``NAME#KEY``); InvalidName
    naming a bad pair or name."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, name = pair.rpartition("=")  # a store's names may hold '=', NAME never
        key, name = key.strip(), name.strip()
        if not sep or not key or not name:
            raise InvalidName(f"--map {pair!r}: expected KEY=NAME")
        validate_segment("name", name)
        out[key] = name
    return out


def resolve(key: str, catalog: Catalog, *, context: str = "") -> tuple[str, bool]:
    """(secret name, whether the catalog knows it) for a key found in a store."""
    for candidate in (key, _upper(key)):
        entry = catalog.by_env_var(candidate)
        if entry is not None:
            return entry.name, True
    m = _PROVIDER_KEY.fullmatch(key)
    if m is not None:
        entry = catalog.for_provider(m.group(1))
        if entry is not None:
            return entry.name, True
    if context:
        entry = catalog.by_env_var(f"{_upper(context)}_{_upper(key)}")
        if entry is not None:
            return entry.name, True
    return _upper(key).lower() or key, False


def _flat_json(value: str) -> dict[str, str] | None:
    """A JSON object of scalars, as strings; None for any other value."""
    if not value.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if not isinstance(data, dict) or not data:
        return None
    out = {}
    for k, v in data.items():
        if isinstance(v, (dict, list)) or v is None:
            return None
        out[str(k)] = v if isinstance(v, str) else json.dumps(v)
    return out


def _last_segment(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


def _rest(name: str, prefix: str) -> str:
    """What follows ``prefix`` in ``name`` (compared case-insensitively, as Azure lists),
    when the prefix ends at a separator and the rest is one segment: ``anthropic-key``
    for ``aragora-anthropic-key`` under ``aragora-``; else empty."""
    if not prefix or prefix[-1] not in "/-_." or not name.lower().startswith(prefix.lower()):
        return ""
    rest = name[len(prefix):]
    return "" if "/" in rest.strip("/") else rest.strip("/")


def entries_of(name: str, value: str, catalog: Catalog, *, prefix: str = "",
               mapping: Mapping[str, str] | None = None, split: bool = True) -> list[Entry]:
    """The entries one store secret gives: one per key of a flat JSON object (unless
    ``split`` is False), else one for the whole value. ``prefix``: the source's prefix
    when the name came from listing it (``aragora-`` for ``aragora-anthropic-key``)."""
    mapping = mapping or {}
    fields = _flat_json(value) if split else None
    if fields is None:
        key = _rest(name, prefix) or _last_segment(name)
        return [_entry(name, key, value, catalog, mapping, context="",
                       explicit=mapping.get(name) or mapping.get(key))]
    context = _last_segment(name)
    return [_entry(f"{name}#{k}", k, v, catalog, mapping, context=context,
                   explicit=mapping.get(f"{name}#{k}") or mapping.get(k))
            for k, v in fields.items()]


def _entry(variable: str, key: str, value: str, catalog: Catalog, mapping: Mapping[str, str],
           *, context: str, explicit: str | None) -> Entry:
    if explicit is not None:
        name, known = explicit, True  # named by the user: imported, known or not
    else:
        name, known = resolve(key, catalog, context=context)
    if key.upper().startswith(_OWN):  # keysafe's own settings: skipped, as in a .env
        return Entry(variable, value, name, known, key.upper())
    return Entry(variable, value, name, known, key if _ENV_VAR.fullmatch(key) else None)


def _own(mgr: Target, name: str) -> bool:
    """Whether ``name`` is a path keysafe's naming gives, with this app."""
    naming = mgr.naming
    if not naming.matches(name):
        return False
    return "{app}" not in naming.template or naming.parse(name).app == mgr.app


def import_from_store(
    mgr: Target,
    source: ForeignReadable,
    names: list[str],
    *,
    org: str,
    store: str = "store",
    mapping: Mapping[str, str] | None = None,
    split: bool = True,
    progress: Callable[[int, int], None] | None = None,
    **kw: Any,
) -> ImportResult:
    """Read ``names`` from ``source`` (a name ending in ``*`` lists every name before the
    ``*``) and import what they hold into ``org``, as import_entries does. A name that
    cannot be read, or a prefix that lists nothing, is a failed item; the rest goes on."""
    mgr.ref("x", org, domain=kw.get("domain"))  # a bad org or domain: before any read
    entries: list[Entry] = []
    failed: list[ImportItem] = []
    reads: list[tuple[str, str]] = []  # (name, the prefix it was listed under)
    for pattern in names:
        if pattern.endswith("*"):
            prefix = pattern[:-1]
            try:
                # Secrets keysafe itself wrote there (other orgs' among them) are its
                # own, not another tool's: a listing leaves them out.
                listed = [n for n in source.foreign_names(prefix) if not _own(mgr, n)]
            except KeysafeError as exc:
                failed.append(ImportItem(pattern, None, "failed", exc.message,
                                         error_code=exc.code))
                continue
            if not listed:
                failed.append(ImportItem(pattern, None, "failed",
                                         f"no secret in the {store} store starts with "
                                         f"{prefix!r}", error_code="not_found"))
            reads.extend((n, prefix) for n in listed)
        else:
            reads.append((pattern, ""))
    seen: set[str] = set()
    total = len(reads)
    for n, (name, prefix) in enumerate(reads, start=1):
        if name in seen:
            continue
        seen.add(name)
        try:
            value = source.read_foreign(name)
        except NotFound:
            failed.append(ImportItem(name, None, "failed",
                                     f"not found in the {store} store", error_code="not_found"))
        except KeysafeError as exc:
            failed.append(ImportItem(name, None, "failed", exc.message, error_code=exc.code))
        else:
            entries.extend(entries_of(name, value, mgr.catalog, prefix=prefix,
                                      mapping=mapping, split=split))
        if progress is not None:
            progress(n, total * 2)  # reading is the first half

    def writing(i: int, t: int) -> None:  # the second half of the bar
        if progress is not None:
            progress(total + round(i * total / t), total * 2)

    result = import_entries(mgr, entries, org=org, source=f"{store} store",
                            unknown_hint=_UNKNOWN, progress=writing, **kw)
    if not failed:
        return result
    return ImportResult(result.source, result.org, result.domain, result.dry_run,
                        tuple(failed) + result.items)
