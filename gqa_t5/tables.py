"""Table 1 (Markdown + JSON) and the paper's three figures (PNG + JSON) from pipeline rows."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

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

    return {**tasks.HEADLINE_METRIC, **tasks.builtin.HEADLINE_METRIC}


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
    """Table 1's columns: model, T_infer, Avg, then one column per task."""
    tasks_ = list(dict.fromkeys(t for r in rows for t in r["scores"]))
    head = ["model", "T_infer", "Avg"] + [SHORT_NAMES.get(t, t) for t in tasks_]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], _fmt_time(r["t_infer"]), f"{r['avg']:.1f}"]
        cells += [f"{r['scores'][t]:.1f}" if t in r["scores"] else "" for t in tasks_]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paper_markdown() -> str:
    """The paper's Table 1, for side-by-side comparison."""
    head = ["model", "T_infer", "Avg", *PAPER_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, (t, avg, scores) in PAPER_TABLE1.items():
        lines.append("| " + " | ".join([name, f"{t}", f"{avg}", *map(str, scores)]) + " |")
    return "\n".join(lines) + "\n"


def _fmt_time(seconds: float) -> str:
    return f"{seconds:.3g}" if seconds >= 0.01 else f"{seconds:.2e}"


def figure_data(rows: Sequence[dict], figure_alpha: float) -> dict[str, dict]:
    """The data of the three figures (each written as JSON beside its PNG)."""
    mqa = [r for r in rows if r["num_kv_heads"] == 1 and r["alpha"] == figure_alpha]
    methods = {r["method"]: r["avg"] for r in mqa}
    by_alpha: dict[str, dict[float, float]] = {}
    for r in rows:
        if r["method"] == "mean" and r["alpha"] is not None:
            kind = "MQA" if r["num_kv_heads"] == 1 else f"GQA-{r['num_kv_heads']}"
            by_alpha.setdefault(f"{kind}-{r['size']}", {})[r["alpha"]] = r["avg"]
    timing = {r["num_kv_heads"]: r["t_infer"] for r in rows}
    return {
        "conversion_method": {
            "title": f"MQA, alpha={figure_alpha:g}: Avg by conversion method",
            "avg_by_method": methods,
        },
        "uptraining_proportion": {
            "title": "Avg by uptraining proportion alpha (mean pooling)",
            "avg_by_alpha": {k: dict(sorted(v.items())) for k, v in by_alpha.items()},
            "mha_avg": {r["size"]: r["avg"] for r in rows if r["point"] == "mha"},
        },
        "groups_vs_time": {
            "title": "Time per sample by number of groups G",
            "seconds_per_sample_by_g": dict(sorted(timing.items())),
        },
    }


def plot_figures(out: pathlib.Path, data: Mapping[str, dict]) -> list[pathlib.Path]:
    """Write conversion_method.png, uptraining_proportion.png, groups_vs_time.png + JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, d in data.items():
        fig, ax = plt.subplots(figsize=(5, 3.5))
        if name == "conversion_method":
            ax.bar(list(d["avg_by_method"]), list(d["avg_by_method"].values()))
            ax.set_ylabel("Avg score")
        elif name == "uptraining_proportion":
            for label, series in d["avg_by_alpha"].items():
                ax.plot(list(series), list(series.values()), marker="o", label=label)
            for size, avg in d["mha_avg"].items():
                ax.axhline(avg, linestyle="--", color="gray", label=f"MHA-{size}")
            ax.set_xlabel("uptraining proportion alpha")
            ax.set_ylabel("Avg score")
            ax.legend()
        else:
            g = d["seconds_per_sample_by_g"]
            ax.plot([str(k) for k in g], list(g.values()), marker="o")
            ax.set_xlabel("G (key/value heads)")
            ax.set_ylabel("seconds per sample")
        ax.set_title(d["title"], fontsize=9)
        fig.tight_layout()
        png = out / f"{name}.png"
        tmp = out / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        tmp.replace(png)
        utils.write_json_atomic(out / f"{name}.json", d)
        written.append(png)
    return written


def write_outputs(out: pathlib.Path, rows: Sequence[dict], recipe: Any) -> dict:
    """table1.md / table1.json and the figures; returns {"rows", "markdown"}."""
    markdown = to_markdown(rows)
    (out / ".table1.md.tmp").write_text(markdown)
    (out / ".table1.md.tmp").replace(out / "table1.md")
    table = {"columns": ["model", "T_infer", "Avg"], "rows": list(rows), "markdown": markdown}
    table["paper_table1"] = {
        k: {"t_infer": t, "avg": a, **dict(zip(PAPER_COLUMNS, s, strict=True))}
        for k, (t, a, s) in PAPER_TABLE1.items()
    }
    utils.write_json_atomic(out / "table1.json", table)
    plot_figures(out, figure_data(rows, recipe.figure_alpha))
    return table
