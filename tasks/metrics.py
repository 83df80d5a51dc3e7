"""Metrics as T5 computes them: ROUGE (rouge_score), BLEU (sacrebleu), TriviaQA F1 / EM.

Each is a seqio metric_fn: (targets, predictions) -> {name: value}, values x 100.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer, scoring

ROUGE_KEYS = ("rouge1", "rouge2", "rougeLsum")
_BOOTSTRAP_SEED = 0
_PUNCTUATION = frozenset(string.punctuation)


def _prepare_summary(summary: str) -> str:
    # rougeLsum splits summaries into sentences on newlines; T5 marks " . " as a boundary.
    return summary.replace(" . ", " .\n")


def rouge(
    targets: Sequence[str], predictions: Sequence[str], score_keys: Sequence[str] = ROUGE_KEYS
) -> dict[str, float]:
    """ROUGE F-measure x 100: no stemmer, bootstrap mid over examples, as T5."""
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions.")
    scorer = rouge_scorer.RougeScorer(rouge_types=list(score_keys), use_stemmer=False)
    aggregator = scoring.BootstrapAggregator()
    for target, prediction in zip(targets, predictions, strict=True):
        aggregator.add_scores(
            scorer.score(target=_prepare_summary(target), prediction=_prepare_summary(prediction))
        )
    # NOTE: the bootstrap resamples with NumPy's global RNG; seed it (and restore it) so
    # the same predictions always give the same score. T5 leaves it unseeded.
    state = np.random.get_state()
    np.random.seed(_BOOTSTRAP_SEED)
    try:
        result = aggregator.aggregate()
    finally:
        np.random.set_state(state)
    return {key: float(result[key].mid.fmeasure * 100) for key in score_keys}


def bleu(targets: Sequence[str] | Sequence[Sequence[str]], predictions: Sequence[str]) -> dict:
    """Corpus BLEU x 100 with sacrebleu's international tokenizer, as T5."""
    if targets and isinstance(targets[0], (list, tuple)):
        # One list of references per example -> sacrebleu's one stream per reference.
        references = [list(refs) for refs in zip(*targets, strict=True)]
    else:
        references = [list(targets)]
    score = sacrebleu.corpus_bleu(
        list(predictions),
        references,
        smooth_method="exp",
        smooth_value=0.0,
        force=False,
        lowercase=False,
        tokenize="intl",
        use_effective_order=False,
    )
    return {"bleu": float(score.score)}


def normalize_squad(text: str) -> str:
    """SQuAD answer normalisation: lower case, drop punctuation and articles, fix spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(target: str, prediction: str) -> float:
    target_tokens, prediction_tokens = target.split(), prediction.split()
    common = collections.Counter(target_tokens) & collections.Counter(prediction_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(target_tokens)
    return 2 * precision * recall / (precision + recall)


def trivia_qa(targets: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
    """TriviaQA token F1 and exact match x 100, SQuAD-normalised, max over the aliases."""
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions.")
    if not targets:
        raise ValueError("trivia_qa needs at least one example.")
    f1s, ems = [], []
    for aliases, prediction in zip(targets, predictions, strict=True):
        if isinstance(aliases, str):
            aliases = [aliases]
        if not aliases:
            raise ValueError(f"An example has no answer aliases (prediction {prediction!r}).")
        pred = normalize_squad(prediction)
        golds = [normalize_squad(a) for a in aliases]
        f1s.append(max(_token_f1(g, pred) for g in golds))
        ems.append(max(float(g == pred) for g in golds))
    return {"f1": 100 * float(np.mean(f1s)), "em": 100 * float(np.mean(ems))}


# -- per-example scores (for bootstrap confidence intervals over eval examples) ----------
def rouge_per_example(
    targets: Sequence[str], predictions: Sequence[str], key: str = "rouge1"
) -> np.ndarray:
    """ROUGE F-measure x 100 of each example, as `rouge` scores them (their mean ~ `rouge`)."""
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions.")
    scorer = rouge_scorer.RougeScorer(rouge_types=[key], use_stemmer=False)
    return np.array(
        [
            scorer.score(target=_prepare_summary(t), prediction=_prepare_summary(p))[key].fmeasure
            * 100
            for t, p in zip(targets, predictions, strict=True)
        ]
    )


BLEU_STATS = ("sys_len", "ref_len", "correct1", "correct2", "correct3", "correct4",
              "total1", "total2", "total3", "total4")  # fmt: skip


def bleu_sentence_stats(
    targets: Sequence[str] | Sequence[Sequence[str]], predictions: Sequence[str]
) -> np.ndarray:
    """[n, 10] BLEU sufficient statistics per sentence (BLEU_STATS); their sum gives `bleu`."""
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions.")
    scorer = sacrebleu.BLEU(tokenize="intl", smooth_method="exp", lowercase=False)
    rows = []
    for target, prediction in zip(targets, predictions, strict=True):
        refs = [target] if isinstance(target, str) else list(target)
        s = scorer.corpus_score([prediction], [[r] for r in refs])
        rows.append([s.sys_len, s.ref_len, *s.counts, *s.totals])
    return np.array(rows, dtype=np.int64).reshape(-1, len(BLEU_STATS))


def bleu_from_stats(stats: np.ndarray) -> float:
    """Corpus BLEU x 100 from summed sufficient statistics [10], as `bleu` computes it."""
    s = [int(v) for v in stats]
    return float(
        sacrebleu.BLEU.compute_bleu(
            s[2:6], s[6:10], s[0], s[1], smooth_method="exp", smooth_value=0.0
        ).score
    )


def trivia_qa_per_example(
    targets: Sequence[Sequence[str]], predictions: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per-example TriviaQA F1 and EM x 100 (their means are `trivia_qa`)."""
    f1s, ems = [], []
    for aliases, prediction in zip(targets, predictions, strict=True):
        m = trivia_qa([aliases], [prediction])
        f1s.append(m["f1"])
        ems.append(m["em"])
    return {"f1": np.array(f1s), "em": np.array(ems)}


def per_example(
    metric: str, targets: Sequence, predictions: Sequence[str]
) -> tuple[str, np.ndarray]:
    """('mean', scores [n]) or ('bleu', stats [n, 10]) for a headline metric name."""
    if metric in ROUGE_KEYS:
        return "mean", rouge_per_example(targets, predictions, metric)
    if metric == "bleu":
        return "bleu", bleu_sentence_stats(targets, predictions)
    if metric in ("f1", "em"):
        return "mean", trivia_qa_per_example(targets, predictions)[metric]
    raise ValueError(
        f"no per-example form of metric {metric!r}: use one of {[*ROUGE_KEYS, 'bleu', 'f1', 'em']}"
    )
