"""The paper's four findings decided from the reproduction's numbers and their uncertainty.

Each finding is a few *checks*: a difference (a linear contrast) of one measure between
grid points that the paper predicts to be positive.

Measures: `avg` (downstream Avg score, higher is better), `loss` (held-out span-corruption
loss of the checkpoint a point fine-tunes from, lower is better; alpha 0 is the converted
checkpoint), `time` (median seconds per sample of greedy decoding, by G).

Decision rule for one check, at 95%:
    d = sum_p w_p * m_p  (m_p: the point's estimate; for avg, the mean over its seeds)
    se_examples = sd of d over the paired bootstrap resamples (eval examples for avg and
                  loss, timing repeats for time)
    se_seeds^2 = sum_p w_p^2 * s^2 / k_p  for avg, where s^2 is the seed variance pooled
                 over every point fine-tuned with >= 2 seeds and k_p the point's seed count
                 (0 when no point has >= 2 seeds: the seed spread is then not measured and
                 the check says so)
    interval = d +- 1.96 * sqrt(se_examples^2 + se_seeds^2)
    held: the interval lies above 0; did not hold: it lies below 0; otherwise inside the noise.
A finding held when all its deciding (avg / time) checks held, did not hold when any of them
did not hold, and is inside the noise otherwise; the loss checks are reported beside them
as supporting evidence (low-noise, but about conversion quality, not downstream quality).

The findings (Ainslie et al. 2023), with G the GQA point's groups and a the figure's alpha:
 1. mean > first > random:   avg[MQA mean a] - avg[MQA first a] > 0, first - random > 0
 2. GQA usable at alpha 0, MQA needs uptraining:
                             avg[MQA a] - avg[MQA 0] > 0, avg[GQA 0] - avg[MQA 0] > 0
 3. GQA near MHA and above MQA (alpha a):
                             avg[GQA] - avg[MQA] > 0, and closer to MHA than to MQA:
                             2 avg[GQA] - avg[MQA] - avg[MHA] > 0
 4. time flat for small G, rising to MHA:
                             time[MHA] - time[MQA] > 0, and GQA's time closer to MQA's than
                             to MHA's: time[MHA] - 2 time[GQA] + time[MQA] > 0
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from gqa_t5.uncertainty import Measure, pooled_seed_var

HELD, NOT_HELD, NOISE, NOT_MEASURED = "held", "did not hold", "inside the noise", "not measured"
Z = 1.959963984540054  # the normal's 97.5% quantile
Key = tuple  # (G, method, alpha) for avg / loss, G for time


def decide(lo: float, hi: float) -> str:
    """The verdict of one check from the interval of its difference."""
    if lo > 0:
        return HELD
    if hi < 0:
        return NOT_HELD
    return NOISE


def combine(verdicts: list[str]) -> str:
    """A finding's verdict from its deciding checks' verdicts."""
    if not verdicts or NOT_MEASURED in verdicts:
        return NOT_MEASURED
    if NOT_HELD in verdicts:
        return NOT_HELD
    return HELD if all(v == HELD for v in verdicts) else NOISE


def check(
    measure: str,
    label: str,
    weights: Mapping[Key, float],
    measures: Mapping[Key, Measure],
    seed_var: float | None,
) -> dict:
    """One difference: estimate, interval, standard errors and verdict (see module doc)."""
    missing = [k for k in weights if k not in measures]
    if missing:
        return {"measure": measure, "difference": label, "verdict": NOT_MEASURED,
                "missing": [str(k) for k in missing]}  # fmt: skip
    d = sum(w * measures[k].estimate for k, w in weights.items())
    reps = sum(w * measures[k].replicates for k, w in weights.items())
    se_ex = float(np.std(reps, ddof=1))
    se_seed = 0.0
    if seed_var is not None:
        se_seed = math.sqrt(
            sum(w * w * seed_var / max(1, len(measures[k].seed_values)) for k, w in weights.items())
        )
    half = Z * math.hypot(se_ex, se_seed)
    return {
        "measure": measure,
        "difference": label,
        "estimate": float(d),
        "ci": [float(d - half), float(d + half)],
        "se_examples": se_ex,
        "se_seeds": se_seed if seed_var is not None else None,
        "verdict": decide(d - half, d + half),
    }


def findings(
    avg: Mapping[Key, Measure],
    loss: Mapping[Key, Measure],
    time: Mapping[int, Measure],
    num_heads: int,
    gqa_groups: int | None,
    alpha: float,
) -> dict:
    """The four findings, each with its checks and verdict (JSON-ready)."""
    g, a, h = gqa_groups or -1, alpha, num_heads
    mha = (h, "mean", 0.0)
    seed_var = pooled_seed_var(list(avg.values()))

    def pt(groups: int, method: str = "mean", al: float = a) -> Key:
        return (groups, method, al)

    def A(label, w):  # noqa: N802 (the paper's notation)
        return check("avg", label, w, avg, seed_var)

    def L(label, w):  # noqa: N802
        return check("loss", label, w, loss, None)

    def T(label, w):  # noqa: N802
        return check("time", label, w, {(k,): m for k, m in time.items()}, None)

    specs = [
        (
            f"mean > first > random (MQA, alpha={a:g})",
            [
                A("mean - first", {pt(1): 1, pt(1, "first"): -1}),
                A("first - random", {pt(1, "first"): 1, pt(1, "random"): -1}),
            ],
            [
                L("first - mean", {pt(1, "first"): 1, pt(1): -1}),
                L("random - first", {pt(1, "random"): 1, pt(1, "first"): -1}),
            ],
        ),
        (
            f"GQA-{g} usable at alpha 0 while MQA needs uptraining (alpha {a:g})",
            [
                A(f"MQA a={a:g} - MQA a=0", {pt(1): 1, pt(1, al=0.0): -1}),
                A(f"GQA-{g} a=0 - MQA a=0", {pt(g, al=0.0): 1, pt(1, al=0.0): -1}),
            ],
            [
                L(f"MQA a=0 - MQA a={a:g}", {pt(1, al=0.0): 1, pt(1): -1}),
                L(f"MQA a=0 - GQA-{g} a=0", {pt(1, al=0.0): 1, pt(g, al=0.0): -1}),
            ],
        ),
        (
            f"GQA-{g} near MHA and above MQA (alpha {a:g})",
            [
                A(f"GQA-{g} - MQA", {pt(g): 1, pt(1): -1}),
                A(f"2 GQA-{g} - MQA - MHA", {pt(g): 2, pt(1): -1, mha: -1}),
            ],
            [
                A("MHA - MQA", {mha: 1, pt(1): -1}),
                A(f"MHA - GQA-{g}", {mha: 1, pt(g): -1}),
                L(f"MQA - GQA-{g}", {pt(1): 1, pt(g): -1}),
                L(f"MQA + MHA - 2 GQA-{g}", {pt(1): 1, mha: 1, pt(g): -2}),
            ],
        ),
        (
            f"time per sample flat for small G (GQA-{g}), rising to MHA",
            [
                T("MHA - MQA", {(h,): 1, (1,): -1}),
                T(f"MHA - 2 GQA-{g} + MQA", {(h,): 1, (g,): -2, (1,): 1}),
            ],
            [],
        ),
    ]
    out = []
    for i, (claim, deciding, supporting) in enumerate(specs, 1):
        out.append(
            {
                "finding": i,
                "claim": claim,
                "verdict": combine([c["verdict"] for c in deciding]),
                "deciding": deciding,
                "supporting": supporting,
            }
        )
    return {
        "rule": "95% interval of each difference: held if above 0, did not hold if below 0, "
        "else inside the noise; a finding holds if all its deciding checks hold",
        "seed_sd_pooled": math.sqrt(seed_var) if seed_var is not None else None,
        "findings": out,
    }


def _fmt(c: dict) -> str:
    if c["verdict"] == NOT_MEASURED:
        return f"{c['measure']} {c['difference']}: not measured (grid lacks {c['missing']})"
    lo, hi = c["ci"]
    digits = 4 if c["measure"] != "avg" else 2
    if c["measure"] == "time":
        return f"time {c['difference']} = {c['estimate']:+.3g} s [{lo:+.3g}, {hi:+.3g}]"
    return f"{c['measure']} {c['difference']} = {c['estimate']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"  # noqa: E501


def to_text(result: dict) -> str:
    """The findings block as printed and written to the README."""
    sd = result["seed_sd_pooled"]
    lines = [
        "findings (" + result["rule"] + "; seed sd of Avg "
        + (f"{sd:.2f}" if sd is not None else "not measured: one fine-tuning seed") + "):"
    ]  # fmt: skip
    for f in result["findings"]:
        lines.append(f"{f['finding']}. {f['claim']}: {f['verdict'].upper()}")
        for c in f["deciding"]:
            lines.append(f"     {_fmt(c)} -> {c['verdict']}")
        for c in f["supporting"]:
            lines.append(f"     (supporting) {_fmt(c)} -> {c['verdict']}")
    return "\n".join(lines) + "\n"
