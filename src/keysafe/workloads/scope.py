"""Reading a scope (an org and a domain, or named secrets of it) and the references in
an environment, with the versions ``--watch`` compares."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from keysafe.errors import InvalidValue, NotFound
from keysafe.workloads.names import FieldMap, env_names, is_reference, parse_reference
from keysafe.workloads.sources import Source

if TYPE_CHECKING:
    from keysafe.catalog import Catalog

#: What a watch compares: ("scope", name) or ("ref", org, domain, name) -> version.
Snapshot = dict[tuple[str | None, ...], int]


def split_names(items: list[str] | None) -> list[str] | None:
    """``--only a,b --only c`` as [a, b, c] (order kept, duplicates dropped)."""
    if not items:
        return None
    out: list[str] = []
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    if not out:
        raise InvalidValue("--only names no secret")
    return out


def field_text(value: str, fld: str, name: str, var: str) -> str:
    """One field of a JSON secret as a variable's text: a string as is, a number,
    boolean or null as JSON (what ``keysafe get --field`` prints); InvalidValue for an
    object or list, naming the variable, never the value."""
    import json

    from keysafe.manager.manager import json_field as field_of

    got = field_of(value, name, fld)
    if isinstance(got, dict | list):
        raise InvalidValue(f"environment variable {var}: field {fld!r} of {name} is not "
                           "a single value")
    return got if isinstance(got, str) else json.dumps(got)


def field_variables(catalog: Catalog | None, name: str, value: str) -> dict[str, str]:
    """The variables a JSON credential's fields are also given as (the catalog entry's
    ``field_env_vars``: aws_access_key -> AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
    Fields the value lacks, or that hold an object or list, are left out; a value that
    is not a JSON object gives none (it is still given whole, as its own variable)."""
    entry = catalog.get(name) if catalog is not None else None
    if entry is None or not entry.field_env_vars:
        return {}
    out: dict[str, str] = {}
    for fld, var in entry.field_env_vars:
        try:
            out[var] = field_text(value, fld, name, var)
        except (InvalidValue, NotFound):
            continue
    return out


def with_field_variables(catalog: Catalog | None, by_name: Mapping[str, tuple[str, str]]
                         ) -> dict[str, str]:
    """{variable: value} for {secret name: (variable, value)}, plus each JSON
    credential's field variables; a variable a secret has as its own wins over a field
    of another's."""
    fields: dict[str, str] = {}
    for name, (_, value) in by_name.items():
        fields.update(field_variables(catalog, name, value))
    return {**fields, **{var: value for var, value in by_name.values()}}


def left_out(names: list[str]) -> str | None:
    """The warning for listed secrets a read left out (None: none was)."""
    if not names:
        return None
    return (f"left out {', '.join(names)}: no current value to read (its current version "
            "destroyed, or deleted meanwhile)")


@dataclass
class Scope:
    """The secrets a command reads: every live secret of org/domain, or ``only``; with
    ``with_shared``, the org's shared (default) domain's too, beneath the domain's own
    (spec 001's fallback: a domain's key, else the org's shared one)."""

    org: str
    domain: str | None = None
    only: list[str] | None = None
    mapping: Mapping[str, str | None] | None = None
    #: secret -> {field: variable}: JSON credentials a mapping file gives field by field
    fields: FieldMap | None = None
    with_shared: bool = False
    skipped: list[str] = field(default_factory=list)  # by the last read
    unmatched: list[str] = field(default_factory=list)  # tables of absent secrets
    #: secret -> the domain it is read from (by the last ``listing``)
    owner: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def of(cls, org: str, domain: str | None, only: list[str] | None,
           map_file: str | Path | None, *, with_shared: bool = False) -> Scope:
        """The scope a command's ``--org/--domain/--only/--map/--with-shared`` name."""
        from keysafe.workloads.names import load_mapping

        mapping = load_mapping(map_file) if map_file else None
        return cls(org, domain, split_names(only), mapping.names if mapping else None,
                   mapping.fields if mapping else None, with_shared)

    def layers(self, source: Source) -> list[str | None]:
        """The domains read, lowest first: the shared one under the scope's own (with
        ``with_shared``, when they differ), else the scope's alone."""
        if self.with_shared and (self.domain or source.default_domain) \
                != source.default_domain:
            return [source.default_domain, self.domain]
        return [self.domain]

    def versions(self, source: Source) -> dict[str, int]:
        """name -> current version of each secret in the scope."""
        return {n: v for n, (_, v) in self.listing(source).items()}

    def listing(self, source: Source) -> dict[str, tuple[str | None, int]]:
        """name -> (the domain it is read from, its current version); a name in both
        layers is the scope's own domain's. Sets ``owner``. A name in ``only`` that no
        layer holds: NotFound."""
        layers = self.layers(source)
        out: dict[str, tuple[str | None, int]] = {}
        if self.only is None:
            for d in layers:
                out.update((n, (d, v)) for n, v in source.scope(self.org, d).items())
        else:
            for n in self.only:
                for i, d in enumerate(reversed(layers)):  # the scope's own domain first
                    try:
                        out[n] = (d, source.version(self.org, d, n))
                        break
                    except NotFound:
                        if i == len(layers) - 1:
                            raise
        self.owner = {n: d for n, (d, _) in out.items()}
        return out

    def read(self, source: Source, progress: Callable[[int, int], None] | None = None,
             names: list[str] | None = None, *, whole: bool = False) -> dict[str, str]:
        """name -> value, in name order (``only``'s order when given; ``names``: these,
        already listed). A listed secret with no value to read (its current version
        destroyed, or deleted meanwhile) is left out and named in ``skipped``; a name
        in ``only`` was asked for, so NotFound is raised for it. A secret the mapping
        file gives field by field is read for those fields only (``read_fields``: from
        a server, the rest stays there), unless ``whole``."""
        if names is None:
            names = (self.only if self.only is not None and len(self.layers(source)) == 1
                     else list(self.listing(source)))
        tables = {} if whole else self.fields or {}
        out: dict[str, str] = {}
        self.skipped = []
        for i, name in enumerate(names, 1):
            domain = self.owner.get(name, self.domain)
            try:
                out[name] = (source.read_fields(self.org, domain, name, tables[name])
                             if name in tables else
                             source.read(self.org, domain, name)[0])
            except NotFound:
                if self.only is not None:
                    raise
                self.skipped.append(name)
            if progress is not None:
                progress(i, len(names))
        return out

    def skipped_note(self) -> str | None:
        """What the last read left out, for a warning (None: nothing)."""
        return left_out(self.skipped)

    def notes(self) -> list[str]:
        """The warnings of the last read and ``env``: ``skipped_note`` and
        ``unmatched_note``."""
        return [n for n in (self.skipped_note(), self.unmatched_note()) if n]

    def unmatched_note(self) -> str | None:
        """The mapping file's tables that matched no secret of the scope (by the last
        ``field_vars``), for a warning (None: none)."""
        if not self.unmatched:
            return None
        return (f"the mapping file names fields of {', '.join(self.unmatched)}, which "
                "the scope does not hold (in TOML, quote a secret name with a dot: "
                "\"db.prod\" = \"DB\", not db.prod = \"DB\", which is a table)")

    def env(self, source: Source, values: Mapping[str, str]) -> dict[str, str]:
        """variable -> value (see ``variables``), the field variables of JSON
        credentials (``field_variables``), and the fields a mapping file names
        (``field_vars``: NotFound if the value lacks one, InvalidValue if it is not
        JSON credentials)."""
        variables = self.variables(source, values)
        out = with_field_variables(source.catalog, {
            name: (var, values[name]) for name, var in variables.items()})
        for name, fld, var in self.field_vars(variables, values, source.catalog):
            out[var] = field_text(values[name], fld, name, var)
        return out

    def field_vars(self, variables: Mapping[str, str], names: Iterable[str],
                   catalog: Catalog | None) -> list[tuple[str, str, str]]:
        """(secret, field, variable) for each field the mapping file names of the
        secrets in ``names``; InvalidValue when one would set a variable that another
        secret (``variables``, from ``variables``), a catalog field variable of one
        (``field_variables``) or another field sets. Tables for secrets not in the
        scope are named in ``unmatched`` (when the scope is not ``only``)."""
        present = set(names)
        owner = {var: name for name, var in variables.items()}
        for name in variables:
            entry = catalog.get(name) if catalog is not None else None
            for fld, var in entry.field_env_vars if entry is not None else ():
                owner.setdefault(var, f"field {fld!r} of {name}")
        out: list[tuple[str, str, str]] = []
        self.unmatched = []
        for name, fields in (self.fields or {}).items():
            if name not in present:
                if self.only is None:
                    self.unmatched.append(name)
                continue
            for fld, var in fields.items():
                what = f"field {fld!r} of {name}"
                if var in owner:
                    raise InvalidValue(f"{owner[var]} and {what} would both set {var}; give "
                                       "one of them another variable in the mapping file")
                owner[var] = what
                out.append((name, fld, var))
        return out

    def variables(self, source: Source, names: Iterable[str]) -> dict[str, str]:
        """secret name -> variable: the mapping file's, else the one a secret was
        imported from (its ``env_var`` tag), else the catalog's or the name's. Names
        the mapping file leaves out (``false``) are not in it."""
        names = list(names)
        wanted = set(names)
        tagged: dict[str, str] = {}
        for d in self.layers(source):  # the scope's own domain's tags last: they win
            mine = [n for n in names if self.owner.get(n, self.domain) == d]
            if self.only is not None and not mine:
                continue
            tagged.update((n, v) for n, v in source.env_vars(
                self.org, d, mine if self.only is not None else None).items()
                if self.owner.get(n, self.domain) == d)
        mapping = {**{n: v for n, v in tagged.items() if n in wanted},
                   **(self.mapping or {})}
        return env_names(names, source.catalog, mapping)


@dataclass
class EnvPlan:
    """A child's environment: inherited (plus env files) with references resolved,
    then the scope's secrets on top."""

    base: dict[str, str]
    scope: Scope | None = None
    refs: dict[str, tuple[str, str | None, str]] = field(default_factory=dict)
    #: variable -> the JSON field its reference names (``keysafe://org/app#SECRET_KEY``)
    fields: dict[str, str] = field(default_factory=dict)

    @classmethod
    def make(cls, base: Mapping[str, str], scope: Scope | None) -> EnvPlan:
        refs, fields = {}, {}
        for var, value in base.items():
            if is_reference(value):
                r = parse_reference(value, f"environment variable {var}")
                refs[var] = (r.org, r.domain, r.name)
                if r.field is not None:
                    fields[var] = r.field
        return cls(dict(base), scope, refs, fields)

    @property
    def needs_source(self) -> bool:
        return self.scope is not None or bool(self.refs)

    def build(self, source: Source | None, *,
              track: bool = False) -> tuple[dict[str, str], Snapshot]:
        """The environment, and (``track``) the versions it was built from."""
        env = dict(self.base)
        snap: Snapshot = {}
        if source is None:
            return env, snap
        if self.refs:
            # Read each referenced secret once, however many variables name it; one
            # that only fields are wanted of, for those fields (``read_fields``).
            wanted: dict[tuple[str, str | None, str], set[str] | None] = {}
            for var, key in self.refs.items():
                fld = self.fields.get(var)
                if fld is None:
                    wanted[key] = None  # the whole value
                elif (flds := wanted.setdefault(key, set())) is not None:
                    flds.add(fld)
            cache: dict[tuple[str, str | None, str], str] = {}
            for key, flds in wanted.items():
                org, domain, name = key
                if track:
                    snap[("ref", *key)] = source.version(org, domain, name)
                cache[key] = (source.read(org, domain, name)[0] if flds is None else
                              source.read_fields(org, domain, name, sorted(flds)))
            for var, key in self.refs.items():
                fld = self.fields.get(var)
                env[var] = cache[key] if fld is None else field_text(cache[key], fld,
                                                                     key[2], var)
        if self.scope is not None:
            sc = self.scope
            if track or sc.only is None or len(sc.layers(source)) > 1:
                listed = sc.listing(source)
                if track:
                    snap.update({("scope", d, n): v for n, (d, v) in listed.items()})
                names = list(listed)
            else:
                names = list(sc.only)
            values = sc.read(source, names=names)
            env.update(self.scope.env(source, values))
        from keysafe.workloads.formats import check_env_value

        for var, value in env.items():
            check_env_value(var, value)
        return env, snap

    def snapshot(self, source: Source) -> Snapshot:
        """The current versions of everything ``build`` reads (no values)."""
        snap: Snapshot = {}
        for key in set(self.refs.values()):
            snap[("ref", *key)] = source.version(*key)
        if self.scope is not None:
            snap.update({("scope", d, n): v  # the name last, as in ("ref", ..., name)
                         for n, (d, v) in self.scope.listing(source).items()})
        return snap
