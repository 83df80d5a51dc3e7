#!/usr/bin/env bash
# Issue 16 on one H200, in about 8.5 minutes: ceilings, the Pallas decode-attention kernel
# (correctness against XLA and float32 on the GPU, GB/s, a launch sweep), GQA-8-XXL and
# MQA-Large decode with and without it, and T5.1.1-small-with-8-heads training MFU.
# Every part writes JSON under $OUT; a failing part does not stop the others.
#   OUT=/tmp/out bash scripts/gpu_issue16.sh          # the ~8.5-minute first call
# Later calls (each under 10 minutes): `... gpu_issue16.sh peer` (HF peer, static and
# dynamic cache, full-length warm-up), `KERNEL=xla|pallas_cross|pallas ... xxl_all` or
# `large_all` (every G with one decode-kernel setting; BEST='{"block_k": ..}' passes the
# launch parameters the first call found), `train` (every T5.1.1 size's training MFU).
set -u
section=${1:-main}
OUT=${OUT:-benchmarks/raw/issue16}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 NCCL_NVLS_ENABLE=0
run() { timeout "$1" "${@:2}" 2>&1 | grep -v -E '^(I0000|W0000|W1123|E1123)' | tail -n 40; }
t0=$SECONDS
stamp() { echo "== $1 at $((SECONDS - t0)) s"; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv \
  > "$OUT/nvidia_smi.csv" 2>&1
python3 -c "import jax; print(jax.__version__)" > "$OUT/jax.txt" 2>&1

if [[ $section == main ]]; then
stamp kernel
run 130 python3 scripts/gpu_kernel_check.py --out "$OUT/kernel.json" --best "$OUT/best.json"
CEIL=$(python3 -c "import json; print(json.dumps(json.load(open('$OUT/kernel.json')).get('ceilings', {})))" 2>/dev/null || echo '{}')
BEST=$(cat "$OUT/best.json" 2>/dev/null || echo '{}')
echo "ceilings: $CEIL"; echo "best: $BEST"
# GQA-8-XXL side by side: the kernel for cross-attention (profiled), for both attentions,
# the XLA path, and the cross kernel with every GEMM in cuBLAS (residual adds fold into
# its beta). One process each; a failure leaves the others.
stamp xxl
run 110 python3 scripts/benchmark_decode.py --model xxl --groups 8 --check --profile \
  --decode_kernel pallas_cross --kernel_params "$BEST" --ceilings_json "$CEIL" \
  --out "$OUT/decode_xxl_g8_pallas_cross.json"
run 70 python3 scripts/benchmark_decode.py --model xxl --groups 8 --check \
  --decode_kernel pallas --kernel_params "$BEST" --ceilings_json "$CEIL" \
  --out "$OUT/decode_xxl_g8_pallas.json"
run 60 python3 scripts/benchmark_decode.py --model xxl --groups 8 --check \
  --decode_kernel xla --ceilings_json "$CEIL" --out "$OUT/decode_xxl_g8_xla.json"
XLA_FLAGS=--xla_gpu_enable_triton_gemm=false run 70 python3 scripts/benchmark_decode.py \
  --model xxl --groups 8 --check --decode_kernel pallas_cross --kernel_params "$BEST" \
  --ceilings_json "$CEIL" --out "$OUT/decode_xxl_g8_pallas_cross_cublas.json"
stamp large
run 50 python3 scripts/benchmark_decode.py --model large --groups 1 --check --profile \
  --decode_kernel pallas --kernel_params "$BEST" --ceilings_json "$CEIL" \
  --out "$OUT/decode_large_g1_pallas.json"
run 35 python3 scripts/benchmark_decode.py --model large --groups 1 --check \
  --decode_kernel xla --ceilings_json "$CEIL" --out "$OUT/decode_large_g1_xla.json"
stamp train_small8
run 80 python3 scripts/benchmark_train.py --model small8 --batch 128 --steps 8 \
  --attention_impl auto --profile --out "$OUT/train_small8.json"  # + per-kernel profile
fi
BEST=${BEST:-'{}'}
if [[ $section == peer ]]; then
  run 300 python3 scripts/benchmark_hf_peer.py --model xxl --batch 8 --cache static,dynamic \
    --out "$OUT/hf_peer.json"
  run 200 python3 scripts/benchmark_hf_peer.py --model large --batch 32 --cache static,dynamic \
    --out "$OUT/hf_peer.json"
fi
if [[ $section == xxl_all || $section == large_all ]]; then
  model=${section%_all}; groups=$([[ $model == xxl ]] && echo 1,2,4,8,16,32,64 || echo 1,2,4,8,16)
  for k in ${KERNEL:-pallas_cross}; do  # one kernel setting per 10-minute call
    run 580 python3 scripts/benchmark_decode.py --model $model --groups $groups --check \
      --decode_kernel $k --kernel_params "$BEST" --out "$OUT/decode_${model}_all_$k.json"
  done
fi
if [[ $section == train ]]; then
  for m in small small8 base large; do
    run 140 python3 scripts/benchmark_train.py --model $m --batch 64,128,256 --steps 8 \
      --attention_impl auto --out "$OUT/train_$m.json"
  done
fi
stamp summary
python3 - "$OUT" <<'PY'
import glob, json, sys
out = sys.argv[1]
k = json.load(open(f"{out}/kernel.json")) if glob.glob(f"{out}/kernel.json") else {}
c = k.get("ceilings", {})
print(f"ceilings copy {c.get('copy_GBps', 0):.0f} read {c.get('read_GBps', 0):.0f} GB/s, "
      f"matmul {c.get('bf16_matmul_TFLOPs', 0):.0f} TFLOP/s; floor at {c.get('floor_GBps', 0):.0f}")
for r in k.get("check", []):
    print(f"check {r['shape']:16} ok={r['ok']} pallas/f32 {r['pallas_vs_f32']:.1e} xla/f32 {r['xla_vs_f32']:.1e}")
for r in k.get("speed", []):
    print(f"attn  {r['shape']:16} {r['impl']:6} {r['us']:7.1f} us {r['GBps']:5.0f} GB/s")
for e in k.get("errors", []):
    print("kernel ERROR", e["part"], e["error"][:150])
for p in sorted(glob.glob(f"{out}/decode_*.json")):
    for r in json.load(open(p)).get("runs", []):
        if "error" in r:
            print(f"decode {p.split('/')[-1]:34} ERROR {r['error'][:90]}")
            continue
        chk = r.get("check_rel_err", {})
        print(f"decode {r['model']:5} G={r['num_kv_heads']:<2} {r['decode_kernel']:12} "
              f"{r['ms_per_step']:6.2f} ms/step {r['s_per_sample']:.4f} s/sample "
              f"floor {100 * r['fraction_of_floor']:5.1f}% enc/mm {100 * (r.get('encoder_of_matmul') or 0):4.1f}% "
              f"check {chk.get('decode_vs_f32_xla', float('nan')):.1e}/{chk.get('bf16_xla_vs_f32_xla', float('nan')):.1e}")
for p in sorted(glob.glob(f"{out}/decode_*.json")):
    for r in json.load(open(p)).get("runs", []):
        cats = r.get("profile_fill_and_decode", {}).get("by_category", {})
        for name, v in sorted(cats.items(), key=lambda kv: -kv[1]["total_us"])[:6]:
            print(f"profile {r['decode_kernel']:12} {name:22} {v['count']:6} kernels "
                  f"{v['total_us'] / r['output_len'] / 1e3:6.3f} ms/step")
for p in glob.glob(f"{out}/train_*.json"):
    for r in json.load(open(p)).get("runs", []):
        print(f"train {r.get('model')} B={r.get('batch')} MFU {100 * (r.get('mfu_vs_datasheet') or 0):.1f}% "
              f"{r.get('tokens_per_s', 0):.0f} tok/s {r.get('error', '')[:100]}")
PY
