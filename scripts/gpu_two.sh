#!/usr/bin/env bash
# Device call on nvidia-h200-x2: XXL decode on one GPU, batch split over two, heads split.
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 NCCL_NVLS_ENABLE=0
F="grep -v -E ^(I0000|W0000|W1123|E1123)"
nvidia-smi -L
CUDA_VISIBLE_DEVICES=0 timeout 150 python3 scripts/benchmark_decode.py --model xxl --groups 8 \
  --out "$OUT/x2_single.json" 2>&1 | $F | tail -2
for mode in batch kv_heads; do
  timeout 170 python3 scripts/benchmark_decode.py --model xxl --groups 8,64 --mesh $mode \
    --out "$OUT/x2_$mode.json" 2>&1 | $F | tail -3
done
