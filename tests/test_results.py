"""Table rows and findings from planted stage outputs (no training): seed means, intervals,
held-out loss, T_infer median / IQR, and the grid keys the findings look up."""

import json

import numpy as np
import pytest

from gqa_t5 import findings, reproduce, results, tables

POINTS = ("mha", "mqa-mean-0", "mqa-mean-0.05", "mqa-first-0.05", "mqa-random-0.05",
          "gqa2-mean-0", "gqa2-mean-0.05")  # fmt: skip
STATS = [20, 22, 10, 5, 2, 1, 20, 19, 18, 17]  # one sentence's BLEU statistics


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    recipe = reproduce.Recipe(points=POINTS, finetune_tasks=["kjv_mixture"], bootstrap_samples=300)
    pts = []
    for i, spec in enumerate(POINTS):
        p = reproduce.parse_point(spec, 4)
        evals = []
        for s in range(2 if spec == "mha" else 1):
            f = root / f"{spec}-{s}.json"
            rouge = np.full(16, 10.0 * i + s * 4.0)  # mha: seeds 0 and 4 -> mean 2
            f.write_text(json.dumps({
                "kjv_summarize": {"metric": "rouge1", "kind": "mean", "data": rouge.tolist()},
                "kjv_modernize": {"metric": "bleu", "kind": "bleu", "data": [STATS] * 8},
            }))  # fmt: skip
            m = {"kjv_summarize": {"rouge1": 0.0}, "kjv_modernize": {"bleu": 0.0}}
            evals.append([{"metrics": m, "per_example": str(f)}])

        def loss(name, value):
            f = root / f"loss-{name}.json"
            f.write_text(json.dumps({"nll": [value * 10] * 5 + [value * 30] * 5,
                                     "targets": [10] * 5 + [30] * 5}))  # fmt: skip
            return {"checkpoint": name, "per_example": str(f), "examples": 10, "tokens": 200}

        conv = loss(f"{p.num_kv_heads}-{p.method}", 3.0 + 0.1 * p.num_kv_heads)
        start = conv if p.alpha == 0 else loss(spec, 2.0 + 0.1 * i)
        timing = {"batch_size": 4, "seconds_per_batch": [0.04, 0.08, 0.12, 0.4, 0.08]}
        pts.append({"point": p, "evals": evals, "loss_converted": conv, "loss_start": start,
                    "timing": timing})  # fmt: skip
    rows, found = results.summarise(pts, recipe)
    return rows, found, recipe, root


def test_rows_carry_seed_means_intervals_losses_and_time_spread(planted):
    rows, _, _, _ = planted
    mha, mqa = rows[0], rows[2]
    bleu = tables_bleu = pytest.approx(
        __import__("sacrebleu")
        .BLEU.compute_bleu(
            [8 * c for c in STATS[2:6]], [8 * t for t in STATS[6:]], 160, 176, "exp", 0.0
        )
        .score
    )
    assert mha["scores"] == {"kjv_summarize": 2.0, "kjv_modernize": bleu}
    assert mha["scores_by_seed"]["kjv_summarize"] == [0.0, 4.0]
    assert mha["avg"] == pytest.approx((2.0 + tables_bleu.expected) / 2)
    assert mha["avg_seed_sd"] == pytest.approx(np.std([0.0, 2.0], ddof=1))
    assert mha["scores_ci"]["kjv_modernize"] == pytest.approx([bleu.expected] * 2)  # constant
    assert mha["finetune_seeds"] == 2 and mqa["finetune_seeds"] == 1
    assert mqa["heldout_loss"]["loss"] == pytest.approx(2.2)  # (50 + 150) x 2.2 / 200
    assert mqa["heldout_loss_converted"]["loss"] == pytest.approx(3.1)  # mqa-mean conversion
    # T_infer: the median of 0.01, 0.02, 0.03, 0.1, 0.02 s/sample; quartiles 0.02 and 0.03.
    assert mha["t_infer"] == pytest.approx(0.02)
    spread = mha["t_infer_spread"]
    assert (spread["q1"], spread["q3"], spread["repeats"]) == pytest.approx((0.02, 0.03, 5))
    md = tables.to_markdown(rows).splitlines()
    assert md[2].startswith("| MHA-Tiny | 0.02 (50%) | 3.400 [3.400, 3.400] |")


def test_findings_find_every_grid_point_they_compare(planted):
    _, found, recipe, root = planted
    assert all(f["verdict"] != findings.NOT_MEASURED for f in found["findings"])
    f3 = found["findings"][2]["deciding"][0]  # GQA-2 - MQA at alpha 0.05: rows 6 and 2
    assert f3["difference"] == "GQA-2 - MQA"
    assert f3["estimate"] == pytest.approx((60.0 - 20.0) / 2)  # Avg halves the R1 gap
    out = root / "out"
    out.mkdir()
    table = tables.write_outputs(out, planted[0], recipe, found)
    saved = json.loads((out / "findings.json").read_text())
    assert saved["text"] == table["findings_text"] == findings.to_text(found)
    for name in ("conversion_method", "uptraining_proportion", "groups_vs_time"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
