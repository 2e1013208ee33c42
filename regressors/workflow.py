"""`fit` and `predict`: store -> honest CV score, final model, reports, submission files."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import model_io
from .data import load_track, splits_of
from .report import markdown_report, per_group, safe_evaluate, scatter_plot, write_json
from .stacking import StackConfig, StackedModel, cross_validate, fit_stack
from .submission import write_submission

MODEL_FILE = "model.pkl"
NESTED_NOTE = {
    "split": "hyper-parameters and meta-learner weights chosen on a held-apart tuning subset of whole prompts; "
             "the CV score covers only the other items, none of which was seen in tuning",
    "full": "tuning and meta-learner fit inside every outer training fold; every item scored once",
}


def _runtime(data, predict_seconds: float, n: int) -> tuple[float, str]:
    if data.runtime and len(data.runtime) == len(data.keys):
        return float(sum(data.runtime.values())) + predict_seconds / max(n, 1), (
            "feature extraction time per item recorded in the store, plus regression time")
    return predict_seconds / max(n, 1), (
        "regression time only, measured on this machine (the store records no extraction time)")


def _on_gpu(devices: dict[str, str]) -> bool:
    """Whether any feature was extracted on an accelerator (the readme's "CPU[1] / GPU[0]" line)."""
    return any(not str(d).lower().startswith("cpu") for d in devices.values())


HEAD_LABELS = {"svr": "SVR", "enet": "ElasticNet", "lgbm": "LightGBM", "knn": "kNN"}


def _describe(track: str, keys: dict[str, str], devices: dict[str, str], head_names: list[str]) -> str:
    """The readme's "Other description": features, the model's own heads, where it ran."""
    if devices:
        where = "extraction on " + ", ".join(sorted(set(devices.values()))) + ", heads on CPU"
        if len(devices) < len(keys):
            where += f" (device not recorded for {len(keys) - len(devices)} of {len(keys)} features)"
    else:
        where = "CPU heads; the store records no extraction device"
    heads = "/".join(HEAD_LABELS.get(n, n) for n in head_names if not n.startswith("block:"))
    if any(n.startswith("block:") for n in head_names):
        heads += " + one head per feature block"
    return (f"Frozen pretrained features ({', '.join(keys)}) + {heads} stacked by a "
            f"non-negative linear meta-learner ({track} track); trained only on the challenge training data; {where}.")


def fit_command(track: str, store: str, extractors: list[str] | None, target: str, out: str,
                cfg: StackConfig, n_boot: int = 1000, submit_split: str | None = None) -> dict:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    data = load_track(store, extractors, split="train", target=target)
    print(f"train: {len(data.y)} labelled items, {data.X.shape[1]} features in blocks "
          f"{ {b: r[1] - r[0] for b, r in data.blocks.items()} }")

    t0 = time.perf_counter()
    cv = cross_validate(data.X, data.y, data.groups, data.blocks, cfg)
    t_cv = time.perf_counter() - t0
    scored = cv["scored"]
    y_s = data.y[scored]
    nested = cv["info"]["nested"]  # "auto" resolved by the number of items
    metrics: dict = {"track": track, "target": target, "protocol": cfg.protocol,
                     "folds": cv["info"].get("outer_folds", cfg.outer_folds), "nested": nested,
                     "nested_requested": cfg.nested, "nested_note": NESTED_NOTE[nested], "store": str(store),
                     "store_keys": data.keys}
    metrics.update(safe_evaluate(cv["stack"], y_s, n_boot=n_boot))
    metrics["heads"] = {n: safe_evaluate(p, y_s, n_boot=0) for n, p in cv["heads"].items()
                        if not n.startswith(("block:", "fixed:"))}
    metrics["fixed_heads"] = {n.split(":", 1)[1]: safe_evaluate(p, y_s, n_boot=0)
                              for n, p in cv["heads"].items() if n.startswith("fixed:")}
    metrics["blocks"] = {n.split(":", 1)[1]: safe_evaluate(p, y_s, n_boot=0)
                         for n, p in cv["heads"].items() if n.startswith("block:")}
    metrics["per_generator"] = per_group(cv["stack"], y_s, data.generators[scored])
    metrics["cv_info"] = cv["info"]

    t0 = time.perf_counter()
    # nested=split tuned on exactly the subset the final fit would tune on: reuse it
    model = fit_stack(data.X, data.y, data.groups, data.blocks, cfg, tag="final", tuned=cv.get("tuned"))
    t_fit = time.perf_counter() - t0
    metrics["meta_weights"] = model.weights()
    model_meta = {"track": track, "target": target, "store_keys": data.keys, "blocks": data.blocks,
                  "n_features": int(data.X.shape[1]), "config": cfg.to_dict(), "cv_main": metrics.get("main")}
    model_path = model_io.save_model(model, out_dir / MODEL_FILE, model_meta)

    # predictions: CV (honest) for scored training items; in-sample for the tuning set
    src = np.full(len(data.y), "tuning_set_in_sample", dtype=object)
    pred = model.predict(data.X)
    pred[scored] = cv["stack"]
    src[scored] = "cv_out_of_fold"
    frames = [pd.DataFrame({"item_id": data.ids, "split": "train", "prediction": pred, "target": data.y,
                            "source": src})]

    heldout, submitted = {}, {}
    splits = splits_of(store, target)
    unlabelled = [s for s, lab in splits.items() if not lab]
    submit_split = submit_split or ("test" if "test" in unlabelled else (unlabelled[0] if unlabelled else None))
    for split, labelled in splits.items():
        if split == "train":
            continue
        part = load_track(store, list(data.keys.values()), split=split, target=target if labelled else None)
        t0 = time.perf_counter()
        p = model.predict(part.X)
        dt = time.perf_counter() - t0
        if labelled:
            heldout[split] = safe_evaluate(p, part.y, n_boot=n_boot)
            frames.append(pd.DataFrame({"item_id": part.ids, "split": split, "prediction": p, "target": part.y,
                                        "source": "heldout"}))
        else:
            frames.append(pd.DataFrame({"item_id": part.ids, "split": split, "prediction": p, "target": np.nan,
                                        "source": "unlabelled"}))
            runtime, how = _runtime(part, dt, len(p))
            folder = out_dir / ("submission" if split == submit_split else f"submission_{split}")
            write_submission(folder, part.names, p, runtime, how,
                             _describe(track, data.keys, part.devices, model.names), cpu=not _on_gpu(part.devices))
            submitted[split] = {"folder": str(folder), "n": int(len(p)), "runtime_per_item_s": runtime,
                                "runtime_source": how}
    metrics["heldout"] = heldout
    metrics["submissions"] = submitted
    metrics["timing"] = {"cross_validation_s": t_cv, "final_fit_s": t_fit,
                         "total_s": time.perf_counter() - t_start}
    metrics["model_file"] = str(model_path)

    pd.concat(frames, ignore_index=True).to_csv(out_dir / "predictions.csv", index=False)
    write_json(out_dir / "metrics.json", metrics)
    (out_dir / "report.md").write_text(markdown_report(metrics))
    scatter_plot(cv["stack"], y_s, out_dir / "scatter.png",
                 title=f"{track}: stacked, {cfg.protocol} CV, main {metrics.get('main', float('nan')):.3f}")
    print(f"main {metrics.get('main', float('nan')):.4f} (SRCC {metrics.get('srcc', float('nan')):.4f}, "
          f"PLCC {metrics.get('plcc', float('nan')):.4f}) on {metrics.get('n')} items; wrote {out_dir}")
    return metrics


class MissingFeaturesError(RuntimeError):
    """The store lacks an extractor configuration the model was trained on."""


def check_store_has(store: str, needed: dict[str, str]) -> None:
    from .data import store_keys_by_name

    have = store_keys_by_name(store)
    all_keys = {k for ks in have.values() for k in ks}
    missing = {b: k for b, k in needed.items() if k not in all_keys}
    if missing:
        lines = []
        for b, k in missing.items():
            name = k.rsplit("-", 1)[0]
            other = have.get(name)
            lines.append(f"  - {k} ({b}): " + (f"the store has {name!r} only with another configuration: "
                                                  f"{', '.join(other)}" if other else f"the store has no {name!r} features"))
        raise MissingFeaturesError(
            f"{store} lacks feature configuration(s) the model was trained on:\n" + "\n".join(lines) +
            "\nRun `make features` with the same extractor options on this dataset first (store keys must match).")


def predict_command(model_file: str, store: str, split: str, out: str, n_boot: int = 1000) -> dict:
    meta = model_io.read_meta(model_file)  # no unpickling before the store check
    check_store_has(store, meta["store_keys"])
    model, meta = model_io.load_model(model_file)
    if not isinstance(model, StackedModel) and not hasattr(model, "predict"):
        raise TypeError(f"{model_file} does not hold a regressors model")
    labelled = splits_of(store, meta["target"]).get(split)
    if labelled is None:
        raise ValueError(f"{store} has no split {split!r}; splits: {sorted(splits_of(store, meta['target']))}")
    data = load_track(store, list(meta["store_keys"].values()), split=split,
                      target=meta["target"] if labelled else None)
    if data.X.shape[1] != meta["n_features"]:
        raise MissingFeaturesError(f"features read have {data.X.shape[1]} columns, the model expects {meta['n_features']}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    p = model.predict(data.X)
    dt = time.perf_counter() - t0
    df = pd.DataFrame({"item_id": data.ids, "prediction": p})
    result: dict = {"split": split, "n": int(len(p)), "model": str(model_file)}
    if labelled:
        df["target"] = data.y
        result.update(safe_evaluate(p, data.y, n_boot=n_boot))
        scatter_plot(p, data.y, out_dir / "scatter.png", title=f"{split}: main {result.get('main', float('nan')):.3f}")
    runtime, how = _runtime(data, dt, len(p))
    write_submission(out_dir / "submission", data.names, p, runtime, how,
                     _describe(meta["track"], meta["store_keys"], data.devices, model.names),
                     cpu=not _on_gpu(data.devices))
    result["runtime_per_item_s"], result["runtime_source"] = runtime, how
    df.to_csv(out_dir / "predictions.csv", index=False)
    write_json(out_dir / "metrics.json", result)
    print(f"scored {len(p)} items of {split!r}; wrote {out_dir}")
    return result
