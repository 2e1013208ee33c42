"""Score new images and videos with a trained model bundle.

    from aigcq import Predictor
    p = Predictor.load("runs/demo/regress/model")
    df = p.score(["a.png", "b.png"], prompts=["a cat", "a dog"])
    # path, score, score_lo, score_hi (90% interval), in_domain, domain_score, status, error
    print(p.card)

Only the features the model reads are computed (the bundle's ``kept_blocks``: a block that nested
block selection dropped is never built; its columns are zeros, which no head reads), each
rebuilt from the spec the bundle records (and checked to give the same store key), and cached
in a feature store keyed by each file's content hash (plus the prompt, for features that read
it): scoring the same files again computes nothing; an edited file has another hash and is
computed anew (a file rewritten while it is scored fails rather than cache its new content under
its old hash). The cache is read without a lock, written when it can be, and bounded in size
(aigcq/score_cache.py). The ``generator`` block is built from the model's own vocabulary (a
generator it never saw, or none, sets the unknown flag). ``score_lo``/``score_hi`` and
``in_domain``/``domain_score`` come from the bundle (regressors/trust.py; docs/trust.md).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from regressors.bundle_integrity import sha256_file  # the content hash the score cache is keyed by

from .inputs import Input, media_kind

COLUMNS = ("path", "score", "score_lo", "score_hi", "in_domain", "domain_score", "status", "error")
CACHE_ENV = "AIGCQ_CACHE"


def default_cache(track: str) -> Path:
    """``$AIGCQ_CACHE`` (a folder), else ``$XDG_CACHE_HOME/aigcq`` or ``~/.cache/aigcq``; one store per track."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "aigcq")
    return Path(root) / f"features-{track}.h5"


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def _storable(path: str, scratch: Path, j: int) -> str:
    """``path``, or a link to it in ``scratch`` when its name is not valid UTF-8 (a store records paths as UTF-8:
    the scratch store would refuse the name, and the run with it)."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        link = Path(scratch) / f"input-{j}{Path(path).suffix.encode('ascii', 'replace').decode()}"
        link.symlink_to(path)
        return str(link)


def _identity_diff(a: Any, b: Any, where: str = "") -> list[str]:
    """Paths at which two JSON-like identities differ (``libraries.torch: 2.3 -> 2.4``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _identity_diff(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
        return out
    return [] if a == b else [f"{where}: {a!r} -> {b!r}"]


class Predictor:
    """A loaded model bundle that scores media files (see the module doc)."""

    def __init__(self, model, info: dict, path: str | os.PathLike, *, cache: str | os.PathLike | None = None,
                 cache_max: int | str | None = None, device: str = "cpu", precision: str | None = None,
                 batch_size: int = 16, workers: int | None = None, threads: int | None = None, progress: bool = True,
                 level: float | None = None, weights: dict[str, str] | None = None, trust_code: bool = False):
        from regressors.bundle import kept_blocks
        from regressors.conformal import parse_level

        from .score_cache import MAX_ENV, ScoreCache, parse_size

        self.model, self.info, self.path = model, info, Path(path)
        self.kept: list[str] = kept_blocks(info)  # the blocks the model reads; the others are never computed
        self.track: str = info["track"]
        self.target: str = info["target"]["name"]
        self.cache = Path(cache) if cache else default_cache(self.track)
        # the bound of the cache's size (None: unbounded); CacheError when its folder cannot be created
        self._cache = ScoreCache(self.cache, parse_size(cache_max if cache_max is not None
                                                        else os.environ.get(MAX_ENV)))
        # prediction interval level, read as --level reads it (None: the bundle's, 90%)
        self.level = parse_level(level, "level") if level is not None else None
        # whether the model reads a prompt embedding: items without a prompt then get status no_prompt
        self.reads_prompt = any(f["block"] in self.kept and (f.get("kind") == "text" or f["key"].startswith("prompt"))
                                for f in info["features"])
        self.device, self.precision = device, precision
        self.batch_size, self.workers, self.progress = batch_size, workers, progress
        self.threads = threads  # torch CPU threads, set only when something is computed
        # a bundle is data: local weights files and code permission come from the user (extractors.bundle_options)
        self.weights, self.trust_code = dict(weights or {}), trust_code
        self._extractors: dict[str, tuple[Any, str]] = {}  # block -> (extractor, cache key)
        self.notes: list[str] = []  # what the last score() wants the user to know (printed by the CLI)
        self.timings: dict[str, float] = {}
        self.computed: dict[str, int] = {}  # block -> items computed by the last score() (0: all from the cache)

    # ------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | os.PathLike, trust_pickle: bool = False, **options) -> "Predictor":
        """Load a bundle folder (or a run folder holding ``model/``); nothing in it runs as code.

        ``trust_pickle=True`` also accepts a legacy ``model.pkl`` (a pickle runs code when loaded), and lets
        weights files given in ``weights`` ({"reiqa.content_ckpt": path}) be unpickled where an extractor allows it.
        Every extractor option is checked here: one the bundle may not set is refused before anything runs.
        Warns (UserWarning) when the model reads no block computed from the media itself."""
        from regressors.bundle import load_model_any, metadata_only_warning  # not workflow: nothing of the fit

        t0 = time.perf_counter()
        model, info = load_model_any(path, trust_pickle=trust_pickle)
        p = cls(model, info, path, **{"trust_code": trust_pickle, **options})
        for f in info["features"]:  # refuse a bundle option that could run code or name a file, before any work
            if f["block"] in p.kept and f.get("identity") and not p._is_generator(f):
                p._options(f)
        warning = metadata_only_warning(info)
        if warning:
            warnings.warn(warning, UserWarning, stacklevel=2)
        p.timings["load_s"] = time.perf_counter() - t0
        return p

    @property
    def card(self) -> str:
        """The bundle's MODEL.md."""
        folder = self.path if (self.path / "MODEL.md").is_file() else self.path / "model"
        card = folder / "MODEL.md"
        return card.read_text() if card.is_file() else json.dumps(self.info, indent=2)

    @property
    def vocabulary(self) -> list[str] | None:
        return self.info.get("generator_vocabulary")

    def __repr__(self) -> str:
        blocks = ", ".join(self.kept)
        return f"Predictor({str(self.path)!r}, track={self.track!r}, target={self.target!r}, blocks=[{blocks}])"

    # ------------------------------------------------------------ extractors from the bundle
    def _extractor(self, f: dict):
        """The block's extractor rebuilt from the bundle's spec, and the cache key it computes under."""
        if f["block"] in self._extractors:
            return self._extractors[f["block"]]
        from extractors.registry import get_extractor
        from extractors.weights import cache_only
        from features_store.store import canonical_json
        from regressors.bundle import BundleError

        ident = f.get("identity")
        if not ident:
            raise BundleError(f"{self.path}: feature block {f['block']!r} records no extractor identity "
                              "(a legacy model): features cannot be recomputed for new media")
        ex = get_extractor({"name": ident["name"], **self._options(f)})
        ex.device = self.device
        ex.precision = self.precision or ident.get("precision", "fp32")
        if hasattr(ex, "base"):  # frames / temporal_consistency: the base runs at the same precision
            ex.base.precision = ex.precision
        with cache_only():  # an identity may read a hub config: from the user's cache, never downloaded
            key = ex.key()
        if key != f["key"]:
            diff = _identity_diff(ident, json.loads(canonical_json(ex.identity())))
            other = [d for d in diff if "libraries" not in d.split(":")[0]]
            if other and not (self.precision and all("precision" in d for d in other)):
                raise BundleError(f"cannot rebuild feature block {f['block']!r} ({f['key']}) exactly here: "
                                  + "; ".join(other))
            self.notes.append(f"{f['key']}: computed here as {key} ({'; '.join(diff)}); scores may differ "
                              "slightly from the training environment's")
        self._extractors[f["block"]] = (ex, key)
        return ex, key

    @staticmethod
    def _is_generator(f: dict) -> bool:
        return f.get("name") == "generator" or f["key"].startswith("generator-")

    def _options(self, f: dict) -> dict:
        """The block's extractor options: the bundle's record read as data only (extractors.bundle_options), with
        the user's own weights files and code permission; BundleError (one line) for one a bundle may not set."""
        from extractors.bundle_options import BundleOptionError, from_bundle
        from extractors.registry import options_from_identity
        from regressors.bundle import BundleError

        ident = f["identity"]
        where = f"{self.path}: feature block {f['block']!r}: "
        try:
            options = f.get("options")
            if options is None:
                options = options_from_identity(ident)
            return from_bundle(ident.get("name"), options, self.weights, self.trust_code, where=where)
        except BundleOptionError as err:
            raise BundleError(str(err)) from None
        except (KeyError, TypeError, ValueError) as err:
            raise BundleError(f"{where}its extractor cannot be rebuilt ({type(err).__name__}: {err})") from None

    def _cache_id(self, ex, digest: str, prompt: str) -> str:
        if ex.kind == "text":
            return f"text:{_text_hash(prompt)}"
        if getattr(ex, "uses_prompt", True):
            return f"media:{digest}:{_text_hash(prompt)}"
        return f"media:{digest}"

    def _block(self, f: dict, items: list[Input], digests: list[str], bar_desc: str = "") -> tuple[np.ndarray, dict]:
        """[len(items), dim] values of one block (NaN rows where it failed) and {position: error}.

        Cached rows are read without a lock; only the rows computed now are written (see score_cache)."""
        ex, key = self._extractor(f)
        ids = [self._cache_id(ex, d, it.prompt or "") for it, d in zip(items, digests)]
        first: dict[str, int] = {}
        for pos, cid in enumerate(ids):
            first.setdefault(cid, pos)
        uniq = list(first)
        values, done = self._cache.read(key, uniq)  # a file that is not a feature store stops here (StoreError)
        self._cache.touch(uniq)  # used now: the most recent rows when this run's write bounds the cache
        pending = [cid for cid, ok in zip(uniq, done) if not ok]
        self.computed[f["block"]] = len(pending)
        failed: dict[str, str] = {}
        if pending:
            got, failed = self._compute(key, ex, [(cid, items[first[cid]]) for cid in pending])
            if got:
                rows = np.stack(list(got.values()))
                if values is None:
                    values = np.full((len(uniq), rows.shape[1]), np.nan, np.float32)
                at = {cid: j for j, cid in enumerate(uniq)}
                values[[at[cid] for cid in got]] = rows
                self._cache.keep(key, ex, list(got), rows)
        if values is None:  # nothing cached, nothing computed
            values = np.full((len(uniq), 1), np.nan, np.float32)
        # each unique row spread over the inputs sharing it (same file or prompt)
        pos_in_uniq = {cid: j for j, cid in enumerate(uniq)}
        values = values[[pos_in_uniq[cid] for cid in ids]]
        errors = {pos: failed[cid] for pos, cid in enumerate(ids) if cid in failed}
        for pos in np.flatnonzero(~np.isfinite(values).all(axis=1)):
            errors.setdefault(int(pos), f"{f['block']}: features not computed")
        return values, errors

    def _compute(self, key: str, ex, todo: list[tuple[str, Input]]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """Extract ``todo`` in a scratch store with the runner: ({cache id: row}, {cache id: error}).

        A media file is hashed again after its features are computed: one whose content changed meanwhile
        fails (its features would otherwise be cached under the content it had before)."""
        from extractors.base import Item
        from extractors.runner import run_extraction
        from features_store import FeatureStore
        from features_store.store import DONE

        workers = self.workers if self.workers is not None else (0 if len(todo) < 64 else 2)
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        from extractors.weights import cache_only

        with self._cache.scratch() as tmp, cache_only():  # weights: the user's cache only
            items = [Item(index=j, item_id=cid, path=None if ex.kind == "text" else _storable(it.abspath, tmp, j),
                          prompt=it.prompt or "", generator=it.generator) for j, (cid, it) in enumerate(todo)]
            summary = run_extraction(items, ex, Path(tmp) / "scratch.h5", device=self.device,
                                     precision=ex.precision, batch_size=self.batch_size, workers=workers,
                                     progress=self.progress)
            with FeatureStore(Path(tmp) / "scratch.h5", mode="r") as scratch:
                status = scratch.status(summary.key)
                values = scratch.read(summary.key)
                errs = scratch.errors(summary.key)
        if summary.key != key:
            self.notes.append(f"{key}: the extractor refined its identity when loading weights ({summary.key})")
        failed = dict(zip(errs["item_id"], errs["error"]))
        got = {}
        for j in np.flatnonzero(status == DONE):
            cid, it = todo[j]
            if ex.kind != "text":
                digest = cid.split(":")[1]
                try:
                    now = sha256_file(it.abspath)
                except OSError as err:
                    now = f"unreadable ({err.strerror or err})"
                if now != digest:
                    failed[cid] = (f"{it.abspath} changed while it was being scored (sha256 {digest[:12]}… before, "
                                   f"{now[:12]}… after): not scored; score it again")
                    continue
            got[cid] = values[j]
        return got, failed

    # ------------------------------------------------------------ scoring
    def score(self, paths: Sequence[str | os.PathLike] | Sequence[Input], prompts: Sequence[str] | str | None = None,
              generators: Sequence[str] | str | None = None, level: float | None = None) -> pd.DataFrame:
        """One row per input, in input order: ``path, score, score_lo, score_hi, in_domain, domain_score, status,
        error``.

        ``status``: ``ok``; ``no_prompt`` (scored, but the model reads the prompt and the item had none: it was
        scored with an empty one, and a UserWarning says how many); ``failed`` (``error`` says why).
        ``score_lo``/``score_hi``: the prediction interval at ``level`` (0.9, 90 or "90%", as ``--level`` reads it;
        default: the Predictor's, else the bundle's 90%). ``in_domain``: whether the item's features lie as close to the training items as held-out
        training items do (``domain_score`` ≤ 1); None when the model reads no block with a distance (see the
        card). NaN/None on failed rows and for bundles saved before these existed."""
        from extractors.generator import onehot
        from regressors.conformal import parse_level
        from regressors.trust import assess

        level = parse_level(level, "level") if level is not None else self.level  # refused before any work
        t_start = time.perf_counter()
        self.notes, self.computed = [], {}
        self._cache.notes = []
        self._cache.prepare()  # CacheError (one line) when the cache's folder cannot be created
        items = [p if isinstance(p, Input) else Input(str(p), os.path.abspath(p)) for p in paths]
        for name, vals in (("prompts", prompts), ("generators", generators)):
            if vals is not None and not isinstance(vals, str) and len(vals) != len(items):
                raise ValueError(f"{len(items)} paths but {len(vals)} {name}")
        for i, it in enumerate(items):
            if prompts is not None:
                it.prompt = prompts if isinstance(prompts, str) else prompts[i]
            if generators is not None:
                it.generator = generators if isinstance(generators, str) else generators[i]
        out = pd.DataFrame({"path": [it.path for it in items], "score": np.nan, "score_lo": np.nan,
                            "score_hi": np.nan, "in_domain": pd.Series([None] * len(items), dtype=object),
                            "domain_score": np.nan, "status": "ok", "error": ""})
        errors: dict[int, str] = {}
        digests: dict[int, str] = {}
        for i, it in enumerate(items):
            if it.error:
                errors[i] = it.error
                continue
            try:
                kind = media_kind(it.abspath)
                if kind != self.track:
                    raise ValueError(f"a{'n' if kind == 'image' else ''} {kind}, but this model scores "
                                     f"{self.track}s ({self.track} track): {it.abspath}")
                digests[i] = sha256_file(it.abspath)
            except Exception as err:  # noqa: BLE001 - one bad input is that input's error
                errors[i] = str(err) if type(err).__name__ in ("ItemError", "ValueError") else \
                    f"{type(err).__name__}: {err}"
        t_inputs = time.perf_counter()
        ok = [i for i in range(len(items)) if i not in errors]
        parts = []
        for f in (self.info["features"] if ok else []):
            if f["block"] not in self.kept:  # dropped by block selection: read by no head, so never extracted
                parts.append(np.zeros((len(ok), f["dim"])))
                continue
            if self._is_generator(f):
                vocab = f.get("vocabulary") or (f.get("identity", {}).get("options") or {}).get("generators") or []
                parts.append(onehot([items[i].generator for i in ok], vocab).astype(np.float64))
                unknown = sum(1 for i in ok if items[i].generator not in set(vocab))
                if unknown:
                    self.notes.append(f"{unknown} item(s) with no generator, or one the model never saw: scored "
                                      f"with the generator_unknown flag (the model knows: {', '.join(vocab)})")
                continue
            values, errs = self._block(f, [items[i] for i in ok], [digests[i] for i in ok])
            for pos, msg in errs.items():
                errors.setdefault(ok[pos], msg)
            parts.append(values.astype(np.float64))
        self.notes += self._cache.notes
        t_features = time.perf_counter()
        good = [j for j, i in enumerate(ok) if i not in errors]
        if good:
            X = np.concatenate(parts, axis=1)[good] if parts else np.zeros((len(good), 0))
            if X.shape[1] != self.info["n_features"]:
                raise RuntimeError(f"built {X.shape[1]} feature columns, the model expects {self.info['n_features']}")
            rows = [ok[j] for j in good]
            pred = self.model.predict(X)
            out.loc[rows, "score"] = pred
            trust = assess(self.model, X, pred, level)
            for col, vals in trust.items():
                out.loc[rows, col] = pd.Series(vals, index=rows, dtype=object if col == "in_domain" else float)
            if self.reads_prompt:
                missing = [i for i in rows if not items[i].prompt]
                if missing:
                    out.loc[missing, "status"] = "no_prompt"
                    blocks = [b for b in self.kept if any(f["block"] == b and f.get("kind") == "text"
                                                          for f in self.info["features"])]
                    msg = (f"{len(missing)} item(s) scored without a prompt (status no_prompt): the model reads "
                           f"the prompt ({', '.join(blocks) or 'a text block'}), so they were scored with an empty "
                           "one; give prompts (--prompts FILE, a list with a prompt column, a <name>.txt caption "
                           "beside each file, or prompts=[...])")
                    self.notes.append(msg)
                    warnings.warn(msg, UserWarning, stacklevel=2)
        if getattr(self.model, "intervals_", None) is None and ok:
            self.notes.append("this bundle has no prediction intervals or domain detector (saved before they "
                              "existed): score_lo, score_hi, in_domain are empty; train again to get them")
        elif getattr(self.model, "domain_", None) is None and ok:
            self.notes.append(f"in_domain is empty: the model reads only {', '.join(self.kept)}, which has no "
                              "distance to measure (see its card)")
        elif getattr(self.model.domain_, "label_only", False) and ok:
            self.notes.append("in_domain judges only the prompt: the model reads no feature of the media itself, so "
                              "any file with a familiar prompt is in domain to it (see its card)")
        for i, msg in errors.items():
            out.loc[i, ["status", "error"]] = ["failed", msg]
        t_end = time.perf_counter()
        self.timings.update(inputs_s=t_inputs - t_start, extraction_s=t_features - t_inputs,
                            prediction_s=t_end - t_features, score_s=t_end - t_start)
        return out

    def score_images(self, images: Sequence, prompts: Sequence[str] | str | None = None,
                     generators: Sequence[str] | str | None = None, level: float | None = None) -> pd.DataFrame:
        """Score PIL images (converted to RGB as files would be); ``path`` reads ``<image i>``."""
        from extractors.media import to_rgb

        if self.track != "image":
            raise ValueError(f"this model scores {self.track}s; score_images takes still images")
        with self._cache.scratch() as tmp:  # beside the cache, not in TMPDIR: a killed run's files are swept
            paths = []
            for i, im in enumerate(images):
                p = Path(tmp) / f"image_{i:05d}.png"
                to_rgb(im).save(p, compress_level=1)  # deterministic bytes: the same pixels hit the cache
                paths.append(str(p))
            df = self.score(paths, prompts, generators, level)
        df["path"] = [f"<image {i}>" for i in range(len(df))]
        return df
