"""Bootstrap intervals against closed forms, per-example metrics against hand-computed values
and sacrebleu's own corpus BLEU, timing spread against hand-computed quartiles."""

import numpy as np
import pytest
import sacrebleu
from scipy import stats

from gqa_t5 import uncertainty
from tasks import metrics


def test_bootstrap_ci_of_a_proportion_is_the_binomial_quantiles():
    # Resampling n 0/1 values with k ones: the resample mean is exactly Binomial(n, k/n) / n.
    n, k, samples = 50, 15, 20000
    x = np.r_[np.ones(k), np.zeros(n - k)]
    w = uncertainty.resample_weights(n, samples, seed=3)
    reps = uncertainty.statistic("mean", x, w)
    lo, hi = uncertainty.percentile_ci(reps)
    p = k / n
    assert lo == pytest.approx(stats.binom.ppf(0.025, n, p) / n, abs=1 / n + 1e-12)
    assert hi == pytest.approx(stats.binom.ppf(0.975, n, p) / n, abs=1 / n + 1e-12)
    assert np.std(reps) == pytest.approx(np.sqrt(p * (1 - p) / n), rel=0.03)
    assert uncertainty.statistic("mean", x)[0] == p
    # Seeded: the same seed gives the same interval, another seed a different draw.
    again = uncertainty.statistic("mean", x, uncertainty.resample_weights(n, samples, seed=3))
    np.testing.assert_array_equal(reps, again)
    assert not np.array_equal(w, uncertainty.resample_weights(n, samples, seed=4))


def test_constant_scores_give_a_zero_width_interval_and_paired_differences_cancel():
    w = uncertainty.resample_weights(20, 500, seed=0)
    x = np.full(20, 7.5)
    assert uncertainty.percentile_ci(uncertainty.statistic("mean", x, w)) == (7.5, 7.5)
    y = np.random.default_rng(1).normal(size=20)
    a = uncertainty.seeded_measure("mean", [y], w)
    b = uncertainty.seeded_measure("mean", [y + 1.0], w)
    np.testing.assert_allclose(b.replicates - a.replicates, 1.0)  # same resamples


SYS = ["Das ist ein kleines Haus .", "Er geht nach Hause", "Ich weiß es nicht", "Ja"]
REF = ["Das ist ein kleines Haus .", "Er ging nach Hause .", "Ich weiß nicht", "Nein danke"]


def test_bleu_from_sentence_statistics_equals_sacrebleu_corpus_bleu():
    st = metrics.bleu_sentence_stats(REF, SYS)
    assert st.shape == (4, 10)
    full = uncertainty.statistic("bleu", st)[0]
    assert full == pytest.approx(metrics.bleu(REF, SYS)["bleu"], abs=1e-9)
    # A resample (sentence 0 twice, sentence 1 dropped) is corpus BLEU of that corpus.
    w = np.array([[2, 0, 1, 1]])
    idx = [0, 0, 2, 3]
    want = sacrebleu.corpus_bleu(
        [SYS[i] for i in idx], [[REF[i] for i in idx]], tokenize="intl"
    ).score
    assert uncertainty.statistic("bleu", st, w)[0] == pytest.approx(want, abs=1e-9)


def test_per_example_rouge_and_trivia_qa_against_hand_values():
    # ROUGE-1: target 3 tokens, prediction 2 of them: P = 1, R = 2/3, F = 0.8.
    r = metrics.rouge_per_example(["the cat sat", "a b"], ["the cat", "c d"], "rouge1")
    np.testing.assert_allclose(r, [80.0, 0.0])
    qa = metrics.trivia_qa_per_example([["Paris"], ["the big apple"]], ["paris", "big apple city"])
    np.testing.assert_allclose(qa["f1"], [100.0, 80.0])  # P 2/3, R 1 -> 0.8
    np.testing.assert_allclose(qa["em"], [100.0, 0.0])
    kind, data = metrics.per_example("bleu", REF, SYS)
    assert kind == "bleu" and data.shape == (4, 10)
    with pytest.raises(ValueError, match="no per-example form of metric 'accuracy'"):
        metrics.per_example("accuracy", REF, SYS)


def test_loss_ratio_and_task_measures_average_over_seeds_and_tasks():
    nll_tokens = np.array([[10.0, 5], [30.0, 5], [4.0, 2]])
    m = uncertainty.loss_measures({"a": nll_tokens}, 200, 0)["a"]
    assert m.estimate == pytest.approx(44 / 12)
    per = {
        "p": {
            "t1": [("mean", np.array([1.0, 3.0])), ("mean", np.array([3.0, 5.0]))],
            "t2": [("mean", np.array([10.0, 10.0])), ("mean", np.array([20.0, 20.0]))],
        }
    }
    out = uncertainty.task_measures(per, 100, 0)["p"]
    assert out["t1"].seed_values == [2.0, 4.0] and out["t1"].estimate == 3.0
    assert out["avg"].seed_values == [6.0, 12.0] and out["avg"].estimate == 9.0
    assert out["avg"].seed_sd() == pytest.approx(np.sqrt(18.0))
    with pytest.raises(ValueError, match="evaluated on"):
        uncertainty.task_measures(
            {"a": {"t": [("mean", np.ones(3))]}, "b": {"t": [("mean", np.ones(4))]}}, 10, 0
        )


def test_median_iqr_and_pooled_seed_variance_by_hand():
    s = uncertainty.median_iqr([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (s["median"], s["q1"], s["q3"], s["iqr"]) == (3.0, 2.0, 4.0, 2.0)
    ms = [
        uncertainty.Measure(0.0, np.zeros(1), [1.0, 3.0]),  # var 2, dof 1
        uncertainty.Measure(0.0, np.zeros(1), [0.0, 3.0, 6.0]),  # var 9, dof 2
        uncertainty.Measure(0.0, np.zeros(1), [5.0]),  # no dof
    ]
    assert uncertainty.pooled_seed_var(ms) == pytest.approx((2 + 2 * 9) / 3)
    assert uncertainty.pooled_seed_var(ms[2:]) is None
