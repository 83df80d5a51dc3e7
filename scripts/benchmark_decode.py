"""Decode-speed benchmark: T5.1.1 Large / XXL with random bf16 weights, greedy, fixed length.

For each (model, G): encoder (prefill) time, cross-attention K/V fill, decode loop,
seconds per sample, ms per step, tokens/s, peak device memory, and achieved HBM GB/s
against the bandwidth floor (bytes per step counted as in shared/PAPER.md: decoder
weights read each step, every K/V-cache byte read; cross K/V projections excluded).
Writes JSON (one record per configuration, rewritten after each) and prints a table.

Needs only JAX (runs on the GPU image). `--smoke` runs a tiny model on CPU.

  python scripts/benchmark_decode.py --model xxl --groups 1,8,64 --out benchmarks/decode.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import dataclasses  # noqa: E402
import re  # noqa: E402

from gqa_t5.kernels import decode_attention  # noqa: E402
from gqa_t5.models import EncoderDecoderModel  # noqa: E402
from gqa_t5.network import T5Config  # noqa: E402
from gqa_t5.timing import random_params  # noqa: E402

SIZE_FIELDS = ("emb_dim", "num_heads", "num_encoder_layers", "num_decoder_layers", "head_dim")
SIZE_FIELDS += ("mlp_dim", "vocab_size")


def gin_sizes(folder: pathlib.Path = ROOT / "gin" / "models" / "t5_1_1") -> dict:
    """Every T5.1.1 size file in `folder` as T5Config fields, read off the gin text.

    A size file includes base.gin and overrides macros (NUM_HEADS, VOCAB_SIZE) and
    `network.T5Config` fields; this follows the includes and substitutes the macros.
    """

    def read(path: pathlib.Path) -> tuple[dict, dict]:
        macros, fields = {}, {}
        text = path.read_text()
        for inc in re.findall(r"^include '([^']+)'", text, re.M):
            m, f = read(folder.parents[1] / inc)
            macros.update(m)
            fields.update(f)
        for name, value in re.findall(r"^([A-Z_]+) = (\S+)", text, re.M):
            macros[name] = value
        for name, value in re.findall(r"^  (\w+) = (\S+)", text, re.M):
            fields[name] = value
        return macros, fields

    sizes = {}
    for path in sorted(folder.glob("*.gin")):
        macros, fields = read(path)
        out = {}
        for name in SIZE_FIELDS:
            v = fields[name]
            out[name] = int(macros[v[1:]] if v.startswith("%") else v)
        sizes[path.stem] = out
    return sizes


SIZES = gin_sizes()
# The decode benchmark's smoke size (8 heads, so G in 1, 2, 4, 8), and the real-text
# model's shape: T5.1.1-small with 8 heads of 64 (d_model 512) instead of 6.
SIZES["smoke"] = dict(
    emb_dim=64,
    num_heads=8,
    num_encoder_layers=2,
    num_decoder_layers=2,
    head_dim=8,
    mlp_dim=128,
    vocab_size=256,
)
SIZES["small8"] = dict(SIZES["small"], num_heads=8)


def decode_floor_bytes(cfg: T5Config, B: int, S: int, L: int, elt: int = 2) -> dict:
    """Fewest bytes one greedy step must read, averaged over the L steps."""
    D, N, K, H, F = cfg.emb_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
    n_wi = len(cfg.mlp_activations)
    per_layer = (
        D * N * H * 2
        + D * K * H * 2  # self: query, out; key, value
        + D * N * H * 2  # cross: query, out (its K/V are projected once per input)
        + D * F * (n_wi + 1)
        + 3 * D  # layer norms
    )
    weights = (per_layer * cfg.num_decoder_layers + D * cfg.vocab_size) * elt
    cross = B * K * S * H * 2 * elt * cfg.num_decoder_layers
    self_avg = B * K * ((L + 1) / 2) * H * 2 * elt * cfg.num_decoder_layers
    return {
        "weights": weights,
        "cross_kv": cross,
        "self_kv_avg": self_avg,
        "total": weights + cross + self_avg,
    }


def per_device_bytes(floor: dict, mesh_mode: str | None) -> float:
    """Floor bytes one device reads per step: weights are replicated under "batch"."""
    n = len(jax.devices()) if mesh_mode else 1
    caches = floor["cross_kv"] + floor["self_kv_avg"]
    if mesh_mode == "batch":
        return floor["weights"] + caches / n
    return floor["total"] / n


def encoder_flops(cfg: T5Config, B: int, S: int) -> float:
    D, N, H, F = cfg.emb_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
    K = cfg.encoder_kv_heads
    n_wi = len(cfg.mlp_activations)
    matmul = 2 * B * S * (D * N * H * 2 + D * K * H * 2 + D * F * (n_wi + 1))
    attn = 4 * B * S * S * N * H
    return float((matmul + attn) * cfg.num_encoder_layers)


def timed(fn, *args, repeats: int):
    out = jax.block_until_ready(fn(*args))  # compile + warm up
    times = []
    for _ in range(repeats):
        # Free the last result first: two live copies of MHA-XXL's 52 GB cross-attention
        # cache at input 4096 do not fit beside the weights.
        del out
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


DATASHEET = {  # vendor figures (SXM parts): HBM GB/s, dense bf16 TFLOP/s
    "H200": {"hbm_GBps": 4800.0, "bf16_TFLOPs": 989.0},
    "H100": {"hbm_GBps": 3350.0, "bf16_TFLOPs": 989.0},
}
# A device-to-device copy on the H200, measured through PyTorch (reads + writes): the
# floor never uses a lower bandwidth than this, whatever this run measures.
MIN_FLOOR_GBPS = 4300.0


def device_loop_time(body, x, iters: int, repeats: int, operands: tuple = ()) -> float:
    """Median seconds per `body` call, `iters` calls chained inside one compiled program.

    The optimization barrier keeps XLA from fusing consecutive calls into one pass, so
    each iteration really reads and writes its operands; the host timer brackets a whole
    program of `iters` device-side iterations, so launch and sync costs are amortized.
    Large read-only inputs go in `operands` (`body(y, *operands)`): passed as arguments,
    not closed over, so they are not baked into the program as constants (a 2 GB
    constant took 89 s to compile on the H200).
    """

    @jax.jit
    def many(x, *ops):
        step = lambda i, y: jax.lax.optimization_barrier(body(y, *ops))  # noqa: E731
        return jax.lax.fori_loop(0, iters, step, x)

    jax.block_until_ready(many(x, *operands))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(many(x, *operands))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / iters


def read_time(elems: int, iters: int, buffers: int = 4) -> float:
    """Median seconds to sum one bf16 buffer of `elems`, cycling over 4 (no writes).

    A different buffer each iteration (a dynamic row of one array, which XLA reads in
    place inside the reduction) so that nothing is loop-invariant or cached.
    """
    x = jax.random.normal(jax.random.PRNGKey(4), (buffers, elems), jnp.bfloat16)

    @jax.jit
    def many(x):
        def body(i, acc):
            row = jax.lax.dynamic_index_in_dim(x, i % buffers, keepdims=False)
            return acc + jnp.sum(row, dtype=jnp.float32)

        return jax.lax.fori_loop(0, iters, body, jnp.float32(0))

    jax.block_until_ready(many(x))
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(many(x))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / iters


def datasheet(kind: str) -> dict:
    return next((v for k, v in DATASHEET.items() if k in kind), {})


def measure_ceilings(copy_gib: float = 2.0, n: int = 8192, iters: int = 20) -> dict:
    """Roofline ceilings measured here: copy and read bandwidth, bf16 matmul rate.

    Copy: `y = y * a + b` over a `copy_gib` GiB bf16 buffer (reads + writes counted), 20
    times in one program. Read: sums over four such buffers in turn (bytes read). Matmul: a chain of
    n x n x n bf16 products on random data. Each is the median over 5 programs.
    """
    elems = int(copy_gib * (1 << 30)) // 2
    x = jax.random.normal(jax.random.PRNGKey(1), (elems,), jnp.bfloat16)
    t_copy = device_loop_time(lambda y: y * jnp.bfloat16(0.5) + jnp.bfloat16(1), x, iters, 5)
    del x
    t_read = read_time(elems, iters)
    a = jax.random.normal(jax.random.PRNGKey(2), (n, n), jnp.bfloat16)
    w = (jax.random.normal(jax.random.PRNGKey(3), (n, n), jnp.float32) / n**0.5).astype(
        jnp.bfloat16
    )
    t_mm = device_loop_time(lambda y, w: y @ w, a, iters, 5, (w,))
    kind = str(jax.devices()[0].device_kind)
    copy = 2 * 2 * elems / t_copy / 1e9
    return {
        "method": f"{iters} iterations in one jit program, median of 5, bytes read+written",
        "copy_GBps": copy,
        "read_GBps": 2 * elems / t_read / 1e9,
        "bf16_matmul_TFLOPs": 2 * n**3 / t_mm / 1e12,
        "floor_GBps": max(copy, MIN_FLOOR_GBPS),
        "datasheet": datasheet(kind),
        "copy_bytes": 2 * 2 * elems,
        "matmul_n": n,
    }


def floor_bandwidth(ceilings: dict) -> float:
    """GB/s every "of floor" figure divides by: max(measured copy rate, 4.3 TB/s)."""
    return max(ceilings.get("copy_GBps") or 0.0, MIN_FLOOR_GBPS)


def check_against_references(
    cfg: T5Config, enc: jax.Array, steps: int = 16, fuse: bool = True
) -> dict:
    """Cached bf16 decode steps vs full forward passes, on a 4-layer model of this width.

    Errors are ||a - b|| / ||b|| over the step logits. `decode_vs_f32_xla` must sit at the
    bf16 noise level that `bf16_xla_vs_f32_xla` shows; a wrong fast kernel would not.
    """
    cfg = dataclasses.replace(cfg, num_encoder_layers=4, num_decoder_layers=4)
    fast = EncoderDecoderModel(cfg)
    params = random_params(fast, seed=123, dtype=cfg.dtype)
    B = enc.shape[0]

    @jax.jit
    def fill(p, e):
        return fast.prefill(p, fast.init_cache(p, B, e.shape[1], steps), fast.encode(p, e))

    @jax.jit
    def step(p, e, ids, c):
        return fast.tokens_to_logits_fn(p, e, steps, fuse=fuse)(ids, c)

    cache = fill(params, enc)
    ids = jnp.zeros((B, 1), jnp.int32)
    got, inputs = [], [ids]
    for _ in range(steps):
        logits, cache = step(params, enc, ids, cache)
        got.append(logits)
        ids = jnp.argmax(logits, -1)[:, None].astype(jnp.int32)
        inputs.append(ids)
    del cache
    dec_in = jnp.concatenate(inputs[:-1], axis=1)
    batch = {
        "encoder_input_tokens": enc,
        "decoder_input_tokens": dec_in,
        "decoder_target_tokens": jnp.ones_like(dec_in),
    }

    def full(dtype, impl):
        m = EncoderDecoderModel(dataclasses.replace(cfg, dtype=dtype, attention_impl=impl))
        p = jax.tree_util.tree_map(lambda x: x.astype(dtype), params)
        return jax.jit(m.logits)(p, batch).astype(jnp.float32)

    def err(a, b):
        return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))

    decoded = jnp.stack(got, 1).astype(jnp.float32)
    ref = full(jnp.float32, "xla")
    out = {
        "decode_vs_f32_xla": err(decoded, ref),
        "bf16_xla_vs_f32_xla": err(full(cfg.dtype, "xla"), ref),
    }
    if jax.default_backend() == "gpu":
        out["bf16_cudnn_vs_f32_xla"] = err(full(cfg.dtype, "cudnn"), ref)
    return out


def hlo_op_names(hlo_text: str) -> dict:
    """Fusion / instruction name (as kernels are named: '.' -> '_') -> its source op_name."""
    import re

    out = {}
    for m in re.finditer(r"%([\w.\-]+) = [^\n]*?metadata=\{op_name=\"([^\"]+)\"", hlo_text):
        out[m.group(1).replace(".", "_").replace("-", "_")] = m.group(2)[-160:]
    return out


def dumped_hlo(module_substring: str) -> str:
    """The optimized HLO text XLA dumped (XLA_FLAGS --xla_dump_to) for a module, or ''."""
    import glob
    import re

    m = re.search(r"--xla_dump_to=(\S+)", os.environ.get("XLA_FLAGS", ""))
    if not m:
        return ""
    paths = glob.glob(f"{m.group(1)}/*{module_substring}*after_optimizations.txt")
    return pathlib.Path(max(paths, key=os.path.getsize)).read_text() if paths else ""


def profile_summary(fn, *args, top: int = 30, hlo_text: str = "") -> dict:
    """Per-kernel GPU time for one call of `fn`, from a perfetto trace (CUPTI)."""
    import glob
    import gzip
    import tempfile

    d = tempfile.mkdtemp()
    with jax.profiler.trace(d, create_perfetto_trace=True):
        jax.block_until_ready(fn(*args))
    paths = glob.glob(f"{d}/**/perfetto_trace.json.gz", recursive=True)
    if not paths:
        return {"error": "no perfetto trace written"}
    events = json.load(gzip.open(paths[0]))
    events = events["traceEvents"] if isinstance(events, dict) else events
    names = {
        e["pid"]: e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "process_name"
    }
    gpu = [p for p, n in names.items() if "GPU" in n or "gpu" in n]
    kern = [e for e in events if e.get("ph") == "X" and e.get("pid") in gpu]
    if not kern:
        return {"error": "no GPU events", "processes": list(names.values())[:20]}
    per = {}
    for e in kern:
        k = e["name"][:80]
        c, t = per.get(k, (0, 0.0))
        per[k] = (c + 1, t + e.get("dur", 0.0))
    start = min(e["ts"] for e in kern)
    end = max(e["ts"] + e.get("dur", 0.0) for e in kern)
    busy, cur_s, cur_e = 0.0, None, None
    for e in sorted(kern, key=lambda e: e["ts"]):
        s0, e0 = e["ts"], e["ts"] + e.get("dur", 0.0)
        if cur_e is None or s0 > cur_e:
            busy += 0 if cur_e is None else cur_e - cur_s
            cur_s, cur_e = s0, e0
        else:
            cur_e = max(cur_e, e0)
    busy += cur_e - cur_s
    ranked = sorted(per.items(), key=lambda kv: -kv[1][1])[:top]
    ops = hlo_op_names(hlo_text) if hlo_text else {}
    cats = {}
    for e in kern:
        cat = kernel_category(e["name"])
        c, t = cats.get(cat, (0, 0.0))
        cats[cat] = (c + 1, t + e.get("dur", 0.0))
    return {
        "span_us": end - start,
        "busy_us": busy,
        "kernels": len(kern),
        "by_category": {k: {"count": c, "total_us": t} for k, (c, t) in sorted(cats.items())},
        "top": [
            {"name": k, "count": c, "total_us": t, "op": ops.get(k.split("(")[0].strip(), "")}
            for k, (c, t) in ranked
        ],
    }


def kernel_category(name: str) -> str:
    """Coarse class of a GPU kernel from its name (XLA fusion, cuBLAS, cuDNN, NCCL)."""
    n = name.lower()
    if "gqa_decode_attention" in n:
        return "attention (Pallas)"
    if "gqa_decode_combine" in n:
        return "attention combine (Pallas)"
    if any(s in n for s in ("sdpa", "flash", "fmha", "cudnn")):
        return "attention (cuDNN)"
    if any(s in n for s in ("gemm", "xmma", "nvjet", "cutlass", "cublas", "triton_dot")):
        return "matmul"
    if "nccl" in n or "all_reduce" in n or "all-reduce" in n:
        return "collective"
    if "reduce" in n:
        return "reduction fusion"
    if any(s in n for s in ("transpose", "copy", "memcpy", "memset", "concatenate")):
        return "copy/transpose"
    if "dynamic_update_slice" in n or "dynamic-update-slice" in n or "slice" in n:
        return "slice/update"
    if "fusion" in n or "loop_" in n or "convert" in n:
        return "elementwise fusion"
    return "other"


def placement(model: EncoderDecoderModel, mesh_mode: str | None):
    """(partitioner, param shardings, batch sharding, cache-sharding fn) for a mesh mode.

    "batch": the batch split over all devices, weights replicated (data parallel);
    "kv_heads": heads, key/value heads, MLP and vocab split over all devices (model
    parallel), each device holding its key/value heads' caches.
    """
    if mesh_mode is None:
        return None, None, None, None
    from jax.sharding import NamedSharding, PartitionSpec

    from gqa_t5.partitioning import Partitioner

    n = len(jax.devices())
    part = Partitioner(
        num_partitions=n if mesh_mode == "kv_heads" else 1, num_kv_heads=model.config.num_kv_heads
    )
    variables = jax.eval_shape(lambda r: model.init(r, 8, 8), jax.random.PRNGKey(0))
    p_sh = part.param_shardings(variables["params_axes"], variables["params"])
    b_sh = part.batch_sharding if mesh_mode == "batch" else part.replicated
    spec = PartitionSpec("data") if mesh_mode == "batch" else PartitionSpec(None, "model")

    def cache_sharding(cache):
        return jax.tree_util.tree_map(
            lambda x: NamedSharding(part.mesh, spec if x.ndim == 4 else PartitionSpec()), cache
        )

    return part, p_sh, b_sh, cache_sharding


def run_one(
    size,
    G,
    B,
    S,
    L,
    dtype,
    repeats,
    check,
    ceilings,
    attention_impl,
    profile,
    mesh_mode=None,
    fuse=True,
    decode_kernel="xla",
):
    # Heads split over devices: the fused kernels' shards would not line up with q/k/v.
    fuse = fuse and mesh_mode != "kv_heads"
    cfg = T5Config(
        **SIZES[size],
        num_kv_heads=G,
        dtype=dtype,
        attention_impl=attention_impl,
        decode_kernel=decode_kernel,
    )
    model = EncoderDecoderModel(cfg)
    part, p_sh, b_sh, cache_sharding = placement(model, mesh_mode)
    params = random_params(model, seed=G, dtype=dtype)
    rng = np.random.RandomState(0)
    enc = jnp.asarray(rng.randint(2, cfg.vocab_size, (B, S)), jnp.int32)
    if part is not None:
        params, enc = jax.device_put(params, p_sh), jax.device_put(enc, b_sh)
    rec = {
        "model": size,
        "num_heads": cfg.num_heads,
        "num_kv_heads": G,
        "batch": B,
        "input_len": S,
        "output_len": L,
        "attention_impl": cfg.resolved_attention_impl(False),
        "mesh": mesh_mode,
        "devices": len(jax.devices()) if mesh_mode else 1,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "fused_projections": fuse,
        "decode_kernel": decode_kernel,
        "kernel_tuning": dict(decode_attention.TUNING),  # None: by the program's rows
        "kernel_launch": decode_attention.launch_for(cfg.num_heads, G),
    }
    if check:
        rec["check_rel_err"] = check_against_references(cfg, enc[:2], fuse=fuse)
    ctx = part.activation_context() if part is not None else contextlib.nullcontext()
    with ctx:
        t_enc, encoded = timed(jax.jit(model.encode), params, enc, repeats=repeats)
        # Decoding never reads the encoder's weights again: free them (11 GB for XXL), as
        # a server would, so multi-head XXL's 32 GB of K/V caches fit beside the decoder.
        for leaf in jax.tree_util.tree_leaves(params.pop("encoder")):
            leaf.delete()

        def fill(p, e):
            cache = model.prefill(p, model.init_cache(p, B, S, L), e)
            if cache_sharding is not None:
                cache = jax.lax.with_sharding_constraint(cache, cache_sharding(cache))
            return cache

        t_fill, cache = timed(jax.jit(fill), params, encoded, repeats=repeats)
        del cache

        def fill_and_decode(p, encoded, e):
            from gqa_t5 import decoding

            step = model.tokens_to_logits_fn(p, e, L, fuse=fuse)
            return decoding.temperature_sample(
                step, fill(p, encoded), B, L, eos_id=1, fixed_length=True
            )

        run = jax.jit(fill_and_decode)
        t_both, (seqs, _) = timed(run, params, encoded, enc, repeats=repeats)
        if profile:
            rec["profile_fill_and_decode"] = profile_summary(  # kernel -> op: --xla_dump_to
                run, params, encoded, enc, top=60, hlo_text=dumped_hlo("fill_and_decode")
            )
    t_dec = t_both - t_fill
    floor = decode_floor_bytes(cfg, B, S, L)
    step_s = t_dec / L
    total = t_enc + t_fill + t_dec
    stats = jax.devices()[0].memory_stats() or {}
    bw = floor_bandwidth(ceilings)
    frac = per_device_bytes(floor, mesh_mode) / (bw * 1e9) / step_s
    mm = ceilings.get("bf16_matmul_TFLOPs")
    rec.update(
        {
            "encode_s": t_enc,
            "cross_kv_fill_s": t_fill,
            "decode_s": t_dec,
            "s_per_sample": total / B,
            "ms_per_step": step_s * 1e3,
            "tokens_per_s": B * L / total,
            "floor_bytes_per_step": floor,
            "achieved_GBps": floor["total"] / step_s / 1e9,
            "floor_GBps": bw,
            "fraction_of_floor": frac,
            # Faster than the floor means bytes were left out of the count, or the
            # ceiling is wrong: a bug in the accounting, never a result.
            "accounting_bug": frac > 1.0,
            "encoder_TFLOPs": encoder_flops(cfg, B, S) / t_enc / 1e12,
            "encoder_of_matmul": encoder_flops(cfg, B, S) / t_enc / 1e12 / mm if mm else None,
            "peak_bytes_in_use": stats.get("peak_bytes_in_use"),
            "nonzero_tokens": int(jnp.sum(seqs > 0)),
            # Same seed and weights on any mesh: lets runs on 1 and 2 GPUs be compared.
            "first_tokens": np.asarray(seqs[:2, :32]).tolist(),
        }
    )
    return rec


def run_isolated(
    args, G: int, check: bool, profile: bool, ceilings: dict, only_ceilings: bool = False
) -> dict:
    """One configuration in a fresh process: clean device memory and peak statistics."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [
            sys.executable,
            __file__,
            "--single",
            f.name,
            "--model",
            args.model,
            "--groups",
            str(G),
            "--batch",
            str(args.batch),
            "--input_len",
            str(args.input_len),
            "--output_len",
            str(args.output_len),
            "--repeats",
            str(args.repeats),
            "--attention_impl",
            args.attention_impl,
            "--ceilings_json",
            json.dumps(ceilings),
        ]
        cmd += ["--check"] * check + ["--profile"] * profile
        cmd += ["--single_ceilings"] * only_ceilings
        cmd += ["--mesh", args.mesh] if args.mesh else []
        cmd += ["--no_fuse"] * args.no_fuse
        cmd += ["--decode_kernel", args.decode_kernel, "--kernel_params", args.kernel_params]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0 and pathlib.Path(f.name).stat().st_size:
            return json.loads(pathlib.Path(f.name).read_text())
        tail = (proc.stderr or proc.stdout)[-600:]
        return {
            "model": args.model,
            "num_kv_heads": G,
            "batch": args.batch,
            "error": tail.strip().splitlines()[-1] if tail.strip() else "failed",
            "stderr_tail": tail,
        }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="xxl", choices=sorted(SIZES))
    ap.add_argument("--groups", default="1,8,64")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--input_len", type=int, default=2048)
    ap.add_argument("--output_len", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--attention_impl", default="auto")
    ap.add_argument("--check", action="store_true", help="compare cached steps vs full pass")
    ap.add_argument("--no_ceilings", action="store_true")
    ap.add_argument("--out", default="benchmarks/decode.json")
    ap.add_argument("--profile", action="store_true", help="per-kernel trace of the first G")
    ap.add_argument(
        "--mesh",
        default=None,
        choices=["batch", "kv_heads"],
        help="spread over all local devices: split the batch, or the heads",
    )
    ap.add_argument(
        "--no_fuse", action="store_true", help="decode steps without fused q/k/v, MLP kernels"
    )
    ap.add_argument(
        "--decode_kernel",
        default="xla",
        choices=["xla", "pallas_cross", "pallas"],
        help="decode-step attention: XLA, or the Pallas kernel (cross only, or both)",
    )
    ap.add_argument(
        "--kernel_params", default="{}", help='Pallas launch parameters, JSON: {"block_k": 128}'
    )
    ap.add_argument("--single", help=argparse.SUPPRESS)
    ap.add_argument("--single_ceilings", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ceilings_json", default="{}", help="reuse ceilings measured earlier")
    args = ap.parse_args(argv)
    decode_attention.set_tuning(**json.loads(args.kernel_params))
    if args.single:  # a child process: the only one that touches the device
        dtype = jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
        if args.single_ceilings:
            rec = measure_ceilings()
        else:
            rec = run_one(
                args.model,
                int(args.groups),
                args.batch,
                args.input_len,
                args.output_len,
                dtype,
                args.repeats,
                args.check,
                json.loads(args.ceilings_json),
                args.attention_impl,
                args.profile,
                args.mesh,
                fuse=not args.no_fuse,
                decode_kernel=args.decode_kernel,
            )
        rec["device"] = str(jax.devices()[0].device_kind)
        rec["backend"], rec["jax"] = jax.default_backend(), jax.__version__
        pathlib.Path(args.single).write_text(json.dumps(rec))
        return rec
    if args.ceilings_json != "{}":  # measured once by the caller
        ceilings = json.loads(args.ceilings_json)
    else:
        ceilings = {} if args.no_ceilings else run_isolated(args, 0, False, False, {}, True)
    out = pathlib.Path(args.out)
    result = {
        "date": datetime.date.today().isoformat(),
        "device": ceilings.get("device"),
        "host": platform.node(),
        "ceilings": ceilings,
        "runs": [],
    }
    print(json.dumps({"ceilings": ceilings, "device": result["device"]}), flush=True)
    for i, G in enumerate(int(g) for g in args.groups.split(",")):
        t0 = time.perf_counter()
        rec = run_isolated(
            args, G, check=args.check, profile=args.profile and i == 0, ceilings=ceilings
        )
        rec["wall_s"] = time.perf_counter() - t0
        result["runs"].append(rec)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, out)
        show = {
            k: v
            for k, v in rec.items()
            if k not in ("floor_bytes_per_step", "profile_fill_and_decode")
        }
        print(json.dumps(show), flush=True)
    print(
        f"{'model':6} {'G':>3} {'B':>3} {'kernel':>12} {'s/sample':>9} {'ms/step':>8} {'enc s':>7} "
        f"{'GB/s':>7} {'floor%':>7}"
    )
    for r in result["runs"]:
        if "error" in r:
            print(f"{r['model']:6} {r['num_kv_heads']:>3} {r['batch']:>3}  {r['error'][:60]}")
            continue
        frac = r["fraction_of_floor"]
        print(
            f"{r['model']:6} {r['num_kv_heads']:>3} {r['batch']:>3} {r['decode_kernel']:>12} "
            f"{r['s_per_sample']:9.4f} "
            f"{r['ms_per_step']:8.2f} {r['encode_s']:7.3f} {r['achieved_GBps']:7.0f} "
            f"{(frac or 0) * 100:6.1f}%" + ("  ACCOUNTING BUG: > 100%" if frac > 1 else "")
        )
    return result


if __name__ == "__main__":
    main()
