"""Small file-system steps that durable writes share."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename, link or new file in ``path`` survive a power loss (POSIX: the
    directory entry is only durable once the directory itself is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
