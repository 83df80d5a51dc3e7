"""Real-text tasks built from Debian and npm packages (scripts/build_offline_corpus.py).

Importable without TensorFlow or SeqIO: `tokenized_examples` yields, TF-free, exactly what
the SeqIO task yields just before its `CacheDatasetPlaceholder`, so the Grain export and
the SeqIO path read the same records. `register_seqio_tasks` adds the SeqIO versions.

- realtext_span_corruption: documentation and dictionary prose (pre-training).
- realtext_translate_ende: LibreOffice help paragraphs, English -> German (BLEU).
- realtext_summarize: Debian package long description -> its synopsis (ROUGE).
- realtext_qa: WordNet definition -> the word(s) (TriviaQA-style F1 / EM).

Data: `<data_dir>/<task folder>/<split>.jsonl` (or `.jsonl.xz`, as packed for the GPU) and
`<data_dir>/spm/realtext.model`; data_dir is the argument, else $GQA_T5_REALTEXT_DIR,
else `data/realtext` in the repository.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import lzma
import os
import pathlib
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from tasks import metrics

SPAN_CORRUPTION = "realtext_span_corruption"
TRANSLATE_ENDE = "realtext_translate_ende"
SUMMARIZE = "realtext_summarize"
QA = "realtext_qa"
MIXTURE = "realtext_mixture"
DATA_ENV_VAR = "GQA_T5_REALTEXT_DIR"
BUILD_COMMAND = "python scripts/build_offline_corpus.py"
EXTRA_IDS = 100
TRANSLATE_PREFIX = "translate English to German: "
SUMMARIZE_PREFIX = "summarize: "


class RealTextDataNotFoundError(FileNotFoundError):
    """A real-text data file is missing: the message names the build command."""


def data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The argument, else $GQA_T5_REALTEXT_DIR, else <repo>/data/realtext."""
    if data_dir:
        return pathlib.Path(data_dir)
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return pathlib.Path(env)
    return pathlib.Path(__file__).resolve().parents[1] / "data" / "realtext"


def vocabulary_path(data_dir_: str | os.PathLike | None = None) -> str:
    """<data_dir>/spm/realtext.model (SentencePiece; pad 0, eos 1, unk 2, byte fallback)."""
    return str(data_dir(data_dir_) / "spm" / "realtext.model")


def _missing(path: pathlib.Path) -> RealTextDataNotFoundError:
    return RealTextDataNotFoundError(
        f"Real-text data file {path} not found: run `{BUILD_COMMAND} --output_dir "
        f"{path.parents[1]}` (or set "
        f"${DATA_ENV_VAR} to a built or packed corpus)."
    )


def qa_postprocess(
    answer: str, example: Mapping | None = None, is_target: bool = False
) -> str | list[str]:
    """Predictions pass through; targets become the example's list of answers."""
    if is_target and example is not None:
        return [a.decode("utf-8") if isinstance(a, bytes) else str(a) for a in example["answers"]]
    return answer


def _translate(row: dict) -> dict:
    return {"inputs": TRANSLATE_PREFIX + row["en"], "targets": row["de"]}


def _summarize(row: dict) -> dict:
    return {
        "inputs": SUMMARIZE_PREFIX + row["description"].replace("\n", " "),
        "targets": row["synopsis"],
    }


def _qa(row: dict) -> dict:
    return {"inputs": row["question"], "targets": row["answers"][0]}


def _document(row: dict) -> dict:
    return {"targets": row["text"]}


@dataclasses.dataclass(frozen=True)
class TextTask:
    """One real-text task: where its rows live, how they become text, how it is scored.

    `postcache` names the preprocessors after seqio.CacheDatasetPlaceholder, in order;
    `format` maps a JSONL row to {"inputs"?, "targets"} strings; `extra_keys` are row
    fields passed through to the examples (for the metric).
    """

    name: str
    folder: str
    splits: tuple[str, ...]
    feature_lengths: Mapping[str, int]
    postcache: tuple[str, ...]
    metric_fns: tuple[Callable, ...]
    postprocess_fn: Callable | None
    headline_metric: str
    format: Callable[[dict], dict]
    extra_keys: tuple[str, ...] = ("id",)


_FINETUNE_SPLITS = ("train", "validation", "test")
# Lengths in SentencePiece tokens incl. EOS, from the train splits' length percentiles
# (manifest: task_lengths): translate p95 60 / 69, p99 90 / 108; summarize p95 181 / 16,
# p99 282 / 19; qa p95 35 / 6, p99 44 / 7. Each covers >= 95% (most >= 99%) of examples.
# Span corruption is T5's 512 / 114.
TEXT_TASKS: dict[str, TextTask] = {
    SPAN_CORRUPTION: TextTask(
        SPAN_CORRUPTION,
        "pretrain",
        ("train", "validation"),
        {"inputs": 512, "targets": 114},
        ("span_corruption", "append_eos_after_trim"),
        (),
        None,
        "loss",
        _document,
        extra_keys=(),
    ),
    TRANSLATE_ENDE: TextTask(
        TRANSLATE_ENDE,
        "translate_ende",
        _FINETUNE_SPLITS,
        {"inputs": 96, "targets": 112},
        ("append_eos_after_trim",),
        (metrics.bleu,),
        None,
        "bleu",
        _translate,
    ),
    SUMMARIZE: TextTask(
        SUMMARIZE,
        "summarize",
        _FINETUNE_SPLITS,
        {"inputs": 256, "targets": 24},
        ("append_eos_after_trim",),
        (metrics.rouge,),
        None,
        "rouge1",
        _summarize,
    ),
    QA: TextTask(
        QA,
        "qa",
        _FINETUNE_SPLITS,
        {"inputs": 48, "targets": 8},
        ("append_eos_after_trim",),
        (metrics.trivia_qa,),
        qa_postprocess,
        "f1",
        _qa,
        extra_keys=("id", "answers"),
    ),
}
MIXTURES: dict[str, tuple[str, ...]] = {MIXTURE: (TRANSLATE_ENDE, SUMMARIZE, QA)}
MIXTURE_FEATURE_LENGTHS = {
    key: max(TEXT_TASKS[t].feature_lengths[key] for t in MIXTURES[MIXTURE])
    for key in ("inputs", "targets")
}


def split_path(task_name: str, split: str, data_dir_: str | os.PathLike | None = None):
    """The split's .jsonl, else its packed .jsonl.xz; raises naming the build command."""
    task = TEXT_TASKS[task_name]
    if split not in task.splits:
        raise ValueError(f"{task_name} has splits {task.splits}, not {split!r}.")
    path = data_dir(data_dir_) / task.folder / f"{split}.jsonl"
    for candidate in (path, path.with_name(path.name + ".xz")):
        if candidate.exists():
            return candidate
    raise _missing(path)


def iter_rows(task_name: str, split: str, data_dir_: str | os.PathLike | None = None):
    """The split's JSONL rows, in file order."""
    path = split_path(task_name, split, data_dir_)
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def read_split(task_name: str, split: str, data_dir_: str | os.PathLike | None = None) -> list:
    return list(iter_rows(task_name, split, data_dir_))


def text_examples(
    task_name: str, split: str, data_dir_: str | os.PathLike | None = None
) -> Iterator[dict]:
    """The split's examples as strings: formatted "inputs"/"targets" plus extra keys."""
    task = TEXT_TASKS[task_name]
    for row in iter_rows(task_name, split, data_dir_):
        yield {**task.format(row), **{k: row[k] for k in task.extra_keys}}


@functools.lru_cache(maxsize=4)
def _processor(path: str):
    import sentencepiece as spm

    if not pathlib.Path(path).exists():
        raise _missing(pathlib.Path(path))
    return spm.SentencePieceProcessor(model_file=path)


def tokenized_examples(
    task_name: str, split: str, data_dir: str | os.PathLike | None = None
) -> Iterator[dict]:
    """What the SeqIO task yields before its CacheDatasetPlaceholder, TF-free.

    int32 token arrays (no EOS) for "inputs"/"targets", their strings as
    "inputs_pretokenized"/"targets_pretokenized", and the task's extra keys.
    """
    sp = _processor(vocabulary_path(data_dir))
    for ex in text_examples(task_name, split, data_dir):
        out = dict(ex)
        for key in ("inputs", "targets"):
            if key in ex:
                out[key] = np.asarray(sp.encode(ex[key]), dtype=np.int32)
                out[f"{key}_pretokenized"] = ex[key]
        yield out


def register_seqio_tasks(data_dir: str | os.PathLike | None = None) -> None:
    """(Re-)registers the tasks and the mixture in SeqIO; reads nothing until asked."""
    from tasks import realtext_seqio  # seqio and TensorFlow only here

    realtext_seqio.register(data_dir)
