"""The feature cache of ``aigcq score``: read without locking, written when it can be, bounded in size.

One feature store per track (``features-<track>.h5``), its rows keyed by content (a file's sha256,
plus the prompt's hash for features that read the prompt: :meth:`Predictor._cache_id`).

* Reading takes no lock and writes nothing to the store: a set that is fully cached is scored while
  another ``aigcq score`` writes the cache, and from a read-only cache.
* Computed rows are kept under the store's writer lock, waiting (up to :data:`LOCK_WAIT_S`) for
  another ``aigcq score`` to finish its write; a cache that cannot be written (read-only file
  system, no permission) keeps nothing and says so once, and the scores are still given.
* Size bound (``--cache-max``, ``$AIGCQ_CACHE_MAX``, default :data:`DEFAULT_MAX`): every use of a
  row is appended to ``<cache>.used`` (time and row id); when a write leaves the store larger than
  the bound, the least recently used rows are dropped until it is at most 80% of it, by writing the
  kept rows to a new file (``.<cache>.evict-<host>-<pid>.h5`` beside it) that replaces the old one
  atomically; one left by a killed process is removed by the next run.
* Scratch folders (the extraction's store before its rows are copied in) live in
  ``<cache folder>/.aigcq-scratch/``, named by host and process id; one left by a killed process is
  removed by the next run. Only when that folder cannot be written does the scratch go to TMPDIR
  (same names, same clean-up).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from regressors.rundir import pid_alive

MAX_ENV = "AIGCQ_CACHE_MAX"
DEFAULT_MAX = 4 << 30  # 4 GiB
LOCK_WAIT_S = 600.0
KEEP_FRACTION = 0.8  # an eviction leaves the cache at most this share of the bound
SCRATCH_DIR = ".aigcq-scratch"
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class CacheError(RuntimeError):
    """The cache cannot be used at all (one line naming the path and the reason)."""


def parse_size(text: str | int | None) -> int | None:
    """"4G", "500M", "123456", "none" (no bound) -> bytes (None: unbounded)."""
    if text is None:
        return DEFAULT_MAX
    if isinstance(text, int):
        return text
    s = str(text).strip().lower()
    if s in ("none", "inf", "unlimited"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?", s)
    if not m:
        raise ValueError(f"--cache-max {text!r}: give a size such as 500M, 4G or none")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def sweep_scratch(root: Path, prefix: str = "") -> None:
    """Remove scratch folders under ``root`` left by dead processes of this host."""
    _sweep(root, re.compile(re.escape(prefix) + re.escape(_host()) + r"-(\d+)-"))


def _sweep(root: Path, pattern: re.Pattern) -> None:
    """Remove the files and folders under ``root`` whose name ``pattern`` matches, its group 1 the process id of a
    dead process of this host (a run killed before it could clean up)."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        m = pattern.match(name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            p = root / name
            with contextlib.suppress(OSError):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink()


class ScoreCache:
    """See the module doc. ``path``: the store file; ``max_bytes``: the bound (None: unbounded)."""

    def __init__(self, path: str | os.PathLike, max_bytes: int | None = DEFAULT_MAX):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.notes: list[str] = []  # once per run: the cache could not keep rows, evictions
        self._unwritable: str | None = None

    # ------------------------------------------------------------ the folder
    def prepare(self) -> None:
        """Create the cache's folder; CacheError (one line) when it cannot be created."""
        folder = self.path.parent
        if self.path.is_dir():
            raise CacheError(f"--cache {self.path}: is a folder, not a feature store file; give a file name such as "
                             f"{self.path / 'features.h5'}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CacheError(f"--cache {self.path}: cannot create the folder {folder} "
                             f"({err.strerror or type(err).__name__}); give --cache a file in a writable folder") from None
        from features_store.layout import refuse_if_not_a_store
        from features_store.store import StoreError

        try:  # a user's own file (HDF5 or not) given as --cache: refused before anything is read or written
            refuse_if_not_a_store(Path(os.path.realpath(self.path)), self.path)
        except StoreError as err:
            raise CacheError(f"--cache {err}") from None
        if not os.access(folder, os.W_OK):
            self._unwritable = "read-only file system or no permission"
        else:  # the new copy (and its journal) of an eviction a kill interrupted: up to the bound's size
            real = Path(os.path.realpath(self.path))
            _sweep(real.parent, re.compile(re.escape(self._evict_prefix(real)) + r"(\d+)\.h5(\.journal)?$"))

    @staticmethod
    def _evict_prefix(real: Path) -> str:
        return f".{real.name}.evict-{_host()}-"

    @property
    def writable(self) -> bool:
        return self._unwritable is None

    def _cannot_keep(self, why: str | None) -> None:
        if self._unwritable is None:
            self._unwritable = why or "not writable"
        self.notes.append(f"the cache {self.path} cannot be written ({why}): features computed now are not kept "
                          "(--cache FILE in a writable folder keeps them)")

    @contextlib.contextmanager
    def scratch(self):
        """A scratch folder for one extraction, removed afterwards (and by the next run after a kill)."""
        root = self.path.parent / SCRATCH_DIR
        prefix = ""
        try:
            root.mkdir(exist_ok=True)
            if not os.access(root, os.W_OK):
                raise PermissionError(root)
        except OSError:
            root, prefix = Path(tempfile.gettempdir()), "aigcq-score-"
        sweep_scratch(root, prefix)
        folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{_host()}-{os.getpid()}-", dir=root))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            if not prefix:  # the cache's own scratch folder: removed once no run uses it
                with contextlib.suppress(OSError):
                    root.rmdir()

    # ------------------------------------------------------------ reading
    def read(self, key: str, ids: list[str]) -> tuple[np.ndarray | None, np.ndarray]:
        """(values [len(ids), dim] with NaN rows where not cached, or None when the key is not cached; mask of
        the ids cached). No lock; nothing written."""
        from features_store import FeatureStore
        from features_store.store import DONE

        done = np.zeros(len(ids), bool)
        if not self.path.is_file():
            return None, done
        with FeatureStore(self.path, mode="r") as st:
            if key not in st.keys() or not len(st):
                return None, done
            known = {iid: i for i, iid in enumerate(st.item_ids())}
            pos = [j for j, cid in enumerate(ids) if cid in known]
            if not pos:
                return None, done
            rows = np.asarray([known[ids[j]] for j in pos], np.int64)
            status = st.status(key)[rows]
            values = np.full((len(ids), st.config(key)["dim"]), np.nan, np.float32)
            ok = status == DONE
            got = st.read(key, rows[ok])
            values[np.asarray(pos)[ok]] = got
            done[np.asarray(pos)[ok]] = True
        return values, done

    def touch(self, ids) -> None:
        """Record a use of these rows (the LRU order); best effort, never locks or fails the run."""
        if not self.writable or not len(ids):
            return
        stamp = f"{time.time():.3f}"
        text = "".join(f"{stamp} {cid}\n" for cid in ids).encode()
        try:
            fd = os.open(self._used_path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, text)  # one append: concurrent runs do not interleave lines
            finally:
                os.close(fd)
        except OSError:
            pass

    def _used_path(self) -> Path:
        return Path(f"{os.path.realpath(self.path)}.used")

    # ------------------------------------------------------------ writing
    def _open_for_write(self):
        from features_store import FeatureStore
        from features_store.store import StoreError

        deadline = time.monotonic() + LOCK_WAIT_S
        waited = False
        while True:
            try:
                return FeatureStore(self.path, mode="a")
            except StoreError as err:
                if "another process" not in str(err):  # not writable: said by the caller
                    raise
                if time.monotonic() > deadline:
                    raise StoreError(f"the cache {self.path} stayed locked by another process for "
                                     f"{LOCK_WAIT_S:.0f} s") from None
                if not waited:
                    self.notes.append(f"waited for another process writing the cache {self.path}")
                    waited = True
                time.sleep(0.2)

    def keep(self, key: str, ex, ids: list[str], values: np.ndarray) -> None:
        """Add computed rows (ids not yet in the cache are appended); then bound the size."""
        import pandas as pd

        from features_store import Manifest
        from features_store.store import StoreError

        if not len(ids):
            return
        if not self.writable:
            if not any("cannot be written" in n for n in self.notes):
                self._cannot_keep(self._unwritable)
            return
        try:
            with self._open_for_write() as st:
                known = set(st.item_ids()) if len(st) else set()
                new = [cid for cid in dict.fromkeys(ids) if cid not in known]
                if new or not len(st):
                    rows = pd.DataFrame({"item_id": new, "path": "", "prompt": "", "generator": None,
                                         "split": "cache"})
                    st.set_manifest(Manifest(rows, "/", "aigcq-score-cache", adapter="score"))
                if key not in st.keys():
                    dim = values.shape[1]
                    st.ensure_config(key, ex.identity(), feature_names=ex.feature_names(dim), name=ex.name,
                                     kind=ex.kind)
                st.record(key, st.index_of(ids), values)
                st.checkpoint()
                self._bound(st)
                self._compact_used(len(st))
        except (StoreError, OSError) as err:
            self._cannot_keep(str(err).split(";")[0])

    def size(self) -> int:
        """Bytes on disk: the store file and its journal."""
        real = Path(os.path.realpath(self.path))
        total = real.stat().st_size if real.is_file() else 0
        journal = Path(f"{real}.journal")
        if journal.is_dir():
            total += sum(p.stat().st_size for p in journal.iterdir() if p.is_file())
        return total

    def _last_used(self) -> dict[str, float]:
        out: dict[str, float] = {}
        try:
            with open(self._used_path(), "rb") as f:
                for line in f:
                    t, _, cid = line.decode(errors="replace").rstrip("\n").partition(" ")
                    try:
                        out[cid] = max(out.get(cid, 0.0), float(t))
                    except ValueError:
                        continue
        except OSError:
            pass
        return out

    def _bound(self, st) -> None:
        """Under the writer lock: drop the least recently used rows when the cache is over its bound."""
        if self.max_bytes is None:
            return
        size = self.size()
        if size <= self.max_bytes or len(st) < 2:
            return
        used = self._last_used()
        ids = st.item_ids()
        last = np.array([used.get(str(i), 0.0) for i in ids])
        by_recency = np.argsort(-last, kind="stable")
        # the average row (file overhead included) over-estimates a row's share, so this keeps too few rather
        # than too many; a file still over the bound (a small bound, mostly overhead) is rewritten with fewer
        n_keep = min(len(ids) - 1, int(len(ids) * KEEP_FRACTION * self.max_bytes / size))
        while True:
            keep = np.sort(by_recency[:n_keep])
            self._rewrite_with(st, keep)
            now = self.size()
            if now <= self.max_bytes or n_keep == 0:
                break
            n_keep = max(0, min(n_keep - 1, int(n_keep * self.max_bytes / now)))
        self._write_used({str(ids[i]): last[i] for i in keep if last[i] > 0})
        self.notes.append(f"the cache {self.path} reached {size / (1 << 20):.0f} MiB (bound "
                          f"{self.max_bytes / (1 << 20):.0f} MiB): kept the {len(keep)} most recently used of "
                          f"{len(ids)} items")

    def _rewrite_with(self, st, keep: np.ndarray) -> None:
        """Replace the store file with one holding only rows ``keep`` (atomically; the lock is held)."""
        from features_store import FeatureStore, Manifest
        from features_store.store import DONE

        real = Path(os.path.realpath(self.path))
        tmp = real.with_name(f"{self._evict_prefix(real)}{os.getpid()}.h5")
        for p in (tmp, Path(f"{tmp}.journal")):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        df = st.columns(["item_id", "path", "prompt", "generator", "split"]).iloc[keep].reset_index(drop=True)
        try:
            with FeatureStore(tmp, mode="a") as new:
                new.set_manifest(Manifest(df, "/", "aigcq-score-cache", adapter="score"))
                for key in st.keys():
                    c = st.config(key)
                    new.ensure_config(key, c["identity"], feature_names=st.feature_names(key), name=c["name"],
                                      kind=c["kind"])
                    done = keep[st.status(key)[keep] == DONE]
                    if len(done):
                        new.record(key, new.index_of(st.item_ids()[done]), st.read(key, done, dtype=None))
            os.replace(tmp, real)
        finally:
            tmp.unlink(missing_ok=True)
            shutil.rmtree(f"{tmp}.journal", ignore_errors=True)

    def _compact_used(self, n_items: int) -> None:
        """Under the writer lock: rewrite ``<cache>.used`` with one line per row once it has grown well past
        that (every run appends the rows it used)."""
        try:
            grown = self._used_path().stat().st_size > max(8 << 20, 4 * 100 * n_items)
        except OSError:
            return
        if grown:
            self._write_used(self._last_used())

    def _write_used(self, last: dict[str, float]) -> None:
        path = self._used_path()
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text("".join(f"{t:.3f} {cid}\n" for cid, t in last.items()))
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
