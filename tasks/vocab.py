"""T5's SentencePiece vocabulary (path configurable) and a tiny-model trainer for tests."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable

import sentencepiece as spm
import seqio

# The public T5 / T5.1.1 vocabulary: 32000 pieces + 100 sentinels = 32100 ids (the model
# pads its embedding to 32128).
DEFAULT_VOCAB_PATH = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
VOCAB_ENV_VAR = "GQA_T5_VOCAB"
EXTRA_IDS = 100


class VocabularyNotFoundError(FileNotFoundError):
    """The SentencePiece model file could not be read."""


class CheckedSentencePieceVocabulary(seqio.SentencePieceVocabulary):
    """seqio.SentencePieceVocabulary whose lazy load fails with a message naming the fix."""

    def _model_context(self):
        try:
            return super()._model_context()
        except Exception as e:  # noqa: BLE001 (gfile raises many types for a bad path)
            raise VocabularyNotFoundError(
                f"Could not read the SentencePiece model {self.sentencepiece_model_file!r} "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
                f"Copy it to a local file, e.g. `gsutil cp {DEFAULT_VOCAB_PATH} "
                f"/data/t5_vocab.model`, and set {VOCAB_ENV_VAR}=/data/t5_vocab.model "
                "(or pass vocab_path to tasks.register_tasks)."
            ) from None


def vocab_path(path: str | None = None) -> str:
    """Resolves the vocabulary path: argument, then $GQA_T5_VOCAB, then the public model."""
    return path or os.environ.get(VOCAB_ENV_VAR) or DEFAULT_VOCAB_PATH


def get_vocabulary(path: str | None = None, extra_ids: int = EXTRA_IDS) -> seqio.Vocabulary:
    """Returns the (lazily loaded) SentencePiece vocabulary with T5's 100 sentinel ids."""
    return CheckedSentencePieceVocabulary(vocab_path(path), extra_ids=extra_ids)


def train_tiny_sentencepiece(texts: Iterable[str], out_path: str, vocab_size: int = 256) -> str:
    """Trains a small unigram SentencePiece model with T5's special ids; returns out_path.

    Ids follow T5: pad 0, eos 1, unk 2, no bos, so seqio and the model treat it like the
    real vocabulary. The file is written to a temporary name and renamed into place.
    """
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("train_tiny_sentencepiece needs at least one non-empty text.")
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        prefix = os.path.join(tmp, "spm")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_prefix=prefix,
            vocab_size=vocab_size,
            model_type="unigram",
            character_coverage=1.0,
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            # A soft limit: a tiny corpus may not support vocab_size distinct pieces.
            hard_vocab_limit=False,
            num_threads=1,
            minloglevel=2,
        )
        os.replace(prefix + ".model", out_path)
    return out_path
