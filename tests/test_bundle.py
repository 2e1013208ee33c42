"""Model bundles: every head round-trips exactly; loading never runs code from the files; damaged files give one line."""
from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest

from regressors import bundle
from regressors.heads import HEADS, blocks_from_dims
from regressors.stacking import FIXED_PRESETS, StackConfig, fit_stack
from regressors.workflow import load_model_any


def _data(n=160, seed=0):
    rng = np.random.default_rng(seed)
    gen = rng.integers(0, 3, n)
    emb = rng.normal(size=(n, 12))
    pix = rng.normal(size=(n, 6))
    X = np.hstack([np.eye(4)[gen], emb, pix])
    y = gen + np.sin(emb[:, 0]) + 0.3 * pix[:, 0] + 0.1 * rng.normal(size=n)
    groups = rng.integers(0, 50, n)
    return X, y, groups, blocks_from_dims({"generator": 4, "prompt": 12, "pixels": 6})


@pytest.fixture(scope="module")
def stack():
    X, y, groups, blocks = _data()
    # every tuned head kind, every fixed preset, block heads of every kind the stack may use
    cfg = StackConfig(heads=tuple(HEADS), n_trials=2, n_jobs=1, pca=4, fixed_heads=tuple(FIXED_PRESETS),
                      block_head="lgbm", tune_folds=2)
    model = fit_stack(X, y, groups, blocks, cfg)
    return model, X


def test_every_head_round_trips_exactly(stack, tmp_path):
    model, X = stack
    kinds = {type(h).__name__ for h in model.heads.values()}
    assert kinds == {cls.__name__ for cls in HEADS.values()}  # svr, enet, lgbm, knn (+ block heads)
    assert any(n.startswith("block:") for n in model.names) and any(n.startswith("fixed:") for n in model.names)
    folder = bundle.save_bundle(tmp_path / "model", model, {"track": "image", "target": {"name": "mos"},
                                                             "features": [], "n_features": X.shape[1]})
    loaded, info = bundle.load_bundle(folder)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    for name in model.names:
        np.testing.assert_array_equal(loaded.heads[name].predict(X), model.heads[name].predict(X))
    assert info["files"]["model.skops"] == bundle.sha256_file(folder / "model.skops")
    assert "skops" in info["libraries"] and (folder / "MODEL.md").read_text().startswith("# image quality model")


def test_trusted_list_covers_the_stack_and_nothing_more_is_accepted(stack, tmp_path):
    import zipfile

    sio = bundle.skops_io()
    model, _ = stack
    sio.dump(model, tmp_path / "m.skops")
    found = set(sio.get_untrusted_types(file=tmp_path / "m.skops"))
    missing = found - set(bundle.trusted_types())
    assert not missing, f"add these to regressors.bundle.TRUSTED_TYPES (scikit-learn's: SKLEARN_TYPES): {sorted(missing)}"
    # whether skops was imported with scikit-learn's full estimator list or without (bundle.skops_io), loading
    # trusts exactly the listed scikit-learn classes: every one the stack holds is listed
    held, todo = set(), [json.loads(zipfile.ZipFile(tmp_path / "m.skops").read("schema.json"))]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if "__module__" in node and "__class__" in node:
                held.add(f"{node['__module__']}.{node['__class__']}")
            todo += node.values()
        elif isinstance(node, list):
            todo += node
    sklearn = {t for t in held if t.startswith("sklearn.")}
    assert sklearn and not sklearn - set(bundle.trusted_types()), sorted(sklearn - set(bundle.trusted_types()))


class Planted:
    """Unpickling (or rebuilding) this creates a marker file: stands for any code an attacker could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))

    def __setstate__(self, state):
        open(state["marker"], "w").close()


def _write_bundle_json(folder, model_file_sha):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bundle.json").write_text(json.dumps({
        "format": bundle.FORMAT, "format_version": 1, "track": "image", "target": {"name": "mos"}, "features": [],
        "n_features": 1, "files": {"model.skops": model_file_sha}}))


def test_a_crafted_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(Planted(marker))
    # 1. a legacy model.pkl with a matching checksum beside it
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "model.pkl").write_bytes(payload)
    (legacy / "model.pkl.sha256").write_text(hashlib.sha256(payload).hexdigest() + "  model.pkl\n")
    (legacy / "model.pkl.json").write_text(json.dumps({"track": "image", "target": "mos", "store_keys": {},
                                                        "n_features": 1}))
    with pytest.raises(bundle.BundleError, match="--trust-pickle"):
        load_model_any(legacy)
    # 2. the pickle in place of the skops file, its checksum recorded in bundle.json
    crafted = tmp_path / "crafted"
    _write_bundle_json(crafted, hashlib.sha256(payload).hexdigest())
    (crafted / "model.skops").write_bytes(payload)
    with pytest.raises(bundle.BundleError, match="not a skops file"):
        load_model_any(crafted)
    assert not marker.exists()


def test_a_skops_file_with_an_untrusted_type_is_refused(tmp_path):
    sio = bundle.skops_io()

    marker = tmp_path / "PWNED"
    folder = tmp_path / "model"
    folder.mkdir()
    sio.dump({"heads": Planted(marker)}, folder / "model.skops")
    _write_bundle_json(folder, bundle.sha256_file(folder / "model.skops"))
    with pytest.raises(bundle.BundleError, match="outside the trusted list: .*Planted"):
        bundle.load_bundle(folder)
    assert not marker.exists()


def test_what_a_bundle_may_hold_does_not_depend_on_who_imported_skops_first(tmp_path):
    """bundle.skops_io() imports skops without scikit-learn's estimator list; a process that imported skops
    itself first (a notebook, any library) has that list. Before: there a bundle holding an unlisted
    scikit-learn estimator (Ridge) loaded, and saved without a word, though `aigcq score` refuses it."""
    import subprocess
    import sys
    from pathlib import Path

    code = f"""
import json, sys
import numpy as np
import skops.io  # first: with scikit-learn's whole estimator list, as a user's own process may have it
from sklearn.linear_model import Ridge
from regressors import bundle
model = Ridge().fit(np.eye(3), [1.0, 2.0, 3.0])
folder = {str(tmp_path / "m")!r}
try:
    bundle.save_bundle(folder, model, {{"track": "image", "target": {{"name": "mos"}}, "features": []}})
    print("saved")
except bundle.BundleError as err:
    print("save refused:", err)
    skops.io.dump(model, folder + "/model.skops")
    (pathlib := __import__("pathlib")).Path(folder, "bundle.json").write_text(json.dumps({{
        "format": bundle.FORMAT, "format_version": 1, "track": "image", "target": {{"name": "mos"}},
        "features": [], "files": {{"model.skops": bundle.sha256_file(folder + "/model.skops")}}}}))
try:
    bundle.load_bundle(folder)
    print("loaded")
except bundle.BundleError as err:
    print("load refused:", err)
"""
    repo = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": str(repo)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "save refused:" in res.stdout and "Ridge" in res.stdout, res.stdout
    assert "load refused:" in res.stdout and "sklearn.linear_model._ridge.Ridge" in res.stdout, res.stdout


@pytest.mark.parametrize("damage, expected", [
    ("empty", "bundle.json is empty"),
    ("invalid", "bundle.json is not valid JSON"),
    ("fields", "bundle.json lacks features, files"),
    ("no-json", "bundle.json is missing"),
    ("empty-model", "model.skops is empty"),
    ("changed-model", "does not match"),
])
def test_damaged_bundle_files_give_one_line_naming_the_file(stack, tmp_path, damage, expected, capsys):
    model, X = stack
    folder = bundle.save_bundle(tmp_path / "model", model, {"track": "image", "target": {"name": "mos"},
                                                             "features": [], "n_features": X.shape[1]})
    j, m = folder / "bundle.json", folder / "model.skops"
    if damage == "empty":
        j.write_text("")
    elif damage == "invalid":
        j.write_text(j.read_text()[:-20])
    elif damage == "fields":
        j.write_text(json.dumps({"format": bundle.FORMAT, "format_version": 1, "track": "image", "target": {}}))
    elif damage == "no-json":
        j.unlink()
    elif damage == "empty-model":
        m.write_bytes(b"")
    else:
        m.write_bytes(m.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(bundle.BundleError, match=expected) as err:
        load_model_any(folder)
    assert "\n" not in str(err.value) and str(folder) in str(err.value)
    # the command line says the same in one line
    from aigcq.score import main

    assert main([str(folder), str(tmp_path)]) == 2
    err_lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err_lines) == 1 and expected.split()[0] in err_lines[0]


def test_legacy_model_files_empty_checksum_and_invalid_json(tmp_path):
    from regressors import model_io
    from regressors.workflow import read_model_info

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "model.pkl").write_bytes(b"irrelevant")
    (legacy / "model.pkl.sha256").write_text("")
    with pytest.raises(model_io.ModelChecksumError, match="model.pkl.sha256 is empty"):
        model_io.load_model(legacy / "model.pkl")
    (legacy / "model.pkl.json").write_text("{not json")
    with pytest.raises(bundle.BundleError, match="model.pkl.json is not valid JSON"):
        read_model_info(legacy)


def test_trust_pickle_loads_a_legacy_model(stack, tmp_path):
    from regressors import model_io

    model, X = stack
    path = model_io.save_model(model, tmp_path / "model.pkl", {"track": "image", "target": "mos", "store_keys": {},
                                                              "n_features": X.shape[1]})
    loaded, info = load_model_any(path, trust_pickle=True)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert info["legacy_pickle"] is True


FEATURES = [{"block": "generator", "key": "generator-1", "kind": "meta", "dim": 4},
            {"block": "prompt", "key": "prompt_minilm-1", "kind": "text", "dim": 12},
            {"block": "pixels", "key": "nss-1", "kind": "image", "dim": 6}]


@pytest.mark.parametrize("kept, problem", [
    (["pixels", "generator"], "in their order"), (["nss"], "in their order"), ([], "in their order"),
    ("pixels", "in their order"), (["generator", "pixels"], None)])
def test_kept_blocks_must_name_feature_blocks_in_order(stack, tmp_path, kept, problem):
    model, X = stack
    features = [dict(f) for f in FEATURES]
    if problem is None:  # valid names, but a dropped block without its width cannot be filled with zeros
        del features[1]["dim"]
        problem = "must record its width"
    folder = bundle.save_bundle(tmp_path / "m", model, {"track": "image", "target": {"name": "mos"},
                                                        "features": features, "kept_blocks": kept,
                                                        "n_features": X.shape[1]})
    with pytest.raises(bundle.BundleError, match=problem):
        bundle.read_info(folder)


@pytest.mark.parametrize("kept, reads_media", [(None, True), (["generator", "pixels"], True),
                                               (["generator", "prompt"], False), (["prompt"], False)])
def test_the_card_names_the_blocks_read_and_warns_when_none_reads_the_media(stack, tmp_path, kept, reads_media):
    model, X = stack
    info = {"track": "image", "target": {"name": "mos"}, "features": FEATURES, "n_features": X.shape[1]}
    if kept is not None:
        info["kept_blocks"] = kept
    folder = bundle.save_bundle(tmp_path / "m", model, info)
    info = bundle.read_info(folder)
    card = (folder / bundle.CARD).read_text()
    read = kept or ["generator", "prompt", "pixels"]  # a bundle that does not say reads every block (as before)
    assert bundle.kept_blocks(info) == read and f"The model reads {', '.join(read)}" in card
    dropped = [f["block"] for f in FEATURES if f["block"] not in read]
    assert (f"dropped {', '.join(dropped)}" in card) == bool(dropped)
    assert card.count("| no (dropped") == len(dropped)
    assert bundle.metadata_only(info) is not reads_media
    assert ("**Warning: this model scores from the prompt/generator only" in card) is not reads_media
