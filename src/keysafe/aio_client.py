"""AsyncKeysafeClient: the keysafe server's verbs for asyncio code (spec 001's async app
holding a token, not the master key).

Each call runs on a worker thread with a ``KeysafeClient`` of that thread's own (its
kept-alive connection is not shared between threads), so the event loop never blocks
on the network. With ``cache_ttl``, one cache serves every thread: a hit is answered on
the loop itself, without a hop to a worker, and ``stale_if_error`` keeps reads going
through a server outage.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import TYPE_CHECKING, Any

from keysafe.client import KeysafeClient

if TYPE_CHECKING:
    from keysafe.client import TokenFile
    from keysafe.manager.cache import SecretCache


class AsyncKeysafeClient:
    """``await ks.get(name, org)``, ``get_json``, ``get_llm_api_key``, ... : every
    ``KeysafeClient`` verb, awaited. URL and token are checked at once, as by
    ``KeysafeClient``.

    >>> async with AsyncKeysafeClient(url, env_token(), cache_ttl=30) as ks:
    ...     key = await ks.get_llm_api_key("acme-corp", "openai")
    """

    def __init__(self, url: str, token: str | TokenFile | None, *, timeout: float = 30.0,
                 cache_ttl: float = 0.0, cache_max_entries: int = 10_000,
                 stale_if_error: float = 0.0) -> None:
        cache: SecretCache | None = None
        if cache_ttl > 0:
            from keysafe.manager.cache import SecretCache

            cache = SecretCache(cache_ttl, cache_max_entries, stale_if_error)
        self.cache = cache
        self._args = (url, token, timeout)
        self._local = threading.local()
        self._lock = threading.Lock()
        # Weakly: a worker thread that ends (each asyncio.run has its own executor)
        # takes its client, and its connection, with it.
        self._clients: weakref.WeakSet[KeysafeClient] = weakref.WeakSet()
        self.url = self._client().url  # a bad URL or token fails here, not on first use

    def __repr__(self) -> str:  # never the token
        return f"AsyncKeysafeClient({self.url!r})"

    def _client(self) -> KeysafeClient:
        """This thread's client (made on first use; all share the cache)."""
        local = self._local
        client: KeysafeClient | None = getattr(local, "client", None)
        if client is None:
            url, token, timeout = self._args
            client = KeysafeClient(url, token, timeout=timeout, _shared_cache=self.cache)
            local.client = client
            with self._lock:
                self._clients.add(client)
        return client

    async def get(self, name: str, org: str, *, domain: str | None = None,
                  version: int | None = None, fresh: bool = False) -> str:
        """The current value (a cache hit answered on the loop), or version ``version``'s."""
        if version is None and not fresh and self.cache is not None:
            hit = self.cache.get((name, org, domain))
            if hit is not None:
                return hit
        return await asyncio.to_thread(
            lambda: self._client().get(name, org, domain=domain, version=version,
                                       fresh=fresh))

    async def get_json(self, name: str, org: str, *,
                       domain: str | None = None) -> dict[str, Any]:
        from keysafe.manager.manager import json_object

        return json_object(await self.get(name, org, domain=domain), name)

    async def get_llm_api_key(self, org: str, provider: str, *, domain: str | None = None,
                              fresh: bool = False) -> str | None:
        """Spec 001: the domain's key, else the org's shared key, else None (a cache hit
        answered on the loop)."""
        if not fresh and self.cache is not None:
            hit = self.cache.get(("llm", org, provider, domain))
            if hit is not None:
                return hit
        return await asyncio.to_thread(
            lambda: self._client().get_llm_api_key(org, provider, domain=domain,
                                                   fresh=fresh))

    def __getattr__(self, name: str) -> Any:
        # Every other verb of KeysafeClient, on a worker thread.
        if name == "close":
            raise AttributeError("AsyncKeysafeClient closes with `await ks.aclose()`")
        if name.startswith("_") or not callable(getattr(KeysafeClient, name, None)):
            raise AttributeError(f"AsyncKeysafeClient has no verb {name!r}")

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(
                lambda: getattr(self._client(), name)(*args, **kwargs))

        call.__name__ = name
        return call

    async def aclose(self) -> None:
        """Close every thread's connection (a later call opens new ones)."""
        with self._lock:
            clients = list(self._clients)
            self._clients = weakref.WeakSet()
            self._local = threading.local()  # each thread makes a new client next time
        for client in clients:
            client.close()

    async def __aenter__(self) -> AsyncKeysafeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
