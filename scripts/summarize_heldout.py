"""Held-out loss of every checkpoint a reproduction run reached, with paired bootstrap CIs.

    python scripts/summarize_heldout.py runs/realtext/small8 \
        --out benchmarks/realtext_h200/heldout.json

Reads each `heldout/<name>/per_example.json` (NLL sum and target tokens per example, the
same examples for every checkpoint), resamples examples jointly (paired), and writes the
loss of each checkpoint and each difference against MHA and between checkpoints of equal
uptraining, as {estimate, 95% CI}. Works on a grid cut short, where table1 has few rows.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gqa_t5 import uncertainty, utils  # noqa: E402


def load(stage_root: pathlib.Path) -> dict[str, np.ndarray]:
    """{checkpoint name: [n, 2] (NLL sum, tokens)} of every held-out stage that finished."""
    out = {}
    for done in sorted((stage_root / "heldout").glob("*/DONE.json")):
        per = json.loads((done.parent / "per_example.json").read_text())
        out[done.parent.name] = np.stack([per["nll"], per["targets"]], axis=1)
    if not out:
        raise SystemExit(f"error: no finished heldout/*/ stages under {stage_root}")
    return out


def summarise(per_example: dict[str, np.ndarray], samples: int, seed: int) -> dict:
    measures = uncertainty.loss_measures(per_example, samples, seed)

    def entry(value, reps) -> dict:
        lo, hi = uncertainty.percentile_ci(reps)
        return {"estimate": value, "ci95": [lo, hi]}

    names = list(measures)
    losses = {k: entry(m.estimate, m.replicates) for k, m in measures.items()}
    diffs = {}
    base = "mha-mean"
    for a in names:
        for b in names:
            same_stage = a.count("-") == b.count("-")  # converted vs converted, uptrained vs up
            if a < b and (base in (a, b) or same_stage):
                ma, mb = measures[a], measures[b]
                diffs[f"{a} - {b}"] = entry(
                    ma.estimate - mb.estimate, ma.replicates - mb.replicates
                )
    n, tokens = (
        next(iter(per_example.values())).shape[0],
        int(next(iter(per_example.values()))[:, 1].sum()),
    )
    return {
        "examples": n,
        "target_tokens": tokens,
        "bootstrap": {"samples": samples, "seed": seed, "paired": True},
        "loss": losses,
        "differences": diffs,
    }


def to_markdown(summary: dict) -> str:
    lines = ["| checkpoint | held-out loss (nats/token) [95% CI] |", "|---|---|"]
    for k, v in summary["loss"].items():
        lo, hi = v["ci95"]
        lines.append(f"| {k} | {v['estimate']:.3f} [{lo:.3f}, {hi:.3f}] |")
    lines += ["", "| difference | estimate [95% CI] |", "|---|---|"]
    for k, v in summary["differences"].items():
        lo, hi = v["ci95"]
        lines.append(f"| {k} | {v['estimate']:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage_root", help="<output_dir>/<size> of a reproduction run")
    p.add_argument("--out", required=True, help="JSON to write")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    summary = summarise(load(pathlib.Path(args.stage_root)), args.samples, args.seed)
    utils.write_json_atomic(args.out, summary)
    print(to_markdown(summary), end="")
    print(f"summary: {len(summary['loss'])} checkpoints -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
