"""Text-to-text formatting of the fine-tuning datasets (T5 / LongT5 conventions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import seqio
import tensorflow as tf

from tasks.postprocess import trivia_qa_postprocess  # noqa: F401  (re-exported)

SUMMARIZE_PREFIX = "summarize: "
TRANSLATE_PREFIX = "translate English to German: "


@seqio.map_over_dataset
def summarize(x: Mapping[str, tf.Tensor], article_key: str, summary_key: str) -> dict:
    """{"inputs": "summarize: " + article, "targets": summary}, as T5's summarize."""
    return {
        "inputs": tf.strings.join([SUMMARIZE_PREFIX, x[article_key]]),
        "targets": x[summary_key],
    }


@seqio.map_over_dataset
def translate_en_de(x: Mapping[str, tf.Tensor]) -> dict:
    """{"inputs": "translate English to German: " + en, "targets": de}, as T5's WMT tasks."""
    return {"inputs": tf.strings.join([TRANSLATE_PREFIX, x["en"]]), "targets": x["de"]}


def _join_collapse(parts: Sequence[tf.Tensor]) -> tf.Tensor:
    return tf.strings.regex_replace(tf.strings.join(parts, separator=" "), r"\s+", " ")


def _trivia_normalize(text: tf.Tensor) -> tf.Tensor:
    # NOTE: LongT5 lower-cases and strips quotes this way; "." stops at newlines (RE2), so
    # on a long page it drops the first and last apostrophe of each line. Kept for parity.
    return tf.strings.regex_replace(tf.strings.lower(text), "'(.*)'", r"\1")


@seqio.map_over_dataset
def trivia_qa(x: Mapping[str, tf.Tensor]) -> dict:
    """TriviaQA rc -> LongT5's "question: q context: title page title page ...".

    Wikipedia contexts only (LongT5 ignores web results); targets is the answer value,
    "answers" keeps every alias for the metric.
    """
    question = _trivia_normalize(x["question"])
    pages = x["entity_pages"]
    titled = tf.stack([_trivia_normalize(pages["title"]), _trivia_normalize(pages["wiki_context"])])
    # [2, pages] -> [pages, 2] -> "title page title page ..."
    context = tf.strings.reduce_join(tf.transpose(titled), separator=" ")
    return {
        "inputs": _join_collapse(["question:", question, "context:", context]),
        "targets": _trivia_normalize(x["answer"]["value"]),
        "id": x["question_id"],
        "answers": x["answer"]["aliases"],
    }
