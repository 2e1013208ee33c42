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
``aigcq bundle upgrade`` on it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
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
    from .bundle import BundleError

    record = record_of(model)
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
    from .bundle import BundleError

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
    from .bundle import BundleError

    folder = Path(folder)
    path = folder / BUNDLE_JSON
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
    present = bundle_files(folder)
    for rel in present:
        if rel not in listed:
            raise BundleError(f"{folder / rel} is not in the bundle's manifest (added after the bundle was written): "
                              "nothing reads it; remove it")
    for rel, expected in sorted(listed.items()):
        p = folder / rel
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


# ---------------------------------------------------------------- intentional changes
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
    import zipfile

    from .bundle import MODEL_FILE, TRUSTED_TYPES, BundleError, read_info

    folder = Path(folder)
    info = read_info(folder)
    if int(info.get("format_version", 1)) >= 2:
        raise BundleError(f"{folder} already records what its heads depend on (format {info['format_version']}); "
                          "nothing to upgrade (`aigcq bundle verify` checks it)")
    import skops.io as sio

    path = folder / MODEL_FILE
    if sha256_file(path) != str(info["files"].get(MODEL_FILE, "")).lower():
        raise BundleError(f"{path} does not match the sha256 in {BUNDLE_JSON}: not upgrading a damaged bundle")
    try:
        untrusted = sorted(set(sio.get_untrusted_types(file=path)) - set(TRUSTED_TYPES))
    except zipfile.BadZipFile:
        raise BundleError(f"{path} is not a skops file (not a zip archive); refusing to load it") from None
    if untrusted:
        raise BundleError(f"refusing to load {path}: it holds types outside the trusted list: {', '.join(untrusted)}")
    model = sio.load(path, trusted=list(TRUSTED_TYPES))
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
