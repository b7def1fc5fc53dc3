"""Read-only secrets from environment variables and ``.env`` files (specs 002, 003 and
004's LocalSecretManager), parsed with python-dotenv.

keysafe names map to variable names through the catalog: ``openai_api_key`` is
``OPENAI_API_KEY``, ``hf_api_token`` is ``HF_API_TOKEN`` or one of its aliases
(``HF_TOKEN``, ...), and a name the catalog does not know is its upper-cased self
(``db_password`` -> ``DB_PASSWORD``; ``-`` and ``.`` become ``_``).

Two naming rules for the org and domain:

- unscoped (the default): every org and domain reads the same variables, as a process
  that keeps its keys in ``.env`` does. For local work and single-tenant processes.
- scoped (``scoped = true``): ``[PREFIX]ORG__DOMAIN__VAR``, the org and domain
  upper-cased with ``-`` and ``.`` as ``_`` and joined by double underscores
  (``ACME_CORP__CARD_SERVICES__OPENAI_API_KEY``); ``ORG__VAR`` is the org's default
  domain. An org or domain whose variable form would contain ``__`` or end in ``_``
  cannot be named this way and has no secrets here.

Which variables are secrets: every variable of the listed ``.env`` files; of the
process environment only those the catalog knows (its env vars and aliases) or that
match an ``include`` pattern, so ``PATH`` or ``HOME`` never become secrets. In scoped
mode that test applies to the part after the scope. ``KEYSAFE_*`` variables (keysafe's
own settings, the master key among them) are never secrets. Process variables win
over files, and a later file over an earlier one (as ``load_dotenv`` does). Empty
values count as unset.

Every secret is at version 1; ``put`` and ``delete`` raise Unsupported.
"""

from __future__ import annotations

import builtins
import fnmatch
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keysafe.backends.base import WriteContext, not_found
from keysafe.errors import ConfigError, InvalidValue, KeysafeError, Unsupported
from keysafe.models import MetadataUpdate, SecretMetadata, VersionInfo
from keysafe.naming import (
    DEFAULT_DOMAIN,
    DEFAULT_TEMPLATE,
    NamingTemplate,
    SecretRef,
    validate_segment,
)

if TYPE_CHECKING:
    from keysafe.catalog import Catalog
    from keysafe.config import Settings

__all__ = ["EnvBackend"]

READ_ONLY = "the env backend is read-only; use keysafe import to copy these into a store"
#: Variables that configure keysafe itself: never served as secrets.
_OWN = "KEYSAFE_"
_SEP = "__"
_OPTIONS = frozenset({"files", "environ", "scoped", "prefix", "include", "interpolate"})
_FIELD = re.compile(r"\{([A-Za-z0-9_]*)\}")
_SEGMENT_RUN = re.compile(r"[A-Za-z0-9._-]*")
_TOKEN = re.compile(r"[A-Z0-9]+(?:_[A-Z0-9]+)*")


@dataclass(frozen=True, slots=True)
class _Var:
    name: str  # as spelled in its source
    value: str
    source: str  # "environment" or a file path
    at: datetime


def scope_token(segment: str) -> str:
    """An org or domain as it appears in a scoped variable name."""
    return segment.upper().replace("-", "_").replace(".", "_")


def _token_ok(token: str) -> bool:
    return _TOKEN.fullmatch(token) is not None


def pinned_fields(template: str, prefix: str) -> dict[str, str] | None:
    """The template fields a list prefix fixes completely ({"app": ..., "org": ...});
    None when no path of the template can start with ``prefix``."""
    parts = _FIELD.split(template)  # literal, field, literal, field, ..., literal
    out: dict[str, str] = {}
    pos = 0
    for i, piece in enumerate(parts):
        rest = prefix[pos:]
        if i % 2 == 0:
            if rest.startswith(piece):
                pos += len(piece)
                continue
            return out if piece.startswith(rest) else None
        m = _SEGMENT_RUN.match(rest)
        run = m.group(0) if m else ""
        if pos + len(run) == len(prefix):
            return out  # the prefix ends inside (or right at the start of) this field
        if not run:
            return None
        out[piece] = run
        pos += len(run)
    return out


class EnvBackend:
    """Secrets from the process environment and ``.env`` files; read-only.

    ``files``: .env files, later ones winning (default ``[".env"]``); relative paths
    are taken from the working directory when the backend is built, and a file that
    does not exist is skipped (so one configuration serves machines with and without
    it). ``environ``: read the process environment too (True), or not (False), or
    this mapping instead. Raises ConfigError when a file cannot be read or parsed.
    """

    name = "env"

    def __init__(
        self,
        files: Sequence[str | os.PathLike[str]] | None = None,
        *,
        environ: bool | Mapping[str, str] = True,
        scoped: bool = False,
        prefix: str = "",
        include: Iterable[str] = (),
        interpolate: bool = True,
        naming: NamingTemplate | str = DEFAULT_TEMPLATE,
        app: str = "keysafe",
        env: str = "local",
        default_domain: str = DEFAULT_DOMAIN,
        catalog: Catalog | None = None,
    ) -> None:
        raw = [".env"] if files is None else list(files)
        self.files = tuple(Path(f).expanduser().absolute() for f in raw)
        self._environ: Mapping[str, str] | None = (
            (os.environ if environ else None) if isinstance(environ, bool) else environ)
        self.scoped = scoped
        self.prefix = prefix.upper()
        if self.prefix and not re.fullmatch(r"[A-Z0-9_]+", self.prefix):
            raise ConfigError(f"env backend: prefix {prefix!r} may hold only letters, "
                              "digits and '_'")
        self.include = tuple(p.upper() for p in include)
        self.interpolate = interpolate
        self.naming = naming if isinstance(naming, NamingTemplate) else NamingTemplate(naming)
        self.app = app
        self.env = env
        self.default_domain = default_domain
        if catalog is None:
            from keysafe.catalog import Catalog

            catalog = Catalog.builtin()
        self.catalog = catalog
        self._started = datetime.now(UTC)
        self._lock = threading.Lock()
        self._file_cache: dict[Path, tuple[tuple[int, int], dict[str, _Var]]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> EnvBackend:
        """Options from the profile: files, environ, scoped, prefix, include,
        interpolate. Raises ConfigError for an unknown or malformed option."""
        opts = dict(settings.backend_options)
        unknown = sorted(set(opts) - _OPTIONS)
        if unknown:
            raise ConfigError(f"env backend: unknown option {unknown[0]!r}; known options: "
                              f"{', '.join(sorted(_OPTIONS))}")
        files = _str_list(opts, "files") if "files" in opts else None
        include = _str_list(opts, "include") if "include" in opts else []
        flags = {k: _flag(opts, k, default) for k, default in
                 (("environ", True), ("scoped", False), ("interpolate", True))}
        prefix = opts.get("prefix", "")
        if not isinstance(prefix, str):
            raise ConfigError("env backend: option prefix must be a string")
        catalog = None
        if settings.catalog_file:
            from keysafe.catalog import Catalog

            catalog = Catalog.load(settings.catalog_file)
        return cls(files, environ=flags["environ"], scoped=flags["scoped"], prefix=prefix,
                   include=include, interpolate=flags["interpolate"],
                   naming=settings.naming_template, app=settings.app, env=settings.env,
                   default_domain=settings.default_domain, catalog=catalog)

    def __repr__(self) -> str:
        files = ", ".join(str(f) for f in self.files)
        return (f"EnvBackend(files=[{files}], environ={self._environ is not None}, "
                f"scoped={self.scoped})")

    # -- protocol -------------------------------------------------------------------
    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        var = self._lookup(path)
        if var is None:
            raise not_found(path)
        if version not in (None, 1):
            raise not_found(path, version)
        return var.value, 1

    def describe(self, path: str, *, include_deleted: bool = False) -> SecretMetadata:
        var = self._lookup(path)
        if var is None:
            raise not_found(path)
        return self._meta(path, var)

    def list(self, prefix: str, *,
             include_deleted: bool = False) -> builtins.list[SecretMetadata]:
        """Every secret under ``prefix``. Unscoped, the values belong to no org in
        particular, so the prefix must name the org (the manager's ``list(org)`` does);
        without one the answer is empty. The domain defaults to the default domain."""
        pinned = pinned_fields(self.naming.template, prefix)
        if pinned is None:
            return []
        index = self._index()
        paths: set[str] = set()
        for ref in self._refs(index, pinned):
            try:
                path = self.naming.format(ref.validate())
            except KeysafeError:
                continue
            if path.startswith(prefix):
                paths.add(path)
        out = []
        for path in sorted(paths):
            var = self._lookup(path, index)
            if var is not None:
                out.append(self._meta(path, var))
        return out

    def put(self, path: str, value: str, *, ctx: WriteContext,
            expected_version: int | None = None,
            meta: MetadataUpdate | None = None) -> VersionInfo:
        raise Unsupported(READ_ONLY, path=path)

    def delete(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        raise Unsupported(READ_ONLY, path=path)

    def ping(self) -> None:
        """Reads the files: a file that exists but cannot be read is a ConfigError."""
        self._index()

    def close(self) -> None:
        return None

    # -- names ----------------------------------------------------------------------
    def variables_for(self, name: str) -> builtins.list[str]:
        """Unscoped variable names for a keysafe name, in lookup order."""
        entry = self.catalog.get(name)
        if entry is None:
            return [name.upper().replace("-", "_").replace(".", "_")]
        out = [entry.env_var.upper()]
        out += [a.upper() for a in entry.aliases if a.upper() not in out]
        return out

    def canonical_name(self, name: str) -> str:
        """The name this store lists for what ``name`` reads (names that differ in case,
        '-' or '.', or a catalog alias, read one variable)."""
        return self._name_for(self.variables_for(name)[0]) or name

    def variable_for(self, ref: SecretRef) -> str | None:
        """The variable a reference reads first (None: scoped and not representable)."""
        candidates = self._candidates(ref)
        return candidates[0] if candidates else None

    def _candidates(self, ref: SecretRef) -> builtins.list[str]:
        names = self.variables_for(ref.name)
        if not self.scoped:
            return names
        org, domain = scope_token(ref.org), scope_token(ref.domain)
        if not (_token_ok(org) and _token_ok(domain)):
            return []
        out = [f"{self.prefix}{org}{_SEP}{domain}{_SEP}{v}" for v in names]
        if ref.domain == self.default_domain:
            out += [f"{self.prefix}{org}{_SEP}{v}" for v in names]
        return out

    def _name_for(self, var_part: str) -> str | None:
        entry = self.catalog.by_env_var(var_part)
        name = entry.name if entry is not None else var_part.lower()
        try:
            return validate_segment("name", name)
        except KeysafeError:
            return None

    def _split_scoped(self, var: str) -> tuple[str, str | None, str] | None:
        """(org token, domain token or None, variable part) of a scoped variable."""
        if not var.startswith(self.prefix):
            return None
        parts = var[len(self.prefix):].split(_SEP)
        if len(parts) == 3:
            org, domain, rest = parts
        elif len(parts) == 2:
            (org, rest), domain = parts, None
        else:
            return None
        if not _token_ok(org) or (domain is not None and not _token_ok(domain)) or not rest:
            return None
        return org, domain, rest

    def _var_part(self, var: str) -> str | None:
        if not self.scoped:
            return var
        split = self._split_scoped(var)
        return split[2] if split else None

    def _refs(self, index: Mapping[str, _Var], pinned: Mapping[str, str]) -> Iterable[SecretRef]:
        app = pinned.get("app", self.app)
        env = pinned.get("env", self.env)
        if not self.scoped:
            org = pinned.get("org")
            if org is None:
                return
            domain = pinned.get("domain", self.default_domain)
            for var in index:
                name = self._name_for(var)
                if name is not None:
                    yield SecretRef(name, org, domain, env, app)
            return
        for var in index:
            split = self._split_scoped(var)
            if split is None:
                continue
            org_t, dom_t, rest = split
            name = self._name_for(rest)
            org = _segment_for(org_t, pinned.get("org"))
            dom = (self.default_domain if dom_t is None
                   else _segment_for(dom_t, pinned.get("domain"), self.default_domain))
            if name is None or org is None or dom is None:
                continue
            yield SecretRef(name, org, dom, env, app)

    # -- values ---------------------------------------------------------------------
    def _lookup(self, path: str, index: Mapping[str, _Var] | None = None) -> _Var | None:
        try:
            ref = self.naming.parse(path, app=self.app, env=self.env)
        except KeysafeError:
            return None  # not a path of this template: not a secret here
        index = self._index() if index is None else index
        for var in self._candidates(ref):
            found = index.get(var)
            if found is not None:
                return found
        return None

    def _meta(self, path: str, var: _Var) -> SecretMetadata:
        part = self._var_part(var.name.upper()) or var.name
        entry = self.catalog.by_env_var(part)
        return SecretMetadata(
            path=path, current_version=1, created_at=var.at, updated_at=var.at,
            secret_type=entry.secret_type if entry else None,
            tags={"source": var.source, "variable": var.name}, versions=1)

    def _index(self) -> dict[str, _Var]:
        """Upper-cased variable name -> its value and source: files in order, then the
        process environment, each overriding what came before."""
        out: dict[str, _Var] = {}
        for f in self.files:
            out.update(self._file_vars(f))
        if self._environ is not None:
            for key, value in list(self._environ.items()):
                upper = key.upper()
                if value and not upper.startswith(_OWN) and self._exposed(upper):
                    out[upper] = _Var(key, value, "environment", self._started)
        return out

    def _exposed(self, upper: str) -> bool:
        """Whether a process variable is a secret: the catalog knows it, or ``include``."""
        part = self._var_part(upper)
        if part is None:
            return False
        if self.catalog.by_env_var(part) is not None:
            return True
        return any(fnmatch.fnmatchcase(part, p) or fnmatch.fnmatchcase(upper, p)
                   for p in self.include)

    def _file_vars(self, path: Path) -> dict[str, _Var]:
        try:
            st = path.stat()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(f"env backend: cannot read {path}: "
                              f"{exc.strerror or type(exc).__name__}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._file_cache.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        at = datetime.fromtimestamp(st.st_mtime, UTC)
        values = _read_dotenv(path, interpolate=self.interpolate)
        parsed = {k.upper(): _Var(k, v, str(path), at) for k, v in values.items()
                  if v and not k.upper().startswith(_OWN)}
        with self._lock:
            self._file_cache[path] = (stamp, parsed)
        return parsed


def _segment_for(token: str, pinned: str | None, default: str | None = None) -> str | None:
    """The org/domain segment for a variable's token: the spelling the caller asked for
    when it maps to this token, the default domain, else lower case with '-'."""
    if pinned is not None:
        return pinned if scope_token(pinned) == token else None
    if default is not None and scope_token(default) == token:
        return default
    return token.lower().replace("_", "-")


def _read_dotenv(path: Path, *, interpolate: bool = True) -> dict[str, str | None]:
    """A .env file's variables, parsed by python-dotenv. ConfigError when unreadable;
    InvalidValue naming the first line python-dotenv cannot parse (it would skip that
    line with a warning, and a secret would silently go missing)."""
    try:
        from dotenv import dotenv_values
        from dotenv.parser import parse_stream
    except ImportError:
        raise ConfigError("reading .env files needs python-dotenv, which is not installed; "
                          "install it with: pip install python-dotenv") from None
    if path.is_dir():
        raise ConfigError(f"cannot read {path}: it is a directory")
    try:
        with path.open(encoding="utf-8") as fh:
            for binding in parse_stream(fh):
                if binding.error:
                    # Never the line itself: it may hold a value. python-dotenv counts
                    # the blank lines before a statement as part of it.
                    text = binding.original.string
                    lead = text[:len(text) - len(text.lstrip())]
                    line = binding.original.line + lead.count("\n")
                    raise InvalidValue(
                        f"{path} line {line}: cannot parse this line (an unclosed quote, "
                        "or no NAME=value); fix it, nothing was read")
        return dict(dotenv_values(path, interpolate=interpolate))
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {path}: it is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: "
                          f"{exc.strerror or type(exc).__name__}") from None


def read_dotenv(path: str | os.PathLike[str], *,
                interpolate: bool = True) -> dict[str, str | None]:
    """The variables of one .env file in file order (None: a name without ``=``).
    Raises ConfigError when the file is missing or unreadable."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"cannot read {p}: no such file")
    return _read_dotenv(p, interpolate=interpolate)


def _flag(opts: Mapping[str, Any], key: str, default: bool) -> bool:
    v = opts.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"env backend: option {key} must be true or false")
    return v


def _str_list(opts: Mapping[str, Any], key: str) -> builtins.list[str]:
    v = opts[key]
    if isinstance(v, str):
        return [v]
    if not isinstance(v, builtins.list) or not all(isinstance(x, str) and x for x in v):
        raise ConfigError(f"env backend: option {key} must be a list of strings")
    return builtins.list(v)
