"""The peer: HuggingFace transformers' T5ForConditionalGeneration (PyTorch), same workload.

Random bf16 weights, greedy, input 2048, output 512 forced (min_new_tokens = max), for
each cache setting given, on one model. Each setting is warmed up with the full output
length first, so the timed run compiles nothing (a static cache compiles per shape). Needs
torch + transformers (the GPU image has both). One JSON line per run; `--out` collects them.

  python scripts/benchmark_hf_peer.py --model xxl --batch 8 --cache static,dynamic
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

SIZES = {
    "large": dict(d_model=1024, num_heads=16, num_layers=24, d_ff=2816),
    "xxl": dict(d_model=4096, num_heads=64, num_layers=24, d_ff=10240),
}


def build(model_name: str):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    s = SIZES[model_name]
    cfg = T5Config(
        vocab_size=32128,
        d_model=s["d_model"],
        d_kv=64,
        d_ff=s["d_ff"],
        num_layers=s["num_layers"],
        num_decoder_layers=s["num_layers"],
        num_heads=s["num_heads"],
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = T5ForConditionalGeneration(cfg).eval()
    torch.set_default_dtype(torch.float32)
    return model


def run(model, model_name: str, batch: int, cache: str, input_len: int, output_len: int) -> dict:
    import torch

    ids = torch.randint(2, 32128, (batch, input_len), device="cuda")
    kw = dict(do_sample=False, num_beams=1, max_new_tokens=output_len, min_new_tokens=output_len)
    if cache != "dynamic":
        kw["cache_implementation"] = cache
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(input_ids=ids, **kw)  # warm-up: the full length, as timed
        torch.cuda.synchronize()
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(input_ids=ids, **kw)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    return {
        "peer": "transformers T5ForConditionalGeneration",
        "model": model_name,
        "batch": batch,
        "cache": cache,
        "input_len": input_len,
        "output_len": output_len,
        "generated": int(out.shape[1]),
        "warmup_s": warm_s,
        "s_per_sample": dt / batch,
        "ms_per_step": dt / output_len * 1e3,
        "peak_bytes": torch.cuda.max_memory_allocated(),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="large", choices=sorted(SIZES))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--cache", default="static,dynamic", help="comma list: dynamic, static")
    ap.add_argument("--input_len", type=int, default=2048)
    ap.add_argument("--output_len", type=int, default=512)
    ap.add_argument("--out", default=None, help="append the JSON record to this list file")
    args = ap.parse_args(argv)
    caches = args.cache.split(",")
    bad = [c for c in caches if c not in ("static", "dynamic")]
    if bad:
        ap.error(f"--cache {bad} unknown; use static and/or dynamic")
    try:
        model = build(args.model)
    except Exception as e:  # noqa: BLE001 - an OOM is a result too
        model, err = None, f"{type(e).__name__}: {str(e)[:300]}"
    for cache in caches:
        try:
            if model is None:
                raise RuntimeError(err)
            rec = run(model, args.model, args.batch, cache, args.input_len, args.output_len)
        except Exception as e:  # noqa: BLE001 - an OOM is a result too
            rec = {
                "peer": "transformers",
                "model": args.model,
                "batch": args.batch,
                "cache": cache,
                "error": f"{type(e).__name__}: {str(e)[:300]}",
            }
        print(json.dumps(rec), flush=True)
        if args.out:
            path = pathlib.Path(args.out)
            runs = json.loads(path.read_text()) if path.exists() else []
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(runs + [rec], indent=1))
            os.replace(tmp, path)


if __name__ == "__main__":
    main()
