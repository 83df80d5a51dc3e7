"""GPU check: the cuDNN attention path (by lengths, or by a mask for packed rows) against XLA.

For random inputs in the layouts training uses (packed encoder self-attention, packed causal
decoder self-attention, packed cross-attention, right-padded rows; G = N and G < N), compares
the output and the gradients with respect to q, k, v and the relative-position bias with the
grouped-einsum path in float32 (masks built as t5x builds them). Rows outside every segment
are excluded (their output is never used). The bf16
XLA path against the same float32 reference gives the error to expect from rounding alone.

  python scripts/check_attention_gpu.py --out benchmarks/raw/check_attention.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from gqa_t5 import layers  # noqa: E402


def packed_ids(rng, T, ms):
    """t5x packed segment ids: 1..m in order from position 0, then padding (0)."""
    out = np.zeros((len(ms), T), np.int32)
    for b, m in enumerate(ms):
        cuts = np.sort(rng.choice(np.arange(1, T - 4), m, replace=False))
        bounds = [0, *cuts[:-1], cuts[-1] + rng.randint(0, 4)]
        for j in range(m):
            out[b, bounds[j] : bounds[j + 1]] = j + 1
    return out


def case(name, B, T, S, N, K, H, causal, packed, with_bias, seed):
    rng = np.random.RandomState(seed)
    q = rng.randn(B, T, N, H).astype(np.float32) * 0.5
    k = rng.randn(B, S, K, H).astype(np.float32) * 0.5
    v = rng.randn(B, S, K, H).astype(np.float32)
    bias = rng.randn(1, N, T, S).astype(np.float32) if with_bias else None
    if packed:
        ms = rng.randint(1, 5, B)
        q_seg = packed_ids(rng, T, ms)
        kv_seg = q_seg if T == S else packed_ids(rng, S, ms)  # same segments, paired by id
        mask = (q_seg[:, :, None] == kv_seg[:, None, :]) & (q_seg[:, :, None] > 0)
        segments = (jnp.asarray(q_seg), jnp.asarray(kv_seg))
        valid = q_seg > 0
    else:
        q_len = rng.randint(T // 2, T + 1, B)
        kv_len = q_len.copy() if T == S else rng.randint(S // 2, S + 1, B)
        # Edge rows: all padding (row 0), one token (row 1) and, for cross-attention, empty
        # inputs under real queries (row 2; compared for finiteness only, as its output
        # is meaningless under either path).
        q_len[0], kv_len[0], q_len[1] = 0, 0, 1
        kv_len[1] = 1 if T == S else kv_len[1]
        if T != S:
            kv_len[2] = 0
        mask = (np.arange(T)[None] < q_len[:, None])[:, :, None] & (
            np.arange(S)[None, None] < kv_len[:, None, None]
        )
        valid = (np.arange(T)[None] < q_len[:, None]) & (kv_len[:, None] > 0)
        segments = (jnp.asarray(q_len, jnp.int32), jnp.asarray(kv_len, jnp.int32))
    if causal:
        mask = mask & (np.arange(T)[:, None] >= np.arange(S)[None, :])[None]
    mask = jnp.asarray(mask[:, None])
    cot = jnp.asarray(rng.randn(B, T, N, H).astype(np.float32) * valid[:, :, None, None])

    def loss(impl, dtype):
        def f(q, k, v, b):
            out = layers.grouped_attention(
                q.astype(dtype),
                k.astype(dtype),
                v.astype(dtype),
                None if b is None else b.astype(dtype),
                mask,
                implementation=impl,
                lengths=None if packed or impl != "cudnn" else segments,
                causal=causal,
            )
            out = out.astype(jnp.float32) * jnp.asarray(valid)[:, :, None, None]
            return jnp.sum(out * cot), out

        argnums = (0, 1, 2, 3) if with_bias else (0, 1, 2)
        g = jax.jit(jax.grad(f, argnums=argnums, has_aux=True))
        grads, out = g(q, k, v, bias)
        return {"out": out, **{n: x for n, x in zip("qkvb", grads, strict=False)}}

    ref = loss("xla", jnp.float32)
    rel = lambda a, b: float(jnp.linalg.norm(a - b) / (jnp.linalg.norm(b) + 1e-30))
    res = {"case": name, "B": B, "T": T, "S": S, "N": N, "K": K, "causal": causal}
    for impl in ("cudnn", "xla"):
        got = loss(impl, jnp.bfloat16)
        res[f"{impl}_bf16_rel_err"] = {n: rel(got[n], ref[n]) for n in ref}
        res[f"{impl}_bf16_finite"] = bool(all(jnp.all(jnp.isfinite(x)) for x in got.values()))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/raw/check_attention.json")
    ap.add_argument("--variants", action="store_true", help="packed-layout conventions only")
    args = ap.parse_args(argv)
    if args.variants:
        res = {"device": jax.devices()[0].device_kind, "variants": packed_variants()}
        pathlib.Path(args.out).write_text(json.dumps(res, indent=1))
        return 0
    cases = [
        ("encoder packed MHA", 4, 256, 256, 8, 8, 64, False, True, True),
        ("encoder packed GQA", 4, 256, 256, 8, 2, 64, False, True, True),
        ("decoder self packed causal", 4, 114, 114, 8, 4, 64, True, True, True),
        ("cross packed", 4, 114, 256, 8, 1, 64, False, True, False),
        ("encoder right-padded", 4, 256, 256, 8, 8, 64, False, False, True),
        ("decoder self right-padded causal", 4, 114, 114, 8, 8, 64, True, False, True),
        ("cross right-padded", 4, 114, 256, 8, 2, 64, False, False, False),
    ]
    results = []
    for i, c in enumerate(cases):
        try:
            r = case(*c, seed=i)
            worst = max(r["cudnn_bf16_rel_err"].values())
            yard = max(r["xla_bf16_rel_err"].values())
            r["ok"] = r["cudnn_bf16_finite"] and worst <= max(3 * yard, 2e-2)
        except Exception as e:  # noqa: BLE001 - record and go on
            r = {"case": c[0], "ok": False, "error": f"{type(e).__name__}: {str(e)[:400]}"}
        results.append(r)
        print(json.dumps(r), flush=True)
    out = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "cases": results}
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".tmp").write_text(json.dumps(out, indent=1))
    path.with_suffix(".tmp").replace(path)
    print("all ok" if all(r["ok"] for r in results) else "SOME CASES FAILED", flush=True)
    return 0 if all(r["ok"] for r in results) else 1


def packed_variants(seed: int = 0) -> list:
    """Which packed-layout conventions cuDNN accepts: offsets and lengths in jax's
    documented form (-1 padding, M = most segments in a row) or ours (M = T, zero-length
    entries), with and without a bias. Forward output only, against the XLA path."""
    from jax._src.cudnn import fused_attention_stablehlo as sdpa

    rng = np.random.RandomState(seed)
    B, T, N, H = 4, 256, 8, 64
    ms = np.array([3, 1, 2, 4])
    seg = packed_ids(rng, T, ms)
    q = jnp.asarray(rng.randn(B, T, N, H) * 0.5, jnp.bfloat16)
    k = jnp.asarray(rng.randn(B, T, N, H) * 0.5, jnp.bfloat16)
    v = jnp.asarray(rng.randn(B, T, N, H), jnp.bfloat16)
    bias = jnp.asarray(rng.randn(1, N, T, T), jnp.bfloat16)
    mask = jnp.asarray(((seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] > 0))[:, None])
    valid = jnp.asarray(seg > 0)[:, :, None, None]
    M = int(ms.max())
    lens_doc = -np.ones((B, M), np.int32)
    offs_doc = -np.ones((B, M + 1), np.int32)
    for b in range(B):
        for j in range(ms[b]):
            idx = np.nonzero(seg[b] == j + 1)[0]
            lens_doc[b, j], offs_doc[b, j] = len(idx), idx[0]
    lens_end = lens_doc.copy()
    offs_end = offs_doc.copy()
    for b in range(B):
        offs_end[b, ms[b]] = offs_doc[b, ms[b] - 1] + lens_doc[b, ms[b] - 1]
    ours_len = np.stack([np.bincount(r, minlength=T + 1)[1:] for r in seg]).astype(np.int32)
    ours_off = np.concatenate([np.zeros((B, 1), np.int32), np.cumsum(ours_len, 1)], 1)
    variants = {
        "doc (-1 pad, starts only)": (lens_doc, offs_doc),
        "doc + end offset": (lens_end, offs_end),
        "ours (M=T, zero-length)": (np.asarray(ours_len), np.asarray(ours_off)),
    }
    out = []
    for with_bias in (False, True):
        b = bias if with_bias else None
        ref = layers.grouped_attention(
            q.astype(jnp.float32),
            k.astype(jnp.float32),
            v.astype(jnp.float32),
            None if b is None else b.astype(jnp.float32),
            mask,
            implementation="xla",
        )
        for name, (ln, of) in variants.items():
            try:
                got = sdpa.dot_product_attention(
                    q,
                    k,
                    v,
                    bias=b,
                    q_seqlen=jnp.asarray(ln),
                    kv_seqlen=jnp.asarray(ln),
                    q_offsets=jnp.asarray(of),
                    kv_offsets=jnp.asarray(of),
                    scale=1.0,
                    mask_type=sdpa.MaskType.PADDING,
                )
                d = (got.astype(jnp.float32) - ref) * valid
                err = float(jnp.linalg.norm(d) / jnp.linalg.norm(ref * valid))
                rec = {"variant": name, "bias": with_bias, "rel_err": err}
            except Exception as e:  # noqa: BLE001
                rec = {"variant": name, "bias": with_bias, "error": str(e)[:300]}
            print(json.dumps(rec), flush=True)
            out.append(rec)
    return out


if __name__ == "__main__":
    sys.exit(main())
