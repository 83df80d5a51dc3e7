"""The Grain loader alone on an existing export: packed rows/s for one task at given lengths.

    python -m scripts.benchmark_loader_realtext --grain_data_dir=/path/to/realtext_grain \
        --label=after --out=benchmarks/loader_realtext_cpu.json
Also records a SHA-256 of the first `--check_batches` batches, so that runs before and after
a loader change can be compared for identical output. Appends to the JSON under `--label`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import platform
import time

from gqa_t5 import grain_data, utils


def _digest(batches, n: int) -> str:
    h = hashlib.sha256()
    for _ in range(n):
        b = next(batches)
        for k in sorted(b):
            h.update(k.encode())
            h.update(b[k].tobytes())
    return h.hexdigest()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--grain_data_dir", required=True)
    p.add_argument("--task", default="realtext_mixture")
    p.add_argument("--inputs", type=int, default=256)
    p.add_argument("--targets", type=int, default=112)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--prefetch", type=int, default=2)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--check_batches", type=int, default=20)
    p.add_argument("--label", default="run")
    p.add_argument("--out", default="benchmarks/loader_realtext_cpu.json")
    args = p.parse_args()
    lengths = {"inputs": args.inputs, "targets": args.targets}
    root = grain_data.data_dir(args.grain_data_dir)

    def batches():
        exports = grain_data.open_exports(root, args.task, "train", lengths)
        stream = grain_data.Stream(exports, lengths, seed=0)
        kw = {"workers": args.workers} if args.workers else {}
        return grain_data.BatchIterator(stream, args.batch_size, None, args.prefetch, **kw)

    digest = _digest(batches(), args.check_batches)
    it = batches()
    next(it)  # start-up not timed
    t0, rows, steps = time.perf_counter(), 0, 0
    while time.perf_counter() - t0 < args.seconds:
        rows += next(it)["encoder_input_tokens"].shape[0]
        steps += 1
        if steps % 20 == 0:
            dt = time.perf_counter() - t0
            print(f"step {steps}: {rows / dt:.0f} rows/s", flush=True)
    dt = time.perf_counter() - t0
    r = {
        "task": args.task,
        "lengths": lengths,
        "batch_size": args.batch_size,
        "prefetch": args.prefetch,
        "workers": args.workers,
        "packed_rows_per_sec": rows / dt,
        "batches_per_sec": steps / dt,
        "seconds": dt,
        "first_batches_sha256": digest,
        "check_batches": args.check_batches,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    out = pathlib.Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results[args.label] = r
    utils.write_json_atomic(str(out), results)
    rate = f"{r['packed_rows_per_sec']:.0f} rows/s, {r['batches_per_sec']:.2f} batches/s"
    print(f"{args.label}: {rate}")
    print(f"summary: wrote {out}")


if __name__ == "__main__":
    main()
