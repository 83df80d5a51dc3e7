#!/usr/bin/env bash
# Every GPU measurement in benchmarks/ (one H100 unless noted), in the order they were taken.
# Each section fits one 10-minute device call; OUT is the folder that collects the JSON.
# Then: copy the JSON into benchmarks/raw/ and run scripts/summarize_benchmarks.py.
set -u
OUT=${OUT:-benchmarks/raw/new}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 NCCL_NVLS_ENABLE=0
run() { timeout "$1" "${@:2}" 2>&1 | grep -v -E '^(I0000|W0000|W1123|E1123)'; }
section=${1:-all}

if [[ $section == all || $section == xxl ]]; then  # decode, XXL, every G, with checks
  run 580 python3 scripts/benchmark_decode.py --model xxl --groups 8,64,1 --check --profile \
    --out "$OUT/decode_xxl_a.json"
  run 580 python3 scripts/benchmark_decode.py --model xxl --groups 2,4,16,32 \
    --out "$OUT/decode_xxl_b.json"
fi
if [[ $section == all || $section == large ]]; then  # decode, Large; the HF peer; training
  run 200 python3 scripts/benchmark_decode.py --model large --groups 16,1,2,4,8 --check \
    --out "$OUT/decode_large.json"
  run 110 python3 scripts/benchmark_hf_peer.py --model large --batch 32 --cache dynamic \
    --out "$OUT/hf_peer.json"
  run 100 python3 scripts/benchmark_hf_peer.py --model xxl --batch 8 --cache dynamic \
    --out "$OUT/hf_peer.json"
  run 240 python3 scripts/benchmark_train.py --model large --batch 64 --steps 8 \
    --attention_impl auto,xla --out "$OUT/train_large.json"
fi
if [[ $section == all || $section == scaling ]]; then  # cost against input length, batch
  for S in 512 1024 4096; do
    run 170 python3 scripts/benchmark_decode.py --model xxl --groups 8,64 --input_len $S \
      --repeats 1 --no_ceilings --out "$OUT/scale_S$S.json"
  done
  for B in 1 8; do
    run 120 python3 scripts/benchmark_decode.py --model xxl --groups 8,64 --batch $B \
      --repeats 1 --no_ceilings --out "$OUT/scale_B$B.json"
  done
fi
if [[ $section == two ]]; then  # on a two-GPU machine (nvidia-h200-x2)
  CUDA_VISIBLE_DEVICES=0 run 150 python3 scripts/benchmark_decode.py --model xxl --groups 8 \
    --out "$OUT/x2_single.json"
  for mode in batch kv_heads; do
    run 170 python3 scripts/benchmark_decode.py --model xxl --groups 8,64 --mesh $mode \
      --out "$OUT/x2_$mode.json"
  done
fi
if [[ $section == profile ]]; then  # session 2: where the missed targets' time goes
  run 200 python3 scripts/benchmark_train.py --model large --batch 64 --steps 6 --profile \
    --attention_impl auto --out "$OUT/train_profile.json"
  XLA_FLAGS=--xla_gpu_enable_triton_gemm=false run 150 python3 scripts/benchmark_train.py \
    --model large --batch 64 --steps 6 --attention_impl auto --out "$OUT/train_cublas.json"
  run 150 python3 scripts/benchmark_decode.py --model large --groups 1,8 --profile \
    --out "$OUT/decode_large_profile.json"
  XLA_FLAGS=--xla_gpu_enable_triton_gemm=false run 100 python3 scripts/benchmark_decode.py \
    --model large --groups 1 --no_ceilings --out "$OUT/decode_large_cublas.json"
fi
# session 2: cuDNN attention checks and the packed train step. (Run at commit 6d903fe, when
# packed rows used segment codes: raw/*segment_codes*; now packed rows use the mask.)
if [[ $section == packed ]]; then
  run 150 python3 scripts/check_attention_gpu.py --out "$OUT/check_attention.json"
  XLA_FLAGS="--xla_dump_to=/tmp/xla_dump --xla_dump_hlo_as_text" run 220 python3 \
    scripts/benchmark_train.py --model large --batch 64 --steps 6 --profile \
    --attention_impl auto --out "$OUT/train_segments.json"
  run 120 python3 scripts/benchmark_train.py --model tiny --batch 16 --steps 2 \
    --attention_impl auto,xla --out "$OUT/train_tiny_loss_check.json"
fi
if [[ $section == session2_a ]]; then  # session 2: annotated train profile; XXL at 4096
  XLA_FLAGS="--xla_dump_to=/tmp/xla_dump --xla_dump_hlo_as_text" run 240 python3 \
    scripts/benchmark_train.py --model large --batch 64 --steps 6 --profile \
    --attention_impl auto --out "$OUT/train_large_profile.json"
  run 330 python3 scripts/benchmark_decode.py --model xxl --groups 8,64 --input_len 4096 \
    --repeats 1 --no_ceilings --out "$OUT/scale_S4096.json"
fi
if [[ $section == session2_b ]]; then  # session 2: XXL and Large decode after the lengths fix
  run 240 python3 scripts/benchmark_decode.py --model xxl --groups 8,64,1 --check \
    --out "$OUT/decode_xxl.json"
  run 90 python3 scripts/benchmark_decode.py --model xxl --groups 64 --input_len 4096 \
    --repeats 1 --no_ceilings --out "$OUT/scale_S4096_mha.json"
  run 200 python3 scripts/benchmark_decode.py --model large --groups 16,1,2,4,8 --check \
    --out "$OUT/decode_large.json"
fi
if [[ $section == session2_c ]]; then  # session 2: the rest of XXL G and input lengths
  run 200 python3 scripts/benchmark_decode.py --model xxl --groups 2,4,16,32 \
    --out "$OUT/decode_xxl_b.json"
  for S in 512 1024; do
    run 170 python3 scripts/benchmark_decode.py --model xxl --groups 8,64 --input_len $S \
      --repeats 1 --no_ceilings --out "$OUT/scale_S$S.json"
  done
fi
if [[ $section == session2_d ]]; then  # session 2: batch 1 and 8
  for B in 1 8; do
    run 150 python3 scripts/benchmark_decode.py --model xxl --groups 8,64 --batch $B \
      --repeats 1 --no_ceilings --out "$OUT/scale_B$B.json"
  done
fi
if [[ $section == fused ]]; then  # session 2: fused q/k/v and MLP-input kernels in decode steps
  run 200 python3 scripts/benchmark_decode.py --model large --groups 16,1,2,4,8 --check \
    --out "$OUT/decode_large_fused.json"
  run 80 python3 scripts/benchmark_decode.py --model large --groups 1,8 --no_fuse \
    --no_ceilings --out "$OUT/decode_large_unfused.json"
  run 240 python3 scripts/benchmark_decode.py --model xxl --groups 8,64,1 --check \
    --out "$OUT/decode_xxl_fused.json"
fi
if [[ $section == fused_rest ]]; then  # session 2: the remaining G with fused kernels
  run 90 python3 scripts/benchmark_decode.py --model large --groups 8 \
    --out "$OUT/decode_large_fused_g8.json"
  run 240 python3 scripts/benchmark_decode.py --model xxl --groups 2,4,16,32 \
    --out "$OUT/decode_xxl_fused_b.json"
fi
