"""A cache of parsed spreadsheet label files.

openpyxl needs seconds for AIGIQA-20K's three ``.xlsx`` files (12 s of a 20 s load on a busy
2-core machine), and every ``describe`` / ``features`` / ``regress`` call loads the dataset.
The parsed table is kept as JSON (no pickle: nothing in the cache runs code) under
``$AIGCQ_CACHE_DIR`` (default ``$XDG_CACHE_HOME/aigcq/tables`` or ``~/.cache/aigcq/tables``),
named by a hash of the file's bytes and the read options: an edited label file (even one
with the old size and time) misses and is read again. ``AIGCQ_CACHE_DIR=off`` turns it off;
a cache folder that cannot be written is skipped silently (the file is parsed, as before).

The folder holds at most :data:`MAX_ENTRIES` tables and :data:`MAX_BYTES` bytes: each new entry
evicts the least recently used ones beyond that (a hit sets its entry's mtime, so mtime is the
time of last use; the entry just written is always kept). Edited label files would otherwise
leave one stale table each, forever.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import pandas as pd

log = logging.getLogger(__name__)

ENV = "AIGCQ_CACHE_DIR"
#: an entry's name (a 40-hex digest): eviction removes only these, so a cache pointed at a folder of the
#: user's own files (AIGCQ_CACHE_DIR=~/tables) never deletes one of them
ENTRY_NAME = re.compile(r"[0-9a-f]{40}\.json")
FORMAT = 1  # bump when the stored form changes
MAX_ENTRIES = 64  # AIGIQA-20K's three tables with a few read options each fit many times over
MAX_BYTES = 256 * 1024 * 1024  # its train table is ~2 MB as JSON


def cache_dir() -> Path | None:
    """Where parsed tables are kept; None when ``AIGCQ_CACHE_DIR=off``."""
    env = os.environ.get(ENV, "").strip()
    if env.lower() in ("off", "0", "none", "no"):
        return None
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aigcq" / "tables"


def _digest(path: Path, options: dict[str, Any]) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    h.update(json.dumps({"format": FORMAT, "pandas": pd.__version__, **options}, sort_keys=True,
                        default=str).encode())
    return h.hexdigest()


def _to_json(df: pd.DataFrame) -> str:
    return json.dumps({
        "columns": [c if isinstance(c, int) else str(c) for c in df.columns],
        "dtypes": [str(t) for t in df.dtypes],
        "data": [df.iloc[:, i].tolist() for i in range(df.shape[1])],
    })


def _from_json(text: str) -> pd.DataFrame:
    d = json.loads(text)
    cols = d["columns"]
    df = pd.DataFrame({i: pd.Series(v, dtype=object) for i, v in enumerate(d["data"])})
    if not cols:
        return pd.DataFrame()
    df.columns = cols
    for c, t in zip(cols, d["dtypes"]):
        df[c] = df[c].astype(t)
    return df


def cached_table(path: str | os.PathLike, read: Callable[[], pd.DataFrame], **options: Any) -> pd.DataFrame:
    """``read()`` (which parses ``path`` with ``options``), or the table it gave last time for
    the same bytes and options."""
    folder = cache_dir()
    if folder is None:
        return read()
    try:
        entry = folder / f"{_digest(Path(path), options)}.json"
    except OSError:  # unreadable: let the reader say why
        return read()
    try:
        df = _from_json(entry.read_text(encoding="utf-8"))
        _touch(entry)
        return df
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as err:  # damaged entry: parse again, replace it
        log.debug("table cache entry %s unusable (%s); reading %s", entry, err, path)
    df = read()
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(_to_json(df))
        os.replace(tmp, entry)  # whole or absent: a concurrent reader never sees half a file
    except OSError as err:
        log.debug("table cache %s not writable (%s)", folder, err)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        return df
    evict(folder, keep=entry)
    return df


def _touch(entry: Path) -> None:
    """Mark an entry as just used (its mtime orders the eviction)."""
    try:
        os.utime(entry)
    except OSError:  # a read-only cache still serves hits; its entries are never evicted from here
        pass


def evict(folder: Path, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used entries until at most MAX_ENTRIES remain, holding at most MAX_BYTES
    (``keep`` is never removed). Returns what was removed; an entry another process removed first is skipped."""
    entries = []
    for p in folder.glob("*.json"):
        if not ENTRY_NAME.fullmatch(p.name):  # another process's temporary, or a file this cache did not write
            continue
        try:
            st = p.stat()
        except OSError:
            continue
        entries.append((st.st_mtime_ns, st.st_size, p))
    entries.sort(key=lambda e: e[0], reverse=True)  # most recently used first
    removed, count, total = [], 0, 0
    for _, size, p in entries:
        count, total = count + 1, total + size
        if p == keep or (count <= MAX_ENTRIES and total <= MAX_BYTES):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            continue
        count, total = count - 1, total - size
    return removed
