"""Primitives for T5 with grouped-query attention.

Axis glossary (used in array names and einsum strings throughout the package):
    B batch  T query length  S key/value length  N query heads  K key/value heads
    G query heads per key/value head (N = K * G)  H head dim  D d_model  F d_ff
    V vocab  L layers

Parameter names, shapes and logical axis names follow t5x's `examples/t5` so that
public T5.1.1 checkpoints load with no renaming; the key/value projections carry their
own logical axis ("joined_kv_heads") so they can be sharded apart from the query heads.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen import partitioning as nn_partitioning

from gqa_t5.kernels import decode_attention

param_with_axes = nn_partitioning.param_with_axes
with_sharding_constraint = nn_partitioning.with_sharding_constraint

Initializer = Callable[..., jax.Array]
NEG_INF = -1e10  # T5's large-negative mask value; finite so fully masked rows stay finite.

default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


class RMSNorm(nn.Module):
    """T5's layer norm: scale only, no mean subtraction, statistics in float32."""

    epsilon: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x, jnp.float32)
        var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        y = jnp.asarray(x * jax.lax.rsqrt(var + self.epsilon), self.dtype)
        scale = param_with_axes(
            "scale", nn.initializers.ones, (x.shape[-1],), jnp.float32, axes=("embed",)
        )
        return y * jnp.asarray(scale, self.dtype)


class Dense(nn.Module):
    """Dense layer over the last axis whose kernel is stored 2-D as in t5x checkpoints.

    `features` may be a tuple (e.g. (heads, head_dim)); the stored kernel is
    [in, prod(features)] and the output is reshaped to [..., *features].
    """

    features: int | tuple[int, ...]
    kernel_axes: tuple[str, str]
    in_axes: int = 1  # how many trailing input axes are contracted
    dtype: Any = jnp.float32
    kernel_init: Initializer = default_kernel_init
    # None: the product runs in `dtype` (t5x). Set (e.g. bfloat16 with dtype float32):
    # operands in this narrower type, products accumulated and returned in `dtype`, and
    # the backward products in it too (`narrow_dot`).
    operand_dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        feats = (self.features,) if isinstance(self.features, int) else tuple(self.features)
        in_shape = x.shape[-self.in_axes :]
        kernel = param_with_axes(
            "kernel",
            self.kernel_init,
            (int(np.prod(in_shape)), int(np.prod(feats))),
            jnp.float32,
            axes=self.kernel_axes,
        )
        x = x.reshape(*x.shape[: -self.in_axes], -1)
        if self.operand_dtype is not None:
            y = narrow_dot(x, kernel, self.operand_dtype, self.dtype)
        else:
            y = dense_dot(x, kernel, self.dtype)
        return y.reshape(*y.shape[:-1], *feats)


def narrow_dot(x: jax.Array, kernel: jax.Array, operand_dtype: Any, out_dtype: Any) -> jax.Array:
    """x @ kernel with both operands cast to `operand_dtype` (bfloat16), accumulated and
    returned in `out_dtype` (float32). The backward pass casts the incoming gradient to
    `operand_dtype` too, so all three products run on the narrow matrix units (left to
    autodiff, the two backward products would mix a float32 gradient with a bfloat16
    operand and run in float32). Gradients come back in each input's own dtype. Reverse
    mode only (a custom VJP): `jax.jvp` through it raises."""
    return _narrow_dot_fn(jnp.dtype(operand_dtype), jnp.dtype(out_dtype))(x, kernel)


@functools.cache
def _narrow_dot_fn(operand_dtype: Any, out_dtype: Any) -> Callable:
    @jax.custom_vjp
    def dot(x, kernel):
        return fwd(x, kernel)[0]

    def fwd(x, kernel):
        xn, kn = x.astype(operand_dtype), kernel.astype(operand_dtype)
        y = jnp.dot(xn, kn, preferred_element_type=out_dtype)
        # Zero-size arrays carry the inputs' dtypes (residuals must be arrays).
        return y, (xn, kn, jnp.zeros((0,), x.dtype), jnp.zeros((0,), kernel.dtype))

    def bwd(res, g):
        xn, kn, x0, k0 = res
        gn = g.astype(operand_dtype)
        dx = jnp.dot(gn, kn.T, preferred_element_type=out_dtype)
        x2, g2 = xn.reshape(-1, xn.shape[-1]), gn.reshape(-1, gn.shape[-1])
        dk = jnp.dot(x2.T, g2, preferred_element_type=out_dtype)
        return dx.astype(x0.dtype), dk.astype(k0.dtype)

    dot.defvjp(fwd, bwd)
    return dot


def dense_dot(x: jax.Array, kernel: jax.Array, dtype: Any) -> jax.Array:
    """x @ kernel computed in `dtype`, as `Dense` does."""
    if _narrower(kernel.dtype, dtype) and x.dtype == kernel.dtype:
        # Weights stored in half precision for inference, half-precision inputs, wide
        # output (the float32 logits): accumulate in the wide type rather than
        # up-casting the kernel, which would copy it every decode step. Same result.
        return jnp.dot(x, kernel, preferred_element_type=dtype)
    return jnp.dot(jnp.asarray(x, dtype), jnp.asarray(kernel, dtype))


def _narrower(a: Any, b: Any) -> bool:
    return jnp.dtype(a).itemsize < jnp.dtype(b).itemsize


# Decode-only parameters made by `models.fuse_decode_projections`: the decoder's
# self-attention query/key/value kernels side by side, and the MLP's input kernels, so a
# decode step runs one matmul where it would run three (or two). Never trained or saved.
FUSED_QKV = "fused_qkv_kernel"
FUSED_WI = "fused_wi_kernel"


class Embed(nn.Module):
    """Token embedding; `attend` gives tied-embedding logits (T5 1.0)."""

    num_embeddings: int
    features: int
    dtype: Any = jnp.float32
    embedding_init: Initializer = nn.initializers.normal(stddev=1.0)

    def setup(self):
        self.embedding = param_with_axes(
            "embedding",
            self.embedding_init,
            (self.num_embeddings, self.features),
            jnp.float32,
            axes=("vocab", "embed"),
        )

    def __call__(self, tokens: jax.Array) -> jax.Array:
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"Embed expects integer token ids, got dtype {tokens.dtype}")
        return jnp.asarray(jnp.take(self.embedding, tokens, axis=0), self.dtype)

    def attend(self, x_BTD: jax.Array) -> jax.Array:
        return jnp.dot(x_BTD, jnp.asarray(self.embedding, x_BTD.dtype).T)


def relative_position_bucket(
    relative_position: np.ndarray, bidirectional: bool, num_buckets: int, max_distance: int
) -> np.ndarray:
    """Mesh-TF / t5x bucketing of (key position - query position), in NumPy.

    Computed on the host at trace time: every position offset that can occur is known
    from static shapes, so no bucket arithmetic runs on the device.
    """
    ret = np.zeros_like(relative_position, dtype=np.int32)
    n = -np.asarray(relative_position, dtype=np.int64)
    if bidirectional:
        num_buckets //= 2
        ret += (n < 0).astype(np.int32) * num_buckets
        n = np.abs(n)
    else:
        n = np.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # NOTE: float32 with t5x's epsilon so exact powers land in the same bucket as t5x.
    with np.errstate(divide="ignore"):
        val_if_large = max_exact + (
            np.log(n.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
            / np.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        ).astype(np.int32)
    val_if_large = np.minimum(val_if_large, num_buckets - 1)
    return ret + np.where(is_small, n, val_if_large).astype(np.int32)


class RelativePositionBiases(nn.Module):
    """T5 relative position bias, one table [heads, buckets] shared by a whole stack."""

    num_heads: int
    num_buckets: int = 32
    max_distance: int = 128
    dtype: Any = jnp.float32
    embedding_init: Initializer = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")

    def setup(self):
        self.rel_embedding = param_with_axes(
            "rel_embedding",
            self.embedding_init,
            (self.num_heads, self.num_buckets),
            jnp.float32,
            axes=("heads", "relpos_buckets"),
        )

    def __call__(self, q_len: int, k_len: int, bidirectional: bool = True) -> jax.Array:
        """Bias [1, N, T, S] for queries 0..T-1 against keys 0..S-1."""
        rel = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]
        buckets = relative_position_bucket(rel, bidirectional, self.num_buckets, self.max_distance)
        bias_NTS = jnp.take(self.rel_embedding, jnp.asarray(buckets), axis=1)
        return jnp.asarray(bias_NTS[None], self.dtype)

    def at_position(self, position: jax.Array, k_len: int, bidirectional: bool) -> jax.Array:
        """Bias [1, N, 1, S] for one query at (traced) `position`: the decode-step row."""
        # Offsets k - position for position in [0, k_len) span [-(k_len-1), k_len-1]; bucket
        # them all on the host once, then slice the row for this position.
        offsets = np.arange(-(k_len - 1), k_len)
        buckets = jnp.asarray(
            relative_position_bucket(offsets, bidirectional, self.num_buckets, self.max_distance)
        )
        row = jax.lax.dynamic_slice_in_dim(buckets, (k_len - 1) - position, k_len)
        bias_NS = jnp.take(self.rel_embedding, row, axis=1)
        return jnp.asarray(bias_NS[None, :, None, :], self.dtype)


class MlpBlock(nn.Module):
    """T5 feed-forward: gated (wi_0 * wi_1, T5.1.1) or plain (wi, T5 1.0), then wo."""

    intermediate_dim: int
    activations: Sequence[str] = ("gelu", "linear")
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    kernel_init: Initializer = default_kernel_init

    @nn.compact
    def __call__(
        self, x_BTD: jax.Array, deterministic: bool = True, decode: bool = False
    ) -> jax.Array:
        dense = functools.partial(
            Dense,
            self.intermediate_dim,
            ("embed", "mlp"),
            dtype=self.dtype,
            kernel_init=self.kernel_init,
        )
        n = len(self.activations)
        if decode and self.has_variable("params", FUSED_WI):  # fuse_decode_projections
            fused = dense_dot(x_BTD, self.get_variable("params", FUSED_WI), self.dtype)
            pre = jnp.split(fused, n, axis=-1)
        else:
            pre = [dense(name="wi" if n == 1 else f"wi_{i}")(x_BTD) for i in range(n)]
        hidden = [_activation(a)(h) for a, h in zip(self.activations, pre, strict=True)]
        h_BTF = functools.reduce(jnp.multiply, hidden)
        h_BTF = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(h_BTF, deterministic)
        h_BTF = with_sharding_constraint(h_BTF, ("batch", "length", "mlp"))
        return Dense(
            x_BTD.shape[-1],
            ("mlp", "embed"),
            dtype=self.dtype,
            kernel_init=self.kernel_init,
            name="wo",
        )(h_BTF)


def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name == "linear":
        return lambda x: x
    if name == "gelu":  # tanh approximation: t5x's nn.gelu default and HF's gelu_new
        return functools.partial(nn.gelu, approximate=True)
    if name == "gelu_exact":
        return functools.partial(nn.gelu, approximate=False)
    if name == "relu":
        return nn.relu
    if name == "silu":
        return nn.silu
    raise ValueError(f"unknown MLP activation {name!r}; use linear, gelu, gelu_exact, relu, silu")


def make_attention_mask(
    query_input: jax.Array,
    key_input: jax.Array,
    pairwise_fn: Callable[[jax.Array, jax.Array], jax.Array] = jnp.multiply,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """Mask [B, 1, T, S] from per-position query and key values (t5x's convention)."""
    mask = pairwise_fn(query_input[..., :, None], key_input[..., None, :])
    return mask[..., None, :, :].astype(dtype)


def make_causal_mask(x_BT: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
    idx = jnp.broadcast_to(jnp.arange(x_BT.shape[-1], dtype=jnp.int32), x_BT.shape)
    return make_attention_mask(idx, idx, jnp.greater_equal, dtype)


def combine_masks(*masks: jax.Array | None, dtype: Any = jnp.float32) -> jax.Array | None:
    masks = [m for m in masks if m is not None]
    if not masks:
        return None
    out = masks[0]
    for m in masks[1:]:
        out = jnp.logical_and(out, m)
    return out.astype(dtype)


def make_decoder_mask(
    decoder_target_tokens: jax.Array,
    dtype: Any = jnp.float32,
    decoder_causal_attention: jax.Array | None = None,
    decoder_segment_ids: jax.Array | None = None,
) -> jax.Array:
    """Causal mask with padding (target token 0) and packed-segment masking."""
    masks = [make_causal_mask(decoder_target_tokens, dtype)]
    if decoder_causal_attention is not None:
        inputs_mask = make_attention_mask(
            decoder_causal_attention, decoder_causal_attention, jnp.logical_and, dtype
        )
        masks = [jnp.logical_or(masks[0], inputs_mask).astype(dtype)]
    masks.append(make_attention_mask(decoder_target_tokens > 0, decoder_target_tokens > 0))
    if decoder_segment_ids is not None:
        masks.append(make_attention_mask(decoder_segment_ids, decoder_segment_ids, jnp.equal))
    return combine_masks(*masks, dtype=dtype)


def mask_to_bias(mask: jax.Array | None, dtype: Any) -> jax.Array | None:
    if mask is None:
        return None
    return jax.lax.select(
        mask > 0, jnp.zeros(mask.shape, dtype), jnp.full(mask.shape, NEG_INF, dtype)
    )


def combine_biases(*biases: jax.Array | None) -> jax.Array | None:
    biases = [b for b in biases if b is not None]
    if not biases:
        return None
    return functools.reduce(jnp.add, biases)


# ----------------------------------------------------------------------------------------
# Grouped-query attention.


def grouped_attention(
    q_BTNH: jax.Array,
    k_BSKH: jax.Array,
    v_BSKH: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    *,
    float32_logits: bool = True,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    implementation: str = "xla",
    lengths: tuple[jax.Array, jax.Array] | None = None,
    causal: bool = False,
) -> jax.Array:
    """Grouped-query dot-product attention without repeating K/V.

    Query head n attends with key/value head n // G (contiguous groups). No 1/sqrt(H)
    scaling: T5 folds it into the query initializer.

    Args:
      bias: additive, broadcastable to [B, N, T, S] (relative position bias).
      mask: 1/True = attend, broadcastable to [B, 1 or N, T, S]. The xla path uses it.
      implementation: "xla" (grouped einsum) or "cudnn" (cuDNN flash attention).
      lengths: (query, key) valid lengths [B] of right-padded rows, for the cudnn path,
        which then ignores `mask`. Without them it adds `mask` to `bias` as a dense
        [B, N, T, S] tensor, as `jax.nn.dot_product_attention` does (17 GB for T5-XXL at
        batch 32 and 2048 tokens). Packed rows keep the mask: cuDNN's packed layout is
        wrong with a bias (benchmarks/NOTES.md).
      causal: with `lengths`, also mask keys after the query; `mask` must then already
        say the same for the xla path.
    """
    B, T, N, H = q_BTNH.shape
    K = k_BSKH.shape[2]
    if N % K:
        raise ValueError(f"query heads {N} not divisible by key/value heads {K}")
    if implementation == "cudnn":
        if not deterministic and dropout_rate > 0:
            raise ValueError("the cudnn attention path has no dropout; use implementation='xla'")
        bias = None if bias is None else bias.astype(q_BTNH.dtype)
        if lengths is not None:
            return _cudnn_by_lengths(q_BTNH, k_BSKH, v_BSKH, bias, lengths, causal)
        return jax.nn.dot_product_attention(
            q_BTNH,
            k_BSKH,
            v_BSKH,
            bias=bias,
            mask=None if mask is None else mask > 0,
            scale=1.0,
            implementation="cudnn",
        )
    if implementation != "xla":
        raise ValueError(f"unknown attention implementation {implementation!r}; use xla or cudnn")
    G = N // K
    q_BTKGH = q_BTNH.reshape(B, T, K, G, H)
    logits_BKGTS = jnp.einsum("BTKGH,BSKH->BKGTS", q_BTKGH, k_BSKH)
    return _softmax_and_combine(
        logits_BKGTS,
        v_BSKH,
        "BKGTS,BSKH->BTKGH",
        bias,
        mask,
        float32_logits,
        dropout_rate,
        dropout_rng,
        deterministic,
    ).reshape(B, T, N, H)


def _cudnn_by_lengths(q_BTNH, k_BSKH, v_BSKH, bias, lengths, causal):
    """cuDNN flash attention over right-padded rows, masked by length (no dense mask)."""
    q_len, kv_len = (x.astype(jnp.int32) for x in lengths)
    # cuDNN returns NaN (forward) or wrong gradients for a row with no valid query or key
    # (an all-padding row; empty inputs), measured on an H100: give such rows one. Padding
    # query rows are zeroed below; a query over empty inputs is as meaningless as t5x's
    # fully masked row (which averages every key) but stays finite.
    out = _sdpa_by_lengths(
        q_BTNH, k_BSKH, v_BSKH, bias, jnp.maximum(q_len, 1), jnp.maximum(kv_len, 1), causal
    )
    # Rows past a row's length are never attended to: define them as 0.
    valid_BT = jnp.arange(q_BTNH.shape[1])[None, :] < q_len[:, None]
    return jnp.where(valid_BT[:, :, None, None], out, jnp.zeros((), out.dtype))


def _sdpa_by_lengths(q_BTNH, k_BSKH, v_BSKH, bias, q_len, kv_len, causal):
    """The cuDNN call (a separate function so CPU tests can stand in for it)."""
    return jax.nn.dot_product_attention(
        q_BTNH,
        k_BSKH,
        v_BSKH,
        bias=bias,
        scale=1.0,
        is_causal=causal,
        query_seq_lengths=q_len,
        key_value_seq_lengths=kv_len,
        implementation="cudnn",
    )


def _grouped(x: jax.Array | None, K: int) -> jax.Array | None:
    """[B|1, N|1, T, S] -> [B|1, K|1, G|1, T, S] so it broadcasts against BKGTS logits."""
    if x is None:
        return None
    b, n, t, s = x.shape
    return x.reshape(b, 1, 1, t, s) if n == 1 else x.reshape(b, K, n // K, t, s)


def _softmax_and_combine(
    logits,
    v,
    combine_eq,
    bias,
    mask,
    float32_logits,
    dropout_rate,
    dropout_rng,
    deterministic,
):
    K = logits.shape[1]
    if float32_logits:
        logits = logits.astype(jnp.float32)
    # NOTE: t5x adds the mask as a -1e10 bias on top of the position bias; so do we, so
    # masked rows match t5x to the bit.
    total_bias = combine_biases(_grouped(bias, K), _grouped(mask_to_bias(mask, logits.dtype), K))
    if total_bias is not None:
        logits = logits + total_bias.astype(logits.dtype)
    weights = jax.nn.softmax(logits.astype(jnp.float32)).astype(v.dtype)
    if not deterministic and dropout_rate > 0.0:
        # As t5x: one dropout mask per key position, shared by every query (axis T).
        shape = weights.shape[:-2] + (1,) + weights.shape[-1:]
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, shape)
        weights = weights * keep.astype(weights.dtype) / jnp.asarray(1.0 - dropout_rate, v.dtype)
    return jnp.einsum(combine_eq, weights, v)


def cached_decode_attention(
    q_BNH: jax.Array,
    k_BKSH: jax.Array,
    v_BKSH: jax.Array,
    bias: jax.Array | None,
    mask: jax.Array | None,
    *,
    float32_logits: bool = True,
) -> jax.Array:
    """One decode step against a [B, K, S, H] cache: a batched matmul per (B, K)."""
    B, N, H = q_BNH.shape
    K = k_BKSH.shape[1]
    q_BKGTH = q_BNH.reshape(B, K, N // K, 1, H)
    logits_BKGTS = jnp.einsum("BKGTH,BKSH->BKGTS", q_BKGTH, k_BKSH)
    out_BKGTH = _softmax_and_combine(
        logits_BKGTS, v_BKSH, "BKGTS,BKSH->BKGTH", bias, mask, float32_logits, 0.0, None, True
    )
    return out_BKGTH.reshape(B, N, H)


class GroupedQueryAttention(nn.Module):
    """Multi-head (K = N), grouped-query (1 < K < N) or multi-query (K = 1) attention.

    Parameters: query [D, N*H], key/value [D, K*H], out [N*H, D] (t5x layout).
    Decode caches hold K heads only, laid out [B, K, S, H]:
      * self-attention (`is_cross=False`): `cached_key`/`cached_value`, written one
        position per step at the index the decoder passes in;
      * cross-attention (`is_cross=True`): filled once per input by `prefill=True`;
        later steps called with `inputs_kv=None` read them and project nothing.
    """

    num_heads: int
    num_kv_heads: int
    head_dim: int
    is_cross: bool = False
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    kernel_init: Initializer = default_kernel_init
    float32_logits: bool = True
    implementation: str = "xla"
    # "xla", or the Pallas split-K kernel for cross-attention decode steps
    # ("pallas_cross") or for both attentions' decode steps ("pallas"); off-GPU the
    # kernel module falls back to the XLA path itself.
    decode_kernel: str = "xla"

    def _project(self, x: jax.Array, name: str, heads: int, axes: tuple[str, str], init):
        return Dense((heads, self.head_dim), axes, dtype=self.dtype, kernel_init=init, name=name)(x)

    def _kv(self, inputs_kv: jax.Array) -> tuple[jax.Array, jax.Array]:
        # Multi-head K/V shard with the query heads; grouped K/V get their own axis, which
        # the partitioner replicates when the model axis does not divide K.
        grouped = self.num_kv_heads != self.num_heads
        kv_axes = ("embed", "joined_kv_heads" if grouped else "joined_kv")
        k_BSKH = self._project(inputs_kv, "key", self.num_kv_heads, kv_axes, self.kernel_init)
        v_BSKH = self._project(inputs_kv, "value", self.num_kv_heads, kv_axes, self.kernel_init)
        return k_BSKH, v_BSKH

    @nn.compact
    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_kv: jax.Array | None,
        mask: jax.Array | None = None,
        bias: jax.Array | None = None,
        *,
        decode: bool = False,
        decode_position: jax.Array | None = None,
        prefill: bool = False,
        deterministic: bool = True,
        lengths: tuple[jax.Array, jax.Array] | None = None,
        causal: bool = False,
    ) -> jax.Array:
        # NOTE: T5 does not scale logits by 1/sqrt(H); it is folded into the query init.
        depth_scaling = jnp.sqrt(self.head_dim).astype(jnp.float32)
        query_init = lambda *a: self.kernel_init(*a) / depth_scaling
        kv = None
        if decode and self.has_variable("params", FUSED_QKV):  # one matmul for q, k, v
            q_BTNH, *kv = self._fused_qkv(inputs_q)
        else:
            q_BTNH = self._project(
                inputs_q, "query", self.num_heads, ("embed", "joined_kv"), query_init
            )

        if decode:
            out_BTNH = self._decode(q_BTNH, inputs_kv, mask, bias, decode_position, prefill, kv)
        else:
            k_BSKH, v_BSKH = self._kv(inputs_kv)
            dropout_rng = None
            if not deterministic and self.dropout_rate > 0.0:
                dropout_rng = self.make_rng("dropout")
            out_BTNH = grouped_attention(
                q_BTNH,
                k_BSKH,
                v_BSKH,
                bias,
                mask,
                float32_logits=self.float32_logits,
                dropout_rate=self.dropout_rate,
                dropout_rng=dropout_rng,
                deterministic=deterministic,
                implementation=self.implementation,
                lengths=lengths,
                causal=causal,
            )
        return Dense(
            inputs_q.shape[-1],
            ("joined_kv", "embed"),
            in_axes=2,
            dtype=self.dtype,
            kernel_init=self.kernel_init,
            name="out",
        )(out_BTNH)

    def _fused_qkv(self, inputs_q: jax.Array) -> list[jax.Array]:
        B, T = inputs_q.shape[:2]
        N, K, H = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = dense_dot(inputs_q, self.get_variable("params", FUSED_QKV), self.dtype)
        q, k, v = jnp.split(qkv, [N * H, (N + K) * H], axis=-1)
        return [q.reshape(B, T, N, H), k.reshape(B, T, K, H), v.reshape(B, T, K, H)]

    def _decode(self, q_BTNH, inputs_kv, mask, bias, position, prefill, kv=None):
        """Decode-mode attention: create the cache, fill it, or take one step."""
        initialized = self.has_variable("cache", "cached_key")
        B = q_BTNH.shape[0]
        if not initialized:
            # Shape-only pass (t5x's cache init): allocate zeroed K/V-head caches.
            kv_len = inputs_kv.shape[1]
            shape = (B, self.num_kv_heads, kv_len, self.head_dim)
            ck = self.variable("cache", "cached_key", jnp.zeros, shape, self.dtype)
            cv = self.variable("cache", "cached_value", jnp.zeros, shape, self.dtype)
            k_BSKH, v_BSKH = kv if kv else self._kv(inputs_kv)
            return grouped_attention(
                q_BTNH,
                k_BSKH,
                v_BSKH,
                bias,
                mask,
                float32_logits=self.float32_logits,
                implementation=self.implementation,
            )
        ck = self.variable("cache", "cached_key", jnp.zeros, (), self.dtype)
        cv = self.variable("cache", "cached_value", jnp.zeros, (), self.dtype)
        if self.is_cross:
            if inputs_kv is not None:  # prefill, or t5x's decode which passes `encoded`
                k_BSKH, v_BSKH = self._kv(inputs_kv)
                k_BKSH = jnp.swapaxes(k_BSKH, 1, 2).astype(self.dtype)
                v_BKSH = jnp.swapaxes(v_BSKH, 1, 2).astype(self.dtype)
                if self.is_mutable_collection("cache"):
                    ck.value, cv.value = k_BKSH, v_BKSH
            else:
                k_BKSH, v_BKSH = ck.value, cv.value
            if prefill:
                return jnp.zeros_like(q_BTNH)
        else:
            if q_BTNH.shape[1] != 1:
                raise ValueError(
                    f"cached self-attention decodes one token per step, got {q_BTNH.shape[1]}"
                )
            k_BSKH, v_BSKH = kv if kv else self._kv(inputs_kv)
            idx = (0, 0, position, 0)
            k_BKSH = jax.lax.dynamic_update_slice(
                ck.value, jnp.swapaxes(k_BSKH, 1, 2).astype(self.dtype), idx
            )
            v_BKSH = jax.lax.dynamic_update_slice(
                cv.value, jnp.swapaxes(v_BSKH, 1, 2).astype(self.dtype), idx
            )
            ck.value, cv.value = k_BKSH, v_BKSH
            S = k_BKSH.shape[2]
            causal = (jnp.arange(S) <= position)[None, None, None, :]
            mask = causal if mask is None else jnp.logical_and(mask > 0, causal)
        use_kernel = self.float32_logits and (
            self.decode_kernel == "pallas"
            or (self.decode_kernel == "pallas_cross" and self.is_cross)
        )
        out_BNH = None
        if use_kernel:
            out_BNH = decode_attention.decode_step(q_BTNH[:, 0], k_BKSH, v_BKSH, bias, mask)
        if out_BNH is None:
            out_BNH = cached_decode_attention(
                q_BTNH[:, 0], k_BKSH, v_BKSH, bias, mask, float32_logits=self.float32_logits
            )
        return out_BNH[:, None]
