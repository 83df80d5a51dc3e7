"""scripts/summarize_heldout.py: losses and paired differences from per-example NLL."""

import json

import numpy as np

from scripts import summarize_heldout


def _write(root, name, nll, tokens):
    d = root / "heldout" / name
    d.mkdir(parents=True)
    (d / "per_example.json").write_text(json.dumps({"nll": nll, "targets": tokens}))
    (d / "DONE.json").write_text("{}")


def test_losses_and_paired_differences(tmp_path):
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 50, size=200)
    base = rng.uniform(1.0, 3.0, size=200) * tokens
    _write(tmp_path, "mha-mean", base.tolist(), tokens.tolist())
    # Every example 0.1 nats/token worse: the paired difference is exactly 0.1 in every
    # resample, so its interval collapses onto 0.1 while each loss's own interval does not.
    _write(tmp_path, "mqa-mean-0.05", (base + 0.1 * tokens).tolist(), tokens.tolist())
    out = summarize_heldout.summarise(summarize_heldout.load(tmp_path), samples=200, seed=0)
    expected = base.sum() / tokens.sum()
    assert abs(out["loss"]["mha-mean"]["estimate"] - expected) < 1e-12
    d = out["minus_mha"]["mqa-mean-0.05"]
    assert abs(d["estimate"] - 0.1) < 1e-12
    assert d["ci95"][1] - d["ci95"][0] < 1e-9
    lo, hi = out["loss"]["mha-mean"]["ci95"]
    assert lo < expected < hi and hi - lo > 0.01
    assert "| mha-mean |" in summarize_heldout.to_markdown(out)


def test_grid_comparisons_only_at_equal_uptraining(tmp_path):
    rng = np.random.default_rng(1)
    tokens = rng.integers(5, 50, size=50)
    for i, name in enumerate(
        ["mha-mean", "mqa-mean", "gqa2-mean", "mqa-first", "mqa-mean-0.05", "gqa2-mean-0.05"]
    ):
        _write(tmp_path, name, (tokens * (2.0 + 0.1 * i)).tolist(), tokens.tolist())
    out = summarize_heldout.summarise(summarize_heldout.load(tmp_path), samples=50, seed=0)
    assert sorted(out["differences"]) == [
        "gqa2-mean - mqa-mean",
        "gqa2-mean-0.05 - mqa-mean-0.05",
        "mqa-first - mqa-mean",
    ]
    assert abs(out["differences"]["gqa2-mean - mqa-mean"]["estimate"] - 0.1) < 1e-12
    assert list(out["loss"])[:2] == ["mha-mean", "gqa2-mean"]  # alpha, method, then G down
    assert len(out["minus_mha"]) == 5
