"""Registers the SeqIO tasks (imported by tasks/__init__.py when SeqIO and TF are installed).

`import tasks` registers every task and the fine-tuning mixture with the default
vocabulary and data directories; nothing is read until a dataset is requested.
Call `tasks.register_tasks(...)` to point them at another vocabulary or data directory.
"""

from tasks import (
    builtin,  # noqa: F401  (registers the bundled-corpus tasks)
    realtext,
)
from tasks.registry import (
    ALL_TASKS,
    ARXIV,
    C4_SPAN_CORRUPTION,
    CNN_DAILYMAIL,
    FEATURE_LENGTHS,
    FINETUNE_MIXTURE,
    FINETUNE_TASKS,
    HEADLINE_METRIC,
    MEDIA_SUM,
    MULTI_NEWS,
    PUBMED,
    TFDS_SPECS,
    TRIVIA_QA,
    WMT14_ENDE,
    build_command,
    missing_data,
    output_features,
    register_tasks,
)
from tasks.sources import DataNotFoundError
from tasks.vocab import VocabularyNotFoundError, get_vocabulary, train_tiny_sentencepiece

__all__ = [
    "ALL_TASKS",
    "ARXIV",
    "C4_SPAN_CORRUPTION",
    "CNN_DAILYMAIL",
    "DataNotFoundError",
    "FEATURE_LENGTHS",
    "FINETUNE_MIXTURE",
    "FINETUNE_TASKS",
    "HEADLINE_METRIC",
    "MEDIA_SUM",
    "MULTI_NEWS",
    "PUBMED",
    "TFDS_SPECS",
    "TRIVIA_QA",
    "VocabularyNotFoundError",
    "WMT14_ENDE",
    "build_command",
    "get_vocabulary",
    "missing_data",
    "output_features",
    "register_tasks",
    "train_tiny_sentencepiece",
]

register_tasks()
# The real-text tasks (scripts/build_offline_corpus.py); reading fails clearly if unbuilt.
realtext.register_seqio_tasks()
