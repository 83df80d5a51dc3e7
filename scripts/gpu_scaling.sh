#!/usr/bin/env bash
# Device call: how decode cost grows with input length and batch (XXL, GQA-8 and MHA).
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
F="grep -v -E ^(I0000|W0000|W1123|E1123)"
for S in 512 1024 4096; do
  timeout 170 python3 scripts/benchmark_decode.py --model xxl --groups 8,64 --input_len $S \
    --repeats 1 --no_ceilings --out "$OUT/scale_S$S.json" 2>&1 | $F | tail -2
done
for B in 1 8; do
  timeout 120 python3 scripts/benchmark_decode.py --model xxl --groups 8,64 --batch $B \
    --repeats 1 --no_ceilings --out "$OUT/scale_B$B.json" 2>&1 | $F | tail -2
done
