"""The reproduction's numbers with their uncertainty: bootstrap over eval examples, seeds,
timing repeats.

Three sources of noise, each measured where it arises:
- which eval examples were drawn: a seeded percentile bootstrap over the examples (resample
  n of n with replacement, recompute the corpus statistic: the mean of per-example ROUGE /
  F1 / EM, corpus BLEU from the resampled sentences' summed n-gram statistics, held-out loss
  as summed NLL over summed tokens). Every grid point sees the same resamples (paired), so
  a difference between two points has its own bootstrap distribution.
- which fine-tuning run: fine-tuning repeated over seeds; a point's score is the mean over
  its seeds, its spread the seeds' standard deviation.
- decode timing: the median over repeats, with the interquartile range; the median's
  bootstrap over repeats gives its interval.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

LEVEL = 0.95


@dataclasses.dataclass
class Measure:
    """A point estimate, its bootstrap replicates [B] and the per-seed estimates."""

    estimate: float
    replicates: np.ndarray
    seed_values: list[float] = dataclasses.field(default_factory=list)

    def ci(self, level: float = LEVEL) -> tuple[float, float]:
        return percentile_ci(self.replicates, level)

    def seed_sd(self) -> float | None:
        """Standard deviation over seeds (ddof 1); None with fewer than two seeds."""
        return float(np.std(self.seed_values, ddof=1)) if len(self.seed_values) > 1 else None


def resample_weights(n: int, samples: int, seed: int) -> np.ndarray:
    """[samples, n] counts: how often each of n examples appears in each bootstrap resample."""
    if n < 1 or samples < 1:
        raise ValueError(f"bootstrap needs n >= 1 examples and samples >= 1, got {n}, {samples}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=samples)


def statistic(kind: str, data: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The corpus statistic of `data` under each resample's weights [B] (or once: [1]).

    kind 'mean': data [n] per-example scores; 'bleu': data [n, 10] sentence statistics
    (tasks.metrics.BLEU_STATS); 'ratio': data [n, 2] (numerator, denominator) per example.
    """
    from tasks import metrics

    data = np.asarray(data, np.float64)
    w = np.ones((1, data.shape[0])) if weights is None else np.asarray(weights, np.float64)
    if kind == "mean":
        return w @ data / w.sum(axis=1)
    if kind == "ratio":
        sums = w @ data
        return sums[:, 0] / sums[:, 1]
    if kind == "bleu":
        return np.array([metrics.bleu_from_stats(np.rint(s)) for s in w @ data])
    raise ValueError(f"unknown statistic kind {kind!r}: use 'mean', 'bleu' or 'ratio'")


def percentile_ci(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile bootstrap interval: the (1-level)/2 and (1+level)/2 quantiles."""
    lo, hi = np.quantile(np.asarray(replicates), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def seeded_measure(kind: str, data_by_seed: Sequence[np.ndarray], weights: np.ndarray) -> Measure:
    """The seed-mean of a statistic, with its paired bootstrap replicates."""
    per_seed = [float(statistic(kind, d)[0]) for d in data_by_seed]
    reps = np.mean([statistic(kind, d, weights) for d in data_by_seed], axis=0)
    return Measure(float(np.mean(per_seed)), reps, per_seed)


def task_measures(
    per_example: Mapping[str, Mapping[str, Sequence[tuple[str, np.ndarray]]]],
    samples: int,
    seed: int,
) -> dict[str, dict[str, Measure]]:
    """{point: {task: Measure, 'avg': Measure}} from {point: {task: [(kind, data) per seed]}}.

    Resamples are drawn once per task (seed + task index) and shared by all points; Avg's
    replicates are the mean over tasks of the task replicates.
    """
    tasks_ = sorted({t for by_task in per_example.values() for t in by_task})
    weights = {}
    for i, task in enumerate(tasks_):
        sizes = {len(d) for by_task in per_example.values() for _, d in by_task.get(task, [])}
        if len(sizes) != 1:
            raise ValueError(f"task {task!r}: grid points were evaluated on {sizes} examples")
        weights[task] = resample_weights(sizes.pop(), samples, seed + i)
    out: dict[str, dict[str, Measure]] = {}
    for point, by_task in per_example.items():
        out[point] = {
            t: seeded_measure(runs[0][0], [d for _, d in runs], weights[t])
            for t, runs in by_task.items()
        }
        ms = list(out[point].values())
        if ms:
            seeds = min(len(m.seed_values) for m in ms)
            out[point]["avg"] = Measure(
                float(np.mean([m.estimate for m in ms])),
                np.mean([m.replicates for m in ms], axis=0),
                [float(np.mean([m.seed_values[s] for m in ms])) for s in range(seeds)],
            )
    return out


def loss_measures(
    per_example: Mapping[str, np.ndarray], samples: int, seed: int
) -> dict[str, Measure]:
    """{checkpoint: Measure} of held-out loss from {checkpoint: [n, 2] (NLL sum, tokens)}."""
    if not per_example:
        return {}
    sizes = {len(d) for d in per_example.values()}
    if len(sizes) != 1:
        raise ValueError(f"held-out loss was computed on different example counts {sizes}")
    w = resample_weights(sizes.pop(), samples, seed)
    return {
        k: Measure(float(statistic("ratio", d)[0]), statistic("ratio", d, w), [])
        for k, d in per_example.items()
    }


def median_iqr(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and IQR of repeated measurements."""
    q1, med, q3 = np.quantile(np.asarray(values, np.float64), [0.25, 0.5, 0.75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1)}


def median_measure(values: Sequence[float], samples: int, seed: int) -> Measure:
    """The median of repeats, with bootstrap replicates of the median over the repeats."""
    v = np.asarray(values, np.float64)
    idx = np.random.default_rng(seed).integers(0, len(v), (samples, len(v)))
    return Measure(float(np.median(v)), np.median(v[idx], axis=1), [])


def pooled_seed_var(measures: Sequence[Measure]) -> float | None:
    """Pooled variance over seeds of the measures with >= 2 seeds (None if there are none)."""
    dof = sum(len(m.seed_values) - 1 for m in measures if len(m.seed_values) > 1)
    if not dof:
        return None
    ss = sum(
        (len(m.seed_values) - 1) * np.var(m.seed_values, ddof=1)
        for m in measures
        if len(m.seed_values) > 1
    )
    return float(ss / dof)
