"""MHA -> GQA conversion methods beyond the paper's mean: pure functions, params in/out.

    weighted          least-squares pooling: values weighted by M_i = W_o^i W_o^i^T, keys by
                      the queries' Gram matrix C_i = W_q^i^T Sigma W_q^i (Sigma = I, or the
                      query inputs' covariance from calibration data)
    aligned           rotate each head of a group into a common frame by generalised
                      orthogonal Procrustes on the kernels (output-preserving), then mean
    aligned_weighted  the same rotations, then weighted pooling
    mean, first       the paper's methods, here so they combine with grouping

and `grouping="similarity"`: permute kv heads (with their query heads and output rows) so
that each group holds the heads whose pooling error is smallest.

NOTE: T5's relative position bias is one [heads, buckets] table per stack, shared by every
layer's self-attention. A self-attention permutation is therefore chosen once per stack
(minimising the summed error over all its layers), applied to every layer of the stack and
to the stack's bias rows. Cross-attention has no bias, so each layer gets its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gqa_t5.conversion import grouping as grouping_lib
from gqa_t5.conversion.heads import AttnHeads, permute, permute_bias_rows, rotate
from gqa_t5.conversion.pooling import generalised_procrustes, pooling_error, weighted_pool

METHODS = ("mean", "first", "weighted", "aligned", "aligned_weighted")
GROUPINGS = ("contiguous", "similarity")
BLOCKS = {
    "decoder_self": ("decoder", "self_attention"),
    "cross": ("decoder", "encoder_decoder_attention"),
    "encoder": ("encoder", "attention"),
}
_LAYER = re.compile(r"(encoder|decoder)/layers_(\d+)/")


class ConversionError(ValueError):
    """Bad conversion arguments (one line naming the problem and the fix)."""


def _pool(heads: AttnHeads, method: str, sigma: np.ndarray | None) -> tuple[AttnHeads, dict]:
    """Pool the kv heads of `heads` into one (a single group); errors before and after."""
    C, M = heads.key_weights(sigma), heads.value_weights()
    if method in ("aligned", "aligned_weighted"):
        R = generalised_procrustes(np.moveaxis(heads.k, 1, 0))
        S = generalised_procrustes(np.moveaxis(heads.v, 1, 0))
        heads = rotate(heads, R, S)
        C, M = heads.key_weights(sigma), heads.value_weights()
    k_PDH, v_PDH = np.moveaxis(heads.k, 1, 0), np.moveaxis(heads.v, 1, 0)
    if method in ("weighted", "aligned_weighted"):
        k_DH, v_DH = weighted_pool(k_PDH, C), weighted_pool(v_PDH, M)
    elif method == "first":
        k_DH, v_DH = k_PDH[0], v_PDH[0]
    else:
        k_DH, v_DH = k_PDH.mean(0), v_PDH.mean(0)
    D, P, Q, H = heads.q.shape
    pooled = AttnHeads(
        q=heads.q.reshape(D, 1, P * Q, H),
        k=k_DH[:, None],
        v=v_DH[:, None],
        o=heads.o.reshape(1, P * Q, H, -1),
    )
    err = {
        "key": pooling_error(k_PDH, k_DH, C),
        "value": pooling_error(v_PDH, v_DH, M),
        "key_energy": pooling_error(k_PDH, np.zeros_like(k_DH), C),
        "value_energy": pooling_error(v_PDH, np.zeros_like(v_DH), M),
    }
    return pooled, err


def _subset(heads: AttnHeads, idx: Sequence[int]) -> AttnHeads:
    return permute(heads, np.asarray(idx))


def relative_error(heads: AttnHeads, idx: Sequence[int], method: str, sigma=None) -> float:
    """Key + value pooling error of one group, each relative to its energy (unitless)."""
    _, e = _pool(_subset(heads, idx), method, sigma)
    return e["key"] / max(e["key_energy"], 1e-30) + e["value"] / max(e["value_energy"], 1e-30)


def pool_heads(
    heads: AttnHeads,
    groups: Sequence[Sequence[int]],
    method: str,
    sigma: np.ndarray | None = None,
) -> tuple[AttnHeads, dict]:
    """Permute kv heads into `groups` (in order) and pool each; the block has G kv heads."""
    parts, errs = [], []
    for g in groups:
        pooled, e = _pool(_subset(heads, g), method, sigma)
        parts.append(pooled)
        errs.append(e)
    out = AttnHeads(
        q=np.concatenate([p.q for p in parts], 1),
        k=np.concatenate([p.k for p in parts], 1),
        v=np.concatenate([p.v for p in parts], 1),
        o=np.concatenate([p.o for p in parts], 0),
    )
    total = {k: float(sum(e[k] for e in errs)) for k in errs[0]}
    report = {
        "groups": [list(map(int, g)) for g in groups],
        "key_error": total["key"] / max(total["key_energy"], 1e-30),
        "value_error": total["value"] / max(total["value_energy"], 1e-30),
    }
    return out, report


def _check(num_in: int, num_kv_heads: int, method: str, grouping: str) -> None:
    if method not in METHODS:
        raise ConversionError(f"unknown method {method!r}; use one of {METHODS}")
    if grouping not in GROUPINGS:
        raise ConversionError(f"unknown grouping {grouping!r}; use one of {GROUPINGS}")
    if num_kv_heads < 1 or num_in % num_kv_heads:
        raise ConversionError(
            f"{num_in} key/value heads cannot be split into num_kv_heads={num_kv_heads} equal "
            f"groups; choose a divisor of {num_in}"
        )


def _layers(flat: Mapping[str, Any], stack: str, module: str) -> list[str]:
    prefixes = {m.group(0) for n in flat if (m := _LAYER.match(n)) and m.group(1) == stack}
    prefixes = {p for p in prefixes if f"{p}{module}/key/kernel" in flat}
    return sorted((p + module for p in prefixes), key=lambda p: int(p.split("_")[1].split("/")[0]))


def layer_kv_heads(num_kv_heads: Any, layer: int, block: str) -> int:
    """G of one block: `num_kv_heads` is an int or T5Config's per-decoder-layer form."""
    if isinstance(num_kv_heads, int | np.integer):
        return int(num_kv_heads)
    if block == "encoder":
        raise ConversionError("grouping the encoder needs one int num_kv_heads, not per layer")
    entry = num_kv_heads[layer]
    if isinstance(entry, int | np.integer):
        return int(entry)
    return int(entry[0 if block == "decoder_self" else 1])


def convert_flat(
    flat: Mapping[str, np.ndarray],
    *,
    head_dim: int,
    num_kv_heads: Any,
    method: str = "weighted",
    grouping: str = "contiguous",
    blocks: Sequence[str] = ("decoder_self", "cross"),
    sigmas: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Convert a flat params dict ('decoder/layers_0/self_attention/key/kernel' -> array).

    Returns (new flat params, report with each block's groups and relative errors).
    `num_kv_heads` is one G or one entry per decoder layer (an int, or a (self, cross) pair).
    `sigmas` maps a block path ('decoder/layers_0/self_attention') to the covariance [D, D]
    of its query inputs; missing blocks use the identity (data-free).
    """
    out = dict(flat)
    report: dict[str, Any] = {}
    for block in blocks:
        _convert_block(flat, out, report, block, head_dim, num_kv_heads, method, grouping, sigmas)
    return out, report


def _convert_block(flat, out, report, block, head_dim, num_kv_heads, method, grouping, sigmas):
    """One block type (e.g. every layer's cross-attention), written into `out`/`report`."""
    stack, module = BLOCKS[block]
    paths = _layers(flat, stack, module)
    if not paths:
        return
    heads = {
        p: AttnHeads.from_kernels(*(flat[f"{p}/{n}/kernel"] for n in _QKVO), head_dim)
        for p in paths
    }
    sig = {p: (sigmas or {}).get(p) for p in paths}
    K = heads[paths[0]].num_kv_heads
    G = {p: layer_kv_heads(num_kv_heads, int(p.split("/")[1][7:]), block) for p in paths}
    for p in paths:
        _check(heads[p].num_kv_heads, G[p], method, grouping)

    def cost(group: tuple[int, ...], layers: Sequence[str]) -> float:
        return sum(relative_error(heads[p], group, method, sig[p]) for p in layers)

    groups = {p: grouping_lib.contiguous(heads[p].num_kv_heads, G[p]) for p in paths}
    if grouping == "similarity" and block != "cross":
        # Self-attention shares the stack's bias table: one permutation for all layers.
        if len(set(G.values())) > 1 or len({h.num_kv_heads for h in heads.values()}) > 1:
            raise ConversionError(
                "--grouping similarity permutes self-attention heads once per stack (shared "
                "relative position bias), so it needs one G for every self-attention layer"
            )
        shared = grouping_lib.best_partition(K, G[paths[0]], lambda g: cost(g, paths))
        groups = dict.fromkeys(paths, shared)
        bias = f"{stack}/relpos_bias/rel_embedding"
        perm = np.concatenate(shared)
        out[bias] = permute_bias_rows(np.asarray(flat[bias]), perm, K).astype(np.float32)
        report[f"{stack}/relpos_bias"] = {"permutation": perm.tolist()}
    elif grouping == "similarity":
        for p in paths:
            K_p = heads[p].num_kv_heads
            groups[p] = grouping_lib.best_partition(K_p, G[p], lambda g, p=p: cost(g, [p]))
    for p in paths:
        pooled, report[p] = pool_heads(heads[p], groups[p], method, sig[p])
        for n, a in pooled.kernels().items():
            out[f"{p}/{n}/kernel"] = a


_QKVO = ("query", "key", "value", "out")
