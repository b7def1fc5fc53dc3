"""A FastAPI dependency that yields a SecretManager scoped to the request's org.

```python
from typing import Annotated
from fastapi import Depends, FastAPI
from keysafe import SecretManager
from keysafe.integrations.fastapi import ScopedSecrets, secrets_dependency

app = FastAPI()
Secrets = Annotated[ScopedSecrets, Depends(secrets_dependency(SecretManager.from_env()))]

@app.post("/orgs/{org_id}/summaries")
def summarise(org_id: str, secrets: Secrets) -> dict[str, str]:
    key = secrets.get_llm_api_key("openai")   # the domain's key, else the org's shared one
    ...
```

The org comes from the path (or query) parameter ``org_id`` by default, or from
``org_from(request)``, which is where an app that knows its caller should take it (the
authenticated user's org, not a URL the caller chose). Which orgs a caller may touch
is the app's decision; the scoped manager only makes sure every call names that org.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from keysafe.errors import ConfigError, InvalidName
from keysafe.manager.manager import SecretManager

try:
    from fastapi import HTTPException, Request
except ImportError:  # pragma: no cover - depends on the install
    raise ConfigError("keysafe.integrations.fastapi needs FastAPI, which is not installed; "
                      "install it with: pip install 'keysafe[server]'") from None

if TYPE_CHECKING:
    from keysafe.models import SecretMetadata, VersionInfo
    from keysafe.secret import Secret

__all__ = ["ScopedSecrets", "secrets_dependency"]


class ScopedSecrets:
    """A SecretManager bound to one org (and a default domain): the same verbs without
    the org argument. Its repr shows the scope, never a value."""

    __slots__ = ("domain", "manager", "org")

    def __init__(self, manager: SecretManager, org: str, domain: str | None = None) -> None:
        self.manager = manager
        self.org = org
        self.domain = domain

    def __repr__(self) -> str:
        return f"ScopedSecrets(org={self.org!r}, domain={self.domain!r})"

    def _d(self, domain: str | None) -> str | None:
        return domain if domain is not None else self.domain

    def get(self, name: str, *, domain: str | None = None, version: int | None = None) -> str:
        return self.manager.get(name, self.org, domain=self._d(domain), version=version)

    def get_secret(self, name: str, *, domain: str | None = None,
                   version: int | None = None) -> Secret:
        return self.manager.get_secret(name, self.org, domain=self._d(domain),
                                       version=version)

    def get_json(self, name: str, *, domain: str | None = None) -> dict[str, Any]:
        return self.manager.get_json(name, self.org, domain=self._d(domain))

    def has(self, name: str, *, domain: str | None = None) -> bool:
        return self.manager.has(name, self.org, domain=self._d(domain))

    def describe(self, name: str, *, domain: str | None = None) -> SecretMetadata:
        return self.manager.describe(name, self.org, domain=self._d(domain))

    def list(self, *, domain: str | None = None) -> builtins.list[SecretMetadata]:
        return self.manager.list(self.org, domain=self._d(domain))

    def put(self, name: str, value: str, *, domain: str | None = None,
            **kw: Any) -> VersionInfo:
        return self.manager.put(name, value, self.org, domain=self._d(domain), **kw)

    def get_llm_api_key(self, provider: str) -> str | None:
        """Spec 001: the domain's key for ``provider``, else the org's shared key."""
        return self.manager.get_llm_api_key(self.org, provider, self.domain)


def secrets_dependency(
    manager: SecretManager | Callable[[], SecretManager] | None = None, *,
    org_param: str = "org_id", domain_param: str | None = "domain_id",
    org_from: Callable[[Request], str] | None = None,
    actor: Callable[[Request], str] | None = None,
) -> Callable[[Request], Iterator[ScopedSecrets]]:
    """A dependency for ``Depends(...)`` yielding a ScopedSecrets for the request's org.

    ``manager``: a SecretManager, a factory called once on first use, or None for
    ``SecretManager.from_env()``. The org is ``org_from(request)`` when given, else the
    path or query parameter ``org_param``; the domain the path or query parameter
    ``domain_param`` (None: the default domain). ``actor(request)`` names who the reads
    and writes are audited as (default: the manager's own actor). A missing or invalid
    org or domain is answered with 400 naming the problem.
    """
    lock = threading.Lock()
    holder: list[SecretManager] = []

    def base() -> SecretManager:
        if not holder:
            with lock:
                if not holder:
                    if isinstance(manager, SecretManager):
                        holder.append(manager)
                    elif manager is not None:
                        holder.append(manager())
                    else:
                        holder.append(SecretManager.from_env())
        return holder[0]

    def param(request: Request, name: str) -> str | None:
        value = request.path_params.get(name)
        if value is None:
            value = request.query_params.get(name)
        return None if value is None else str(value)

    def dependency(request: Request) -> Iterator[ScopedSecrets]:
        from keysafe.naming import validate_segment

        org = org_from(request) if org_from is not None else param(request, org_param)
        if not org:
            raise HTTPException(400, f"the request names no organisation ({org_param})")
        domain = param(request, domain_param) if domain_param else None
        try:
            validate_segment("org", org)
            if domain is not None:
                validate_segment("domain", domain)
        except InvalidName as exc:
            raise HTTPException(400, exc.message) from None
        mgr = base()
        if actor is not None:
            mgr = mgr.as_actor(actor(request), client="fastapi",
                               request_id=request.headers.get("x-request-id"))
        yield ScopedSecrets(mgr, org, domain)

    return dependency
