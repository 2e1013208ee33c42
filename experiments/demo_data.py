"""A small embedded dataset for ``make demo``: needs no download.

Photographs shipped inside scikit-image (``skimage.data``) are cropped, flipped and
resized, then degraded by five synthetic "generators" (one per degradation family:
blur, noise, JPEG, contrast loss, colour cast) at four levels, plus the undegraded
crops under a ``fakegen-pristine`` generator. The "MOS" is SYNTHETIC: a fixed
function of the degradation family and level, a per-photo content offset and rating
noise. It exercises the pipeline end to end on real pixels; it says nothing about
real human judgements of AI-generated images.

The CV group of an item is its source photograph, so crops of one photo never sit on
both sides of a fold (grouped CV is then honest about content it has not seen).

Layout written to ``out_dir``::

    images/<item_id>.png
    labels.csv        item_id, path, prompt, generator, mos, split, group, family, level, source
    demo.yaml         the table description the ``table`` adapter reads
    README.txt        what the labels are (SYNTHETIC) and how they were made
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

#: skimage.data photos that ship inside the wheel (no pooch download), with a prompt
#: describing what they show. Greyscale ones are kept greyscale-as-RGB on purpose:
#: colour features should not be confused by a colour cast they never had.
SOURCES: dict[str, str] = {
    "astronaut": "a portrait of an astronaut in a white spacesuit in front of an American flag",
    "chelsea": "a close-up photo of a ginger tabby cat looking to the side",
    "coffee": "a cup of coffee with latte art on a saucer, top view",
    "rocket": "a rocket on the launch pad under a blue sky",
    "immunohistochemistry": "a microscope image of stained tissue cells in brown and blue",
    "hubble_deep_field": "a deep space telescope image full of distant galaxies",
    "retina": "a fundus photograph of a human retina with blood vessels",
    "motorcycle_left": "a motorcycle parked in a workshop next to tools",
    "camera": "a black and white photo of a man with a camera on a tripod",
    "brick": "a close-up texture of a red brick wall",
    "grass": "a close-up texture of green grass blades",
    "gravel": "a close-up texture of grey gravel stones",
    "moon": "a black and white photo of the surface of the moon",
    "coins": "old coins lying on a dark table",
    "page": "a scanned page of printed text",
    "colorwheel": "a colour wheel with the full hue spectrum",
}

#: degradation family -> (generator name, parameter per level 1..4, MOS drop at level 4)
FAMILIES: dict[str, tuple[str, tuple[float, ...], float]] = {
    "blur": ("fakegen-blur", (0.8, 1.6, 2.8, 4.5), 2.9),  # gaussian sigma, pixels at 256 px
    "noise": ("fakegen-noise", (6.0, 13.0, 24.0, 40.0), 2.6),  # gaussian std on 0..255
    "jpeg": ("fakegen-jpeg", (45.0, 22.0, 10.0, 4.0), 2.8),  # JPEG quality
    "contrast": ("fakegen-contrast", (0.72, 0.52, 0.36, 0.22), 2.0),  # factor towards the mean
    "colour": ("fakegen-colour", (0.12, 0.25, 0.4, 0.6), 1.7),  # strength of a colour cast
}
PRISTINE = "fakegen-pristine"
#: the top of the synthetic scale and the rating noise (1..5 scale, like FETV/AIGIQA)
TOP, RATER_SD, CONTENT_SD = 4.6, 0.22, 0.25


@dataclass(frozen=True)
class DemoConfig:
    """What changes the dataset; written beside it so a rebuild is skipped only when equal."""

    n_sources: int = 16  # photos (= CV groups)
    crops_per_source: int = 2  # random crop (+ random flip) per photo
    levels_per_family: int = 1  # degraded copies per crop and family (random level)
    size: int = 256  # output side, pixels
    seed: int = 0
    test_sources: int = 0  # the last k photos form an unlabelled "test" split (for submission runs)
    # the last k photos are held out of the dataset entirely (heldout/list.csv: new images to score with
    # `aigcq score`, their synthetic labels beside them); never in labels.csv, the store or the CV
    heldout_sources: int = 0

    @property
    def n_items(self) -> int:
        return self.n_sources * self.crops_per_source * (1 + len(FAMILIES) * self.levels_per_family)


def _load_source(name: str) -> np.ndarray:
    """RGB uint8 image of a shipped skimage.data photo."""
    from skimage import data

    img = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)


def _crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (60-100 % of the short side), random h-flip, resized to size."""
    from PIL import Image

    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.6, 1.0))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    patch = img[y:y + side, x:x + side]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return np.asarray(Image.fromarray(np.ascontiguousarray(patch)).resize((size, size), Image.BICUBIC))


def degrade(img: np.ndarray, family: str, level: int, rng: np.random.Generator) -> np.ndarray:
    """Apply one family at level 1..4 (level 0 returns the image unchanged)."""
    from PIL import Image, ImageFilter

    if level == 0:
        return img
    if family not in FAMILIES:
        raise ValueError(f"unknown degradation family {family!r}; known: {sorted(FAMILIES)}")
    p = FAMILIES[family][1][level - 1]
    f = img.astype(np.float32)
    if family == "blur":
        out = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=p)), dtype=np.float32)
    elif family == "noise":
        out = f + rng.normal(0.0, p, f.shape)
    elif family == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(p))
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float32)
    elif family == "contrast":
        out = f.mean() + (f - f.mean()) * p
    else:  # colour: blend towards a random saturated tint
        tint = rng.permutation(np.array([255.0, 120.0, 0.0]))
        out = f * (1 - p) + tint[None, None, :] * p
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def synthetic_mos(family: str | None, level: int, content: float, rng: np.random.Generator) -> float:
    """The SYNTHETIC rating: TOP + content offset - drop(family) * (level/4)^0.8 + noise, clipped to 1..5."""
    drop = 0.0 if family is None or level == 0 else FAMILIES[family][2] * (level / 4.0) ** 0.8
    return float(np.clip(TOP + content - drop + rng.normal(0.0, RATER_SD), 1.0, 5.0))


def build_demo_dataset(out_dir: str | os.PathLike, config: DemoConfig | None = None, force: bool = False) -> Path:
    """Write the dataset to ``out_dir`` and return the path of its YAML description.

    Skips the work when ``out_dir`` already holds a dataset built with the same config.
    """
    import pandas as pd
    from PIL import Image
    from tqdm.auto import tqdm

    cfg = config or DemoConfig()
    if not 1 <= cfg.n_sources <= len(SOURCES):
        raise ValueError(f"n_sources must be between 1 and {len(SOURCES)}, got {cfg.n_sources}")
    out = Path(out_dir)
    yaml_path, stamp = out / "demo.yaml", out / "config.json"
    if not force and yaml_path.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == asdict(cfg):
        return yaml_path
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    sources = list(SOURCES)[: cfg.n_sources]
    content = {s: float(rng.normal(0.0, CONTENT_SD)) for s in sources}
    held_srcs = set(sources[len(sources) - cfg.heldout_sources:]) if cfg.heldout_sources else set()
    kept = [s for s in sources if s not in held_srcs]
    test_srcs = set(kept[len(kept) - cfg.test_sources:]) if cfg.test_sources else set()
    if len(kept) < 2:
        raise ValueError(f"heldout_sources={cfg.heldout_sources} leaves {len(kept)} photo(s) for the dataset; need 2")
    rows, held = [], []
    if held_srcs:
        (out / "heldout" / "images").mkdir(parents=True, exist_ok=True)
    with tqdm(total=cfg.n_items, desc="demo dataset", unit="img") as bar:
        for src in sources:
            photo = _load_source(src)
            for c in range(cfg.crops_per_source):
                base = _crop(photo, cfg.size, rng)
                variants = [(None, 0)] + [
                    (fam, int(lvl))
                    for fam in FAMILIES
                    for lvl in rng.choice(np.arange(1, 5), size=cfg.levels_per_family, replace=False)
                ]
                for fam, lvl in variants:
                    item_id = f"{src}_c{c}_{fam or 'pristine'}{lvl}"
                    rel = f"{'heldout/' if src in held_srcs else ''}images/{item_id}.png"
                    Image.fromarray(degrade(base, fam, lvl, rng) if fam else base).save(out / rel, compress_level=1)
                    (held if src in held_srcs else rows).append({
                        "item_id": item_id,
                        "path": rel,
                        "prompt": SOURCES[src],
                        "generator": FAMILIES[fam][0] if fam else PRISTINE,
                        "mos": round(synthetic_mos(fam, lvl, content[src], rng), 4),
                        "split": "test" if src in test_srcs else "train",
                        "group": src,
                        "family": fam or "pristine",
                        "level": lvl,
                        "source": src,
                    })
                    bar.update()
    table = pd.DataFrame(rows)
    table.loc[table["split"] == "test", ["mos", "level"]] = np.nan  # unlabelled, as a challenge test split
    table.to_csv(out / "labels.csv", index=False)
    if held:  # a list `aigcq score` reads (paths relative to it), labels kept for the comparison only
        h = pd.DataFrame(held)
        h["path"] = h["path"].str.replace("heldout/", "", n=1, regex=False)
        h[["path", "prompt", "generator", "mos", "family", "level", "source"]].to_csv(out / "heldout" / "list.csv",
                                                                                     index=False)
    yaml_path.write_text(
        "# Embedded demo dataset: skimage.data photos with synthetic degradations.\n"
        "# The mos column is SYNTHETIC (a function of degradation family and level), not human ratings.\n"
        "adapter: table\n"
        "name: demo_synthetic\n"
        "labels: labels.csv\n"
        "root: .\n"
        "columns: {item_id: item_id, path: path, prompt: prompt, generator: generator, mos: mos, "
        "split: split, group: group}\n"
        "label_columns: [level]\n"
    )
    (out / "README.txt").write_text(
        "SYNTHETIC LABELS. These images are scikit-image sample photographs with synthetic degradations\n"
        f"({', '.join(FAMILIES)}), one fake 'generator' per degradation family. The 'mos' is computed as\n"
        f"{TOP} + content offset (sd {CONTENT_SD}, per photo) - drop(family) * (level/4)^0.8 + noise (sd {RATER_SD}),\n"
        "clipped to 1..5. Use it to check that the pipeline runs; not as evidence about human ratings.\n"
    )
    stamp.write_text(json.dumps(asdict(cfg)))
    return yaml_path


#: clearly foreign inputs for a model trained on photos: `make demo` scores them to show ``in_domain``
FOREIGN = ("text_page", "flat_grey", "noise")


def write_foreign_images(folder: str | os.PathLike, size: int = 256, seed: int = 0) -> list[Path]:
    """A white page with black lines of text, a flat grey square and uniform RGB noise (PNG files): inputs no
    photo-trained quality model should score as if it knew them (``in_domain`` should say False)."""
    from PIL import Image, ImageDraw

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    page = Image.new("RGB", (2 * size, size), "white")
    draw = ImageDraw.Draw(page)
    for y in range(size // 16, size - size // 16, max(size // 14, 12)):
        draw.text((size // 16, y), "The quick brown fox jumps over the lazy dog. " * 3, fill="black")
    rng = np.random.default_rng(seed)
    images = {"text_page": page, "flat_grey": Image.new("RGB", (size, size), (128, 128, 128)),
              "noise": Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))}
    out = []
    for name in FOREIGN:
        path = folder / f"{name}.png"
        images[name].save(path)
        out.append(path)
    return out


def build_demo_store(out_dir: str | os.PathLike, config: DemoConfig | None = None,
                     extractors: tuple[str, ...] = ("nss", "prompt_minilm", "generator"), progress: bool = False) -> Path:
    """Dataset + feature store in one call (tests and the notebook use a tiny one).

    Runs the extractors in-process through the runner, like ``make features`` does.
    """
    from extractors.registry import for_track
    from extractors.runner import run_extraction
    from features_store import FeatureStore, load_dataset

    out = Path(out_dir)
    manifest = load_dataset(build_demo_dataset(out / "data", config))
    store = out / "demo.h5"
    with FeatureStore(store, mode="a") as st:
        for spec in extractors:
            run_extraction(manifest, for_track(spec, "image"), st, workers=0, batch_size=32, progress=progress)
    return store
