"""Split-K ("flash-decoding") grouped-query attention for one decode step.

One query token per batch row against a [B, K, S, H] cache. Each program of the grid
(B, K, splits) reads one key/value head's slice of S once, for all G query heads of its
group (a [G, H] x [H, block] product per block of keys), keeps a float32 running max,
denominator and output, and writes them; a small XLA step (or, with TUNING combine
"pallas", a small kernel) combines the splits. With one split the kernel writes the
normalised rows itself.

Semantics are those of `layers.cached_decode_attention` (the XLA reference): logits in
float32, plus an optional per-head bias row (T5's relative position bias in
self-attention), plus -1e10 where the key mask is not > 0, softmax, weights cast to the
cache dtype, weighted sum. A row whose keys are all masked averages every key, as the
reference does, and stays finite. Blocks of keys after the block holding a row's last
unmasked key are never read (their keys would get weight exactly 0): self-attention
reads only the blocks up to the step's position.

      B batch  N query heads  K key/value heads  G query heads per K head  S keys  H head
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

NEG_INF = -1e10  # as layers.NEG_INF: the reference's additive mask
IMPLEMENTATIONS = ("auto", "xla", "pallas", "interpret")
# What "auto" becomes off-GPU. Tests set it to "interpret" to run the Pallas kernel
# through the model on CPU.
OFF_GPU = "xla"
# Grid order of the key/value-head axis. Interpret mode runs programs one after another,
# so a later program would hide a neighbour's store that is too wide; tests also run it
# "reverse" to catch that (on the GPU programs run concurrently and it would be a race).
GROUP_ORDER = "forward"
# Launch parameters for the GPU kernel; `set_tuning` changes them (the benchmark's
# --kernel_params). num_splits None: chosen by `_plan`; block_k, num_warps, num_stages None:
# by the rows a program holds (`launch`, from LAUNCH_BY_ROWS).
# combine: how split partials are merged, "xla" (a few small XLA fusions) or "pallas" (one
# small kernel that also writes the rows in place; measured slower on the H200: MQA-Large
# 1.44 against 1.31 ms/step, entry 17).
TUNING: dict[str, Any] = {
    "block_k": None,
    "num_splits": None,
    "num_warps": None,
    "num_stages": None,
    "combine": "xla",
}
# (fewest query rows a program holds, launch), largest first: the first entry whose row
# count the program reaches. Measured on the H200, side by side in one call each
# (benchmarks/NOTES.md, entries 17-19). 16 rows: 32 keys a block, 2 warps, 3 stages is the
# launch sweep's best at GQA-8-XXL's shape (51.0 against 62.1 us a call for 64 / 4 / 2;
# 4.46-4.48 against 4.62 ms a decode step in session 6, 4.58 against 4.68 in session 8) and
# GQA-4-Large's (1.66 against 1.70 ms); at GQA-4-XXL the two tie (3.99 and 4.04 against
# 4.06 and 4.06). 32 rows (GQA-2-XXL): 64 / 4 / 2 is faster, 3.86 and 3.87 against 3.93
# and 3.92 ms, alternating in one call. 64 rows (MQA-XXL): 64 / 4 / 2, 3.90 against 4.12
# (session 7; 4.03 for 32 / 4 / 3) and 3.99 against 4.16 (session 8).
# The opt-in Pallas combine takes the same launch as its kernel (measured at 16 rows only).
LAUNCH_BY_ROWS: tuple[tuple[int, dict[str, int]], ...] = (
    (32, {"block_k": 64, "num_warps": 4, "num_stages": 2}),
    (0, {"block_k": 32, "num_warps": 2, "num_stages": 3}),
)
assert [least for least, _ in LAUNCH_BY_ROWS] == sorted(
    (least for least, _ in LAUNCH_BY_ROWS), reverse=True
), "LAUNCH_BY_ROWS must list the largest row count first"


def launch(rows: int) -> dict[str, int]:
    """block_k, num_warps and num_stages for a program of `rows` query rows (the group
    padded to a power of two >= 16): TUNING's where set, else LAUNCH_BY_ROWS's."""
    default = next(v for least, v in LAUNCH_BY_ROWS if rows >= least)
    return {k: TUNING[k] if TUNING[k] is not None else v for k, v in default.items()}


def launch_for(num_heads: int, num_kv_heads: int) -> dict[str, int]:
    """The launch a model's decode attention gets (its program's rows from N and K)."""
    return launch(_pow2_at_least(num_heads // num_kv_heads, 16))


def set_tuning(**params: Any) -> None:
    """Override the GPU launch parameters (block_k, num_splits, num_warps, num_stages) and
    the split combine ("xla" or "pallas")."""
    unknown = set(params) - set(TUNING)
    if unknown:
        raise ValueError(
            f"unknown decode-kernel parameters {sorted(unknown)}; use {sorted(TUNING)}"
        )
    if params.get("combine", "xla") not in ("xla", "pallas"):
        raise ValueError(f"combine={params['combine']!r}; use 'xla' or 'pallas'")
    TUNING.update(params)


def resolve(implementation: str) -> str:
    """'auto' is the Pallas kernel on GPU and OFF_GPU (the XLA path) elsewhere."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"decode attention implementation {implementation!r}; use one of {IMPLEMENTATIONS}"
        )
    if implementation != "auto":
        return implementation
    return "pallas" if jax.default_backend() == "gpu" else OFF_GPU


def grouped_decode_attention(
    q_BNH: jax.Array,
    k_BKSH: jax.Array,
    v_BKSH: jax.Array,
    *,
    key_mask: jax.Array | None = None,
    bias_NS: jax.Array | None = None,
    implementation: str = "auto",
) -> jax.Array:
    """Attention of one query token per row over a K-head cache; returns [B, N, H].

    Args:
      key_mask: [B or 1, S], nonzero = attend (encoder padding; causal positions).
      bias_NS: [N, S] additive float bias shared by every row (relative positions).
      implementation: "auto", "xla", "pallas" (GPU) or "interpret".
    """
    B, N, H = q_BNH.shape
    _, K, S, _ = k_BKSH.shape
    if N % K or k_BKSH.shape != (B, K, S, H) or v_BKSH.shape != k_BKSH.shape:
        raise ValueError(
            f"decode attention shapes: q {q_BNH.shape}, k {k_BKSH.shape}, v {v_BKSH.shape}; "
            "need q [B, N, H] and k, v [B, K, S, H] with K dividing N"
        )
    if key_mask is not None and (key_mask.ndim != 2 or key_mask.shape[1] != S):
        raise ValueError(f"key_mask must be [B or 1, S={S}], got {key_mask.shape}")
    if bias_NS is not None and bias_NS.shape != (N, S):
        raise ValueError(f"bias_NS must be [N={N}, S={S}], got {bias_NS.shape}")
    impl = resolve(implementation)
    if impl == "xla":
        return reference(q_BNH, k_BKSH, v_BKSH, key_mask, bias_NS)
    return _pallas(q_BNH, k_BKSH, v_BKSH, key_mask, bias_NS, impl == "interpret")


def decode_step(q_BNH, k_BKSH, v_BKSH, bias, mask) -> jax.Array | None:
    """The kernel ("auto") for a decode step's [1, N, 1, S] bias and [B or 1, 1, 1, S]
    mask (layers' shapes), or None where the kernel does not take them: a per-head mask,
    a per-row bias, or on GPU a shape Triton cannot tile; the caller then runs XLA.
    """
    B, S = k_BKSH.shape[0], k_BKSH.shape[2]
    if mask is not None and (mask.ndim != 4 or mask.shape[1:] != (1, 1, S)):
        return None
    if mask is not None and mask.shape[0] not in (1, B):
        return None
    if bias is not None and (bias.ndim != 4 or bias.shape[0] != 1 or bias.shape[2:] != (1, S)):
        return None
    if resolve("auto") == "pallas" and not supported_on_gpu(q_BNH, k_BKSH):
        return None
    return grouped_decode_attention(
        q_BNH,
        k_BKSH,
        v_BKSH,
        key_mask=None if mask is None else mask[:, 0, 0, :],
        bias_NS=None if bias is None else bias[0, :, 0, :],
    )


def reference(q_BNH, k_BKSH, v_BKSH, key_mask=None, bias_NS=None) -> jax.Array:
    """The XLA path the model uses without the kernel (layers.cached_decode_attention)."""
    from gqa_t5 import layers  # a module-level import would be circular

    mask = None if key_mask is None else key_mask[:, None, None, :]
    bias = None if bias_NS is None else bias_NS[None, :, None, :]
    return layers.cached_decode_attention(q_BNH, k_BKSH, v_BKSH, bias, mask)


def supported_on_gpu(q_BNH: jax.Array, k_BKSH: jax.Array) -> bool:
    """Shapes the Triton kernel takes: power-of-two head dim and S a multiple of 16."""
    H, S = q_BNH.shape[-1], k_BKSH.shape[2]
    return H >= 16 and H & (H - 1) == 0 and S % 16 == 0


def _pow2_at_least(n: int, least: int) -> int:
    p = least
    while p < n:
        p *= 2
    return p


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _squeezed():
    """A block dimension the kernel does not see (None in older Pallas)."""
    from jax.experimental import pallas as pl

    return pl.Squeezed() if hasattr(pl, "Squeezed") else None


def _head_of(k, K: int):
    """The key/value head grid index k serves (GROUP_ORDER reverses it in tests)."""
    return K - 1 - k if GROUP_ORDER == "reverse" else k


def _program_group(reverse_groups: bool):
    """Inside a kernel: the key/value head of this program (grid axis 1)."""
    from jax.experimental import pallas as pl

    group = pl.program_id(1)
    return pl.num_programs(1) - 1 - group if reverse_groups else group


def _q_layout(N: int, G: int) -> str:
    """How a program gets its group's [Gp, H] queries, Gp = max(G, 16) rows for the dot.

    "block": G >= 16, a power of two: the group's rows of q as they are.
    "select": G < 16 and N a power of two >= 16: every query head of the row is read
      (N x H, a few KB) and a one-hot [16, N] product picks the group's G rows, zeros
      below; outputs go back the same way, a masked store of the group's rows. No
      padded copy of q and no slice of the output outside the kernel.
    "pad": otherwise (small N): q padded to Gp rows by XLA, the output sliced after.
    """
    if G >= 16 and _is_pow2(G):
        return "block"
    if _is_pow2(N) and N >= 16:
        return "select"
    return "pad"


def _plan(B: int, K: int, S: int, Gp: int, interpret: bool) -> tuple[int, int]:
    """(block_k, num_splits): blocks that divide S, splits that fill the GPU.

    Enough splits for ~4 programs per multiprocessor (132 on an H100 / H200), but no
    more than keep the float32 partial outputs (splits * Gp * H * 4 bytes per row and
    head) under an eighth of the K/V bytes they summarize (S * H * 4). One split (B * K
    >= 528, e.g. MHA-XXL at batch 32) needs no partials: each program normalises and
    writes its final rows. Measured on the H200 (benchmarks/NOTES.md, entry 16): one
    split for GQA-8-XXL's 256 programs made the kernel 58 us a call against 44 us with
    four splits and their combine step, so one split is not forced sooner.
    """
    block_k = launch(Gp)["block_k"]
    while S % block_k and block_k > (1 if interpret else 16):
        block_k //= 2
    if S % block_k:
        raise ValueError(f"decode kernel needs S={S} divisible by a block of >= 16 keys")
    blocks = S // block_k
    fill = _pow2_at_least(-(-4 * 132 // (B * K)), 1)
    splits = TUNING["num_splits"] or min(fill, max(1, S // (8 * Gp)))
    splits = max(1, min(splits, blocks))
    while blocks % splits:
        splits -= 1
    return block_k, splits


def _pallas(q_BNH, k_BKSH, v_BKSH, key_mask, bias_NS, interpret: bool) -> jax.Array:
    from jax.experimental import pallas as pl

    B, N, H = q_BNH.shape
    _, K, S, _ = k_BKSH.shape
    G = N // K
    layout = _q_layout(N, G)
    Gp = _pow2_at_least(G, 16)  # the matrix units need >= 16 rows; extra rows are 0
    block_k, splits = _plan(B, K, S, Gp, interpret)
    split_len = S // splits
    direct = splits == 1 and layout != "pad"  # the kernel writes [B, N, H] itself
    q = q_BNH.astype(k_BKSH.dtype)
    if key_mask is None:
        key_mask = jnp.ones((1, S), jnp.int8)
    # Keys are attended where the mask is > 0, as in the reference (layers.mask_to_bias).
    # These XLA steps before the kernel run once a step, not once a layer: every layer
    # passes the same mask and XLA's CSE merges them (checked on CPU: a 6-layer decoder's
    # 12 kernel calls leave 2 such reductions after optimisation).
    key_mask = (key_mask > 0).astype(jnp.int8)
    # Keys a row must visit: up to its last unmasked key; all of them when none is
    # unmasked (the reference then averages every key).
    last = jnp.max(jnp.where(key_mask != 0, jnp.arange(1, S + 1), 0), axis=1)
    kv_len = jnp.broadcast_to(jnp.where(last == 0, S, last), (B,)).astype(jnp.int32)
    Bm = key_mask.shape[0]
    sq = _squeezed()
    reverse = GROUP_ORDER == "reverse"

    def g(k):
        return _head_of(k, K)

    if layout == "block":
        q_spec = pl.BlockSpec((sq, G, H), lambda b, k, s: (b, g(k), 0))
    elif layout == "select":
        q_spec = pl.BlockSpec((sq, N, H), lambda b, k, s: (b, 0, 0))
    else:
        q = jnp.pad(q.reshape(B, K, G, H), ((0, 0), (0, 0), (0, Gp - G), (0, 0)))
        q = q.reshape(B, K * Gp, H)
        q_spec = pl.BlockSpec((sq, Gp, H), lambda b, k, s: (b, g(k), 0))
    in_specs = [
        pl.BlockSpec((1,), lambda b, k, s: (b,)),  # as paged_attention reads lengths
        q_spec,
        pl.BlockSpec((sq, sq, split_len, H), lambda b, k, s: (b, g(k), s, 0)),
        pl.BlockSpec((sq, sq, split_len, H), lambda b, k, s: (b, g(k), s, 0)),
        pl.BlockSpec((sq, split_len), lambda b, k, s: (b if Bm > 1 else 0, s)),
    ]
    args = [kv_len, q, k_BKSH, v_BKSH, key_mask]
    if bias_NS is not None:
        bias = bias_NS.astype(jnp.float32).reshape(K, G, S)
        if Gp != G:  # zero rows; XLA fuses the pad into the bias computation
            bias = jnp.pad(bias, ((0, 0), (0, Gp - G), (0, 0)))
        args.append(bias)
        in_specs.append(pl.BlockSpec((sq, Gp, split_len), lambda b, k, s: (g(k), 0, s)))
    if direct:
        rows = G if layout == "block" else N
        out_shape = [jax.ShapeDtypeStruct((B, N, H), q_BNH.dtype)]
        out_specs = [
            pl.BlockSpec((sq, rows, H), lambda b, k, s: (b, g(k) if layout == "block" else 0, 0))
        ]
    else:
        out_shape = [
            jax.ShapeDtypeStruct((B, K, splits, Gp, H), jnp.float32),
            jax.ShapeDtypeStruct((B, K, splits, Gp), jnp.float32),
            jax.ShapeDtypeStruct((B, K, splits, Gp), jnp.float32),
        ]
        out_specs = [
            pl.BlockSpec((sq, sq, sq, Gp, H), lambda b, k, s: (b, g(k), s, 0, 0)),
            pl.BlockSpec((sq, sq, sq, Gp), lambda b, k, s: (b, g(k), s, 0)),
            pl.BlockSpec((sq, sq, sq, Gp), lambda b, k, s: (b, g(k), s, 0)),
        ]
    kernel = functools.partial(
        _kernel,
        block_k=block_k,
        split_len=split_len,
        has_bias=bias_NS is not None,
        G=G,
        Gp=Gp,
        select=layout == "select",
        direct=direct,
        reverse_groups=reverse,
    )
    outs = pl.pallas_call(
        kernel,
        grid=(B, K, splits),
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=None if interpret else _triton_params(Gp),
        interpret=interpret,
        name="gqa_decode_attention",
    )(*args)
    if direct:
        return outs[0]
    o, m, den = outs
    if TUNING["combine"] == "pallas" and layout != "pad" and _is_pow2(splits):
        return _combine_pallas(o, m, den, N, G, layout, q_BNH.dtype, reverse, interpret)
    # Combine the splits (float32). Splits past a row's keys have a denominator of 0 and m at the
    # float32 minimum, so they weigh exp(-huge) = 0; the first split always has keys.
    m_all = jnp.max(m, axis=2, keepdims=True)
    w = jnp.exp(m - m_all)
    denom = jnp.sum(den * w, axis=2)
    out = jnp.sum(o * w[..., None], axis=2) / denom[..., None]
    return out[:, :, :G].reshape(B, N, H).astype(q_BNH.dtype)


def _combine_pallas(o, m, den, N, G, layout, dtype, reverse, interpret) -> jax.Array:
    """The split partials -> [B, N, H] in one small kernel per (row, key/value head)."""
    from jax.experimental import pallas as pl

    B, K, splits, Gp, H = o.shape
    sq = _squeezed()

    def g(k):
        return _head_of(k, K)

    rows = G if layout == "block" else N
    return pl.pallas_call(
        functools.partial(_combine_kernel, G=G, select=layout == "select", reverse_groups=reverse),
        grid=(B, K),
        in_specs=[
            pl.BlockSpec((sq, sq, splits, Gp, H), lambda b, k: (b, g(k), 0, 0, 0)),
            pl.BlockSpec((sq, sq, splits, Gp), lambda b, k: (b, g(k), 0, 0)),
            pl.BlockSpec((sq, sq, splits, Gp), lambda b, k: (b, g(k), 0, 0)),
        ],
        out_specs=pl.BlockSpec(
            (sq, rows, H), lambda b, k: (b, g(k) if layout == "block" else 0, 0)
        ),
        out_shape=jax.ShapeDtypeStruct((B, N, H), dtype),
        compiler_params=None if interpret else _triton_params(Gp),
        interpret=interpret,
        name="gqa_decode_combine",
    )(o, m, den)


def _combine_kernel(o_ref, m_ref, l_ref, out_ref, *, G, select, reverse_groups):
    """As the XLA combine: weights exp(m - max m); splits without keys weigh 0. One split's
    [Gp, H] partial at a time (all of them at once would be up to 16K float32 values a
    program: register spills)."""
    group = _program_group(reverse_groups)
    splits, Gp, H = o_ref.shape
    m_max = jnp.max(m_ref[...], axis=0)  # [Gp]

    def add(s, carry):
        acc, den = carry
        w = jnp.exp(m_ref[s, :] - m_max)
        return acc + o_ref[s, :, :] * w[:, None], den + l_ref[s, :] * w

    zeros = (jnp.zeros((Gp, H), jnp.float32), jnp.zeros((Gp,), jnp.float32))
    acc, den = lax.fori_loop(0, splits, add, zeros)
    _store_group(out_ref, (acc / den[:, None]).astype(out_ref.dtype), group * G, G, select)


def _store_group(o_ref, out, first, G, select) -> None:
    """Write a group's [Gp, H] rows: the whole block, or (select) rows first..first+G-1 of
    the row's [N, H] block through a one-hot [N, Gp] product and a masked store."""
    if not select:
        o_ref[...] = out
        return
    from jax.experimental.pallas import triton as plgpu

    N, H = o_ref.shape
    place = _one_hot((N, out.shape[0]), lambda r, c: r == first + c, out.dtype)  # rows
    # past first + G (from out's rows past G) are outside the store mask
    full = _exact_dot(place, out).astype(o_ref.dtype)
    row = lax.broadcasted_iota(jnp.int32, (N, H), 0)
    plgpu.store(o_ref, full, mask=(row >= first) & (row < first + G))


def _triton_params(rows: int):
    from jax.experimental.pallas import triton as plgpu

    cls = getattr(plgpu, "CompilerParams", None) or plgpu.TritonCompilerParams
    p = launch(rows)
    return cls(num_warps=p["num_warps"], num_stages=p["num_stages"])


def _one_hot(shape, row_of, dtype):
    """[rows, cols] matrix with 1 where row_of(rows, cols) holds (an iota comparison)."""
    r = lax.broadcasted_iota(jnp.int32, shape, 0)
    c = lax.broadcasted_iota(jnp.int32, shape, 1)
    return row_of(r, c).astype(dtype)


def _exact_dot(a, b):
    """a [m, n] . b [n, p] with float32 accumulation; IEEE float32 inputs stay exact."""
    precision = (lax.Precision.HIGHEST,) * 2 if a.dtype == jnp.float32 else None
    return lax.dot_general(
        a, b, (((1,), (0,)), ((), ())), precision=precision, preferred_element_type=jnp.float32
    )


def _kernel(
    len_ref,
    q_ref,
    k_ref,
    v_ref,
    mask_ref,
    *refs,
    block_k,
    split_len,
    has_bias,
    G,
    Gp,
    select,
    direct,
    reverse_groups,
):
    """One (row, key/value head, split): online softmax over its blocks of keys."""
    from jax.experimental import pallas as pl

    bias_ref = refs[0] if has_bias else None
    first = _program_group(reverse_groups) * G  # the group's first query head
    start = pl.program_id(2) * split_len
    n_keys = jnp.minimum(jnp.maximum(len_ref[0] - start, 0), split_len)
    n_blocks = pl.cdiv(n_keys, block_k)
    q = q_ref[...]
    if select:  # [Gp, N] one-hot . q [N, H]: the group's G rows first (rows past G are
        # the next heads' queries or zeros; their outputs are never stored)
        pick = _one_hot((Gp, q.shape[0]), lambda r, c: c == first + r, q.dtype)
        q = _exact_dot(pick, q).astype(q.dtype)
    H = q.shape[1]
    dims = (((1,), (1,)), ((), ()))  # q [Gp, H] . k [block, H] -> [Gp, block]

    def body(i, carry):
        o, m, den = carry
        keys = pl.ds(pl.multiple_of(i * block_k, block_k), block_k)
        k = k_ref[keys, :]
        s = lax.dot_general(q, k, dims, preferred_element_type=jnp.float32)
        if has_bias:
            s = s + bias_ref[:, keys]
        s = s + jnp.where(mask_ref[keys] != 0, 0.0, NEG_INF).astype(jnp.float32)[None, :]
        m_new = jnp.maximum(m, jnp.max(s, axis=1))
        correction = jnp.exp(m - m_new)
        p = jnp.exp(s - m_new[:, None])
        den = correction * den + jnp.sum(p, axis=1)
        v = v_ref[keys, :]
        pv = lax.dot_general(
            p.astype(v.dtype), v, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32
        )
        return correction[:, None] * o + pv, m_new, den

    init = (
        jnp.zeros((Gp, H), jnp.float32),
        jnp.full((Gp,), jnp.finfo(jnp.float32).min, jnp.float32),
        jnp.zeros((Gp,), jnp.float32),
    )
    o, m, den = lax.fori_loop(0, n_blocks, body, init)
    if not direct:
        o_ref, m_ref, l_ref = refs[-3:]
        o_ref[...] = o
        m_ref[...] = m
        l_ref[...] = den
        return
    (o_ref,) = refs[-1:]
    out = (o / den[:, None]).astype(o_ref.dtype)  # one split: it has every key, den > 0
    _store_group(o_ref, out, first, G, select)
