"""Training-throughput benchmark: one T5.1.1 train step (inputs 512, targets 114, packed).

Runs the runner's own `Trainer` (Adafactor, bf16 compute, f32 parameters, z-loss) on one
device with synthetic packed batches, and reports steps/s, tokens/s (inputs + targets)
and model-FLOPs utilisation against the datasheet bf16 peak. The step time is the median
of `--repeats` timed loops of `--steps` steps each (their spread is recorded: one loop of
8 steps varied by ~10% between calls on the H200).

  python scripts/benchmark_train.py --model large --batch 32,64,128 --out benchmarks/train.json
  python scripts/benchmark_train.py --model small8 --batch 128 --logits_dot float32,bfloat16
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from gqa_t5 import optim  # noqa: E402
from gqa_t5.models import EncoderDecoderModel  # noqa: E402
from gqa_t5.network import ATTENTION_IMPLS, LOGITS_DOTS, REMAT_POLICIES, T5Config  # noqa: E402
from gqa_t5.partitioning import Partitioner  # noqa: E402
from gqa_t5.timing import random_params  # noqa: E402
from gqa_t5.trainer import Trainer  # noqa: E402
from scripts.benchmark_decode import SIZES, dumped_hlo, profile_summary  # noqa: E402

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense bf16, SXM datasheets


def packed_batch(B: int, S: int, T: int, V: int, seed: int = 0) -> dict:
    """Rows of two packed examples each, t5x's packed feature layout."""
    rng = np.random.RandomState(seed)
    enc = rng.randint(2, V, (B, S)).astype(np.int32)
    tgt = rng.randint(2, V, (B, T)).astype(np.int32)
    seg = lambda n: np.repeat([[1] * (n // 2) + [2] * (n - n // 2)], B, 0).astype(np.int32)
    pos = lambda n: np.repeat([list(range(n // 2)) + list(range(n - n // 2))], B, 0)
    dec_in = np.concatenate([np.zeros((B, 1), np.int32), tgt[:, :-1]], 1)
    dec_in[:, T // 2] = 0  # each packed target starts from the start token
    return {
        "encoder_input_tokens": enc,
        "decoder_target_tokens": tgt,
        "decoder_input_tokens": dec_in,
        "decoder_loss_weights": np.ones((B, T), np.float32),
        "encoder_segment_ids": seg(S),
        "decoder_segment_ids": seg(T),
        "encoder_positions": pos(S).astype(np.int32),
        "decoder_positions": pos(T).astype(np.int32),
    }


def train_flops_per_step(cfg: T5Config, B: int, S: int, T: int) -> float:
    """Matmul FLOPs of forward + backward (3x forward), attention included."""
    D, N, K, H, F = cfg.emb_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
    Ke, n_wi = cfg.encoder_kv_heads, len(cfg.mlp_activations)
    mlp = D * F * (n_wi + 1)
    enc = B * S * (2 * (2 * D * N * H + 2 * D * Ke * H + mlp) + 4 * S * N * H)
    dec = (
        B
        * T
        * (
            2 * (2 * D * N * H + 2 * D * K * H + 2 * D * N * H + mlp)
            + 4 * T * N * H
            + 4 * S * N * H
        )
    )
    cross_kv = B * S * 2 * (2 * D * K * H)
    logits = B * T * 2 * D * cfg.vocab_size
    forward = (enc + cross_kv) * cfg.num_encoder_layers + dec * cfg.num_decoder_layers + logits
    return 3.0 * forward


def run(size, B, S, T, steps, impl, remat, G, profile=False, logits_dot="float32", repeats=3):
    cfg = T5Config(
        **SIZES[size],
        num_kv_heads=G,
        dtype="bfloat16",
        attention_impl=impl,
        remat_policy=remat,
        logits_dot=logits_dot,
    )
    model = EncoderDecoderModel(cfg)
    lr = optim.create_learning_rate_scheduler(
        "constant * rsqrt_decay", base_learning_rate=1.0, warmup_steps=10_000
    )
    trainer = Trainer(model, optim.adafactor(lr), lr, Partitioner(1), S, T)
    t_init = time.perf_counter()
    # Random weights drawn directly (as in the decode benchmark): compiling the model's
    # own initializer for Large took over 3 minutes on the GPU image.
    params = jax.device_put(
        random_params(model, seed=0, dtype=jnp.float32), trainer.param_shardings
    )
    state = trainer.init_state(params)
    jax.block_until_ready(state)
    print(f"{size} B={B} {impl}: state ready in {time.perf_counter() - t_init:.1f}s", flush=True)
    batch = jax.device_put(packed_batch(B, S, T, cfg.vocab_size))
    t0 = time.perf_counter()
    state, m = trainer.train_step(state, batch)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    state, m = trainer.train_step(state, batch)
    jax.block_until_ready(m)
    loops = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            state, m = trainer.train_step(state, batch)
        jax.block_until_ready(m)
        loops.append((time.perf_counter() - t0) / steps)
    dt = float(np.median(loops))
    prof = None
    if profile:
        holder = [state]

        def one_step():
            holder[0], metrics = trainer.train_step(holder[0], batch)
            return metrics

        prof = profile_summary(one_step, top=60, hlo_text=dumped_hlo("train_step"))
        prof["step_us_timed"] = dt * 1e6
    flops = train_flops_per_step(cfg, B, S, T)
    kind = jax.devices()[0].device_kind
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in kind), None)
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "model": size,
        "batch": B,
        "input_len": S,
        "target_len": T,
        "num_kv_heads": G,
        "attention_impl": cfg.resolved_attention_impl(False),
        "remat": remat,
        "logits_dot": logits_dot,
        "step_s": dt,
        "step_s_loops": loops,
        "steps_per_loop": steps,
        "steps_per_s": 1 / dt,
        "tokens_per_s": B * (S + T) / dt,
        "model_TFLOPs": flops / dt / 1e12,
        "mfu_vs_datasheet": flops / dt / 1e12 / peak if peak else None,
        "loss": float(m["loss"]),
        "compile_s": compile_s,
        "peak_bytes_in_use": stats.get("peak_bytes_in_use"),
        "device": kind,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        **({"profile_step": prof} if prof else {}),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="large", choices=sorted(SIZES))
    ap.add_argument("--batch", default="32,64")
    ap.add_argument("--input_len", type=int, default=512)
    ap.add_argument("--target_len", type=int, default=114)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--attention_impl", default="auto,xla")
    ap.add_argument("--repeats", type=int, default=3, help="timed loops; the median is kept")
    ap.add_argument("--remat", default="none")
    ap.add_argument("--logits_dot", default="float32", help="comma list: float32, bfloat16")
    ap.add_argument("--num_kv_heads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/train.json")
    ap.add_argument("--profile", action="store_true", help="per-kernel trace of the first run")
    args = ap.parse_args(argv)
    G = args.num_kv_heads or SIZES[args.model]["num_heads"]
    result = {"date": datetime.date.today().isoformat(), "jax": jax.__version__, "runs": []}
    out = pathlib.Path(args.out)
    if args.steps < 1 or args.repeats < 1:
        ap.error("--steps and --repeats must be >= 1")
    for flag, given, allowed in (
        ("--logits_dot", args.logits_dot, LOGITS_DOTS),
        ("--attention_impl", args.attention_impl, ATTENTION_IMPLS),
        ("--remat", args.remat, REMAT_POLICIES),
    ):
        bad = sorted(set(given.split(",")) - set(allowed))
        if bad:
            ap.error(f"{flag} {bad} unknown; use a comma list of {', '.join(allowed)}")
    try:
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        ap.error(f"--batch {args.batch!r}: give a comma list of positive integers, e.g. 64,128")
    grid = [
        (impl, remat, B, ld)
        for impl in args.attention_impl.split(",")
        for remat in args.remat.split(",")
        for B in batches
        for ld in args.logits_dot.split(",")
    ]
    for impl, remat, B, ld in grid:
        try:
            rec = run(
                args.model,
                B,
                args.input_len,
                args.target_len,
                args.steps,
                impl,
                remat,
                G,
                profile=args.profile and not result["runs"],
                logits_dot=ld,
                repeats=args.repeats,
            )
        except Exception as e:  # noqa: BLE001 - record OOM / unsupported and go on
            rec = {
                "model": args.model,
                "batch": B,
                "attention_impl": impl,
                "remat": remat,
                "logits_dot": ld,
                "error": f"{type(e).__name__}: {str(e)[:300]}",
            }
        result["runs"].append(rec)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, out)
        print(json.dumps({k: v for k, v in rec.items() if k != "profile_step"}), flush=True)
        if "profile_step" in rec:
            print(
                json.dumps(rec["profile_step"].get("by_category", rec["profile_step"])),
                flush=True,
            )
    return result


if __name__ == "__main__":
    main()
