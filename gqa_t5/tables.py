"""Table 1 (Markdown + JSON) and the paper's three figures (PNG + JSON) from pipeline rows."""

from __future__ import annotations

import pathlib
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gqa_t5 import utils

# The paper's Table 1 (shared/PAPER.md): dev sets, T_infer in seconds per sample.
PAPER_COLUMNS = ("CNN", "arXiv", "PubMed", "MediaSum", "MultiNews", "WMT", "TriviaQA")
PAPER_TABLE1 = {
    "MHA-Large": (0.37, 46.0, (42.9, 44.6, 46.2, 35.5, 46.6, 27.7, 78.2)),
    "MHA-XXL": (1.51, 47.2, (43.8, 45.6, 47.5, 36.4, 46.9, 28.4, 81.9)),
    "MQA-XXL": (0.24, 46.6, (43.0, 45.0, 46.9, 36.1, 46.5, 28.5, 81.3)),
    "GQA-8-XXL": (0.28, 47.1, (43.5, 45.4, 47.7, 36.3, 47.2, 28.4, 81.6)),
}
# Column names for task names (the paper's first, then the built-in stand-ins).
SHORT_NAMES = {
    "gqa_cnn_dailymail": "CNN",
    "gqa_arxiv": "arXiv",
    "gqa_pubmed": "PubMed",
    "gqa_media_sum": "MediaSum",
    "gqa_multi_news": "MultiNews",
    "gqa_wmt14_ende": "WMT",
    "gqa_trivia_qa": "TriviaQA",
    "kjv_summarize": "Summarize (R1)",
    "kjv_modernize": "Modernize (BLEU)",
    "kjv_cloze_qa": "ClozeQA (F1)",
}


def headline_metrics() -> dict[str, str]:
    import tasks
    from tasks import kjv, realtext

    paper = tasks.HEADLINE_METRIC if tasks.HAVE_SEQIO else {}  # TF-free: the paper's tasks absent
    text = {name: t.headline_metric for name, t in realtext.TEXT_TASKS.items()}
    return {**paper, **kjv.HEADLINE_METRIC, **text}


def model_label(size: str, point: Any) -> str:
    """The paper's row names: MHA-XXL, MQA-XXL, GQA-8-XXL (+ method and alpha)."""
    if point.spec == "mha":
        return f"MHA-{size}"
    kind = "MQA" if point.num_kv_heads == 1 else f"GQA-{point.num_kv_heads}"
    return f"{kind}-{size} ({point.method}, α={point.alpha:g})"


def make_row(
    size: str,
    point: Any,
    num_heads: int,
    metrics: Mapping[str, Mapping[str, float]],
    timing: Mapping[str, Any],
) -> dict:
    """One table row: label, grid coordinates, T_infer, headline score per task, Avg."""
    heads = headline_metrics()
    scores = {}
    for task, m in metrics.items():
        key = heads.get(task)
        if key is None or key not in m:
            raise ValueError(f"task {task!r} has no headline metric in {sorted(m)}")
        scores[task] = float(m[key])
    return {
        "model": model_label(size, point),
        "size": size,
        "point": point.spec,
        "num_heads": num_heads,
        "num_kv_heads": point.num_kv_heads,
        "method": None if point.spec == "mha" else point.method,
        "alpha": None if point.spec == "mha" else point.alpha,
        "t_infer": float(timing["seconds_per_sample"]),
        "avg": sum(scores.values()) / len(scores) if scores else float("nan"),
        "scores": scores,
        "metrics": {t: dict(m) for t, m in metrics.items()},
    }


def to_markdown(rows: Sequence[dict]) -> str:
    """Table 1's columns with their uncertainty: T_infer median (IQR as % of the median),
    held-out loss after conversion and at the fine-tuning start, Avg and each task's score
    with the 95% bootstrap interval over eval examples, fine-tuning seeds (sd of Avg)."""
    tasks_ = list(dict.fromkeys(t for r in rows for t in r["scores"]))
    has_loss = any("heldout_loss" in r for r in rows)
    head = ["model", "T_infer (IQR)"]
    head += ["loss α=0", "loss"] if has_loss else []
    head += ["Avg [95% CI]", "seeds (sd)"] + [SHORT_NAMES.get(t, t) for t in tasks_]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], _fmt_time_cell(r)]
        if has_loss:
            cells += [_fmt_loss(r.get("heldout_loss_converted")), _fmt_loss(r.get("heldout_loss"))]
        cells += [_fmt_ci(r["avg"], r.get("avg_ci")), _fmt_seeds(r)]
        cells += [
            _fmt_ci(r["scores"][t], r.get("scores_ci", {}).get(t)) if t in r["scores"] else ""
            for t in tasks_
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt_ci(value: float, ci: Sequence[float] | None, digits: int = 1) -> str:
    if ci is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _fmt_loss(loss: Mapping | None) -> str:
    return "" if loss is None else _fmt_ci(loss["loss"], loss.get("ci"), 3)


def _fmt_seeds(r: Mapping) -> str:
    n, sd = r.get("finetune_seeds", 1), r.get("avg_seed_sd")
    return f"{n} ({sd:.2f})" if sd is not None else str(n)


def _fmt_time_cell(r: Mapping) -> str:
    spread = r.get("t_infer_spread")
    if not spread:
        return _fmt_time(r["t_infer"])
    return f"{_fmt_time(r['t_infer'])} ({100 * spread['iqr'] / spread['median']:.0f}%)"


def paper_markdown() -> str:
    """The paper's Table 1, for side-by-side comparison."""
    head = ["model", "T_infer", "Avg", *PAPER_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, (t, avg, scores) in PAPER_TABLE1.items():
        lines.append("| " + " | ".join([name, f"{t}", f"{avg}", *map(str, scores)]) + " |")
    return "\n".join(lines) + "\n"


def _fmt_time(seconds: float) -> str:
    return f"{seconds:.3g}" if seconds >= 0.01 else f"{seconds:.2e}"


def figure_data(rows: Sequence[dict], figure_alpha: float, what: str = "") -> dict[str, dict]:
    """The data of the three figures (each written as JSON beside its PNG)."""
    mqa = [r for r in rows if r["num_kv_heads"] == 1 and r["alpha"] == figure_alpha]
    by_alpha: dict[str, dict[float, dict]] = {}
    for r in rows:
        if r["method"] == "mean" and r["alpha"] is not None:
            kind = "MQA" if r["num_kv_heads"] == 1 else f"GQA-{r['num_kv_heads']}"
            by_alpha.setdefault(f"{kind}-{r['size']}", {})[r["alpha"]] = _point(r)
    timing = {r["num_kv_heads"]: _time_point(r) for r in rows}
    return {
        "conversion_method": {
            "title": f"MQA, alpha={figure_alpha:g}, by conversion method{what}",
            "avg_by_method": {r["method"]: _point(r) for r in mqa},
        },
        "uptraining_proportion": {
            "title": f"By uptraining proportion alpha (mean pooling){what}",
            "avg_by_alpha": {k: dict(sorted(v.items())) for k, v in by_alpha.items()},
            "mha_avg": {r["size"]: _point(r) for r in rows if r["point"] == "mha"},
        },
        "groups_vs_time": {
            "title": "Greedy decode time per sample by G (median; bars: interquartile range)"
            + _time_setup(rows),
            "seconds_per_sample_by_g": dict(sorted(timing.items())),
        },
    }


def _time_setup(rows: Sequence[dict]) -> str:
    s = rows[0].get("t_infer_setup") if rows else None
    if not s:
        return ""
    reps = rows[0].get("t_infer_spread", {}).get("repeats")
    return (
        f"\n{rows[0]['size']}, random weights, batch {s['batch_size']}, {s['input_len']} -> "
        f"{s['output_len']} tokens, {reps} repeats, {s['device']}"
    )


def _point(r: Mapping) -> dict:
    """Avg and held-out loss of a row with their intervals (None where not measured)."""
    loss = r.get("heldout_loss") or {}
    return {"avg": r["avg"], "avg_ci": r.get("avg_ci"), "avg_seed_sd": r.get("avg_seed_sd"),
            "loss": loss.get("loss"), "loss_ci": loss.get("ci")}  # fmt: skip


def _time_point(r: Mapping) -> dict:
    s = r.get("t_infer_spread") or {}
    return {"median": r["t_infer"], "q1": s.get("q1"), "q3": s.get("q3"),
            "repeats": s.get("repeats"), "ci": r.get("t_infer_ci")}  # fmt: skip


def _errorbar(ax, xs, pts: Sequence[dict], key: str, **kw) -> None:
    ys = [p[key] for p in pts]
    cis = [p.get(f"{key}_ci") or (y, y) for p, y in zip(pts, ys, strict=True)]
    err = [[y - c[0] for y, c in zip(ys, cis, strict=True)],
           [c[1] - y for y, c in zip(ys, cis, strict=True)]]  # fmt: skip
    ax.errorbar(xs, ys, yerr=err, capsize=4, marker="o", **kw)


def honest_ylim(ax, lows: Sequence[float], highs: Sequence[float], min_span: float) -> None:
    """Y-limits that hold every interval and span at least `min_span`: differences smaller
    than the intervals then look small instead of filling the axis."""
    lo, hi = min(lows), max(highs)
    mid, span = (lo + hi) / 2, max(hi - lo, min_span) * 1.15
    span = span or max(abs(mid) * 0.2, 1.0)  # every interval of zero width
    ax.set_ylim(mid - span / 2, mid + span / 2)


def _panel(ax, groups: Mapping[str, Mapping], key: str, ylabel: str, x_is_alpha: bool) -> bool:
    """One measure (avg or loss) with 95% intervals; False if nothing was measured."""
    lows, highs, widths = [], [], []
    for i, (label, series) in enumerate(groups.items()):
        pts = [p for p in series.values() if p.get(key) is not None]
        if not pts:
            continue
        xs = [float(x) for x in series] if x_is_alpha else [i]
        if x_is_alpha:  # dodge series sideways so their error bars do not hide each other
            xs = [x + 0.01 * (i - (len(groups) - 1) / 2) * (max(xs) - min(xs) or 1) for x in xs]
        kw = {"label": label} if x_is_alpha else {"linestyle": "none"}
        _errorbar(ax, xs, pts, key, **kw)
        for p in pts:
            ci = p.get(f"{key}_ci") or (p[key], p[key])
            lows.append(ci[0])
            highs.append(ci[1])
            widths.append(ci[1] - ci[0])
    if not lows:
        return False
    honest_ylim(ax, lows, highs, 3 * max(widths))
    ax.set_ylabel(ylabel)
    return True


def plot_figures(out: pathlib.Path, data: Mapping[str, dict]) -> list[pathlib.Path]:
    """Write conversion_method.png, uptraining_proportion.png, groups_vs_time.png + JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    avg_label, loss_label = "Avg score (95% CI, examples)", "held-out loss (95% CI)"
    written = []
    for name, d in data.items():
        one = name == "groups_vs_time"
        fig, axes = plt.subplots(1, 1 if one else 2, figsize=(5 if one else 9, 3.6), squeeze=False)
        axes = axes[0]
        if name == "conversion_method":
            methods = {m: {0: p} for m, p in d["avg_by_method"].items()}
            for ax, key, label in ((axes[0], "avg", avg_label), (axes[1], "loss", loss_label)):
                if _panel(ax, methods, key, label, x_is_alpha=False):
                    ax.set_xticks(range(len(methods)), list(methods))
                    ax.set_xlabel("conversion method")
        elif name == "uptraining_proportion":
            for ax, key, label in ((axes[0], "avg", avg_label), (axes[1], "loss", loss_label)):
                if _panel(ax, d["avg_by_alpha"], key, label, x_is_alpha=True):
                    for size, p in d["mha_avg"].items():
                        if p.get(key) is not None:
                            ax.axhline(p[key], linestyle="--", color="gray", label=f"MHA-{size}")
                    ax.set_xlabel("uptraining proportion alpha")
                    ax.legend(fontsize=7)
        else:
            ax = axes[0]
            g = d["seconds_per_sample_by_g"]
            med = [p["median"] for p in g.values()]
            q1 = [p["median"] if p["q1"] is None else p["q1"] for p in g.values()]
            q3 = [p["median"] if p["q3"] is None else p["q3"] for p in g.values()]
            err = [np.subtract(med, q1), np.subtract(q3, med)]
            ax.errorbar([str(k) for k in g], med, yerr=err, capsize=4, marker="o")
            ax.set_ylim(0, max(q3) * 1.15)
            ax.set_xlabel("G (key/value heads)")
            ax.set_ylabel("seconds per sample (from 0)")
        # Each title line wrapped to the figure's width (the one-panel figure is narrow).
        width = 62 if one else 110
        title = "\n".join(textwrap.fill(t, width) for t in d["title"].split("\n"))
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        png = out / f"{name}.png"
        tmp = out / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        tmp.replace(png)
        utils.write_json_atomic(out / f"{name}.json", d)
        written.append(png)
    return written


def write_outputs(
    out: pathlib.Path, rows: Sequence[dict], recipe: Any, found: Mapping | None = None
) -> dict:
    """table1.md / table1.json, findings.json and the figures; returns the table JSON."""
    from gqa_t5 import findings

    markdown = to_markdown(rows)
    (out / ".table1.md.tmp").write_text(markdown)
    (out / ".table1.md.tmp").replace(out / "table1.md")
    table = {"columns": ["model", "T_infer", "Avg"], "rows": list(rows), "markdown": markdown}
    table["paper_table1"] = {
        k: {"t_infer": t, "avg": a, **dict(zip(PAPER_COLUMNS, s, strict=True))}
        for k, (t, a, s) in PAPER_TABLE1.items()
    }
    utils.write_json_atomic(out / "table1.json", table)
    if found is not None:
        table["findings_text"] = findings.to_text(found)
        utils.write_json_atomic(out / "findings.json", {**found, "text": table["findings_text"]})
    what = f"; {recipe.size} on {', '.join(recipe.finetune_tasks)}"
    plot_figures(out, figure_data(rows, recipe.figure_alpha, what))
    return table
