"""SeqIO tasks, preprocessors and metrics for the GQA paper's datasets (no model imports).

`import tasks` registers every task and the fine-tuning mixture with the default
vocabulary and data directories; nothing is read until a dataset is requested.
Call `tasks.register_tasks(...)` to point them at another vocabulary or data directory.

Without TensorFlow or SeqIO (a TF-free machine reading Grain exports), `import tasks`
registers nothing and only the TF-free modules are usable: `tasks.metrics`,
`tasks.postprocess`, `tasks.kjv` (and `tasks.realtext`); `HAVE_SEQIO` says which.
"""

from tasks import realtext  # TF-free; its SeqIO tasks are registered below

try:
    import seqio  # noqa: F401
    import tensorflow  # noqa: F401

    HAVE_SEQIO = True
except ImportError:
    HAVE_SEQIO = False

if HAVE_SEQIO:
    from tasks import builtin  # noqa: F401  (registers the bundled-corpus tasks)
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

if HAVE_SEQIO:
    register_tasks()
    # The real-text tasks (scripts/build_offline_corpus.py); reading fails clearly if unbuilt.
    realtext.register_seqio_tasks()
