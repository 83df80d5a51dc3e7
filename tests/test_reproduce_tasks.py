"""The built-in tasks of the reproduction default (tasks/builtin.py) on the bundled corpus."""

import seqio

from tasks import builtin

PATH = str(builtin.corpus_dir() / "kjv_excerpt.tsv")


def test_corpus_is_small_and_complete():
    rows = builtin.read_corpus(PATH)
    assert (builtin.corpus_dir() / "kjv_excerpt.tsv").stat().st_size <= 5_000_000
    assert rows[0] == (
        "Genesis",
        1,
        1,
        "In the beginning God created the heaven and the earth.",
    )
    assert len(rows) == 13015 and rows[-1][:3] == ("Acts", 28, 31)


def test_validation_chapters_are_held_out_of_every_train_split():
    val = builtin.chapters(PATH, "validation")
    train = builtin.chapters(PATH, "train")
    assert 0.05 < len(val) / (len(val) + len(train)) < 0.15
    counts = {}
    for row in builtin.read_corpus(PATH):
        counts[row[3]] = counts.get(row[3], 0) + 1
    unique_held_out = [v for c in val for v in c if counts[v] == 1 and len(v) > 60][:20]
    assert len(unique_held_out) == 20
    pretrain = " ".join(d["targets"] for d in builtin.span_corruption_texts(PATH, "train"))
    summarize = " ".join(d["inputs"] for d in builtin.summarize_examples(PATH, "train"))
    for verse in unique_held_out:
        assert verse not in pretrain and verse not in summarize
    # ... and they do reach the validation split's texts.
    held_out = " ".join(d["targets"] for d in builtin.span_corruption_texts(PATH, "validation"))
    assert all(verse in held_out for verse in unique_held_out)


def test_modernize_rules():
    assert builtin.modernize("Thou hast said unto me, and he loveth thee.") == (
        "You have said to me, and he loves you."
    )
    assert builtin.modernize("In the beginning God created") == "In the beginning God created"


def test_examples_have_the_promised_shapes():
    s = builtin.summarize_examples(PATH, "validation")[0]
    assert s["inputs"].startswith("summarize: " + s["targets"])
    q = builtin.cloze_qa_examples(PATH, "validation")
    assert all(e["targets"] in e["inputs"].split(" context: ")[1] for e in q)
    assert all("___" in e["inputs"].split(" context: ")[0] for e in q)
    m = builtin.modernize_examples(PATH, "validation")
    assert all(e["targets"] != e["inputs"].split(": ", 1)[1] for e in m)


def test_registered_tasks_tokenize_within_lengths_and_score():
    for name in builtin.FINETUNE_TASKS:
        task = seqio.get_mixture_or_task(name)
        lengths = builtin.FEATURE_LENGTHS[name]
        exs = list(task.get_dataset(None, split="validation", shuffle=False).as_numpy_iterator())
        assert len(exs) == 64
        fits = [
            len(e["inputs"]) <= lengths["inputs"] and len(e["targets"]) <= lengths["targets"]
            for e in exs
        ]
        assert sum(fits) >= 0.9 * len(exs), name
    qa = seqio.get_mixture_or_task(builtin.CLOZE_QA)
    ex = next(qa.get_dataset(None, split="validation", shuffle=False).as_numpy_iterator())
    target = qa.postprocess_fn(b"", example=ex, is_target=True)
    assert target == [ex["targets_pretokenized"].decode()]
    assert qa.metric_fns[0]([target], [target[0]]) == {"f1": 100.0, "em": 100.0}
    mix = seqio.get_mixture_or_task(builtin.MIXTURE)
    assert sorted(t.name for t in mix.tasks) == sorted(builtin.FINETUNE_TASKS)
