"""The evaluation panel's sets: feature stores built once into a cache folder, and the sets drawn from them.

Cache (``benchmarks/cache``, ignored by git; ``$AIGCQ_PANEL_CACHE`` moves it), built on first use
with the project's own entry points and reused after:

* ``aigiqa20k.h5`` / ``t2vqa_db.h5``: ``aigcq features`` over the shipped label files
  (``generator,prompt_minilm``; label-only, no media);
* ``fetv.h5``: ``aigcq features --track video`` over the 174 FETV clips (``generator,
  prompt_minilm`` and the offline image extractors ``nss``, ``effnet_lite0`` on sampled frames);
* ``demo/demo.h5``: the ``make demo`` dataset and store (``experiments.demo_data``).

Sets (:data:`SETS`):

* label-only subsets of the AIGIQA-20K and T2VQA-DB training labels, drawn by the recipe of
  issue 20 (:func:`recipe_rows`): ``rng = np.random.default_rng(seed)``, ``k`` generators chosen
  with ``rng.choice(sorted(generators), k, replace=False)`` (all of them for ``gall``), their items'
  prompts walked in the order ``rng.permutation(prompts in first-appearance order)`` taking all
  items of each prompt until there are at least ``n``; the rows keep the label file's order and the
  generator block is the one a store of just those rows would have (the generators present, then
  the ``unknown`` column), so a set equals ``make regress`` on a table of those rows;
* the full AIGIQA-20K and T2VQA-DB training labels;
* FETV static / temporal quality and alignment;
* the demo, and the demo with a block of 1,000 standard-normal columns added.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AIGCQ_SHARED_DATA", REPO.parent / "shared" / "data"))
CACHE = Path(os.environ.get("AIGCQ_PANEL_CACHE", REPO / "benchmarks" / "cache"))
NOISE_DIMS = 1000
LABEL_ONLY = ["generator", "prompt_minilm"]
FETV_BLOCKS = ["generator", "prompt_minilm", "nss", "effnet_lite0"]
DEMO_BLOCKS = ["nss", "effnet_lite0", "prompt_minilm", "generator"]  # experiments.demo.EXTRACTORS: `make demo`'s order

# store file -> (track, dataset path, extractors)
STORES = {
    "aigiqa20k": ("image", "aigiqa20k", LABEL_ONLY),
    "t2vqa_db": ("video", "t2vqa_db", LABEL_ONLY),
    "fetv": ("video", "fetv", FETV_BLOCKS),
}


@dataclass(frozen=True)
class PanelSet:
    """One panel set: ``source`` store, its target, and (for a subset) the recipe's n, generators and seed."""
    name: str
    source: str  # aigiqa20k | t2vqa_db | fetv | demo
    target: str = "mos"
    n: int | None = None  # subset size (None: every training item)
    gens: int | None = None  # generators drawn (None: all)
    seed: int = 0
    noise: bool = False  # add a 1,000-column standard-normal block
    keep: tuple[str, ...] | None = None  # only these blocks (panel.py --hindsight: every subset of a set's blocks)

    @property
    def family(self) -> str:
        if self.n is not None:
            return f"{self.source} subsets"
        return {"aigiqa20k": "label-only full", "t2vqa_db": "label-only full"}.get(self.source, self.source)


def _sub(src: str, short: str, n: int, gens: int | None, seed: int) -> PanelSet:
    return PanelSet(f"{short}-{n}-g{gens or 'all'}-s{seed}", src, n=n, gens=gens, seed=seed)


SETS: list[PanelSet] = [
    # the recipe (1,000 items, 6 generators, seeds 0-2), then other sizes and generator counts
    *[_sub("aigiqa20k", "aigiqa", 1000, 6, s) for s in (0, 1, 2)],
    _sub("aigiqa20k", "aigiqa", 500, 2, 0), _sub("aigiqa20k", "aigiqa", 500, 6, 1),
    _sub("aigiqa20k", "aigiqa", 500, None, 2),
    _sub("aigiqa20k", "aigiqa", 1000, 2, 3), _sub("aigiqa20k", "aigiqa", 1000, 3, 4),
    _sub("aigiqa20k", "aigiqa", 1000, None, 5),
    _sub("aigiqa20k", "aigiqa", 3000, 4, 0), _sub("aigiqa20k", "aigiqa", 3000, 6, 1),
    _sub("aigiqa20k", "aigiqa", 3000, None, 2),
    _sub("t2vqa_db", "t2vqa", 500, 3, 0), _sub("t2vqa_db", "t2vqa", 500, 6, 1),
    _sub("t2vqa_db", "t2vqa", 1000, 2, 0), _sub("t2vqa_db", "t2vqa", 1000, 6, 1),
    _sub("t2vqa_db", "t2vqa", 1000, None, 2),
    _sub("t2vqa_db", "t2vqa", 3000, 6, 0), _sub("t2vqa_db", "t2vqa", 3000, None, 1),
    PanelSet("aigiqa-full", "aigiqa20k"), PanelSet("t2vqa-full", "t2vqa_db"),
    PanelSet("fetv-static", "fetv", "static_quality"), PanelSet("fetv-temporal", "fetv", "temporal_quality"),
    PanelSet("fetv-alignment", "fetv", "alignment"),
    PanelSet("demo", "demo"), PanelSet("demo-noise", "demo", noise=True),
]


def _run(cmd: list[str], what: str) -> None:
    print(f"panel cache: {what}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(cmd, check=True, cwd=REPO, env=env)


def store_path(source: str) -> Path:
    """The cached store of ``source``, built (once) when missing."""
    if source == "demo":
        path = CACHE / "demo" / "demo.h5"
        if not path.is_file():
            from experiments.demo import EXTRACTORS
            from experiments.demo_data import DemoConfig, build_demo_dataset

            data = build_demo_dataset(CACHE / "demo" / "data", DemoConfig(heldout_sources=2))  # as `make demo`
            _run([sys.executable, "-m", "extractors", "run", "--track", "image", "--data", str(data),
                  "--extractors", ",".join(EXTRACTORS), "--store", str(path), "--device", "cpu",
                  "--workers", "2", "--batch-size", "16", "--no-progress"], "the demo store")
        return path
    track, folder, extractors = STORES[source]
    path = CACHE / f"{source}.h5"
    if not path.is_file():
        if not (SHARED / folder).is_dir():
            raise FileNotFoundError(f"{SHARED / folder} is absent: the panel's {source} sets need the shipped data")
        CACHE.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "aigcq", "features", "--track", track, "--data", str(SHARED / folder),
              "--extractors", ",".join(extractors), "--store", str(path), "--no-progress"], f"the {source} store")
    return path


@dataclass
class SetData:
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray  # prompt (demo: source photo) per item: CV and the bootstrap resample whole groups
    generators: np.ndarray
    blocks: dict[str, list[int]]
    prompts: np.ndarray


_LOADED: dict[tuple, SetData] = {}


def _load_store(source: str, target: str) -> SetData:
    key = (source, target)
    if key not in _LOADED:
        from regressors.data import load_track

        track = "video" if source in ("t2vqa_db", "fetv") else "image"
        names = {"aigiqa20k": LABEL_ONLY, "t2vqa_db": LABEL_ONLY, "fetv": FETV_BLOCKS, "demo": DEMO_BLOCKS}[source]
        path = store_path(source)
        keys = _keys(path, names, track)
        d = load_track(path, keys, split="train", target=target, track=track)
        blocks = {b: list(v) for b, v in d.blocks.items()}
        # name blocks by extractor (a video store keys nss as frames-...)
        blocks = dict(zip(names, blocks.values()))
        from features_store import FeatureStore

        with FeatureStore(os.fspath(path), mode="r") as st:
            df = st.columns(["item_id", "split", "prompt"])
        df = df[df["split"] == "train"]
        prompt_of = dict(zip(df["item_id"].astype(str), df["prompt"].astype(str)))
        prompts = np.array([prompt_of[str(i)] for i in d.ids], dtype=object)
        _LOADED[key] = SetData(np.asarray(d.X, float), np.asarray(d.y, float), np.asarray(d.groups).astype(str),
                               np.asarray(d.generators).astype(str), blocks, prompts)
    return _LOADED[key]


def _keys(path: Path, names: list[str], track: str) -> list[str]:
    """Store keys of the extractors named (on the video track an image extractor's key is its frames wrapper)."""
    from features_store import FeatureStore

    with FeatureStore(os.fspath(path), mode="r") as st:
        by_name: dict[str, str] = {}
        for k in st.keys():
            ident = st.config(k)["identity"]
            name = st.config(k)["name"]
            if name == "frames":
                name = ident["base"]["name"]
            by_name.setdefault(name, k)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise RuntimeError(f"{path} lacks {missing}; delete it to rebuild the panel cache")
    return [by_name[n] for n in names]


def recipe_rows(generators: np.ndarray, prompts: np.ndarray, n: int, k: int | None, seed: int) -> np.ndarray:
    """Row indices (in table order) of issue 20's recipe: ``k`` generators (None: all), whole prompts to >= n."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    uniq = sorted(set(generators.tolist()))
    chosen = uniq if k is None or k >= len(uniq) else list(rng.choice(uniq, k, replace=False))
    mask = np.isin(generators, chosen)
    items = pd.DataFrame({"prompt": prompts[mask], "row": np.flatnonzero(mask)})
    order = rng.permutation(items["prompt"].unique())
    by_prompt = items.groupby("prompt", sort=False)["row"].apply(list)
    take: list[int] = []
    for p in order:
        take.extend(by_prompt[p])
        if len(take) >= n:
            break
    return np.sort(np.asarray(take, int))


def _restrict_generator(X: np.ndarray, blocks: dict, rows: np.ndarray) -> tuple[np.ndarray, dict]:
    """X[rows] with the generator block as a store of just these rows has it: present generators + unknown."""
    from regressors.heads import blocks_from_dims

    a, b = blocks["generator"]
    Xr = X[rows]
    gen = Xr[:, a:b]
    keep = np.flatnonzero(gen[:, :-1].any(axis=0)).tolist() + [b - a - 1]
    parts, dims = [], {}
    for name, (s, e) in blocks.items():
        parts.append(gen[:, keep] if name == "generator" else Xr[:, s:e])
        dims[name] = parts[-1].shape[1]
    return np.hstack(parts), blocks_from_dims(dims)


def load_set(ps: PanelSet) -> SetData:
    """The set's (X, y, groups, generators, blocks, prompts)."""
    base = _load_store(ps.source, ps.target)
    X, blocks, rows = base.X, base.blocks, np.arange(len(base.y))
    if ps.n is not None:
        rows = recipe_rows(base.generators, base.prompts, ps.n, ps.gens, ps.seed)
        X, blocks = _restrict_generator(base.X, base.blocks, rows)
    if ps.keep is not None:
        from regressors.heads import blocks_from_dims

        X = np.hstack([X[:, blocks[b][0]:blocks[b][1]] for b in ps.keep])
        blocks = blocks_from_dims({b: blocks[b][1] - blocks[b][0] for b in ps.keep})
    if ps.noise:
        from regressors.heads import blocks_from_dims

        noise = np.random.default_rng(123).normal(size=(len(X), NOISE_DIMS))
        X = np.hstack([X, noise])
        blocks = blocks_from_dims({**{b: r[1] - r[0] for b, r in blocks.items()}, "noise": NOISE_DIMS})
    return SetData(X, base.y[rows], base.groups[rows], base.generators[rows], blocks, base.prompts[rows])


def table_of(ps: PanelSet):
    """The set's rows as a label table (name, prompt, mos) in the label file's order: `make regress` input."""
    import pandas as pd

    from features_store import FeatureStore

    base = _load_store(ps.source, ps.target)
    rows = recipe_rows(base.generators, base.prompts, ps.n, ps.gens, ps.seed) if ps.n else np.arange(len(base.y))
    with FeatureStore(os.fspath(store_path(ps.source)), mode="r") as st:
        df = st.columns(["item_id", "split", "name"] if "name" in st.df else ["item_id", "split"])
    df = df[df["split"] == "train"].reset_index(drop=True)
    names = df["name" if "name" in df else "item_id"].astype(str).to_numpy()
    return pd.DataFrame({"name": names[rows], "prompt": base.prompts[rows], "mos": base.y[rows]})
