"""tasks/realtext.py: examples from fixture-built data, TF-free == SeqIO precache, errors."""

import json
import lzma
import pathlib
import shutil

import numpy as np
import pytest
import seqio

from scripts.realtext import build
from tasks import metrics, realtext, vocab

FIX = pathlib.Path(__file__).parent / "fixtures" / "realtext"


def _write(path: pathlib.Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    """Every split of every task built from the fixtures (all rows in every split)."""
    root = tmp_path_factory.mktemp("realtext")
    translate, _ = build.translation_splits(FIX / "help/en-US", FIX / "help/de")
    summarize, _ = build.summarize_splits(
        [(FIX / "Translation-en").read_text()], [(FIX / "Packages").read_text()]
    )
    qa, _ = build.qa_splits(FIX)  # data.noun only
    docs = [
        {"id": "d0", "source": "fixture", "text": p}
        for p in build.formats.pod_paragraphs((FIX / "perlintro.pod").read_text())
    ]
    every = {
        "translate_ende": [r for rows in translate.values() for r in rows],
        "summarize": [r for rows in summarize.values() for r in rows],
        "qa": [r for rows in qa.values() for r in rows],
    }
    for folder, rows in every.items():
        assert rows, folder
        for split in ("train", "validation", "test"):
            _write(root / folder / f"{split}.jsonl", rows)
    for split in ("train", "validation"):
        _write(root / "pretrain" / f"{split}.jsonl", docs)
    texts = [json.dumps(r, ensure_ascii=False) for rows in every.values() for r in rows]
    vocab.train_tiny_sentencepiece(texts * 3, str(root / "spm" / "realtext.model"), 200)
    return root


def test_tasks_yield_examples_offline(data_dir):
    qa = list(realtext.text_examples(realtext.QA, "validation", data_dir))
    assert {ex["id"] for ex in qa} == {"wn-noun-02084071", "wn-noun-02084732", "wn-noun-00001740"}
    dog = next(ex for ex in qa if ex["id"] == "wn-noun-02084071")
    assert dog["targets"] == "dog" and dog["answers"] == ["dog", "domestic dog", "Canis familiaris"]
    tr = list(realtext.text_examples(realtext.TRANSLATE_ENDE, "test", data_dir))
    assert tr[0]["inputs"].startswith("translate English to German: The Find toolbar")
    su = list(realtext.text_examples(realtext.SUMMARIZE, "train", data_dir))
    assert any(ex["targets"] == "convert an addressbook to VCARD file format" for ex in su)
    assert all("\n" not in ex["inputs"] for ex in su)


@pytest.mark.parametrize("name", list(realtext.TEXT_TASKS))
def test_tokenized_examples_equal_seqio_precache(data_dir, name):
    realtext.register_seqio_tasks(data_dir)
    task = seqio.get_mixture_or_task(name)
    split = "validation"
    ours = list(realtext.tokenized_examples(name, split, data_dir))
    source = task.source.get_dataset(split, shuffle=False)
    theirs = list(task.preprocess_precache(source, seed=0).as_numpy_iterator())
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs, strict=True):
        assert set(a) == set(b)
        for key, value in b.items():
            if isinstance(value, np.ndarray) and value.dtype != object:
                np.testing.assert_array_equal(a[key], value)
                assert a[key].dtype == np.int32
            elif isinstance(value, np.ndarray):
                assert list(a[key]) == [v.decode() for v in value]
            else:
                assert a[key] == value.decode()
    if name == realtext.SPAN_CORRUPTION:
        assert set(ours[0]) == {"targets", "targets_pretokenized"}


def test_packed_xz_reads_like_jsonl(data_dir, tmp_path):
    packed = tmp_path / "packed"
    shutil.copytree(data_dir, packed)
    path = packed / "qa" / "test.jsonl"
    with lzma.open(path.with_name("test.jsonl.xz"), "wb") as f:
        f.write(path.read_bytes())
    path.unlink()
    got = list(realtext.tokenized_examples(realtext.QA, "test", packed))
    want = list(realtext.tokenized_examples(realtext.QA, "test", data_dir))
    assert [g["id"] for g in got] == [w["id"] for w in want]
    assert all(np.array_equal(g["inputs"], w["inputs"]) for g, w in zip(got, want, strict=True))


def test_missing_data_names_the_build_command(tmp_path):
    missing = tmp_path / "nothing"
    realtext.register_seqio_tasks(missing)  # registration reads nothing
    with pytest.raises(realtext.RealTextDataNotFoundError, match="build_offline_corpus.py"):
        seqio.get_mixture_or_task(realtext.QA).get_dataset(
            {"inputs": 64, "targets": 16}, split="train", shuffle=False
        )
    with pytest.raises(realtext.RealTextDataNotFoundError, match="build_offline_corpus.py"):
        next(realtext.tokenized_examples(realtext.SUMMARIZE, "train", missing))
    with pytest.raises(ValueError, match="splits"):
        realtext.split_path(realtext.SPAN_CORRUPTION, "test", missing)


def test_interface_constants():
    assert realtext.MIXTURES[realtext.MIXTURE] == (
        realtext.TRANSLATE_ENDE,
        realtext.SUMMARIZE,
        realtext.QA,
    )
    sc = realtext.TEXT_TASKS[realtext.SPAN_CORRUPTION]
    assert sc.postcache == ("span_corruption", "append_eos_after_trim")
    assert dict(sc.feature_lengths) == {"inputs": 512, "targets": 114}
    for task in realtext.TEXT_TASKS.values():
        assert task.feature_lengths["inputs"] <= 512


def test_qa_postprocess_and_metric_by_hand():
    example = {"answers": [b"dog", b"domestic dog"]}
    targets = realtext.qa_postprocess("dog", example, is_target=True)
    assert targets == ["dog", "domestic dog"]
    assert realtext.qa_postprocess("a dog", example) == "a dog"
    # "a domestic cat" -> normalised "domestic cat" vs "domestic dog": P = R = 1/2, F1 = 1/2.
    got = metrics.trivia_qa([targets, targets], ["the Dog", "a domestic cat"])
    assert got == pytest.approx({"f1": 100 * (1 + 0.5) / 2, "em": 50.0})


def test_realtext_imports_without_tensorflow_or_seqio(data_dir):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'seqio'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import importlib.util\n"
        "importlib.util.find_spec = lambda n, *a: None if n in ('seqio', 'tensorflow') else 1\n"
        "from tasks import realtext\n"
        f"ex = next(realtext.tokenized_examples('realtext_qa', 'test', {str(data_dir)!r}))\n"
        "assert 'tensorflow' not in sys.modules and 'seqio' not in sys.modules\n"
        "print(ex['targets_pretokenized'])\n"
    )
    repo = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() in {"entity", "dog", "pooch"}
