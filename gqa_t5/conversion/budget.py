"""Per-layer G under a KV-cache budget, from each block's conversion error.

Each decoder block (a layer's self- or cross-attention) may keep its own number of
key/value heads; a block with G heads caches 2*G*head_dim values per token. `plan` picks
one G per block minimising the summed relative pooling error subject to a budget on the
total heads (optionally weighted per block, e.g. by target vs input length), exactly by
dynamic programming over (block, heads used).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gqa_t5.conversion import ConversionError, convert_flat

_DECODER = re.compile(r"decoder/layers_(\d+)/(self_attention|encoder_decoder_attention)")


def block_errors(
    flat: Mapping[str, np.ndarray],
    *,
    head_dim: int,
    candidates: Sequence[int],
    method: str = "mean",
) -> dict[str, dict[int, float]]:
    """Relative key + value pooling error of every decoder block at each candidate G."""
    out: dict[str, dict[int, float]] = {}
    for g in candidates:
        _, report = convert_flat(flat, head_dim=head_dim, num_kv_heads=g, method=method)
        for path, r in report.items():
            if "key_error" in r:
                out.setdefault(path, {})[g] = r["key_error"] + r["value_error"]
    return out


def plan(
    errors: Mapping[str, Mapping[int, float]],
    budget_heads: float,
    head_cost: Mapping[str, float] | None = None,
) -> dict[str, int]:
    """G per block minimising sum(errors[block][G]) with sum(head_cost * G) <= budget."""
    blocks = sorted(errors)
    cost = {b: float((head_cost or {}).get(b, 1.0)) for b in blocks}
    # states: total cost used -> (error, choices); costs are sums of a few floats, rounded.
    states: dict[float, tuple[float, tuple[int, ...]]] = {0.0: (0.0, ())}
    for b in blocks:
        nxt: dict[float, tuple[float, tuple[int, ...]]] = {}
        for used, (err, picks) in states.items():
            for g, e in errors[b].items():
                u = round(used + cost[b] * g, 9)
                if u <= budget_heads + 1e-9 and (u not in nxt or err + e < nxt[u][0]):
                    nxt[u] = (err + e, (*picks, g))
        states = nxt
    if not states:
        least = sum(cost[b] * min(errors[b]) for b in blocks)
        raise ConversionError(
            f"KV budget of {budget_heads} heads is below the smallest plan ({least}); raise it"
        )
    _, picks = min(states.values())
    return dict(zip(blocks, picks, strict=True))


def per_layer_kv_heads(chosen: Mapping[str, int], num_decoder_layers: int) -> Any:
    """T5Config.num_kv_heads for a plan: ((self, cross), ...) per decoder layer."""
    pairs = [[None, None] for _ in range(num_decoder_layers)]
    for path, g in chosen.items():
        m = _DECODER.fullmatch(path)
        if not m:
            raise ConversionError(f"{path} is not a decoder attention block")
        pairs[int(m.group(1))][m.group(2) != "self_attention"] = g
    if any(None in p for p in pairs):
        raise ConversionError("the plan must give G for every decoder self and cross block")
    return tuple(tuple(p) for p in pairs)
