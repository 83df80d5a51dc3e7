"""The Grain input path: export, seqio-identical packing, NumPy span corruption, resume
without replay, and bad exports."""

import collections
import json

import numpy as np
import pytest

from gqa_t5 import export, grain_data, grain_ops
from gqa_t5 import grain_format as fmt

SUMMARIZE = "kjv_summarize"
LENGTHS = {"inputs": 128, "targets": 48}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("grain")
    export.export("kjv_mixture", ["train", "validation"], root, print_fn=lambda s: None)
    export.export("kjv_span_corruption", ["train"], root, print_fn=lambda s: None)
    return root


def _records(root, task, split):
    stream = grain_data.Stream(
        grain_data.open_exports(root, task, split, None), LENGTHS, shuffle=False, num_epochs=1
    )
    return [stream.examples[i] for i in range(len(stream.examples))]


def test_provider_export_equals_seqio_precache(exports, tmp_path):
    """The TF-free provider writes the records seqio's preprocess_precache yields."""
    export.export(SUMMARIZE, ["validation"], tmp_path, source="seqio", print_fn=lambda s: None)
    ours, ref = (
        _records(exports, SUMMARIZE, "validation"),
        _records(tmp_path, SUMMARIZE, "validation"),
    )
    assert len(ours) == len(ref) == 64
    for a, b in zip(ours, ref, strict=True):
        for k in ("inputs", "targets", "inputs_pretokenized", "targets_pretokenized"):
            assert np.array_equal(a[k], b[k]) if k in ("inputs", "targets") else a[k] == b[k]
    meta = json.loads((exports / SUMMARIZE / "validation" / fmt.META_FILE).read_text())
    assert meta["postcache"] == ["append_eos_after_trim"] and meta["num_examples"] == 64
    assert (
        meta["metric_fns"] == ["tasks.metrics:rouge"] and meta["vocabulary"]["vocab_size"] == 1100
    )


def test_packed_rows_equal_seqio_token_for_token(exports):
    import seqio

    import tasks  # noqa: F401

    stream = grain_data.Stream(
        grain_data.open_exports(exports, SUMMARIZE, "train", LENGTHS),
        LENGTHS,
        shuffle=False,
        num_epochs=1,
    )
    ours = [r for u in range(stream.num_units()) for r, _ in stream.rows(u)]
    ds = seqio.get_dataset(
        seqio.get_mixture_or_task(SUMMARIZE),
        LENGTHS,
        seqio.EncDecFeatureConverter(pack=True),
        dataset_split="train",
        shuffle=False,
        num_epochs=1,
    )
    ref = list(ds.as_numpy_iterator())
    assert len(ours) == len(ref) > 100
    for a, b in zip(ours, ref, strict=True):
        assert sorted(a) == sorted(b)
        for k in b:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_shuffled_epoch_is_a_permutation_and_packing_is_consistent(exports):
    """Shuffled: each example once per epoch; every row's segments are whole examples."""
    ex = grain_data.open_exports(exports, SUMMARIZE, "train", LENGTHS)
    plain = _records(exports, SUMMARIZE, "train")
    n = len(plain)
    stream = grain_data.Stream(ex, LENGTHS, seed=3, shuffle=True, num_epochs=1)
    rows = [r for u in range(stream.num_units()) for r, _ in stream.rows(u)]
    seen = collections.Counter()
    for r in rows:
        for s in range(1, r["encoder_segment_ids"].max() + 1):
            enc = r["encoder_input_tokens"][r["encoder_segment_ids"] == s]
            dec = r["decoder_target_tokens"][r["decoder_segment_ids"] == s]
            np.testing.assert_array_equal(
                r["encoder_positions"][r["encoder_segment_ids"] == s], np.arange(enc.size)
            )
            # decoder inputs: shifted targets, 0 at each segment start (no cross-example leak)
            din = r["decoder_input_tokens"][r["decoder_segment_ids"] == s]
            assert din[0] == 0 and np.array_equal(din[1:], dec[:-1])
            seen[(tuple(enc), tuple(dec))] += 1
    want = collections.Counter(
        (tuple(list(e["inputs"][:127]) + [1]), tuple(list(e["targets"][:47]) + [1])) for e in plain
    )
    assert seen == want and sum(seen.values()) == n


def test_span_corruption_structure():
    rng = np.random.default_rng(0)
    vocab_size = 1100
    docs = [rng.integers(3, 1000, size=int(s)).astype(np.int32) for s in rng.integers(50, 900, 40)]
    segs = grain_ops.span_corruption(
        docs, np.random.default_rng(1), {"inputs": 128, "targets": 32}, vocab_size
    )
    stream = np.concatenate(docs)
    tokens_length, _ = grain_ops.span_corruption_lengths(128)
    assert tokens_length == 141 and grain_ops.span_corruption_lengths(512) == (568, 114)
    rebuilt = []
    for seg in segs:
        inp, tgt = seg["inputs"], seg["targets"]
        sent_in, sent_tg = inp[inp >= 1000], tgt[tgt >= 1000]
        # sentinels count down from vocab_size - 1 on both sides, in the same order
        np.testing.assert_array_equal(sent_in, vocab_size - 1 - np.arange(sent_in.size))
        assert np.array_equal(sent_tg, sent_in) or np.array_equal(sent_tg, sent_in[: sent_tg.size])
        # inputs and targets interleave back into the original segment
        out, ti = [], 0
        parts_t = np.split(tgt, np.flatnonzero(tgt >= 1000)[1:])
        pi = 0
        for tok in inp:
            if tok >= 1000:
                out.extend(parts_t[pi][1:])
                pi += 1
            else:
                out.append(tok)
        rebuilt.extend(out)
        del ti
    # One random 65536-chunk of short documents is the whole document: the stream is intact.
    np.testing.assert_array_equal(np.asarray(rebuilt), stream)
    full = [s for s in segs if len(s["inputs"]) + len(s["targets"]) - 2 * 0 > 100]
    noise = [np.sum(s["targets"] < 1000) for s in full[:-1]]
    assert set(noise) == {round(141 * 0.15)}


def test_span_corruption_noise_matches_seqio_in_distribution():
    """Span lengths of the NumPy mask vs TF's random_spans_noise_mask over many draws."""
    import tensorflow as tf

    from tasks import span_corruption as tf_sc

    def span_lengths(mask):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
        return list(edges[1::2] - edges[::2])

    ours, ref = [], []
    for i in range(300):
        ours += span_lengths(grain_ops.random_spans_noise_mask(141, np.random.default_rng(i)))
        seeds = tf.constant([[i, 1], [i, 2]], tf.int32)
        ref += span_lengths(tf_sc.random_spans_noise_mask(141, seeds).numpy())
    assert len(ours) == len(ref)  # span count is deterministic given the length
    assert abs(np.mean(ours) - np.mean(ref)) < 0.1 and abs(np.std(ours) - np.std(ref)) < 0.25
    assert max(ours) > 5 and max(ref) > 5


def test_resume_from_any_state_continues_identically_and_reads_no_example_twice(exports):
    for task in (SUMMARIZE, "kjv_mixture"):
        ex = grain_data.open_exports(exports, task, "train", LENGTHS)

        def it(state=None, ex=ex):
            stream = grain_data.Stream(ex, LENGTHS, seed=5, shuffle=True, num_epochs=None)
            return grain_data.BatchIterator(stream, 4, state, prefetch=0)

        ref_it = it()
        batches, states = [], []
        for _ in range(60):  # a few epochs of kjv_summarize's units
            batches.append(next(ref_it))
            states.append(ref_it.state())
        startup = []
        for k in (3, 25, 55):
            grain_data.READS.clear()
            resumed = it(states[k - 1])
            first = next(resumed)
            startup.append(sum(grain_data.READS.values()))
            b = first
            for _ in range(60 - k - 1):
                b = next(resumed)
            np.testing.assert_array_equal(
                first["encoder_input_tokens"], batches[k]["encoder_input_tokens"]
            )
            np.testing.assert_array_equal(
                b["decoder_target_tokens"], batches[-1]["decoder_target_tokens"]
            )
        # Start-up reads at most one unit (K = 128 examples), whatever the step.
        assert max(startup) <= 128, startup


def test_restore_reads_only_unconsumed_examples(exports, tmp_path, monkeypatch):
    log = tmp_path / "reads.txt"
    monkeypatch.setenv("GQA_T5_GRAIN_READ_LOG", str(log))
    ex = grain_data.open_exports(exports, SUMMARIZE, "train", LENGTHS)
    stream = grain_data.Stream(ex, LENGTHS, seed=1, shuffle=True, num_epochs=None)
    a = grain_data.BatchIterator(stream, 4, None, prefetch=0)
    for _ in range(7):
        next(a)
    state = a.state()
    assert state["example"] > 0  # mid-unit
    first = log.read_text().splitlines()
    log.write_text("")
    b = grain_data.BatchIterator(stream, 4, state, prefetch=0)
    next(b)
    second = log.read_text().splitlines()
    consumed = first[: state["unit"] * 128 + state["example"]]
    assert not set(consumed) & set(second)
    assert len(second) == 128 - state["example"]


def test_bad_exports_fail_with_one_line_naming_file_and_fix(exports, tmp_path, capsys):
    import shutil

    from gqa_t5 import train

    root = tmp_path / "copy"
    shutil.copytree(exports / SUMMARIZE, root / SUMMARIZE)
    flags = [
        "--gin_file=models/t5_1_1/tiny.gin",
        "--gin_file=runs/pretrain.gin",
        f"--gin.MIXTURE_OR_TASK_NAME='{SUMMARIZE}'",
        "--gin.DATA_BACKEND='grain'",
        f"--gin.GRAIN_DATA_DIR='{root}'",
        "--gin.BATCH_SIZE=4",
        "--gin.TRAIN_STEPS=1",
    ]
    d = root / SUMMARIZE / "train"

    def run(*extra):
        model_dir = tmp_path / "model"
        rc = train.run_main(train.train, flags + [f"--gin.MODEL_DIR='{model_dir}'", *extra], "t")
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and not model_dir.exists(), err
        return err[0]

    lengths = "--gin.TASK_FEATURE_LENGTHS={'inputs': 128, 'targets': 48}"
    too_long = run("--gin.TASK_FEATURE_LENGTHS={'inputs': 256, 'targets': 48}")
    assert "metadata.json" in too_long and "--feature_lengths" in too_long
    (d / fmt.VOCAB_FILE).write_bytes((d / fmt.VOCAB_FILE).read_bytes()[:-1] + b"x")
    assert "vocab.model" in run(lengths) and "sha256" in run(lengths)
    data = (d / fmt.DATA_FILE).read_bytes()
    (d / fmt.DATA_FILE).write_bytes(data[: len(data) // 2])
    msg = run(lengths)
    assert "data.array_record" in msg and "truncated" in msg and "gqa-t5-export" in msg
    shutil.rmtree(d)
    msg = run(lengths)
    assert "no Grain export" in msg and "gqa-t5-export --task=kjv_summarize" in msg


def test_export_bad_input_exits_2_in_one_line_leaving_nothing(tmp_path, capsys):
    """gqa-t5-export reports through gqa_t5.errors: exit 2, one line naming the fix."""
    out = tmp_path / "out"
    base = [f"--task={SUMMARIZE}", "--split=validation"]
    rc = export.main(base + [f"--out_dir={out}", "--feature_lengths={'inputs': 1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and not out.exists(), err
    assert err[0].startswith("gqa-t5-export: error: --feature_lengths=") and "not JSON" in err[0]
    (tmp_path / "a_file").write_text("")
    rc = export.main(base + [f"--out_dir={tmp_path / 'a_file' / 'sub'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "is a file, not a directory" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_grain_eval_checks_before_writing(exports, tmp_path, capsys):
    """Grain eval validates VOCAB_SIZE and CHECKPOINT_PATH before EVAL_OUTPUT_DIR exists."""
    from gqa_t5 import eval as eval_lib
    from gqa_t5 import train

    out = tmp_path / "eval"
    flags = [
        "--gin_file=models/t5_1_1/tiny.gin",
        "--gin_file=runs/eval.gin",
        f"--gin.MIXTURE_OR_TASK_NAME='{SUMMARIZE}'",
        "--gin.DATA_BACKEND='grain'",
        f"--gin.GRAIN_DATA_DIR='{exports}'",
        f"--gin.CHECKPOINT_PATH='{tmp_path / 'missing'}'",
        f"--gin.EVAL_OUTPUT_DIR='{out}'",
    ]

    def run(*extra):
        rc = train.run_main(eval_lib.evaluate, flags + list(extra), "e")
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and not out.exists(), err
        return err[0]

    msg = run("--gin.VOCAB_SIZE=1024")  # the export's vocabulary has 1,000 pieces + 100 ids
    assert "VOCAB_SIZE=1024" in msg and "1100 ids" in msg and "--gin.VOCAB_SIZE=1152" in msg
    msg = run("--gin.VOCAB_SIZE=1152")
    assert "CHECKPOINT_PATH" in msg and str(tmp_path / "missing") in msg


def test_heldout_examples_equal_on_both_backends(exports):
    """The held-out stage reads the same unpacked examples from an export as from seqio
    (the whole split; the two backends list a split in different orders, and every
    checkpoint of a grid is scored on one backend, so pairing holds within it)."""
    from gqa_t5 import data, heldout

    lengths = {"inputs": 64, "targets": 24}
    cfgs = [
        data.DatasetConfig(
            SUMMARIZE, lengths, split="validation", module="tasks", backend=b, data_dir=d
        )
        for b, d in (("seqio", None), ("grain", str(exports)))
    ]
    model_lengths = data.model_feature_lengths(cfgs[0])
    seqio_ex, grain_ex = (heldout._examples(c, model_lengths, 10_000) for c in cfgs)

    def rows(examples):
        # decoder inputs past the last target token feed only padded positions (weight 0,
        # causal attention): seqio's unpacked converter zeroes the EOS there, Grain keeps it.
        def row(e):
            live = e["decoder_target_tokens"] > 0
            parts = [e["encoder_input_tokens"], e["decoder_target_tokens"]]
            return tuple(np.concatenate([*parts, e["decoder_input_tokens"][live]]).tolist())

        return sorted(row(e) for e in examples)

    assert len(seqio_ex) == len(grain_ex) > 10
    assert rows(seqio_ex) == rows(grain_ex)
    first = heldout._examples(cfgs[1], model_lengths, 7)
    assert rows(first) == rows(grain_ex[:7])  # the first N are a prefix on one backend
