"""Small file-system steps that durable writes share."""

from __future__ import annotations

import os
from pathlib import Path


def file_stamp(path: Path) -> tuple[int, int, int]:
    """What changes when a file is rewritten, in place or by a rename over it (as the
    kubelet swaps projected volumes): modification time, inode and size. OSError if it
    cannot be read."""
    st = path.stat()
    return (st.st_mtime_ns, st.st_ino, st.st_size)


def fsync_dir(path: Path) -> None:
    """Make a rename, link or new file in ``path`` survive a power loss (POSIX: the
    directory entry is only durable once the directory itself is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
