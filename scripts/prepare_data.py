"""Check which task datasets are prepared and build the missing TFDS ones.

  python scripts/prepare_data.py --check                  # JSON status, exit 1 if any missing
  python scripts/prepare_data.py --build gqa_cnn_dailymail gqa_arxiv --data_dir /data/tfds
  python scripts/prepare_data.py --build all              # every TFDS task except C4

C4 (gqa_c4_span_corruption) needs an Apache Beam runner and is only built when named;
MediaSum is a manual download (the status message says where to put the files).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import tasks


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="print the status and exit")
    p.add_argument("--build", nargs="*", default=[], help="task names, or 'all'")
    p.add_argument("--data_dir", default=None, help="TFDS data dir (default $TFDS_DATA_DIR)")
    p.add_argument("--media_sum_dir", default=None, help="MediaSum JSON dir")
    p.add_argument("--beam_pipeline_options", default=None, help="passed to tfds build (C4)")
    p.add_argument("--out", default=None, help="also write the status JSON here")
    return p.parse_args(argv)


def _write_json(path: str, payload: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


def _targets(names: list[str]) -> list[str]:
    if names == ["all"]:
        return [n for n in tasks.TFDS_SPECS if n != tasks.C4_SPAN_CORRUPTION]
    unknown = [n for n in names if n not in tasks.TFDS_SPECS]
    if unknown:
        raise SystemExit(
            f"error: not TFDS-backed tasks: {unknown}; choose from {sorted(tasks.TFDS_SPECS)}"
        )
    return names


def _build(name: str, data_dir: str, beam_options: str | None) -> int:
    cmd = ["tfds", "build", tasks.TFDS_SPECS[name].tfds_name, f"--data_dir={data_dir}"]
    if name == tasks.C4_SPAN_CORRUPTION:
        if not beam_options:
            print(f"{name}: C4 needs --beam_pipeline_options (see README.md, ## Data)")
            return 2
        cmd.append(f"--beam_pipeline_options={beam_options}")
    print("running:", " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    data_dir = tasks.sources.tfds_data_dir(args.data_dir)
    failed = []
    names = _targets(args.build) if args.build else []
    for i, name in enumerate(names, 1):
        start = time.time()
        status = tasks.missing_data(data_dir, args.media_sum_dir)[name]
        if status is None:
            print(f"[{i}/{len(names)}] {name}: already prepared")
            continue
        rc = _build(name, data_dir, args.beam_pipeline_options)
        print(f"[{i}/{len(names)}] {name}: exit {rc} after {time.time() - start:.0f}s", flush=True)
        if rc:
            failed.append(name)
    status = tasks.missing_data(data_dir, args.media_sum_dir)
    payload = {"tfds_data_dir": data_dir, "missing": status, "build_failed": failed}
    print(json.dumps(payload, indent=2))
    if args.out:
        _write_json(args.out, payload)
    missing = [n for n, m in status.items() if m]
    print(f"summary: {len(status) - len(missing)}/{len(status)} datasets ready; missing: {missing}")
    return 1 if failed or (args.check and missing) else 0


if __name__ == "__main__":
    sys.exit(main())
