"""Autoregressive decoding as compiled loops over a tokens-to-logits function and a cache.

A `TokensToLogits` takes the current token ids [B, 1] and the cache, and returns the
next-token logits [B, V] and the updated cache. Nothing here knows about T5: the model
supplies the function (see `gqa_t5.models`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

TokensToLogits = Callable[[jax.Array, Any], tuple[jax.Array, Any]]
NEG_INF = np.array(-1.0e7, dtype=np.float32)


def temperature_sample(
    tokens_to_logits: TokensToLogits,
    cache: Any,
    batch_size: int,
    max_decode_len: int,
    *,
    eos_id: int = 1,
    start_id: int = 0,
    temperature: float = 0.0,
    topk: int = 0,
    rng: jax.Array | None = None,
    fixed_length: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Greedy (temperature 0) or temperature/top-k sampling in a `lax.while_loop`.

    Returns (sequences [B, L], log-probabilities [B]). Positions after EOS hold 0. The
    loop stops once every sequence has emitted EOS, unless `fixed_length` (benchmarks),
    which always runs `max_decode_len` steps.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature > 0 and rng is None:
        raise ValueError("sampling with temperature > 0 needs an rng")
    rng = jax.random.PRNGKey(0) if rng is None else rng
    B, L = batch_size, max_decode_len

    def cond(state):
        i, _, _, _, ended, _, _ = state
        return jnp.logical_and(i < L, ~jnp.all(ended))

    def body(state):
        i, seqs, cur, cache, ended, logp, rng = state
        logits, cache = tokens_to_logits(cur, cache)
        logits = logits.astype(jnp.float32)
        rng, sub = jax.random.split(rng)
        if temperature == 0.0:
            nxt = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        else:
            scaled = logits / temperature
            if topk:
                kth = jax.lax.top_k(scaled, topk)[0][:, -1:]
                scaled = jnp.where(scaled < kth, NEG_INF, scaled)
            nxt = jax.random.categorical(sub, scaled).astype(jnp.int32)
        step_logp = jnp.take_along_axis(jax.nn.log_softmax(logits), nxt[:, None], 1)[:, 0]
        logp = logp + jnp.where(ended, 0.0, step_logp)
        nxt = jnp.where(ended, 0, nxt)
        seqs = jax.lax.dynamic_update_slice(seqs, nxt[:, None], (0, i))
        ended = ended | (nxt == eos_id)
        return i + 1, seqs, nxt[:, None], cache, ended, logp, rng

    state = (
        jnp.array(0, jnp.int32),
        jnp.zeros((B, L), jnp.int32),
        jnp.full((B, 1), start_id, jnp.int32),
        cache,
        jnp.zeros((B,), bool),
        jnp.zeros((B,), jnp.float32),
        rng,
    )
    if fixed_length:
        # A static trip count: XLA need not copy the loop predicate to the host each step.
        final = jax.lax.fori_loop(0, L, lambda _, s: body(s), state)
    else:
        final = jax.lax.while_loop(cond, body, state)
    _, seqs, _, _, _, logp, _ = final
    return seqs, logp


def brevity_penalty(alpha: float, length: jax.Array) -> jax.Array:
    """GNMT length penalty ((5 + length) / 6) ** alpha; alpha 0 scores by log-probability."""
    return jnp.power((5.0 + length.astype(jnp.float32)) / 6.0, alpha)


def _gather_beams(x: jax.Array, beam_idx_BW: jax.Array, *, flat: bool) -> jax.Array:
    """Pick beams: x is [B, beams_in, ...], or [B * beams_in, ...] when `flat` (caches)."""
    B = beam_idx_BW.shape[0]
    y = x.reshape(B, -1, *x.shape[1:]) if flat else x
    idx = beam_idx_BW.reshape(beam_idx_BW.shape + (1,) * (y.ndim - 2))
    out = jnp.take_along_axis(y, idx, axis=1)
    return out.reshape(-1, *x.shape[1:]) if flat else out


def beam_search(
    tokens_to_logits: TokensToLogits,
    cache: Any,
    batch_size: int,
    num_beams: int,
    max_decode_len: int,
    *,
    eos_id: int = 1,
    start_id: int = 0,
    alpha: float = 0.6,
    beam_invariant_cache_keys: Sequence[str] = ("encoder_decoder_attention",),
) -> tuple[jax.Array, jax.Array]:
    """Beam search in a `lax.while_loop`; the cache's batch axis is [B * num_beams].

    Cache leaves whose key path contains one of `beam_invariant_cache_keys` (the
    cross-attention K/V, equal across the beams of an input) are never re-gathered.
    Returns (sequences [B, W, L], scores [B, W]) sorted best first.
    """
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    B, W, L = batch_size, num_beams, max_decode_len

    def reorder_cache(cache, beam_idx_BW):
        def leaf(path, x):
            name = jax.tree_util.keystr(path)
            if x.ndim == 0 or any(k in name for k in beam_invariant_cache_keys):
                return x
            return _gather_beams(x, beam_idx_BW, flat=True)

        return jax.tree_util.tree_map_with_path(leaf, cache)

    def cond(state):
        i, alive_logp, _, fin_scores, fin_flags, _, _ = state
        best_alive = alive_logp[:, 0] / brevity_penalty(alpha, jnp.array(L))
        worst_fin = jnp.where(fin_flags, fin_scores, NEG_INF).min(axis=1)
        all_done = jnp.all(fin_flags.all(axis=1) & (worst_fin >= best_alive))
        return (i < L) & ~all_done

    def body(state):
        i, alive_logp, alive_seqs, fin_scores, fin_flags, fin_seqs, cache = state
        cur = jnp.where(
            i == 0,
            start_id,
            jax.lax.dynamic_slice_in_dim(alive_seqs, jnp.maximum(i - 1, 0), 1, axis=2),
        ).reshape(B * W, 1)
        logits, cache = tokens_to_logits(cur, cache)
        V = logits.shape[-1]
        cand_BWV = alive_logp[:, :, None] + jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(
            B, W, V
        )
        top_logp, top_idx = jax.lax.top_k(cand_BWV.reshape(B, W * V), 2 * W)
        top_beam, top_tok = top_idx // V, (top_idx % V).astype(jnp.int32)
        top_seqs = _gather_beams(alive_seqs, top_beam, flat=False)
        top_seqs = jax.lax.dynamic_update_slice(top_seqs, top_tok[:, :, None], (0, 0, i))
        is_eos = top_tok == eos_id
        # Alive: the best W candidates that did not just end.
        alive_cand = jnp.where(is_eos, NEG_INF, top_logp)
        new_alive_logp, keep = jax.lax.top_k(alive_cand, W)
        new_alive_seqs = _gather_beams(top_seqs, keep, flat=False)
        cache = reorder_cache(cache, jnp.take_along_axis(top_beam, keep, axis=1))
        # Finished: merge the candidates that just ended with those found before.
        new_scores = jnp.where(is_eos, top_logp / brevity_penalty(alpha, i + 1), NEG_INF)
        all_scores = jnp.concatenate([fin_scores, new_scores], axis=1)
        all_flags = jnp.concatenate([fin_flags, is_eos], axis=1)
        all_seqs = jnp.concatenate([fin_seqs, top_seqs], axis=1)
        fin_scores, best = jax.lax.top_k(jnp.where(all_flags, all_scores, NEG_INF), W)
        fin_flags = jnp.take_along_axis(all_flags, best, axis=1)
        fin_seqs = _gather_beams(all_seqs, best, flat=False)
        return i + 1, new_alive_logp, new_alive_seqs, fin_scores, fin_flags, fin_seqs, cache

    alive_logp = jnp.tile(jnp.array([0.0] + [float(NEG_INF)] * (W - 1)), (B, 1))
    state = (
        jnp.array(0, jnp.int32),
        alive_logp,
        jnp.zeros((B, W, L), jnp.int32),
        jnp.full((B, W), NEG_INF),
        jnp.zeros((B, W), bool),
        jnp.zeros((B, W, L), jnp.int32),
        cache,
    )
    _, alive_logp, alive_seqs, fin_scores, fin_flags, fin_seqs, _ = jax.lax.while_loop(
        cond, body, state
    )
    # Inputs with no finished beam fall back to their alive beams, scored (as in t5x) by
    # their raw log-probability, without the length penalty.
    any_fin = fin_flags.any(axis=1)
    seqs = jnp.where(any_fin[:, None, None], fin_seqs, alive_seqs)
    scores = jnp.where(any_fin[:, None], fin_scores, alive_logp)
    return seqs, scores


def flat_batch_beam_expand(x: jax.Array, num_beams: int) -> jax.Array:
    """[B, ...] -> [B * num_beams, ...], each input repeated for its beams."""
    return jnp.repeat(x, num_beams, axis=0)
