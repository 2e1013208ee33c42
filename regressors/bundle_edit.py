"""Intentional changes to a model bundle: ``aigcq bundle relabel`` and ``aigcq bundle upgrade``.

Loading refuses any edit of a bundle (regressors.bundle_integrity); these are the documented ways to
change one. Both rewrite ``model.skops`` (with the record of what its heads depend on), ``MODEL.md``
and the sealed ``bundle.json`` into a copy of the bundle, then swap the copy in whole.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def relabel(folder: str | Path, target_name: str | None = None, generators: dict[str, str] | None = None) -> dict:
    """Rename the target and/or generators of a verified bundle (positions and heads unchanged), rewriting
    bundle.json, the model's record, MODEL.md and the manifest; the old folder is replaced whole. Returns the
    new bundle.json."""
    from .bundle import BundleError, load_bundle

    folder = Path(folder)
    model, info = load_bundle(folder)  # refuses a bundle that is not whole and consistent
    info = json.loads(json.dumps(info))
    if target_name is not None:
        if not str(target_name).strip():
            raise BundleError("--target-name must not be empty")
        info["target"]["name"] = str(target_name)
    if generators:
        vocab = info.get("generator_vocabulary")
        if not vocab:
            raise BundleError(f"{folder}: the model has no generator vocabulary to relabel")
        unknown = [g for g in generators if g not in vocab]
        if unknown:
            raise BundleError(f"{folder}: the model knows no generator {', '.join(map(repr, unknown))}; it knows: "
                              f"{', '.join(vocab)}")
        new = [generators.get(g, g) for g in vocab]
        if len(set(new)) != len(new):
            raise BundleError(f"relabelling gives two generators one name: {new}")
        for f in info["features"]:
            if f.get("vocabulary") is not None:
                if (f.get("identity", {}).get("options") or {}).get("generators") is not None:
                    raise BundleError(f"{folder}: block {f['block']!r} has its vocabulary in its store key (option "
                                      "generators=...): relabelling would change the key; train again instead")
                f["vocabulary"] = [generators.get(g, g) for g in f["vocabulary"]]
        info["generator_vocabulary"] = new
    return _rewrite(folder, model, info)


def upgrade(folder: str | Path) -> dict:
    """Record, in a bundle written before the records existed (format 1), what its heads depend on as its
    bundle.json says now, and seal it. For a bundle you made or trust: its bundle.json is taken as it is."""
    from .bundle import BundleError, load_model_file, read_info

    folder = Path(folder)
    info = read_info(folder)
    if int(info.get("format_version", 1)) >= 2:
        raise BundleError(f"{folder} already records what its heads depend on (format {info['format_version']}); "
                          "nothing to upgrade (`aigcq bundle verify` checks it)")
    model = load_model_file(folder, info)  # its sha256 as recorded, trusted types only
    return _rewrite(folder, model, info)


def _rewrite(folder: Path, model, info: dict) -> dict:
    """Write model.skops (with the record of ``info``), MODEL.md and the sealed bundle.json into a copy of the
    bundle, then swap the copy in (a kill leaves the old bundle or the new one, never half of each)."""
    from .bundle import FORMAT_VERSION, write_contents

    tmp = folder.parent / f".{folder.name}.rewrite-{os.getpid()}"
    old = folder.parent / f".{folder.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp, symlinks=True)
    try:
        info = {**info, "format_version": FORMAT_VERSION}
        meta = write_contents(tmp, model, info)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)  # a verified bundle: every file in it is one its manifest listed
    return meta
