"""The network against an independent float64 NumPy T5, configs, and parameter layout."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_t5

from gqa_t5 import layers
from gqa_t5.models import EncoderDecoderModel, shift_right
from gqa_t5.network import T5Config

TINY = dict(
    vocab_size=40,
    emb_dim=24,
    num_heads=4,
    num_encoder_layers=2,
    num_decoder_layers=2,
    head_dim=6,
    mlp_dim=32,
    dtype="float32",
)


def tiny_config(**overrides) -> T5Config:
    return T5Config(**{**TINY, **overrides})


def random_batch(seed=0, B=3, S=9, T=7, V=40):
    rng = np.random.RandomState(seed)
    enc = rng.randint(2, V, (B, S))
    enc[1, 6:] = 0  # padded input
    tgt = rng.randint(2, V, (B, T))
    tgt[2, 5:] = 0  # padded target
    return {
        "encoder_input_tokens": jnp.asarray(enc),
        "decoder_target_tokens": jnp.asarray(tgt),
        "decoder_input_tokens": shift_right(jnp.asarray(tgt)),
    }


def params_with_nonunit_norms(model, seed=0):
    params = model.init(jax.random.PRNGKey(seed))["params"]
    # Randomise the layer-norm scales too, so a missing scale cannot go unnoticed.
    leaves = jax.tree_util.tree_leaves_with_path(params)
    rng = np.random.RandomState(seed)
    flat = {}
    for path, x in leaves:
        name = jax.tree_util.keystr(path)
        flat[name] = x * (1.0 + 0.5 * rng.rand(*x.shape)) if "scale" in name else x
    return jax.tree_util.tree_map_with_path(lambda p, x: flat[jax.tree_util.keystr(p)], params)


def valid_positions(batch):
    return np.asarray(batch["decoder_target_tokens"]) > 0


@pytest.mark.parametrize(
    "overrides",
    [
        dict(num_kv_heads=4),
        dict(num_kv_heads=2),
        dict(num_kv_heads=1),
        dict(num_kv_heads=2, group_encoder=True),
        dict(mlp_activations=("relu",), logits_via_embedding=True),  # T5 1.0
    ],
)
def test_logits_match_float64_numpy_t5(overrides):
    cfg = tiny_config(**overrides)
    model = EncoderDecoderModel(cfg)
    params = params_with_nonunit_norms(model)
    batch = random_batch()
    got = np.asarray(jax.jit(model.logits)(params, batch))
    want = reference_t5.t5_logits(
        jax.tree_util.tree_map(np.asarray, params),
        cfg,
        np.asarray(batch["encoder_input_tokens"]),
        np.asarray(batch["decoder_input_tokens"]),
        np.asarray(batch["decoder_target_tokens"]),
    )
    keep = valid_positions(batch)
    np.testing.assert_allclose(got[keep], want[keep], rtol=2e-5, atol=2e-5)


def _repeat_kv_params(params, num_heads, head_dim, blocks):
    """GQA params -> MHA params whose K/V heads are copied within each group."""

    def fix(path, x):
        name = jax.tree_util.keystr(path)
        if any(b in name for b in blocks) and ("'key'" in name or "'value'" in name):
            return reference_t5.repeat_kv(np.asarray(x), num_heads, head_dim)
        return x

    return jax.tree_util.tree_map_with_path(fix, params)


@pytest.mark.parametrize("num_kv_heads", [1, 2])
def test_gqa_equals_mha_with_kv_heads_copied_within_groups(num_kv_heads):
    gqa = EncoderDecoderModel(tiny_config(num_kv_heads=num_kv_heads))
    mha = EncoderDecoderModel(tiny_config(num_kv_heads=4))
    params = gqa.init(jax.random.PRNGKey(1))["params"]
    mha_params = _repeat_kv_params(params, 4, 6, ("self_attention", "encoder_decoder_attention"))
    batch = random_batch(1)
    keep = valid_positions(batch)
    a = np.asarray(gqa.logits(params, batch))[keep]
    b = np.asarray(mha.logits(mha_params, batch))[keep]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_parameter_names_and_shapes_follow_t5x():
    cfg = tiny_config(num_kv_heads=2)
    variables = EncoderDecoderModel(cfg).init(jax.random.PRNGKey(0))
    shapes = jax.tree_util.tree_map(np.shape, variables["params"])
    D, N, K, H, F, V = 24, 4, 2, 6, 32, 40
    enc, dec = shapes["encoder"], shapes["decoder"]
    assert enc["layers_0"]["attention"]["query"]["kernel"] == (D, N * H)
    assert enc["layers_0"]["attention"]["key"]["kernel"] == (D, N * H)  # encoder stays MHA
    for block in ("self_attention", "encoder_decoder_attention"):
        assert dec["layers_1"][block]["key"]["kernel"] == (D, K * H)
        assert dec["layers_1"][block]["value"]["kernel"] == (D, K * H)
        assert dec["layers_1"][block]["out"]["kernel"] == (N * H, D)
    assert enc["layers_0"]["mlp"]["wi_0"]["kernel"] == (D, F)
    assert enc["layers_0"]["mlp"]["wo"]["kernel"] == (F, D)
    assert enc["relpos_bias"]["rel_embedding"] == (N, 32)
    assert dec["relpos_bias"]["rel_embedding"] == (N, 32)
    assert "relpos_bias" not in enc["layers_0"]
    assert shapes["token_embedder"]["embedding"] == (V, D)
    assert dec["logits_dense"]["kernel"] == (D, V)
    for norm in (
        "pre_self_attention_layer_norm",
        "pre_cross_attention_layer_norm",
        "pre_mlp_layer_norm",
    ):
        assert dec["layers_0"][norm]["scale"] == (D,)
    axes = variables["params_axes"]
    q_axes = axes["decoder"]["layers_0"]["self_attention"]["query"]["kernel_axes"].names
    k_axes = axes["decoder"]["layers_0"]["self_attention"]["key"]["kernel_axes"].names
    assert q_axes == ("embed", "joined_kv")
    assert k_axes == ("embed", "joined_kv_heads")  # sharded apart from query heads
    # The encoder stays multi-head: its K/V shard like its queries, whatever G is.
    enc_k = axes["encoder"]["layers_0"]["attention"]["key"]["kernel_axes"].names
    assert enc_k == ("embed", "joined_kv")


def test_packed_examples_match_separate_examples():
    cfg = tiny_config(num_kv_heads=2)
    model = EncoderDecoderModel(cfg)
    params = model.init(jax.random.PRNGKey(2))["params"]
    a_in, a_tgt = [3, 4, 5, 1], [6, 7, 1]
    b_in, b_tgt = [8, 9, 1], [10, 11, 12, 1]
    packed = {
        "encoder_input_tokens": jnp.array([a_in + b_in]),
        "encoder_segment_ids": jnp.array([[1] * 4 + [2] * 3]),
        "decoder_target_tokens": jnp.array([a_tgt + b_tgt]),
        "decoder_input_tokens": jnp.array([[0] + a_tgt[:-1] + [0] + b_tgt[:-1]]),
        "decoder_segment_ids": jnp.array([[1] * 3 + [2] * 4]),
    }
    got = np.asarray(model.logits(params, packed))[0]
    for tokens, tgt, sl in ((a_in, a_tgt, slice(0, 3)), (b_in, b_tgt, slice(3, 7))):
        single = {
            "encoder_input_tokens": jnp.array([tokens]),
            "decoder_target_tokens": jnp.array([tgt]),
            "decoder_input_tokens": shift_right(jnp.array([tgt])),
        }
        want = np.asarray(model.logits(params, single))[0]
        np.testing.assert_allclose(got[sl], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_heads=4, num_kv_heads=3), "num_heads=4 is not divisible by num_kv_heads=3"),
        (dict(num_kv_heads=0), "num_kv_heads must be in \\[1, num_heads=4\\], got num_kv_heads=0"),
        (dict(num_kv_heads=8), "got num_kv_heads=8"),
        (dict(head_dim=0), "head_dim must be >= 1, got 0"),
        (dict(emb_dim=0), "emb_dim must be >= 1, got 0"),
        (dict(num_heads=0), "num_heads must be >= 1, got 0"),
        (dict(num_decoder_layers=0), "num_decoder_layers must be >= 1"),
        (dict(attention_impl="flash"), "attention_impl='flash'"),
        (dict(decode_kernel="triton"), "decode_kernel='triton'"),
    ],
)
def test_invalid_config_raises_before_compiling(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_config_is_frozen_and_defaults_to_mha():
    cfg = tiny_config()
    assert cfg.num_kv_heads == cfg.num_heads
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_kv_heads = 1


def test_bfloat16_forward_is_close_to_float32():
    model32 = EncoderDecoderModel(tiny_config(num_kv_heads=2))
    model16 = EncoderDecoderModel(tiny_config(num_kv_heads=2, dtype="bfloat16"))
    params = model32.init(jax.random.PRNGKey(3))["params"]
    batch = random_batch(3)
    a = np.asarray(model32.logits(params, batch))
    b = np.asarray(model16.logits(params, batch), np.float32)
    keep = valid_positions(batch)
    rel = np.linalg.norm(a[keep] - b[keep]) / np.linalg.norm(a[keep])
    assert np.isfinite(b).all() and rel < 3e-2


def test_dropout_changes_training_logits_only():
    model = EncoderDecoderModel(tiny_config(dropout_rate=0.3))
    params = model.init(jax.random.PRNGKey(4))["params"]
    batch = random_batch(4)
    det = np.asarray(model.logits(params, batch))
    det2 = np.asarray(model.logits(params, batch))
    drop = np.asarray(model.logits(params, batch, dropout_rng=jax.random.PRNGKey(5)))
    np.testing.assert_array_equal(det, det2)
    assert not np.allclose(det, drop)


def _length_masked_stand_in(q, k, v, bias, q_len, kv_len, causal):
    """CPU stand-in for cuDNN's length-masked attention, with its failure on empty rows:
    a row whose query or key length is 0 comes out NaN (on the GPU: NaN forward or wrong
    gradients, measured on an H100)."""
    T, S = q.shape[1], k.shape[1]
    mask = (jnp.arange(T)[None, :, None] < q_len[:, None, None]) & (
        jnp.arange(S)[None, None, :] < kv_len[:, None, None]
    )
    if causal:
        mask = mask & (jnp.arange(T)[:, None] >= jnp.arange(S)[None, :])[None]
    out = layers.grouped_attention(q, k, v, bias, mask[:, None])
    empty = (q_len == 0) | (kv_len == 0)
    return out * jnp.where(empty, jnp.nan, 1.0)[:, None, None, None]


@pytest.mark.parametrize("num_kv_heads,remat", [(4, "none"), (2, "full"), (1, "none")])
def test_cudnn_length_masking_is_threaded_as_t5x_masks(monkeypatch, num_kv_heads, remat):
    # The cuDNN path masks right-padded rows by lengths instead of masks; with a CPU
    # stand-in for the cuDNN call, logits at real positions, loss and gradients must equal
    # the mask-based XLA path's (t5x's masks).
    monkeypatch.setattr(layers, "_sdpa_by_lengths", _length_masked_stand_in)
    batch = random_batch(4)
    out = {}
    for impl in ("xla", "cudnn"):
        model = EncoderDecoderModel(
            tiny_config(num_kv_heads=num_kv_heads, attention_impl=impl, remat_policy=remat)
        )
        params = params_with_nonunit_norms(model)
        logits = model.logits(params, batch)
        (loss, _), grads = jax.value_and_grad(model.loss_fn, has_aux=True)(params, batch)
        out[impl] = (logits, loss, grads)
    real = np.asarray(batch["decoder_target_tokens"]) > 0
    np.testing.assert_allclose(
        np.asarray(out["cudnn"][0])[real], np.asarray(out["xla"][0])[real], atol=2e-5
    )
    np.testing.assert_allclose(out["cudnn"][1], out["xla"][1], rtol=1e-5)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        out["cudnn"][2],
        out["xla"][2],
    )


def test_cudnn_length_masking_keeps_empty_rows_finite(monkeypatch):
    # An all-padding row and a row with empty inputs but real targets: cuDNN fails on zero
    # lengths (the stand-in returns NaN), so the path must never pass one.
    monkeypatch.setattr(layers, "_sdpa_by_lengths", _length_masked_stand_in)
    batch = {k: np.array(v) for k, v in random_batch(5).items()}
    batch["encoder_input_tokens"][0] = 0
    batch["decoder_target_tokens"][0] = 0
    batch["decoder_input_tokens"][0] = 0
    batch["encoder_input_tokens"][1] = 0  # empty input, real targets
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    model = EncoderDecoderModel(tiny_config(num_kv_heads=2, attention_impl="cudnn"))
    params = params_with_nonunit_norms(model)
    (loss, _), grads = jax.value_and_grad(model.loss_fn, has_aux=True)(params, batch)
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
