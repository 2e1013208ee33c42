"""How a feature store refuses: one error type, and a one-line message for a failed write.

The lowest module of the store (standard library only): every other store module raises these.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path


class StoreError(RuntimeError):
    """A store cannot be used as asked (the message says why and what to do)."""


class IdentityMismatch(StoreError):
    """A key exists with a different identity (refused: its numbers would be mixed)."""


def first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def write_error(err: BaseException, target: Path, store=None) -> StoreError:
    """A one-line StoreError for a failed write: disk full, read-only folder, or the OS's reason.
    HDF5 reports a full disk with errors such as "Can't decrement id ref count", without errno:
    free space is checked to name the cause."""
    import errno as E

    folder = target if target.is_dir() else target.parent
    code = getattr(err, "errno", None)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    kept = (f"; nothing computed is lost: {store.path} and its journal keep every finished row, rerun to continue"
            if store is not None else "")
    if code in (E.ENOSPC, E.EDQUOT) or (code is None and free is not None and free < 1 << 20):
        why = f"disk full ({free // 1024 if free is not None else '?'} KiB free on the file system of {folder})"
        todo = "free space there or pass --store on another disk"
    elif code in (E.EACCES, E.EPERM, E.EROFS) or not os.access(folder, os.W_OK):
        why = f"{folder} is not writable ({'read-only file system' if code == E.EROFS else 'permission denied'})"
        todo = "make it writable, or pass --store in a writable folder (copy the store there to keep its rows)"
    else:
        why, todo = first_line(err), "check the disk and the folder's permissions"
    return StoreError(f"cannot write {target}: {why}; {todo}{kept}")
