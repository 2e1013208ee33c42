"""`fit` and `predict`: store -> honest CV score, final model, reports, submission files."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import bundle as bundle_io
from . import target_scale
from .bundle import MODEL_DIR, legacy_info, load_model_any, read_model_info  # noqa: F401 (re-exported)
from .data import (IncompleteFeaturesError, check_media_unchanged, completeness, incomplete_message, load_track,
                   splits_of)
from .report import markdown_report, per_group, safe_evaluate, scatter_plot, write_json
from .rundir import check_replaceable, staged
from .stacking import StackConfig, cross_validate
from .submission import check_names, write_submission
from .in_sample import REFUSE_FROM, overlap, training_items
from .trust import assess, trust_summary
from .trust_fit import fit_trust

NESTED_NOTE = {
    "split": "hyper-parameters and meta-learner weights chosen on a held-apart tuning subset of whole prompts; "
             "the CV score covers only the other items, none of which was seen in tuning",
    "cross": "the prompts split in two shares; each share scored by heads and meta-learner weights tuned on the "
             "other share only; every item scored once",
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


def _store_meta(store) -> dict:
    from features_store import FeatureStore

    with FeatureStore(os.fspath(store), mode="r") as st:
        return {"dataset": st.meta.get("name"), "root": st.meta.get("root"), "adapter": st.meta.get("adapter"),
                "items": len(st)}


def _split_names(store, split: str) -> list[str]:
    from features_store import FeatureStore

    with FeatureStore(os.fspath(store), mode="r") as st:
        cols = ["name", "split"] if "name" in st.df else ["item_id", "split"]
        df = st.columns(cols)
        return df.loc[df["split"] == split, cols[0]].astype(str).tolist()


def _precheck_splits(store, keys: list[str], splits: dict[str, bool], track: str,
                     allow_incomplete: bool) -> dict[str, str]:
    """Before any fitting: every split to score must be complete (unless allowed) and every split to submit
    must have names output.txt can hold. Returns {unlabelled split: why its submission is refused}."""
    from features_store import FeatureStore

    refused = {}
    with FeatureStore(os.fspath(store), mode="r") as st:
        for split, labelled in splits.items():
            if split == "train":
                continue
            issues = completeness(st, keys, split)
            if issues and not allow_incomplete:
                raise IncompleteFeaturesError(
                    incomplete_message(st, issues, track, f"its {'scores' if labelled else 'submission'}") +
                    "\n  (--allow-incomplete fits and scores the done subset; a submission is never written "
                    "for an incomplete split)")
            if issues and not labelled:
                refused[split] = (f"{', '.join(i['key'] for i in issues)}: "
                                  f"{min(i['done'] for i in issues)} of {issues[0]['items']} items done")
    for split, labelled in splits.items():
        if split != "train" and not labelled:
            check_names(_split_names(store, split), split)
    return refused


def _feature_specs(store, data) -> list[dict]:
    """Per block: store key, full identity, the options that rebuild it, width and columns (bundle.json)."""
    from features_store import FeatureStore

    out = []
    with FeatureStore(os.fspath(store), mode="r") as st:
        for block, key in data.keys.items():
            c = st.config(key)
            entry = {"block": block, "key": key, "name": c["name"], "kind": c["kind"],
                     "dim": data.blocks[block][1] - data.blocks[block][0], "columns": data.blocks[block],
                     "identity": c["identity"]}
            try:
                from extractors.registry import options_from_identity, spec_string

                entry["options"] = options_from_identity(c["identity"])
                entry["spec"] = spec_string(c["identity"]["name"], entry["options"])
            except Exception as err:  # an extractor this installation lacks (a plugin): the identity still says all
                entry["options"], entry["spec"] = None, None
                entry["rebuild_error"] = f"{type(err).__name__}: {err}"
            if block in data.vocabularies:
                entry["vocabulary"] = data.vocabularies[block]
            out.append(entry)
    return out


def _blocks_read(model, blocks: dict[str, list[int]], n_features: int) -> list[str]:
    """The blocks the fitted model's predictions depend on, in feature order: those nested block selection
    kept (all when it was off), plus the content blocks a generator probe reads to fill a kept generator block."""
    selection = model.info.get("block_selection")
    read = set(selection["kept"] if selection else blocks)
    probe = getattr(model, "probe", None)  # generator_probe.ProbedModel
    if probe is not None and probe.generator in read:
        read.update(probe._content(n_features))
    return [b for b in blocks if b in read]


def _bundle_info(track: str, target: str, store, data, cfg: StackConfig, metrics: dict, model) -> dict:
    y = data.y
    vocab = next(iter(data.vocabularies.values()), None) if data.vocabularies else None
    cv = {k: metrics.get(k) for k in ("main", "srcc", "plcc", "krcc", "rmse", "n", "ci") if k in metrics}
    k = target_scale.exponent(y)  # mean and sd computed at the fit's scale: no underflow at mos x 1e-300
    ys = target_scale.scale(y, k)
    return {
        "track": track,
        "target": {"name": target, "min": float(np.min(y)), "max": float(np.max(y)),
                   "mean": float(target_scale.unscale(np.mean(ys), k)), "sd": float(target_scale.unscale(np.std(ys), k)),
                   **({"scale_exp": k} if k else {})},
        "features": _feature_specs(store, data),
        "kept_blocks": _blocks_read(model, data.blocks, data.X.shape[1]),
        "n_features": int(data.X.shape[1]),
        "generator_vocabulary": vocab,
        "heads": model.names,
        "meta_weights": model.weights(),
        "config": cfg.to_dict(),
        "training": {**_store_meta(store), "store": str(store), "split": "train", "items": int(len(y)),
                     "protocol": cfg.protocol, "nested": metrics.get("nested"), "folds": metrics.get("folds"),
                     "cv": cv, "items_missing_features": data.incomplete or None,
                     "item_keys": training_items(store, data.ids)},  # predict's in-sample check (in_sample.py)
    }


def fit_command(track: str, store: str, extractors: list[str] | None, target: str, out: str,
                cfg: StackConfig, n_boot: int = 1000, submit_split: str | None = None,
                allow_incomplete: bool = False, media_check: bool = True) -> dict:
    """Tune, cross-validate and fit on ``train``; write the run folder ``out`` whole (see rundir).

    ``media_check``: refuse features computed from media files that changed since (every split is read:
    the training items and the ones predicted); see :func:`_check_media`."""
    t_start = time.perf_counter()
    final_dir = Path(out)
    check_replaceable(final_dir)  # before any work: --out must be new, empty or a run folder aigcq wrote
    _check_media(store, extractors, None, track, media_check)
    data = load_track(store, extractors, split="train", target=target, allow_incomplete=allow_incomplete,
                      track=track, what="the fit")
    from features_store.targets import check_target

    check_target(data.y, data.ids, target, where=f"{store}, split 'train': ")  # inf, 1e308, constant, too few
    splits = splits_of(store, target)
    refused = _precheck_splits(store, list(data.keys.values()), splits, track, allow_incomplete)
    print(f"train: {len(data.y)} labelled items, {data.X.shape[1]} features in blocks "
          f"{ {b: r[1] - r[0] for b, r in data.blocks.items()} }")
    if data.incomplete:
        print(f"note: fitting on the done subset ({len(data.y)} items; --allow-incomplete)")

    with staged(final_dir, job="regress") as out_dir:
        metrics = _fit_into(out_dir, final_dir, track, store, data, splits, refused, target, cfg, n_boot,
                            submit_split, allow_incomplete, t_start)
    print(f"main {metrics.get('main', float('nan')):.4f} (SRCC {metrics.get('srcc', float('nan')):.4f}, "
          f"PLCC {metrics.get('plcc', float('nan')):.4f}) on {metrics.get('n')} items; wrote {final_dir}")
    for warning in metrics.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    if refused:
        raise IncompleteFeaturesError("submission NOT written for " + "; ".join(
            f"split {s!r} ({why})" for s, why in refused.items()) + f". The rest of the run is in {final_dir}.")
    return metrics


def _fit_into(out_dir: Path, final_dir: Path, track, store, data, splits, refused, target, cfg, n_boot,
              submit_split, allow_incomplete, t_start) -> dict:
    # the rows the final model predicts: the other splits, and the training items it does not score
    # (nested=split: the tuning set, predicted in-sample); these predictions and the final fit are tasks of
    # cross-validation's graph on the workers (see cross_validate)
    unlabelled = [s for s, lab in splits.items() if not lab]
    submit_split = submit_split or ("test" if "test" in unlabelled else (unlabelled[0] if unlabelled else None))
    parts = {split: load_track(store, list(data.keys.values()), split=split, target=target if labelled else None,
                               allow_incomplete=allow_incomplete, vocabularies=_vocab_by_key(data), track=track)
             for split, labelled in splits.items() if split != "train"}
    t0 = time.perf_counter()
    other_x = [p.X for p in parts.values()]
    probe, probe_info = None, None
    if cfg.generator_probe:  # fill unknown generators of the other splits before the final model predicts them
        from .generator_probe import fill_generator, probe_for_fit

        probe, probe_info = probe_for_fit(data.X, data.groups, data.blocks, seed=cfg.seed, protocol=cfg.protocol,
                                          has_unknown_flag="generator" in data.vocabularies)
        if probe is not None:
            probe_info["filled"] = {s: int((~probe.known_mask(p.X)).sum()) for s, p in parts.items()}
            other_x = [fill_generator(x, probe) for x in other_x]
        print(f"generator probe: {probe_info}")
    # an extreme target scale (mos x 1e-300) is fitted times an exact power of two; k = 0 (no change) otherwise
    k = target_scale.exponent(data.y)
    cv = cross_validate(data.X, target_scale.scale(data.y, k), data.groups, data.blocks, cfg,
                        final_predict=np.vstack(other_x) if other_x else data.X[:0])
    if k:
        _unscale_cv(cv, k)
    t_cv = time.perf_counter() - t0
    scored = cv["scored"]
    y_s = data.y[scored]
    nested = cv["info"]["nested"]  # "auto" resolved by the number of items
    metrics: dict = {"track": track, "target": target, "protocol": cfg.protocol,
                     "folds": cv["info"].get("outer_folds", cfg.outer_folds), "nested": nested,
                     "nested_requested": cfg.nested, "nested_note": NESTED_NOTE[nested], "store": str(store),
                     "store_keys": data.keys}
    if data.incomplete:
        metrics["train_items_missing_features"] = data.incomplete
    metrics.update(safe_evaluate(cv["stack"], y_s, n_boot=n_boot))
    if not np.isfinite(metrics.get("main", np.nan)):  # never a model whose honest score is undefined
        from features_store.targets import TargetError

        raise TargetError(f"the cross-validated score of {target!r} is undefined "
                          f"({metrics.get('error', 'main is NaN')}): no model written")
    metrics["heads"] = {n: _head_evaluate(p, y_s) for n, p in cv["heads"].items()
                        if not n.startswith(("block:", "fixed:"))}
    metrics["fixed_heads"] = {n.split(":", 1)[1]: _head_evaluate(p, y_s)
                              for n, p in cv["heads"].items() if n.startswith("fixed:")}
    metrics["blocks"] = {n.split(":", 1)[1]: _head_evaluate(p, y_s)
                         for n, p in cv["heads"].items() if n.startswith("block:")}
    metrics["per_generator"] = per_group(cv["stack"], y_s, data.generators[scored])
    metrics["cv_info"] = cv["info"]

    # the final model was fitted in cross-validation's graph of tasks (split/cross: on the reused tuning, split
    # tuned on exactly the subset the final fit would tune on, cross reuses its first share's; full: tuned on
    # all items there), and it predicted the other splits and the training items not scored (split's tuning set)
    model, per_row = cv["final"], cv["final_predict_s_per_row"]
    if k:
        model.target_scale_exp = k  # StackedModel.predict divides by 2**k: the bundle scores in the target's units
    in_sample, train_pred = cv["final_in_sample"]
    others = cv["final_predictions"]
    metrics["meta_weights"] = model.weights()
    metrics["block_selection"] = model.info.get("block_selection")
    if probe is not None:  # the bundle fills unknown generators too (make predict, aigcq score)
        from .generator_probe import ProbedModel

        model = ProbedModel(model, probe)
    if probe_info is not None:
        metrics["generator_probe"] = probe_info
    info = _bundle_info(track, target, store, data, cfg, metrics, model)
    # in_domain and score_lo/score_hi: calibrated on the cross-validated items, saved with the model
    info["trust"] = metrics["trust"] = fit_trust(model, data.X, data.y, data.groups, info, cv, seed=cfg.seed,
                                                 protocol=cfg.protocol)
    bundle_io.save_bundle(out_dir / MODEL_DIR, model, info)
    metrics["kept_blocks"] = info["kept_blocks"]
    warning = bundle_io.metadata_only_warning(info)
    if warning:  # printed by fit_command after the score, where it is seen
        dropped = [b for b in data.blocks if b not in info["kept_blocks"]]
        metrics["warnings"] = [warning + (f" (nested block selection dropped {', '.join(dropped)}; "
                                          "--no-select-blocks keeps every block)" if dropped else "")]

    # predictions: CV (honest) for scored training items, in-sample for the tuning set only (predicting
    # all would have the scored items' in-sample predictions overwritten), then every other split
    ends = np.cumsum([len(x) for x in other_x])
    pieces = dict(zip(parts, np.split(others, ends[:-1])))
    src = np.full(len(data.y), "tuning_set_in_sample", dtype=object)
    pred = np.empty(len(data.y))
    pred[in_sample] = train_pred
    pred[scored] = cv["stack"]
    src[scored] = "cv_out_of_fold"
    frames = [pd.DataFrame({"item_id": data.ids, "split": "train", "prediction": pred, "target": data.y,
                            "source": src})]

    heldout, submitted = {}, {}
    for split, part in parts.items():
        labelled = splits[split]
        p = pieces[split]
        if labelled:
            heldout[split] = safe_evaluate(p, part.y, n_boot=n_boot)
            if part.incomplete:
                heldout[split]["items_missing_features"] = part.incomplete
            frames.append(pd.DataFrame({"item_id": part.ids, "split": split, "prediction": p, "target": part.y,
                                        "source": "heldout"}))
        else:
            frames.append(pd.DataFrame({"item_id": part.ids, "split": split, "prediction": p, "target": np.nan,
                                        "source": "unlabelled"}))
            if split in refused:
                submitted[split] = {"refused": f"incomplete features: {refused[split]}"}
                continue
            runtime, how = _runtime(part, per_row * len(p), len(p))
            folder = out_dir / ("submission" if split == submit_split else f"submission_{split}")
            write_submission(folder, part.names, p, runtime, how,
                             _describe(track, data.keys, part.devices, model.names), cpu=not _on_gpu(part.devices))
            submitted[split] = {"folder": str(final_dir / folder.name), "n": int(len(p)),
                                "runtime_per_item_s": runtime, "runtime_source": how}
    metrics["heldout"] = heldout
    metrics["submissions"] = submitted
    # final_fit_s: 0, the final fit is part of cross_validation_s now (kept: benchmarks compare with older runs)
    metrics["timing"] = {"cross_validation_s": t_cv, "final_fit_s": 0.0,
                         "total_s": time.perf_counter() - t_start}
    metrics["model_bundle"] = str(final_dir / MODEL_DIR)

    pd.concat(frames, ignore_index=True).to_csv(out_dir / "predictions.csv", index=False)
    write_json(out_dir / "metrics.json", metrics)
    (out_dir / "report.md").write_text(markdown_report(metrics))
    scatter_plot(cv["stack"], y_s, out_dir / "scatter.png",
                 title=f"{track}: stacked, {cfg.protocol} CV, main {metrics.get('main', float('nan')):.3f}")
    return metrics


def _check_media(store, extractors, split: str | None, track: str, media_check: bool) -> None:
    """Features computed from a media file that changed (or is gone) since are refused, naming the items and
    the `aigcq features` command that refreshes them; one stat per item (regressors.data.check_media_unchanged).
    ``media_check=False`` (--skip-media-check) reads the stored features as they are, with a note."""
    if media_check:
        check_media_unchanged(store, extractors, split, track)
    else:
        print("note: --skip-media-check: the stored features are read without comparing them with the media files",
              file=sys.stderr)


def _head_evaluate(pred, y) -> dict:
    """A base head's CV score; on the items it predicted when block selection dropped it in some outer folds."""
    ok = np.isfinite(pred)
    if ok.all():
        return safe_evaluate(pred, y, n_boot=0)
    out = safe_evaluate(pred[ok], y[ok], n_boot=0)
    out["note"] = f"head absent from some outer folds (block not selected there): scored on {int(ok.sum())} of {len(y)}"
    return out


def _unscale_cv(cv: dict, k: int) -> None:
    """cross_validate's predictions of a target fitted times 2**k, back in the target's units (exact)."""
    cv["stack"] = target_scale.unscale(cv["stack"], k)
    cv["heads"] = {n: target_scale.unscale(p, k) for n, p in cv["heads"].items()}
    if "final_predictions" in cv:
        cv["final_predictions"] = target_scale.unscale(cv["final_predictions"], k)
        rows, pred = cv["final_in_sample"]
        cv["final_in_sample"] = (rows, target_scale.unscale(pred, k))


def _vocab_by_key(data) -> dict[str, list[str]]:
    return {data.keys[b]: v for b, v in data.vocabularies.items()}


class MissingFeaturesError(RuntimeError):
    """The store lacks an extractor configuration the model was trained on."""


class InSampleError(ValueError):
    """Scoring the model's own training split would report an in-sample score."""


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


def predict_command(model_path: str, store: str, split: str, out: str, n_boot: int = 1000,
                    allow_incomplete: bool = False, allow_in_sample: bool = False,
                    trust_pickle: bool = False, media_check: bool = True, level: float | None = None) -> dict:
    """Score split ``split`` of ``store``; predictions.csv has per item the prediction, its interval at ``level``
    (score_lo, score_hi; default the bundle's 90%), in_domain and domain_score (regressors.trust)."""
    check_replaceable(Path(out))
    info = read_model_info(model_path)  # nothing is loaded before the store and split checks
    # only the blocks the model reads: a block nested selection dropped need not be in the store
    kept = set(bundle_io.kept_blocks(info))
    needed = {f["block"]: f["key"] for f in info["features"] if f["block"] in kept}
    check_store_has(store, needed)
    _check_media(store, list(needed.values()), split, info["track"], media_check)
    target = info["target"]["name"]
    splits = splits_of(store, target)
    labelled = splits.get(split)
    if labelled is None:
        raise ValueError(f"{store} has no split {split!r}; splits: {sorted(splits)}")
    in_sample, n_train, n_split = _in_sample(info, store, split)
    if in_sample and not allow_in_sample:
        how = "same media content, or the same item id, prompt and generator where no media is recorded"
        what = ("it is the split this model was trained on" if n_train is None else
                f"it is the split this model was trained on (all {n_split} items: {how})" if n_train == n_split else
                f"{n_train} of its {n_split} items are items this model was trained on ({how})")
        raise InSampleError(
            f"split {split!r} of {store}: {what}: its score would be in-sample "
            f"(optimistic), not a test score; the honest cross-validated score is in the model's card "
            f"(main {info.get('training', {}).get('cv', {}).get('main', float('nan')):.3f}). Score another split, "
            "or pass --allow-in-sample to see the in-sample fit (no submission is written for it)")
    if n_train:
        print(f"warning: {n_train} of the {n_split} items of split {split!r} are training items of this model "
              "(same media content, or id, prompt and generator): their predictions are in-sample", file=sys.stderr)
    vocabs = {f["key"]: f["vocabulary"] for f in info["features"] if f.get("vocabulary") is not None}
    data = load_track(store, list(needed.values()), split=split, target=target if labelled else None,
                      allow_incomplete=allow_incomplete, vocabularies=vocabs, track=info["track"],
                      what="the predictions" if labelled else "the submission")
    X = _model_columns(data, info)
    if X.shape[1] != info["n_features"]:
        raise MissingFeaturesError(f"features read have {X.shape[1]} columns, the model expects {info['n_features']}")
    model, info = load_model_any(model_path, trust_pickle=trust_pickle)
    with staged(out, job="predict") as out_dir:
        t0 = time.perf_counter()
        p = model.predict(X)
        dt = time.perf_counter() - t0
        trust = assess(model, X, p, level)
        df = pd.DataFrame({"item_id": data.ids, "prediction": p, **trust})
        result: dict = {"split": split, "n": int(len(p)), "model": str(model_path), "in_sample": in_sample,
                        "training_items_in_split": n_train, **trust_summary(trust, data.y if labelled else None)}
        if data.incomplete:
            result["items_missing_features"] = data.incomplete
        if labelled:
            df["target"] = data.y
            result.update(safe_evaluate(p, data.y, n_boot=n_boot))
            scatter_plot(p, data.y, out_dir / "scatter.png",
                         title=f"{split}{' (IN-SAMPLE)' if in_sample else ''}: main {result.get('main', float('nan')):.3f}")
        runtime, how = _runtime(data, dt, len(p))
        if in_sample:
            result["submission"] = "not written: in-sample split"
        elif data.incomplete:
            result["submission"] = "not written: incomplete features"
        else:
            write_submission(out_dir / "submission", data.names, p, runtime, how,
                             _describe(info["track"], needed, data.devices, model.names),
                             cpu=not _on_gpu(data.devices))
        result["runtime_per_item_s"], result["runtime_source"] = runtime, how
        df.to_csv(out_dir / "predictions.csv", index=False)
        write_json(out_dir / "metrics.json", result)
    note = " IN-SAMPLE (training split): not a test score" if in_sample else ""
    print(f"scored {len(p)} items of {split!r}; wrote {out}{note}")
    if data.incomplete and not in_sample:
        raise IncompleteFeaturesError(f"submission NOT written: split {split!r} is incomplete "
                                      f"({len(p)} items scored); predictions.csv in {out} holds the done items")
    return result


def _model_columns(data, info: dict) -> np.ndarray:
    """The model's feature matrix from the blocks read: a dropped block's columns are zeros (no head reads them).

    Matched by store key: a block's name in ``data`` depends on what else was loaded (two configurations
    of one extractor are named by their keys, one alone by the extractor's name)."""
    if len(data.blocks) == len(info["features"]):
        return data.X
    by_key = {data.keys[b]: span for b, span in data.blocks.items()}
    kept = set(bundle_io.kept_blocks(info))
    parts = []
    for f in info["features"]:
        if f["block"] in kept:
            a, b = by_key[f["key"]]  # loaded: predict_command asks load_track for every kept key
            parts.append(data.X[:, a:b])
        else:
            parts.append(np.zeros((len(data.X), int(f["dim"]))))
    return np.hstack(parts)


def _in_sample(info: dict, store, split: str) -> tuple[bool, int | None, int]:
    """(whether scoring ``split`` would be in-sample, how many of its items are training items (None: the bundle
    records no training items), how many items it has). Compares item keys (media sha256, else item id), so
    a copy of the training data elsewhere is recognised; a bundle without them falls back to dataset + split."""
    from features_store import FeatureStore

    with FeatureStore(os.fspath(store), mode="r") as st:
        df = st.columns(["item_id", "split"])
        ids = df.loc[df["split"] == split, "item_id"].astype(str).tolist()
    n_train = overlap(info, store, ids)
    if n_train is None:
        return _is_training_split(info, store, split), None, len(ids)
    return bool(n_train and n_train >= REFUSE_FROM * len(ids)), n_train, len(ids)


def _is_training_split(info: dict, store, split: str) -> bool:
    tr = info.get("training")
    if not tr:  # a legacy model records no training data: assume the store's train split is it
        return split == "train"
    if split != tr.get("split", "train"):
        return False
    here = _store_meta(store)
    return (here.get("dataset"), here.get("root")) == (tr.get("dataset"), tr.get("root"))
