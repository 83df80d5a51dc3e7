"""The paper's seven fine-tuning tasks, C4 span corruption and their mixture, for SeqIO."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence

import seqio

from tasks import metrics, preprocessors, sources, span_corruption, vocab

CNN_DAILYMAIL = "gqa_cnn_dailymail"
ARXIV = "gqa_arxiv"
PUBMED = "gqa_pubmed"
MULTI_NEWS = "gqa_multi_news"
MEDIA_SUM = "gqa_media_sum"
WMT14_ENDE = "gqa_wmt14_ende"
TRIVIA_QA = "gqa_trivia_qa"
C4_SPAN_CORRUPTION = "gqa_c4_span_corruption"
FINETUNE_MIXTURE = "gqa_finetune_mixture"

FINETUNE_TASKS = (CNN_DAILYMAIL, ARXIV, PUBMED, MEDIA_SUM, MULTI_NEWS, WMT14_ENDE, TRIVIA_QA)
ALL_TASKS = FINETUNE_TASKS + (C4_SPAN_CORRUPTION,)


def _lengths(inputs: int, targets: int) -> dict[str, int]:
    return {"inputs": inputs, "targets": targets}


# Input / output lengths from the paper; the mixture takes the longest of its tasks.
FEATURE_LENGTHS: dict[str, dict[str, int]] = {
    CNN_DAILYMAIL: _lengths(512, 256),
    ARXIV: _lengths(2048, 512),
    PUBMED: _lengths(2048, 512),
    MULTI_NEWS: _lengths(2048, 512),
    MEDIA_SUM: _lengths(2048, 512),
    WMT14_ENDE: _lengths(512, 256),
    TRIVIA_QA: _lengths(2048, 32),
    C4_SPAN_CORRUPTION: _lengths(512, 114),
    FINETUNE_MIXTURE: _lengths(2048, 512),
}

# Each task's headline metric in Table 1 (key in its metric_fn's result).
HEADLINE_METRIC = {
    **{name: "rouge1" for name in (CNN_DAILYMAIL, ARXIV, PUBMED, MEDIA_SUM, MULTI_NEWS)},
    WMT14_ENDE: "bleu",
    TRIVIA_QA: "f1",
}


@dataclasses.dataclass(frozen=True)
class _TfdsSpec:
    tfds_name: str
    preprocessor: Callable
    metric_fns: Sequence[Callable] = ()
    postprocess_fn: Callable | None = None
    splits: Sequence[str] = ("train", "validation", "test")


def _summarize(article: str, summary: str) -> Callable:
    return functools.partial(preprocessors.summarize, article_key=article, summary_key=summary)


# TFDS builders and versions from PAPER.md. MultiNews: TFDS code no longer builds LongT5's
# 1.0.0 (its URLs died); 2.1.0 is the same corpus from the authors' re-hosted files.
TFDS_SPECS: Mapping[str, _TfdsSpec] = {
    CNN_DAILYMAIL: _TfdsSpec(
        "cnn_dailymail:3.4.0", _summarize("article", "highlights"), (metrics.rouge,)
    ),
    ARXIV: _TfdsSpec(
        "scientific_papers/arxiv:1.1.1", _summarize("article", "abstract"), (metrics.rouge,)
    ),
    PUBMED: _TfdsSpec(
        "scientific_papers/pubmed:1.1.1", _summarize("article", "abstract"), (metrics.rouge,)
    ),
    MULTI_NEWS: _TfdsSpec("multi_news:2.1.0", _summarize("document", "summary"), (metrics.rouge,)),
    WMT14_ENDE: _TfdsSpec(
        "wmt14_translate/de-en:1.0.0", preprocessors.translate_en_de, (metrics.bleu,)
    ),
    TRIVIA_QA: _TfdsSpec(
        "trivia_qa/rc:1.1.0",
        preprocessors.trivia_qa,
        (metrics.trivia_qa,),
        preprocessors.trivia_qa_postprocess,
    ),
    C4_SPAN_CORRUPTION: _TfdsSpec(
        "c4/en:2.2.0",
        functools.partial(seqio.preprocessors.rekey, key_map={"inputs": None, "targets": "text"}),
        splits=("train", "validation"),
    ),
}


def build_command(task_name: str) -> str:
    """The command that prepares a TFDS-backed task's data."""
    tfds_name = TFDS_SPECS[task_name].tfds_name
    if task_name == C4_SPAN_CORRUPTION:
        # C4 is built from Common Crawl with Apache Beam (hundreds of GB; see README.md).
        return f"tfds build {tfds_name} --beam_pipeline_options=<your Beam runner options>"
    return f"tfds build {tfds_name}"


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    """ "inputs" / "targets" with EOS, as t5x's EncDecFeatureConverter expects."""
    return {
        "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=False),
        "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
    }


def _preprocessors(task_name: str, spec_preprocessor: Callable) -> list[Callable]:
    tokenize = [spec_preprocessor, seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder()]
    if task_name == C4_SPAN_CORRUPTION:
        tokenize.append(span_corruption.span_corruption)
    return tokenize + [seqio.preprocessors.append_eos_after_trim]


def _add_task(name: str, source: seqio.DataSource, preprocess: list, features, **kwargs) -> None:
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=source, preprocessors=preprocess, output_features=features, **kwargs
    )


def register_tasks(
    vocab_path: str | None = None,
    tfds_data_dir: str | None = None,
    media_sum_dir: str | None = None,
    vocabulary: seqio.Vocabulary | None = None,
) -> None:
    """(Re-)registers all tasks and the mixture; safe to call again with other settings.

    Args:
      vocab_path: SentencePiece model; default $GQA_T5_VOCAB, else T5's public model.
      tfds_data_dir: TFDS data directory; default $TFDS_DATA_DIR, else ~/tensorflow_datasets.
      media_sum_dir: MediaSum JSON directory; default $GQA_T5_MEDIASUM_DIR, else TFDS's
        downloads/manual.
      vocabulary: a ready vocabulary, overriding vocab_path (tests use a tiny model).
    """
    features = output_features(vocabulary or vocab.get_vocabulary(vocab_path))
    seqio.MixtureRegistry.remove(FINETUNE_MIXTURE)
    for name, spec in TFDS_SPECS.items():
        source = sources.PreparedTfdsSource(
            spec.tfds_name, build_command(name), tfds_data_dir, spec.splits
        )
        _add_task(
            name,
            source,
            _preprocessors(name, spec.preprocessor),
            features,
            metric_fns=list(spec.metric_fns),
            postprocess_fn=spec.postprocess_fn,
        )
    _add_task(
        MEDIA_SUM,
        sources.mediasum_source(media_sum_dir),
        _preprocessors(MEDIA_SUM, _summarize("interview", "summary")),
        features,
        metric_fns=[metrics.rouge],
    )
    # Equal rates: the paper fine-tunes (and reports) each task on its own; the mixture
    # is a convenience for multi-task runs.
    seqio.MixtureRegistry.add(FINETUNE_MIXTURE, list(FINETUNE_TASKS), default_rate=1.0)


def missing_data(
    tfds_data_dir: str | None = None, media_sum_dir: str | None = None
) -> dict[str, str | None]:
    """For each task, the missing-data message (what to run or download), or None if ready."""
    status: dict[str, str | None] = {}
    for name, spec in TFDS_SPECS.items():
        source = sources.PreparedTfdsSource(
            spec.tfds_name, build_command(name), tfds_data_dir, spec.splits
        )
        error = source.missing_data_error()
        status[name] = str(error) if error else None
    try:
        sources.mediasum_files(sources.mediasum_dir(media_sum_dir))
        status[MEDIA_SUM] = None
    except sources.DataNotFoundError as e:
        status[MEDIA_SUM] = str(e)
    return status
