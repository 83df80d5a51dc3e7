#!/usr/bin/env bash
# The real-text reproduction (gin/reproduce/realtext.gin) on one GPU of a bare JAX machine
# (no TensorFlow, seqio or gin-config): carried wheels, the xz data bundle, a TF-free Grain
# export, then the pipeline in its own process session so that later calls only watch it.
#
# Here, once:   bash scripts/build_gpu_wheels.sh                      # -> .whl/ (6 MB)
#               python scripts/build_offline_corpus.py --pack .device/realtext   # xz bundle
# Device calls (carry .whl and .device/realtext), each well under 10 minutes:
#   bash scripts/gpu_realtext.sh start [GIN]    # install, export, launch; GIN default realtext.gin
#                                               # (WORKERS=4: grid points on 4 processes)
#   bash scripts/gpu_realtext.sh restart [GIN]  # stop the pipeline (it saves), start again
#   bash scripts/gpu_realtext.sh watch SECONDS  # wait (returns early when the run ends), then
#                                               # pack results into $OUT/realtext_results.tar.gz
# The stages are resumable: if the machine is lost, `start` again re-runs from what is left
# on it (a fresh machine starts from pre-training; the run is seeded).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/realtext_out}
RUN=runs/realtext
GRAIN=runs/realtext_grain
BUNDLE=${REALTEXT_BUNDLE:-.device/realtext}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_MEM_FRACTION=0.9
export GQA_T5_REALTEXT_DIR=$BUNDLE PYTHONPATH=/tmp/site:$PWD
mkdir -p "$OUT" runs
PIPELINE="gqa_t5.reproduce|multiprocessing.spawn"  # the pipeline and its worker processes

setup() {
  if [[ ! -d /tmp/site/grain ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || { echo "error: wheel install failed" >&2; exit 1; }
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
}

export_all() {  # pre-training corpus and the fine-tuning mixture (with its tasks), in parallel
  local t pids=()
  for t in realtext_span_corruption realtext_mixture; do
    [[ -f $GRAIN/$t/validation/metadata.json ]] && continue
    python3 -m gqa_t5.export --task=$t --split=train --split=validation --out_dir=$GRAIN \
      --source=provider --overwrite > "runs/export_$t.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { tail -n 3 runs/export_*.log; exit 1; }; done
  tail -qn1 runs/export_*.log
}

pack() {  # everything small that the run wrote, in one file (the device returns 8 at most)
  tar -czf "$OUT/realtext_results.tar.gz" --exclude='*/checkpoint*' --exclude='*/model/*' \
    --exclude='.jax_cache' --exclude='*.array_record' --exclude='.lock' \
    $(cd runs && ls -d realtext realtext.log export_*.log 2>/dev/null | sed 's|^|runs/|') \
    2>/dev/null
  ls -l "$OUT"
}

case ${1:-} in
  restart)  # after a code fix: SIGTERM saves the running stage's checkpoint, then start again
    pkill -TERM -f "$PIPELINE"  # training stages save a checkpoint; the parent stops its pool
    for _ in $(seq 120); do pgrep -f "$PIPELINE" > /dev/null || break; sleep 1; done
    pkill -KILL -f "$PIPELINE"
    exec bash "$0" start "${@:2}"
    ;;
  start)
    t0=$(date +%s)
    setup
    export_all
    echo "exports ready in $(( $(date +%s) - t0 ))s"
    if pgrep -f "$PIPELINE" > /dev/null; then echo "already running"; exit 0; fi
    setsid nohup python3 -m gqa_t5.reproduce --gin_file="${2:-reproduce/realtext.gin}" \
      --output_dir=$RUN --workers="${WORKERS:-4}" > runs/realtext.log 2>&1 < /dev/null &
    sleep 60
    tail -n 5 runs/realtext.log
    ;;
  watch)
    end=$(( $(date +%s) + ${2:-500} ))
    while (( $(date +%s) < end )) && pgrep -f "$PIPELINE" > /dev/null; do sleep 10; done
    grep -E "^\[|^==|summary|error" runs/realtext.log | tail -n 12
    grep -E "INFO step" runs/realtext.log | tail -n 2
    pgrep -f "$PIPELINE" > /dev/null && echo "still running" || echo "finished"
    pack
    ;;
  *)
    echo "usage: bash scripts/gpu_realtext.sh start [GIN] | restart [GIN] | watch SECONDS" >&2
    exit 2
    ;;
esac
