"""The client-side cache of decrypted values, and of what is shown about a secret.

A hit is one dict lookup and one clock read, so it stays well under a microsecond.
Entries are bounded by count (oldest inserted goes first) and by a TTL; an expired
value is kept for ``stale_if_error`` seconds more, to be served only when the store is
unreachable. Writes through the manager invalidate by path, whatever key spelled it.

A full table admits a new key only on its second miss (a *doorkeeper*, as in TinyLFU):
the first miss is remembered in a set of keys (emptied whenever it reaches
``max_entries``), the second displaces the oldest entry. So a scan across more names
than the cache holds, or a stream of one-off reads of a million names, neither pushes
out what is read over and over nor pays for an insert and an eviction per read. While
a table has room, every miss is cached at once.

Beside the values sits a second table of *meta* entries: anything built from a
secret's metadata alone (the server keeps its finished status responses there). They
share the values' invalidation by path, generations, TTL and size bound (each table
holds at most ``max_entries``), so every write or notification that drops a cached
value drops what was shown about the secret with it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from time import monotonic
from typing import Any, TypeVar

V = TypeVar("V")


class SecretCache:
    __slots__ = ("_by_path", "_data", "_door", "_floor", "_gen", "_lock", "_meta",
                 "_meta_by_path", "_meta_door", "_tick", "max_entries", "stale_if_error", "ttl")

    def __init__(self, ttl: float = 30.0, max_entries: int = 10_000,
                 stale_if_error: float = 0.0) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.stale_if_error = stale_if_error
        # key -> (value, fresh_until, path)
        # OrderedDict: evicting the oldest is O(1) (a dict's first key can be slow to find
        # after many deletions), and lookups cost the same as a dict's.
        self._data: OrderedDict[Hashable, tuple[str, float, str]] = OrderedDict()
        # path -> its one key, or a set of keys when several spellings name it: most
        # paths have one key, and a set per path costs an allocation the cyclic GC then
        # tracks (a large store's stream of misses made that most of a miss's cost).
        self._by_path: dict[str, Any] = {}
        # The meta table: the same shape, its own keys (so a key spelled like a value's
        # never collides with one) and its own index by path.
        self._meta: OrderedDict[Hashable, tuple[object, float, str]] = OrderedDict()
        self._meta_by_path: dict[str, Any] = {}
        # Each table's doorkeeper: keys missed once while it was full.
        self._door: set[Hashable] = set()
        self._meta_door: set[Hashable] = set()
        # Bumped by every invalidation: a read that began before a write must not cache
        # the value it read once the write has invalidated the path.
        # Invalidations stamp a path with a global, ever-growing tick; a forgotten
        # path reads as the floor (the tick when stamps were last forgotten).
        self._gen: dict[str, int] = {}
        self._tick = 0
        self._floor = 0
        self._lock = threading.Lock()

    def generation(self, path: str) -> int:
        return self._gen.get(path, self._floor)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.max_entries > 0

    def get(self, key: Hashable) -> str | None:
        e = self._data.get(key)
        if e is not None:
            now = monotonic()
            if e[1] > now:
                return e[0]
            if e[1] + self.stale_if_error <= now:
                self._forget(key)  # past any use: no value stays in memory for nothing
        return None

    def get_stale(self, key: Hashable) -> str | None:
        """An expired value still inside the stale-if-error window, if any (never one
        without a window: a live entry is ``get``'s to serve)."""
        e = self._data.get(key)
        if e is not None and self.stale_if_error > 0 \
                and e[1] + self.stale_if_error > monotonic():
            return e[0]
        return None

    def _forget(self, key: Hashable) -> None:
        with self._lock:
            e = self._data.get(key)
            if e is not None and e[1] + self.stale_if_error <= monotonic():
                del self._data[key]
                _unindex(self._by_path, key, e[2])

    def put(self, key: Hashable, path: str, value: str, generation: int | None = None) -> None:
        """Cache ``value``; with ``generation`` (from before the read) only if no
        invalidation of ``path`` happened since."""
        self._put(self._data, self._by_path, self._door, key, path, value, generation)

    def get_meta(self, key: Hashable) -> object | None:
        """A fresh meta entry, if any (never served stale: it has no outage fallback)."""
        e = self._meta.get(key)
        if e is not None and e[1] > monotonic():
            return e[0]
        return None

    def put_meta(self, key: Hashable, path: str, entry: object,
                 generation: int | None = None) -> None:
        """Cache ``entry``, built from what was read of ``path``; as ``put``."""
        self._put(self._meta, self._meta_by_path, self._meta_door, key, path, entry,
                  generation)

    def _put(self, data: OrderedDict[Hashable, tuple[V, float, str]],
             by_path: dict[str, Any], door: set[Hashable], key: Hashable, path: str,
             value: V, generation: int | None) -> None:
        if self.ttl <= 0 or self.max_entries <= 0:
            return
        with self._lock:
            if generation is not None and self._gen.get(path, self._floor) != generation:
                return
            prev = data.pop(key, None)
            if prev is None and len(data) >= self.max_entries:
                if key not in door:  # a first miss while full: remembered, not cached
                    if len(door) >= self.max_entries:
                        door.clear()
                    door.add(key)
                    return
                door.discard(key)
                old, e = data.popitem(last=False)
                _unindex(by_path, old, e[2])
            data[key] = (value, monotonic() + self.ttl, path)
            if prev is None or prev[2] != path:
                if prev is not None:
                    _unindex(by_path, key, prev[2])
                cur = by_path.get(path, _NONE)
                if cur is _NONE:
                    by_path[path] = key
                elif cur.__class__ is set:
                    cur.add(key)
                elif cur != key:
                    by_path[path] = {cur, key}

    def invalidate(self, path: str) -> None:
        with self._lock:
            self._tick += 1
            self._gen[path] = self._tick
            if len(self._gen) > 4 * max(self.max_entries, 1024):
                # Bounded memory: forget every stamp, raising the floor past them all,
                # so any read that began before now no longer matches.
                self._gen.clear()
                self._floor = self._tick
            _drop(self._data, self._by_path, path)
            _drop(self._meta, self._meta_by_path, path)

    def clear(self) -> None:
        with self._lock:
            self._tick += 1
            self._gen.clear()
            self._floor = self._tick
            self._data.clear()
            self._by_path.clear()
            self._meta.clear()
            self._meta_by_path.clear()
            self._door.clear()
            self._meta_door.clear()

    def expire_all(self) -> None:
        """Anything may have changed (a change listener lost its connection, or is back
        after losing it): no value is served as fresh any more, but each stays for the
        stale-if-error window, for reads while the store cannot be reached, which is
        often why the listener was lost. Meta entries go (they are never served stale).
        Without a stale-if-error window this is ``clear``."""
        if self.stale_if_error <= 0:
            self.clear()
            return
        with self._lock:
            self._tick += 1
            self._gen.clear()
            self._floor = self._tick
            now = monotonic()
            for key, (value, until, path) in list(self._data.items()):
                if until > now:
                    self._data[key] = (value, now, path)
            self._meta.clear()
            self._meta_by_path.clear()
            self._meta_door.clear()

    def __len__(self) -> int:
        """Cached values (meta entries are not counted)."""
        return len(self._data)


_NONE: Any = object()


def _unindex(by_path: dict[str, Any], key: Hashable, path: str) -> None:
    cur = by_path.get(path, _NONE)
    if cur is _NONE:
        return
    if cur.__class__ is set:
        cur.discard(key)
        if not cur:
            del by_path[path]
    elif cur == key:
        del by_path[path]


def _drop(data: OrderedDict[Hashable, Any], by_path: dict[str, Any], path: str) -> None:
    """Remove every entry of ``path`` (one key, or a set of them) from ``data``."""
    cur = by_path.pop(path, _NONE)
    if cur is _NONE:
        return
    if cur.__class__ is set:
        for key in cur:
            data.pop(key, None)
    else:
        data.pop(cur, None)
