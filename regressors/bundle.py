"""The model bundle: a folder that scores new media anywhere, and loads without running code.

    runs/<run>/model/
      bundle.json   what the model needs and is: track; target name and range; per feature block
                    the store key, the extractor's full identity (name, every option, weights id and
                    revision, precision, code and library versions) and the options that rebuild it;
                    ``kept_blocks``, the blocks the model reads (nested block selection may drop some:
                    a dropped block's features are never computed when scoring; absent in bundles
                    written before it was recorded: all blocks); the generator vocabulary; the
                    training summary; library versions; file checksums
      model.skops   the fitted heads and the meta-learner (skops format)
      MODEL.md      a short card generated from bundle.json

Why skops: a pickle runs code when it is loaded, so a checksum beside it only stops a
corrupted file, not a crafted one. ``skops.io.load`` rebuilds objects from a JSON schema
and refuses any type that is neither one skops trusts (builtins, numpy, scipy) nor in
:data:`TRUSTED_TYPES` or :data:`SKLEARN_TYPES`; nothing in the file decides which code runs.

Adding an estimator class that a fitted model holds (e.g. a new head in
``regressors/heads.py``) takes one line in :data:`TRUSTED_TYPES`; the round-trip test
(tests/test_bundle.py) fits every head and names any type missing there.
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .bundle_integrity import BundleError  # noqa: F401 (defined in the module below; callers import it from here)
from .bundle_integrity import sha256_file  # noqa: F401 (one file hash for the bundle, its manifest and model_io)

FORMAT = "aigcq-model-bundle"
FORMAT_VERSION = 2  # 2: the model records what its heads depend on; bundle.json a manifest (bundle_integrity)
BUNDLE_JSON, MODEL_FILE, CARD = "bundle.json", "model.skops", "MODEL.md"
LEGACY_PICKLE = "model.pkl"
MODEL_DIR = "model"  # the bundle folder inside a run folder

#: Types a bundle may hold beyond those skops trusts by default. One line per class.
TRUSTED_TYPES: tuple[str, ...] = (
    "collections.OrderedDict",
    "lightgbm.basic.Booster",  # rebuilt from LightGBM's own text model format (its __setstate__)
    "lightgbm.sklearn.LGBMRegressor",
    "regressors.generator_probe.GeneratorProbe",
    "regressors.generator_probe.ProbedModel",
    "regressors.conformal.ConformalIntervals",
    "regressors.domain.DomainDetector",
    "regressors.heads.BlockTransformer",
    "regressors.heads.CosineWeights",
    "regressors.heads.ElasticNetHead",
    "regressors.heads.KNNHead",
    "regressors.heads.LGBMHead",
    "regressors.heads.SVRHead",
    "regressors.stacked_model.StackedModel",
    "regressors.stacking.StackedModel",  # its name in bundles written before it moved (same class)
)

#: scikit-learn classes a bundle may hold, by public name (trusted under the defining module's name,
#: which is what skops records). Listed rather than discovered: see :func:`skops_io`.
SKLEARN_TYPES: tuple[str, ...] = (
    "sklearn.decomposition.PCA",
    "sklearn.linear_model.ElasticNet",
    "sklearn.linear_model.LinearRegression",
    "sklearn.linear_model.LogisticRegression",  # the generator probe
    "sklearn.neighbors.KNeighborsRegressor",
    "sklearn.preprocessing.StandardScaler",  # the domain detector (regressors/domain.py)
    "sklearn.svm.SVR",
)

#: libraries whose versions are recorded (the heads' numbers depend on them)
LIBRARIES = ("aigc-quality", "numpy", "scipy", "scikit-learn", "lightgbm", "skops", "pandas", "h5py", "torch",
             "torchvision", "transformers", "pillow", "av")
REQUIRED = ("format", "format_version", "track", "target", "features", "files")
#: extractor kinds read from the prompt or the generator name, not from the media file (extractors.base.KINDS)
METADATA_KINDS = ("text", "meta")



def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in LIBRARIES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def skops_io():
    """``skops.io``, imported without scikit-learn's estimator discovery.

    skops builds its default trusted list when it is imported, from
    ``sklearn.utils.all_estimators()``, which imports every scikit-learn module and, through
    scikit-learn's array-API shim, torch: about 2 s of a one-image ``aigcq score`` whose model
    needs neither. Bundles do not rely on that list (:func:`trusted_types` names every class they
    hold), so the discovery finds nothing while skops is imported here. Imported elsewhere first,
    skops keeps its full list; :func:`untrusted_types` still refuses every scikit-learn class not listed.
    """
    import sys

    if "skops.io" not in sys.modules:
        # skops also finds the module of each of scipy's ~230 ufuncs by scanning the loaded modules in load
        # order: scipy.special loaded first (just after numpy) ends each scan after ~250 modules, not ~600
        import scipy.special  # noqa: F401
        import sklearn.utils

        discover = sklearn.utils.all_estimators
        sklearn.utils.all_estimators = lambda type_filter=None: []
        try:
            import skops.io  # noqa: F401
        finally:
            sklearn.utils.all_estimators = discover
    return sys.modules["skops.io"]


def trusted_types() -> list[str]:
    """Every type a bundle may hold beyond builtins and numpy: TRUSTED_TYPES and SKLEARN_TYPES (the
    latter under their defining module's name, as skops records them)."""
    import importlib

    out = list(TRUSTED_TYPES)
    for name in SKLEARN_TYPES:
        module, cls = name.rsplit(".", 1)
        t = getattr(importlib.import_module(module), cls)
        out.append(f"{t.__module__}.{t.__qualname__}")
    return out


def untrusted_types(sio, path: str | Path | bytes) -> list[str]:
    """Types in the skops file at ``path`` (or of its bytes) outside :func:`trusted_types`: those skops does not
    trust by default, and every scikit-learn class not listed in SKLEARN_TYPES. skops trusts scikit-learn's whole
    estimator list when it was imported before :func:`skops_io` (by the user's own code, say); listing the
    scikit-learn classes the file holds keeps what a bundle may hold the same in every process."""
    import io
    import zipfile

    data = path if isinstance(path, bytes) else None
    with zipfile.ZipFile(io.BytesIO(data) if data is not None else path) as z:
        todo, held = [json.loads(z.read("schema.json"))], set()
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if isinstance(node.get("__module__"), str) and isinstance(node.get("__class__"), str) \
                    and node["__module__"].split(".")[0] == "sklearn":
                held.add(f"{node['__module__']}.{node['__class__']}")
            todo += node.values()
        elif isinstance(node, list):
            todo += node
    skops_says = sio.get_untrusted_types(data=data) if data is not None else sio.get_untrusted_types(file=path)
    return sorted((set(skops_says) | held) - set(trusted_types()))


# ---------------------------------------------------------------- writing
def save_bundle(folder: str | Path, model: Any, info: dict) -> Path:
    """Write ``model.skops`` (holding the record of what its heads depend on), ``MODEL.md`` and ``bundle.json``
    (``info`` + format, versions, the sha256 of every file and of every field: regressors.bundle_integrity)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_contents(folder, model, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info,
                                   "libraries": library_versions()})
    return folder


def write_contents(folder: Path, model: Any, meta: dict) -> dict:
    """model.skops, MODEL.md and the sealed bundle.json of ``meta``; returns bundle.json as written."""
    sio = skops_io()

    from . import bundle_integrity

    # the record is derived from bundle.json as a reader will parse it (numpy numbers, tuples -> JSON)
    meta = json.loads(json.dumps({k: v for k, v in meta.items() if k not in ("files", "manifest")},
                                 default=_jsonable))
    meta["files"] = {}
    bundle_integrity.attach(model, meta)
    sio.dump(model, folder / MODEL_FILE)
    untrusted = untrusted_types(sio, folder / MODEL_FILE)
    if untrusted:  # fail when saving, not when a user loads it
        raise BundleError(f"the fitted model holds types outside regressors.bundle.TRUSTED_TYPES/SKLEARN_TYPES: "
                          f"{untrusted}; add each (one line) if it is a plain estimator class")
    (folder / CARD).write_text(model_card(meta))
    return bundle_integrity.seal(folder, meta)


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ---------------------------------------------------------------- reading
def is_bundle(path: str | Path) -> bool:
    return (Path(path) / BUNDLE_JSON).is_file()


def read_info(folder: str | Path) -> dict:
    """bundle.json, checked; loads no model (safe on any folder)."""
    folder = Path(folder)
    path = folder / BUNDLE_JSON
    if not folder.exists():
        raise BundleError(f"model bundle {folder} does not exist")
    if not path.is_file():
        hint = (f" (it holds a legacy pickle {LEGACY_PICKLE}: load it with --trust-pickle only if you made it)"
                if (folder / LEGACY_PICKLE).is_file() else "")
        raise BundleError(f"{folder} is not a model bundle: {BUNDLE_JSON} is missing{hint}")
    text = path.read_text(errors="replace")
    if not text.strip():
        raise BundleError(f"{path} is empty: the bundle is damaged; train again (`aigcq regress`)")
    try:
        info = json.loads(text)
    except json.JSONDecodeError as err:
        raise BundleError(f"{path} is not valid JSON ({err.msg}, line {err.lineno} column {err.colno}): "
                          "the bundle is damaged; train again (`aigcq regress`)") from None
    except RecursionError:  # [[[[...]]]] thousands deep: no bundle aigcq writes nests beyond a few levels
        raise BundleError(f"{path} nests its JSON too deeply to be a bundle: the file is damaged or was not written "
                          "by `aigcq regress`") from None
    if not isinstance(info, dict):
        raise BundleError(f"{path} holds a JSON {type(info).__name__}, not an object: the bundle is damaged")
    missing = [k for k in REQUIRED if k not in info]
    if missing:
        raise BundleError(f"{path} lacks {', '.join(missing)}: not a bundle written by `aigcq regress`")
    try:
        newer = info["format"] != FORMAT or int(info["format_version"]) > FORMAT_VERSION
    except (TypeError, ValueError):
        newer = True
    if newer:
        raise BundleError(f"{path}: format {info['format']!r} version {info['format_version']!r} is not one this "
                          f"version reads ({FORMAT} <= {FORMAT_VERSION}); upgrade aigc-quality")
    check_shape(info, path)
    from . import bundle_integrity

    bundle_integrity.verify(folder, info)  # no field edited, no file added, removed or changed since it was written
    return info


def check_shape(info: dict, path) -> None:
    """The fields every reader indexes, of the right kind: a damaged but valid JSON file stops
    here with one line, not later with a KeyError/TypeError deep in scoring."""
    def bad(what: str) -> BundleError:
        return BundleError(f"{path}: {what}: the file is damaged or was not written by `aigcq regress`; "
                           "train again (or restore the file)")

    if info.get("track") not in ("image", "video"):
        raise bad(f"track is {info.get('track')!r}, not 'image' or 'video'")
    target = info.get("target")
    if not isinstance(target, dict) or not isinstance(target.get("name"), str):
        raise bad(f"target must be an object with a 'name', got {target!r}")
    feats = info.get("features")
    if not isinstance(feats, list) or not all(isinstance(f, dict) and isinstance(f.get("block"), str)
                                              and isinstance(f.get("key"), str) for f in feats):
        raise bad("features must be a list of objects with 'block' and 'key'")
    kept = info.get("kept_blocks")
    if kept is not None:
        names = [f["block"] for f in feats]
        if not isinstance(kept, list) or not kept or [b for b in names if b in kept] != kept:
            raise bad(f"kept_blocks must list some of the feature blocks {names} in their order, got {kept!r}")
        if not all(isinstance(f.get("dim"), int) for f in feats if f["block"] not in kept):
            raise bad("a block the model does not read must record its width ('dim'): its columns are zeros")
    if "n_features" in info and not isinstance(info["n_features"], int):
        raise bad(f"n_features is {info['n_features']!r}, not an integer")
    if not isinstance(info.get("files"), dict):
        raise bad("files must be an object (file name -> sha256)")


def kept_blocks(info: dict) -> list[str]:
    """The feature blocks the model reads, in feature order (all of them for a bundle that does not say)."""
    kept = info.get("kept_blocks")
    return [f["block"] for f in info["features"] if kept is None or f["block"] in kept]


def metadata_only(info: dict) -> bool:
    """Whether every block the model reads comes from the prompt or generator name: it then gives every file
    with the same prompt and generator the same score. A block of unrecorded kind counts as media."""
    kept = set(kept_blocks(info))
    return all(f.get("kind") in METADATA_KINDS for f in info["features"] if f["block"] in kept)


def metadata_only_warning(info: dict) -> str | None:
    """One line for the user when :func:`metadata_only` (None otherwise)."""
    if not metadata_only(info):
        return None
    return (f"this model scores from the prompt/generator only ({', '.join(kept_blocks(info))}): identical prompts "
            "(with the same generator) get identical scores; it ignores the media content")


def load_bundle(folder: str | Path) -> tuple[Any, dict]:
    """(model, info). Verifies the checksum, then loads with skops and the explicit trusted types."""
    folder = Path(folder)
    info = read_info(folder)
    model = load_model_file(folder, info)
    from . import bundle_integrity

    bundle_integrity.check_model(model, info, folder)  # bundle.json agrees with what the heads were fitted on
    return model, info


def load_model_file(folder: Path, info: dict) -> Any:
    """The fitted model in ``folder``'s model.skops: its sha256 as ``info`` records it, only trusted types, any
    failure one line (BundleError). Checks nothing of what it records (:func:`load_bundle` does)."""
    import zipfile

    sio = skops_io()
    path = folder / MODEL_FILE
    if not path.is_file():
        raise BundleError(f"{path} is missing: the bundle is incomplete; train again (`aigcq regress`)")
    if path.stat().st_size == 0:
        raise BundleError(f"{path} is empty (0 bytes): the bundle is damaged; train again (`aigcq regress`)")
    expected = str(info["files"].get(MODEL_FILE, "")).lower()
    data = path.read_bytes()  # read once: the bytes checked below are the bytes loaded (not a file swapped meanwhile)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise BundleError(f"{path}: sha256 {actual[:16]}… does not match {expected[:16] or '(none)'}… recorded in "
                          f"{BUNDLE_JSON} (changed or corrupted after it was saved)")
    try:
        trusted = trusted_types()
        untrusted = untrusted_types(sio, data)
    except zipfile.BadZipFile:
        raise BundleError(f"{path} is not a skops file (not a zip archive); refusing to load it") from None
    except Exception as err:
        raise BundleError(f"{path} cannot be read as a skops file ({type(err).__name__}: {err})") from None
    if untrusted:
        raise BundleError(f"refusing to load {path}: it holds types outside the trusted list: {', '.join(untrusted)}")
    try:
        model = sio.loads(data, trusted=trusted)
    except Exception as err:  # a damaged or crafted array (an object array, a shape of 10**11 floats): one line
        why = (str(err).splitlines() or [""])[0]
        raise BundleError(f"{path} cannot be loaded ({type(err).__name__}: {why}); the bundle is damaged: train again "
                          "(`aigcq regress`)") from None
    return model


def load_legacy_pickle(path: str | Path, trust_pickle: bool = False) -> tuple[Any, dict]:
    """A ``model.pkl`` from an earlier release: runs code when loaded, so only with ``trust_pickle``."""
    from . import model_io

    path = Path(path)
    if path.is_dir():
        path = path / LEGACY_PICKLE
    if not trust_pickle:
        raise BundleError(f"refusing to load {path}: a pickle runs code when it is loaded. Pass --trust-pickle "
                          "(Python: trust_pickle=True) only for a file you or your team produced")
    try:
        return model_io.load_model(path)
    except model_io.ModelChecksumError as err:
        raise BundleError(str(err)) from None


def load_model_any(path, trust_pickle: bool = False):
    """(model, info) from a bundle folder (no code runs), or from a legacy ``model.pkl`` with ``trust_pickle``."""
    p = Path(path)
    if is_bundle(p):
        return load_bundle(p)
    if p.is_dir() and (p / MODEL_DIR / BUNDLE_JSON).is_file():  # a run folder
        return load_bundle(p / MODEL_DIR)
    if p.suffix == ".pkl" or (p.is_dir() and (p / LEGACY_PICKLE).is_file()):
        model, meta = load_legacy_pickle(p, trust_pickle=trust_pickle)
        return model, legacy_info(meta, p)
    read_info(p)  # raises the precise error (missing folder, missing/invalid bundle.json)
    raise BundleError(f"{p} is not a model bundle")


def read_model_info(path) -> dict:
    """bundle.json of a bundle or run folder, without loading the model (a legacy pickle's .json likewise)."""
    p = Path(path)
    if p.is_dir() and not is_bundle(p) and (p / MODEL_DIR / BUNDLE_JSON).is_file():
        p = p / MODEL_DIR
    if p.suffix == ".pkl" or (p.is_dir() and (p / LEGACY_PICKLE).is_file() and not is_bundle(p)):
        from . import model_io

        pkl = p if p.suffix == ".pkl" else p / LEGACY_PICKLE
        try:
            return legacy_info(model_io.read_meta(pkl), model_io.meta_path(pkl))
        except ValueError as err:  # read_meta's message names the file and what to do
            raise BundleError(str(err)) from None
    return read_info(p)


def legacy_info(meta: dict, where="the legacy model's .json") -> dict:
    try:
        info = {"track": meta["track"], "target": {"name": meta["target"]}, "n_features": meta["n_features"],
                "features": [{"block": b, "key": k} for b, k in meta["store_keys"].items()], "legacy_pickle": True,
                "files": {}}
    except (KeyError, TypeError, AttributeError) as err:
        raise BundleError(
            f"{where}: expected an object with track, target, n_features and store_keys ({type(err).__name__}: "
            f"{err}); the file is damaged: restore it or train again (`aigcq regress` writes a model bundle)") from None
    check_shape(info, where)
    return info


# ---------------------------------------------------------------- the card
def _reads_line(info: dict) -> str:
    kept = kept_blocks(info)
    dropped = [f["block"] for f in info["features"] if f["block"] not in kept]
    return (f"The model reads {', '.join(kept)}" + (f"; nested block selection dropped {', '.join(dropped)} "
                                                     "(never computed when scoring)." if dropped else "."))


def _fmt(v, nd=3) -> str:
    return "–" if v is None else (f"{v:.{nd}f}" if isinstance(v, (int, float)) else str(v))


def _trust_lines(info: dict) -> list[str]:
    from .trust import card_lines  # in_domain, domain_score, score_lo/score_hi: regressors/trust.py

    return card_lines(info)


def _bounds_line(info: dict) -> str:
    """Whether scores stay inside the training target range (StackConfig.bound_scores, recorded in ``config``)."""
    t = info.get("target", {})
    if (info.get("config") or {}).get("bound_scores"):
        return (f"Every head's prediction and the score are bounded to the training target range "
                f"{_fmt(t.get('min'))} – {_fmt(t.get('max'))}: no score leaves it, whatever the input.")
    return ("**Scores are not bounded** (a model fitted before bounded scores existed, or with bound_scores off): "
            "on media unlike the training items a score can leave the training target range; refit to bound it.")


def model_card(info: dict) -> str:
    """MODEL.md: what the model predicts, from what, how well, and how to use it."""
    t, tr = info.get("target", {}), info.get("training", {})
    cv = tr.get("cv", {})
    ci = (cv.get("ci") or {}).get("main")
    warning = metadata_only_warning(info)
    lines = [f"# {info.get('track', '?')} quality model: predicts `{t.get('name')}`", "",
             f"Trained {info.get('created', '')} on **{tr.get('dataset', '?')}** (`{tr.get('split', 'train')}` split, "
             f"{tr.get('items', '?')} labelled items; target range {_fmt(t.get('min'))} – {_fmt(t.get('max'))}, "
             f"mean {_fmt(t.get('mean'))}).", "",
             *([f"**Warning: {warning}.**", ""] if warning else []),
             "## Score", "",
             f"Cross-validated ({tr.get('protocol', '?')} {tr.get('folds', '?')}-fold, nesting `{tr.get('nested', '?')}`; "
             f"{cv.get('n', '?')} items scored): **main {_fmt(cv.get('main'))}**"
             + (f" [95% CI {ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
             + f", SRCC {_fmt(cv.get('srcc'))}, PLCC {_fmt(cv.get('plcc'))}.", "",
             "main = (|SRCC| + |PLCC|)/2 (NTIRE 2024 AIGC quality), PLCC after a third-order polynomial fit.", "",
             "## Features (recomputed from these specs when scoring)", "", _reads_line(info), "",
             "| block | store key | extractor options | precision | dim | read |", "|---|---|---|---|---|---|"]
    kept = kept_blocks(info)
    for f in info.get("features", []):
        ident = f.get("identity", {})
        opts = ", ".join(f"{k}={v!r}" for k, v in (f.get("options") or {}).items()) or "defaults"
        used = "yes" if f.get("block") in kept else "no (dropped: never computed)"
        lines.append(f"| {f.get('block')} | `{f.get('key')}` | {opts} | {ident.get('precision', '?')} | {f.get('dim')} "
                     f"| {used} |")
    vocab = info.get("generator_vocabulary")
    if vocab is not None:
        lines += ["", f"Generators the model knows ({len(vocab)}): {', '.join(vocab) or '(none)'}. "
                      "Any other (or none) sets the `generator_unknown` flag."]
    heads = info.get("heads", [])
    w = info.get("meta_weights", {})
    lines += ["", "## Model", "",
              f"{len(heads)} heads ({', '.join(heads)}) stacked by a non-negative linear meta-learner"
              + (f" (weights: {', '.join(f'{k} {v:.2f}' for k, v in w.items() if v)})" if w else "") + ".", "",
              _bounds_line(info), "",
              *_trust_lines(info),
              "## Use", "", "```bash", "aigcq score <this folder> images/ --prompts prompts.csv -o scores.csv", "```",
              "", "```python", "from aigcq import Predictor",
              "p = Predictor.load('<this folder>')", "df = p.score(['a.png', 'b.png'], prompts=['...', '...'])",
              "```", "", "## Versions", "",
              ", ".join(f"{k} {v}" for k, v in info.get("libraries", {}).items()), "",
              f"Loading needs no pickle: `{MODEL_FILE}` is read with skops and an explicit list of trusted types.", ""]
    return "\n".join(lines)
