"""Held-out loss of every checkpoint a reproduction run reached, with paired bootstrap CIs.

    python scripts/summarize_heldout.py runs/realtext/small8 \
        --out benchmarks/realtext_h200/heldout.json

Reads each `heldout/<name>/per_example.json` (NLL sum and target tokens per example, the
same examples for every checkpoint), resamples examples jointly (paired), and writes the
loss of each checkpoint, its difference from MHA, and the grid's comparisons at equal
uptraining (GQA-G - MQA and GQA-4 - GQA-2 with mean pooling; first - mean and random -
first for MQA), as {estimate, 95% CI}. Works on a grid cut short, where table1 has few rows.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
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

    names = sorted(measures, key=_order)
    losses = {k: entry(measures[k].estimate, measures[k].replicates) for k in names}

    def diff(a: str, b: str) -> dict:
        ma, mb = measures[a], measures[b]
        return entry(ma.estimate - mb.estimate, ma.replicates - mb.replicates)

    base = "mha-mean"
    versus_mha = {k: diff(k, base) for k in names if k != base and base in measures}
    pairs = {}
    parsed = {k: _parse(k) for k in names}
    for a in names:
        for b in names:
            (ga, ma_, xa), (gb, mb_, xb) = parsed[a], parsed[b]
            if a == b or xa != xb or base in (a, b):
                continue
            grouped = ma_ == mb_ == "mean" and ga > gb
            methods = ga == gb == 1 and (ma_, mb_) in (("first", "mean"), ("random", "first"))
            if grouped or methods:
                pairs[f"{a} - {b}"] = diff(a, b)
    n, tokens = (
        next(iter(per_example.values())).shape[0],
        int(next(iter(per_example.values()))[:, 1].sum()),
    )
    return {
        "examples": n,
        "target_tokens": tokens,
        "bootstrap": {"samples": samples, "seed": seed, "paired": True},
        "loss": losses,
        "minus_mha": versus_mha,
        "differences": pairs,
    }


_NAME = re.compile(r"^(mha|mqa|gqa(\d+))-(mean|first|random)(?:-([0-9.]+))?$")
_METHODS = ("mean", "first", "random")


def _parse(name: str) -> tuple[int, str, float]:
    """'gqa2-mean-0.05' -> (2, 'mean', 0.05); MHA sorts first (G = 10**6); alpha 0 if none."""
    m = _NAME.match(name)
    if not m:
        return (0, name, 0.0)
    g = 10**6 if m.group(1) == "mha" else 1 if m.group(1) == "mqa" else int(m.group(2))
    return (g, m.group(3), float(m.group(4) or 0))


def _order(name: str) -> tuple:
    g, method, alpha = _parse(name)
    return (alpha, _METHODS.index(method) if method in _METHODS else 3, -g, name)


def to_markdown(summary: dict) -> str:
    def ci(v: dict, fmt: str) -> str:
        lo, hi = v["ci95"]
        return f"{v['estimate']:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"

    minus = summary.get("minus_mha", {})
    lines = [
        "| checkpoint | uptraining α | held-out loss [95% CI] | minus MHA [95% CI] |",
        "|---|---|---|---|",
    ]
    for k, v in summary["loss"].items():
        alpha = _parse(k)[2]
        vs = ci(minus[k], "+.3f") if k in minus else "-"
        lines.append(f"| {k} | {alpha:g} | {ci(v, '.3f')} | {vs} |")
    lines += ["", "| difference (equal uptraining) | estimate [95% CI] |", "|---|---|"]
    for k, v in summary["differences"].items():
        lines.append(f"| {k} | {ci(v, '+.3f')} |")
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
