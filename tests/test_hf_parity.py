"""gqa-t5 loaded from HuggingFace T5 weights gives transformers' logits (committed fixture).

The fixtures come from scripts/make_hf_fixture.py (transformers + torch, not needed here).
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from gqa_t5 import convert
from gqa_t5.checkpoints import open_checkpoint, orbax_params
from gqa_t5.models import EncoderDecoderModel

FIXTURES = Path(__file__).parent / "fixtures"


def load_hf(path):
    reader = open_checkpoint(path)
    cfg = convert.infer_config(reader.shapes(), reader.hints, str(path))
    params = orbax_params.unflatten(dict(reader.iter_tensors()))
    return cfg, params


@pytest.mark.parametrize("variant", ["hf_t5_tiny_v1_1", "hf_t5_tiny_v1_0"])
def test_logits_match_transformers(variant):
    ref = np.load(FIXTURES / variant / "reference.npz")
    cfg, params = load_hf(FIXTURES / variant)
    assert cfg.dtype == jnp.float32 and cfg.num_kv_heads == cfg.num_heads == 4
    assert cfg.logits_via_embedding == (variant == "hf_t5_tiny_v1_0")
    batch = {
        # gqa-t5 masks padding by token id 0, as the HF attention_mask does here.
        "encoder_input_tokens": jnp.asarray(ref["input_ids"]),
        "decoder_input_tokens": jnp.asarray(ref["decoder_input_ids"]),
        "decoder_target_tokens": jnp.asarray(ref["labels"]),
    }
    np.testing.assert_array_equal(ref["attention_mask"], ref["input_ids"] > 0)
    logits = np.asarray(EncoderDecoderModel(cfg).logits(params, batch))
    expected = ref["logits"]
    scale = np.abs(expected).max()
    err = np.abs(logits - expected).max()
    assert err < 1e-5 * max(scale, 1.0), f"max |diff| {err:.3g} at logit scale {scale:.3g}"
    # And the comparison is not vacuous: another seed's model is far away.
    assert np.abs(expected).std() > 0.1
