"""Built-in tasks from the bundled public-domain corpus, for the offline CPU reproduction.

The corpus is a King James Version excerpt (`gqa_t5/data/corpus/`, see its README), one
verse per line. Chapters whose hash falls in the validation bucket are held out of every
task's train split, pre-training included. The fine-tuning tasks are small stand-ins with
the shapes of the paper's (they are not the paper's datasets):

- `kjv_summarize` (ROUGE): a 3-verse passage -> its first verse (a "lead" summary).
- `kjv_modernize` (BLEU): a verse -> the verse with archaic forms rewritten by rule
  (thou -> you, hath -> has, ...), a translation-like string transduction.
- `kjv_cloze_qa` (F1): "question: <verse with a name blanked> context: <the verse
  and the next>" -> the name, an extractive QA stand-in.
- `kjv_span_corruption`: T5.1.1 span corruption over the train chapters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import seqio
import tensorflow as tf

from tasks import metrics, span_corruption, vocab
from tasks.kjv import (  # noqa: F401  (the TF-free half of this module, re-exported)
    CLOZE_QA,
    FEATURE_LENGTHS,
    FINETUNE_TASKS,
    HEADLINE_METRIC,
    MAX_EVAL_EXAMPLES,
    MIXTURE,
    MODERNIZE,
    SPAN_CORRUPTION,
    SUMMARIZE,
    VOCAB_SIZE,
    chapters,
    cloze_qa_examples,
    corpus_dir,
    modernize,
    modernize_examples,
    read_corpus,
    span_corruption_texts,
    split_of,
    summarize_examples,
)
from tasks.postprocess import trivia_qa_postprocess


def _dataset_fn(
    split: str, shuffle_files: bool, seed: int | None = None, *, make: Callable, path: str, cap
):
    del shuffle_files, seed  # in-memory examples; the runner shuffles
    rows = make(path, split)
    if split == "validation" and cap:
        rows = rows[:cap]
    if not rows:
        raise ValueError(f"built-in task has no {split} examples in {path}")
    keys = [k for k in rows[0] if k != "answers"]
    ds = tf.data.Dataset.from_tensor_slices({k: [r[k] for r in rows] for k in keys})
    if "answers" in rows[0]:
        answers = tf.ragged.constant([r["answers"] for r in rows])
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(answers)))
        ds = ds.map(lambda x, a: {**x, "answers": a})
    return ds


def register_builtin_tasks(
    corpus_path: str | None = None,
    vocab_path: str | None = None,
    max_eval_examples: int = MAX_EVAL_EXAMPLES,
) -> None:
    """(Re-)register the built-in tasks and their mixture with the bundled vocabulary."""
    root = corpus_dir()
    path = str(corpus_path or root / "kjv_excerpt.tsv")
    voc = vocab.get_vocabulary(str(vocab_path or root / "spm.model"))
    features = {
        "inputs": seqio.Feature(voc, add_eos=True, required=False),
        "targets": seqio.Feature(voc, add_eos=True),
    }
    specs = [
        (SPAN_CORRUPTION, span_corruption_texts, [span_corruption.span_corruption], [], None),
        (SUMMARIZE, summarize_examples, [], [metrics.rouge], None),
        (MODERNIZE, modernize_examples, [], [metrics.bleu], None),
        (CLOZE_QA, cloze_qa_examples, [], [metrics.trivia_qa], trivia_qa_postprocess),
    ]
    seqio.MixtureRegistry.remove(MIXTURE)
    for name, make, extra, metric_fns, post in specs:
        source = seqio.FunctionDataSource(
            functools.partial(_dataset_fn, make=make, path=path, cap=max_eval_examples),
            splits=("train", "validation"),
        )
        seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add(
            name,
            source=source,
            preprocessors=[
                seqio.preprocessors.tokenize,
                seqio.CacheDatasetPlaceholder(),
                *extra,
                seqio.preprocessors.append_eos_after_trim,
            ],
            output_features=features,
            metric_fns=metric_fns,
            postprocess_fn=post,
        )
    seqio.MixtureRegistry.add(MIXTURE, list(FINETUNE_TASKS), default_rate=1.0)


register_builtin_tasks()


def vocabulary() -> seqio.Vocabulary:
    """The bundled tasks' SentencePiece vocabulary (gin: `VOCABULARY = @builtin.vocabulary()`)."""
    return vocab.get_vocabulary(str(corpus_dir() / "spm.model"))
