"""The encoder-decoder model around the network: loss, predict (decode), score.

Batches use t5x's feature names: encoder_input_tokens, decoder_input_tokens,
decoder_target_tokens, decoder_loss_weights, and the *_segment_ids / *_positions of
packed examples. Imports JAX and Flax only, so it runs on machines without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp

from gqa_t5 import decoding, layers
from gqa_t5.network import T5Config, Transformer

Batch = Mapping[str, jax.Array]


def cross_entropy_with_z_loss(
    logits_BTV: jax.Array, targets_BT: jax.Array, z_loss: float = 0.0
) -> tuple[jax.Array, jax.Array]:
    """Per-token cross entropy plus z_loss * log(Z)^2 (T5.1.1 uses z_loss 1e-4).

    Returns (total per-token loss, the z-loss part), both [B, T] float32.
    """
    logits = logits_BTV.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets_BT[..., None], axis=-1)[..., 0]
    z = z_loss * jnp.square(log_z)
    return log_z - target_logit + z, z


@dataclasses.dataclass(frozen=True)
class EncoderDecoderModel:
    """A T5 encoder-decoder with grouped-query attention and its decode-time machinery."""

    config: T5Config
    z_loss: float = 1e-4
    loss_normalizing_factor: float | None = None  # None: divide by the sum of weights
    eos_id: int = 1
    decoder_start_id: int = 0

    @functools.cached_property
    def module(self) -> Transformer:
        return Transformer(self.config)

    # -- parameters ------------------------------------------------------------------
    def init(self, rng: jax.Array, input_len: int = 8, target_len: int = 8) -> dict:
        """Fresh variables ('params' and 'params_axes') for the given feature lengths."""
        enc = jnp.ones((1, input_len), jnp.int32)
        dec = jnp.ones((1, target_len), jnp.int32)
        return self.module.init(
            {"params": rng, "dropout": rng}, enc, dec, dec, enable_dropout=False
        )

    # -- training --------------------------------------------------------------------
    def logits(self, params, batch: Batch, *, dropout_rng=None) -> jax.Array:
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
        return self.module.apply(
            {"params": params},
            batch["encoder_input_tokens"],
            batch["decoder_input_tokens"],
            batch["decoder_target_tokens"],
            batch.get("encoder_segment_ids"),
            batch.get("decoder_segment_ids"),
            batch.get("encoder_positions"),
            batch.get("decoder_positions"),
            enable_dropout=dropout_rng is not None,
            rngs=rngs,
        )

    def loss_fn(self, params, batch: Batch, dropout_rng=None) -> tuple[jax.Array, dict]:
        """Weighted token cross entropy with z-loss, and metrics sums for logging."""
        logits = self.logits(params, batch, dropout_rng=dropout_rng)
        targets = batch["decoder_target_tokens"]
        weights = batch.get("decoder_loss_weights")
        if weights is None:
            weights = (targets > 0).astype(jnp.float32)
        weights = weights.astype(jnp.float32)
        token_loss, z = cross_entropy_with_z_loss(logits, targets, self.z_loss)
        total = jnp.sum(token_loss * weights)
        denom = (
            jnp.sum(weights)
            if self.loss_normalizing_factor is None
            else jnp.asarray(self.loss_normalizing_factor, jnp.float32)
        )
        correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32) * weights
        metrics = {
            "loss_sum": total,
            "z_loss_sum": jnp.sum(z * weights),
            "correct_sum": jnp.sum(correct),
            "weight_sum": jnp.sum(weights),
        }
        return total / jnp.maximum(denom, 1e-8), metrics

    def score_batch(self, params, batch: Batch) -> jax.Array:
        """Sum of target-token log-likelihoods per example [B]."""
        logits = self.logits(params, batch).astype(jnp.float32)
        targets = batch["decoder_target_tokens"]
        ll = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
        return jnp.sum(ll * (targets > 0), axis=-1)

    # -- decoding --------------------------------------------------------------------
    def init_cache(self, params, batch_size: int, input_len: int, max_decode_len: int):
        """Zeroed decode cache: self-attention [B, K, L, H], cross [B, K, S, H] per layer."""
        enc = jnp.ones((batch_size, input_len), jnp.int32)
        dec = jnp.ones((batch_size, max_decode_len), jnp.int32)
        encoded = jnp.zeros((batch_size, input_len, self.config.emb_dim), self.config.dtype)
        # Shapes only, through `decode`: the encoder's weights are not needed (and may
        # already be freed when serving).
        shapes = jax.eval_shape(
            lambda p: self.module.apply(
                {"params": p},
                encoded,
                enc,
                dec,
                dec,
                enable_dropout=False,
                decode=True,
                mutable=["cache"],
                method=Transformer.decode,
            )[1]["cache"],
            params,
        )
        return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def encode(self, params, encoder_input_tokens: jax.Array) -> jax.Array:
        return self.module.apply(
            {"params": params},
            encoder_input_tokens,
            enable_dropout=False,
            method=Transformer.encode,
        )

    def prefill(self, params, cache, encoded: jax.Array):
        """Project the encoder output to cross-attention K/V once and store it in `cache`."""
        dummy = jnp.zeros((encoded.shape[0], 1), jnp.int32)
        _, new = self.module.apply(
            {"params": params, "cache": cache},
            encoded,
            dummy,
            mutable=["cache"],
            method=Transformer.prefill_cross_attention,
        )
        return new["cache"]

    def tokens_to_logits_fn(
        self, params, encoder_input_tokens, max_decode_len: int, fuse: bool = True
    ):
        """One decode step against the cache; reads cross-attention K/V, projects none.

        With `fuse`, the decoder's q/k/v and MLP input kernels are concatenated once here
        (`fuse_decode_projections`), outside the decode loop, so each step runs one matmul
        for each group: the same numbers, fewer and larger kernels, and a copy of those
        kernels in memory for the call. On a mesh with a model axis the concatenated
        kernels' shards do not line up with the parts: pass fuse=False there.
        """
        if fuse:
            params = fuse_decode_projections(params)

        def step(ids_B1, cache):
            logits, new = self.module.apply(
                {"params": params, "cache": cache},
                None,
                encoder_input_tokens,
                ids_B1,
                ids_B1,
                enable_dropout=False,
                decode=True,
                max_decode_length=max_decode_len,
                mutable=["cache"],
                method=Transformer.decode,
            )
            return logits[:, 0, :], new["cache"]

        return step

    def predict_batch(
        self,
        params,
        batch: Batch,
        *,
        max_decode_len: int | None = None,
        num_beams: int = 1,
        temperature: float = 0.0,
        topk: int = 0,
        rng: jax.Array | None = None,
        alpha: float = 0.6,
        fixed_length: bool = False,
        fuse: bool = True,
    ) -> tuple[jax.Array, jax.Array]:
        """Decode: encode -> fill the cross-attention cache once -> greedy/sample/beam loop.

        Returns (tokens [B, L], scores [B]); with beams, the best beam. `fuse`: see
        `tokens_to_logits_fn` (turn it off under model parallelism, whose shards do not
        line up with the concatenated kernels).
        """
        enc_tokens = batch["encoder_input_tokens"]
        B, S = enc_tokens.shape
        L = max_decode_len or batch["decoder_input_tokens"].shape[1]
        encoded = self.encode(params, enc_tokens)
        if num_beams > 1:
            enc_tokens = decoding.flat_batch_beam_expand(enc_tokens, num_beams)
            encoded = decoding.flat_batch_beam_expand(encoded, num_beams)
        cache = self.init_cache(params, B * num_beams, S, L)
        cache = self.prefill(params, cache, encoded)
        step = self.tokens_to_logits_fn(params, enc_tokens, L, fuse=fuse)
        if num_beams > 1:
            seqs, scores = decoding.beam_search(
                step,
                cache,
                B,
                num_beams,
                L,
                eos_id=self.eos_id,
                start_id=self.decoder_start_id,
                alpha=alpha,
            )
            return seqs[:, 0], scores[:, 0]
        return decoding.temperature_sample(
            step,
            cache,
            B,
            L,
            eos_id=self.eos_id,
            start_id=self.decoder_start_id,
            temperature=temperature,
            topk=topk,
            rng=rng,
            fixed_length=fixed_length,
        )


def fuse_decode_projections(params: Any) -> dict:
    """`params` plus, per decoder layer, the self-attention [query | key | value] kernel
    and the MLP's [wi_0 | wi_1 | ...] kernel concatenated along the output axis.

    The originals stay (training, scoring and cache init use them); the decode-step
    modules use the fused kernels when present (`layers.FUSED_QKV`, `layers.FUSED_WI`).
    """
    params = flax.core.unfreeze(params)
    decoder = dict(params["decoder"])
    for name, layer in decoder.items():
        if not name.startswith("layers_"):
            continue
        layer = dict(layer)
        attn = dict(layer["self_attention"])
        attn[layers.FUSED_QKV] = jnp.concatenate(
            [attn[n]["kernel"] for n in ("query", "key", "value")], axis=1
        )
        mlp = dict(layer["mlp"])
        wi = sorted((n for n in mlp if n.startswith("wi_")), key=lambda n: int(n[3:]))
        if len(wi) > 1:
            mlp[layers.FUSED_WI] = jnp.concatenate([mlp[n]["kernel"] for n in wi], axis=1)
        layer["self_attention"], layer["mlp"] = attn, mlp
        decoder[name] = layer
    return {**params, "decoder": decoder}


def shift_right(targets_BT: jax.Array, start_id: int = 0) -> jax.Array:
    """Decoder inputs from targets: prepend the start id, drop the last token."""
    return jnp.pad(targets_BT, ((0, 0), (1, 0)), constant_values=start_id)[:, :-1]


def param_count(params: Any) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def kv_cache_bytes_per_token(config: T5Config, bytes_per_value: int = 2) -> dict[str, int]:
    """Decode-cache bytes per token (bfloat16 by default): K and V heads of every layer.

    `per_layer` lists each decoder layer's (self per target token, cross per input token).
    """
    per_head = 2 * config.head_dim * bytes_per_value  # K and V
    layers = [(s * per_head, c * per_head) for s, c in config.per_layer_kv_heads]
    return {
        "decoder_self_attention_per_target_token": sum(s for s, _ in layers),
        "cross_attention_per_input_token": sum(c for _, c in layers),
        "per_layer": [list(p) for p in layers],
    }
