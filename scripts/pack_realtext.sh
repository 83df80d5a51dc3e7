#!/usr/bin/env bash
# Writes the xz-compressed real-text bundle for the GPU machine into DEST.
#   bash scripts/pack_realtext.sh DEST [DATA_DIR]
# DATA_DIR defaults to $GQA_T5_REALTEXT_DIR or data/realtext; finished build steps are
# skipped, so on a built corpus this only compresses. Point $GQA_T5_REALTEXT_DIR at DEST
# on the GPU machine: tasks/realtext.py reads the .jsonl.xz files directly.
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: bash scripts/pack_realtext.sh DEST [DATA_DIR]" >&2
  exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${2:-${GQA_T5_REALTEXT_DIR:-$here/data/realtext}}"
exec "${PYTHON:-python}" "$here/scripts/build_offline_corpus.py" --output_dir "$data" --pack "$1"
