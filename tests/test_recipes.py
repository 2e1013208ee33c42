"""Recipes: every shipped one loads and names real extractors/heads; bad ones are refused clearly;
store lookup finds frame-pooled features; a GPU recipe stops with the weights message."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from experiments import recipes
from experiments.recipes import from_dict, load, spec_string, store_key
from extractors.registry import get_extractor, parse_spec

REQUIRED = {"ivl", "iq_analyzers", "ubc_dsl", "offline", "best_image", "best_video"}


def test_required_recipes_ship():
    assert REQUIRED <= set(recipes.available())


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_recipe_builds_its_extractors_on_each_track(name):
    r = load(name)
    assert r.name == name and r.extractors and r.heads
    for track in r.tracks:
        exs = r.build_extractors(track)  # __init__ only stores options: no weights loaded
        assert len(exs) == len(r.extractors)
        if track == "video":
            assert all(e.kind != "image" for e in exs)  # image models run over frames


def test_recipe_contents_match_the_challenge_entries():
    assert load("ivl").extractor_names() == ["blip2"] and load("ivl").heads == ["svr"]
    iq = load("iq_analyzers")
    assert {"reiqa", "blip2", "dinov2", "imagereward", "clip"} == set(iq.extractor_names())
    assert iq.heads[0] == "enet" and {"svr", "lgbm"} <= set(iq.heads) and iq.stack
    assert {"videomae", "clip", "raft_motion"} == set(load("ubc_dsl").extractor_names())
    off = load("offline")
    assert off.extractor_names() == ["nss", "effnet_lite0", "prompt_minilm", "generator"]
    assert off.tracks == ["image", "video"] and off.needs_weights() == []
    assert load("ivl").needs_weights() == ["blip2"]
    assert "generator" not in load("best_video").extractor_names()  # unknown on T2VQA-DB val/test


def test_dict_spec_round_trips_through_a_spec_string():
    spec = {"name": "raft_motion", "model": "raft_small", "n_frames": 8, "size": 128}
    text = spec_string(spec)
    assert parse_spec(text) == ("raft_motion", {"model": "raft_small", "n_frames": 8, "size": 128})
    assert get_extractor(text).options == get_extractor(spec).options


@pytest.mark.parametrize("bad, message", [
    ({"extractors": ["nss"], "head": ["svr"]}, "did you mean 'heads'"),
    ({"extractors": ["nsss"]}, "'nss'"),
    ({"extractors": ["nss"], "heads": ["svrr"]}, "unknown head 'svrr'"),
    ({"extractors": ["nss"], "heads": ["svr"], "stack": True}, "at least two heads"),
    ({"extractors": ["nss"], "protocol": "loo"}, "protocol"),
    ({"extractors": ["nss"], "trials": -1}, "trials"),
    ({"extractors": ["nss", "nss:max_side=256"]}, "twice"),
    ({"extractors": ["nss"], "tracks": ["audio"]}, "tracks"),
    ({"heads": ["svr"]}, "no 'extractors'"),
])
def test_bad_recipes_are_refused_with_the_reason(bad, message):
    with pytest.raises(ValueError, match="(?i)" + message.replace("(", r"\(").replace(")", r"\)")):
        from_dict({"name": "x", **bad})


def test_unknown_recipe_name_suggests(tmp_path):
    with pytest.raises(KeyError, match="best_image"):
        load("best_imag")
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump({"extractors": ["nss", "generator"], "heads": ["svr", "enet"], "stack": True}))
    r = load(p)
    assert r.name == "mine" and r.stack and r.path == str(p)


def test_video_extractor_refused_on_image_track():
    r = load("ubc_dsl")
    with pytest.raises(ValueError, match="not 'image'"):
        r.build_extractors("image")


def _store_with_configs(path, configs):
    import pandas as pd

    from features_store import FeatureStore, Manifest

    m = Manifest(pd.DataFrame({"item_id": ["a", "b"], "prompt": ["p", "q"], "mos": [1.0, 2.0]}), "/", "t")
    with FeatureStore(path, mode="a") as st:
        st.set_manifest(m)
        for key, ident in configs.items():
            st.ensure_config(key, ident, name=ident["name"])
            st.write(key, np.arange(2), np.ones((2, 3), np.float32))
    return path


def test_store_key_matches_options_and_frame_pooled_bases(tmp_path):
    nss_base = {"name": "nss", "options": {"max_side": 1024}}
    path = _store_with_configs(tmp_path / "s.h5", {
        "nss-aaa": {"name": "nss", "options": {"max_side": 1024}},
        "nss-bbb": {"name": "nss", "options": {"max_side": 256}},
        "frames.nss-ccc": {"name": "frames", "base": nss_base, "sampling": {"n_frames": 8}},
        "frames.nss-ddd": {"name": "frames", "base": nss_base, "sampling": {"n_frames": 16}},
    })
    assert store_key(path, "nss", "image") == "nss-aaa"  # the one with default options
    assert store_key(path, "nss:max_side=256", "image") == "nss-bbb"
    assert store_key(path, "nss-bbb") == "nss-bbb"  # a key is taken as is
    with pytest.raises(KeyError, match="2 configurations"):
        store_key(path, "nss", "video")  # n_frames 8 and 16 both use the default base options
    assert store_key(path, "frames:base=nss:n_frames=16", "video") == "frames.nss-ddd"
    with pytest.raises(KeyError, match="make features"):
        store_key(path, "effnet_lite0", "image")


def test_gpu_recipe_stops_at_missing_weights_with_their_message(tmp_path, capsys):
    from experiments import reproduce
    from experiments.demo_data import DemoConfig, build_demo_dataset

    data = build_demo_dataset(tmp_path / "data", DemoConfig(n_sources=5, crops_per_source=1, size=48))
    rc = reproduce.main(["--track", "image", "--data", str(data), "--recipe", "ivl", "--store",
                         str(tmp_path / "s.h5"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == reproduce.EXIT_NO_WEIGHTS
    assert "needs weights" in err and "weights not found" in err and "blip2" in err.lower()
    assert not (tmp_path / "run").exists()  # nothing fitted


def test_reproduce_sharded_then_merged_writes_submissions(tmp_path, capsys):
    """--shard k/N computes a share of the items and stops; merge; --fit-only fits and writes submissions."""
    import zipfile

    from experiments import reproduce
    from experiments.demo_data import DemoConfig, build_demo_dataset
    from features_store.merge import merge

    data = build_demo_dataset(tmp_path / "data", DemoConfig(n_sources=14, crops_per_source=1, size=48, test_sources=2))
    recipe = tmp_path / "small.yaml"
    recipe.write_text(yaml.safe_dump({"name": "small", "tracks": ["image"], "extractors": ["nss", "generator"],
                                      "heads": ["svr", "enet"], "stack": True, "trials": 2, "folds": 3}))
    store = tmp_path / "s.h5"
    base = ["--track", "image", "--data", str(data), "--recipe", str(recipe), "--store", str(store),
            "--out", str(tmp_path / "run")]
    for k in range(2):
        assert reproduce.main(base + ["--shard", f"{k}/2"]) == 0
    printed = capsys.readouterr().out
    assert "python -m features_store merge" in printed and not (tmp_path / "run").exists()
    shards = sorted(tmp_path.glob("s.shard-*-of-2.h5"))
    assert len(shards) == 2
    merge(store, shards)
    assert reproduce.main(base + ["--fit-only"]) == 0
    sub = tmp_path / "run" / "submission"
    lines = (sub / "output.txt").read_text().splitlines()
    assert len(lines) == 2 * 6 and all(len(line.split(",")) == 2 for line in lines)  # 2 test photos x 6 variants
    assert len((sub / "readme.txt").read_text().splitlines()) == 5
    with zipfile.ZipFile(sub.with_suffix(".zip")) as z:
        assert sorted(z.namelist()) == ["output.txt", "readme.txt"]
