"""`generator`: one-hot of the text-to-image/video model that made the item.

On AIGIQA-20K and T2VQA-DB the generator alone explains much of the MOS (the
"pixel-free floor"), so every pixel model must be judged against it.

The store key depends on the configuration only, never on the dataset: what this
extractor learns from data (its *vocabulary*, the sorted list of generator names of
a manifest) is not part of the key. The vocabulary is recorded as the block's
feature names (``generator=<name>`` ... ``generator_unknown``) in each store, and a
trained model records the one it was fitted with: at scoring time the columns are
mapped onto the model's vocabulary by name (:func:`remap_onehot`), so the same
configuration gives the same key on any dataset. An explicit ``generators=[...]``
option is configuration, and does enter the key.

An unknown or missing generator is not an error: it gives an all-zero one-hot row
with the last column, ``generator_unknown``, set to 1.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .base import Extractor, Item

PREFIX, UNKNOWN = "generator=", "generator_unknown"


def vocabulary_from_names(names: Sequence[str]) -> list[str] | None:
    """The vocabulary recorded in a block's feature names (None if they are not ours)."""
    names = list(names)
    if not names or names[-1] != UNKNOWN or not all(n.startswith(PREFIX) for n in names[:-1]):
        return None
    return [n[len(PREFIX):] for n in names[:-1]]


def onehot(generators: Sequence, vocabulary: Sequence[str]) -> np.ndarray:
    """[n, len(vocabulary) + 1] float32: one column per known generator, then the unknown flag."""
    lookup = {g: i for i, g in enumerate(vocabulary)}
    out = np.zeros((len(generators), len(lookup) + 1), dtype=np.float32)
    for row, gen in enumerate(generators):
        col = lookup.get(str(gen)) if gen is not None and gen == gen else None  # gen == gen: not NaN
        out[row, len(lookup) if col is None else col] = 1.0
    return out


def remap_onehot(block: np.ndarray, have: Sequence[str], want: Sequence[str]) -> np.ndarray:
    """Columns of a one-hot over vocabulary ``have`` re-expressed over vocabulary ``want``.

    A generator of ``have`` that ``want`` lacks becomes ``generator_unknown`` (as does an
    item already unknown); a generator of ``want`` that ``have`` lacks is a zero column.
    """
    have, want = list(have), list(want)
    if have == want:
        return block
    block = np.asarray(block)
    out = np.zeros((len(block), len(want) + 1), dtype=block.dtype)
    pos = {g: i for i, g in enumerate(have)}
    for j, g in enumerate(want):
        if g in pos:
            out[:, j] = block[:, pos[g]]
    out[:, -1] = 1.0 - out[:, :-1].sum(axis=1)  # whatever is not a known generator of `want`
    return out


class GeneratorOneHot(Extractor):
    name = "generator"
    kind = "meta"
    version = "2"  # 2: the learned vocabulary left the key (recorded as feature names instead)
    defaults = {"generators": None}  # None: learn the vocabulary from the manifest (not part of the key)
    summary = "one-hot of the generating model (+ an 'unknown' flag column)"
    uses_prompt = False

    def __init__(self, **options):
        super().__init__(**options)
        given = self.options["generators"]
        self.vocabulary: list[str] | None = None if given is None else [str(g) for g in given]

    def identity(self) -> dict:
        ident = super().identity()
        if self.options["generators"] is None:
            ident["options"] = {}  # the learned vocabulary is data, not configuration
        return ident

    def fit_manifest(self, df, stored_names: Sequence[str] | None = None) -> None:
        """Fix the vocabulary from a manifest, unless given as an option.

        ``stored_names``: the feature names a store already holds for this key. Their
        vocabulary is kept when it covers the manifest (stored rows stay valid); a manifest
        naming generators it lacks is refused, since the block's width is fixed once rows
        are stored.
        """
        if self.options["generators"] is not None:
            return
        known = sorted({str(g) for g in df["generator"].dropna() if str(g).strip()})
        stored = vocabulary_from_names(stored_names) if stored_names else None
        if stored is None:
            self.vocabulary = known
            return
        new = [g for g in known if g not in set(stored)]
        if new:
            raise ValueError(
                f"generator: the store's generator block was computed with the vocabulary {stored}; this dataset "
                f"also names {new}. Use a new store file for the extended dataset (or an explicit "
                f"`generator:generators=[...]` spec, which is stored under its own key)."
            )
        self.vocabulary = stored

    def use_vocabulary(self, vocabulary: Sequence[str]) -> None:
        """Score with a model's vocabulary (generators it never saw set the unknown flag)."""
        self.vocabulary = [str(g) for g in vocabulary]

    @property
    def generators(self) -> list[str]:
        if self.vocabulary is None:
            raise RuntimeError("generator extractor: call fit_manifest(df) or pass generators=[...] first")
        return list(self.vocabulary)

    def output_dim(self) -> int | None:
        return None if self.vocabulary is None else len(self.vocabulary) + 1

    def feature_names(self, dim: int) -> list[str]:
        return [f"{PREFIX}{g}" for g in self.generators] + [UNKNOWN]

    def prepare(self, item: Item):
        return item.generator

    def collate(self, prepared):
        return list(prepared)

    def compute(self, batch, items: list[Item]) -> np.ndarray:
        return onehot(batch, self.generators)
