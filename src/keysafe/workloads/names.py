"""Secret names as environment variable names, mapping files, and ``keysafe://``
references.

A catalog name becomes its catalog variable (``openai_api_key`` -> ``OPENAI_API_KEY``,
``google_api_key`` -> its catalog variable); any other name is upper-cased with every
character that is not a letter or digit turned into ``_`` (``billing.webhook-secret``
-> ``BILLING_WEBHOOK_SECRET``). A mapping file overrides both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keysafe.errors import InvalidName, InvalidValue

if TYPE_CHECKING:
    from keysafe.catalog import Catalog

SCHEME = "keysafe://"
_ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")

#: secret name -> env var name, or None to leave the secret out.
Mapping_ = dict[str, str | None]
#: secret name -> {field of its JSON credentials: env var name}.
FieldMap = dict[str, dict[str, str]]


@dataclass(frozen=True, slots=True)
class MappingFile:
    """A mapping file's entries: whole secrets (``names``) and, for JSON credentials
    given as a table, their fields (``fields``; such a secret is in ``names`` as None:
    it is given field by field, not whole)."""

    names: Mapping_
    fields: FieldMap


#: The tag that remembers the variable a secret was imported from, when it is not the
#: one its name gives (an alias such as HF_TOKEN, or ARAGORA_JWT_SECRET): run, export and
#: sync give it back under that variable.
ENV_VAR_TAG = "env_var"


def tagged_env_var(tags: Mapping[str, str]) -> str | None:
    """A secret's ``env_var`` tag if it is a usable variable name (None otherwise): a
    tag is written by whoever may write the secret, and a name like ``X=1; cmd`` must
    never reach a shell, dotenv or github-env file."""
    var = tags.get(ENV_VAR_TAG)
    return var if var is not None and _ENV_VAR.fullmatch(var) else None


def default_env_var(name: str, catalog: Catalog | None = None) -> str:
    """The variable a secret is exported as when no mapping file says otherwise."""
    if catalog is not None:
        entry = catalog.get(name)
        # Only the catalog name itself (any case, '-' or '_'), not an alias: an alias
        # such as gemini_api_key stays GEMINI_API_KEY instead of colliding with the
        # entry's own variable.
        if entry is not None and _norm(entry.name) == _norm(name):
            return entry.env_var
    var = _NOT_ALNUM.sub("_", name).upper()
    return f"_{var}" if var[:1].isdigit() else var


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def check_env_var(var: object, where: str) -> str:
    """``var`` if it is a usable environment variable name, else InvalidValue."""
    if not isinstance(var, str) or not _ENV_VAR.fullmatch(var):
        raise InvalidValue(f"{where}: {var!r} is not an environment variable name "
                           "(letters, digits and '_', not starting with a digit)")
    return var


def load_mapping(path: str | Path) -> MappingFile:
    """A mapping file: secret name -> variable name, ``false`` to leave it out, or a
    table of field -> variable for JSON credentials given field by field.

    TOML (``openai_api_key = "OPENAI_KEY"``, ``database = { url = "DATABASE_URL" }``)
    or YAML (``openai_api_key: OPENAI_KEY``), chosen by the suffix (``.toml``,
    ``.yaml``/``.yml``). Raises InvalidValue naming the file and the entry when it
    cannot be read or an entry is not a name, false or such a table.
    """
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise InvalidValue(f"cannot read mapping file {file}: "
                           f"{exc.strerror or type(exc).__name__}") from None
    try:
        # Newlines as read_text gives them (\r\n and \r read as \n).
        text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InvalidValue(f"mapping file {file} is not UTF-8 text (line {line})") from None
    data: Any
    suffix = file.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import importlib

        try:
            # By name: PyYAML ships no type stubs, and it is optional here.
            yaml: Any = importlib.import_module("yaml")
        except ImportError:
            raise InvalidValue(f"mapping file {file} is YAML, which needs PyYAML; install "
                               "it with: pip install pyyaml (or use a .toml file)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" (line {mark.line + 1})" if mark is not None else ""
            raise InvalidValue(f"mapping file {file} is not valid YAML{at}") from None
        if data is None:
            data = {}
    elif suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except ValueError as exc:
            raise InvalidValue(f"mapping file {file} is not valid TOML: {exc}") from None
    else:
        raise InvalidValue(f"mapping file {file}: use a .toml, .yaml or .yml file")
    if not isinstance(data, dict):
        raise InvalidValue(f"mapping file {file} must hold a table of secret name = "
                           "VARIABLE entries")
    names: Mapping_ = {}
    fields: FieldMap = {}
    for key, var in data.items():
        where = f"mapping file {file}, entry {key!r}"
        _check_key(key, where)
        if var is False:
            names[str(key)] = None
        elif isinstance(var, dict):
            if not var:
                raise InvalidValue(f"{where}: the table of fields is empty; name a field "
                                   "and its variable (url = \"DATABASE_URL\"), or write "
                                   "false to leave the secret out")
            for f in var:
                _check_key(f, f"{where}, field {f!r}")
            if "" in var:
                raise InvalidValue(f"{where}: a field name is empty")
            fields[str(key)] = {str(f): check_env_var(v, f"{where}, field {f!r}")
                                for f, v in var.items()}
            names[str(key)] = None
        else:
            names[str(key)] = check_env_var(var, where)
    return MappingFile(names, fields)


def _check_key(key: object, where: str) -> None:
    """InvalidValue unless a mapping file's key is text: YAML reads an unquoted on, no,
    null or 12 as a boolean, null or number, which is not the name that was meant."""
    if not isinstance(key, str):
        raise InvalidValue(f"{where} is not a name (YAML reads it as "
                           f"{type(key).__name__}): quote it")


def env_names(names: Iterable[str], catalog: Catalog | None,
              mapping: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """secret name -> variable, for every name the mapping does not leave out.

    Raises InvalidValue when two secrets would land in the same variable.
    """
    mapping = mapping or {}
    out: dict[str, str] = {}
    owner: dict[str, str] = {}
    for name in names:
        # Mapping keys match exactly: names are case-sensitive, and '-' is not '_'.
        var = mapping[name] if name in mapping else default_env_var(name, catalog)
        if var is None:
            continue
        if var in owner:
            raise InvalidValue(f"secrets {owner[var]} and {name} would both set {var}; "
                               "give one of them another variable in a mapping file (--map)")
        owner[var] = name
        out[name] = var
    return out


@dataclass(frozen=True, slots=True)
class Reference:
    """``keysafe://org/domain/name`` (or ``keysafe://org/name``: the default domain),
    with ``#FIELD`` for one field of a JSON secret (spec 003's ``property:``)."""

    org: str
    domain: str | None
    name: str
    field: str | None = None

    def __str__(self) -> str:
        mid = f"{self.domain}/" if self.domain else ""
        tail = f"#{self.field}" if self.field is not None else ""
        return f"{SCHEME}{self.org}/{mid}{self.name}{tail}"


def is_reference(value: str) -> bool:
    return value.startswith(SCHEME)


def parse_reference(value: str, where: str) -> Reference:
    """The reference in ``value``; InvalidName naming ``where`` (a variable) if it is
    malformed. A reference is not a secret, so it may be quoted in the message."""
    from keysafe.naming import validate_segment

    body, hashed, fld = value[len(SCHEME):].partition("#")
    if hashed and not fld:
        raise InvalidName(f"{where}: bad reference {value!r}: the field after '#' is empty")
    parts = body.split("/")
    if len(parts) not in (2, 3):
        raise InvalidName(f"{where}: {value!r} is not a reference; write "
                          "keysafe://ORG/DOMAIN/NAME or keysafe://ORG/NAME (and #FIELD "
                          "for one field of a JSON secret)")
    kinds = ("org", "domain", "name") if len(parts) == 3 else ("org", "name")
    try:
        for kind, seg in zip(kinds, parts, strict=True):
            validate_segment(kind, seg)
    except InvalidName as exc:
        raise InvalidName(f"{where}: bad reference {value!r}: {exc.message}") from None
    field = fld if hashed else None
    if len(parts) == 2:
        return Reference(parts[0], None, parts[1], field)
    return Reference(parts[0], parts[1], parts[2], field)
