"""Metrics against hand-computed values and the reference packages (rouge_score, sacrebleu)."""

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer, scoring

from tasks import metrics


def test_rouge_hand_computed_single_example():
    # rouge1: 2 of 3 unigrams shared; rouge2: 1 of 2 bigrams; LCS "the cat" = 2 of 3.
    scores = metrics.rouge(["the cat sat"], ["the cat ran"])
    assert scores == pytest.approx({"rouge1": 200 / 3, "rouge2": 50.0, "rougeLsum": 200 / 3})


def test_rouge_lsum_splits_sentences_on_spaced_periods():
    # With " . " -> " .\n" each sentence of the target finds its match: union LCS 4 / 4.
    # Scored as one sentence, LCS("a b c d", "c d a b") would be 2 / 4 = 50.
    scores = metrics.rouge(["a b . c d"], ["c d . a b"])
    assert scores["rougeLsum"] == pytest.approx(100.0)
    assert scores["rouge1"] == pytest.approx(100.0)
    assert scores["rouge2"] == pytest.approx(200 / 3)  # bigrams {ab, bc, cd} vs {cd, da, ab}


def test_rouge_matches_rouge_score_bootstrap_and_is_deterministic():
    rng = np.random.default_rng(1)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    targets = [
        " ".join(rng.choice(words, 12)) + " . " + " ".join(rng.choice(words, 5)) for _ in range(20)
    ]
    preds = [" ".join(rng.choice(words, 10)) for _ in range(20)]

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeLsum"], use_stemmer=False)
    aggregator = scoring.BootstrapAggregator()
    per_example = []
    for t, p in zip(targets, preds, strict=True):
        s = scorer.score(t.replace(" . ", " .\n"), p.replace(" . ", " .\n"))
        aggregator.add_scores(s)
        per_example.append(s)
    np.random.seed(0)  # metrics.rouge seeds the bootstrap with 0
    reference = aggregator.aggregate()

    state = np.random.get_state()
    got = metrics.rouge(targets, preds)
    assert np.array_equal(np.random.get_state()[1], state[1]), "global NumPy RNG was disturbed"
    assert got == metrics.rouge(targets, preds)
    for key in metrics.ROUGE_KEYS:
        assert got[key] == pytest.approx(reference[key].mid.fmeasure * 100, abs=1e-9)
        # The bootstrap median sits near the plain mean over examples.
        mean = 100 * np.mean([s[key].fmeasure for s in per_example])
        assert got[key] == pytest.approx(mean, abs=1.5)


def test_rouge_rejects_length_mismatch():
    with pytest.raises(ValueError, match="2 targets but 1 predictions"):
        metrics.rouge(["a", "b"], ["a"])


def test_bleu_hand_computed():
    # n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths so no brevity penalty.
    got = metrics.bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert got["bleu"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    assert metrics.bleu(["ein kleiner Test mit Wörtern"], ["ein kleiner Test mit Wörtern"])[
        "bleu"
    ] == pytest.approx(100)
    # As T5 (no effective order): a 3-token corpus has no 4-grams, so BLEU is 0.
    assert metrics.bleu(["ein kleiner Test"], ["ein kleiner Test"])["bleu"] == 0.0


def test_bleu_uses_intl_tokenizer():
    # The international tokenizer splits Unicode quotes; 13a would score this 36.1.
    got = metrics.bleu(["„ Hallo “ Welt und so"], ["„Hallo“ Welt und so"])
    assert got["bleu"] == pytest.approx(100.0)


def test_bleu_matches_sacrebleu_single_and_multi_reference():
    targets = ["Das Haus ist klein.", "Der Hund bellt laut.", "Wir gehen morgen nach Hause."]
    preds = ["Das Haus ist sehr klein.", "Der Hund bellt.", "Morgen gehen wir nach Hause."]
    ref = sacrebleu.corpus_bleu(preds, [targets], tokenize="intl", smooth_method="exp")
    assert metrics.bleu(targets, preds)["bleu"] == pytest.approx(ref.score, abs=1e-9)

    multi = [[t, t.lower()] for t in targets]
    ref = sacrebleu.corpus_bleu(
        preds, [targets, [t.lower() for t in targets]], tokenize="intl", smooth_method="exp"
    )
    assert metrics.bleu(multi, preds)["bleu"] == pytest.approx(ref.score, abs=1e-9)


def test_squad_normalisation():
    assert metrics.normalize_squad("The  Eiffel-Tower!") == "eiffeltower"
    assert metrics.normalize_squad("An apple, a day") == "apple day"


def test_trivia_qa_hand_computed():
    targets = [
        ["Eiffel Tower", "Tour Eiffel"],  # exact after normalisation: F1 1, EM 1
        ["Eiffel Tower"],  # "eiffel" vs "eiffel tower": P 1, R 1/2 -> F1 2/3, EM 0
        ["Paris", "France Paris"],  # best alias "france paris": F1 1 (bag of words), EM 0
        ["Gustave Eiffel"],  # no overlap: 0, 0
    ]
    preds = ["the Eiffel tower!", "Eiffel", "Paris, France", "Napoleon"]
    got = metrics.trivia_qa(targets, preds)
    assert got["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 0) / 4)
    assert got["em"] == pytest.approx(100 * 1 / 4)


def test_trivia_qa_max_over_aliases_not_mean():
    got = metrics.trivia_qa([["wrong answer", "right"]], ["right"])
    assert got == {"f1": 100.0, "em": 100.0}


def test_trivia_qa_errors():
    with pytest.raises(ValueError, match="no answer aliases"):
        metrics.trivia_qa([[]], ["x"])
    with pytest.raises(ValueError, match="1 targets but 2 predictions"):
        metrics.trivia_qa([["x"]], ["x", "y"])
