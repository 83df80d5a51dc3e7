"""Tasks: registration, formatting, tokenization and truncation on TFDS mock data / fixtures."""

import ast
import importlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

import tasks
from tasks import metrics, preprocessors

REPO = pathlib.Path(__file__).resolve().parents[1]
CORPUS = [
    "summarize: translate English to German: question: context: the quick brown fox",
    "jumps over the lazy dog. Der schnelle braune Fuchs springt über den faulen Hund.",
    "Who wrote Hamlet? William Shakespeare wrote the play in London around 1600.",
    "Interviewer: hello there. Guest: thanks for having me on the show today!",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789 .,:;!?'\"-()",
] * 8


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    path = tmp_path_factory.mktemp("spm") / "tiny.model"
    return seqio.SentencePieceVocabulary(
        tasks.train_tiny_sentencepiece(CORPUS, str(path), vocab_size=120), extra_ids=100
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds_empty"))


@pytest.fixture(autouse=True, scope="module")
def registered(vocab, data_dir):
    tasks.register_tasks(vocabulary=vocab, tfds_data_dir=data_dir)
    yield
    tasks.register_tasks()  # leave the defaults for other test modules


def _records_dataset(records):
    ds = tf.data.Dataset.from_tensors(records[0])
    for record in records[1:]:
        ds = ds.concatenate(tf.data.Dataset.from_tensors(record))
    return ds


def _mock(records):
    """TFDS mock whose builder yields exactly these records, in the real feature format."""
    return tfds.testing.mock_data(as_dataset_fn=lambda self, *a, **k: _records_dataset(records))


def _examples(task_name, lengths, split="validation"):
    task = seqio.get_mixture_or_task(task_name)
    ds = task.get_dataset(lengths, split=split, shuffle=False, use_cached=False)
    return list(ds.as_numpy_iterator())


def _expected(vocab, text, length):
    return vocab.encode(text)[: length - 1] + [1]


def test_registered_names_lengths_and_mixture():
    names = {n for n in seqio.TaskRegistry.names() if n.startswith("gqa_")}
    assert names == set(tasks.ALL_TASKS)
    assert tasks.FEATURE_LENGTHS == {
        "gqa_cnn_dailymail": {"inputs": 512, "targets": 256},
        "gqa_wmt14_ende": {"inputs": 512, "targets": 256},
        "gqa_arxiv": {"inputs": 2048, "targets": 512},
        "gqa_pubmed": {"inputs": 2048, "targets": 512},
        "gqa_media_sum": {"inputs": 2048, "targets": 512},
        "gqa_multi_news": {"inputs": 2048, "targets": 512},
        "gqa_trivia_qa": {"inputs": 2048, "targets": 32},
        "gqa_c4_span_corruption": {"inputs": 512, "targets": 114},
        "gqa_finetune_mixture": {"inputs": 2048, "targets": 512},
    }
    mixture = seqio.get_mixture_or_task(tasks.FINETUNE_MIXTURE)
    assert sorted(t.name for t in mixture.tasks) == sorted(tasks.FINETUNE_TASKS)
    assert len(tasks.FINETUNE_TASKS) == 7
    assert {name: tasks.TFDS_SPECS[name].tfds_name for name in tasks.TFDS_SPECS} == {
        "gqa_cnn_dailymail": "cnn_dailymail:3.4.0",
        "gqa_arxiv": "scientific_papers/arxiv:1.1.1",
        "gqa_pubmed": "scientific_papers/pubmed:1.1.1",
        "gqa_multi_news": "multi_news:2.1.0",
        "gqa_wmt14_ende": "wmt14_translate/de-en:1.0.0",
        "gqa_trivia_qa": "trivia_qa/rc:1.1.0",
        "gqa_c4_span_corruption": "c4/en:2.2.0",
    }
    for name in tasks.ALL_TASKS:
        features = seqio.get_mixture_or_task(name).output_features
        assert set(features) == {"inputs", "targets"}
        assert all(f.add_eos for f in features.values())


def test_register_again_and_reload_do_not_raise(vocab, data_dir):
    tasks.register_tasks(vocabulary=vocab, tfds_data_dir=data_dir)
    importlib.reload(sys.modules["tasks.registry"])
    importlib.reload(tasks)  # registers the defaults again
    tasks.register_tasks(vocabulary=vocab, tfds_data_dir=data_dir)
    assert (
        seqio.get_mixture_or_task(tasks.CNN_DAILYMAIL).output_features["inputs"].vocabulary is vocab
    )


def test_tasks_package_imports_nothing_from_the_model():
    for path in (REPO / "tasks").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "gqa_t5" for n in names), f"{path}: {names}"


def test_import_without_data_or_vocabulary(tmp_path):
    env = dict(
        os.environ, GQA_T5_VOCAB=str(tmp_path / "missing.model"), TFDS_DATA_DIR=str(tmp_path)
    )
    code = (
        "import sys, seqio, tasks\n"
        "assert not [m for m in sys.modules if m.startswith('gqa_t5')]\n"
        "print(sorted(n for n in seqio.TaskRegistry.names() if n.startswith('gqa_')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(sorted(tasks.ALL_TASKS))


SUMMARIZATION = [
    (tasks.CNN_DAILYMAIL, "article", "highlights"),
    (tasks.ARXIV, "article", "abstract"),
    (tasks.PUBMED, "article", "abstract"),
    (tasks.MULTI_NEWS, "document", "summary"),
]


@pytest.mark.parametrize("name,article_key,summary_key", SUMMARIZATION)
def test_summarization_task(vocab, name, article_key, summary_key):
    records = [
        {article_key: "the quick brown fox jumps over the lazy dog.", summary_key: "fox jumps."},
        {article_key: "Who wrote Hamlet? William Shakespeare.", summary_key: "Shakespeare."},
    ]
    with _mock(records):
        full = _examples(name, tasks.FEATURE_LENGTHS[name])
        short = _examples(name, {"inputs": 8, "targets": 4})
    assert len(full) == len(short) == 2
    for record, ex, ex_short in zip(records, full, short, strict=True):
        inputs = "summarize: " + record[article_key]
        assert ex["inputs_pretokenized"].decode() == inputs
        assert ex["inputs"].tolist() == _expected(vocab, inputs, 10**6)  # untruncated + EOS
        assert ex["targets"].tolist() == _expected(vocab, record[summary_key], 10**6)
        assert ex_short["inputs"].tolist() == _expected(vocab, inputs, 8)
        assert ex_short["targets"].tolist() == _expected(vocab, record[summary_key], 4)
        assert len(ex_short["inputs"]) == 8 and len(ex_short["targets"]) == 4
    task = seqio.get_mixture_or_task(name)
    assert task.metric_fns == [metrics.rouge]


def test_wmt_task(vocab):
    records = [{"en": "the lazy dog.", "de": "Der faulen Hund."}]
    with _mock(records):
        (ex,) = _examples(tasks.WMT14_ENDE, tasks.FEATURE_LENGTHS[tasks.WMT14_ENDE])
        (short,) = _examples(tasks.WMT14_ENDE, {"inputs": 6, "targets": 3})
    inputs = "translate English to German: the lazy dog."
    assert ex["inputs_pretokenized"].decode() == inputs
    assert ex["inputs"].tolist() == _expected(vocab, inputs, 10**6)
    assert ex["targets"].tolist() == _expected(vocab, "Der faulen Hund.", 10**6)
    assert short["inputs"].tolist() == _expected(vocab, inputs, 6)
    assert short["targets"].tolist() == _expected(vocab, "Der faulen Hund.", 3)
    assert seqio.get_mixture_or_task(tasks.WMT14_ENDE).metric_fns == [metrics.bleu]


def _trivia_record(question, pages, value, aliases):
    return {
        "question": question,
        "question_id": "q1",
        "question_source": "web",
        "entity_pages": {
            "doc_source": ["TagMe"] * len(pages),
            "filename": [f"{t}.txt" for t, _ in pages],
            "title": [t for t, _ in pages],
            "wiki_context": [c for _, c in pages],
        },
        "search_results": {
            "description": ["ignored"],
            "filename": ["web.txt"],
            "rank": [0],
            "title": ["Web Title"],
            "url": ["http://example.com"],
            "search_context": ["web context is ignored"],
        },
        "answer": {
            "aliases": aliases,
            "normalized_aliases": [a.lower() for a in aliases],
            "matched_wiki_entity_name": "",
            "normalized_matched_wiki_entity_name": "",
            "normalized_value": value.lower(),
            "type": "WikipediaEntity",
            "value": value,
        },
    }


def test_trivia_qa_task_longt5_format_and_aliases(vocab):
    records = [
        _trivia_record(
            "Who wrote 'Hamlet'?",
            [("Hamlet", "Hamlet is a play.\nIt is  long."), ("William Shakespeare", "A poet.")],
            "William Shakespeare",
            ["William Shakespeare", "Shakespeare", "The Bard"],
        ),
        _trivia_record("Where?", [("London", "A city.")], "London", ["London"]),
    ]
    with _mock(records):
        first, second = _examples(tasks.TRIVIA_QA, tasks.FEATURE_LENGTHS[tasks.TRIVIA_QA])
        (short, _) = _examples(tasks.TRIVIA_QA, {"inputs": 12, "targets": 3})
    expected = (
        "question: who wrote hamlet? context: hamlet hamlet is a play. it is long. "
        "william shakespeare a poet."
    )
    assert first["inputs_pretokenized"].decode() == expected
    assert first["inputs"].tolist() == _expected(vocab, expected, 10**6)
    assert first["targets_pretokenized"].decode() == "william shakespeare"
    assert first["targets"].tolist() == _expected(vocab, "william shakespeare", 10**6)
    assert short["inputs"].tolist() == _expected(vocab, expected, 12)
    assert short["targets"].tolist() == _expected(vocab, "william shakespeare", 3)
    assert second["inputs_pretokenized"].decode() == "question: where? context: london a city."

    task = seqio.get_mixture_or_task(tasks.TRIVIA_QA)
    aliases = [task.postprocess_fn("unused", example=ex, is_target=True) for ex in (first, second)]
    assert aliases == [["William Shakespeare", "Shakespeare", "The Bard"], ["London"]]
    assert task.postprocess_fn("the bard", example=first, is_target=False) == "the bard"
    # Max over aliases: "the bard" matches alias 3 exactly; "paris" matches nothing.
    scores = task.metric_fns[0](aliases, ["the bard", "paris"])
    assert scores == {"f1": 50.0, "em": 50.0}


def test_trivia_postprocess_decodes_bytes():
    ex = {"answers": np.array([b"Caf\xc3\xa9", b"x"])}
    assert preprocessors.trivia_qa_postprocess("p", example=ex, is_target=True) == ["Café", "x"]


def _write_mediasum(directory, split_name="train_val_test_split.json", wrap=False):
    samples = [
        {
            "id": "NPR-1",
            "program": "p",
            "date": "d",
            "url": "u",
            "summary": "A guest talks.",
            "utt": ["Hello there.", "Thanks for having me."],
            "speaker": ["Interviewer", "Guest"],
        },
        {
            "id": "CNN-2",
            "program": "p",
            "date": "d",
            "url": "u",
            "summary": "Brief.",
            "utt": ["Hi."],
            "speaker": ["Host"],
        },
    ]
    split = {"train": ["CNN-2"], "val": ["NPR-1"], "test": []}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "news_dialogue.json").write_text(json.dumps([samples] if wrap else samples))
    (directory / split_name).write_text(json.dumps([split] if wrap else split))


@pytest.mark.parametrize(
    "split_name,wrap",
    [("train_val_test_split.json", False), ("mediasum_train_val_test_split.json", True)],
)
def test_media_sum_task_reads_released_json(vocab, data_dir, tmp_path, split_name, wrap):
    _write_mediasum(tmp_path, split_name, wrap)
    tasks.register_tasks(vocabulary=vocab, tfds_data_dir=data_dir, media_sum_dir=str(tmp_path))
    try:
        (ex,) = _examples(tasks.MEDIA_SUM, tasks.FEATURE_LENGTHS[tasks.MEDIA_SUM])
        (train,) = _examples(tasks.MEDIA_SUM, {"inputs": 6, "targets": 2}, split="train")
    finally:
        tasks.register_tasks(vocabulary=vocab, tfds_data_dir=data_dir)
    inputs = "summarize: Interviewer: Hello there. Guest: Thanks for having me."
    assert ex["inputs_pretokenized"].decode() == inputs
    assert ex["inputs"].tolist() == _expected(vocab, inputs, 10**6)
    assert ex["targets"].tolist() == _expected(vocab, "A guest talks.", 10**6)
    assert train["inputs"].tolist() == _expected(vocab, "summarize: Host: Hi.", 6)
    assert train["targets"].tolist() == _expected(vocab, "Brief.", 2)


def test_media_sum_dir_from_environment(vocab, data_dir, tmp_path, monkeypatch):
    _write_mediasum(tmp_path / "ms")
    monkeypatch.setenv("GQA_T5_MEDIASUM_DIR", str(tmp_path / "ms"))
    (ex,) = _examples(tasks.MEDIA_SUM, {"inputs": 64, "targets": 16}, split="train")
    assert ex["targets_pretokenized"].decode() == "Brief."


def test_media_sum_missing_files_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GQA_T5_MEDIASUM_DIR", str(tmp_path / "nothing"))
    with pytest.raises(tasks.DataNotFoundError) as info:
        _examples(tasks.MEDIA_SUM, {"inputs": 64, "targets": 16})
    message = str(info.value)
    assert str(tmp_path / "nothing") in message
    assert "news_dialogue.json" in message and "github.com/zcgzcgzcg1/MediaSum" in message


def test_c4_span_corruption_task(vocab):
    words = CORPUS[0].split() + CORPUS[2].split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, int(rng.integers(5, 200)))) for _ in range(40)]
    with _mock([{"text": t} for t in texts]):
        with seqio.map_seed_manager(11):
            examples = _examples(tasks.C4_SPAN_CORRUPTION, {"inputs": 512, "targets": 114}, "train")
    stream = [t for text in texts for t in vocab.encode(text)]
    assert len(examples) == -(-len(stream) // 568)
    base = vocab.vocab_size - 100
    rebuilt = []
    for i, ex in enumerate(examples):
        inputs, targets = ex["inputs"].tolist(), ex["targets"].tolist()
        assert inputs[-1] == targets[-1] == 1 and 1 not in inputs[:-1] + targets[:-1]
        if i < len(examples) - 1:
            assert (len(inputs), len(targets)) == (512, 114)
        fills, current = {}, None
        for t in targets[:-1]:
            if t >= base:
                current = fills.setdefault(t, [])
            else:
                current.append(t)
        assert targets[0] == vocab.vocab_size - 1  # <extra_id_0>
        assert vocab.tokenizer.id_to_piece(targets[0]) == "▁<extra_id_0>"
        for t in inputs[:-1]:
            rebuilt.extend(fills[t] if t >= base else [t])
    assert rebuilt == stream


@pytest.mark.parametrize("name", sorted(tasks.TFDS_SPECS))
def test_missing_tfds_data_names_the_build_command(name, data_dir):
    with pytest.raises(tasks.DataNotFoundError) as info:
        _examples(name, tasks.FEATURE_LENGTHS[name], split="train")
    message = str(info.value)
    tfds_name = tasks.TFDS_SPECS[name].tfds_name
    assert f"tfds build {tfds_name}" in message
    assert f"--data_dir={data_dir}" in message
    assert os.path.join(data_dir, *tfds_name.replace(":", "/").split("/")) in message
    # Raised from our check, not chained onto a TFDS traceback.
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_data_error_honours_tfds_data_dir_env(vocab, tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env_dir"))
    tasks.register_tasks(vocabulary=vocab)  # no explicit data dir: TFDS's default applies
    try:
        with pytest.raises(tasks.DataNotFoundError, match=str(tmp_path / "env_dir")):
            _examples(tasks.CNN_DAILYMAIL, {"inputs": 8, "targets": 4})
    finally:
        tasks.register_tasks(vocabulary=vocab, tfds_data_dir=str(tmp_path))


def test_prepared_source_reads_a_built_dataset(tmp_path, monkeypatch):
    # A real (tiny) TFDS dataset on disk: the check passes and TFDS reads it.
    builder = tfds.testing.DummyDataset(data_dir=str(tmp_path))
    builder.download_and_prepare()
    source = tasks.sources.PreparedTfdsSource(
        f"{builder.name}:{builder.version}", "tfds build dummy", str(tmp_path), ["train"]
    )
    assert source.missing_data_error() is None
    values = sorted(int(ex["id"]) for ex in source.get_dataset("train", shuffle=False))
    assert values == list(range(len(values))) and len(values) > 0
    assert source.num_input_examples("train") == len(values)


def test_prepared_source_reraises_other_errors(tmp_path):
    # Data present (dataset_info.json) but unreadable: TFDS's own error, not ours.
    dataset_dir = tmp_path / "cnn_dailymail" / "3.4.0"
    dataset_dir.mkdir(parents=True)
    (dataset_dir / "dataset_info.json").write_text("{}")
    source = tasks.sources.PreparedTfdsSource(
        "cnn_dailymail:3.4.0", "tfds build cnn_dailymail:3.4.0", str(tmp_path), ["train"]
    )
    assert source.missing_data_error() is None
    with pytest.raises(Exception) as info:
        source.get_dataset("train", shuffle=False)
    assert not isinstance(info.value, tasks.DataNotFoundError)
