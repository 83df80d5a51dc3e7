#!/usr/bin/env bash
# Device call: Large decode sweep, the HF peer, and the training-throughput benchmark.
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
F="grep -v -E ^(I0000|W0000|W1123|E1123)"
timeout 200 python3 scripts/benchmark_decode.py --model large --groups 16,1,2,4,8 --check \
  --out "$OUT/decode_large.json" 2>&1 | $F | tail -8
timeout 150 python3 scripts/benchmark_train.py --model large --batch 64,128 --steps 8 \
  --attention_impl auto,xla --out "$OUT/train_large.json" 2>&1 | $F | tail -5
timeout 60 python3 scripts/benchmark_hf_peer.py --model large --batch 32 --cache dynamic \
  --out "$OUT/hf_peer.json" 2>&1 | $F | tail -2
timeout 90 python3 scripts/benchmark_hf_peer.py --model xxl --batch 8 --cache dynamic \
  --out "$OUT/hf_peer.json" 2>&1 | $F | tail -2
