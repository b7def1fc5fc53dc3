"""AsyncSecretManager: the same verbs for asyncio code.

A cache hit is answered in the event loop's own thread (no hop to a worker); anything
that reaches the store runs in a worker thread so the loop never blocks on I/O, except a
value read from a store that can read without blocking (PostgreSQL's ``get_async``),
which runs on the loop itself.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from time import monotonic
from typing import TYPE_CHECKING, Any

from keysafe.manager.manager import SecretManager
from keysafe.models import SecretMetadata, VersionInfo

if TYPE_CHECKING:
    from keysafe.keycheck import KeyCheck
    from keysafe.rotation.engine import Outcome
    from keysafe.secret import Secret


class AsyncSecretManager:
    def __init__(self, manager: SecretManager) -> None:
        self.sync = manager
        self._cache_data = manager._cache_data

    @classmethod
    def from_env(cls, **overrides: Any) -> AsyncSecretManager:
        return cls(SecretManager.from_env(**overrides))

    @classmethod
    def from_settings(cls, settings: Any) -> AsyncSecretManager:
        return cls(SecretManager.from_settings(settings))

    def __getattr__(self, name: str) -> Any:
        # Every other verb: the sync method, run in a worker thread.
        attr = getattr(self.sync, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(attr, *args, **kwargs)

        return call

    async def get_secret(self, name: str, org: str | None = None, *,
                         domain: str | None = None, env: str | None = None,
                         version: int | None = None, fresh: bool = False) -> Secret:
        """``get``, the value wrapped in a ``keysafe.Secret``."""
        from keysafe.secret import Secret

        return Secret(await self.get(name, org, domain=domain, env=env, version=version,
                                     fresh=fresh))

    async def get(self, name: str, org: str | None = None, *, domain: str | None = None,
                  env: str | None = None, version: int | None = None,
                  fresh: bool = False) -> str:
        if not fresh:
            e = self._cache_data.get((name, org, domain, env, version))
            if e is not None and e[1] > monotonic():
                self.sync._stats["cache_hits"] += 1
                return e[0]
            if env is None and version is None and hasattr(self.sync.backend, "get_async"):
                # A store that reads without blocking (PostgreSQL): no worker thread.
                return await self.sync.get_async(name, org, domain=domain)
        return await asyncio.to_thread(self.sync.get, name, org, domain=domain, env=env,
                                       version=version, fresh=True)

    async def put(self, name: str, value: str, org: str | None = None,
                  **kwargs: Any) -> VersionInfo:
        return await asyncio.to_thread(self.sync.put, name, value, org, **kwargs)

    async def has(self, name: str, org: str | None = None, **kwargs: Any) -> bool:
        return await asyncio.to_thread(self.sync.has, name, org, **kwargs)

    async def describe(self, name: str, org: str | None = None,
                       **kwargs: Any) -> SecretMetadata:
        return await asyncio.to_thread(self.sync.describe, name, org, **kwargs)

    async def get_json(self, name: str, org: str | None = None,
                       **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.get_json, name, org, **kwargs)

    async def put_json(self, name: str, data: Mapping[str, Any], org: str | None = None,
                       **kwargs: Any) -> VersionInfo:
        return await asyncio.to_thread(self.sync.put_json, name, data, org, **kwargs)

    async def get_llm_api_key(self, org: str, provider: str,
                              domain: str | None = None) -> str | None:
        return await asyncio.to_thread(self.sync.get_llm_api_key, org, provider, domain)

    async def rotate(self, name: str, org: str, *, domain: str | None = None) -> Outcome:
        """``SecretManager.rotate`` in a worker thread (a rotator may call out)."""
        return await asyncio.to_thread(self.sync.rotate, name, org, domain=domain)

    async def check_key(self, name: str, value: str | None = None, org: str | None = None,
                        **kwargs: Any) -> KeyCheck:
        """``SecretManager.check_key`` in a worker thread (it calls the provider)."""
        return await asyncio.to_thread(self.sync.check_key, name, value, org, **kwargs)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.sync.close)
