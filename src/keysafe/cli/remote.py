"""The secret verbs through a keysafe server (``KEYSAFE_SERVER_URL`` and a token in
``KEYSAFE_TOKEN`` or the file ``KEYSAFE_TOKEN_FILE`` names), in the manager's shape, so
the commands render both the same way.

A laptop then holds a token, never the master key or the store's credentials, and the
server checks the token's roles, orgs and domains and audits every call under the
token's name, as for any other client (Vault's ``VAULT_ADDR`` and ``VAULT_TOKEN``).
Names, full paths included, follow the server's naming template, app and environment,
which the first call asks the server for.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from keysafe.catalog import Catalog
from keysafe.client import TOKEN_ENV, KeysafeClient, TokenFile, env_token
from keysafe.errors import ConfigError, InvalidName, NotFound
from keysafe.keycheck import KeyCheck
from keysafe.models import SecretMetadata, VersionInfo
from keysafe.naming import NamingTemplate, SecretRef


def server_info(catalog: dict[str, Any], url: str, want_env: str | None) -> dict[str, Any]:
    """What a server serves (app, environment, naming template, default domain, recovery
    window) from its ``/api/catalog`` answer. ConfigError when it is older than this
    keysafe, or serves another environment than ``want_env`` (--env, KEYSAFE_ENV...)."""
    data = {k: v for k, v in catalog.items() if k != "categories"}
    if not data.get("naming_template"):
        raise ConfigError(f"the keysafe server at {url} is older than this keysafe (it "
                          "does not say its naming template): upgrade it, or use a "
                          "keysafe of its version")
    env = data.get("environment")
    if want_env is not None and want_env != env:
        raise ConfigError(f"the keysafe server at {url} serves the {env!r} environment, "
                          f"not {want_env!r}: point KEYSAFE_SERVER_URL (or --via-server) "
                          "at that environment's server")
    return data


def _when(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) else None


def _meta(path: str, st: Mapping[str, Any]) -> SecretMetadata:
    """SecretMetadata from the server's status of a stored secret."""
    created = _when(st.get("created_at"))
    updated = _when(st.get("updated_at")) or created
    if created is None or updated is None:
        raise NotFound(f"{path} is not stored")
    return SecretMetadata(
        path=path, current_version=int(st.get("version") or 0), created_at=created,
        updated_at=updated, created_by=st.get("created_by"), updated_by=st.get("updated_by"),
        description=st.get("description"), secret_type=st.get("secret_type"),
        tags=dict(st.get("tags") or {}), deleted_at=_when(st.get("deleted_at")),
        last_rotated=_when(st.get("last_rotated")), rotation_days=st.get("rotation_days"),
        expires_at=_when(st.get("expires_at")), versions=int(st.get("versions_kept") or 0))


def _version(answer: Mapping[str, Any]) -> VersionInfo:
    """VersionInfo from a write's answer or a version list's entry."""
    return VersionInfo(version=int(answer["version"]),
                       created_at=datetime.fromisoformat(answer["created_at"]),
                       created_by=answer.get("created_by"),
                       destroyed=bool(answer.get("destroyed")))


class RemoteManager:
    """The verbs ``keysafe put | get | status | tag | ls | rm | restore | destroy |
    versions | rollback`` use, answered by a keysafe server.

    Raises ConfigError when no token is set, or when ``--env`` / KEYSAFE_ENV names an
    environment the server does not serve; the server's refusals come back as the
    library's own errors (PermissionDenied, NotFound, Conflict, ...)."""

    def __init__(self, url: str, token: str | TokenFile | None = None, *,
                 env: str | None = None, default_org: str | None = None,
                 timeout: float = 30.0) -> None:
        token = token if token is not None else env_token()
        if not token:
            from keysafe.config import url_origin

            raise ConfigError(f"KEYSAFE_SERVER_URL is set, so the command goes through the "
                              f"keysafe server at {url_origin(url)}: put a token in "
                              f"{TOKEN_ENV} (or name a file holding one in {TOKEN_ENV}_FILE)")
        self.client = KeysafeClient(url, token, timeout=timeout)
        self._want_env = env
        self.default_org = default_org
        self._info: dict[str, Any] | None = None
        self._naming: NamingTemplate | None = None
        self._categories: object = None
        self._catalog: Catalog | None = None
        self._may_read: bool | None = None

    def __repr__(self) -> str:  # never the token
        return f"RemoteManager({self.client.url!r})"

    def __enter__(self) -> RemoteManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    # -- what the server serves ---------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The server's app, environment, naming template, default domain and recovery
        window (asked once), after checking the environment asked for is the server's."""
        if self._info is None:
            answer = self.client.catalog()
            data = server_info(answer, self.client.url, self._want_env)
            self._naming = NamingTemplate(str(data.get("naming_template")))
            self._categories = answer.get("categories")
            self._info = data
        return self._info

    @property
    def catalog(self) -> Catalog:
        """The server's catalog (its team's entries too), so that names and variables
        map as the server maps them."""
        if self._catalog is None:
            self.info()
            self._catalog = Catalog.from_api(self._categories)
        return self._catalog

    @property
    def naming(self) -> NamingTemplate:
        self.info()
        assert self._naming is not None
        return self._naming

    @property
    def app(self) -> str:
        return str(self.info()["app"])

    @property
    def default_domain(self) -> str:
        return str(self.info()["default_domain"])

    @property
    def may_read_values(self) -> bool:
        """Whether the token has the ``read`` permission (a service's), asked once: an
        import compares a found value with the stored one only then."""
        if self._may_read is None:
            perms = self.client.whoami().get("permissions")
            self._may_read = isinstance(perms, list) and "read" in perms
        return self._may_read

    @property
    def max_value_bytes(self) -> int:
        """The server's limit on a value (it refuses a larger one in any case)."""
        limit = self.info().get("max_value_bytes")
        return limit if isinstance(limit, int) and limit > 0 else 64 * 1024

    @property
    def recovery_window(self) -> timedelta:
        return timedelta(days=int(self.info().get("recovery_window_days") or 0))

    def ref(self, name: str, org: str | None, domain: str | None) -> SecretRef:
        """A validated reference; ``name`` may be a full path when ``org`` is None."""
        info = self.info()
        assert self._naming is not None
        app, env = str(info["app"]), str(info["environment"])
        if org is None and "/" not in name and self.default_org is not None:
            org = self.default_org
        if org is None:
            if "/" not in name:
                raise InvalidName(f"secret {name!r} needs an org (or give its full path, "
                                  "or set KEYSAFE_DEFAULT_ORG)", segment="org")
            ref = self._naming.parse(name, app=app, env=env)
            if (ref.app, ref.env) != (app, env):
                raise InvalidName(f"path {name!r} is not in the {app}/{env} secrets of the "
                                  f"keysafe server at {self.client.url}", segment="env")
            return ref
        return SecretRef(name, org, domain or str(info["default_domain"]), env,
                         app).validate()

    def path(self, name: str, org: str | None = None, *, domain: str | None = None) -> str:
        return self._format(self.ref(name, org, domain))

    def _format(self, ref: SecretRef) -> str:
        """The full path of a reference ``ref`` made (after info(), which sets the
        naming template)."""
        assert self._naming is not None
        return self._naming.format(ref)

    # -- reading --------------------------------------------------------------------------
    def read(self, name: str, org: str | None = None, *, domain: str | None = None,
             version: int | None = None) -> tuple[str, int]:
        r = self.ref(name, org, domain)
        return self.client.read(r.name, r.org, domain=r.domain, version=version)

    def get(self, name: str, org: str | None = None, *, domain: str | None = None,
            version: int | None = None, fresh: bool = False) -> str:
        """The value (``fresh`` is the manager's: the server's own cache is dropped on
        every write, so its answer is current)."""
        r = self.ref(name, org, domain)
        return self.client.get(r.name, r.org, domain=r.domain, version=version)

    def get_json_field(self, name: str, field: str, org: str | None = None, *,
                       domain: str | None = None, version: int | None = None) -> Any:
        """One field of JSON credentials, picked out by the server: only it is sent."""
        r = self.ref(name, org, domain)
        return self.client.get_json_field(r.name, field, r.org, domain=r.domain,
                                          version=version)

    def read_json_field(self, name: str, field: str, org: str | None = None, *,
                        domain: str | None = None, version: int | None = None
                        ) -> tuple[Any, int]:
        """(field, version): ``get_json_field`` with the version it was read from."""
        r = self.ref(name, org, domain)
        return self.client.read_json_field(r.name, field, r.org, domain=r.domain,
                                           version=version)

    def has(self, name: str, org: str | None = None, *, domain: str | None = None) -> bool:
        try:
            self.describe(name, org, domain=domain)
        except NotFound:
            return False
        return True

    def describe(self, name: str, org: str | None = None, *, domain: str | None = None,
                 include_deleted: bool = False) -> SecretMetadata:
        r = self.ref(name, org, domain)
        path = self._format(r)
        st = self.client.describe(r.name, r.org, domain=r.domain)
        if not st.get("configured") and not (include_deleted and st.get("deleted")):
            raise NotFound(f"{path} is not stored" if not st.get("deleted") else
                           f"{path} is deleted (keysafe restore brings it back)")
        return _meta(path, st)

    def list(self, org: str | None = None, *, domain: str | None = None,
             include_deleted: bool = False) -> builtins.list[SecretMetadata]:
        """An org's secrets (one domain's with ``domain``); without ``org``, those of
        every org the token names (a token for every org must name one)."""
        info = self.info()
        if org is not None:
            orgs = [org]
        else:
            covered = self.client.whoami().get("orgs")
            if covered is None:
                raise InvalidName("give --org: the keysafe server lists one org at a time, "
                                  "and this token covers every org", segment="org")
            orgs = sorted({o.split("/", 1)[0] for o in covered})
        out = []
        for o in orgs:
            for st in self.client.list(o, domain=domain, include_deleted=include_deleted):
                ref = SecretRef(st["secret_name"], st["organization_id"], st["domain_id"],
                                str(info["environment"]), str(info["app"]))
                out.append(_meta(self._format(ref), st))
        return out

    def stored_checks(self, org: str, domain: str | None = None
                      ) -> builtins.list[tuple[str, str, str]]:
        """(name, org, domain) of every live secret of ``org`` (one ``domain``'s) that
        has a live check on the server (keysafe.keycheck.stored, through the API): its
        name, an alias or its variable, as the catalog looks names up. With the server's
        checks off (no entry shows one), every catalog secret: each answers "off"."""
        from keysafe.catalog import lookup_key

        cats = self.client.catalog().get("categories") or {}
        entries = [e for group in cats.values() if isinstance(group, list)
                   for e in group if isinstance(e, dict)]
        on = any(e.get("live_check") for e in entries)
        keys = {lookup_key(str(k)) for e in entries if e.get("live_check") or not on
                for k in (e.get("secret_name"), e.get("env_var"), *(e.get("aliases") or ()))
                if k}
        out = []
        for st in self.client.list(org, domain=domain):
            if st.get("configured") and lookup_key(str(st.get("secret_name"))) in keys:
                out.append((str(st["secret_name"]), str(st["organization_id"]),
                            str(st["domain_id"])))
        return out

    def check_key(self, name: str, value: str | None, org: str | None = None, *,
                  domain: str | None = None) -> KeyCheck:
        """The provider's verdict on the stored key (``value`` None) or on ``value``
        (nothing saved), asked by the server (``POST …/check``); never the key."""
        r = self.ref(name, org, domain)
        data = self.client.check_key(r.name, r.org, value=value, domain=r.domain)
        if not (isinstance(data, dict) and isinstance(data.get("outcome"), str)
                and isinstance(data.get("detail"), str)):
            raise self.client._odd("a key check's verdict")
        status = data.get("status")
        provider = data.get("provider")
        return KeyCheck(data["outcome"], data["detail"],
                        provider if isinstance(provider, str) else None,
                        status if isinstance(status, int) else None)

    def versions(self, name: str, org: str | None = None, *,
                 domain: str | None = None) -> builtins.list[VersionInfo]:
        r = self.ref(name, org, domain)
        return [_version(v) for v in self.client.versions(r.name, r.org, domain=r.domain)]

    # -- writing (blind) ------------------------------------------------------------------
    def put_checked(self, name: str, value: str, org: str | None = None, *,
                    domain: str | None = None, expected_version: int | None = None,
                    description: str | None = None, secret_type: str | None = None,
                    tags: Mapping[str, str] | None = None, check_format: bool = True,
                    check_key: bool = False, expires_at: datetime | None = None
                    ) -> tuple[VersionInfo, KeyCheck | None]:
        """``put``, and with ``check_key`` the provider's verdict: the server asks it
        before the write and refuses a rejected key (KeyRejected), saving nothing."""
        r = self.ref(name, org, domain)
        answer = self.client._put(r.name, value, r.org, domain=r.domain,
                                  expected_version=expected_version, description=description,
                                  tags=tags, check_key=check_key, secret_type=secret_type,
                                  check_format=check_format, expires_at=expires_at)
        kc = answer.get("key_check")
        return _version(answer), (KeyCheck(**kc) if isinstance(kc, dict) else None)

    def put(self, name: str, value: str, org: str | None = None, *,
            domain: str | None = None, expected_version: int | None = None,
            description: str | None = None, secret_type: str | None = None,
            tags: Mapping[str, str] | None = None, check_format: bool = True,
            expires_at: datetime | None = None) -> VersionInfo:
        return self.put_checked(name, value, org, domain=domain,
                                expected_version=expected_version, description=description,
                                secret_type=secret_type, tags=tags,
                                check_format=check_format, expires_at=expires_at)[0]

    def put_generated(self, name: str, org: str | None = None, *,
                      length: int | None = None, alphabet: str | None = None,
                      domain: str | None = None, **kw: Any) -> VersionInfo:
        """As the manager's: the server makes the value and keeps it."""
        r = self.ref(name, org, domain)
        return _version(self.client._generate(r.name, r.org, domain=r.domain, length=length,
                                              alphabet=alphabet, **kw))

    def put_json(self, name: str, data: Mapping[str, Any], org: str | None = None, *,
                 domain: str | None = None, expected_version: int | None = None,
                 description: str | None = None, secret_type: str | None = None,
                 tags: Mapping[str, str] | None = None,
                 expires_at: datetime | None = None) -> VersionInfo:
        """As the manager's ``put_json`` (no format check)."""
        return self.put(name, json.dumps(dict(data), sort_keys=True), org, domain=domain,
                        expected_version=expected_version, description=description,
                        secret_type=secret_type, tags=tags, check_format=False,
                        expires_at=expires_at)

    def update_json(self, name: str, changes: Mapping[str, Any], org: str | None = None, *,
                    domain: str | None = None,
                    expected_version: int | None = None) -> VersionInfo:
        r = self.ref(name, org, domain)
        return _version(self.client._fields(r.name, changes, r.org, domain=r.domain,
                                            expected_version=expected_version))

    def update_tags(self, name: str, org: str | None = None, *,
                    set_tags: Mapping[str, str] | None = None, unset: Iterable[str] = (),
                    domain: str | None = None, description: str | None = None,
                    expires_at: datetime | None = None) -> SecretMetadata:
        r = self.ref(name, org, domain)
        st = self.client.update_tags(r.name, r.org, domain=r.domain, set_tags=set_tags,
                                     unset=unset, description=description,
                                     expires_at=expires_at)
        return _meta(self._format(r), st)

    def check_can_mark_exposed(self) -> None:
        """ConfigError, before anything is written, when the server is older than the
        route that marks a value exposed (an import of committed values needs it)."""
        from keysafe.client import MARK_EXPOSED

        self.info()
        self.client._needs(MARK_EXPOSED, "it cannot mark imported values exposed, so "
                                         "they would not be due for rotation")

    def mark_exposed(self, name: str, org: str | None = None, *, where: str,
                     domain: str | None = None) -> SecretMetadata:
        """As the manager's: the current value was found in the open, due for rotation."""
        r = self.ref(name, org, domain)
        st = self.client.mark_exposed(r.name, r.org, where=where, domain=r.domain)
        return _meta(self._format(r), st)

    def delete(self, name: str, org: str | None = None, *, domain: str | None = None,
               force: bool = False) -> None:
        r = self.ref(name, org, domain)
        self.client.delete(r.name, r.org, domain=r.domain, force=force)

    def restore(self, name: str, org: str | None = None, *,
                domain: str | None = None) -> SecretMetadata:
        r = self.ref(name, org, domain)
        st = self.client.restore(r.name, r.org, domain=r.domain)
        return _meta(self._format(r), st)

    def destroy(self, name: str, versions: builtins.list[int], org: str | None = None, *,
                domain: str | None = None, keep_current: bool = True) -> builtins.list[int]:
        """The server keeps the current version whatever ``keep_current`` says."""
        r = self.ref(name, org, domain)
        return self.client.destroy(r.name, versions, r.org, domain=r.domain)

    def rollback(self, name: str, version: int, org: str | None = None, *,
                 domain: str | None = None) -> VersionInfo:
        r = self.ref(name, org, domain)
        return _version(self.client._rollback(r.name, version, r.org, domain=r.domain))
