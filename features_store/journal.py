"""Per-batch journal files beside a store: ``<store>.h5.journal/<seq>.npz``.

Each file is written to a temporary name, fsynced and renamed, so a reader (or a
process restarted after ``kill -9``) sees either the whole batch or nothing. Files
are replayed in sequence order; replaying one twice is harmless (same rows, same
values), which is what makes a crash between "new .h5 in place" and "journal
files deleted" safe.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_NAME = re.compile(r"^(\d{10})\.npz$")
_FIELDS = ("key", "done_idx", "done_ids", "values", "fail_idx", "fail_ids", "messages")


class BadEntry(ValueError):
    """A journal file whose checksum is missing or does not match its content."""


def checksum(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over every field's dtype, shape and bytes, in a fixed order."""
    h = hashlib.sha256()
    for name in _FIELDS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class Entry:
    seq: int
    path: Path
    key: str
    done_idx: np.ndarray  # int64 [b]
    done_ids: np.ndarray  # str [b]
    values: np.ndarray  # [b, D] in the store's dtype
    fail_idx: np.ndarray  # int64 [f]
    fail_ids: np.ndarray  # str [f]
    messages: np.ndarray  # str [f]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def files(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    out = []
    for name in os.listdir(folder):
        m = _NAME.match(name)
        if m:
            out.append((int(m.group(1)), folder / name))
    return sorted(out)


def write(folder: Path, seq: int, key: str, done_idx, done_ids, values, fail_idx, fail_ids, messages,
          fsync: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{seq:010d}.npz"
    tmp = folder / f".{seq:010d}.{os.getpid()}.tmp"
    arrays = {
        "key": np.array(key),
        "done_idx": np.asarray(done_idx, dtype=np.int64),
        "done_ids": np.asarray(done_ids, dtype=str),
        "values": np.asarray(values),
        "fail_idx": np.asarray(fail_idx, dtype=np.int64),
        "fail_ids": np.asarray(fail_ids, dtype=str),
        "messages": np.asarray(messages, dtype=str),
    }
    with open(tmp, "wb") as fh:
        np.savez(fh, checksum=np.array(checksum(arrays)), **arrays)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


def read(seq: int, path: Path) -> Entry:
    """The entry in ``path``; :class:`BadEntry` if its checksum is missing or wrong."""
    with np.load(path, allow_pickle=False) as z:
        if "checksum" not in z.files:
            raise BadEntry("no checksum (damaged, or written by an older version)")
        missing = [f for f in _FIELDS if f not in z.files]
        if missing:
            raise BadEntry(f"fields {missing} missing")
        arrays = {f: z[f] for f in _FIELDS}
        if str(z["checksum"]) != checksum(arrays):
            raise BadEntry("checksum does not match the content (the file was changed after it was written)")
    return Entry(seq, path, str(arrays["key"]), *(arrays[f] for f in _FIELDS[1:]))


def set_aside(path: Path) -> Path:
    """Rename a bad entry out of the journal (kept for inspection, never replayed)."""
    dest = path.with_name(path.name + ".corrupt")
    k = 1
    while dest.exists():
        dest, k = path.with_name(f"{path.name}.corrupt-{k}"), k + 1
    os.replace(path, dest)
    return dest


def remove_stale_temporaries(folder: Path) -> None:
    """Half-written files of a killed writer (never renamed, so never part of the journal)."""
    if folder.is_dir():
        for name in os.listdir(folder):
            if name.endswith(".tmp"):
                try:
                    os.unlink(folder / name)
                except FileNotFoundError:
                    pass
