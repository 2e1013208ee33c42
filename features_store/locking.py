"""One writer at a time: an exclusive ``flock`` on ``LOCK`` in the store's journal folder.

Readers never lock (they read the file and the journal; a writer only ever replaces the file
atomically). The lock is taken at the resolved path, so the same store reached through a symlink
shares it.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import StoreError, write_error


def acquire(journal_dir: Path, shown: Path, store=None) -> int:
    """The lock's file descriptor; a StoreError naming ``shown`` when another process holds it."""
    try:
        journal_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(journal_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise write_error(err, journal_dir, store) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(f"{shown} is being written by another process; use --shard to run "
                         "extractions in parallel, each into its own file") from None
    return fd


def release(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
