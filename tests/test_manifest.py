"""Manifests: the shipped label files, the generic table adapter, validation."""
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
from features_store.__main__ import main as fs_main
from features_store.manifest import COLUMNS, parse_options

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ shipped data
@pytest.fixture(scope="module")
def aigiqa(shared_data):
    return load_dataset(shared_data / "aigiqa20k")


@pytest.mark.shared
def test_aigiqa20k_as_shipped(aigiqa):
    m = aigiqa
    s = m.summary()
    assert (s["items"], s["labelled"]) == (20000, 14000)
    assert s["splits"] == {"train": 14000, "val": 2000, "test": 4000}
    assert len(s["generators"]) == 15 and {"LCM_SDXL", "SDXL_Turbo", "SD1.5"} <= set(s["generators"])
    assert list(m.df.columns[: len(COLUMNS)]) == list(COLUMNS)
    row = m.df.set_index("item_id").loc["DALLE2_0000.png"]
    assert row["path"] == "train/DALLE2_0000.png" and row["generator"] == "DALLE2" and row["mos"] == pytest.approx(3.6638868)
    assert m.df["item_id"].is_unique and m.labels == ["mos"]
    assert m.df.loc[m.df.split == "test", "mos"].isna().all()
    items = m.items("val")
    assert len(items) == 2000 and items[0].path.endswith("/val/" + items[0].item_id)


@pytest.mark.shared
def test_aigiqa_headerless_csv_matches_xlsx_and_xlsx_wins(shared_data, tmp_path):
    shutil.copy(shared_data / "aigiqa20k" / "info_train_noheader.csv", tmp_path)
    csv_only = load_dataset(tmp_path, adapter="aigiqa20k")
    assert len(csv_only) == 14000 and csv_only.df["mos"].notna().all()
    shutil.copy(shared_data / "aigiqa20k" / "info_train.xlsx", tmp_path)
    both = load_dataset(tmp_path)  # detected; xlsx preferred, no duplicates
    assert len(both) == 14000 and both.df["item_id"].is_unique
    np.testing.assert_allclose(csv_only.df["mos"], both.df["mos"], rtol=1e-9)
    assert (csv_only.df["prompt"] == both.df["prompt"]).all()


@pytest.mark.shared
def test_t2vqa_db_as_shipped(shared_data):
    m = load_dataset(shared_data / "t2vqa_db")
    s = m.summary()
    assert (s["items"], s["labelled"]) == (10000, 7000)
    assert s["splits"] == {"train": 7000, "val": 1000, "test": 2000}
    assert set(s["generators"]) == {f"{i:02d}" for i in range(10)}
    assert m.df["item_id"].is_unique
    ids = m.df.set_index("item_id")
    # val and test reuse names: their ids carry the split, `name` keeps the bare name for submissions
    assert ids.loc["val/00000.mp4", "name"] == "00000.mp4" and ids.loc["test/00000.mp4", "name"] == "00000.mp4"
    assert ids.loc["00000_01.mp4", "generator"] == "01" and ids.loc["val/00000.mp4", "generator"] is None


@pytest.mark.shared
def test_fetv_keeps_three_labels(shared_data):
    m = load_dataset(shared_data / "fetv")
    assert len(m) == 174 and m.df["mos"].isna().all()
    assert m.labels == ["static_quality", "temporal_quality", "alignment"]
    assert m.df["group"].nunique() == 35 and set(m.df["split"]) == {"train"}
    assert m.df["path"].iat[0].startswith("videos/")
    assert m.validate(check_media=True)[1] == []  # the clips are there
    m2 = load_dataset(shared_data / "fetv", mos="static_quality")
    np.testing.assert_array_equal(m2.df["mos"], m2.df["static_quality"])


@pytest.mark.shared
def test_describe_cli(shared_data, capsys):
    assert fs_main(["describe", str(shared_data / "t2vqa_db")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["items"] == 10000 and out["labelled"] == 7000 and out["media_present"] == 0


# ------------------------------------------------------------------ synthetic files
def test_t2vqa_parsing_pipes_collisions_and_videos_folder(tmp_path):
    (tmp_path / "train.txt").write_text("00000_03.mp4|a cat | a dog|50.5\n00001_00.mp4|b|12\n")
    (tmp_path / "val.txt").write_text("00000.mp4|x\n")
    (tmp_path / "test.txt").write_text("00000.mp4|y\n00001.mp4|z\n")
    for split in ("train", "val", "test"):
        (tmp_path / "videos" / split).mkdir(parents=True)
    m = load_dataset(tmp_path)
    df = m.df.set_index("item_id")
    assert df.loc["00000_03.mp4", "prompt"] == "a cat | a dog" and df.loc["00000_03.mp4", "mos"] == 50.5
    assert list(df.index) == ["00000_03.mp4", "00001_00.mp4", "val/00000.mp4", "test/00000.mp4", "test/00001.mp4"]
    assert df.loc["test/00001.mp4", "path"] == "videos/test/00001.mp4"
    elsewhere = tmp_path.parent / (tmp_path.name + "_media")
    m2 = load_dataset(tmp_path, videos=str(elsewhere / "{split}"))
    assert Path(m2.root) == elsewhere and m2.df["path"].iat[0] == "train/00000_03.mp4"


def test_aigiqa_xlsx_and_csv_for_one_split_no_duplicates(tmp_path):
    df = pd.DataFrame({"name": ["SDXL_Turbo_0042.png", "LCM_SDXL_0123.png"], "prompt": ["a", "b"], "mos": [1.0, 2.0]})
    df.to_excel(tmp_path / "info_train.xlsx", index=False)
    df.to_csv(tmp_path / "info_train.csv", index=False)
    df.drop(columns="mos").assign(name=["IF_0001.png", "MJ_0002.png"]).to_csv(tmp_path / "info_test.csv", index=False)
    m = load_dataset(tmp_path)
    assert list(m.df["generator"]) == ["SDXL_Turbo", "LCM_SDXL", "IF", "MJ"]
    assert m.summary()["splits"] == {"train": 2, "test": 2}


def test_table_from_yaml_with_regex_and_extra_labels(tmp_path):
    (tmp_path / "imgs").mkdir()
    pd.DataFrame({
        "image": ["midjourney_normal_001.jpg", "sd1.5_lowstep_002.jpg"],
        "txt": ["a fox", "a boat"], "mos_quality": [3.2, 1.1], "mos_align": [4.0, 2.0],
    }).to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "agiqa.yaml").write_text(
        "adapter: table\nlabels: data.csv\nroot: imgs\nname: agiqa3k\n"
        "columns: {item_id: image, prompt: txt, mos: mos_quality}\n"
        "label_columns: [mos_align]\ngenerator_regex: '^(?P<generator>[^_]+)_'\n"
    )
    m = load_dataset(tmp_path / "agiqa.yaml")
    assert m.name == "agiqa3k" and Path(m.root) == tmp_path / "imgs"
    assert list(m.df["generator"]) == ["midjourney", "sd1.5"] and m.labels == ["mos", "mos_align"]
    assert list(m.df["group"]) == ["a fox", "a boat"]
    # the same from "command line" options
    opts = parse_options(["columns.item_id=image", "columns.prompt=txt", "columns.mos=mos_quality",
                          "generator_regex=^([^_]+)_"])
    m2 = load_dataset(tmp_path / "data.csv", **opts)
    assert list(m2.df["generator"]) == ["midjourney", "sd1.5"] and m2.df["mos"].tolist() == [3.2, 1.1]


def test_table_errors_name_the_column(tmp_path):
    pd.DataFrame({"file": ["a.png"], "prompt": ["p"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match="'score'.*not found"):
        load_dataset(tmp_path / "t.csv", columns={"mos": "score"})
    with pytest.raises(ValueError, match="unknown adapter 'tabel'.*'table'"):
        load_dataset(tmp_path / "t.csv", adapter="tabel")
    with pytest.raises(ValueError, match="cannot tell which dataset"):
        load_dataset(tmp_path)


# ------------------------------------------------------------------ validation
def _bad_dataset(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"x")
    pd.DataFrame({
        "name": ["ok.png", "dup.png", "dup.png", "nomos.png", "text.png", "noprompt.png", "../escape.png", "ghost.png"],
        "prompt": ["p", "p", "p", "p", "p", "  ", "p", "p"],
        "mos": ["1.5", "2", "2", "", "abc", "3", "1", "1"],
    }).to_csv(tmp_path / "labels.csv", index=False)
    return load_dataset(tmp_path / "labels.csv")


def test_validation_names_every_bad_item(tmp_path):
    m = _bad_dataset(tmp_path)
    with pytest.raises(ManifestError) as exc:
        m.validate("stop")
    text = str(exc.value)
    for needle in ("dup.png (row 2): duplicate item_id", "nomos.png (row 3): MOS missing", "text.png (row 4): mos 'abc' is not a number",
                   "noprompt.png (row 5): empty prompt", "../escape.png (row 6): path '../escape.png' escapes",
                   "ghost.png (row 7): media file missing"):
        assert needle in text
    assert "ok.png" not in text.replace("noprompt.png", "")


def test_validation_skip_reports_and_keeps_the_good(tmp_path):
    m = _bad_dataset(tmp_path)
    clean, problems = m.validate("skip", check_media=False)
    assert list(clean.df["item_id"]) == ["ok.png", "dup.png", "ghost.png"]  # first of the duplicates kept
    assert len(problems) == 5 and {p.item_id for p in problems} == {"dup.png", "nomos.png", "text.png", "noprompt.png", "../escape.png"}
    with pytest.raises(ValueError, match="policy"):
        m.validate("ignore")


def test_validate_cli_writes_report(tmp_path, capsys):
    _bad_dataset(tmp_path)
    rc = fs_main(["validate", "--data", str(tmp_path / "labels.csv"), "--report", str(tmp_path / "r.csv")])
    report = pd.read_csv(tmp_path / "r.csv")
    assert rc == 1 and len(report) == 11 and list(report["row"]) == sorted(report["row"])  # 6 media missing too
    assert "11 problem(s)" in capsys.readouterr().out


def test_describe_subprocess_runs(tmp_path):
    pd.DataFrame({"name": ["a.png"], "prompt": ["p"], "mos": [1.0]}).to_csv(tmp_path / "t.csv", index=False)
    out = subprocess.run([sys.executable, "-m", "features_store", "describe", str(tmp_path / "t.csv")],
                         capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert json.loads(out)["labelled"] == 1
