"""Decode-time measurement on the local device: fixed-length greedy `predict_batch`."""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from gqa_t5.models import EncoderDecoderModel


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
    params = model.init(jax.random.PRNGKey(0), input_len, output_len)["params"]
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
