"""Table rows and findings from the pipeline's raw per-point results (scores with their
bootstrap intervals and seed spread, held-out losses, T_infer median and IQR)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from gqa_t5 import findings, tables, uncertainty


def _read(path: str) -> dict:
    return json.loads(pathlib.Path(path).read_text())


def _per_example(point: dict) -> dict[str, list[tuple[str, np.ndarray]]]:
    """{task: [(kind, data) per seed]} of one point's eval stages."""
    out: dict[str, list] = {}
    for seed_evals in point["evals"]:
        for ev in seed_evals:
            for task, d in _read(ev["per_example"]).items():
                out.setdefault(task, []).append((d["kind"], np.asarray(d["data"])))
    return out


def _loss_data(r: dict) -> np.ndarray:
    d = _read(r["per_example"])
    return np.stack([d["nll"], d["targets"]], axis=1)


def _ci(m: uncertainty.Measure) -> list[float]:
    return list(m.ci())


def summarise(points: Sequence[dict], recipe: Any) -> tuple[list[dict], dict]:
    """(rows, findings) from `Pipeline.run`'s per-point results."""
    b, seed = recipe.bootstrap_samples, recipe.bootstrap_seed
    specs = [p["point"].spec for p in points]
    scores = uncertainty.task_measures({p["point"].spec: _per_example(p) for p in points}, b, seed)
    losses = {}  # checkpoint -> per-example data: each checkpoint once, all paired
    for p in points:
        for key in ("loss_converted", "loss_start"):
            if p[key] is not None:
                losses[p[key]["checkpoint"]] = _loss_data(p[key])
    loss_m = uncertainty.loss_measures(losses, b, seed + 1000)
    time_m: dict[int, uncertainty.Measure] = {}
    rows = []
    for p, spec in zip(points, specs, strict=True):
        pt, t = p["point"], p["timing"]
        per_sample = [s / t["batch_size"] for s in t["seconds_per_batch"]]
        time_m[pt.num_kv_heads] = uncertainty.median_measure(per_sample, b, seed + pt.num_kv_heads)
        rows.append(_row(recipe, p, scores[spec], loss_m, per_sample, time_m[pt.num_kv_heads]))
    avg_by_key, loss_by_key = {}, {}
    for p, spec in zip(points, specs, strict=True):
        pt = p["point"]
        key = (pt.num_kv_heads, pt.method, 0.0 if spec == "mha" else pt.alpha)
        if "avg" in scores[spec]:
            avg_by_key[key] = scores[spec]["avg"]
        if p["loss_start"] is not None:
            loss_by_key[key] = loss_m[p["loss_start"]["checkpoint"]]
            loss_by_key[(pt.num_kv_heads, pt.method, 0.0)] = loss_m[
                p["loss_converted"]["checkpoint"]
            ]
    gqa = recipe.findings_groups or min(
        (p["point"].num_kv_heads for p in points if 1 < p["point"].num_kv_heads < recipe.num_heads),
        default=None,
    )
    found = findings.findings(
        avg_by_key, loss_by_key, time_m, recipe.num_heads, gqa, recipe.figure_alpha
    )
    found["bootstrap"] = {"samples": b, "seed": seed, "level": uncertainty.LEVEL}
    return rows, found


def _row(recipe, p: dict, measures: dict, loss_m: dict, per_sample: list, t_m) -> dict:
    pt, t = p["point"], p["timing"]
    row = tables.make_row(
        recipe.size,
        pt,
        recipe.num_heads,
        _merged(p["evals"][0]),
        {"seconds_per_sample": t_m.estimate},
    )
    tasks_ = [t for t in measures if t != "avg"]
    row["scores"] = {t: measures[t].estimate for t in tasks_}
    if "avg" in measures:
        avg = measures["avg"]
        row.update(avg=avg.estimate, avg_ci=_ci(avg), avg_seed_sd=avg.seed_sd())
        row["avg_by_seed"] = avg.seed_values
    row["scores_ci"] = {t: _ci(measures[t]) for t in tasks_}
    row["scores_seed_sd"] = {t: measures[t].seed_sd() for t in tasks_}
    row["scores_by_seed"] = {t: measures[t].seed_values for t in tasks_}
    row["finetune_seeds"] = len(p["evals"])
    row["eval_examples"] = {
        t: len(_read(p["evals"][0][0]["per_example"]).get(t, {}).get("data", [])) for t in tasks_
    }
    row["metrics_by_seed"] = [_merged(e) for e in p["evals"]]
    row["t_infer_ci"] = _ci(t_m)
    row["t_infer_spread"] = {**uncertainty.median_iqr(per_sample), "repeats": len(per_sample)}
    row["t_infer_repeats"] = per_sample
    setup = ("batch_size", "input_len", "output_len", "device")
    row["t_infer_setup"] = {k: t.get(k) for k in setup}
    for key, name in (("loss_converted", "heldout_loss_converted"), ("loss_start", "heldout_loss")):
        r = p[key]
        if r is not None:
            m = loss_m[r["checkpoint"]]
            row[name] = {"loss": m.estimate, "ci": _ci(m), "examples": r["examples"],
                         "tokens": r["tokens"]}  # fmt: skip
    return row


def _merged(seed_evals: list[dict]) -> dict:
    out: dict = {}
    for ev in seed_evals:
        out.update(ev["metrics"])
    return out
