"""Drive one extractor over the pending items of a manifest, into a feature store.

    summary = run_extraction(manifest, get_extractor("generator"), "stores/aigiqa20k.h5")

Only items not yet done are computed (failed ones are retried unless
``retry_failed=False``). ``setup`` (weight loading) happens once, and only if
something is pending. Items are prepared in DataLoader workers; a bad item
(``ItemError`` or any other exception in ``prepare``) is recorded as failed with its
reason and the run goes on. If ``compute`` fails for a batch, its items are retried
one by one so that only the bad one is marked failed. Each batch is written to the
store's journal at once (so ``kill -9`` loses at most the batch in flight) and the
store is checkpointed periodically and at the end.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from features_store.fingerprint import MEDIA_KINDS  # the kinds whose features read the media (one definition)

from .base import Extractor, Item, ItemError, WeightsNotFoundError, resolve_precision
from .cpu_runtime import ThreadGovernor

log = logging.getLogger(__name__)

#: consecutive batches in which *every* item failed in compute (and nothing ever worked)
#: after which the run stops: the extractor is broken, not the items
MAX_BROKEN_BATCHES = 3


class ContractError(RuntimeError):
    """The extractor broke its contract (e.g. wrong output shape): a bug, so the run stops."""


class BrokenExtractor(RuntimeError):
    """Every item of the first MAX_BROKEN_BATCHES batches failed in compute and none ever worked."""


class SetupError(RuntimeError):
    """The extractor could not be set up (a package it imports is missing, its weights file is damaged, ...):
    nothing was computed. One line naming the extractor and the cause (the original exception is chained)."""


def _setup(extractor: Extractor, device: str, precision: str) -> None:
    from features_store.console import missing_extra

    try:
        extractor.setup(device, precision)
    except WeightsNotFoundError:
        raise  # its message already names the missing file and how to provide it
    except Exception as err:  # noqa: BLE001 - any failure here stops the whole extractor, not an item
        why = missing_extra(err) or f"{type(err).__name__}: {err}"
        raise SetupError(f"{extractor.name}: cannot be set up ({why})") from err


@dataclass
class RunSummary:
    key: str
    name: str
    done: int = 0  # computed now
    failed: int = 0  # failed now
    skipped: int = 0  # already done (or already failed with retry_failed=False)
    seconds: float = 0.0
    dim: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (item_id, reason) of this run

    def line(self) -> str:
        rate = f", {self.done / self.seconds:.1f} items/s" if self.seconds > 0 and self.done else ""
        return (f"{self.key}: {self.done} computed, {self.failed} failed, {self.skipped} already in the store, "
                f"dim {self.dim}, {self.seconds:.1f} s{rate}")


def error_text(err: BaseException) -> str:
    """ItemError messages are stored verbatim; anything else as 'ExcType: message'."""
    if isinstance(err, ItemError):
        return str(err)
    return f"{type(err).__name__}: {err}"


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """'k/N' (k counted from 0) -> (k, N)."""
    if text is None or isinstance(text, tuple):
        return text
    try:
        k, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard must look like k/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"shard {text!r}: need 0 <= k < N (shards are counted from 0)")
    return k, n


def shard_path(store: str | os.PathLike, shard: tuple[int, int]) -> Path:
    p = Path(store)
    return p.with_name(f"{p.stem}.shard-{shard[0]}-of-{shard[1]}{p.suffix or '.h5'}")


# ---------------------------------------------------------------- plugins
def register_extractor(cls: type[Extractor], dim: str = "?", needs: str = "plugin") -> None:
    """Make an extractor class defined outside this package known by its ``name``.

    For users' own extractors (and tests): ``python -m extractors run --plugins mymodule``
    imports ``mymodule``, which calls this. The registry resolves names to modules inside
    ``extractors``, so the defining module is aliased there."""
    from . import registry

    alias = f"_plugin_{cls.name}"
    sys.modules[f"{__package__}.{alias}"] = sys.modules[cls.__module__]
    registry.REGISTRY[cls.name] = registry.Entry(f"{alias}:{cls.__name__}", cls.kind, dim, needs)


def load_plugins(modules: str | Sequence[str] | None) -> None:
    """Import plugin modules (comma list, or the AIGCQ_PLUGINS environment variable)."""
    if modules is None:
        modules = os.environ.get("AIGCQ_PLUGINS", "")
    if isinstance(modules, str):
        modules = [m for m in modules.split(",") if m.strip()]
    for m in modules:
        importlib.import_module(m.strip())


# ---------------------------------------------------------------- batches
class _Prepare:
    """Dataset over items: (position, ok, prepared-or-reason). Runs in DataLoader workers."""

    def __init__(self, extractor: Extractor, items: list[Item]):
        self.extractor, self.items = extractor, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, pos: int):
        try:
            return pos, True, self.extractor.prepare(self.items[pos])
        except Exception as err:  # any failure is this item's, recorded with its reason
            return pos, False, error_text(err)


class _Collate:
    """Collate the good items of a batch; keep the failures apart. If collating the batch
    fails, hand the prepared items over singly so the main process can isolate the bad one."""

    def __init__(self, extractor: Extractor):
        self.extractor = extractor

    def __call__(self, samples):
        good = [(p, x) for p, ok, x in samples if ok]
        failures = [(p, x) for p, ok, x in samples if not ok]
        positions = [p for p, _ in good]
        if not good:
            return positions, None, failures, None
        try:
            return positions, self.extractor.collate([x for _, x in good]), failures, None
        except Exception:
            return positions, None, failures, [x for _, x in good]


def _batches(extractor: Extractor, items: list[Item], batch_size: int, workers: int, stall_s: float | None = None):
    ds, collate = _Prepare(extractor, items), _Collate(extractor)
    if workers <= 0:  # in-process; needs no torch (meta/text extractors stay light)
        for a in range(0, len(items), batch_size):
            yield collate([ds[p] for p in range(a, min(a + batch_size, len(items)))])
        return
    from torch.utils.data import DataLoader

    from . import loader as guard

    stall_s = guard.STALL_S if stall_s is None else stall_s
    if guard.shm_is_small():
        log.warning("%s is small; DataLoader workers hand batches over through it. If the run stops for it, "
                    "use WORKERS=0 or give the container more shared memory (docker --shm-size=2g)", guard.shm_text())
    # short polls: a stalled or dead worker is noticed (see extractors/loader.py), a slow one is waited for
    poll = max(0.5, min(10.0, stall_s / 4)) if stall_s > 0 else 0
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                        persistent_workers=False, prefetch_factor=2, timeout=poll)
    yield from guard.guarded(loader, workers, stall_s)


def worker_died(err: BaseException) -> bool:
    """torch's own error for a dead DataLoader worker (raised at any point of the main process)."""
    return isinstance(err, RuntimeError) and str(err).startswith("DataLoader worker")


def worker_death_in(err: BaseException) -> BaseException | None:
    """torch's dead-worker error, as ``err`` or as an error ``err`` interrupted: torch's SIGCHLD handler raises
    wherever the main process is, e.g. inside a journal write whose clean-up then fails with its own error
    (seen: zipfile's "Can't close the ZIP file while there is an open writing handle")."""
    seen = set()
    while err is not None and id(err) not in seen:
        if worker_died(err):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _check_rows(rows: Any, n: int, ex: Extractor) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[0] != n:
        raise ContractError(f"extractor {ex.name!r}: compute returned shape {rows.shape} for {n} items; "
                           "expected [n_items, D] (a bug in the extractor)")
    return rows


# ---------------------------------------------------------------- the run
def run_extraction(
    manifest,
    extractor: Extractor,
    store,
    device: str = "cpu",
    precision: str = "auto",
    batch_size: int = 32,
    workers: int | None = None,
    shard: str | tuple[int, int] | None = None,
    split: str | None = None,
    retry_failed: bool = True,
    progress: bool = True,
    checkpoint_every_s: float = 60.0,
    checkpoint_every_batches: int | None = None,
    learn_from=None,
    on_changed: str = "recompute",
    allow_batch_change: bool = False,
    threads: int | None = None,
    worker_stall_s: float | None = None,
    allow_media_mismatch: bool = False,
    media_checked: bool = False,
    stored_names: list[str] | None = None,
    stop_if_broken: bool = True,
) -> RunSummary:
    """Compute ``extractor`` for the pending items of ``manifest`` (a Manifest or a list of
    Items) into ``store`` (a path or an open FeatureStore in mode "a").

    ``learn_from``: the Manifest an extractor learns from (``fit_manifest``, e.g. the generator
    vocabulary); default ``manifest``. A worker of the Ray engine computes a slice of a dataset
    but must learn what a run over the whole dataset would.

    ``on_changed``: items whose media file changed since their features were computed are
    recomputed ("recompute", with a warning naming them) or the run is refused ("refuse");
    see features_store.fingerprint.

    ``stored_names``: the feature names the caller's store holds for the extractor's key, when ``store``
    is not that store (a Ray worker's scratch store): what the extractor learnt then (``fit_manifest``,
    e.g. the generator vocabulary, hence the block's columns) is kept, as in a single run.

    ``stop_if_broken``: stop with :class:`BrokenExtractor` when every item of the first
    MAX_BROKEN_BATCHES batches failed in compute (False: items of a run that is known to have computed
    rows elsewhere, a Ray shard, fail one by one instead).

    ``media_checked``: the caller already compared the media with their fingerprints (the Ray driver
    does, on the whole store, before handing out shards whose new stores hold no fingerprints yet:
    checking there would hash every file of the shard again).

    ``batch_size``: a key resumed with rows already computed keeps the batch size it records
    (a note says so) unless ``allow_batch_change``; see :func:`settle_batch_size`.

    ``threads``: torch CPU threads for the computed items (None: chosen from the CPUs this
    process may use and the load, re-checked during the run; see :mod:`.cpu_runtime`).

    ``worker_stall_s``: seconds without a batch while the DataLoader workers use no CPU after
    which the run stops with :class:`extractors.loader.WorkerError` (default
    ``extractors.loader.STALL_S``; 0 waits forever). ``allow_media_mismatch``: read a video's
    frame 0 on the image track, an image as a 1-frame video (each is an item error otherwise)."""
    from features_store.manifest import Manifest
    from features_store.store import FeatureStore

    t0 = time.perf_counter()
    if not isinstance(manifest, Manifest):
        manifest = Manifest.from_items(list(manifest))
    shard = parse_shard(shard)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if extractor.kind not in MEDIA_KINDS:
        workers = 0  # label-only: nothing to decode, worker processes would only cost start-up time
    elif workers is None:
        workers = min(4, os.cpu_count() or 1)
    own = not isinstance(store, FeatureStore)
    st = FeatureStore(store, mode="a") if own else store
    ok = False
    try:
        st.set_manifest(manifest)
        st.set_shard(shard)
        resolved = resolve_precision(precision, device)
        # identity (hence key) depends on the resolved precision: settle it before key().
        # What an extractor learns from the manifest (e.g. the generator vocabulary) is not
        # in the key; a store that already holds the key keeps what it learned then.
        extractor.device, extractor.precision = device, resolved
        extractor.allow_media_mismatch = bool(allow_media_mismatch)
        if hasattr(extractor, "fit_manifest"):
            k = extractor.key()
            stored = stored_names if stored_names is not None else \
                st.feature_names(k) if k in st.keys() and st.config(k)["dim"] else None
            extractor.fit_manifest((manifest if learn_from is None else learn_from).df, stored)
        key = _declare(st, extractor)
        summary = RunSummary(key, extractor.name)

        df = manifest.df
        wanted_mask = np.ones(len(df), bool) if split is None else (df["split"] == split).to_numpy()
        if split is not None and not wanted_mask.any():
            raise ValueError(f"no items in split {split!r}; splits: {sorted(df['split'].unique())}")
        local = np.flatnonzero(wanted_mask)
        rows = st.index_of(df["item_id"].to_numpy()[local])
        if shard is not None:
            keep = rows % shard[1] == shard[0]
            local, rows = local[keep], rows[keep]
        if not media_checked:
            _check_media(st, manifest, local, rows, extractor, on_changed)
        todo = np.isin(rows, st.pending(key, retry_failed=retry_failed))
        summary.skipped = int((~todo).sum())
        local, rows = local[todo], rows[todo]
        if len(rows):
            _setup(extractor, device, resolved)
            new_key = extractor.key()
            if new_key != key:  # setup refined the identity (e.g. resolved a weights revision)
                log.warning("%s: identity changed during setup; storing under %s", key, new_key)
                key = _declare(st, extractor)
                summary.key = key
                todo = np.isin(rows, st.pending(key, retry_failed=retry_failed))
                local, rows = local[todo], rows[todo]
            batch_size = settle_batch_size(st, key, batch_size, allow_batch_change)
            items = [
                Item(index=int(r), item_id=df["item_id"].iat[i], path=manifest.abspath(df["path"].iat[i]),
                     prompt=df["prompt"].iat[i], generator=df["generator"].iat[i])
                for i, r in zip(local, rows)
            ]
            t_loop = time.perf_counter()
            _loop(st, key, extractor, items, summary, batch_size, workers, progress,
                  checkpoint_every_s, checkpoint_every_batches, ThreadGovernor(threads), worker_stall_s, stop_if_broken)
            if summary.done:  # decode + forward wall time, for submission readmes
                st.add_timing(key, time.perf_counter() - t_loop, summary.done, device)
        summary.dim = st.config(key)["dim"]
        st.checkpoint()
        ok = True
        summary.seconds = time.perf_counter() - t0
        return summary
    finally:
        if own:
            st.close(checkpoint=ok)


def _check_media(st, manifest, local, rows, extractor: Extractor, on_changed: str) -> None:
    """Media changed since their features were computed: recompute (or refuse). One stat per item."""
    if extractor.kind not in MEDIA_KINDS:
        return  # meta/text extractors never read the media
    from features_store.fingerprint import check_media

    rel = manifest.df["path"].to_numpy()[local]
    check_media(st, [manifest.abspath(p) for p in rel], rows, on_changed=on_changed)


def settle_batch_size(st, key: str, given: int, allow_change: bool = False) -> int:
    """The batch size to compute ``key``'s pending rows with (:func:`resume_batch_size`), recorded in the store.

    Batch size changes an extractor's numbers slightly (~1e-5: other kernel blockings) but is not
    part of the key. Making rows batch-independent would mean batches of one (or padding, which
    still leaves a row's position in the batch mattering), so the batch size is recorded per key
    instead: a resume with another one keeps the recorded size (with a note), and the store then
    equals an undisturbed run. ``allow_change`` computes with ``given`` and records both sizes."""
    use = resume_batch_size(st, key, given, allow_change)
    if use != given:
        return use
    recorded = st.batch_sizes(key)
    sizes = {*recorded, given} if st.counts(key)["done"] else {given}
    if set(recorded) != sizes:
        st.set_batch_sizes(key, sizes)
        st.checkpoint()  # recorded before the first row with this size (a kill keeps the record)
    return given


def resume_batch_size(st, key: str, given: int, allow_change: bool = False) -> int:
    """``given``, or, when ``key`` has rows computed with other batch sizes and not ``allow_change``,
    the recorded one (the largest of several), with a note saying so. Reads only: the Ray engine plans
    its shards with it from a store opened read-only."""
    recorded = st.batch_sizes(key)
    done = st.counts(key)["done"]
    if done and recorded and given not in recorded and not allow_change:
        use = recorded[-1] if len(recorded) == 1 else max(recorded)
        print(f"note: {key}: {done} rows were computed with batch size {','.join(map(str, recorded))}; resuming "
              f"with {use}, not {given} (batch size changes the numbers ~1e-5). --allow-batch-change computes with "
              f"{given} and records both", file=sys.stderr)
        return use
    return given


def _declare(st, extractor: Extractor) -> str:
    key = extractor.key()
    dim = extractor.output_dim()
    st.ensure_config(key, extractor.identity(), feature_names=extractor.feature_names(dim) if dim else None,
                     name=extractor.name, kind=extractor.kind)
    return key


def _loop(st, key, ex, items, summary, batch_size, workers, progress, every_s, every_batches,
          governor: ThreadGovernor | None = None, stall_s: float | None = None, stop_if_broken: bool = True) -> None:
    from tqdm.auto import tqdm

    from .loader import WorkerError

    bar = tqdm(total=len(items), desc=key, unit="item", disable=not progress, dynamic_ncols=True)
    last_ckpt, batches_since, broken = time.monotonic(), 0, 0
    names_set = new_names = False
    id_of = {it.index: it.item_id for it in items}
    try:
        for positions, batch, failures, singles in _batches(ex, items, batch_size, workers, stall_s):
            fail_idx = [items[p].index for p, _ in failures]
            fail_msg = [m for _, m in failures]
            good = [items[p] for p in positions]
            done_idx, done_rows = [], []
            batch_error = None
            if governor is not None:
                governor.tick()  # torch threads: set (or re-set for the load) before computing
            if good and batch is not None:
                try:
                    rows = _check_rows(ex.compute(batch, good), len(good), ex)
                    done_idx, done_rows = [it.index for it in good], [rows]
                except ContractError:
                    raise
                except Exception as err:
                    if worker_died(err):
                        raise
                    batch_error = err
            if good and (batch is None or batch_error is not None):
                # isolate the bad item(s): one at a time
                for j, it in enumerate(good):
                    try:
                        x = singles[j] if singles is not None else ex.prepare(it)
                        rows = _check_rows(ex.compute(ex.collate([x]), [it]), 1, ex)
                        done_idx.append(it.index)
                        done_rows.append(rows)
                    except ContractError:
                        raise
                    except Exception as err:
                        if worker_died(err):
                            raise
                        fail_idx.append(it.index)
                        fail_msg.append(error_text(err))
            values = np.concatenate(done_rows) if done_rows else None
            if values is not None:
                finite = np.isfinite(values).all(axis=1)
                if not finite.all():  # NaN marks "not done" in the store: such rows are failures
                    for i in np.asarray(done_idx)[~finite]:
                        fail_idx.append(int(i))
                        fail_msg.append("ValueError: non-finite values (NaN/inf) in the extractor's output")
                    done_idx = list(np.asarray(done_idx)[finite])
                    values = values[finite]
                if not names_set and len(done_idx):
                    names = ex.feature_names(values.shape[1])
                    new_names = st.feature_names(key) != names  # [] before the first row; placeholders after a kill
                    st.set_feature_names(key, names)
                    names_set = True
            st.record(key, done_idx, values, fail_idx, fail_msg)
            if new_names:  # the file takes names once it knows the width: now, not at the next checkpoint, so that
                st.checkpoint()  # a run killed in between does not leave rows named generator_0 ... (once per key)
                new_names = False
            summary.done += len(done_idx)
            summary.failed += len(fail_idx)
            if fail_idx:
                summary.failures += [(id_of[i], m) for i, m in zip(fail_idx, fail_msg)]
            # an extractor that fails on every item from the start is broken: stop, say why
            if stop_if_broken and good and not done_idx and summary.done == 0 and batch_error is not None:
                broken += 1
                if broken >= MAX_BROKEN_BATCHES:
                    raise BrokenExtractor(f"extractor {ex.name!r} failed on every item of the first {broken} batches; "
                                       f"last error: {fail_msg[-1]}")
            bar.update(len(positions) + len(failures))
            if summary.failed:
                bar.set_postfix(failed=summary.failed, refresh=False)
            batches_since += 1
            # a checkpoint copies the file: never spend more than ~10% of the time on them
            wait_s = max(every_s, 10 * st.last_checkpoint_s)
            if time.monotonic() - last_ckpt >= wait_s or (every_batches and batches_since >= every_batches):
                st.checkpoint()
                last_ckpt, batches_since = time.monotonic(), 0
    except Exception as err:  # every batch recorded so far is in the journal already
        if not isinstance(err, WorkerError):
            died = worker_death_in(err)
            if died is None:
                raise
            from .loader import died_text

            err = died_text(died, workers)  # torch's SIGCHLD handler raised it wherever the main process was
        raise WorkerError(f"{key}: {err} The {summary.done} item(s) computed in this run are kept in the store; "
                          "a rerun continues from them.") from None
    finally:
        bar.close()
