"""Decode-time measurement on the local device: fixed-length greedy `predict_batch`."""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from gqa_t5.models import EncoderDecoderModel


def random_params(model: EncoderDecoderModel, seed: int, dtype) -> dict:
    """Random weights drawn leaf by leaf on the device, scaled like T5's initializers."""
    shapes = jax.eval_shape(lambda r: model.init(r, 8, 8), jax.random.PRNGKey(0))["params"]
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    out = []
    for (path, s), k in zip(leaves, keys, strict=True):
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            out.append(jnp.ones(s.shape, dtype))
            continue
        std = 1.0 if "embedding" in name and "rel" not in name else s.shape[0] ** -0.5
        if "query" in name:  # T5 folds 1/sqrt(head_dim) into the query initializer
            std *= model.config.head_dim**-0.5
        out.append((jax.random.normal(k, s.shape, jnp.float32) * std).astype(dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def time_predict(
    model: EncoderDecoderModel, batch_size: int, input_len: int, output_len: int, repeats: int = 3
) -> dict:
    """Median seconds per sample of encode + greedy decode of `output_len` tokens.

    Random weights and tokens: with fixed-length decoding the time does not depend on them.
    """
    if batch_size < 1 or input_len < 1 or output_len < 1 or repeats < 1:
        raise ValueError(
            f"time_predict needs positive sizes, got batch {batch_size}, lengths "
            f"{input_len}/{output_len}, repeats {repeats}"
        )
    # Weights in the activation dtype, drawn leaf by leaf: what a server holds, and no
    # float32 copy of a full-size model (44 GB for XXL) on the device.
    params = random_params(model, seed=0, dtype=model.config.dtype)
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    batch = {
        "encoder_input_tokens": jnp.asarray(rng.integers(3, vocab, (batch_size, input_len))),
        "decoder_input_tokens": jnp.zeros((batch_size, output_len), jnp.int32),
    }
    predict = jax.jit(functools.partial(model.predict_batch, fixed_length=True))
    t0 = time.perf_counter()
    jax.block_until_ready(predict(params, batch))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(predict(params, batch))
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {
        "num_heads": model.config.num_heads,
        "num_kv_heads": model.config.num_kv_heads,
        "batch_size": batch_size,
        "input_len": input_len,
        "output_len": output_len,
        "seconds_per_batch": times,
        "seconds_per_sample": median / batch_size,
        "compile_seconds": compile_s,
        "device": jax.devices()[0].device_kind,
    }
