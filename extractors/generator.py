"""`generator`: one-hot of the text-to-image/video model that made the item.

On AIGIQA-20K and T2VQA-DB the generator alone explains much of the MOS (the
"pixel-free floor"), so every pixel model must be judged against it. The list of
known generators is taken from the whole manifest (all splits) before extraction
and enters the store key: a store built on another list is never reused.

An unknown or missing generator is not an error: it gives an all-zero one-hot row
with the last column, ``generator_unknown``, set to 1.
"""
from __future__ import annotations

import numpy as np

from .base import Extractor, Item


class GeneratorOneHot(Extractor):
    name = "generator"
    kind = "meta"
    version = "1"
    defaults = {"generators": None}  # None: learn the list from the manifest
    summary = "one-hot of the generating model (+ an 'unknown' flag column)"

    def fit_manifest(self, df) -> None:
        """Fix the generator list from a manifest, unless given as an option."""
        if self.options["generators"] is None:
            known = df["generator"].dropna().astype(str)
            self.options["generators"] = sorted(g for g in set(known) if g.strip())

    @property
    def generators(self) -> list[str]:
        gens = self.options["generators"]
        if gens is None:
            raise RuntimeError("generator extractor: call fit_manifest(df) or pass generators=[...] first")
        return list(gens)

    def output_dim(self) -> int | None:
        return None if self.options["generators"] is None else len(self.generators) + 1

    def feature_names(self, dim: int) -> list[str]:
        return [f"generator={g}" for g in self.generators] + ["generator_unknown"]

    def prepare(self, item: Item):
        return item.generator

    def collate(self, prepared):
        return list(prepared)

    def compute(self, batch, items: list[Item]) -> np.ndarray:
        lookup = {g: i for i, g in enumerate(self.generators)}
        out = np.zeros((len(batch), len(lookup) + 1), dtype=np.float32)
        for row, gen in enumerate(batch):
            col = lookup.get(str(gen)) if gen is not None and gen == gen else None  # gen == gen: not NaN
            out[row, len(lookup) if col is None else col] = 1.0
        return out
