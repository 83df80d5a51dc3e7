"""Tiny SeqIO tasks for the runner's tests and CPU demos (no downloads).

`write_tiny_task_files(dir)` trains a word-level SentencePiece model and writes a
learnable "reverse the words" task as JSON lines; `register_tiny_tasks(dir)` registers
`tiny_reverse` (and the mixture `tiny_mix`) from those files, so a subprocess can
register the same tasks through MIXTURE_OR_TASK_MODULE (see tests/helpers_tiny_tasks.py).
"""

from __future__ import annotations

import functools
import json
import pathlib
import random

import numpy as np
import sentencepiece as spm
import seqio
import tensorflow as tf

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
]
SPLITS = {"train": 512, "validation": 12}
TASK, MIXTURE = "tiny_reverse", "tiny_mix"


def _example(rng: random.Random) -> dict[str, str]:
    words = rng.choices(WORDS, k=rng.randint(2, 5))
    return {"inputs": "reverse: " + " ".join(words), "targets": " ".join(reversed(words))}


def write_tiny_task_files(directory: str | pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Write spm.model and <split>.jsonl for the tiny task into `directory`."""
    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, n in SPLITS.items():
        rows = [_example(rng) for _ in range(n)]
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["reverse: " + " ".join(WORDS)] * 8 + WORDS),
        model_prefix=str(d / "spm"),
        vocab_size=40,
        model_type="word",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return d


def _dataset_fn(split: str, shuffle_files: bool, seed: int | None = None, *, directory: str):
    del shuffle_files, seed  # one small file per split
    rows = [json.loads(line) for line in open(pathlib.Path(directory) / f"{split}.jsonl")]
    return tf.data.Dataset.from_tensor_slices(
        {k: [r[k] for r in rows] for k in ("inputs", "targets")}
    )


def exact_match(targets, predictions) -> dict[str, float]:
    """Percentage of predictions equal to their target string."""
    return {
        "exact_match": 100.0
        * float(np.mean([t == p for t, p in zip(targets, predictions, strict=True)]))
    }


def register_tiny_tasks(directory: str | pathlib.Path) -> seqio.Task:
    """Register `tiny_reverse` and mixture `tiny_mix` (replacing earlier registrations)."""
    directory = str(pathlib.Path(directory).absolute())
    vocab = seqio.SentencePieceVocabulary(f"{directory}/spm.model", extra_ids=0)
    features = {k: seqio.Feature(vocab, add_eos=True) for k in ("inputs", "targets")}
    seqio.TaskRegistry.remove(TASK)
    seqio.MixtureRegistry.remove(MIXTURE)
    task = seqio.TaskRegistry.add(
        TASK,
        source=seqio.FunctionDataSource(
            functools.partial(_dataset_fn, directory=directory), splits=tuple(SPLITS)
        ),
        preprocessors=[
            seqio.preprocessors.tokenize,
            seqio.CacheDatasetPlaceholder(),
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features=features,
        metric_fns=[exact_match],
    )
    seqio.MixtureRegistry.add(MIXTURE, [(TASK, 1.0)])
    return task
