"""Issue 23 point 5: the message a first-time author of a dataset YAML needs, for each trap met while
writing YAMLs for public label sets; `--quiet` that keeps its promise; no BrokenPipe traceback.

Each test says what the old code printed ("Before: ...")."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features_store import ManifestError, load_dataset

REPO = Path(__file__).resolve().parents[1]


def _labels(folder: Path, **renames) -> Path:
    """A public-label-set-like table: file name, the model that made it, prompt, two ratings."""
    n = 12
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"name": [f"{i:03d}.png" for i in range(n)], "model": [("sd", "mj", "dalle")[i % 3] for i in range(n)],
                       "prompt": [f"prompt {i // 2}" for i in range(n)],
                       "mos_quality": rng.uniform(1, 5, n).round(2), "mos_align": rng.uniform(1, 5, n).round(2)})
    df.rename(columns=renames).to_csv(folder / "labels.csv", index=False)
    return folder / "labels.csv"


def _yaml(folder: Path, body: str, name: str = "d.yaml") -> Path:
    (folder / name).write_text("adapter: table\nlabels: labels.csv\n" + body)
    return folder / name


def _error(path: Path) -> str:
    with pytest.raises(ValueError) as exc:
        load_dataset(path)
    return str(exc.value)


def _features(data: Path, store: Path) -> None:
    """A label-only store (the `generator` block needs no media)."""
    from extractors.__main__ import main

    assert main(["run", "--track", "image", "--data", str(data), "--extractors", "generator", "--store", str(store),
                 "--no-progress"]) == 0


# ------------------------------------------------------------------ a second target
def test_target_in_the_yaml_points_to_label_columns_and_the_fit_option(tmp_path):
    """Before: "adapter 'table' has no option(s) ['target']. Options: ..." and nothing else."""
    _labels(tmp_path)
    msg = _error(_yaml(tmp_path, "columns: {mos: mos_quality}\ntarget: mos_align\n"))
    assert "label_columns: [mos_align]" in msg and "aigcq regress --target mos_align" in msg
    assert "TARGET=mos_align" in msg


def test_a_second_rating_under_columns_gets_label_columns_not_mos(tmp_path):
    """Before: `columns: {mos_align: mos_align}` said "Did you mean 'mos'?"."""
    _labels(tmp_path)
    msg = _error(_yaml(tmp_path, "columns: {mos: mos_quality, mos_align: mos_align}\n"))
    assert "label_columns: [mos_align]" in msg and "Did you mean 'mos'" not in msg
    assert "--target mos_align" in msg
    # a typo of a role is still a typo
    assert "Did you mean 'mos'?" in _error(_yaml(tmp_path, "columns: {moss: mos_quality}\n"))


def test_a_typo_inside_label_columns_gets_a_suggestion(tmp_path):
    """Before: "label column 'mos_algn' not found; columns are [...]" with no suggestion."""
    _labels(tmp_path)
    msg = _error(_yaml(tmp_path, "columns: {mos: mos_quality}\nlabel_columns: [mos_algn]\n"))
    assert "Did you mean 'mos_align'" in msg


def test_label_columns_as_one_name_is_one_column(tmp_path):
    """Before: `label_columns: mos_align` was read letter by letter ("label column 'm' not found")."""
    _labels(tmp_path)
    m = load_dataset(_yaml(tmp_path, "columns: {mos: mos_quality}\nlabel_columns: mos_align\n"))
    assert m.labels == ["mos", "mos_align"]


def test_the_files_name_of_the_mapped_target_is_accepted(tmp_path, capsys):
    """Before: TARGET=mos_quality said "no label column 'mos_quality'; labels: ['mos', 'mos_align']"."""
    from features_store import load_features
    from features_store.__main__ import main as fs_main
    from features_store.api import resolve_target
    from regressors.cli import main as reg_main

    _labels(tmp_path)
    data = _yaml(tmp_path, "columns: {mos: mos_quality}\nlabel_columns: [mos_align]\n")
    assert fs_main(["describe", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["label_sources"] == {"mos": "mos_quality"}
    store = tmp_path / "s.h5"
    _features(data, store)
    assert resolve_target(store, "mos_quality") == ("mos", "target 'mos_quality' is the dataset file's column "
                                                           "mapped to 'mos': fitting 'mos'")
    _, y_alias, _, _ = load_features(store, ["generator"], target="mos_quality")
    _, y_mos, _, _ = load_features(store, ["generator"], target="mos")
    np.testing.assert_array_equal(y_alias, y_mos)
    capsys.readouterr()
    rc = reg_main(["fit", "--track", "image", "--store", str(store), "--target", "mos_quality", "--out",
                   str(tmp_path / "run"), "--trials", "0", "--folds", "3", "--bootstrap", "0", "--heads", "enet",
                   "--fixed-heads", "", "--block-head", "none", "--jobs", "1"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "fitting 'mos'" in err
    from regressors.bundle import read_info

    assert read_info(tmp_path / "run" / "model")["target"]["name"] == "mos"
    # a typo of a label: a suggestion, and where the file's names went
    with pytest.raises(KeyError) as exc:
        resolve_target(store, "mos_algin")
    assert "Did you mean 'mos_align'" in str(exc.value) and "'mos_quality' is the label 'mos'" in str(exc.value)


def test_a_label_column_named_like_a_role_that_reads_another_column_is_refused(tmp_path):
    """Before: with `columns: {mos: mos_quality}`, `label_columns: [mos]` (the file's own `mos` column, e.g. a
    raw sum) was dropped without a word: describe listed 'mos' (read from mos_quality) and the file's `mos`
    column could never be fitted."""
    csv = _labels(tmp_path)
    df = pd.read_csv(csv)
    df.assign(mos=df["mos_quality"] * 3).to_csv(csv, index=False)
    msg = _error(_yaml(tmp_path, "columns: {mos: mos_quality}\nlabel_columns: [mos, mos_align]\n"))
    assert "'mos'" in msg and "mos_quality" in msg and "columns: {mos: mos}" in msg
    # the role's own column listed again is harmless: kept as it was
    m = load_dataset(_yaml(tmp_path, "columns: {mos: mos}\nlabel_columns: [mos, mos_align]\n"))
    assert m.labels == ["mos", "mos_align"]
    # a file column named like another role, while that role reads another column: said too
    df.assign(prompt2=df["prompt"], prompt=1.0).to_csv(csv, index=False)
    msg = _error(_yaml(tmp_path, "columns: {mos: mos_quality, prompt: prompt2}\nlabel_columns: [prompt]\n"))
    assert "'prompt'" in msg and "prompt2" in msg


def test_a_key_written_twice_in_a_yaml_is_refused_naming_both_lines(tmp_path):
    """Before: YAML keeps the last of two equal keys without a word: a second `columns:` line (or `mos:` twice
    inside it) silently dropped the first mapping, and the model was fitted on another column."""
    _labels(tmp_path)
    msg = _error(_yaml(tmp_path, "columns: {mos: mos_quality}\nlabel_columns: [mos_align]\ncolumns: {generator: model}\n"))
    assert "'columns'" in msg and "twice" in msg and "line 3" in msg and "line 5" in msg
    msg = _error(_yaml(tmp_path, "columns:\n  mos: mos_quality\n  mos: mos_align\n"))
    assert "'mos'" in msg and "twice" in msg and "line 4" in msg and "line 5" in msg
    # a recipe (aigcq ablate/reproduce --recipe FILE) is written by hand too
    from experiments.recipes import load as load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nextractors: [nss]\nheads: [svr]\nheads: [enet]\n")
    with pytest.raises(ValueError, match="'heads'.*twice"):
        load_recipe(recipe)


def test_a_yaml_syntax_error_and_an_empty_label_file_are_one_line_naming_the_file(tmp_path, capsys):
    """Before: an unclosed brace in the YAML ended `aigcq describe` in a yaml.scanner traceback; an empty
    label file said "No columns to parse from file" without naming it."""
    from features_store.__main__ import main as fs_main

    _labels(tmp_path)
    data = _yaml(tmp_path, "columns: {mos: mos_quality\nlabel_columns: [mos_align]\n")
    assert fs_main(["describe", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(data) in err and "line" in err and "Traceback" not in err
    (tmp_path / "labels.csv").write_text("")
    assert fs_main(["describe", str(_yaml(tmp_path, ""))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "labels.csv" in err and "empty" in err
    (tmp_path / "labels.csv").write_bytes(b"name,prompt,mos_quality\n000.png,caf\xe9,3\n")  # Latin-1
    assert fs_main(["describe", str(_yaml(tmp_path, ""))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "labels.csv" in err and "UTF-8" in err
    pd.read_csv(_labels(tmp_path)).to_excel(tmp_path / "labels.xlsx", index=False)
    (tmp_path / "x.yaml").write_text("labels: labels.xlsx\nsheet: Sheet2\n")
    assert fs_main(["describe", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "labels.xlsx" in err and "Sheet2" in err


def test_a_column_given_on_the_command_line_adds_to_the_yamls_columns(tmp_path, capsys):
    """Before: `-O columns.generator=model` replaced the YAML's whole `columns:` mapping, so its
    `mos: mos_quality` was dropped without a word and the target came from another column."""
    from features_store.__main__ import main as fs_main

    csv = _labels(tmp_path)
    df = pd.read_csv(csv)
    df.assign(mos=df["mos_align"] * 2).to_csv(csv, index=False)  # a `mos` column the YAML does not mean
    data = _yaml(tmp_path, "columns: {mos: mos_quality}\n")
    m = load_dataset(data, columns={"generator": "model"})
    assert m.source_columns["mos"] == "mos_quality" and m.source_columns["generator"] == "model"
    assert fs_main(["describe", "--data", str(data), "-O", "columns.generator=model"]) == 0
    assert json.loads(capsys.readouterr().out)["label_sources"] == {"mos": "mos_quality"}
    # an option given again on the command line still wins over the YAML's
    assert load_dataset(data, columns={"mos": "mos_align"}).source_columns["mos"] == "mos_align"


def test_a_dataset_name_that_is_a_path_is_refused(tmp_path):
    """Before: `name: ../../x` put the default store (stores/<name>-<track>-<id>.h5) two folders above stores/,
    wherever the YAML said; `name: agiqa/3k` made a folder inside stores/."""
    _labels(tmp_path)
    for name in ("../../x", "agiqa/3k", "..", "a\\\\b"):
        msg = _error(_yaml(tmp_path, f"name: {name}\ncolumns: {{mos: mos_quality}}\n"))
        assert "name" in msg and "file name" in msg, (name, msg)
    assert load_dataset(_yaml(tmp_path, "name: AGIQA-3K v2.1\ncolumns: {mos: mos_quality}\n")).name == "AGIQA-3K v2.1"


# ------------------------------------------------------------------ no target
def test_no_mappable_target_is_said_by_describe_and_regress_gives_command_line_advice(tmp_path, capsys):
    """Before: describe showed "labelled": 0 without a word; regress said "pass target=None for unlabelled
    items" (advice for the Python API)."""
    from features_store.__main__ import main as fs_main
    from regressors.cli import main as reg_main

    _labels(tmp_path, mos_quality="avg_rating", mos_align="align_rating")
    data = _yaml(tmp_path, "")
    assert fs_main(["describe", str(data)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["labelled"] == 0
    (note,) = [w for w in out["warnings"] if "no target" in w]
    assert "columns: {mos: <column>}" in note and "avg_rating" in note  # the file's columns are named
    store = tmp_path / "s.h5"
    _features(data, store)
    capsys.readouterr()
    assert reg_main(["fit", "--track", "image", "--store", str(store), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "target=None" not in err and "columns: {mos: <column>}" in err and "-O columns.mos=<column>" in err
    assert "aigcq features" in err


def test_only_label_columns_say_which_target_to_fit(tmp_path):
    _labels(tmp_path, mos_quality="avg_rating")
    m = load_dataset(_yaml(tmp_path, "label_columns: [mos_align]\n"))
    (note,) = [n for n in m.notes if n.about == "target"]
    assert "--target mos_align" in note


# ------------------------------------------------------------------ duplicates
def test_a_real_duplicate_is_named_as_one(tmp_path):
    """Before: the same file listed twice (same generator, two ratings) got the composite-id hint for file
    names repeating across generators, with placeholders although a `model` column exists."""
    csv = _labels(tmp_path)
    df = pd.read_csv(csv)
    twice = df.iloc[[3]].assign(mos_quality=4.9)
    pd.concat([df, twice]).to_csv(csv, index=False)
    with pytest.raises(ManifestError) as exc:
        load_dataset(_yaml(tmp_path, "columns: {mos: mos_quality, generator: model}\n")).validate("stop")
    msg = str(exc.value)
    assert "the same item listed twice" in msg and "rated" in msg and "4.9" in msg and "keep one row" in msg
    assert "composite" not in msg and "model_column" not in msg


def test_names_repeating_across_generators_get_the_composite_hint_with_real_columns(tmp_path):
    csv = _labels(tmp_path)
    df = pd.read_csv(csv)
    df["name"] = ["000.png"] * 6 + ["001.png"] * 6
    df.to_csv(csv, index=False)
    with pytest.raises(ManifestError) as exc:
        load_dataset(_yaml(tmp_path, "columns: {item_id: name, mos: mos_quality, generator: model}\n")).validate("stop")
    msg = str(exc.value)
    assert "from another generator: 'sd' there, 'mj' here" in msg
    assert "columns: {item_id: [model, name]}" in msg and "model_column" not in msg


# ------------------------------------------------------------------ generators
def test_generator_column_option_points_to_columns(tmp_path):
    """Before: `generator_column: model` got "Did you mean 'generator_regex', ..."."""
    _labels(tmp_path)
    msg = _error(_yaml(tmp_path, "generator_column: model\n"))
    assert "columns: {generator: model}" in msg and "Did you mean" not in msg


def test_a_generator_guessed_from_a_model_column_gets_a_note(tmp_path):
    """Before: the `model` column became the generator without a word."""
    _labels(tmp_path)
    m = load_dataset(_yaml(tmp_path, "columns: {mos: mos_quality}\n"))
    assert list(m.df["generator"][:3]) == ["sd", "mj", "dalle"]
    (note,) = [n for n in m.notes if n.about == "generator"]
    assert "column 'model' is used as the generator" in note and "guessed" in note
    mapped = load_dataset(_yaml(tmp_path, "columns: {mos: mos_quality, generator: model}\n"))
    assert not [n for n in mapped.notes if n.about == "generator"]


def test_a_generator_column_and_a_regex_are_not_silent(tmp_path):
    """Before: with both, the regex won silently."""
    _labels(tmp_path)
    msg = _error(_yaml(tmp_path, "columns: {mos: mos_quality, generator: model}\ngenerator_regex: '^(.)'\n"))
    assert "columns.generator" in msg and "generator_regex" in msg and "keep one" in msg
    m = load_dataset(_yaml(tmp_path, "columns: {mos: mos_quality}\ngenerator_regex: '^(?P<generator>.)'\n"))
    assert m.df["generator"].iat[0] == "0"  # the regex, as asked (guessed column 'model' left alone) ...
    assert any("comes from generator_regex" in n and "'model' is not used" in n for n in m.notes)  # ... and said


def test_a_broken_generator_regex_is_one_line(tmp_path):
    """Before: an unbalanced bracket ended in a re.error traceback, a number in an AttributeError one."""
    _labels(tmp_path)
    msg = _error(_yaml(tmp_path, "columns: {mos: mos_quality}\ngenerator_regex: '^(.+_'\n"))
    assert "generator_regex '^(.+_'" in msg and "not a valid regular expression" in msg
    msg = _error(_yaml(tmp_path, "columns: {mos: mos_quality}\ngenerator_regex: 5\n"))
    assert "generator_regex" in msg and "5" in msg


# ------------------------------------------------------------------ --quiet, closed pipes
def test_quiet_lists_the_failures_it_promises_and_shows_no_progress_bar(tmp_path, capsys):
    """Before: `--quiet` printed "1 of N item(s) failed (listed above ...)" with nothing listed, and the
    progress bar still showed."""
    from aigcq.score import main as score_main
    from experiments.demo_data import DemoConfig, build_demo_store
    from regressors.cli import main as reg_main

    cfg = DemoConfig(n_sources=5, crops_per_source=2, size=48, heldout_sources=1)
    store = build_demo_store(tmp_path / "demo", cfg, extractors=("nss", "generator"))
    assert reg_main(["fit", "--track", "image", "--store", str(store), "--out", str(tmp_path / "run"), "--trials", "0",
                     "--folds", "3", "--bootstrap", "0", "--heads", "enet", "--fixed-heads", "", "--block-head", "none",
                     "--jobs", "1", "--no-select-blocks"]) == 0
    folder = tmp_path / "imgs"
    shutil.copytree(tmp_path / "demo" / "data" / "heldout" / "images", folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    capsys.readouterr()
    rc = score_main([str(tmp_path / "run" / "model"), str(folder), "--cache", str(tmp_path / "c.h5"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    failed = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1 and "broken.png" in failed[0]
    assert "listed above" in err and "item/s" not in err and "%|" not in err  # no tqdm bar


PRINTING_JOBS = [["--help"], ["list"], ["describe", "{data}"], ["validate", "{data}"], ["info", "{store}"],
                 ["describe", "--help"]]


def test_a_closed_pipe_ends_quietly(tmp_path):
    """Before: `aigcq describe ... | head` ended in a BrokenPipeError traceback (so did `aigcq --help | head`).
    The reader closes the pipe before the command writes, so every write meets a closed pipe."""
    _labels(tmp_path)
    data = _yaml(tmp_path, "columns: {mos: mos_quality}\n")
    store = tmp_path / "s.h5"
    _features(data, store)
    for job in PRINTING_JOBS:
        args = [a.format(data=data, store=store) for a in job]
        proc = subprocess.Popen([sys.executable, "-m", "aigcq", *args], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        proc.stdout.close()
        err = proc.stderr.read()
        rc = proc.wait(timeout=120)
        assert "Traceback" not in err and "BrokenPipe" not in err, (job, err)
        assert rc in (0, 141), (job, rc, err)


def test_regress_before_features_names_the_command_that_makes_the_store(tmp_path, monkeypatch, capsys):
    """Before: `aigcq regress --data d.yaml` on a new dataset said only "feature store stores/...h5 not found"."""
    from aigcq.cli import main

    _labels(tmp_path)
    data = _yaml(tmp_path, "columns: {item_id: name, prompt: prompt, generator: model, mos: mos_quality}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["regress", "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "aigcq features --data" in err and str(data) in err
