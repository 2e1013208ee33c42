"""blip2 extractor on a tiny random Blip2ForImageTextRetrieval saved and loaded with from_pretrained."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from extractors.base import Item, WeightsNotFoundError
from extractors.registry import get_extractor
from tiny_models import photo_views as images

PROMPTS = ["an astronaut", "a woman in a space suit, 8k", "", "a red flag", "cat", "NASA portrait",
           "a very long prompt " * 30, "a"]

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_models import build_tiny_blip2

    return build_tiny_blip2(tmp_path_factory.mktemp("blip2"))

def items(prompts):
    return [Item(i, f"x{i}", None, p) for i, p in enumerate(prompts)]

@pytest.fixture(scope="module")
def ex(tiny):
    e = get_extractor("blip2", model=tiny)
    e.setup("cpu", "fp32")
    return e

def test_preprocessing_equals_checkpoint_processor(tiny, astronaut):
    from transformers import Blip2Processor

    proc = Blip2Processor.from_pretrained(tiny)
    e = get_extractor("blip2", model=tiny)
    for im in (astronaut, astronaut.crop((0, 0, 512, 301))):
        ref = proc.image_processor(images=im, return_tensors="pt")["pixel_values"][0]
        t = e.transform(im)
        assert t.shape == (3, 224, 224) and torch.allclose(t, ref, atol=1e-6)

def test_matches_transformers_retrieval_forward(ex, tiny, astronaut):
    """Our single-pass forward gives the same ITC/ITM/text embedding as the library's forward."""
    from transformers import Blip2ForImageTextRetrieval

    ims = images(astronaut, 3)
    x = torch.stack([ex.transform(im) for im in ims])
    prompts = PROMPTS[:3]
    out = ex.compute(x, items(prompts))
    model = Blip2ForImageTextRetrieval.from_pretrained(tiny).eval()
    tok = ex._tokenizer(prompts, padding="longest", truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        itm = model(pixel_values=x, input_ids=tok.input_ids, attention_mask=tok.attention_mask,
                    use_image_text_matching_head=True).logits_per_image.softmax(-1)[:, 1]
        itc = model(pixel_values=x, input_ids=tok.input_ids, attention_mask=tok.attention_mask)
        q = model.qformer(query_embeds=model.query_tokens.expand(3, -1, -1),
                          encoder_hidden_states=model.vision_model(pixel_values=x).last_hidden_state)
    assert out.shape == (3, 32 + 16 + 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, :32], q.last_hidden_state.mean(1).numpy(), atol=1e-5)
    np.testing.assert_allclose(out[:, 32:48], itc.text_embeds.numpy(), atol=1e-5)
    np.testing.assert_allclose(out[:, 48], np.diag(itc.logits_per_image.numpy()), atol=1e-5)
    np.testing.assert_allclose(out[:, 49], itm.numpy(), atol=1e-5)
    names = ex.feature_names(out.shape[1])
    assert names[0] == "blip2_q_0" and names[32] == "blip2_t_0" and names[-2:] == ["blip2_itc", "blip2_itm"]
    assert get_extractor("blip2").output_dim() == 1026

def test_deterministic_and_batch_invariant(ex, astronaut):
    x = torch.stack([ex.transform(im) for im in images(astronaut)])
    batch = ex.compute(x, items(PROMPTS))
    np.testing.assert_array_equal(batch, ex.compute(x, items(PROMPTS)))
    single = np.concatenate([ex.compute(x[i:i + 1], items([PROMPTS[i]])) for i in range(8)])
    np.testing.assert_allclose(batch, single, atol=1e-5)
    assert not np.allclose(batch[0, 32:48], batch[1, 32:48])  # the prompt matters

def test_identity_and_options(ex):
    ident = ex.identity()
    assert ident["options"]["max_text_tokens"] == 32 and ident["image_size"] == {"height": 224, "width": 224}
    assert {"transformers", "torch", "tokenizers"} <= set(ident["libraries"])
    with pytest.raises(ValueError, match="max_text_tokens"):
        get_extractor("blip2", max_text_tokens=0)

def test_missing_weights_offline_are_named():
    with pytest.raises(WeightsNotFoundError, match="Salesforce/blip2-itm-vit-g"):
        get_extractor("blip2").setup()
