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
import importlib.util
import pathlib
import re
import zlib
from collections.abc import Callable

import seqio
import tensorflow as tf

from tasks import metrics, preprocessors, span_corruption, vocab

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
    corpus_path: str | None = None, vocab_path: str | None = None, max_eval_examples: int = 64
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
        (CLOZE_QA, cloze_qa_examples, [], [metrics.trivia_qa], preprocessors.trivia_qa_postprocess),
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
