"""The input pipeline alone, Grain vs seqio: packed training rows/s and tokens/s on this CPU.

    python -m scripts.benchmark_loader --out=benchmarks/loader_cpu.json
Exports the tasks first if missing (TF-free provider).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from gqa_t5 import data, export, utils  # noqa: E402

CASES = {
    "kjv_span_corruption": {"inputs": 128, "targets": 32},
    "kjv_mixture": {"inputs": 128, "targets": 48},
}


def _measure(batches, seconds: float) -> dict:
    next(batches)  # start-up (graph building, first unit) not timed
    t0, rows, tokens = time.perf_counter(), 0, 0
    while time.perf_counter() - t0 < seconds:
        b = next(batches)
        rows += b["encoder_input_tokens"].shape[0]
        tokens += int(
            (b["encoder_input_tokens"] > 0).sum() + (b["decoder_target_tokens"] > 0).sum()
        )
    dt = time.perf_counter() - t0
    return {"packed_rows_per_sec": rows / dt, "tokens_per_sec": tokens / dt, "seconds": dt}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--grain_data_dir", default="/tmp/gqa_t5_grain_bench")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--out", default="benchmarks/loader_cpu.json")
    args = p.parse_args()
    root = pathlib.Path(args.grain_data_dir)
    results = {"cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine()}
    for task, lengths in CASES.items():
        if not (root / task / "train").exists():
            export.export(task, ["train"], root, overwrite=True)
        for backend in ("grain", "seqio"):
            cfg = data.DatasetConfig(
                mixture_or_task_name=task,
                task_feature_lengths=lengths,
                batch_size=args.batch_size,
                module="tasks",
                backend=backend,
                data_dir=str(root),
            )
            r = _measure(data.train_batches(cfg, 0, None), args.seconds)
            results[f"{task}/{backend}"] = r
            rate = f"{r['packed_rows_per_sec']:.0f} rows/s, {r['tokens_per_sec']:.0f} tokens/s"
            print(f"{task} {backend}: {rate}")
    utils.write_json_atomic(args.out, results)
    print(f"summary: wrote {args.out}")


if __name__ == "__main__":
    main()
