"""The findings block against planted results: a grid where every finding holds, one where
none does, one where the differences are inside the noise; the interval by hand."""

import math

import numpy as np
import pytest

from gqa_t5 import findings
from gqa_t5.uncertainty import Measure

H, G, A = 4, 2, 0.05


def _m(value: float, noise: float, rng, seeds: int = 1) -> Measure:
    reps = value + noise * rng.standard_normal(4000)
    return Measure(value, reps, [value] * seeds)


def _grid(avg: dict, loss: dict, time: dict, noise: float, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return findings.findings(
        {k: _m(v, noise, rng) for k, v in avg.items()},
        {k: _m(v, noise / 100, rng) for k, v in loss.items()},
        {k: _m(v, noise / 1000, rng) for k, v in time.items()},
        num_heads=H,
        gqa_groups=G,
        alpha=A,
    )


# Paper-like values: (G, method, alpha) -> Avg / loss; G -> seconds per sample.
AVG = {
    (H, "mean", 0.0): 47.2,
    (1, "mean", A): 46.6,
    (1, "first", A): 46.0,
    (1, "random", A): 45.0,
    (1, "mean", 0.0): 40.0,
    (G, "mean", 0.0): 45.0,
    (G, "mean", A): 47.1,
}
LOSS = {k: 3.0 - v / 100 for k, v in AVG.items()}  # lower loss where Avg is higher
TIME = {1: 0.24, G: 0.28, H: 1.51}


def _verdicts(result: dict) -> list[str]:
    return [f["verdict"] for f in result["findings"]]


def test_planted_grid_where_every_finding_holds():
    r = _grid(AVG, LOSS, TIME, noise=0.05)
    assert _verdicts(r) == [findings.HELD] * 4
    sup = {c["difference"]: c["verdict"] for f in r["findings"] for c in f["supporting"]}
    assert sup.pop("MHA - GQA-2") == findings.NOISE  # planted 0.1 apart: GQA near MHA
    assert sup.pop("MHA - MQA") == findings.HELD
    assert all(v == findings.HELD for v in sup.values())
    f3 = r["findings"][2]["deciding"][1]
    assert f3["difference"] == "2 GQA-2 - MQA - MHA"
    assert f3["estimate"] == pytest.approx(2 * 47.1 - 46.6 - 47.2)
    text = findings.to_text(r)
    assert "3. GQA-2 near MHA and above MQA (alpha 0.05): HELD" in text


def test_planted_grid_where_no_finding_holds():
    avg = dict(AVG)
    avg[(1, "first", A)], avg[(1, "random", A)] = 48.0, 49.0  # random > first > mean
    avg[(1, "mean", 0.0)] = 47.0  # uptraining hurts MQA
    avg[(G, "mean", A)] = 44.0  # GQA below MQA
    time = {1: 0.5, G: 0.9, H: 0.4}  # MHA fastest
    r = _grid(avg, LOSS, time, noise=0.05)
    assert _verdicts(r) == [findings.NOT_HELD] * 4


def test_planted_grid_inside_the_noise():
    avg = {k: 45.0 + 0.01 * i for i, k in enumerate(AVG)}
    time = {1: 0.30, G: 0.30, H: 0.301}
    r = _grid(avg, LOSS, time, noise=2.0)
    assert _verdicts(r)[:3] == [findings.NOISE] * 3
    rng = np.random.default_rng(0)  # independent noise per G (timings are not paired)
    t = findings.findings({}, {}, {k: _m(v, 0.01, rng) for k, v in time.items()}, H, G, A)
    assert t["findings"][3]["verdict"] == findings.NOISE


def test_interval_by_hand_with_pooled_seed_variance():
    # Replicates +-1 around the estimates: sd of the difference's replicates is known.
    reps = np.array([1.0, -1.0, 1.0, -1.0])
    ms = {
        "a": Measure(2.0, 2.0 + reps, [1.0, 3.0]),  # seed variance 2
        "b": Measure(1.0, 1.0 - reps, [1.0]),
    }
    c = findings.check("avg", "a - b", {"a": 1, "b": -1}, ms, seed_var=2.0)
    se_ex = np.std(2 * reps, ddof=1)
    se_seed = math.sqrt(2.0 / 2 + 2.0 / 1)
    half = findings.Z * math.hypot(se_ex, se_seed)
    assert c["estimate"] == 1.0
    assert c["ci"] == pytest.approx([1.0 - half, 1.0 + half])
    assert c["se_seeds"] == pytest.approx(se_seed)
    assert c["verdict"] == findings.NOISE  # half-width ~4.4 > 1
    assert findings.decide(0.1, 2.0) == findings.HELD
    assert findings.decide(-2.0, -0.1) == findings.NOT_HELD
    assert findings.combine([findings.HELD, findings.NOISE]) == findings.NOISE
    assert findings.combine([findings.HELD, findings.NOT_HELD]) == findings.NOT_HELD


def test_missing_grid_point_is_not_measured():
    avg = {k: v for k, v in AVG.items() if k != (1, "random", A)}
    r = _grid(avg, LOSS, TIME, noise=0.05)
    assert r["findings"][0]["verdict"] == findings.NOT_MEASURED
    assert "not measured (grid lacks" in findings.to_text(r)
