#!/usr/bin/env bash
# Download into .whl/ (gitignored) the wheels a bare JAX GPU image (Python 3.12, x86_64,
# manylinux; it has jax, flax, optax, orbax, numpy, sentencepiece, sacrebleu, absl-py,
# etils, cloudpickle, protobuf, msgpack, click, joblib, regex, tqdm, six) lacks for the
# TF-free Grain path: gin-config, grain, array-record, rouge-score and their missing needs.
#   bash scripts/build_gpu_wheels.sh && du -sh .whl
# On the GPU machine, with .whl carried:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=.whl
rm -rf "$OUT" && mkdir -p "$OUT"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64 --platform any)
PINS=(gin-config==0.5.0 grain==0.2.18 array-record==0.8.6 nltk==3.9.1 portpicker==1.6.0
      defusedxml==0.7.1)
for pin in "${PINS[@]}"; do
  echo "downloading $pin"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d "$OUT" "$pin"
done
# rouge-score publishes an sdist only: build its pure-Python wheel here.
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" rouge-score==0.1.2 \
  || "$PY" -m pip wheel -q --no-deps -w "$OUT" rouge-score==0.1.2
ls -l "$OUT"
echo "summary: $(ls "$OUT" | wc -l) wheels, $(du -sh "$OUT" | cut -f1) in $OUT"
