"""Legacy model files (``model.pkl``, before model bundles): kept only to load old models on request.

New models are bundles (:mod:`regressors.bundle`), which load without running code; a
``model.pkl`` is loaded only behind ``--trust-pickle`` (``trust_pickle=True``).

A model file is a joblib pickle: loading it runs code. We therefore write
``<model>.sha256`` (``<hex>  <filename>``, the format of ``sha256sum``) beside every
model, plus ``<model>.json`` with what the model needs from a store (extractor names
and store keys, block layout, target, track), and refuse to unpickle a file whose
checksum is missing or does not match. The checksum guards against corrupted or
swapped files, not against an attacker who can rewrite both files: only load models
you trust.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib

from .bundle_integrity import sha256_file  # the same file hash as the bundle manifest's


class ModelChecksumError(RuntimeError):
    """The model file does not match its recorded sha256 (or none is recorded)."""


def checksum_path(path: str | Path) -> Path:
    return Path(str(path) + ".sha256")


def meta_path(path: str | Path) -> Path:
    return Path(str(path) + ".json")


def save_model(model: Any, path: str | Path, meta: dict) -> Path:
    """Write model, checksum and metadata; returns the model path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    joblib.dump({"model": model, "meta": meta}, tmp, compress=3)
    tmp.replace(path)
    digest = sha256_file(path)
    checksum_path(path).write_text(f"{digest}  {path.name}\n")
    meta_path(path).write_text(json.dumps({**meta, "sha256": digest}, indent=2, default=str))
    return path


def read_meta(path: str | Path) -> dict:
    """Metadata without unpickling anything (safe on untrusted files)."""
    p = meta_path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing: it records which store keys the model {path} needs")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{p} is not valid JSON ({err.msg}, line {err.lineno}): it records which store keys the "
                         f"model {path} needs; restore it or train again") from None


def load_model(path: str | Path) -> tuple[Any, dict]:
    """Verify the checksum, then unpickle. Returns (model, meta)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    cpath = checksum_path(path)
    if not cpath.exists():
        raise ModelChecksumError(
            f"refusing to load {path}: no checksum file {cpath.name} beside it. Loading a pickle runs code; "
            "only models written by `python -m regressors fit` (which records the checksum) are loaded."
        )
    fields = cpath.read_text(errors="replace").split()
    if not fields:
        raise ModelChecksumError(f"refusing to load {path}: its checksum file {cpath} is empty (expected "
                                 "`<sha256>  <name>`); the model cannot be verified")
    expected = fields[0].strip().lower()
    actual = sha256_file(path)
    if actual != expected:
        raise ModelChecksumError(
            f"refusing to load {path}: sha256 {actual} does not match {expected} recorded in {cpath.name} "
            "(the file was changed or corrupted after it was saved)"
        )
    payload = joblib.load(path)
    return payload["model"], payload["meta"]
