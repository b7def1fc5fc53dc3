"""Where ``run`` and ``export`` read secrets: the configured store (through
SecretManager) or a keysafe server (with a service token).

Both answer the same questions: which secrets a scope holds (with their current
versions, for ``--watch``), one secret's value (or some fields of it), and one secret's
current version.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from keysafe.client import TOKEN_ENV, TokenFile, field_answer
from keysafe.errors import (
    BackendUnavailable,
    ConfigError,
    NotFound,
    PermissionDenied,
)
from keysafe.workloads.names import tagged_env_var

if TYPE_CHECKING:

    from keysafe.catalog import Catalog
    from keysafe.manager.manager import SecretManager

USER_AGENT = "keysafe-cli"


class Source(Protocol):
    """What ``run`` and ``export`` need from a store. Errors are KeysafeErrors."""

    default_domain: str

    @property
    def catalog(self) -> Catalog | None: ...

    def scope(self, org: str, domain: str | None) -> dict[str, int]:
        """name -> current version of every live secret in org/domain (the default
        domain when None)."""
        ...

    def read(self, org: str, domain: str | None, name: str) -> tuple[str, int | None]:
        """(value, its version when the source can tell)."""
        ...

    def read_fields(self, org: str, domain: str | None, name: str,
                    fields: Collection[str]) -> str:
        """What to pick ``fields`` of JSON credentials out of: the value, or (a server,
        which picks fields out itself) a JSON object of just those it has, so the rest
        never leaves it. NotFound if the secret is missing, InvalidValue if it does not
        hold JSON credentials."""
        ...

    def env_vars(self, org: str, domain: str | None,
                 names: list[str] | None = None) -> dict[str, str]:
        """name -> the variable each secret of org/domain (or only ``names``) was
        imported from (its ``env_var`` tag), for those that have one."""
        ...

    def version(self, org: str, domain: str | None, name: str) -> int:
        """The current version; NotFound if there is none."""
        ...

    def close(self) -> None: ...


class _EnvVarTags(ABC):
    """``env_vars`` for both sources: from the listing ``scope`` keeps, or, for a few
    names given (``--only``), from each one's tags, without listing the whole org."""

    _env_vars: dict[tuple[str, str | None], dict[str, str]]

    @abstractmethod
    def scope(self, org: str, domain: str | None) -> dict[str, int]:
        """name -> current version of every live secret; fills ``_env_vars``."""

    @abstractmethod
    def _tags(self, org: str, domain: str | None, name: str) -> Mapping[str, str]:
        """One secret's tags."""

    def env_vars(self, org: str, domain: str | None,
                 names: list[str] | None = None) -> dict[str, str]:
        if names is not None and (org, domain) not in self._env_vars:
            found = ((n, tagged_env_var(self._tags(org, domain, n))) for n in names)
            return {n: var for n, var in found if var}
        if (org, domain) not in self._env_vars:
            self.scope(org, domain)
        return self._env_vars[(org, domain)]


class StoreSource(_EnvVarTags):
    """The configured store, read through a SecretManager (audited as the CLI)."""

    def __init__(self, manager: SecretManager) -> None:
        self.manager = manager
        self.default_domain = manager.default_domain
        self._env_vars: dict[tuple[str, str | None], dict[str, str]] = {}

    @property
    def catalog(self) -> Catalog | None:
        return self.manager.catalog

    def scope(self, org: str, domain: str | None) -> dict[str, int]:
        mgr = self.manager
        out: dict[str, int] = {}
        tagged: dict[str, str] = {}
        for meta in mgr.list(org, domain=domain or mgr.default_domain):
            if not meta.deleted:
                name = mgr.parse(meta.path).name
                out[name] = meta.current_version
                var = tagged_env_var(meta.tags)
                if var:
                    tagged[name] = var
        self._env_vars[(org, domain)] = tagged
        return dict(sorted(out.items()))

    def _tags(self, org: str, domain: str | None, name: str) -> Mapping[str, str]:
        return self.manager.describe(name, org, domain=domain).tags

    def read(self, org: str, domain: str | None, name: str) -> tuple[str, int | None]:
        # One store read, one audit record, and the version of exactly this value.
        return self.manager.read(name, org, domain=domain)

    def read_fields(self, org: str, domain: str | None, name: str,
                    fields: Collection[str]) -> str:
        return self.read(org, domain, name)[0]  # in this process already

    def version(self, org: str, domain: str | None, name: str) -> int:
        return self.manager.describe(name, org, domain=domain).current_version

    def close(self) -> None:
        self.manager.close()


class ServerSource(_EnvVarTags):
    """A keysafe server, with a service token (``Authorization: Bearer``).

    Values come from ``GET /api/secrets/{org}/{name}/value`` (the service role's
    ``read``), versions from ``GET /api/secrets/{org}/{name}`` (``status``), and a
    scope's names from ``GET /api/orgs/{org}/secrets``, which needs ``list`` (a token
    with the service and viewer roles); ``--only`` needs no listing.
    """

    def __init__(self, url: str, token: str | TokenFile, *, default_domain: str = "shared",
                 catalog: Catalog | None = None, timeout: float = 30.0,
                 what: str = "--via-server") -> None:
        from keysafe.client import HttpTransport

        self._http = HttpTransport(url, token, timeout=timeout, what=what,
                                   user_agent=USER_AGENT)
        self.url = self._http.url
        self._env_vars: dict[tuple[str, str | None], dict[str, str]] = {}
        self._catalog = catalog
        self.default_domain = default_domain

    def __repr__(self) -> str:  # never the token
        return f"ServerSource({self.url!r})"

    def catalog_info(self) -> dict[str, Any]:
        """The server's ``/api/catalog`` answer (app, environment, default domain...)."""
        data: dict[str, Any] = self._http.request("GET", "/api/catalog")
        return data

    @property
    def catalog(self) -> Catalog | None:
        return self._catalog

    def _get(self, path: str, query: dict[str, str] | None = None) -> Any:
        return self._http.request("GET", path, query)

    @staticmethod
    def _seg(kind: str, value: str) -> str:
        from keysafe.naming import validate_segment

        return quote(validate_segment(kind, value), safe="")

    def _domain(self, domain: str | None) -> dict[str, str]:
        return {"domain_id": domain} if domain else {}

    def scope(self, org: str, domain: str | None) -> dict[str, int]:
        data = self._get(f"/api/orgs/{self._seg('org', org)}/secrets",
                         {"domain_id": domain or self.default_domain})
        out: dict[str, int] = {}
        tagged: dict[str, str] = {}
        for s in data.get("secrets", []):
            if s.get("configured") and not s.get("deleted"):
                out[str(s["secret_name"])] = int(s.get("version") or 0)
                var = tagged_env_var(s.get("tags") or {})
                if var:
                    tagged[str(s["secret_name"])] = var
        self._env_vars[(org, domain)] = tagged
        return dict(sorted(out.items()))

    def _tags(self, org: str, domain: str | None, name: str) -> Mapping[str, str]:
        # The status (what --only's token may read), not a listing.
        data = self._get(f"/api/secrets/{self._seg('org', org)}/{self._seg('name', name)}",
                         self._domain(domain))
        tags = data.get("tags") if isinstance(data, dict) else None
        return tags if isinstance(tags, dict) else {}

    def read(self, org: str, domain: str | None, name: str) -> tuple[str, int | None]:
        data = self._get(f"/api/secrets/{self._seg('org', org)}/{self._seg('name', name)}"
                         "/value", self._domain(domain))
        value = data.get("value") if isinstance(data, dict) else None
        if not isinstance(value, str):
            raise BackendUnavailable(f"keysafe server at {self.url} sent no value for {name}")
        return value, None

    def read_fields(self, org: str, domain: str | None, name: str,
                    fields: Collection[str]) -> str:
        # One request a field (``?field=``): the server picks each out, all from the
        # version the first one read (``version=0``: the current one, and its number),
        # so a rotation between two requests cannot pair a user with the next
        # password. A field it lacks is left out of the object, to be named by whoever
        # wanted it; whether the secret itself is missing, its status says.
        import json

        path = f"/api/secrets/{self._seg('org', org)}/{self._seg('name', name)}/value"
        got: dict[str, Any] = {}
        pinned = 0
        for fld in fields:
            # One field: a plain read (the server's fast path and cache); several: all
            # from one version.
            pin = {"version": str(pinned)} if len(fields) > 1 else {}
            try:
                data = self._get(path, {**self._domain(domain), "field": fld, **pin})
            except NotFound as missing:
                try:
                    self.version(org, domain, name)  # NotFound: the secret is missing
                except PermissionDenied:
                    raise missing from None  # no status to ask: the server's answer
                continue
            got[fld], at = field_answer(data, fld, name, self.url)
            if not pinned and at is not None:
                pinned = at
        return json.dumps(got)

    def version(self, org: str, domain: str | None, name: str) -> int:
        data = self._get(f"/api/secrets/{self._seg('org', org)}/{self._seg('name', name)}",
                         self._domain(domain))
        if not data.get("configured") or data.get("deleted"):
            raise NotFound(f"secret {name} is not configured in {org}")
        return int(data.get("version") or 0)

    def close(self) -> None:
        self._http.close()


def open_source(*, env: str | None = None, server: str | None = None,
                token_env: str = TOKEN_ENV) -> Source:
    """The store named by the settings, or the server at ``server`` (else at
    KEYSAFE_SERVER_URL) with the token in the environment variable ``token_env``, else in
    the file ``token_env``_FILE names (never on the command line)."""
    from keysafe.cli.reading import load, open_manager

    settings = load(env)
    via = "--via-server"
    if server is None and settings.server_url:
        server, via = settings.server_url, "KEYSAFE_SERVER_URL"
    if server is None:
        return StoreSource(open_manager(settings=settings))
    from keysafe.client import env_token

    token = env_token(token_env)
    if not token:
        raise ConfigError(f"{via} needs a service token in the environment variable "
                          f"{token_env}, or a file holding one named in {token_env}_FILE "
                          "(set one, or name another variable with --token-env)")
    from keysafe.catalog import Catalog
    from keysafe.cli.reading import chosen_env
    from keysafe.cli.remote import server_info

    catalog = Catalog.load(settings.catalog_file) if settings.catalog_file else None
    source = ServerSource(server, token, catalog=catalog or Catalog.builtin(), what=via)
    try:
        # The server's default domain, and its environment checked against the one
        # chosen here (--env, KEYSAFE_ENV...), as the secret verbs do.
        answer = source.catalog_info()
        info = server_info(answer, source.url, chosen_env(settings))
    except BaseException:
        source.close()
        raise
    source.default_domain = str(info.get("default_domain") or source.default_domain)
    # Variables named as the server names them (its team's entries too), as `keysafe
    # import` through it tagged them, unless a catalog file is set here (it wins, as
    # any setting given here does) or the server is older than whole entries.
    if not settings.catalog_file and complete_entries(answer.get("categories")):
        source._catalog = Catalog.from_api(answer.get("categories"))
    return source


def complete_entries(categories: object) -> bool:
    """Whether a server's /api/catalog entries carry everything ``run`` and ``export``
    name variables by (an older server sends no field variables, nor its order)."""
    raws = [r for group in (categories.values() if isinstance(categories, dict) else ())
            if isinstance(group, list) for r in group]
    return bool(raws) and all(isinstance(r, dict) and "field_env_vars" in r
                              and "aliases" in r and "position" in r for r in raws)
