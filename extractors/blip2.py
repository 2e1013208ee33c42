"""BLIP-2 (transformers) features: Q-Former image tokens, prompt embedding, ITC and ITM.

From one ``Blip2ForImageTextRetrieval`` checkpoint (default Salesforce/blip2-itm-vit-g,
EVA ViT-g + Q-Former), per image and its prompt:

* ``q_*`` (768): the 32 Q-Former query outputs, mean-pooled (team IVL's NTIRE 2024
  feature, which they fed to an SVR);
* ``t_*`` (256): the prompt's [CLS] Q-Former output through the text projection,
  L2-normalised (BLIP-2's contrastive text embedding);
* ``itc``: image-text contrastive similarity, the best cosine over the 32 projected
  query embeddings (as BLIP-2 scores retrieval);
* ``itm``: image-text matching probability (ITM head averaged over the query tokens,
  softmax, probability of "match").

The forward pass is written out from the model's parts (vision_model, query_tokens,
qformer, embeddings, projections, itm_head) so that the image goes through the ViT
once for all four outputs; it follows ``Blip2ForImageTextRetrieval.forward``.
Prompts are tokenised by the checkpoint's BERT tokenizer, truncated to
``max_text_tokens`` (32, BLIP-2's training length). Images are preprocessed by the
checkpoint's BlipImageProcessor (224x224 bicubic, CLIP mean/std).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import library_versions
from .image_base import ImageExtractor
from .weights import resolve_pretrained


class BLIP2Features(ImageExtractor):
    name = "blip2"
    version = "1"
    defaults = {"model": "Salesforce/blip2-itm-vit-g", "revision": None, "max_text_tokens": 32}
    packages = ImageExtractor.packages + ("transformers", "tokenizers")
    needs = "transformers + Salesforce/blip2-itm-vit-g"
    local_options = {"model": "weights", "revision": "revision"}
    summary = "BLIP-2 Q-Former image tokens (mean), prompt embedding, ITC similarity, ITM probability"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        n = self.options["max_text_tokens"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise ValueError(f"blip2: max_text_tokens must be an integer >= 2, got {n!r}")
        self._model = None
        self._tokenizer = None
        self._image_processor = None

    # ------------------------------------------------------------------ config
    def output_dim(self) -> int | None:
        if str(self.options["model"]).rstrip("/").endswith("blip2-itm-vit-g"):
            return 768 + 256 + 2
        return None

    def feature_names(self, dim: int) -> list[str]:
        if self._model is not None:
            q = self._model.config.qformer_config.hidden_size
        else:
            q = 768
        t = dim - q - 2
        if t <= 0:
            return super().feature_names(dim)
        return [f"blip2_q_{i}" for i in range(q)] + [f"blip2_t_{i}" for i in range(t)] + ["blip2_itc", "blip2_itm"]

    def identity(self) -> dict[str, Any]:
        ident = super().identity()
        ident["libraries"] = library_versions(self.packages)
        ident["image_size"] = 224 if self._image_processor is None else dict(self._image_processor.size)
        return ident

    # -------------------------------------------------------------- processor
    def _path(self) -> str:
        return resolve_pretrained(self.options["model"], self.options["revision"])

    def image_processor(self):
        if self._image_processor is None:
            from transformers import AutoImageProcessor

            self._image_processor = AutoImageProcessor.from_pretrained(self._path())
        return self._image_processor

    def transform(self, image):
        return self.image_processor()(images=image, return_tensors="pt")["pixel_values"][0]

    # -------------------------------------------------------------- lifecycle
    def setup(self, device: str = "cpu", precision: str = "fp32") -> None:
        super().setup(device, precision)
        from transformers import AutoImageProcessor, AutoTokenizer, Blip2ForImageTextRetrieval

        path = self._path()
        model = Blip2ForImageTextRetrieval.from_pretrained(path)
        self._attach(model, AutoImageProcessor.from_pretrained(path), AutoTokenizer.from_pretrained(path))

    def _attach(self, model, image_processor, tokenizer) -> None:
        """Install a built model (setup, or the benchmark's random-weight copy)."""
        self._model = model.eval().requires_grad_(False).to(self.device)
        self._image_processor = image_processor
        self._tokenizer = tokenizer

    def __getstate__(self):  # DataLoader workers need the image processor only
        state = dict(self.__dict__)
        state.pop("_model", None)
        state.pop("_tokenizer", None)
        return state

    # ------------------------------------------------------------------ embed
    def embed(self, pixels, prompts: list[str]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        m = self._model
        if m is None:
            raise RuntimeError("blip2: call setup() before embed()")
        b = pixels.shape[0]
        image_embeds = m.vision_model(pixel_values=pixels).last_hidden_state  # [B, P, Dv]
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=pixels.device)
        queries = m.query_tokens.expand(b, -1, -1)
        n_q = queries.shape[1]

        # image side: Q-Former queries cross-attending to the ViT tokens
        q_out = m.qformer(
            query_embeds=queries, encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask
        ).last_hidden_state.float()  # [B, 32, 768]
        q_mean = q_out.mean(dim=1)
        img_proj = F.normalize(m.vision_projection(q_out.to(m.vision_projection.weight.dtype)).float(), dim=-1)

        # text side: the prompt alone through the Q-Former, [CLS] projected
        tok = self._tokenizer(
            list(prompts), padding="longest", truncation=True, max_length=self.options["max_text_tokens"],
            return_tensors="pt",
        ).to(pixels.device)
        t_out = m.qformer(query_embeds=m.embeddings(input_ids=tok.input_ids), query_length=0,
                          attention_mask=tok.attention_mask).last_hidden_state
        txt = F.normalize(m.text_projection(t_out[:, 0, :].to(m.text_projection.weight.dtype)).float(), dim=-1)
        itc = torch.einsum("bqe,be->bq", img_proj, txt).max(dim=1).values

        # image-text matching: queries and prompt tokens together, cross-attending to the image
        joint = m.embeddings(input_ids=tok.input_ids, query_embeds=queries)
        mask = torch.cat([torch.ones(b, n_q, dtype=tok.attention_mask.dtype, device=pixels.device),
                          tok.attention_mask], dim=1)
        j_out = m.qformer(query_embeds=joint, query_length=n_q, attention_mask=mask,
                          encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask).last_hidden_state
        logits = m.itm_head(j_out[:, :n_q, :].to(m.itm_head.weight.dtype)).float().mean(dim=1)
        itm = logits.softmax(dim=-1)[:, 1]

        return torch.cat([q_mean, txt, itc[:, None], itm[:, None]], dim=1).cpu().numpy()
