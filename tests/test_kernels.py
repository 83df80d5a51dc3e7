"""Pallas kernels in interpret mode against the XLA path and a float64 NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_network import random_batch, tiny_config

from gqa_t5.kernels import decode_attention as da
from gqa_t5.models import EncoderDecoderModel


@pytest.fixture
def tuning():
    """Restore the kernel's launch parameters after a test changes them."""
    saved = dict(da.TUNING)
    yield da.set_tuning
    da.TUNING.clear()
    da.TUNING.update(saved)


def numpy_decode_attention(q, k, v, key_mask=None, bias=None):
    """float64 reference: softmax(q.k + bias, masked keys out) . v; no valid key: mean of v."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    B, N, H = q.shape
    K, S = k.shape[1], k.shape[2]
    G = N // K
    out = np.zeros((B, N, H))
    mask = np.ones((B, S), bool) if key_mask is None else np.broadcast_to(key_mask != 0, (B, S))
    for b in range(B):
        for n in range(N):
            kk, vv = k[b, n // G], v[b, n // G]
            if not mask[b].any():  # the XLA path's -1e10 makes every key equal
                out[b, n] = vv.mean(0)
                continue
            s = kk @ q[b, n] + (0 if bias is None else np.asarray(bias, np.float64)[n])
            s = np.where(mask[b], s, -np.inf)
            w = np.exp(s - s.max())
            out[b, n] = (w / w.sum()) @ vv
    return out


def _inputs(seed, B, N, K, S, H, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(B, N, H)), dtype)
    k = jnp.asarray(rng.normal(size=(B, K, S, H)), dtype)
    v = jnp.asarray(rng.normal(size=(B, K, S, H)), dtype)
    mask = np.ones((B, S), np.int32)
    mask[0, S // 3 :] = 0  # a padded row: later splits hold no valid key
    if B > 2:
        mask[1, : S // 2 + 1] = 0  # left padding: the first splits hold no valid key
    mask[-1] = 0  # an empty row
    return q, k, v, jnp.asarray(mask)


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("K", [8, 4, 1])  # G = 1 (multi-head), 2, N (multi-query)
def test_cross_attention_kernel_matches_xla_and_float64(K, tuning):
    tuning(block_k=8, num_splits=4)  # several splits per row, some past the padding
    q, k, v, mask = _inputs(K, B=3, N=8, K=K, S=64, H=16)
    got = da.grouped_decode_attention(q, k, v, key_mask=mask, implementation="interpret")
    xla = da.grouped_decode_attention(q, k, v, key_mask=mask, implementation="xla")
    want = numpy_decode_attention(q, k, v, np.asarray(mask))
    assert np.all(np.isfinite(np.asarray(got)))
    np.testing.assert_allclose(got, xla, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize(
    "splits,combine", [(1, "xla"), (4, "xla"), (4, "pallas")]
)  # 1 split: the kernel writes [B, N, H] itself; 4: partials, combined by XLA or a kernel
@pytest.mark.parametrize(
    "N,K,layout",
    [(32, 32, "select"), (32, 4, "select"), (16, 8, "select"), (32, 2, "block"), (16, 1, "block")],
)
@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_every_query_layout_and_split_mode(
    N, K, layout, splits, combine, order, tuning, monkeypatch
):
    """G in {1, 2, 8, 16, N}: the one-hot row pick and masked store, the plain block, the
    split combine; a padded and an empty row; with and without a bias row. Interpret mode
    runs programs in order, so the head axis also runs backwards: a store wider than its
    group's rows then overwrites a finished neighbour (either side) and fails."""
    assert da._q_layout(N, N // K) == layout
    monkeypatch.setattr(da, "GROUP_ORDER", order)
    tuning(block_k=8, num_splits=splits, combine=combine)
    calls = []
    real = da._combine_pallas
    monkeypatch.setattr(da, "_combine_pallas", lambda *a: calls.append(1) or real(*a))
    q, k, v, mask = _inputs(N + K, B=3, N=N, K=K, S=32, H=16)
    bias = jnp.asarray(np.random.default_rng(N).normal(size=(N, 32)), jnp.float32)
    for b in (None, bias):
        got = da.grouped_decode_attention(
            q, k, v, key_mask=mask, bias_NS=b, implementation="interpret"
        )
        want = numpy_decode_attention(q, k, v, np.asarray(mask), None if b is None else bias)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    assert len(calls) == (2 if combine == "pallas" else 0)


def test_split_plan_at_the_benchmark_shapes():
    """Batch 32, 2048 keys, what the plan picks. Measured on the H200 (NOTES.md, entries
    16-17): GQA-8-XXL 4 splits 4.67 ms/step against 1 split 4.92, and blocks of 32 keys
    (the sweep's best) 4.46-4.48 against 4.62 with 64; the every-G runs forced 4 splits,
    so the plan's choice for the other G is not a measured optimum."""
    assert da._plan(32, 8, 2048, 16, False) == (32, 4)  # GQA-8-XXL: 256 programs x 4
    assert da._plan(32, 1, 2048, 64, False)[1] == 4  # MQA-XXL: 32 programs x 4
    assert da._plan(32, 64, 2048, 16, False)[1] == 1  # MHA-XXL: 2048 programs, no combine


def test_launch_by_rows_and_overrides(tuning):
    """The measured defaults (NOTES.md, entries 17-19): 64 / 4 / 2 for programs of 32 rows
    or more (GQA-2- and MQA-XXL), 32 / 2 / 3 below; a parameter set by hand wins at every
    row count."""
    wide, narrow = (
        dict(block_k=64, num_warps=4, num_stages=2),
        dict(block_k=32, num_warps=2, num_stages=3),
    )
    assert da.launch_for(64, 1) == wide  # MQA-XXL: 64 query rows a program
    assert da.launch_for(64, 2) == wide  # GQA-2-XXL: 32 rows
    assert da.launch_for(64, 4) == da.launch_for(64, 8) == da.launch_for(16, 1) == narrow
    assert da.launch_for(16, 16) == narrow  # one query head, padded to 16 rows
    assert da._plan(32, 1, 2048, 64, False)[0] == 64 and da._plan(32, 8, 2048, 16, False)[0] == 32
    tuning(num_warps=8)
    assert da.launch_for(64, 1) == dict(wide, num_warps=8)
    assert da.launch_for(64, 8) == dict(narrow, num_warps=8)


@pytest.mark.parametrize("combine", ["xla", "pallas"])
def test_gpu_launch_reaches_every_pallas_call(combine, tuning, monkeypatch):
    """The GPU path (interpret off) hands each pallas_call the launch for its program's
    rows: 64 rows (MQA at 64 heads) 4 warps / 2 stages, 16 rows 2 warps / 3 stages."""
    from jax.experimental import pallas as pl

    tuning(combine=combine)
    seen = []

    def record(kernel, *, compiler_params=None, out_shape, name, **kwargs):
        """Stands in for pallas_call: notes the launch and the kernel, returns zeros."""
        seen.append((name, compiler_params.num_warps, compiler_params.num_stages))
        zeros = jax.tree.map(lambda o: jnp.zeros(o.shape, o.dtype), out_shape)
        return lambda *operands: zeros

    monkeypatch.setattr(pl, "pallas_call", record)
    for N, K, want in ((64, 1, (4, 2)), (16, 2, (2, 3))):
        seen.clear()
        q, k, v, mask = _inputs(0, B=1, N=N, K=K, S=2048, H=8)  # 2048 keys: several splits
        da._pallas(q, k, v, mask, None, False)
        names = ["gqa_decode_attention"] + ["gqa_decode_combine"] * (combine == "pallas")
        assert [x[0] for x in seen] == names and {x[1:] for x in seen} == {want}, (N, K, seen)


def test_self_attention_kernel_with_bias_row_and_causal_mask(tuning):
    """T5's decode step: relative position bias row, keys up to the step's position."""
    tuning(block_k=8, num_splits=None)
    N, K, S, position = 8, 2, 48, 19
    q, k, v, _ = _inputs(7, B=2, N=N, K=K, S=S, H=16)
    bias = jnp.asarray(np.random.default_rng(1).normal(size=(N, S)), jnp.float32)
    causal = (jnp.arange(S) <= position)[None, :]
    # Keys after the position hold garbage the kernel must never let through.
    k = k.at[:, :, position + 1 :].set(1e4)
    got = da.grouped_decode_attention(
        q, k, v, key_mask=causal, bias_NS=bias, implementation="interpret"
    )
    want = numpy_decode_attention(q, k, v, np.asarray(causal), np.asarray(bias))
    xla = da.reference(q, k, v, causal, bias)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(got, xla, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("splits", [None, 2, 3])
def test_blocks_after_the_position_are_never_read(splits, tuning):
    """NaN keys and values from the block after the step's position on stay out of the
    output (reading them would give NaN), with the row's keys over one or more splits."""
    tuning(block_k=8, num_splits=splits)
    N, K, S, position = 8, 2, 48, 23  # the last visited block ends at the position
    q, k, v, _ = _inputs(8, B=2, N=N, K=K, S=S, H=16)
    bias = jnp.asarray(np.random.default_rng(2).normal(size=(N, S)), jnp.float32)
    causal = (jnp.arange(S) <= position)[None, :]
    k = k.at[:, :, position + 1 :].set(jnp.nan)
    v = v.at[:, :, position + 1 :].set(jnp.nan)
    got = da.grouped_decode_attention(
        q, k, v, key_mask=causal, bias_NS=bias, implementation="interpret"
    )
    want = numpy_decode_attention(q, k[:, :, :24], v[:, :, :24], None, np.asarray(bias)[:, :24])
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_mask_values_not_above_zero_are_masked_as_in_the_reference():
    """Keys count where the mask is > 0, as layers.mask_to_bias decides (-1 is masked)."""
    q, k, v, _ = _inputs(9, B=2, N=8, K=2, S=16, H=8)
    mask = jnp.asarray(np.where(np.arange(16) % 3 == 0, -1.0, 1.0)[None, :])
    got = da.grouped_decode_attention(q, k, v, key_mask=mask, implementation="interpret")
    np.testing.assert_allclose(got, da.reference(q, k, v, mask), rtol=2e-5, atol=2e-5)
    want = numpy_decode_attention(q, k, v, np.asarray(mask > 0))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_bfloat16_kernel_within_bfloat16_noise():
    q, k, v, mask = _inputs(3, B=2, N=8, K=2, S=32, H=16, dtype=jnp.bfloat16)
    got = da.grouped_decode_attention(q, k, v, key_mask=mask, implementation="interpret")
    want = numpy_decode_attention(q, k, v, np.asarray(mask))
    assert got.dtype == jnp.bfloat16
    assert _rel_err(got, want) < 1e-2


def test_auto_is_the_xla_path_off_gpu_and_bad_input_is_named():
    assert jax.default_backend() != "gpu" and da.resolve("auto") == "xla"
    q, k, v, mask = _inputs(0, B=2, N=4, K=2, S=16, H=8)
    with pytest.raises(ValueError, match="key_mask must be"):
        da.grouped_decode_attention(q, k, v, key_mask=mask[:, :5])
    with pytest.raises(ValueError, match="K dividing N"):
        da.grouped_decode_attention(q[:, :3], k, v)
    with pytest.raises(ValueError, match="use one of"):
        da.grouped_decode_attention(q, k, v, implementation="triton")
    with pytest.raises(ValueError, match="unknown decode-kernel parameters"):
        da.set_tuning(block=3)
    with pytest.raises(ValueError, match="use 'xla' or 'pallas'"):
        da.set_tuning(combine="triton")


@pytest.mark.parametrize("decode_kernel", ["pallas_cross", "pallas"])
def test_model_decode_steps_through_the_kernel(decode_kernel, monkeypatch):
    """Cached steps with the kernel (interpret mode) reproduce the teacher-forced pass."""
    monkeypatch.setattr(da, "OFF_GPU", "interpret")
    calls = []
    real = da._pallas
    monkeypatch.setattr(da, "_pallas", lambda *a: calls.append(1) or real(*a))
    model = EncoderDecoderModel(tiny_config(num_kv_heads=2, decode_kernel=decode_kernel))
    params = model.init(jax.random.PRNGKey(0))["params"]
    batch = random_batch(5)
    enc = batch["encoder_input_tokens"].at[2].set(0)  # an empty input row too
    batch = {**batch, "encoder_input_tokens": enc}
    _assert_cached_steps_equal_full_pass(model, params, batch)
    layers = model.config.num_decoder_layers
    assert len(calls) == layers * (2 if decode_kernel == "pallas" else 1)  # traced once


def _assert_cached_steps_equal_full_pass(model, params, batch):
    """The cached decode steps' logits equal the teacher-forced pass."""
    enc = batch["encoder_input_tokens"]
    B, T = batch["decoder_input_tokens"].shape
    full = np.asarray(model.logits(params, batch))
    cache = model.init_cache(params, B, enc.shape[1], T)
    cache = model.prefill(params, cache, model.encode(params, enc))
    step = jax.jit(model.tokens_to_logits_fn(params, enc, T))
    got = []
    for t in range(T):
        logits, cache = step(batch["decoder_input_tokens"][:, t : t + 1], cache)
        got.append(np.asarray(logits))
    keep = np.asarray(batch["decoder_target_tokens"]) > 0
    np.testing.assert_allclose(np.stack(got, 1)[keep], full[keep], rtol=1e-5, atol=1e-5)


def test_model_decode_steps_through_the_kernel_and_its_combine(tuning, monkeypatch):
    """16 query heads over 2 K/V heads (the one-hot query pick), two splits a row merged by
    the Pallas combine in both attentions; cached steps equal the teacher-forced pass."""
    tuning(block_k=4, num_splits=2, combine="pallas")
    monkeypatch.setattr(da, "OFF_GPU", "interpret")
    combines = []
    real = da._combine_pallas
    monkeypatch.setattr(da, "_combine_pallas", lambda *a: combines.append(1) or real(*a))
    cfg = tiny_config(num_heads=16, num_kv_heads=2, head_dim=4, decode_kernel="pallas")
    model = EncoderDecoderModel(cfg)
    params = model.init(jax.random.PRNGKey(1))["params"]
    _assert_cached_steps_equal_full_pass(model, params, random_batch(6, S=8, T=8))
    assert len(combines) == 2 * cfg.num_decoder_layers  # self and cross, traced once


@pytest.mark.parametrize("splits,combine", [(1, "xla"), (None, "xla"), (None, "pallas")])
@pytest.mark.parametrize("N,K,bias", [(64, 8, False), (16, 1, False), (64, 64, True)])
def test_kernel_lowers_to_triton_for_cuda(N, K, bias, splits, combine, tuning):
    """The Pallas -> Triton lowering runs here (no GPU needed): no unsupported op."""
    tuning(num_splits=splits, combine=combine)
    B, S, H = 4, 512, 64
    args = [
        jax.ShapeDtypeStruct((B, N, H), jnp.bfloat16),
        jax.ShapeDtypeStruct((B, K, S, H), jnp.bfloat16),
        jax.ShapeDtypeStruct((B, K, S, H), jnp.bfloat16),
        jax.ShapeDtypeStruct((1 if bias else B, S), jnp.bool_),
        jax.ShapeDtypeStruct((N, S), jnp.float32) if bias else None,
    ]
    fn = jax.jit(
        lambda q, k, v, m, b: da.grouped_decode_attention(
            q, k, v, key_mask=m, bias_NS=b, implementation="pallas"
        )
    )
    text = fn.trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    assert "triton" in text and "gqa_decode_attention" in text
    assert ("gqa_decode_combine" in text) == (combine == "pallas")
