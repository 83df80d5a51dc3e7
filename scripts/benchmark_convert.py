"""Peak memory and throughput of `gqa-t5-convert` on generated Large- and XL-sized checkpoints.

Writes random T5.1.1-shaped checkpoints in t5x's legacy layout (msgpack + one zarr array
per tensor, written tensor by tensor), converts each to GQA-8 in a subprocess, records
the subprocess's peak RSS (os.wait4) and MB/s, and deletes the generated files.

    python scripts/benchmark_convert.py --sizes large xl --out benchmarks/convert_memory.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tensorstore as ts
from flax import serialization

from gqa_t5.checkpoints import orbax_params
from gqa_t5.convert import expected_shapes
from gqa_t5.network import T5Config

SIZES = {  # T5.1.1 sizes (gin/models/t5_1_1/*.gin)
    "large": dict(emb_dim=1024, num_heads=16, mlp_dim=2816),
    "xl": dict(emb_dim=2048, num_heads=32, mlp_dim=5120),
    "xxl": dict(emb_dim=4096, num_heads=64, mlp_dim=10240),
}


def make_checkpoint(path: Path, size: str) -> int:
    """Random t5x-legacy checkpoint of `size`, one tensor in memory at a time; bytes."""
    cfg = T5Config(
        head_dim=64, num_encoder_layers=24, num_decoder_layers=24, dtype="float32", **SIZES[size]
    )
    shapes = expected_shapes(cfg)
    rng = np.random.default_rng(0)
    path.mkdir(parents=True)
    leaves, total, t0 = {}, 0, time.perf_counter()
    for i, (name, shape) in enumerate(sorted(shapes.items())):
        rel = "target." + name.replace("/", ".")
        spec = {
            "driver": "zarr",
            "kvstore": {"driver": "file", "path": rel},
            "metadata": {
                "shape": list(shape),
                "chunks": list(_chunks(shape)),
                "dtype": "<f4",
                "compressor": None,
            },
        }
        a = rng.random(shape, dtype=np.float32) - 0.5
        store = ts.open(
            {**spec, "kvstore": {"driver": "file", "path": str(path / rel)}}, create=True
        ).result()
        store.write(a).result()
        total += a.nbytes
        leaves[name] = spec
        if i % 100 == 0:
            print(
                f"  generating {size}: {i}/{len(shapes)} tensors, {total / 1e9:.1f} GB, "
                f"{total / 1e6 / (time.perf_counter() - t0):.0f} MB/s",
                flush=True,
            )
    state = {
        "version": 3,
        "optimizer": {
            "target": orbax_params.unflatten(leaves),
            "state": {"step": np.int32(1_000_000)},
        },
    }
    (path / "checkpoint").write_bytes(serialization.msgpack_serialize(state))
    return total


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    # About 64 MB chunks along the first axis, as t5x chunks large arrays.
    rows = max(1, min(shape[0], (16 * 2**20) // max(1, int(np.prod(shape[1:])))))
    return (rows, *shape[1:])


def run_convert(src: Path, out: Path, g: int) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "gqa_t5.convert",
        "--input",
        str(src),
        "--output",
        str(out),
        "--num_kv_heads",
        str(g),
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"conversion failed with status {status}")
    return {"seconds": round(dt, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["large", "xl"], choices=sorted(SIZES))
    p.add_argument("--num_kv_heads", type=int, default=8)
    p.add_argument("--workdir", default="/tmp/gqa_t5_convert_bench")
    p.add_argument("--out", default="benchmarks/convert_memory.json")
    args = p.parse_args()
    work = Path(args.workdir)
    results = []
    for size in args.sizes:
        shutil.rmtree(work, ignore_errors=True)
        src, out = work / f"t5_1_1_{size}", work / f"t5_1_1_{size}_gqa{args.num_kv_heads}"
        t0 = time.perf_counter()
        nbytes = make_checkpoint(src, size)
        gen_s = time.perf_counter() - t0
        r = run_convert(src, out, args.num_kv_heads)
        r.update(
            size=size,
            input_format="t5x",
            input_gb=round(nbytes / 1e9, 2),
            params_million=round(nbytes / 4e6, 1),
            num_kv_heads=args.num_kv_heads,
            mb_per_s=round(nbytes / 1e6 / r["seconds"], 1),
            output_gb=round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e9, 2),
            generate_seconds=round(gen_s, 1),
        )
        results.append(r)
        print(
            f"{size}: {r['input_gb']} GB in {r['seconds']}s ({r['mb_per_s']} MB/s), "
            f"peak RSS {r['peak_rss_mib']} MiB",
            flush=True,
        )
        shutil.rmtree(work, ignore_errors=True)
    record = {
        "benchmark": "gqa-t5-convert peak RSS and throughput (scripts/benchmark_convert.py)",
        "machine": f"{os.cpu_count()}-core CPU box, {platform.machine()}, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} "
        f"GiB RAM, local disk, shared with other jobs",
        "date": datetime.date.today().isoformat(),
        "note": "peak RSS is the converting subprocess's ru_maxrss (os.wait4); MB/s counts "
        "float32 input bytes over wall time including process start-up",
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
