"""Issue 22 part 5: property-based tests (Hypothesis) of the surfaces strangers touch.

Every generated case must end in a correct result or a one-line refusal: never a traceback, a silent change of scores,
or a deleted file. The "ci" profile (tests/conftest.py) fixes the seed and bounds the examples; HYPOTHESIS_PROFILE=dev
runs ten times as many.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the test extra (pip install '.[test]')")
from hypothesis import assume, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

DEV = os.environ.get("HYPOTHESIS_PROFILE") == "dev"


def examples(ci: int) -> int:
    """Examples per test: bounded for CI, ten times more in the local profile."""
    return ci * 10 if DEV else ci


# --------------------------------------------------------------------------------------------- helpers
def _run(fn, argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = fn(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 2
    return rc, out.getvalue(), err.getvalue()


def _refused_in_one_line(err: str) -> bool:
    return len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


# a file name a stranger might use: any printable text but '/', NUL and surrogates; not '.' or '..'
NAME = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\\x00"),
               min_size=1, max_size=24).filter(lambda s: s not in (".", "..") and len(s.encode()) < 200)
EXT = st.sampled_from([".png", ".PNG", ".jpg", ".gif", ".txt", ".csv", "", ".mp4", ".md"])
CONTENT = st.sampled_from(["image0", "image1", "garbage", "empty"])


@pytest.fixture(scope="module")
def scoring(nss_bundle, tmp_path_factory):
    """The bundle, two reference images and their scores (no prompt, no generator), and a warm cache."""
    from aigcq.score import main as score_main

    bundle, _, listing = nss_bundle
    images = sorted((listing.parent / "images").glob("*.png"))
    root = tmp_path_factory.mktemp("props")
    cache = root / "cache.h5"
    rc, out, err = _run(score_main, [str(bundle), *map(str, images), "--cache", str(cache), "--no-progress"])
    assert rc == 0, err
    scores = pd.read_csv(io.StringIO(out))["score"].to_numpy()
    pick = [int(np.argmin(scores)), int(np.argmax(scores))]  # two images the model tells apart
    assert scores[pick[0]] != scores[pick[1]]
    return bundle, [images[i].read_bytes() for i in pick], scores[pick], cache


def _write(path: Path, content: str, images: list[bytes]) -> None:
    data = {"image0": images[0], "image1": images[1], "garbage": b"\x89PNG\r\n\x1a\nnot really", "empty": b""}[content]
    path.write_bytes(data)


# --------------------------------------------------------------------------------------------- inputs and file names
@settings(max_examples=examples(20))
@given(files=st.lists(st.tuples(NAME, EXT, CONTENT), min_size=1, max_size=5, unique_by=lambda t: (t[0] + t[1]).lower()),
       how=st.sampled_from(["args", "folder", "csv", "txt", "jsonl"]))
# cases the long profile found (each was a traceback): an empty .csv given as a list, an image named .txt, a file
# named "~" (or "~.png": a user with no home) in a list
@example(files=[("0", ".csv", "empty")], how="args")
@example(files=[("0", ".txt", "image1")], how="args")
@example(files=[("0", ".txt", "garbage")], how="args")
@example(files=[("~", "", "image0")], how="csv")
@example(files=[("~", ".png", "image0")], how="csv")
@example(files=[("0", "", "image0")], how="csv")
def test_any_file_names_score_correctly_or_fail_by_name(scoring, files, how):
    from aigcq.score import main as score_main

    bundle, images, ref, cache = scoring
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "in put"
        folder.mkdir()
        paths = []
        for name, ext, content in files:
            p = folder / f"{name}{ext}"
            try:
                _write(p, content, images)
            except OSError:  # a name this file system refuses is not the toolkit's to handle
                assume(False)
            paths.append((p, content))
        if how == "args":
            args = [str(p) for p, _ in paths]
        elif how == "folder":
            args = [str(folder)]
        else:
            listing = folder / f"list.{how}"  # paths in a list are relative to it
            rel = [p.name for p, _ in paths]
            assume(all(r.strip() == r for r in rel) and f"list.{how}" not in rel)  # list entries are stripped
            if how == "csv":
                pd.DataFrame({"path": rel}).to_csv(listing, index=False)
            elif how == "txt":
                assume(not any(r.startswith("#") or len(r.splitlines()) != 1 for r in rel))  # one path per line
                listing.write_text("\n".join(rel) + "\n")
            else:
                listing.write_text("".join(json.dumps({"path": r}) + "\n" for r in rel))
            args = [str(listing)]
        before = _snapshot(tmp)
        rc, out, err = _run(score_main, [str(bundle), *args, "--cache", str(cache), "--no-progress", "--quiet"])
        assert "Traceback" not in err
        assert _snapshot(tmp) == before  # nothing of the user's is touched
        if rc == 2:
            assert _refused_in_one_line(err), err
            return
        assert rc in (0, 1), err
        df = pd.read_csv(io.StringIO(out), keep_default_na=False, dtype={"path": str, "error": str})
        assert set(df["status"]) <= {"ok", "failed"}
        lists = [p for p, c in paths if p.suffix.lower() in (".txt", ".csv") and c not in ("image0", "image1")]
        if how == "args" and not lists:  # one row per file given (a .txt/.csv that is not media is a list of paths)
            assert len(df) == len(paths)
        by_path = {os.path.abspath(p): c for p, c in paths}
        for row in df.itertuples():
            absolute = row.path if os.path.isabs(row.path) else os.path.abspath(folder / row.path)
            content = by_path.get(absolute)
            if row.status == "ok":  # a correct result: the image's own score, whatever its name
                assert content in ("image0", "image1"), (row, content)
                assert float(row.score) == ref[int(content[-1])]
            else:  # a failure by name: never a real image, and one line saying why
                assert content not in ("image0", "image1"), (row, content)
                assert row.error and "\n" not in row.error


# --------------------------------------------------------------------------------------------- --prompts tables
CELL = st.one_of(st.text(max_size=20), st.integers(-5, 5).map(str), st.just(""), st.just("nan"))


@settings(max_examples=examples(20))
@given(columns=st.lists(st.sampled_from(["path", "name", "file", "prompt", "Prompt", "caption", "x", "generator"]),
                        min_size=1, max_size=4, unique=True),
       rows=st.lists(st.lists(CELL, min_size=4, max_size=4), min_size=0, max_size=4),
       fmt=st.sampled_from(["csv", "tsv", "json", "jsonl"]))
def test_any_prompts_table_is_read_or_refused_in_one_line(scoring, columns, rows, fmt):
    from aigcq.score import main as score_main

    bundle, images, ref, cache = scoring
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        img = tmp / "a.png"
        img.write_bytes(images[0])
        records = [dict(zip(columns, r)) for r in rows]
        table = tmp / f"prompts.{fmt}"
        if fmt in ("csv", "tsv"):
            pd.DataFrame(records, columns=columns).to_csv(table, index=False, sep="\t" if fmt == "tsv" else ",")
        elif fmt == "json":
            table.write_text(json.dumps(records))
        else:
            table.write_text("".join(json.dumps(r) + "\n" for r in records))
        rc, out, err = _run(score_main, [str(bundle), str(img), "--prompts", str(table), "--cache", str(cache),
                                         "--no-progress", "--quiet"])
        assert "Traceback" not in err
        if rc == 2:
            assert _refused_in_one_line(err), err
            return
        assert rc == 0, err
        # nss and the generator do not read the prompt: whatever the table says, the image's own score
        assert pd.read_csv(io.StringIO(out))["score"].tolist() == [ref[0]]


# --------------------------------------------------------------------------------------------- label tables
LABEL = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(1, 5), st.just("n/a"), st.just(""))


@settings(max_examples=examples(25))
@given(values=st.lists(LABEL, min_size=0, max_size=30),
       scale=st.sampled_from([1.0, 1e-300, 1e300, 2.0 ** -1000, -1.0]))
def test_any_label_column_is_checked_or_named_without_a_traceback(values, scale):
    from features_store import load_dataset
    from features_store.manifest import ManifestError
    from features_store.targets import TargetError, check_target, column_problems
    from regressors import target_scale

    n = len(values)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        df = pd.DataFrame({"item_id": [f"i{k}" for k in range(n)], "path": "", "prompt": [f"p{k % 4}" for k in range(n)],
                           "generator": "g", "score": [v * scale if isinstance(v, float) else v for v in values]},
                          columns=["item_id", "path", "prompt", "generator", "score"])
        df.to_csv(tmp / "labels.csv", index=False)
        (tmp / "d.yaml").write_text("adapter: table\nname: t\nlabels: labels.csv\nroot: .\ncolumns: {mos: score}\n")
        try:
            m = load_dataset(tmp / "d.yaml")
        except (ValueError, ManifestError) as err:  # e.g. no items at all: one line
            assert "\n" not in str(err).strip() or isinstance(err, ManifestError)
            return
        problems = m.problems(check_media=False) + [str(p) for p in m.label_problems()]
        assert all("\n" not in str(p) for p in problems)
        y = m.df["mos"].to_numpy(dtype=float)
        y = y[~np.isnan(y)]
        try:
            check_target(y, np.arange(len(y)), "score")
        except TargetError as err:
            assert "\n" not in str(err) and column_problems(y, np.arange(len(y)), "score")
            return
        # accepted: finite, enough, not constant, and at the fit's scale a spread a head can standardise
        assert np.isfinite(y).all() and len(y) >= 10 and np.ptp(y) > 0
        k = target_scale.exponent(y)
        z = target_scale.scale(y, k)
        assert np.isfinite(z).all() and 0 < np.std(z) < 1e12
        # exact, but for values below the fit's resolution when the spread is astronomical (2**-1040 of it)
        np.testing.assert_allclose(target_scale.unscale(z, k), y, rtol=0, atol=2.0 ** max(-1074, -k - 1040))


@settings(max_examples=examples(3))
@given(kind=st.sampled_from(["ok", "tiny", "inf", "constant", "few", "outlier"]), seed=st.integers(0, 3))
def test_regress_on_generated_labels_fits_or_refuses_in_one_line(kind, seed):
    from regressors.cli import main
    from test_targets import FAST, _labels

    from features_store import FeatureStore, Manifest

    df, emb = _labels(seed)
    y = df["mos"].to_numpy().copy()
    y = {"ok": y, "tiny": y * 1e-300, "inf": np.where(np.arange(len(y)) == 3, np.inf, y),
         "constant": np.full(len(y), 2.5), "few": np.where(np.arange(len(y)) < 4, y, np.nan),
         "outlier": np.where(np.arange(len(y)) == 7, 1e308, y)}[kind]
    df["target"] = y
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gens = df["generator"].to_numpy()
        with FeatureStore(tmp / "s.h5", mode="a") as st_:
            st_.set_manifest(Manifest(df, tmp, "gen", label_columns=["target"]))
            st_.ensure_config("generator-aaaaaaaaaaaa", {"name": "generator"}, name="generator")
            st_.write("generator-aaaaaaaaaaaa", np.arange(len(df)),
                      (gens[:, None] == np.array(["A", "B", "C"])[None]).astype(np.float32))
            st_.checkpoint()
        rc, out, err = _run(lambda a: main(a), ["fit", "--track", "image", "--store", str(tmp / "s.h5"), "--out",
                                                  str(tmp / "run"), "--target", "target", *FAST])
        assert "Traceback" not in err
        if kind in ("ok", "tiny"):
            assert rc == 0, err[-1500:]
            m = json.loads((tmp / "run" / "metrics.json").read_text())
            assert np.isfinite(m["main"]) and m["main"] > 0.5
        else:
            assert rc == 2 and _refused_in_one_line(err) and not (tmp / "run").exists(), err[-1500:]


# --------------------------------------------------------------------------------------------- mutations of bundle.json
JSON_VALUE = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=False),
                                    st.text(max_size=12)),
                          lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                  st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                          max_leaves=6)


def _paths(value, prefix=()):
    """Every path into a JSON value (dict keys and list indices)."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _mutate(info: dict, path: tuple, op: str, new):
    parent = info
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    if op == "delete":
        if isinstance(parent, dict):
            del parent[key]
        else:
            parent.pop(key)
    elif op == "reverse" and isinstance(parent[key], list):
        parent[key] = parent[key][::-1]
    else:
        parent[key] = new


@settings(max_examples=examples(30))
@given(data=st.data(), op=st.sampled_from(["replace", "delete", "reverse"]), new=JSON_VALUE,
       reseal=st.booleans())
def test_any_edit_of_bundle_json_is_refused_in_one_line_or_changes_no_score(scoring, data, op, new, reseal):
    from aigcq.score import main as score_main
    from regressors.bundle_integrity import seal

    bundle, images, ref, cache = scoring
    info = json.loads((bundle / "bundle.json").read_text())
    paths = [p for p in _paths(info) if p and p[0] != "manifest"]
    path = data.draw(st.sampled_from(paths), label="path")
    _mutate(info, path, op, new)
    with tempfile.TemporaryDirectory() as tmp:
        b = Path(tmp) / "bundle"
        shutil.copytree(bundle, b)
        if reseal:  # an editor who also recomputes the manifest (it needs no secret)
            try:
                seal(b, info)
            except (TypeError, ValueError):
                assume(False)
        else:
            (b / "bundle.json").write_text(json.dumps(info, indent=1))
        img = Path(tmp) / "a.png"
        img.write_bytes(images[0])
        rc, out, err = _run(score_main, [str(b), str(img), "--cache", str(cache), "--no-progress", "--quiet"])
        assert "Traceback" not in err
        if rc == 0:  # accepted: then the edit changed nothing the scores depend on
            assert pd.read_csv(io.StringIO(out))["score"].tolist() == [ref[0]], (path, op, err)
        else:
            assert rc == 2 and _refused_in_one_line(err), (path, op, rc, err)


# --------------------------------------------------------------------------------------------- --out on anything
@settings(max_examples=examples(12))
@given(tree=st.lists(st.tuples(st.lists(NAME, min_size=1, max_size=3), st.binary(max_size=20)), max_size=5),
       marker=st.sampled_from([None, "valid", "foreign", "junk"]))
def test_out_on_any_folder_never_deletes_a_file_aigcq_did_not_write(toy_store, tree, marker):
    from regressors.cli import main
    from regressors.rundir import MARKER, write_marker

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        for parts, content in tree:
            p = out.joinpath(*parts)
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
                if not p.exists():
                    p.write_bytes(content)
            except OSError:
                continue
        if marker == "valid":  # a marker listing nothing (the files above are not its run's)
            write_marker(out, "regress")
        elif marker == "foreign":
            (out / MARKER).write_text(json.dumps({"tool": "other", "run_id": "x", "files": []}))
        elif marker == "junk":
            (out / MARKER).write_bytes(b"\x00\xff")
        before = _snapshot(out)
        user_files = set(before) - ({MARKER} if marker == "valid" else set())  # an invalid marker is not ours
        rc, _, err = _run(main, ["fit", "--track", "image", "--store", str(toy_store), "--out", str(out),
                                 "--extractors", "generator", "--trials", "0", "--folds", "3", "--tune-folds", "2",
                                 "--bootstrap", "0", "--heads", "enet", "--jobs", "1", "--fixed-heads", "",
                                 "--block-head", "none", "--nested", "split"])
        assert "Traceback" not in err
        after = _snapshot(out) if out.exists() else {}
        if user_files:  # something of the user's: refused in one line, everything in place
            assert rc == 2 and _refused_in_one_line(err) and after == before, err[-1000:]
        elif rc == 2:  # only empty folders of the user's: refused too (not an empty folder), nothing touched
            assert _refused_in_one_line(err) and "choose an empty or new folder" in err and after == before
        else:
            assert rc == 0, err[-1000:]


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory):
    from test_regress_cli import _make_store

    return _make_store(tmp_path_factory.mktemp("toy") / "toy.h5", n_train=60, n_val=0, n_test=0, with_prompt=False)
