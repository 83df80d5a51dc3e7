"""Compare conversion methods on the reproduction's pre-trained MHA model: held-out span
corruption loss right after conversion (alpha 0) and after a short uptraining.

    python -m scripts.eval_conversion --output_dir=runs/reproduce \
        --json=benchmarks/conversion_methods_default.json

Reuses (or runs) the recipe's pretrain stage under `<output_dir>/<size>/`; each conversion,
uptraining and evaluation is a stage of its own there (`convmethods/...`), skipped on re-run.
The loss is the token-weighted mean over the whole validation split (chapters held out of
pre-training), with a standard error over batches.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import pathlib
import sys
import time

import numpy as np

import gin
from gqa_t5 import conversion, convert, gin_utils, reproduce, utils

VARIANTS = (
    "mean",
    "first",
    "random",
    "weighted",
    "aligned",
    "aligned_weighted",
    "mean+similarity",
    "weighted+similarity",
    "weighted+cal",
    "aligned_weighted+cal",
)
CALIBRATION = ("kjv_span_corruption", 256)
LENGTHS = {"inputs": 128, "targets": 32}


def heldout_loss(pipe: reproduce.Pipeline, num_kv_heads: int, checkpoint: str) -> dict:
    """Token-weighted span-corruption loss on the validation split, SE over batches."""
    from gqa_t5 import data
    from gqa_t5 import eval as eval_lib

    lengths = LENGTHS
    model = gin_utils.model_from_gin(
        [pipe.r.model_gin], [*pipe.r.model_bindings, f"NUM_KV_HEADS = {num_kv_heads!r}"]
    )
    tr, params, _ = eval_lib.load_for_inference(model, checkpoint, *lengths.values())
    cfg = data.DatasetConfig(
        mixture_or_task_name="kjv_span_corruption",
        task_feature_lengths=lengths,
        split="validation",
        batch_size=32,
        shuffle=False,
        seed=42,
        pack=False,
        module="tasks",
    )
    losses, weights = [], []
    for batch in data.numpy_batches(data.get_dataset(cfg, num_epochs=1)):
        sums = tr.eval_step(params, batch)
        losses.append(float(sums["loss_sum"]) / float(sums["weight_sum"]))
        weights.append(float(sums["weight_sum"]))
    w = np.asarray(weights) / np.sum(weights)
    mean = float(np.sum(w * losses))
    se = float(np.std(losses, ddof=1) / math.sqrt(len(losses)))
    return {
        "loss": mean,
        "se": se,
        "batches": len(losses),
        "tokens": int(np.sum(weights)),
        "batch_losses": losses,  # same batches for every model: paired differences
    }


def run_variant(pipe, source: str, g, variant: str, uptrain_steps: int) -> dict:
    """g: one G or T5Config's per-layer form; variant: method[+similarity][+cal]."""
    method, *flags = variant.split("+")
    grouping = "similarity" if "similarity" in flags else "contiguous"
    cal = CALIBRATION if "cal" in flags else (None, 0)
    label = g if isinstance(g, int) else convert._g_text(g)
    name = f"convmethods/g{str(label).replace('/', 'x')}-{variant}"

    def do_convert(d: pathlib.Path) -> dict:
        record = convert.convert_checkpoint(
            source,
            d / "checkpoint",
            num_kv_heads=g,
            method=method,
            grouping=grouping,
            calibration=cal[0],
            calibration_examples=cal[1],
            overwrite=True,
            log=logging.info,
        )
        return {"checkpoint": str(d / "checkpoint"), "block_errors": record["block_errors"]}

    conv = pipe.runner.run(f"{name}/convert", do_convert)
    row = {"G": label, "method": method, "grouping": grouping, "calibration": cal[0]}
    if not isinstance(g, int):
        row["same_cache_as_G"] = 2
    row["alpha0"] = pipe.runner.run(
        f"{name}/eval0", lambda d: heldout_loss(pipe, g, conv["checkpoint"])
    )
    base = pipe.r.original_steps or pipe.r.pretrain_steps
    up = pipe.runner.run(
        f"{name}/uptrain", lambda d: pipe.uptrain_run(conv["checkpoint"], g, uptrain_steps, d)
    )
    step_dir = str(pipe._step_dir(up))
    row["uptrained"] = pipe.runner.run(f"{name}/eval1", lambda d: heldout_loss(pipe, g, step_dir))
    row["alpha"] = uptrain_steps / base
    report = conv["block_errors"]
    if report is None and method != "random":  # the paper's streamed path: same measure
        report = conversion.convert_flat(
            _read(source), head_dim=_head_dim(source), num_kv_heads=g, method=method
        )[1]
    errs = [e for e in (report or {}).values() if "key_error" in e]
    if errs:
        row["mean_rel_key_error"] = float(np.mean([e["key_error"] for e in errs]))
        row["mean_rel_value_error"] = float(np.mean([e["value_error"] for e in errs]))
    return row


def _read(source: str) -> dict:
    from gqa_t5.checkpoints import open_checkpoint

    reader = open_checkpoint(source)
    return {n: reader.read(n) for n in reader.shapes()}


def _head_dim(source: str) -> int:
    flat = _read(source)
    N = flat["encoder/relpos_bias/rel_embedding"].shape[0]
    return flat["encoder/layers_0/attention/query/kernel"].shape[1] // N


def budget_plan(source: str, same_as_g: int, num_layers: int, method: str) -> tuple:
    """Per-layer (self, cross) G with the KV-cache bytes of uniform G at LENGTHS."""
    from gqa_t5.conversion import budget

    errors = budget.block_errors(
        _read(source), head_dim=_head_dim(source), candidates=(1, 2, 4), method=method
    )
    # A head costs target-length tokens in self-attention, input-length ones in cross.
    cost = {b: LENGTHS["targets" if "self" in b else "inputs"] for b in errors}
    total = same_as_g * sum(cost.values())
    chosen = budget.plan(errors, total, cost)
    print(f"per-layer plan at the cache of G={same_as_g}: {chosen}")
    return budget.per_layer_kv_heads(chosen, num_layers), errors


def paired_difference(a: dict, b: dict) -> tuple[float, float]:
    """Mean and standard error of a - b over the shared validation batches."""
    d = np.asarray(a["batch_losses"]) - np.asarray(b["batch_losses"])
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def _is_ref(r: dict) -> bool:
    return r["method"] == "mean" and r["grouping"] == "contiguous" and not r["calibration"]


def add_differences(rows: list[dict]) -> None:
    """Each row's loss minus its G's contiguous-mean row's (paired over batches)."""
    ref = {r["G"]: r for r in rows if _is_ref(r) and "same_cache_as_G" not in r}
    for r in rows:
        base = ref.get(r.get("same_cache_as_G", r["G"]))
        if base is not None and base is not r:
            for k in ("alpha0", "uptrained"):
                r[f"{k}_minus_mean"] = paired_difference(r[k], base[k])


def _cell(r: dict, k: str) -> str:
    text = f"{r[k]['loss']:.3f}"
    if f"{k}_minus_mean" in r:
        d, se = r[f"{k}_minus_mean"]
        text += f" ({d:+.3f} ± {se:.3f})"
    return text


def markdown(rows: list[dict], mha: dict) -> str:
    lines = [
        f"MHA (no conversion): {mha['loss']:.3f} ± {mha['se']:.3f} (SE over batches). "
        "In brackets: minus the same G's contiguous mean (per-layer rows: minus G=2's, the "
        "same KV-cache bytes), ± paired SE over the same validation batches.",
        "",
        "| G | method | grouping | calibration | loss alpha=0 | loss uptrained | "
        "rel. K err | rel. V err |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        k, v = r.get("mean_rel_key_error"), r.get("mean_rel_value_error")
        lines.append(
            f"| {r['G']} | {r['method']} | {r['grouping']} | {r['calibration'] or '-'} | "
            f"{_cell(r, 'alpha0')} | {_cell(r, 'uptrained')} | "
            f"{'' if k is None else f'{k:.3f}'} | {'' if v is None else f'{v:.3f}'} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", default="runs/reproduce")
    p.add_argument("--json", default="benchmarks/conversion_methods_default.json")
    p.add_argument("--gs", default="1,2")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--per_layer", type=int, default=1, help="add the per-layer-G rows")
    args = p.parse_args(argv)
    utils.setup_logging()
    gin_utils.parse_gin([reproduce.DEFAULT_GIN], [])
    recipe = gin.get_configurable(reproduce.Recipe)()
    gin.clear_config()
    pipe = reproduce.Pipeline(recipe, pathlib.Path(args.output_dir).absolute())
    source = pipe.pretrain()
    steps = round(args.alpha * (recipe.original_steps or recipe.pretrain_steps))
    mha = pipe.runner.run("convmethods/mha/eval0", lambda d: heldout_loss(pipe, 4, source))
    todo = [(int(g), v) for g in args.gs.split(",") for v in args.variants.split(",")]
    if args.per_layer:
        plan, _ = budget_plan(source, 2, 2, "weighted")
        todo += [(plan, "weighted"), (plan, "mean")]
    rows, t0 = [], time.perf_counter()
    for i, (g, v) in enumerate(todo, 1):
        rows.append(run_variant(pipe, source, g, v, steps))
        el = time.perf_counter() - t0
        r = rows[-1]
        print(
            f"[{i}/{len(todo)}] G={r['G']} {v}: alpha0 {r['alpha0']['loss']:.4f} "
            f"uptrained {r['uptrained']['loss']:.4f}  ({el:.0f}s, "
            f"ETA {el / i * (len(todo) - i):.0f}s)",
            flush=True,
        )
    add_differences(rows)
    result = {"mha": mha, "uptrain_steps": steps, "rows": rows, "source": source}
    table = markdown(rows, mha)
    out = pathlib.Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"summary: {len(rows)} rows in {time.perf_counter() - t0:.0f}s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
