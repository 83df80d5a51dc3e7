"""Primitives: relative position buckets, grouped attention, masks, activations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference_t5 import bucket

from gqa_t5 import layers


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_bucket_matches_scalar_reference(bidirectional):
    rel = np.arange(-400, 401)
    got = layers.relative_position_bucket(rel, bidirectional, 32, 128)
    want = np.array([bucket(int(r), bidirectional) for r in rel])
    np.testing.assert_array_equal(got, want)


def test_relpos_decode_row_equals_full_table_row():
    mod = layers.RelativePositionBiases(num_heads=3, num_buckets=32, max_distance=128)
    variables = mod.init(jax.random.PRNGKey(0), 7, 7, False)
    full = mod.apply(variables, 7, 7, False)
    for pos in range(7):
        row = mod.apply(variables, jnp.int32(pos), 7, False, method=mod.at_position)
        np.testing.assert_array_equal(row[0, :, 0], full[0, :, pos])


def _mha_reference(q, k, v, bias, keep):
    """Plain float64 multi-head attention with T5's convention (no logit scaling)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("btnh,bsnh->bnts", q, k) + bias
    logits = np.where(keep, logits, -1e10)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", w, v)


@pytest.mark.parametrize("num_kv_heads", [1, 2, 3, 6])
@pytest.mark.parametrize("jit", [False, True])
def test_grouped_attention_equals_mha_with_repeated_kv(num_kv_heads, jit):
    B, T, S, N, H = 2, 5, 7, 6, 4
    rng = np.random.RandomState(num_kv_heads)
    q = rng.randn(B, T, N, H).astype(np.float32)
    k = rng.randn(B, S, num_kv_heads, H).astype(np.float32)
    v = rng.randn(B, S, num_kv_heads, H).astype(np.float32)
    bias = rng.randn(1, N, T, S).astype(np.float32)
    keep = rng.rand(B, 1, T, S) > 0.3
    keep[..., 0] = True
    fn = jax.jit(layers.grouped_attention) if jit else layers.grouped_attention
    got = fn(q, k, v, bias, keep.astype(np.float32))
    G = N // num_kv_heads
    want = _mha_reference(q, np.repeat(k, G, axis=2), np.repeat(v, G, axis=2), bias, keep)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_grouped_attention_groups_are_contiguous():
    # Query head n must read KV head n // G: make KV heads distinguishable by value.
    B, T, S, N, K, H = 1, 1, 3, 4, 2, 2
    q = np.zeros((B, T, N, H), np.float32)
    k = np.zeros((B, S, K, H), np.float32)
    v = np.stack([np.full((B, S, H), 10.0), np.full((B, S, H), 20.0)], axis=2)
    out = np.asarray(layers.grouped_attention(q, k, v.astype(np.float32)))
    np.testing.assert_allclose(out[0, 0, :, 0], [10.0, 10.0, 20.0, 20.0])


def test_grouped_attention_is_causal_under_causal_mask():
    B, T, N, K, H = 1, 6, 4, 2, 3
    rng = np.random.RandomState(0)
    x = rng.randn(B, T, N, H).astype(np.float32)
    kv = rng.randn(B, T, K, H).astype(np.float32)
    mask = np.tril(np.ones((T, T), np.float32))[None, None]
    base = np.asarray(layers.grouped_attention(x, kv, kv, None, mask))
    kv2 = kv.copy()
    kv2[:, 4:] += 100.0  # change the future only
    moved = np.asarray(layers.grouped_attention(x, kv2, kv2, None, mask))
    np.testing.assert_allclose(moved[:, :4], base[:, :4], rtol=1e-6)
    assert not np.allclose(moved[:, 4:], base[:, 4:])


def test_grouped_attention_rejects_bad_heads_and_impl():
    q = jnp.zeros((1, 1, 6, 2))
    kv = jnp.zeros((1, 1, 4, 2))
    with pytest.raises(ValueError, match="not divisible"):
        layers.grouped_attention(q, kv, kv)
    with pytest.raises(ValueError, match="unknown attention implementation"):
        layers.grouped_attention(q, q, q, implementation="flash")


def test_rms_norm_matches_float64():
    x = np.random.RandomState(0).randn(3, 5, 8).astype(np.float32)
    mod = layers.RMSNorm()
    variables = mod.init(jax.random.PRNGKey(0), x)
    got = mod.apply(variables, x)
    x64 = x.astype(np.float64)
    want = x64 / np.sqrt(np.mean(x64**2, -1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_unknown_activation_is_rejected():
    mod = layers.MlpBlock(intermediate_dim=4, activations=("swish2",))
    with pytest.raises(ValueError, match="unknown MLP activation"):
        mod.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 3)))


def test_decoder_mask_combines_causal_padding_and_segments():
    targets = jnp.array([[5, 6, 7, 0]])
    segments = jnp.array([[1, 1, 2, 0]])
    m = np.asarray(layers.make_decoder_mask(targets, decoder_segment_ids=segments))[0, 0]
    want = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], np.float32)
    np.testing.assert_array_equal(m, want)


def test_attention_dropout_mask_is_shared_across_queries_as_in_t5x():
    B, T, S, N, H = 1, 4, 6, 2, 3
    q = jnp.zeros((B, T, N, H))  # uniform weights: every query row is identical
    v = jnp.asarray(np.random.RandomState(0).randn(B, S, N, H), jnp.float32)
    out = layers.grouped_attention(
        q,
        jnp.zeros((B, S, N, H)),
        v,
        dropout_rate=0.5,
        dropout_rng=jax.random.PRNGKey(0),
        deterministic=False,
    )
    out = np.asarray(out)
    no_drop = np.asarray(layers.grouped_attention(q, jnp.zeros((B, S, N, H)), v))
    assert not np.allclose(out, no_drop)  # dropout did act
    np.testing.assert_allclose(out, np.broadcast_to(out[:, :1], out.shape), rtol=1e-6)
