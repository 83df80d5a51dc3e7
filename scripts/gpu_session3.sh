#!/usr/bin/env bash
# Device call: training throughput, the HF peer, and a command-buffer experiment.
set -u
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
F="grep -v -E ^(I0000|W0000|W1123|E1123)"
timeout 110 python3 scripts/benchmark_hf_peer.py --model large --batch 32 --cache dynamic \
  --out "$OUT/hf_peer.json" 2>&1 | $F | tail -2
timeout 100 python3 scripts/benchmark_hf_peer.py --model xxl --batch 8 --cache dynamic \
  --out "$OUT/hf_peer.json" 2>&1 | $F | tail -2
timeout 250 python3 scripts/benchmark_train.py --model large --batch 64 --steps 8 \
  --attention_impl auto,xla --out "$OUT/train_large.json" 2>&1 | $F | tail -6
XLA_FLAGS="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL --xla_gpu_graph_min_graph_size=1" \
timeout 100 python3 scripts/benchmark_decode.py --model large --groups 1 --no_ceilings \
  --out "$OUT/decode_large_cmdbuf.json" 2>&1 | $F | tail -3
