"""The bundled KJV tasks' text, without TensorFlow or SeqIO: a TF-free task provider.

`tasks.builtin` registers these tasks in SeqIO; this module builds the same examples in
plain Python and exposes them through the provider interface the Grain export reads
(`TEXT_TASKS`, `MIXTURES`, `tokenized_examples`, `vocabulary_path`; the interface of
`tasks.realtext`): `tokenized_examples` yields what the SeqIO task yields just before its
`CacheDatasetPlaceholder` (int32 token arrays without EOS, plus the pretokenized strings).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import pathlib
import re
import zlib
from collections.abc import Callable, Iterator

import numpy as np

from tasks import metrics, postprocess

SPAN_CORRUPTION = "kjv_span_corruption"
SUMMARIZE = "kjv_summarize"
MODERNIZE = "kjv_modernize"
CLOZE_QA = "kjv_cloze_qa"
MIXTURE = "kjv_mixture"
FINETUNE_TASKS = (SUMMARIZE, MODERNIZE, CLOZE_QA)
FEATURE_LENGTHS = {
    SPAN_CORRUPTION: {"inputs": 128, "targets": 32},
    SUMMARIZE: {"inputs": 128, "targets": 48},
    MODERNIZE: {"inputs": 64, "targets": 48},
    CLOZE_QA: {"inputs": 128, "targets": 8},
    MIXTURE: {"inputs": 128, "targets": 48},
}
HEADLINE_METRIC = {SUMMARIZE: "rouge1", MODERNIZE: "bleu", CLOZE_QA: "f1"}
VOCAB_SIZE = 1152  # 1000 pieces + 100 sentinels, padded to a multiple of 128
_VALIDATION_BUCKETS = 10  # one chapter in ten is held out
_ARCHAIC = {
    "thee": "you",
    "thou": "you",
    "ye": "you",
    "thy": "your",
    "thine": "your",
    "hath": "has",
    "hast": "have",
    "doth": "does",
    "dost": "do",
    "saith": "says",
    "art": "are",
    "shalt": "shall",
    "wilt": "will",
    "unto": "to",
    "spake": "spoke",
    "didst": "did",
    "wast": "were",
    "canst": "can",
    "couldest": "could",
    "wherefore": "why",
    "whither": "where",
    "hither": "here",
    "thither": "there",
    "behold": "look",
}
_NAME_STOP = {"God", "LORD", "Lord", "I", "O", "And", "But", "Then", "Now", "For", "The"}


def corpus_dir() -> pathlib.Path:
    """gqa_t5/data/corpus (found without importing the model package)."""
    spec = importlib.util.find_spec("gqa_t5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("gqa_t5 is not installed: run `pip install -e .`")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "data" / "corpus"


@functools.lru_cache(maxsize=4)
def read_corpus(path: str) -> tuple[tuple[str, int, int, str], ...]:
    """(book, chapter, verse, text) rows of the bundled TSV."""
    rows = []
    for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines():
        book, chapter, verse, text = line.split("\t")
        rows.append((book, int(chapter), int(verse), text))
    if not rows:
        raise ValueError(f"corpus {path} is empty")
    return tuple(rows)


def split_of(book: str, chapter: int) -> str:
    """'validation' for one chapter in ten (by a stable hash), else 'train'."""
    bucket = zlib.crc32(f"{book} {chapter}".encode()) % _VALIDATION_BUCKETS
    return "validation" if bucket == 0 else "train"


def chapters(path: str, split: str) -> list[list[str]]:
    """The verses of each chapter in `split`, in corpus order."""
    out: dict[tuple[str, int], list[str]] = {}
    for book, chapter, _, text in read_corpus(path):
        if split_of(book, chapter) == split:
            out.setdefault((book, chapter), []).append(text)
    return list(out.values())


def modernize(text: str) -> str:
    """Rewrite archaic pronouns and verb forms by word list ("-eth" -> "-es")."""

    def one(m: re.Match) -> str:
        word = m.group(0)
        low = word.lower()
        new = _ARCHAIC.get(low)
        if new is None and low.endswith("eth") and len(low) > 5:
            new = low[:-3] + "es"
        if new is None:
            return word
        return new.capitalize() if word[0].isupper() else new

    return re.sub(r"[A-Za-z]+", one, text)


def _words(text: str) -> int:
    return len(text.split())


def summarize_examples(path: str, split: str) -> list[dict[str, str]]:
    """Non-overlapping 3-verse passages -> their first verse."""
    out = []
    for verses in chapters(path, split):
        for i in range(0, len(verses) - 2, 3):
            passage = verses[i : i + 3]
            if _words(" ".join(passage)) <= 65 and _words(passage[0]) <= 25:
                out.append({"inputs": "summarize: " + " ".join(passage), "targets": passage[0]})
    return out


def modernize_examples(path: str, split: str) -> list[dict[str, str]]:
    """Verses with at least one archaic form -> their rewritten form."""
    out = []
    for verses in chapters(path, split):
        for v in verses:
            new = modernize(v)
            if new != v and _words(v) <= 30:
                out.append({"inputs": "translate KJV to modern English: " + v, "targets": new})
    return out


def _name(verse: str) -> str | None:
    words = [w.strip(".,;:?!'()") for w in verse.split()]
    names = [w for w in words[1:] if w[:1].isupper() and w not in _NAME_STOP and w.isalpha()]
    return names[0] if names and words.count(names[0]) == 1 else None


def cloze_qa_examples(path: str, split: str) -> list[dict]:
    """A verse with its first name blanked (question) + that verse and the next (context)."""
    out = []
    for verses in chapters(path, split):
        for v, nxt in zip(verses, verses[1:], strict=False):
            name = _name(v)
            if name is None or 2 * _words(v) + _words(nxt) > 65:
                continue
            question = re.sub(rf"\b{re.escape(name)}\b", "___", v, count=1)
            out.append(
                {
                    "inputs": f"question: {question} context: {v} {nxt}",
                    "targets": name,
                    "answers": [name],
                }
            )
    return out


def span_corruption_texts(path: str, split: str) -> list[dict[str, str]]:
    """One document per chapter, for span corruption."""
    return [{"targets": " ".join(verses)} for verses in chapters(path, split)]


MAX_EVAL_EXAMPLES = 64  # validation splits are capped (eval on CPU stays quick)


@dataclasses.dataclass(frozen=True)
class TextTask:
    """A task as the Grain export sees it (the fields of `tasks.realtext.TextTask`)."""

    name: str
    splits: tuple[str, ...]
    feature_lengths: dict[str, int]
    postcache: tuple[str, ...]
    metric_fns: tuple[Callable, ...]
    postprocess_fn: Callable | None
    headline_metric: str | None
    make: Callable[[str, str], list[dict]]


_SPLITS = ("train", "validation")
_EOS = ("append_eos_after_trim",)
TEXT_TASKS: dict[str, TextTask] = {
    t.name: t
    for t in (
        TextTask(
            SPAN_CORRUPTION,
            _SPLITS,
            FEATURE_LENGTHS[SPAN_CORRUPTION],
            ("span_corruption",) + _EOS,
            (),
            None,
            None,
            span_corruption_texts,
        ),
        TextTask(
            SUMMARIZE,
            _SPLITS,
            FEATURE_LENGTHS[SUMMARIZE],
            _EOS,
            (metrics.rouge,),
            None,
            "rouge1",
            summarize_examples,
        ),
        TextTask(
            MODERNIZE,
            _SPLITS,
            FEATURE_LENGTHS[MODERNIZE],
            _EOS,
            (metrics.bleu,),
            None,
            "bleu",
            modernize_examples,
        ),
        TextTask(
            CLOZE_QA,
            _SPLITS,
            FEATURE_LENGTHS[CLOZE_QA],
            _EOS,
            (metrics.trivia_qa,),
            postprocess.trivia_qa_postprocess,
            "f1",
            cloze_qa_examples,
        ),
    )
}
MIXTURES: dict[str, tuple[str, ...]] = {MIXTURE: FINETUNE_TASKS}


def corpus_path() -> str:
    return str(corpus_dir() / "kjv_excerpt.tsv")


def vocabulary_path(data_dir: str | None = None) -> str:
    """The bundled SentencePiece model (1000 pieces; 100 extra ids on top)."""
    return str(pathlib.Path(data_dir) / "spm.model" if data_dir else corpus_dir() / "spm.model")


def text_examples(task_name: str, split: str, data_dir: str | None = None) -> list[dict]:
    """The task's raw text examples, as its SeqIO source yields them (validation capped)."""
    task = TEXT_TASKS[task_name]
    path = str(pathlib.Path(data_dir) / "kjv_excerpt.tsv") if data_dir else corpus_path()
    rows = task.make(path, split)
    return rows[:MAX_EVAL_EXAMPLES] if split == "validation" else rows


@functools.lru_cache(maxsize=2)
def _processor(path: str):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=path)


def tokenized_examples(task_name: str, split: str, data_dir: str | None = None) -> Iterator[dict]:
    """What the SeqIO task yields before its cache placeholder: tokens (no EOS) + text."""
    if task_name not in TEXT_TASKS:
        raise KeyError(f"unknown task {task_name!r}; known: {sorted(TEXT_TASKS)}")
    sp = _processor(vocabulary_path(data_dir))
    for row in text_examples(task_name, split, data_dir):
        out: dict = {}
        for key in ("inputs", "targets"):
            if key in row:
                out[key] = np.asarray(sp.encode(row[key]), np.int32)
                out[f"{key}_pretokenized"] = row[key]
        if "answers" in row:
            out["answers"] = list(row["answers"])
        yield out
