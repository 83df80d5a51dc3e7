#!/usr/bin/env bash
# Issue 16 on one H200, one or more sections per device call (each call under 10 minutes;
# times as measured 2026-12-02 and 03, sessions 5-8). Every part writes its JSON into a
# work folder; the folder comes back as ONE file, $OUT/<section>.tar.xz (a call returns at
# most 8 files); the tarball is rewritten after every part, so a call cut short still brings
# back the parts that finished; a failing or timed-out part (its exit status is printed) does
# not stop the others.
#   OUT=/tmp/out bash scripts/gpu_issue16.sh kernel     # ~8 min: ceilings, kernel checks
#       (bf16, float32, Pallas combine), GB/s, launch sweep (writes best.json), MQA-Large
#       decode with the kernel and with the Pallas combine (each profiled, kernels by op)
#   OUT=... bash scripts/gpu_issue16.sh xxl8            # ~5 min: GQA-8-XXL, both kernels
#       / both with the Pallas combine (each profiled, kernels named by op) / XLA attention
#       (cross-only and cuBLAS variants: measured 2026-12-02, NOTES.md entry 16)
#   OUT=... bash scripts/gpu_issue16.sh xxl_all         # ~8 min: every G, 1..64
#   KV_GROUPS=8,16 OUT=... bash scripts/gpu_issue16.sh large_all  # ~60 s a G, 5 G: ~5 min
#   OUT=... bash scripts/gpu_issue16.sh peer            # HF static and dynamic cache
#   OUT=... bash scripts/gpu_issue16.sh train           # every T5.1.1 size's training MFU
#   OUT=... bash scripts/gpu_issue16.sh ab              # ~7 min: the XXL peer at batch 32
#       (the fair setting), then training with the output layer's products in float32 vs
#       bfloat16 (T5Config.logits_dot), small8 batch 128 and Large batch 64, side by side
# Several sections can share one call (`... peer large_all`): they run in this file's
# order into one work folder, $OUT/<s1>-<s2>.tar.xz, and BUDGET (seconds, default 580) caps the
# call: each part's time limit is cut to what is left of it, so the call ends inside the
# device tool's 10 minutes with every finished part packed. BUDGET counts from this
# script's start: take off what the device command spends before it (the wheel install,
# ~10 s).
# KERNEL=xla|pallas_cross|pallas picks the decode kernel of the *_all sections (default
# pallas); BEST='{"block_k": ..}' forces launch parameters on every decode run (default '{}':
# the kernel picks them by the query rows a program holds, decode_attention.LAUNCH_BY_ROWS).
# The kernel section's sweep writes its best at GQA-8-XXL's shape to best.json but does not
# apply it: forced on every shape it would undo the per-row choice (MQA-XXL 4.12 against
# 3.90 ms a step, NOTES.md entry 18).
set -u
sections=("${@:-kernel}")
for s in "${sections[@]}"; do
  case $s in kernel|xxl8|xxl_all|large_all|peer|train|ab) ;;
    *) echo "gpu_issue16.sh: unknown section '$s'; use kernel, xxl8, xxl_all, large_all, peer, train or ab" >&2; exit 2;;
  esac
done
section=$(IFS=-; echo "${sections[*]}")
BUDGET=${BUDGET:-580}
if ! [[ $BUDGET =~ ^[1-9][0-9]*$ ]] || (( BUDGET < 60 )); then
  echo "gpu_issue16.sh: BUDGET='$BUDGET' must be whole seconds >= 60 (e.g. BUDGET=580)" >&2; exit 2
fi
has() { [[ " ${sections[*]} " == *" $1 "* ]]; }
OUT=${OUT:-benchmarks/raw/issue16}; mkdir -p "$OUT"
W=/tmp/issue16_$section; rm -rf "$W"; mkdir -p "$W"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 NCCL_NVLS_ENABLE=0
pack() { tar -C "$W" -cJf "$OUT/$section.tar.xz.tmp" . && mv "$OUT/$section.tar.xz.tmp" "$OUT/$section.tar.xz"; }
run() {
  local left=$((BUDGET - 25 - SECONDS)) lim=$1
  (( left < lim )) && lim=$left
  if (( lim < 20 )); then echo "!! skipped (call budget spent): ${*:2:3}"; return; fi
  timeout -k 10 "$lim" "${@:2}" 2>&1 | grep -v -E '^(I0000|W0000|W1123|E1123)' | tail -n 40
  local rc=${PIPESTATUS[0]}; [[ $rc == 0 ]] || echo "!! exit $rc (124: timed out after $lim s): ${*:2:3}"
  pack
}
stamp() { echo "== $1 at $SECONDS s"; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv \
  > "$W/nvidia_smi.csv" 2>&1
python3 -c "import jax; print(jax.__version__)" > "$W/jax.txt" 2>&1
git rev-parse HEAD > "$W/commit.txt" 2>/dev/null
BEST=${BEST:-'{}'}
# Ceilings measured in the kernel section and reused (the floor is max(copy, 4.3 TB/s));
# the default is what that section measured on 2026-12-02.
CEIL=${CEIL:-'{"copy_GBps": 3152.2, "read_GBps": 4285.6, "bf16_matmul_TFLOPs": 663.8, "floor_GBps": 4300.0}'}
dec() { run "$1" python3 scripts/benchmark_decode.py --check --ceilings_json "$CEIL" "${@:2}"; }
with_combine() { python3 -c 'import json, sys; print(json.dumps({**json.loads(sys.argv[1]), "combine": "pallas"}))' "$1"; }
# MODEL G T: the Pallas kernels as planned, then with the Pallas split combine, each
# profiled with kernels named by op (an HLO dump folder of its own; T the time limit of each),
# so the profiles show which kernels the combine removes.
profiled_and_combine() {
  local v p
  for v in pallas pallas_combine; do
    p=$BEST; [[ $v == pallas_combine ]] && p=$(with_combine "$BEST")
    rm -rf "/tmp/dump_$1_g$2_$v"
    XLA_FLAGS="${XLA_FLAGS:-} --xla_dump_to=/tmp/dump_$1_g$2_$v" dec "$3" --model "$1" \
      --groups "$2" --profile --decode_kernel pallas --kernel_params "$p" \
      --out "$W/decode_$1_g$2_$v.json"
  done
}

if has kernel; then
  stamp kernel
  run 320 python3 scripts/gpu_kernel_check.py --out "$W/kernel.json" --best "$W/best.json"
  measured=$(python3 -c "import json; print(json.dumps(json.load(open('$W/kernel.json'))['ceilings']))" 2>/dev/null) && CEIL=$measured
  echo "ceilings: $CEIL"; echo "sweep best at GQA-8-XXL (recorded, not applied): $(cat "$W/best.json" 2>/dev/null)"
  stamp large
  profiled_and_combine large 1 100
fi
if has xxl8; then
  stamp xxl8
  profiled_and_combine xxl 8 130
  dec 100 --model xxl --groups 8 --decode_kernel xla --out "$W/decode_xxl_g8_xla.json"
fi
for section_ in xxl_all large_all; do
  has $section_ || continue
  model=${section_%_all}
  groups=${KV_GROUPS:-$([[ $model == xxl ]] && echo 1,2,4,8,16,32,64 || echo 1,2,4,8,16)}
  k=${KERNEL:-pallas}
  dec 540 --model "$model" --groups "$groups" --decode_kernel "$k" --kernel_params "$BEST" \
    --out "$W/decode_${model}_all_$k.json"
done
if has peer; then
  run 300 python3 scripts/benchmark_hf_peer.py --model xxl --batch 8 --cache static,dynamic \
    --out "$W/hf_peer.json"
  run 200 python3 scripts/benchmark_hf_peer.py --model large --batch 32 --cache static,dynamic \
    --out "$W/hf_peer.json"
fi
if has train; then
  for m in small small8 base large; do
    run 140 python3 scripts/benchmark_train.py --model $m --batch 64,128,256 --steps 8 \
      --attention_impl auto --out "$W/train_$m.json"
  done
fi
if has ab; then
  stamp ab
  run 200 python3 scripts/benchmark_hf_peer.py --model xxl --batch 32 --cache static,dynamic \
    --out "$W/hf_peer_b32.json"
  run 120 python3 scripts/benchmark_train.py --model small8 --batch 128 --steps 8 --repeats 3 \
    --attention_impl auto --logits_dot float32,bfloat16 --out "$W/train_ab_small8.json"
  run 220 python3 scripts/benchmark_train.py --model large --batch 64 --steps 8 --repeats 3 \
    --attention_impl auto --logits_dot float32,bfloat16 --out "$W/train_ab_large.json"
fi
stamp summary
python3 - "$W" <<'PY'
import glob, json, sys
out = sys.argv[1]
def kern(r):  # the decode kernel, and whether the Pallas combine merged its splits
    return r["decode_kernel"] + ("+comb" if r.get("kernel_tuning", {}).get("combine") == "pallas" else "")
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
        print(f"decode {r['model']:5} G={r['num_kv_heads']:<2} {kern(r):17} "
              f"{r['ms_per_step']:6.2f} ms/step {r['s_per_sample']:.4f} s/sample "
              f"floor {100 * r['fraction_of_floor']:5.1f}% enc/mm {100 * (r.get('encoder_of_matmul') or 0):4.1f}% "
              f"check {chk.get('decode_vs_f32_xla', float('nan')):.1e}/{chk.get('bf16_xla_vs_f32_xla', float('nan')):.1e}")
for p in sorted(glob.glob(f"{out}/decode_*.json")):
    for r in json.load(open(p)).get("runs", []):
        cats = r.get("profile_fill_and_decode", {}).get("by_category", {})
        for name, v in sorted(cats.items(), key=lambda kv: -kv[1]["total_us"])[:6]:
            print(f"profile {kern(r):17} {name:22} {v['count']:6} kernels "
                  f"{v['total_us'] / r['output_len'] / 1e3:6.3f} ms/step")
for p in glob.glob(f"{out}/hf_peer*.json"):
    for r in json.load(open(p)):
        print(f"peer {r['model']} B={r['batch']} {r['cache']} {r.get('s_per_sample', 0):.3f} s/sample {r.get('error', '')[:100]}")
for p in glob.glob(f"{out}/train_*.json"):
    for r in json.load(open(p)).get("runs", []):
        print(f"train {r.get('model')} B={r.get('batch')} {r.get('logits_dot', '')} MFU {100 * (r.get('mfu_vs_datasheet') or 0):.1f}% "
              f"{r.get('tokens_per_s', 0):.0f} tok/s {r.get('error', '')[:100]}")
PY
pack && echo "wrote $OUT/$section.tar.xz"
