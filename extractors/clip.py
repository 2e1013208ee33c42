"""CLIP (open_clip) features: embeddings, image-prompt agreement, zero-shot quality.

One row per image, all from the same frozen model:

* ``img_*`` (E): the L2-normalised image embedding;
* ``txt_*`` (E): the L2-normalised embedding of the prompt;
* ``cos``: image-prompt cosine similarity;
* ``match_level``: the NTIRE 2024 AIGC winner's (IPCE) five-level matching: the image
  is compared with "a photo that {badly, poorly, fairly, well, perfectly} matches
  '<prompt>'", the five cosines times CLIP's logit scale are softmaxed, and the
  expectation over levels 1..5 is the score;
* ``iqa_<pos>_<neg>``: CLIP-IQA antonym pairs ("Good photo." / "Bad photo.", ...):
  softmax over the pair, probability of the positive text.

``crops=k`` adds k square crops (taken near native resolution, on a grid that covers
the image) to the resized whole image, as the winner did for large images; every
number above is the mean over these 1+k views (the image embedding is re-normalised).
The views travel as one tensor [(1+k)*3, H, W] so that the image-extractor contract
([C, H, W] per image, [B, C, H, W] per batch) and the ``frames`` wrapper still hold.

Weights: ``model`` is an open_clip architecture name (``ViT-L-14``), a hub id
(``hf-hub:org/repo`` or just ``org/repo``), or a local folder (``local-dir:/path`` or
just the path) with ``open_clip_config.json`` and weights.
``pretrained`` is an open_clip tag for built-in names; ``checkpoint`` a local weights
file that replaces the tag's download while keeping the tag's preprocessing and
activation (QuickGELU for OpenAI weights).
"""
from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from typing import Any

import numpy as np

from .base import WeightsNotFoundError, library_versions
from .image_base import ImageExtractor
from .weights import hub_offline, resolve_file, resolve_pretrained

# IPCE's five levels of image-prompt correspondence (scored 1..5).
LEVELS = ("badly", "poorly", "fairly", "well", "perfectly")
LEVEL_TEMPLATE = "a photo that {level} matches '{prompt}'"
# CLIP-IQA antonym prompts (Wang et al., AAAI 2023), positive first.
IQA_PAIRS = (
    ("Good photo.", "Bad photo."),
    ("Sharp photo.", "Blurry photo."),
    ("Clean photo.", "Noisy photo."),
    ("Bright photo.", "Dark photo."),
    ("Colorful photo.", "Dull photo."),
    ("High contrast photo.", "Low contrast photo."),
    ("Natural photo.", "Synthetic photo."),
    ("Beautiful photo.", "Ugly photo."),
)
# Prompt embeddings are reused across batches (AIGC datasets repeat each prompt once per
# generator); bounded so memory does not grow with the dataset.
TEXT_CACHE_SIZE = 4096


def _pair_name(pos: str, neg: str) -> str:
    def word(s: str) -> str:
        return s.lower().replace(" photo.", "").replace(" ", "")

    return f"{word(pos)}_{word(neg)}"


def crop_boxes(width: int, height: int, k: int, min_side: int) -> list[tuple[int, int, int, int]]:
    """k square crop boxes (left, top, right, bottom) spread over the image.

    Side: half the short side, but at least the model's input size (so a crop is seen
    near native resolution) and at most the short side. Positions: a g x g grid
    (g = ceil(sqrt(k))) from corner to corner, of which k evenly spaced cells are kept:
    k=1 centre, k=4 corners, k=5 corners + centre, k=9 the 3 x 3 grid.
    """
    short = min(width, height)
    side = min(short, max(min_side, short // 2))
    g = max(1, math.ceil(math.sqrt(k)))
    xs = np.linspace(0, width - side, g).round().astype(int) if g > 1 else [(width - side) // 2]
    ys = np.linspace(0, height - side, g).round().astype(int) if g > 1 else [(height - side) // 2]
    cells = [(int(x), int(y)) for y in ys for x in xs]
    keep = np.clip(((np.arange(k) + 0.5) * len(cells) / k).astype(int), 0, len(cells) - 1)
    return [(x, y, x + side, y + side) for x, y in (cells[i] for i in keep)]


class CLIPFeatures(ImageExtractor):
    name = "clip"
    version = "1"
    defaults = {
        "model": "ViT-L-14",
        "pretrained": "openai",
        "checkpoint": None,  # local weights file; overrides the tag's download
        "revision": None,  # hub revision of the tag's weights (or of an hf-hub: model)
        "quick_gelu": None,  # None: as the pretrained tag says
        "crops": 0,
    }
    packages = ImageExtractor.packages + ("open_clip_torch", "timm")
    needs = "open_clip_torch + checkpoint"
    local_options = {"checkpoint": "path", "model": "weights", "revision": "revision"}
    summary = "open_clip image/prompt embeddings, cosine, IPCE five-level match, CLIP-IQA antonym pairs"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        crops = self.options["crops"]
        if not isinstance(crops, int) or isinstance(crops, bool) or crops < 0:
            raise ValueError(f"clip: crops must be an integer >= 0, got {crops!r}")
        self._model = None
        self._tokenizer = None
        self._preprocess = None
        self._pp_cfg: dict | None = None
        self._text_cache: OrderedDict[str, Any] = OrderedDict()

    # ------------------------------------------------------------ configuration
    def _schema(self) -> tuple[str | None, str]:
        model = str(self.options["model"])
        for schema in ("local-dir", "hf-hub"):
            if model.startswith(schema + ":"):
                return schema, model[len(schema) + 1:]
        if os.path.isdir(os.path.expanduser(model)):
            return "local-dir", os.path.expanduser(model)
        if "/" in model:  # "org/repo" is a hub id (spec strings cannot carry "hf-hub:")
            import open_clip

            if model.replace("/", "-") not in open_clip.list_models():  # "ViT-L/14" is a built-in name
                return "hf-hub", model
        return None, model

    def _open_clip_name(self) -> str:
        """The model name handed to open_clip (hub folders resolved to local-dir:)."""
        schema, ident = self._schema()
        if schema == "hf-hub":
            return "local-dir:" + resolve_pretrained(ident, self.options["revision"])
        if schema == "local-dir":
            if not os.path.isfile(os.path.join(ident, "open_clip_config.json")):
                raise WeightsNotFoundError(f"weights not found: {ident}/open_clip_config.json does not exist")
            return "local-dir:" + ident
        return ident

    def _tag_cfg(self) -> dict:
        import open_clip
        from open_clip.pretrained import get_pretrained_cfg

        schema, ident = self._schema()
        tag = self.options["pretrained"]
        if schema is not None or not tag:
            return {}
        if ident not in open_clip.list_models():
            raise ValueError(f"clip: unknown open_clip model {ident!r}. Known: {', '.join(open_clip.list_models())}")
        cfg = get_pretrained_cfg(ident, tag)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(ident)
            raise ValueError(f"clip: open_clip has no pretrained tag {tag!r} for {ident!r}. Tags: {tags}")
        return cfg

    def _model_cfg(self) -> tuple[dict, dict]:
        """(model_cfg, preprocess overrides) without loading weights."""
        import open_clip

        schema, ident = self._schema()
        if schema is None:
            cfg = open_clip.get_model_config(ident)
            if cfg is None:
                raise ValueError(f"clip: unknown open_clip model {ident!r}. Known: {', '.join(open_clip.list_models())}")
            return cfg, {}
        folder = self._open_clip_name()[len("local-dir:"):]
        with open(os.path.join(folder, "open_clip_config.json"), encoding="utf-8") as f:
            js = json.load(f)
        return js["model_cfg"], js.get("preprocess_cfg", {})

    def preprocess_cfg(self) -> dict:
        """open_clip's final inference preprocessing for these options (as create_model sets it)."""
        from dataclasses import asdict

        from open_clip.transform import PreprocessCfg, merge_preprocess_dict

        if self._pp_cfg is None:
            model_cfg, pp = self._model_cfg()
            cfg = merge_preprocess_dict(asdict(PreprocessCfg()), pp)
            cfg = merge_preprocess_dict(cfg, self._tag_cfg())
            cfg["size"] = model_cfg["vision_cfg"]["image_size"]
            self._pp_cfg = cfg
        return dict(self._pp_cfg)

    def _quick_gelu(self) -> bool:
        q = self.options["quick_gelu"]
        return bool(self._tag_cfg().get("quick_gelu", False)) if q is None else bool(q)

    def embed_dim(self) -> int:
        return int(self._model_cfg()[0]["embed_dim"])

    def output_dim(self) -> int | None:
        try:
            return 2 * self.embed_dim() + 2 + len(IQA_PAIRS)
        except Exception:  # hub config not cached yet: the store learns the size
            return None

    def feature_names(self, dim: int) -> list[str]:
        e = (dim - 2 - len(IQA_PAIRS)) // 2
        names = [f"clip_img_{i}" for i in range(e)] + [f"clip_txt_{i}" for i in range(e)]
        names += ["clip_cos", "clip_match_level"] + [f"clip_iqa_{_pair_name(p, n)}" for p, n in IQA_PAIRS]
        if len(names) != dim:
            return super().feature_names(dim)
        return names

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["libraries"] = library_versions(self.packages)
        ident["preprocess"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.preprocess_cfg().items()}
        ident["quick_gelu"] = self._quick_gelu()
        ident["texts"] = {"levels": [LEVEL_TEMPLATE, list(LEVELS)], "iqa_pairs": [list(p) for p in IQA_PAIRS]}
        return ident  # a local checkpoint enters by its content (options, base.file_identity)

    # ---------------------------------------------------------------- weights
    def _checkpoint_path(self) -> str | None:
        """A local file with the CLIP weights, or None when open_clip finds them (local-dir)."""
        ckpt = self.options["checkpoint"]
        if ckpt and self._schema()[0] is not None:
            raise ValueError("clip: checkpoint= goes with a built-in architecture name; a hub or local folder "
                             f"model ({self.options['model']!r}) carries its own weights")
        if ckpt:
            p = os.path.expanduser(str(ckpt))
            if not os.path.isfile(p):
                raise WeightsNotFoundError(f"weights not found: checkpoint file {p} does not exist")
            return p
        schema, ident = self._schema()
        if schema is not None:
            return None
        cfg = self._tag_cfg()
        if not cfg:
            raise ValueError(f"clip: no weights for {ident!r}: give pretrained=<tag> or checkpoint=<file>")
        hub = cfg.get("hf_hub", "")
        if hub:
            # open_clip's convention: "org/repo/" means the default file name
            repo, filename = os.path.split(hub)
            filename = filename or "open_clip_pytorch_model.bin"
            # the safetensors copy that open_clip itself prefers, when the repo has one
            if filename == "open_clip_pytorch_model.bin":
                alts = ["open_clip_model.safetensors"]
            else:
                alts = [filename[:-4] + ".safetensors"] if filename.endswith((".bin", ".pth")) else []
            for alt in alts:
                try:
                    return resolve_file(repo, alt, self.options["revision"])
                except WeightsNotFoundError:
                    pass
            return resolve_file(repo, filename, self.options["revision"])
        url = cfg.get("url", "")
        if hub_offline():
            raise WeightsNotFoundError(
                f"weights not found: open_clip {ident}/{self.options['pretrained']} ({url}); HF_HUB_OFFLINE is set. "
                "Download the file elsewhere and pass checkpoint=<file>."
            )
        try:
            from open_clip.pretrained import download_pretrained_from_url

            return download_pretrained_from_url(url)
        except Exception as err:
            raise WeightsNotFoundError(f"weights not found: {url} ({type(err).__name__}: {err}); pass checkpoint=<file>") from err

    # -------------------------------------------------------------- lifecycle
    def setup(self, device: str = "cpu", precision: str = "fp32") -> None:
        super().setup(device, precision)
        import open_clip

        name = self._open_clip_name()
        ckpt = self._checkpoint_path()
        pp = self.preprocess_cfg()
        model = open_clip.create_model(
            name,
            pretrained=ckpt,
            force_quick_gelu=self._quick_gelu(),
            force_preprocess_cfg={k: pp[k] for k in ("mean", "std", "interpolation", "resize_mode")},
            device="cpu",
        )
        self._attach(model, open_clip.get_tokenizer(name))

    def _attach(self, model, tokenizer) -> None:
        """Install a built model (setup, or the benchmark's random-weight copy)."""
        self._model = model.eval().requires_grad_(False).to(self.device)
        self._tokenizer = tokenizer
        self._text_cache.clear()
        with self._no_grad():
            self._iqa = self._encode_texts([t for pair in IQA_PAIRS for t in pair]).view(len(IQA_PAIRS), 2, -1)

    def __getstate__(self):  # DataLoader workers need the transform, not the model
        state = dict(self.__dict__)
        for k in ("_model", "_tokenizer", "_iqa"):
            state.pop(k, None)
        state["_text_cache"] = OrderedDict()
        return state

    def _no_grad(self):
        import contextlib

        import torch

        from .base import autocast_context

        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(autocast_context(self.device, self.precision))
        return stack

    # --------------------------------------------------------------- transform
    def _get_preprocess(self):
        if self._preprocess is None:
            from open_clip.transform import PreprocessCfg, image_transform_v2

            self._preprocess = image_transform_v2(PreprocessCfg(**self.preprocess_cfg()), is_train=False)
        return self._preprocess

    def transform(self, image):
        import torch

        pre = self._get_preprocess()
        views = [pre(image)]
        k = self.options["crops"]
        if k:
            size = self.preprocess_cfg()["size"]
            side = size if isinstance(size, int) else max(size)
            views += [pre(image.crop(box)) for box in crop_boxes(image.width, image.height, k, side)]
        return torch.cat(views, dim=0)

    # ------------------------------------------------------------------ embed
    def _encode_texts(self, texts: list[str]):
        import torch

        tokens = self._tokenizer(texts).to(self.device)
        feats = self._model.encode_text(tokens).float()
        return torch.nn.functional.normalize(feats, dim=-1)

    def _prompt_feats(self, prompts: list[str]):
        """[B, 1+5, E]: the prompt's embedding then its five level texts (cached per prompt)."""
        import torch

        todo = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if todo:
            texts = []
            for p in todo:
                texts += [p] + [LEVEL_TEMPLATE.format(level=lv, prompt=p) for lv in LEVELS]
            feats = self._encode_texts(texts).view(len(todo), 1 + len(LEVELS), -1)
            for p, f in zip(todo, feats):
                self._text_cache[p] = f
        out = []
        for p in prompts:
            self._text_cache.move_to_end(p)
            out.append(self._text_cache[p])
        while len(self._text_cache) > TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return torch.stack(out)

    def embed(self, pixels, prompts: list[str]) -> np.ndarray:
        import torch

        if self._model is None:
            raise RuntimeError("clip: call setup() before embed()")
        b, c, h, w = pixels.shape
        v = c // 3
        img = self._model.encode_image(pixels.reshape(b * v, 3, h, w)).float()
        img = torch.nn.functional.normalize(img, dim=-1).view(b, v, -1)  # [B, V, E]
        txt = self._prompt_feats(prompts)  # [B, 6, E]
        scale = self._model.logit_scale.exp().float()

        sims = torch.einsum("bve,bte->bvt", img, txt)  # [B, V, 6]
        cos = sims[..., 0]
        level_p = (scale * sims[..., 1:]).softmax(dim=-1)
        levels = torch.arange(1, len(LEVELS) + 1, device=img.device, dtype=img.dtype)
        match = (level_p * levels).sum(-1)
        iqa = (scale * torch.einsum("bve,pne->bvpn", img, self._iqa)).softmax(dim=-1)[..., 0]  # [B, V, P]

        img_mean = torch.nn.functional.normalize(img.mean(dim=1), dim=-1)
        row = torch.cat(
            [img_mean, txt[:, 0], cos.mean(1, keepdim=True), match.mean(1, keepdim=True), iqa.mean(1)], dim=1
        )
        return row.float().cpu().numpy()
