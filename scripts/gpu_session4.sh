#!/usr/bin/env bash
# Device call: the rest of the XXL groups-vs-time sweep, then training throughput.
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
F="grep -v -E ^(I0000|W0000|W1123|E1123)"
timeout 230 python3 scripts/benchmark_decode.py --model xxl --groups 2,4,16,32 \
  --out "$OUT/decode_xxl_d.json" 2>&1 | $F | tail -6
timeout 240 python3 scripts/benchmark_train.py --model large --batch 64 --steps 8 \
  --attention_impl auto,xla --out "$OUT/train_large.json" 2>&1 | $F | tail -6
