"""The decode-attention kernel on the GPU: ceilings, correctness, bandwidth, a small sweep.

Each part runs in its own try/except and writes its JSON (`--out`, rewritten after every
part); a failed part records its error and the rest still run. Parts:
  ceilings  copy / read bandwidth and bf16 matmul rate (benchmark_decode.measure_ceilings)
  check     Pallas vs the XLA path vs a float32 reference, fresh random inputs, padded
            and empty rows, for GQA-8 / MQA / MHA-XXL and MQA-Large cross-attention and
            GQA-8-XXL self-attention with a bias row
  speed     GB/s of K/V read per call for the kernel and the XLA path, K/V sets rotated
            so that nothing stays in L2; a few launch configurations at the GQA-8 shape
Then prints a table and writes the sweep's best configuration at the GQA-8-XXL shape to
`--best` (a record: the kernel's defaults go by the rows a program holds, and one shape's
best forced on every shape undoes that).

  python scripts/gpu_kernel_check.py --out $OUT/kernel.json --best $OUT/best.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from gqa_t5.kernels import decode_attention as da  # noqa: E402
from scripts.benchmark_decode import device_loop_time, measure_ceilings  # noqa: E402

# name: (B, N, K, S, H, self-attention with a bias row and a causal position)
SHAPES = {
    "gqa8_xxl_cross": (32, 64, 8, 2048, 64, False),
    "mqa_xxl_cross": (32, 64, 1, 2048, 64, False),
    "mha_xxl_cross": (32, 64, 64, 2048, 64, False),
    "mqa_large_cross": (32, 16, 1, 2048, 64, False),
    "gqa8_xxl_self": (32, 64, 8, 512, 64, True),
}
SWEEP = [  # launch configurations at the GQA-8-XXL cross shape; splits "auto" unless named
    {"block_k": 64, "num_warps": 4, "num_stages": 2},
    {"block_k": 128, "num_warps": 4, "num_stages": 2},
    {"block_k": 64, "num_warps": 4, "num_stages": 3},
    {"block_k": 128, "num_warps": 4, "num_stages": 3},
    {"block_k": 128, "num_warps": 8, "num_stages": 3},
    {"block_k": 32, "num_warps": 2, "num_stages": 3},
    {"block_k": 64, "num_warps": 4, "num_stages": 2, "num_splits": 4},  # session 3's plan
    {"block_k": 64, "num_warps": 4, "num_stages": 2, "num_splits": 2},
]
DEFAULT = dict(da.TUNING)
KERNEL = "pallas"  # "interpret" under --cpu_dry_run


# Checked in float32 too: the one-hot query pick and output placement must stay exact
# there (IEEE products, not TF32), which no CPU test can tell apart.
FLOAT32_CHECKS = ("gqa8_xxl_cross", "gqa8_xxl_self")
# Checked and timed with the split partials merged by the Pallas combine kernel as well.
COMBINE_CHECKS = ("gqa8_xxl_cross", "mqa_xxl_cross", "mqa_large_cross", "gqa8_xxl_self")


def inputs(shape, seed: int, sets: int = 1, dtype=jnp.bfloat16):
    B, N, K, S, H, is_self = shape
    keys = jax.random.split(jax.random.PRNGKey(seed), 3 * sets + 1)
    q = jax.random.normal(keys[0], (B, N, H), dtype)
    kv = [
        (
            jax.random.normal(keys[3 * i + 1], (B, K, S, H), dtype),
            jax.random.normal(keys[3 * i + 2], (B, K, S, H), dtype),
        )
        for i in range(sets)
    ]
    if is_self:
        position = S - 1 - S // 4
        mask = (jnp.arange(S) <= position)[None, :]
        bias = jax.random.normal(keys[-1], (N, S), jnp.float32)
    else:
        m = np.ones((B, S), np.int8)
        m[0, 700:] = 0  # a padded input
        m[1] = 0  # an empty input: finite, the mean of every value
        mask, bias = jnp.asarray(m), None
    return q, kv, mask, bias


def rel_err(a, b) -> float:
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def with_combine(fn):
    """Run fn with TUNING's combine set to 'pallas'; the record's shape name says so."""
    saved = da.TUNING["combine"]
    da.set_tuning(combine="pallas")
    try:
        rec = fn()
    finally:
        da.TUNING["combine"] = saved
    return {**rec, "shape": rec["shape"] + "_combine"}


def check(name: str, shape, seed: int, dtype=jnp.bfloat16) -> dict:
    q, [(k, v)], mask, bias = inputs(shape, seed, dtype=dtype)
    run = lambda impl: jax.jit(  # noqa: E731
        lambda q, k, v, m, b: da.grouped_decode_attention(
            q, k, v, key_mask=m, bias_NS=b, implementation=impl
        )
    )(q, k, v, mask, bias)
    got = run(KERNEL)
    xla = run("xla")
    with jax.default_matmul_precision("highest"):
        f32 = [x.astype(jnp.float32) for x in (q, k, v)]
        ref = jax.jit(da.reference)(*f32, mask, bias)
    out = {
        "shape": name if dtype == jnp.bfloat16 else f"{name}_{jnp.dtype(dtype).name}",
        "finite": bool(jnp.all(jnp.isfinite(got.astype(jnp.float32)))),
        "pallas_vs_f32": rel_err(got, ref),
        "xla_vs_f32": rel_err(xla, ref),
        "pallas_vs_xla": rel_err(got, xla),
    }
    out["ok"] = out["finite"] and out["pallas_vs_f32"] <= max(1.5 * out["xla_vs_f32"], 1e-2)
    return out


def speed(name: str, shape, impl: str, iters: int = 10) -> dict:
    B, N, K, S, H, _ = shape
    set_bytes = 2 * B * K * S * H * 2
    sets = int(min(8, max(2, -(-400e6 // set_bytes))))  # >= 400 MB per pass: far past L2
    q, kv, mask, bias = inputs(shape, 1, sets)
    if not shape[5]:
        mask = None  # every key valid: every byte of K/V is read

    def body(q, kv, mask, bias):
        for k, v in kv:
            q = da.grouped_decode_attention(
                q, k, v, key_mask=mask, bias_NS=bias, implementation=impl
            )
        return q

    t = device_loop_time(body, q, iters, 5, (kv, mask, bias)) / sets
    read = set_bytes
    if shape[5]:  # self-attention: keys up to the position only
        read = set_bytes * (S - S // 4) / S
    return {"shape": name, "impl": impl, "us": t * 1e6, "kv_bytes": read, "GBps": read / t / 1e9}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--best", required=True, help="JSON file for the best launch parameters")
    ap.add_argument("--parts", default="ceilings,check,speed,sweep")
    ap.add_argument("--cpu_dry_run", action="store_true", help="tiny shapes, interpret mode")
    args = ap.parse_args(argv)
    global KERNEL
    ceilings = measure_ceilings
    if args.cpu_dry_run:
        KERNEL = "interpret"
        for name, (_, N, K, _, _, is_self) in SHAPES.items():
            SHAPES[name] = (2, N // 4, max(1, K // 4), 64, 16, is_self)
        SWEEP[:] = [dict(c, block_k=min(c["block_k"], 16)) for c in SWEEP[:2]]
        ceilings = lambda: measure_ceilings(0.01, 128, 2)  # noqa: E731
    out = pathlib.Path(args.out)
    res = {"jax": jax.__version__, "device": str(jax.devices()[0].device_kind), "errors": []}

    def save():
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        os.replace(tmp, out)

    def part(label, fn):
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - record it; the other parts still run
            res["errors"].append({"part": label, "error": f"{type(e).__name__}: {str(e)[:800]}"})
            traceback.print_exc()
        print(f"[{label}] {time.perf_counter() - t0:.1f}s", flush=True)
        save()

    parts = args.parts.split(",")
    if "ceilings" in parts:
        part("ceilings", lambda: res.update(ceilings=ceilings()))
    res["check"], res["speed"], res["sweep"] = [], [], []
    # Order: what the decode runs need first (bf16 checks, the sweep's best.json), then
    # speeds, then the float32 and combine cases, so a cut-short call loses the least.
    if "check" in parts:
        for i, (name, shape) in enumerate(SHAPES.items()):
            part(f"check {name}", lambda n=name, s=shape, i=i: res["check"].append(check(n, s, i)))
    best = dict(DEFAULT)
    if "sweep" in parts:
        for cfg in SWEEP:

            def one(cfg=cfg):
                da.TUNING.update(DEFAULT)
                da.set_tuning(**cfg)
                rec = speed("gqa8_xxl_cross", SHAPES["gqa8_xxl_cross"], KERNEL)
                res["sweep"].append({**rec, "tuning": dict(da.TUNING)})

            part(f"sweep {cfg}", one)
        da.TUNING.update(DEFAULT)
        # The best launch parameters with the split count left to `_plan` (a fixed count
        # that suits GQA-8 would starve MQA's 32 programs).
        ok = [r for r in res["sweep"] if r["GBps"] > 0 and r["tuning"]["num_splits"] is None]
        if ok:
            best = max(ok, key=lambda r: r["GBps"])["tuning"]
    res["best_tuning"] = best
    save()
    pathlib.Path(args.best).write_text(json.dumps(best))
    if "speed" in parts:
        for name, shape in SHAPES.items():
            for impl in ("xla", KERNEL):
                part(
                    f"speed {name} {impl}",
                    lambda n=name, s=shape, i=impl: res["speed"].append(speed(n, s, i)),
                )
    if "check" in parts:
        for name in FLOAT32_CHECKS:
            part(
                f"check {name} float32",
                lambda n=name: res["check"].append(check(n, SHAPES[n], 7, jnp.float32)),
            )
        for i, name in enumerate(COMBINE_CHECKS):
            part(
                f"check {name} combine",
                lambda n=name, i=i: res["check"].append(
                    with_combine(lambda: check(n, SHAPES[n], 11 + i))
                ),
            )
        for name in FLOAT32_CHECKS:  # the combine's one-hot row placement in float32
            part(
                f"check {name} float32 combine",
                lambda n=name: res["check"].append(
                    with_combine(lambda: check(n, SHAPES[n], 17, jnp.float32))
                ),
            )
    if "speed" in parts:
        for name in COMBINE_CHECKS:
            part(
                f"speed {name} {KERNEL} combine",
                lambda n=name: res["speed"].append(
                    with_combine(lambda: speed(n, SHAPES[n], KERNEL))
                ),
            )
    c = res.get("ceilings", {})
    print(
        f"ceilings: copy {c.get('copy_GBps', 0):.0f} GB/s, read {c.get('read_GBps', 0):.0f} "
        f"GB/s, bf16 matmul {c.get('bf16_matmul_TFLOPs', 0):.0f} TFLOP/s"
    )
    for r in res["check"]:
        print(
            f"check {r['shape']:16} ok={r['ok']} pallas/f32 {r['pallas_vs_f32']:.2e} "
            f"xla/f32 {r['xla_vs_f32']:.2e} pallas/xla {r['pallas_vs_xla']:.2e}"
        )
    for r in res["speed"] + res["sweep"]:
        extra = f" {r['tuning']}" if "tuning" in r else ""
        print(f"speed {r['shape']:16} {r['impl']:6} {r['us']:8.1f} us {r['GBps']:6.0f} GB/s{extra}")
    for e in res["errors"]:
        print(f"ERROR {e['part']}: {e['error'][:200]}")
    print(f"best tuning: {best}")


if __name__ == "__main__":
    main()
