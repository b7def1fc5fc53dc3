"""The client-side cache of decrypted values.

A hit is one dict lookup and one clock read, so it stays well under a microsecond.
Entries are bounded by count (oldest inserted goes first) and by a TTL; an expired
entry is kept for ``stale_if_error`` seconds more, to be served only when the store is
unreachable. Writes through the manager invalidate by path, whatever key spelled it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from time import monotonic

_MISSING = object()


class SecretCache:
    __slots__ = ("_by_path", "_data", "_floor", "_gen", "_lock", "_tick", "max_entries",
                 "stale_if_error", "ttl")

    def __init__(self, ttl: float = 30.0, max_entries: int = 10_000,
                 stale_if_error: float = 0.0) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.stale_if_error = stale_if_error
        # key -> (value, fresh_until, path)
        # OrderedDict: evicting the oldest is O(1) (a dict's first key can be slow to find
        # after many deletions), and lookups cost the same as a dict's.
        self._data: OrderedDict[Hashable, tuple[str, float, str]] = OrderedDict()
        self._by_path: dict[str, set[Hashable]] = {}
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
        if e is not None and e[1] > monotonic():
            return e[0]
        return None

    def get_stale(self, key: Hashable) -> str | None:
        """An expired value still inside the stale-if-error window, if any."""
        e = self._data.get(key)
        if e is not None and e[1] + self.stale_if_error > monotonic():
            return e[0]
        return None

    def put(self, key: Hashable, path: str, value: str, generation: int | None = None) -> None:
        """Cache ``value``; with ``generation`` (from before the read) only if no
        invalidation of ``path`` happened since."""
        if self.ttl <= 0 or self.max_entries <= 0:
            return
        with self._lock:
            if generation is not None and self._gen.get(path, self._floor) != generation:
                return
            data = self._data
            prev = data.pop(key, None)
            if prev is None and len(data) >= self.max_entries:
                old, e = data.popitem(last=False)
                self._unindex(old, e[2])
            data[key] = (value, monotonic() + self.ttl, path)
            if prev is None or prev[2] != path:
                if prev is not None:
                    self._unindex(key, prev[2])
                self._by_path.setdefault(path, set()).add(key)

    def _unindex(self, key: Hashable, path: str) -> None:
        keys = self._by_path.get(path)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_path[path]

    def invalidate(self, path: str) -> None:
        with self._lock:
            self._tick += 1
            self._gen[path] = self._tick
            if len(self._gen) > 4 * max(self.max_entries, 1024):
                # Bounded memory: forget every stamp, raising the floor past them all,
                # so any read that began before now no longer matches.
                self._gen.clear()
                self._floor = self._tick
            for key in self._by_path.pop(path, ()):
                self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._tick += 1
            self._gen.clear()
            self._floor = self._tick
            self._data.clear()
            self._by_path.clear()

    def __len__(self) -> int:
        return len(self._data)
