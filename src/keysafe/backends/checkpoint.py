"""WAL checkpoints off the write path.

By default SQLite checkpoints inside the commit that takes the WAL past 1,000 pages: that
writer copies every page back into the database file and fsyncs it before its own call
returns. A keysafe write dirties four or five pages (secret row, version row, audit
record, chain head), so one write in about two hundred paid for the copy, and in a large
store the pages land all over the file. Here a thread with its own connection runs
PASSIVE checkpoints a few times a second instead; it never blocks readers or writers,
and a crash mid-checkpoint loses nothing (the WAL stays authoritative until the copy is
complete). The writer keeps a much larger automatic checkpoint as a safety net, should
this thread fall behind.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from contextlib import suppress
from pathlib import Path

#: The writer's own automatic checkpoint, a backstop only (pages; 64 MiB at 4 KiB).
SAFETY_NET_PAGES = 16_384
#: What the WAL file is cut back to when SQLite restarts it (bytes).
WAL_SIZE_LIMIT = 64 * 1024 * 1024


def tune_writer(conn: sqlite3.Connection) -> None:
    """Settings for a connection whose checkpoints a Checkpointer runs."""
    conn.execute(f"PRAGMA wal_autocheckpoint={SAFETY_NET_PAGES}")
    conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")


class Checkpointer:
    """One background thread per store file, started by the first commit it hears of."""

    def __init__(self, path: Path, *, interval: float = 0.2) -> None:
        self.path = path
        self.interval = interval
        self._dirty = False
        self._closed = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def committed(self) -> None:
        """A commit added frames to the WAL (cheap: a flag, and a thread the first time)."""
        self._dirty = True
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            t = threading.Thread(target=_run, args=(weakref.ref(self), self._wake, self.path,
                                                    self.interval),
                                 name="keysafe-checkpoint", daemon=True)
            # Started under the lock: close() (on another thread) never sees a thread
            # it cannot join yet.
            t.start()
            self._thread = t

    def close(self) -> None:
        """Stop the thread (its connection closes); the caller's last connection to close
        checkpoints what is left."""
        with self._lock:
            self._closed = True
            t = self._thread
        self._wake.set()
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)


def _run(ref: weakref.ref[Checkpointer], wake: threading.Event, path: Path,
         interval: float) -> None:
    """The thread holds its Checkpointer weakly: a store dropped without ``close`` ends it."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error:
        return  # the writer's safety net still checkpoints
    try:
        while True:
            wake.wait(interval)
            ck = ref()
            if ck is None or ck._closed:
                return
            dirty, ck._dirty = ck._dirty, False
            del ck
            if dirty:
                with suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
