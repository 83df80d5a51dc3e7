"""Vocabulary resolution, the tiny SentencePiece trainer and the missing-model error."""

import os

import pytest
import seqio

from tasks import vocab

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "summarize: a short article about grouped query attention",
    "question: who wrote it? context: somebody wrote it long ago",
] * 10


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return vocab.train_tiny_sentencepiece(
        TEXTS, str(tmp_path_factory.mktemp("spm") / "tiny.model"), 80
    )


def test_tiny_model_has_t5_special_ids_and_sentinels(tiny_model):
    v = seqio.SentencePieceVocabulary(tiny_model, extra_ids=100)
    sp = v.tokenizer
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    base = v.vocab_size - 100
    assert 10 < base <= 80
    # Sentinels count down from the last id, as span corruption expects.
    assert sp.id_to_piece(v.vocab_size - 1) == "▁<extra_id_0>"
    assert sp.id_to_piece(base) == "▁<extra_id_99>"
    ids = v.encode("the lazy dog")
    assert ids and max(ids) < base
    assert v.decode(ids) == "the lazy dog"


def test_tiny_model_written_atomically(tmp_path):
    out = tmp_path / "sub" / "m.model"
    vocab.train_tiny_sentencepiece(TEXTS, str(out), vocab_size=60)
    assert sorted(os.listdir(out.parent)) == ["m.model"]  # no temp files left behind


def test_tiny_model_rejects_empty_corpus(tmp_path):
    with pytest.raises(ValueError, match="non-empty text"):
        vocab.train_tiny_sentencepiece(["", "  "], str(tmp_path / "m.model"))
    assert not (tmp_path / "m.model").exists()


def test_vocab_path_resolution(monkeypatch):
    monkeypatch.delenv(vocab.VOCAB_ENV_VAR, raising=False)
    assert vocab.vocab_path() == "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
    monkeypatch.setenv(vocab.VOCAB_ENV_VAR, "/data/local.model")
    assert vocab.vocab_path() == "/data/local.model"
    assert vocab.vocab_path("/other.model") == "/other.model"
    v = vocab.get_vocabulary()
    assert v.sentencepiece_model_file == "/data/local.model" and v.extra_ids == 100


def test_get_vocabulary_loads_local_copy(tiny_model):
    v = vocab.get_vocabulary(tiny_model)
    assert v.vocab_size == seqio.SentencePieceVocabulary(tiny_model, extra_ids=100).vocab_size
    assert v.decode(v.encode("the quick fox")) == "the quick fox"


def test_missing_vocabulary_names_path_and_fix(tmp_path):
    missing = str(tmp_path / "nope.model")
    v = vocab.get_vocabulary(missing)  # lazy: constructing never fails
    with pytest.raises(vocab.VocabularyNotFoundError) as info:
        v.encode("hello")
    message = str(info.value)
    assert missing in message and "GQA_T5_VOCAB" in message and "gsutil cp" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
