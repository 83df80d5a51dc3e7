"""Random benchmark weights and the decode-time measurement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_network import tiny_config

from gqa_t5.models import EncoderDecoderModel
from gqa_t5.timing import random_params, time_predict


def test_random_params_match_the_model_tree_in_the_asked_dtype():
    model = EncoderDecoderModel(tiny_config(num_kv_heads=2))
    want = jax.tree_util.tree_map(np.shape, model.init(jax.random.PRNGKey(0))["params"])
    got = random_params(model, seed=1, dtype=jnp.bfloat16)
    assert jax.tree_util.tree_map(np.shape, got) == want
    leaves = jax.tree_util.tree_leaves_with_path(got)
    assert all(x.dtype == jnp.bfloat16 for _, x in leaves)
    for path, x in leaves:
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            assert (np.asarray(x, np.float32) == 1).all()
        elif "query" in name:  # T5's 1/sqrt(fan_in * head_dim) query scaling
            std = float(np.asarray(x, np.float32).std())
            assert std == pytest.approx((24 * 6) ** -0.5, rel=0.3)


def test_time_predict_reports_positive_times_for_the_asked_shape():
    model = EncoderDecoderModel(tiny_config(num_kv_heads=1))
    out = time_predict(model, batch_size=2, input_len=8, output_len=4, repeats=2)
    assert out["num_kv_heads"] == 1 and out["batch_size"] == 2
    assert len(out["seconds_per_batch"]) == 2 and min(out["seconds_per_batch"]) > 0
    assert out["seconds_per_sample"] == pytest.approx(np.median(out["seconds_per_batch"]) / 2)
    with pytest.raises(ValueError, match="positive sizes"):
        time_predict(model, batch_size=0, input_len=8, output_len=4)
