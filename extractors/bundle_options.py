"""Extractor options read from a model bundle: data only.

A bundle (``bundle.json``) is written by whoever trained the model and may come from anyone. The
options it records rebuild each feature block's extractor when new media are scored; those that are
not plain data (``Extractor.local_options``, audited in docs/security.md) never come from it:

* ``"code"`` (reiqa's ``allow_pickle``): a bundle cannot turn it on; the user does, with
  ``--trust-pickle`` (``trust_code=True``), for weights files they trust;
* ``"path"`` (a local weights file): a bundle cannot name one; the user does, with
  ``--weights <extractor>.<option>=PATH``; the identity records the file's sha256, so the rebuilt key
  matches the bundle's only when the user's file has the content the model was trained with;
* ``"weights"`` (a hub id that could also be a local folder): from a bundle only a hub id
  (``owner/name``), resolved from the user's own cache (``extractors.weights.cache_only``);
* ``"filename"`` (a file inside those weights): a plain file name, no folder in it;
* ``"revision"`` (a hub revision: branch, tag or commit): a plain ref name. The hub cache joins it onto
  its own folders (``refs/<revision>``, whose text names ``snapshots/<commit>``): an absolute one, or one
  with ``..``, would make a bundle's own file name the folder the weights are loaded from.

Anything else is refused with one line naming the extractor, the option and what to do.
"""
from __future__ import annotations

import os
import re
from typing import Any

#: a hub id as a bundle may name it: ``name`` or ``owner/name`` (open_clip's ``hf-hub:`` prefix allowed)
HUB_ID = re.compile(r"(hf-hub:)?[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


#: a revision as a bundle may name it: ``main``, ``v1.0``, ``refs/pr/1``, a commit hash (no ``..``, never absolute)
REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*")


class BundleOptionError(ValueError):
    """An option in a model bundle that could run code or reach a file outside the bundle (one line)."""


def _hub_id(value: Any) -> bool:
    return (isinstance(value, str) and bool(HUB_ID.fullmatch(value)) and ".." not in value
            and not os.path.exists(os.path.expanduser(value.removeprefix("hf-hub:"))))


def parse_weights(specs: list[str] | None) -> dict[str, str]:
    """``["reiqa.content_ckpt=/w/c.pth", ...]`` -> ``{"reiqa.content_ckpt": "/w/c.pth"}``, each naming a local-file
    option of a known extractor (ValueError otherwise)."""
    from .registry import extractor_class

    out: dict[str, str] = {}
    for spec in specs or []:
        name, eq, path = str(spec).partition("=")
        ext, dot, option = name.partition(".")
        if not (eq and dot and ext and option and path):
            raise ValueError(f"--weights {spec!r}: expected EXTRACTOR.OPTION=PATH, e.g. reiqa.content_ckpt=/w/c.pth")
        try:
            cls = extractor_class(ext)
        except KeyError as err:
            raise ValueError(f"--weights {spec!r}: {err.args[0]}") from None
        kind = cls.local_options.get(option)
        if kind != "path":
            files = [k for k, v in cls.local_options.items() if v == "path"]
            raise ValueError(f"--weights {spec!r}: {option!r} is not a weights-file option of {ext!r}"
                             + (f" (those are: {', '.join(files)})" if files else f" ({ext!r} has none)")
                             + ("; hub weights come from your Hugging Face cache (HF_HOME)" if kind == "weights" else ""))
        out[name] = os.path.abspath(os.path.expanduser(path))
    return out


def from_bundle(name: str, options: Any, weights: dict[str, str] | None = None, trust_code: bool = False,
                where: str = "") -> dict[str, Any]:
    """The options that rebuild extractor ``name`` from a bundle's record, with the user's own weights files
    (``weights``, see :func:`parse_weights`) and code permission put in; :class:`BundleOptionError` for an option
    a bundle may not set. ``where`` prefixes messages (e.g. the bundle and the block)."""
    from .registry import extractor_class

    try:
        cls = extractor_class(str(name))
    except KeyError as err:
        raise BundleOptionError(f"{where}{err.args[0]}") from None
    if not isinstance(options, dict):
        raise BundleOptionError(f"{where}the options of {name!r} must be an object, got {type(options).__name__}")
    out = dict(options)
    order = {"code": 0, "path": 1}  # the most serious first: a switch that runs code, then a file to read
    for k, v in sorted(options.items(), key=lambda kv: order.get(cls.local_options.get(kv[0], ""), 2)):
        kind = cls.local_options.get(k)
        default = cls.defaults.get(k)
        if kind == "code" and v not in (None, False, default):
            raise BundleOptionError(
                f"{where}bundle sets {name} option {k}={v!r}, which lets a weights file run code when it is loaded: "
                "a model bundle never turns that on (you may, with --trust-pickle, for weights files you trust)")
        if kind == "path" and v is not None and v != default and not isinstance(v, dict) and v not in cls.path_keywords:
            raise BundleOptionError(
                f"{where}bundle sets {name} option {k}={v!r}, a path: a model bundle never names a file to read; give "
                f"the file yourself with --weights {name}.{k}=PATH")
        if kind == "weights" and v is not None and v != default and not _hub_id(v):
            raise BundleOptionError(
                f"{where}bundle sets {name} option {k}={v!r}: from a model bundle only a hub id (owner/name) is read, "
                "from your own cache; a local folder never comes from a bundle")
        if kind == "filename" and v is not None and v != default and (
                not isinstance(v, str) or os.path.basename(v) != v or v.startswith(".") or "\\" in v):
            raise BundleOptionError(f"{where}bundle sets {name} option {k}={v!r}: only a plain file name is read")
        if kind == "revision" and v is not None and v != default and (
                not isinstance(v, str) or not REVISION.fullmatch(v) or ".." in v):
            raise BundleOptionError(f"{where}bundle sets {name} option {k}={v!r}: only a plain revision name (a branch, "
                                    "tag or commit, no '..', not a path) is read from a model bundle")
        if kind in ("path", "code"):
            out[k] = default if isinstance(v, dict) or kind == "code" else v
    if isinstance(out.get("base"), str) and "base_options" in out:  # frames / temporal_consistency
        out["base_options"] = from_bundle(out["base"], out["base_options"] or {}, weights, trust_code, where)
    for spec, path in (weights or {}).items():
        ext, _, option = spec.partition(".")
        if ext == name and cls.local_options.get(option) == "path":
            out[option] = path
    if trust_code:
        out.update({k: True for k, kind in cls.local_options.items() if kind == "code"})
    return out
