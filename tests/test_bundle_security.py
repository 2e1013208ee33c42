"""Issue 22 parts 1 and 2: a bundle is data, and a bundle cannot be edited into wrong scores.

Before: a `reiqa` block added to bundle.json with allow_pickle and a checkpoint path inside the bundle made `aigcq score`
unpickle it (the attacker's code ran); a reversed generator vocabulary, `kept_blocks: ["generator"]`, or nss options and
identity edited with the key left were accepted and changed every score (exit 0).
"""
from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aigcq.score import main as score_main


class Planted:
    """Unpickling this creates a marker file: it stands for any code an attacker could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _score(capsys, bundle, listing, cache, *extra):
    capsys.readouterr()
    rc = score_main([str(bundle), str(listing), "--cache", str(cache), "--no-progress", *map(str, extra)])
    out, err = capsys.readouterr()
    return rc, out, [ln for ln in err.splitlines() if ln.startswith("error:")], err


@pytest.fixture(scope="module")
def original(nss_bundle, tmp_path_factory):
    """The untouched bundle's scores of the held-out images."""
    bundle, _, listing = nss_bundle
    cache = tmp_path_factory.mktemp("orig") / "cache.h5"
    rc = score_main([str(bundle), str(listing), "--cache", str(cache), "--no-progress", "--quiet"])
    assert rc == 0
    return bundle, listing, cache


@pytest.fixture
def scores(original, capsys):
    bundle, listing, cache = original
    rc, out, _, err = _score(capsys, bundle, listing, cache)
    assert rc == 0, err
    return pd.read_csv(io.StringIO(out))["score"].to_numpy()


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(bundle, dest)
    return dest


def _edit(folder: Path, change, reseal: bool = False) -> None:
    """Edit bundle.json as an attacker (or a user) would; ``reseal``: also recompute the manifest's hashes, which
    needs no secret (the model's own record still disagrees)."""
    info = json.loads((folder / "bundle.json").read_text())
    change(info)
    if reseal:
        from regressors.bundle_integrity import seal

        seal(folder, info)
    else:
        (folder / "bundle.json").write_text(json.dumps(info, indent=2))


def _reverse_vocabulary(info):
    info["generator_vocabulary"] = info["generator_vocabulary"][::-1]
    for f in info["features"]:
        if f.get("vocabulary"):
            f["vocabulary"] = f["vocabulary"][::-1]


def _keep_generator_only(info):
    info["kept_blocks"] = ["generator"]


def _nss_max_side_128(info):
    for f in info["features"]:
        if f["name"] == "nss":
            f["options"]["max_side"] = 128
            f["identity"]["options"]["max_side"] = 128  # the key is left as it was


@pytest.mark.parametrize("reseal", [False, True])
@pytest.mark.parametrize("change, field", [
    (_reverse_vocabulary, "vocabulary"),
    (_keep_generator_only, "kept_blocks"),
    (_nss_max_side_128, "(nss)."),
])
def test_an_edited_bundle_is_refused_naming_the_field(original, scores, tmp_path, capsys, change, field, reseal):
    bundle, listing, cache = original
    edited = _copy(bundle, tmp_path)
    _edit(edited, change, reseal)
    rc, out, errors, err = _score(capsys, edited, listing, cache)
    assert rc == 2 and len(errors) == 1 and field in errors[0], err[-2000:]
    assert ("edited after the bundle was written" in errors[0]) or ("not what the model was fitted with" in errors[0])
    assert out == ""  # no score at all, let alone a changed one


def test_relabelling_generators_is_the_documented_change_and_keeps_every_score(original, scores, tmp_path, capsys):
    from aigcq.cli import main as aigcq_main

    bundle, listing, cache = original
    relabelled = _copy(bundle, tmp_path)
    vocab = json.loads((bundle / "bundle.json").read_text())["generator_vocabulary"]
    assert aigcq_main(["bundle", "relabel", str(relabelled), "--target-name", "quality",
                       *[a for g in vocab for a in ("--generator", f"{g}={g.upper()}")]]) == 0
    info = json.loads((relabelled / "bundle.json").read_text())
    assert info["generator_vocabulary"] == [g.upper() for g in vocab] and info["target"]["name"] == "quality"
    assert "FAKEGEN-BLUR" in (relabelled / "MODEL.md").read_text()
    listing2 = tmp_path / "list.csv"
    df = pd.read_csv(listing)
    df["path"] = [str(listing.parent / p) for p in df["path"]]
    df["generator"] = df["generator"].str.upper()
    df.to_csv(listing2, index=False)
    rc, out, _, err = _score(capsys, relabelled, listing2, cache)
    assert rc == 0, err
    np.testing.assert_array_equal(pd.read_csv(io.StringIO(out))["score"].to_numpy(), scores)
    assert aigcq_main(["bundle", "verify", str(relabelled)]) == 0
    # a name the model never saw is refused, not silently mapped
    capsys.readouterr()
    assert aigcq_main(["bundle", "relabel", str(relabelled), "--generator", "sdxl=SDXL"]) == 2
    assert "knows no generator 'sdxl'" in capsys.readouterr().err


@pytest.mark.parametrize("damage, expected", [
    ("added", "is not in the bundle's manifest"),
    ("changed", "does not match"),
    ("removed", "MODEL.md is missing"),
    ("symlink", "is a symbolic link"),
])
def test_a_file_added_changed_or_removed_is_refused(original, tmp_path, capsys, damage, expected):
    bundle, listing, cache = original
    b = _copy(bundle, tmp_path)
    if damage == "added":
        (b / "notes.txt").write_text("hi")
    elif damage == "changed":
        (b / "MODEL.md").write_text((b / "MODEL.md").read_text() + "\nedited\n")
    elif damage == "removed":
        (b / "MODEL.md").unlink()
    else:
        (b / "extra").symlink_to(tmp_path)
    rc, _, errors, err = _score(capsys, b, listing, cache)
    assert rc == 2 and len(errors) == 1 and expected in errors[0], err


def _crafted_reiqa(bundle: Path, tmp_path: Path, marker: Path) -> tuple[Path, dict]:
    """The issue's case: a `reiqa` block with allow_pickle and a checkpoint placed in the bundle, whose identity and
    key are what the extractor computes (so the key check passes); model.skops untouched."""
    from extractors.registry import get_extractor

    b = _copy(bundle, tmp_path)
    (b / "content_aware_r50.pth").write_bytes(pickle.dumps(Planted(marker)))
    options = {"content_ckpt": str(b / "content_aware_r50.pth"), "quality_ckpt": None, "encoders": ["content"],
               "max_side": 64, "allow_pickle": True}
    ex = get_extractor({"name": "reiqa", **options})
    block = {"block": "reiqa", "key": ex.key(), "name": "reiqa", "kind": "image", "dim": ex.output_dim(),
             "identity": json.loads(json.dumps(ex.identity())), "options": options}
    info = json.loads((b / "bundle.json").read_text())
    info["features"].append(block)
    if info.get("kept_blocks") is not None:
        info["kept_blocks"] = [*info["kept_blocks"], "reiqa"]
    (b / "bundle.json").write_text(json.dumps(info, indent=2))
    return b, info


def test_the_crafted_reiqa_bundle_runs_nothing(original, tmp_path, capsys):
    bundle, listing, cache = original
    marker = tmp_path / "PWNED"
    crafted, _ = _crafted_reiqa(bundle, tmp_path, marker)
    rc, out, errors, err = _score(capsys, crafted, listing, tmp_path / "c.h5")
    assert not marker.exists(), "the pickle in the bundle ran"
    assert rc == 2 and len(errors) == 1 and out == "", err[-2000:]


def test_even_a_wholly_consistent_crafted_bundle_cannot_turn_on_pickle_or_name_a_file(original, tmp_path, capsys):
    """Rewriting model.skops too (with a record that matches) is making another model: its scores are the maker's
    business, but loading it still runs no code and reads no file it names."""
    from regressors import bundle_integrity
    from regressors.bundle import skops_io, trusted_types, write_contents

    sio = skops_io()

    bundle, listing, cache = original
    marker = tmp_path / "PWNED"
    crafted, info = _crafted_reiqa(bundle, tmp_path, marker)
    model = sio.load(crafted / "model.skops", trusted=trusted_types())
    write_contents(crafted, model, info)  # record, manifest: all consistent
    assert bundle_integrity.record_of(model) == bundle_integrity.depends(json.loads((crafted / "bundle.json").read_text()))
    rc, _, errors, err = _score(capsys, crafted, listing, tmp_path / "c.h5")
    assert rc == 2 and len(errors) == 1 and "allow_pickle=True" in errors[0] and "--trust-pickle" in errors[0], err
    assert not marker.exists()
    # without allow_pickle, the path alone is refused too: a bundle never names a file to read
    info["features"][-1]["options"]["allow_pickle"] = False
    write_contents(crafted, model, info)
    rc, _, errors, err = _score(capsys, crafted, listing, tmp_path / "c.h5")
    assert rc == 2 and "a path: a model bundle never names a file to read" in errors[0], err
    assert "--weights reiqa.content_ckpt=PATH" in errors[0] and not marker.exists()


def test_a_bundle_of_an_older_version_is_refused_until_its_owner_upgrades_it(original, scores, tmp_path, capsys):
    """A format-1 bundle (no record in the model, no manifest): an edit could not be seen, so it is refused, saying
    how its owner records it; after `aigcq bundle upgrade` it scores exactly as before."""
    from aigcq.cli import main as aigcq_main
    from regressors import bundle_integrity
    from regressors.bundle import sha256_file, skops_io, trusted_types

    sio = skops_io()

    bundle, listing, cache = original
    old = _copy(bundle, tmp_path)
    model = sio.load(old / "model.skops", trusted=trusted_types())
    delattr(model, bundle_integrity.DEPENDS_ATTR)
    sio.dump(model, old / "model.skops")
    info = json.loads((old / "bundle.json").read_text())
    info.pop("manifest")
    info.update(format_version=1, files={"model.skops": sha256_file(old / "model.skops")})
    (old / "bundle.json").write_text(json.dumps(info))
    rc, _, errors, err = _score(capsys, old, listing, cache)
    assert rc == 2 and len(errors) == 1 and f"aigcq bundle upgrade {old}" in errors[0], err
    assert aigcq_main(["bundle", "upgrade", str(old)]) == 0
    rc, out, _, err = _score(capsys, old, listing, cache)
    assert rc == 0, err
    np.testing.assert_array_equal(pd.read_csv(io.StringIO(out))["score"].to_numpy(), scores)


# ------------------------------------------------------------------------------------------- options read from a bundle
@pytest.mark.parametrize("name, options, expected", [
    ("reiqa", {"allow_pickle": True}, "lets a weights file run code"),
    ("reiqa", {"content_ckpt": "/etc/passwd"}, "a path: a model bundle never names a file to read"),
    ("effnet_lite0", {"weights": "../../weights.pth"}, "--weights effnet_lite0.weights=PATH"),
    ("clip", {"checkpoint": "~/model.pt"}, "a path"),
    ("clip", {"model": "local-dir:/data/clip"}, "only a hub id"),
    ("dinov2", {"model": "/models/dinov2"}, "only a hub id"),
    ("dinov2", {"model": "../facebook/dinov2-base"}, "only a hub id"),
    ("imagereward", {"checkpoint": "../../ImageReward.pt"}, "only a plain file name"),
    ("imagereward", {"med_config": "/tmp/med.json"}, "a path"),
    ("dinov2", {"revision": "/tmp/attacker/ref"}, "only a plain revision name"),
    ("clip", {"revision": "../../../../ref"}, "only a plain revision name"),
    ("frames", {"base": "dinov2", "base_options": {"revision": "main/../../x"}}, "only a plain revision name"),
    ("raft_motion", {"weights": "/tmp/raft.pth"}, "a path"),
    ("frames", {"base": "reiqa", "base_options": {"allow_pickle": True}}, "lets a weights file run code"),
    ("temporal_consistency", {"base": "effnet_lite0", "base_options": {"weights": "/w.pth"}}, "a path"),
    ("nosuch", {}, "unknown extractor"),
])
def test_options_a_bundle_may_not_set_are_refused(name, options, expected):
    from extractors.bundle_options import BundleOptionError, from_bundle

    with pytest.raises(BundleOptionError, match=expected.replace("(", r"\(")):
        from_bundle(name, options)


def test_data_options_pass_and_the_user_supplies_files_and_permission(tmp_path):
    from extractors.bundle_options import from_bundle, parse_weights

    assert from_bundle("dinov2", {"model": "facebook/dinov2-base", "size": 224}) == {"model": "facebook/dinov2-base",
                                                                                   "size": 224}
    assert from_bundle("clip", {"model": "hf-hub:timm/ViT-B-16-SigLIP"})["model"] == "hf-hub:timm/ViT-B-16-SigLIP"
    assert from_bundle("raft_motion", {"weights": "default"})["weights"] == "default"
    for rev in ("main", "v1.0", "refs/pr/1", "a" * 40):
        assert from_bundle("dinov2", {"revision": rev})["revision"] == rev
    # a file recorded by its content comes back unset; the user's --weights fills it; --trust-pickle the permission
    recorded = {"content_ckpt": {"file": "content_aware_r50.pth", "sha256": "ab" * 32}, "encoders": ["content"]}
    w = parse_weights([f"reiqa.content_ckpt={tmp_path / 'c.pth'}"])
    out = from_bundle("reiqa", recorded, w, trust_code=True)
    assert out["content_ckpt"] == str(tmp_path / "c.pth") and out["allow_pickle"] is True
    assert from_bundle("reiqa", recorded)["content_ckpt"] is None
    for bad, why in (("reiqa.content_ckpt", "EXTRACTOR.OPTION=PATH"), ("dinov2.model=/m", "Hugging Face cache"),
                     ("reiqa.encoders=x", "not a weights-file option"), ("nope.x=/y", "unknown extractor")):
        with pytest.raises(ValueError, match=why):
            parse_weights([bad])


def test_every_option_that_could_name_a_file_or_run_code_is_classified():
    """The audit (docs/security.md) as a test: an option whose name says it holds a path, weights or a code switch
    must be in its extractor's local_options, or a bundle could set it freely."""
    from extractors.registry import REGISTRY, extractor_class

    suspicious = {"ckpt", "checkpoint", "weights", "model", "config", "tokenizer", "path", "file", "dir", "pickle",
                  "url", "code", "script", "module", "plugin", "revision"}
    missing = []
    for name in REGISTRY:
        cls = extractor_class(name)
        for opt, default in cls.defaults.items():
            if suspicious & set(opt.lower().split("_")) and opt not in cls.local_options:
                if name == "raft_motion" and opt == "model":  # raft_large | raft_small: an architecture name
                    continue
                missing.append(f"{name}.{opt}")
    assert not missing, f"classify these in local_options (and docs/security.md): {missing}"


def test_the_security_table_lists_every_classified_option():
    from extractors.registry import REGISTRY, extractor_class

    doc = (Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text()
    for name in REGISTRY:
        for opt in extractor_class(name).local_options:
            assert f"| `{name}` | `{opt}` |" in doc, f"docs/security.md lacks the row of {name}.{opt}"


def test_weights_a_bundle_names_come_from_the_cache_only(monkeypatch):
    from extractors import weights
    from extractors.base import WeightsNotFoundError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert not weights.hub_offline()
    with weights.cache_only():
        assert weights.hub_offline()
        with pytest.raises(WeightsNotFoundError, match="local cache only"):
            weights.resolve_pretrained("nobody-here/no-such-model-xyz")
    assert not weights.hub_offline()


# ------------------------------------------------------------------------- hostile review (r22): holes found after merge
def _consistent(bundle: Path, tmp_path: Path, change) -> Path:
    """A bundle its maker crafted whole: ``change`` applied to bundle.json, then model record and manifest rewritten
    to agree (no secret is needed for that)."""
    from regressors.bundle import skops_io, trusted_types, write_contents

    b = _copy(bundle, tmp_path)
    info = json.loads((b / "bundle.json").read_text())
    change(info, b)
    write_contents(b, skops_io().load(b / "model.skops", trusted=trusted_types()), info)
    return b


@pytest.mark.parametrize("revision", ["ABS", "../../../../../../../../../../../../..{ref}"])
def test_a_bundle_revision_cannot_lead_the_hub_lookup_to_a_folder_of_its_choice(original, tmp_path, capsys, monkeypatch,
                                                                               revision):
    """Before: huggingface_hub reads refs/<revision> and snapshots/<that file's text>, both joined onto the cache
    path: a bundle's revision (absolute, or with ..) pointed at a file of its own whose text named any folder, and
    transformers loaded config and weights from there (exit 1, a traceback from transformers)."""
    from extractors.registry import get_extractor
    from extractors.prompt_minilm import wheel_model_path

    bundle, listing, _ = original
    snap = tmp_path / "attacker_snapshot"
    shutil.copytree(wheel_model_path(), snap)
    (snap / "config.json").write_text("{ read from the attacker's folder")
    ref = tmp_path / "ref"
    ref.write_text(str(snap))
    rev = str(ref) if revision == "ABS" else revision.format(ref=ref)
    from huggingface_hub import constants

    hub = tmp_path / "hub"  # the user's hub cache, holding some repo (a relative revision walks out of its refs/)
    (hub / "models--someone--model" / "refs").mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    opts = {"model": "someone/model", "revision": rev, "max_tokens": 256}
    ex = get_extractor({"name": "prompt_minilm", **opts})

    def add_block(info, _):
        info["features"].insert(0, {"block": "prompt_minilm", "key": ex.key(), "name": "prompt_minilm", "kind": "text",
                                    "dim": 384, "identity": json.loads(json.dumps(ex.identity())), "options": opts})
        info["n_features"] += 384
        info["kept_blocks"] = ["prompt_minilm", *info.get("kept_blocks", [f["block"] for f in info["features"][1:]])]

    crafted = _consistent(bundle, tmp_path, add_block)
    rc, out, errors, err = _score(capsys, crafted, listing, tmp_path / "c.h5")
    assert rc == 2 and len(errors) == 1 and "revision" in errors[0], err[-2000:]
    assert "attacker" not in err and out == ""


def test_bundle_upgrade_never_writes_through_a_link_in_the_bundle(original, tmp_path, capsys):
    """Before: `aigcq bundle upgrade` on a format-1 bundle whose MODEL.md was a link wrote the new card (with text the
    bundle chose, e.g. shell lines in the dataset name) into the link's target, any file the user may write."""
    from aigcq.cli import main as aigcq_main
    from regressors import bundle_integrity
    from regressors.bundle import sha256_file, skops_io, trusted_types

    sio = skops_io()
    bundle, _, _ = original
    old = _copy(bundle, tmp_path)
    model = sio.load(old / "model.skops", trusted=trusted_types())
    delattr(model, bundle_integrity.DEPENDS_ATTR)
    sio.dump(model, old / "model.skops")
    info = json.loads((old / "bundle.json").read_text())
    info.pop("manifest")
    info["training"]["dataset"] = "x\necho pwned\n"
    info.update(format_version=1, files={"model.skops": sha256_file(old / "model.skops")})
    (old / "bundle.json").write_text(json.dumps(info))
    victim = tmp_path / "bashrc"
    victim.write_text("alias ll='ls -l'\n")
    (old / "MODEL.md").unlink()
    (old / "MODEL.md").symlink_to(victim)
    capsys.readouterr()
    assert aigcq_main(["bundle", "upgrade", str(old)]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert victim.read_text() == "alias ll='ls -l'\n"


def test_a_bundle_cannot_shed_its_manifest_by_claiming_an_older_format(original, tmp_path, capsys):
    """Before: format_version set to 1 and the manifest dropped, every field and file check was skipped: the target
    renamed, MODEL.md rewritten and a file added were accepted, and `aigcq bundle verify` said 'as sealed'."""
    from aigcq.cli import main as aigcq_main

    bundle, listing, cache = original
    b = _copy(bundle, tmp_path)
    info = json.loads((b / "bundle.json").read_text())
    info.pop("manifest")
    info["format_version"] = 1
    info["target"]["name"] = "certified quality"
    (b / "MODEL.md").write_text("# certified by NTIRE\n")
    (b / "extra.bin").write_bytes(b"anything")
    (b / "bundle.json").write_text(json.dumps(info))
    rc, out, errors, err = _score(capsys, b, listing, cache)
    assert rc == 2 and len(errors) == 1 and "format" in errors[0] and out == "", err
    assert aigcq_main(["bundle", "verify", str(b)]) == 2


def test_the_manifest_never_makes_the_toolkit_open_a_file_outside_the_bundle(original, tmp_path, capsys):
    """Before: a `files` entry with an absolute path or .. was opened and hashed (its hash prefix printed)."""
    from regressors.bundle_integrity import MANIFEST, digest

    bundle, listing, cache = original
    outside = tmp_path / "secret.txt"
    outside.write_text("the user's secret\n")
    for name in (str(outside), "../secret.txt"):
        b = _copy(bundle, tmp_path / name.replace("/", "_"))
        info = json.loads((b / "bundle.json").read_text())
        info["files"][name] = "0" * 64
        info[MANIFEST]["fields"]["files"] = digest(info["files"])
        (b / "bundle.json").write_text(json.dumps(info))
        rc, _, errors, err = _score(capsys, b, listing, cache)
        assert rc == 2 and len(errors) == 1 and "sha256" not in errors[0], err
        assert "not a file of the bundle" in errors[0], errors


@pytest.mark.parametrize("damage", ["huge shape", "object array"])
def test_a_crafted_model_file_is_one_line_not_a_traceback(original, tmp_path, capsys, damage):
    """Before: a .npy member declaring 10**11 floats (MemoryError) or an object array (ValueError) ended `aigcq score`
    with a traceback, exit 1."""
    import zipfile

    from regressors.bundle_integrity import seal

    bundle, listing, cache = original
    b = _copy(bundle, tmp_path)
    src = zipfile.ZipFile(bundle / "model.skops")
    npy = next(n for n in src.namelist() if n.endswith(".npy"))
    header = io.BytesIO()
    shape, descr = ((10 ** 11,), "<f8") if damage == "huge shape" else ((1,), "|O")
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(b / "model.skops", "w") as z:
        for n in src.namelist():
            z.writestr(n, header.getvalue() + pickle.dumps([1]) if n == npy else src.read(n))
    seal(b, json.loads((b / "bundle.json").read_text()))
    rc, out, errors, err = _score(capsys, b, listing, cache)
    assert rc == 2 and len(errors) == 1 and "model.skops" in errors[0] and "Traceback" not in err, err[-2000:]


def test_a_bundle_json_nested_thousands_deep_is_one_line(original, tmp_path, capsys):
    """Before: json.loads raised RecursionError and `aigcq score` ended in a traceback (exit 1)."""
    bundle, listing, cache = original
    b = _copy(bundle, tmp_path)
    text = (b / "bundle.json").read_text()
    (b / "bundle.json").write_text(text.replace('"track":', '"deep": ' + "[" * 100_000 + "]" * 100_000 + ', "track":', 1))
    rc, out, errors, err = _score(capsys, b, listing, cache)
    assert rc == 2 and len(errors) == 1 and "nests its JSON too deeply" in errors[0], err[-1000:]
