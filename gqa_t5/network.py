"""T5 encoder-decoder with grouped-query attention, in t5x's module interface.

`Transformer.encode`, `Transformer.decode` and `Transformer.__call__` take t5x's argument
names, so the module drops into `t5x.models.EncoderDecoderModel`. One extra decode-time
entry point, `Transformer.prefill_cross_attention`, projects the encoder output to
cross-attention keys/values once per input; decode steps called with `encoded=None`
then read them from the cache instead of re-projecting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from gqa_t5 import layers

ATTENTION_IMPLS = ("auto", "xla", "cudnn")
DECODE_KERNELS = ("xla", "pallas_cross", "pallas")
REMAT_POLICIES = ("none", "full")
LOGITS_DOTS = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Hyperparameters of a T5 encoder-decoder with grouped-query attention.

    `num_kv_heads` (G in the paper) applies to decoder self-attention and cross-attention;
    encoder self-attention stays multi-head unless `group_encoder` is set. It is one int, or
    one entry per decoder layer, each an int (self and cross) or a (self, cross) pair; read
    it through `kv_heads(layer, block)`.
    """

    vocab_size: int = 32128
    emb_dim: int = 512
    num_heads: int = 8
    num_kv_heads: int | Sequence[int | Sequence[int]] | None = None  # None: = num_heads
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    head_dim: int = 64
    mlp_dim: int = 1024
    mlp_activations: Sequence[str] = ("gelu", "linear")
    dropout_rate: float = 0.0
    dtype: Any = jnp.bfloat16
    logits_via_embedding: bool = False
    float32_attention_logits: bool = True
    group_encoder: bool = False
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    attention_impl: str = "auto"
    remat_policy: str = "none"  # none | full: rematerialise each layer in the backward pass
    # The output layer's products: "float32" (t5x: activations and kernel in float32) or
    # "bfloat16" (operands in bfloat16, accumulated and returned in float32, backward
    # products in bfloat16 too; faster, not t5x-exact: benchmarks/NOTES.md entry 17).
    logits_dot: str = "float32"
    # Decode-step attention: "xla", the Pallas split-K kernel for cross-attention only
    # ("pallas_cross"), or for self- and cross-attention ("pallas"). GPU only; elsewhere
    # the XLA path runs. Off by default until measured (benchmarks/NOTES.md).
    decode_kernel: str = "xla"

    def __post_init__(self):
        if self.num_kv_heads is None:
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
        object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
        for name in (
            "vocab_size",
            "emb_dim",
            "num_heads",
            "num_encoder_layers",
            "num_decoder_layers",
            "head_dim",
            "mlp_dim",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"T5Config.{name} must be >= 1, got {getattr(self, name)}")
        if not isinstance(self.num_kv_heads, int):
            object.__setattr__(self, "num_kv_heads", _per_layer(self))
        h = self.num_heads
        for k in {k for pair in self.per_layer_kv_heads for k in pair}:
            if not 1 <= k <= h:
                raise ValueError(
                    f"T5Config.num_kv_heads must be in [1, num_heads={h}], got num_kv_heads={k}"
                )
            if h % k:
                raise ValueError(
                    f"T5Config.num_heads={h} is not divisible by num_kv_heads={k}: each "
                    f"key/value head must serve the same number of query heads"
                )
        if self.group_encoder and not isinstance(self.num_kv_heads, int):
            raise ValueError(
                "T5Config.group_encoder needs one int num_kv_heads (the encoder has no "
                f"per-decoder-layer entry), got {self.num_kv_heads}"
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(
                f"T5Config.attention_impl={self.attention_impl!r}; use one of {ATTENTION_IMPLS}"
            )
        if self.decode_kernel not in DECODE_KERNELS:
            raise ValueError(
                f"T5Config.decode_kernel={self.decode_kernel!r}; use one of {DECODE_KERNELS}"
            )
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"T5Config.remat_policy={self.remat_policy!r}; use none or full")
        if self.logits_dot not in LOGITS_DOTS:
            raise ValueError(f"T5Config.logits_dot={self.logits_dot!r}; use float32 or bfloat16")
        if self.logits_dot != "float32" and self.logits_via_embedding:
            raise ValueError(
                "T5Config.logits_dot='bfloat16' applies to the separate output layer; with "
                "logits_via_embedding=True (tied, T5 1.0) leave logits_dot='float32'"
            )

    @property
    def encoder_kv_heads(self) -> int:
        return self.num_kv_heads if self.group_encoder else self.num_heads

    @property
    def per_layer_kv_heads(self) -> tuple[tuple[int, int], ...]:
        """(self-attention, cross-attention) key/value heads of each decoder layer."""
        k = self.num_kv_heads
        if isinstance(k, int):
            return ((k, k),) * self.num_decoder_layers
        return k

    def kv_heads(self, layer: int, block: str) -> int:
        """Key/value heads of decoder layer `layer`'s 'self' or 'cross' attention."""
        return self.per_layer_kv_heads[layer][("self", "cross").index(block)]

    def resolved_attention_impl(self, dropout: bool) -> str:
        """'auto' is cuDNN on GPU in half precision without attention dropout, else XLA."""
        if self.attention_impl != "auto":
            return self.attention_impl
        half = jnp.dtype(self.dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
        on_gpu = jax.default_backend() == "gpu"
        return "cudnn" if (on_gpu and half and not dropout) else "xla"


def _per_layer(cfg: T5Config) -> int | tuple[tuple[int, int], ...]:
    """A per-layer num_kv_heads as ((self, cross), ...); one int if all are equal."""
    entries = list(cfg.num_kv_heads)
    if len(entries) != cfg.num_decoder_layers:
        raise ValueError(
            f"T5Config.num_kv_heads has {len(entries)} entries for {cfg.num_decoder_layers} "
            f"decoder layers; give one int, or one entry per decoder layer"
        )
    pairs = []
    for e in entries:
        pair = (e, e) if isinstance(e, int) else tuple(e)
        if len(pair) != 2 or not all(isinstance(k, int) for k in pair):
            raise ValueError(
                f"T5Config.num_kv_heads entry {e!r}: use an int or a (self, cross) pair of ints"
            )
        pairs.append(pair)
    flat = {k for p in pairs for k in p}
    return flat.pop() if len(flat) == 1 else tuple(pairs)


def _attention(cfg: T5Config, kv_heads: int, name: str, deterministic: bool, is_cross=False):
    return layers.GroupedQueryAttention(
        num_heads=cfg.num_heads,
        num_kv_heads=kv_heads,
        head_dim=cfg.head_dim,
        is_cross=is_cross,
        dtype=cfg.dtype,
        dropout_rate=cfg.dropout_rate,
        float32_logits=cfg.float32_attention_logits,
        implementation=cfg.resolved_attention_impl(not deterministic and cfg.dropout_rate > 0),
        decode_kernel=cfg.decode_kernel,
        name=name,
    )


def _mlp(cfg: T5Config) -> layers.MlpBlock:
    return layers.MlpBlock(
        intermediate_dim=cfg.mlp_dim,
        activations=cfg.mlp_activations,
        dropout_rate=cfg.dropout_rate,
        dtype=cfg.dtype,
        name="mlp",
    )


def _dropout(cfg: T5Config, x: jax.Array, deterministic: bool) -> jax.Array:
    return nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)


def _relpos(cfg: T5Config) -> layers.RelativePositionBiases:
    return layers.RelativePositionBiases(
        num_heads=cfg.num_heads,
        num_buckets=cfg.relative_attention_num_buckets,
        max_distance=cfg.relative_attention_max_distance,
        dtype=cfg.dtype,
        name="relpos_bias",
    )


def _maybe_remat(cfg: T5Config, cls, static_argnums):
    return nn.remat(cls, static_argnums=static_argnums) if cfg.remat_policy == "full" else cls


class EncoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x_BTD, bias, mask, deterministic: bool = True, lengths=None):
        cfg = self.config
        h = layers.RMSNorm(dtype=cfg.dtype, name="pre_attention_layer_norm")(x_BTD)
        h = _attention(cfg, cfg.encoder_kv_heads, "attention", deterministic)(
            h, h, mask, bias, deterministic=deterministic, lengths=lengths
        )
        x_BTD = x_BTD + _dropout(cfg, h, deterministic)
        h = layers.RMSNorm(dtype=cfg.dtype, name="pre_mlp_layer_norm")(x_BTD)
        h = _mlp(cfg)(h, deterministic=deterministic)
        return x_BTD + _dropout(cfg, h, deterministic)


class DecoderLayer(nn.Module):
    config: T5Config
    index: int = 0  # position in the stack: picks this layer's key/value head counts

    @nn.compact
    def __call__(
        self,
        y_BTD,
        encoded,
        self_bias,
        decoder_mask,
        encoder_decoder_mask,
        deterministic: bool = True,
        decode: bool = False,
        decode_position=None,
        prefill: bool = False,
        self_lengths=None,
        cross_lengths=None,
    ):
        cfg = self.config
        i = self.index
        cross = _attention(
            cfg, cfg.kv_heads(i, "cross"), "encoder_decoder_attention", deterministic, True
        )
        if prefill:  # only project and cache the cross-attention keys/values
            cross(y_BTD, encoded, decode=True, prefill=True)
            return y_BTD
        h = layers.RMSNorm(dtype=cfg.dtype, name="pre_self_attention_layer_norm")(y_BTD)
        h = _attention(cfg, cfg.kv_heads(i, "self"), "self_attention", deterministic)(
            h,
            h,
            decoder_mask,
            self_bias,
            decode=decode,
            decode_position=decode_position,
            deterministic=deterministic,
            lengths=self_lengths,
            causal=True,
        )
        y_BTD = y_BTD + _dropout(cfg, h, deterministic)
        h = layers.RMSNorm(dtype=cfg.dtype, name="pre_cross_attention_layer_norm")(y_BTD)
        h = cross(
            h,
            encoded,
            encoder_decoder_mask,
            decode=decode,
            deterministic=deterministic,
            lengths=cross_lengths,
        )
        y_BTD = y_BTD + _dropout(cfg, h, deterministic)
        h = layers.RMSNorm(dtype=cfg.dtype, name="pre_mlp_layer_norm")(y_BTD)
        h = _mlp(cfg)(h, deterministic=deterministic, decode=decode)
        return y_BTD + _dropout(cfg, h, deterministic)


class Encoder(nn.Module):
    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, tokens_BT, encoder_mask=None, deterministic: bool = True, lengths=None):
        cfg = self.config
        x = self.shared_embedding(tokens_BT.astype(jnp.int32)).astype(cfg.dtype)
        x = _dropout(cfg, x, deterministic)
        T = tokens_BT.shape[-1]
        bias = _relpos(cfg)(T, T, bidirectional=True)
        layer_cls = _maybe_remat(cfg, EncoderLayer, static_argnums=(4,))
        for i in range(cfg.num_encoder_layers):
            x = layer_cls(cfg, name=f"layers_{i}")(x, bias, encoder_mask, deterministic, lengths)
            x = layers.with_sharding_constraint(x, ("batch", "length", "embed"))
        x = layers.RMSNorm(dtype=cfg.dtype, name="encoder_norm")(x)
        return _dropout(cfg, x, deterministic)


class Decoder(nn.Module):
    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(
        self,
        encoded,
        decoder_input_tokens,
        decoder_positions=None,
        decoder_mask=None,
        encoder_decoder_mask=None,
        deterministic: bool = True,
        decode: bool = False,
        max_decode_length: int | None = None,
        prefill: bool = False,
        self_lengths=None,
        cross_lengths=None,
    ):
        cfg = self.config
        B, T = decoder_input_tokens.shape
        relpos = _relpos(cfg)
        position = None
        if prefill:
            y = jnp.zeros((B, 1, cfg.emb_dim), cfg.dtype)
            self_bias = None
        else:
            y = self.shared_embedding(decoder_input_tokens.astype(jnp.int32)).astype(cfg.dtype)
            y = _dropout(cfg, y, deterministic)
            stepping = decode and self.has_variable("cache", "cache_index")
            if stepping:
                # One token per step: the bias row for this position only.
                index = self.variable("cache", "cache_index", jnp.zeros, (), jnp.int32)
                position = index.value
                kv_len = _cache_length(self, max_decode_length)
                self_bias = relpos.at_position(position, kv_len, bidirectional=False)
                index.value = position + 1
            else:
                if decode:  # t5x-style cache init pass: allocate the step index
                    self.variable("cache", "cache_index", jnp.zeros, (), jnp.int32)
                self_bias = relpos(T, T, bidirectional=False)
        layer_cls = _maybe_remat(cfg, DecoderLayer, static_argnums=(6, 7, 9))
        for i in range(cfg.num_decoder_layers):
            y = layer_cls(cfg, index=i, name=f"layers_{i}")(
                y,
                encoded,
                self_bias,
                decoder_mask,
                encoder_decoder_mask,
                deterministic,
                decode,
                position,
                prefill,
                self_lengths,
                cross_lengths,
            )
            y = layers.with_sharding_constraint(y, ("batch", "length", "embed"))
        if prefill:
            return None
        y = layers.RMSNorm(dtype=cfg.dtype, name="decoder_norm")(y)
        y = _dropout(cfg, y, deterministic)
        if cfg.logits_via_embedding:
            # NOTE: tied embeddings (T5 1.0) rescale by 1/sqrt(D) before the output layer.
            logits = self.shared_embedding.attend(y.astype(jnp.float32))
            return logits / jnp.sqrt(y.shape[-1]).astype(jnp.float32)
        return layers.Dense(
            cfg.vocab_size,
            ("embed", "vocab"),
            dtype=jnp.float32,
            operand_dtype=None if cfg.logits_dot == "float32" else jnp.bfloat16,
            name="logits_dense",
        )(y)


def _valid_lengths(tokens_BT):
    """Valid lengths [B] of right-padded rows (token 0 = padding)."""
    return jnp.sum(tokens_BT > 0, axis=-1).astype(jnp.int32)


def _cache_length(decoder: nn.Module, max_decode_length: int | None) -> int:
    """Self-attention cache length, read off the first layer's cached keys."""
    length = decoder.variables["cache"]["layers_0"]["self_attention"]["cached_key"].shape[2]
    if max_decode_length is not None and max_decode_length > length:
        raise ValueError(f"max_decode_length={max_decode_length} exceeds the cache length {length}")
    return length


class Transformer(nn.Module):
    """The T5 encoder-decoder, with t5x's `encode` / `decode` / `__call__` interface."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.shared_embedding = layers.Embed(
            num_embeddings=cfg.vocab_size,
            features=cfg.emb_dim,
            dtype=cfg.dtype,
            name="token_embedder",
        )
        self.encoder = Encoder(cfg, self.shared_embedding)
        self.decoder = Decoder(cfg, self.shared_embedding)

    def encode(self, encoder_input_tokens, encoder_segment_ids=None, enable_dropout=True):
        cfg = self.config
        mask = layers.make_attention_mask(
            encoder_input_tokens > 0, encoder_input_tokens > 0, dtype=cfg.dtype
        )
        if encoder_segment_ids is not None:
            mask = layers.combine_masks(
                mask,
                layers.make_attention_mask(encoder_segment_ids, encoder_segment_ids, jnp.equal),
                dtype=cfg.dtype,
            )
        lengths = None
        if encoder_segment_ids is None and self._uses_cudnn(enable_dropout):
            # Unpacked rows are right-padded: cuDNN masks them by length (grouped_attention).
            n = _valid_lengths(encoder_input_tokens)
            lengths = (n, n)
        return self.encoder(
            encoder_input_tokens, mask, deterministic=not enable_dropout, lengths=lengths
        )

    def _uses_cudnn(self, enable_dropout: bool) -> bool:
        cfg = self.config
        return cfg.resolved_attention_impl(enable_dropout and cfg.dropout_rate > 0) == "cudnn"

    def decode(
        self,
        encoded,
        encoder_input_tokens,
        decoder_input_tokens,
        decoder_target_tokens,
        encoder_segment_ids=None,
        decoder_segment_ids=None,
        decoder_positions=None,
        enable_dropout=True,
        decode=False,
        max_decode_length=None,
    ):
        cfg = self.config
        if decode:
            decoder_mask = None
            enc_dec_mask = layers.make_attention_mask(
                jnp.ones_like(decoder_target_tokens), encoder_input_tokens > 0, dtype=cfg.dtype
            )
        else:
            decoder_mask = layers.make_decoder_mask(
                decoder_target_tokens, cfg.dtype, decoder_segment_ids=decoder_segment_ids
            )
            enc_dec_mask = layers.make_attention_mask(
                decoder_target_tokens > 0, encoder_input_tokens > 0, dtype=cfg.dtype
            )
        if encoder_segment_ids is not None:
            if decode:
                raise ValueError(
                    "packed inputs (encoder_segment_ids) are not supported when decoding"
                )
            enc_dec_mask = layers.combine_masks(
                enc_dec_mask,
                layers.make_attention_mask(decoder_segment_ids, encoder_segment_ids, jnp.equal),
                dtype=cfg.dtype,
            )
        self_lengths = cross_lengths = None
        unpacked = encoder_segment_ids is None and decoder_segment_ids is None
        if not decode and unpacked and self._uses_cudnn(enable_dropout):
            # Right-padded rows: cuDNN masks by length; the masks above are then unused.
            n_dec = _valid_lengths(decoder_target_tokens)
            self_lengths = (n_dec, n_dec)
            cross_lengths = (n_dec, _valid_lengths(encoder_input_tokens))
        return self.decoder(
            encoded,
            decoder_input_tokens,
            decoder_positions,
            decoder_mask,
            enc_dec_mask,
            deterministic=not enable_dropout,
            decode=decode,
            max_decode_length=max_decode_length,
            self_lengths=self_lengths,
            cross_lengths=cross_lengths,
        )

    def prefill_cross_attention(self, encoded, decoder_input_tokens):
        """Project `encoded` to every layer's cross-attention K/V and store them in the cache.

        Call once per input with `mutable=['cache']` after the cache exists; decode steps
        then pass `encoded=None`.
        """
        self.decoder(encoded, decoder_input_tokens, decode=True, prefill=True)

    def __call__(
        self,
        encoder_input_tokens,
        decoder_input_tokens,
        decoder_target_tokens,
        encoder_segment_ids=None,
        decoder_segment_ids=None,
        encoder_positions=None,
        decoder_positions=None,
        *,
        enable_dropout: bool = True,
        decode: bool = False,
        max_decode_length: int | None = None,
    ):
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids, enable_dropout)
        return self.decode(
            encoded,
            encoder_input_tokens,
            decoder_input_tokens,
            decoder_target_tokens,
            encoder_segment_ids,
            decoder_segment_ids,
            decoder_positions,
            enable_dropout=enable_dropout,
            decode=decode,
            max_decode_length=max_decode_length,
        )
