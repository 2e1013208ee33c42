"""A model bundle cannot be edited into wrong scores.

Two records, checked every time a bundle is loaded (``regressors.bundle.read_info`` and ``load_bundle``):

* **What the heads depend on**, written inside the fitted model (``model.skops``, attribute
  :data:`DEPENDS_ATTR`, canonical JSON) as well as in ``bundle.json``: the track, the number of
  columns, per feature block its name, store key, extractor name and kind, width, columns, a hash of
  its identity and of its rebuild options, its vocabulary; the blocks the model reads
  (``kept_blocks``, resolved) and the generator vocabulary. Loading derives the same record from
  ``bundle.json`` and refuses any difference with one line naming the field: a reversed generator
  vocabulary, a trimmed ``kept_blocks`` or an extractor's options edited "with the key left" no
  longer change scores silently. Another part of the toolkit that writes a score-relevant field
  into ``bundle.json`` adds its name to :data:`EXTRA_SCORE_FIELDS`.
* **A manifest**: ``bundle.json``'s ``files`` holds the sha256 of every other file of the bundle
  (whatever writes it: :func:`seal` lists what is on disk), and ``manifest.fields`` the sha256 of
  each top-level field of ``bundle.json`` itself. A file added, removed or changed after the bundle
  was written, or a field edited by hand, is refused naming it.

Neither is a signature (there is no secret): someone who rewrites ``model.skops`` too has made a
different model, and only the source of a bundle says whether to trust its scores. What the records
guarantee is that nothing *edited* in a bundle changes its scores without the edit showing, and
(with regressors.bundle's trusted types and extractors.bundle_options) that loading one runs no
code and reads no file outside it (SECURITY.md).

An intentional change goes through ``aigcq bundle relabel`` (target name, generator names), which
rewrites both records; a bundle written before the records existed is refused until its owner runs
``aigcq bundle upgrade`` on it (both in regressors.bundle_edit).

This module sits below regressors.bundle (which calls :func:`attach`, :func:`seal`, :func:`verify` and
:func:`check_model`): it imports nothing of the regressors.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

#: the fitted model's attribute holding the record (canonical JSON text)
DEPENDS_ATTR = "aigcq_depends"
RECORD_VERSION = 1
#: per feature block, what scoring reads (identity and options enter by their hash)
FEATURE_FIELDS = ("block", "key", "name", "kind", "dim", "columns", "identity", "options", "vocabulary")
HASHED = ("identity", "options")
#: top-level bundle.json fields, beyond those in :func:`depends`, that change scores: recorded by their hash
EXTRA_SCORE_FIELDS: tuple[str, ...] = ()
MANIFEST = "manifest"
BUNDLE_JSON = "bundle.json"


class BundleError(ValueError):
    """A model bundle that cannot be used; the message names the file and what to do (one line).
    (Re-exported by regressors.bundle, where callers import it from.)"""


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(value: Any) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- the record of what the heads depend on
def _kept(info: dict) -> list:
    feats = [f for f in info.get("features") or [] if isinstance(f, dict)]
    kept = info.get("kept_blocks")
    return [f.get("block") for f in feats if kept is None or (isinstance(kept, list) and f.get("block") in kept)]


def depends(info: dict) -> dict:
    """What the heads depend on, read from ``bundle.json`` (as parsed JSON)."""
    feats = []
    for f in info.get("features") or []:
        f = f if isinstance(f, dict) else {}
        feats.append({k: (digest(f.get(k)) if k in HASHED else f.get(k)) for k in FEATURE_FIELDS})
    return {"version": RECORD_VERSION, "track": info.get("track"), "n_features": info.get("n_features"),
            "kept_blocks": _kept(info), "generator_vocabulary": info.get("generator_vocabulary"), "features": feats,
            **{k: digest(info.get(k)) for k in EXTRA_SCORE_FIELDS}}


def record_of(model) -> dict | None:
    text = getattr(model, DEPENDS_ATTR, None)
    if not isinstance(text, str):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def attach(model, info: dict) -> None:
    """Write the record of ``info`` (parsed bundle.json) into the fitted model, before it is saved."""
    setattr(model, DEPENDS_ATTR, canonical(depends(info)))


def difference(recorded: dict, derived: dict) -> str | None:
    """The first field where ``bundle.json`` (derived) disagrees with the model's record, named; None if none."""
    for k in sorted(set(recorded) | set(derived)):
        if k == "features":
            a, b = recorded.get(k) or [], derived.get(k) or []
            if len(a) != len(b):
                return f"features ({len(a)} block(s) recorded in the model, {len(b)} in bundle.json)"
            for i, (fa, fb) in enumerate(zip(a, b)):
                for field in sorted(set(fa) | set(fb)):
                    if fa.get(field) != fb.get(field):
                        return f"features[{i}] ({fa.get('block')}).{field}"
        elif recorded.get(k) != derived.get(k):
            return k
    return None


def check_model(model, info: dict, folder) -> None:
    """Refuse (BundleError, one line) a model without the record, or whose record ``bundle.json`` contradicts."""
    record = record_of(model)
    if record is not None and int(info.get("format_version", 1)) < 2:  # format 1 skips the manifest: not for this model
        raise BundleError(f"{folder}/{BUNDLE_JSON}: format_version {info.get('format_version')!r} is not what the model "
                          "was written with (it records what its heads depend on: format 2, with a manifest): "
                          "bundle.json was edited after the bundle was written; restore it, or train again")
    if record is None:
        raise BundleError(f"{folder}: the model records nothing of what its heads depend on (written before aigcq "
                          "bundles recorded it, or stripped of it), so an edit of bundle.json could change its scores "
                          f"unseen; if you made this bundle, `aigcq bundle upgrade {folder}` records it")
    field = difference(record, depends(info))
    if field is not None:
        raise BundleError(f"{folder}/{BUNDLE_JSON}: {field} is not what the model was fitted with (recorded inside "
                          "model.skops): bundle.json was edited after the bundle was written; restore it, or train "
                          "again (relabelling goes through `aigcq bundle relabel`)")


# ---------------------------------------------------------------- the manifest
def bundle_files(folder: Path) -> list[str]:
    """Every file of the bundle but bundle.json, relative (posix); a symbolic link anywhere is refused."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        for name in dirnames + filenames:
            if (base / name).is_symlink():
                raise BundleError(f"{base / name} is a symbolic link: a model bundle holds plain files only "
                                  "(a link could lead outside it); refusing to load it")
        for name in filenames:
            rel = (base / name).relative_to(folder).as_posix()
            if rel != BUNDLE_JSON:
                out.append(rel)
    return sorted(out)


def seal(folder: str | Path, meta: dict) -> dict:
    """``meta`` (bundle.json's content, parsed) with ``files`` (every other file on disk, by sha256) and
    ``manifest.fields`` (each top-level field's hash) filled in; writes bundle.json and returns it.
    Whoever adds a file to a bundle after :func:`regressors.bundle.save_bundle` calls this again."""
    folder = Path(folder)
    meta = {k: v for k, v in meta.items() if k != MANIFEST}
    meta["files"] = {rel: sha256_file(folder / rel) for rel in bundle_files(folder)}
    meta[MANIFEST] = {"algorithm": "sha256", "fields": {k: digest(v) for k, v in meta.items()},
                      # per feature block and key: an edit is named down to the block and the key
                      "features": [{k: digest(v) for k, v in f.items()} if isinstance(f, dict) else digest(f)
                                   for f in meta.get("features") or []],
                      "note": "edit a bundle only with `aigcq bundle relabel`: loading refuses any other change"}
    tmp = folder / f".{BUNDLE_JSON}.tmp"
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, folder / BUNDLE_JSON)
    return meta


def verify(folder: str | Path, info: dict) -> None:
    """Refuse (BundleError, one line) a bundle.json field edited, or a file added, removed or changed, since the
    bundle was sealed. Bundles of format 1 (no manifest) pass here; load_bundle refuses them for lacking the
    model record."""
    folder = Path(folder)
    path = folder / BUNDLE_JSON
    present = bundle_files(folder)  # a symbolic link is refused whatever the format (upgrade writes into the folder)
    if int(info.get("format_version", 1)) < 2:
        return
    manifest = info.get(MANIFEST)
    fields = manifest.get("fields") if isinstance(manifest, dict) else None
    if not isinstance(fields, dict):
        raise BundleError(f"{path} lacks its manifest (the hash of each field and file): the file was edited after "
                          "the bundle was written; restore it, or train again")
    for k in sorted(set(info) | set(fields)):
        if k == MANIFEST:
            continue
        if k not in info:
            what = "was removed"
        elif k not in fields:
            what = "was added"
        elif digest(info[k]) != fields[k]:
            what = "was edited"
            if k == "features":
                k = _edited_block(info[k], manifest.get("features"))
        else:
            continue
        raise BundleError(f"{path}: field {k!r} {what} after the bundle was written (its manifest says otherwise); "
                          "restore the file, or make an intentional change with `aigcq bundle relabel`")
    listed = info.get("files") or {}
    for rel in present:
        if rel not in listed:
            raise BundleError(f"{folder / rel} is not in the bundle's manifest (added after the bundle was written): "
                              "nothing reads it; remove it")
    for rel, expected in sorted(listed.items()):
        p = folder / rel
        if rel not in present and (os.path.isabs(rel) or ".." in Path(rel).parts):  # never opened: not ours to read
            raise BundleError(f"{path}: the manifest lists {rel!r}, not a file of the bundle (a path outside it); "
                              "the file is damaged or was not written by `aigcq regress`")
        if not p.is_file():
            raise BundleError(f"{p} is missing: the bundle is incomplete; train again (`aigcq regress`)")
        if p.stat().st_size == 0:
            raise BundleError(f"{p} is empty (0 bytes): the bundle is damaged; train again (`aigcq regress`)")
        actual = sha256_file(p)
        if actual != str(expected).lower():
            raise BundleError(f"{p}: sha256 {actual[:16]}… does not match {str(expected)[:16] or '(none)'}… recorded "
                              f"in {BUNDLE_JSON} (changed or corrupted after it was saved)")


def _edited_block(features, hashes) -> str:
    """'features[1] (nss).options': the first block and key whose hash differs from the manifest's."""
    if not isinstance(features, list) or not isinstance(hashes, list) or len(features) != len(hashes):
        return "features"
    for i, (f, h) in enumerate(zip(features, hashes)):
        if not isinstance(f, dict) or not isinstance(h, dict):
            continue
        for key in sorted(set(f) | set(h)):
            if key not in f or key not in h or digest(f[key]) != h[key]:
                return f"features[{i}] ({f.get('block')}).{key}"
    return "features"
