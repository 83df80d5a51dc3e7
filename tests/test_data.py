"""SeqIO data for the runner: deterministic order, resume by skipping, packing, clear errors."""

import re

import numpy as np
import pytest

from gqa_t5 import data, testing


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    d = testing.write_tiny_task_files(tmp_path_factory.mktemp("tiny"))
    testing.register_tiny_tasks(d)
    return d


def _cfg(**kw):
    base = dict(
        mixture_or_task_name="tiny_reverse",
        task_feature_lengths={"inputs": 16, "targets": 16},
        batch_size=4,
        seed=3,
    )
    base.update(kw)
    return data.DatasetConfig(**base)


def _take(ds, n):
    it = data.numpy_batches(ds)
    return [next(it) for _ in range(n)]


def test_same_seed_same_order_and_skip_resumes_exactly(task_dir):
    a = _take(data.get_dataset(_cfg()), 5)
    b = _take(data.get_dataset(_cfg()), 5)
    resumed = _take(data.get_dataset(_cfg(), skip_examples=3 * 4), 2)
    other_seed = _take(data.get_dataset(_cfg(seed=4)), 1)
    for x, y in zip(a, b, strict=True):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    for x, y in zip(a[3:], resumed, strict=True):
        np.testing.assert_array_equal(x["encoder_input_tokens"], y["encoder_input_tokens"])
    assert not np.array_equal(a[0]["encoder_input_tokens"], other_seed[0]["encoder_input_tokens"])


def test_batches_are_prefetched(task_dir):
    ds = data.get_dataset(_cfg())
    assert "Prefetch" in type(ds).__name__  # the next batches are packed during the step


def test_resume_refuses_a_different_stream(task_dir):
    stored = data.data_position(_cfg(), 5)
    assert stored["examples_consumed_per_host"] == 5 * 4
    data.check_resumable(stored, _cfg())  # same run: fine
    data.check_resumable({"step": 5, "batch_size": 4}, _cfg())  # older checkpoint: fine
    cases = [
        (_cfg(seed=4), "RANDOM_SEED=3, now 4"),
        (_cfg(batch_size=8), "BATCH_SIZE=4, now 8"),
        (_cfg(mixture_or_task_name="tiny_reverse_x"), "MIXTURE_OR_TASK_NAME='tiny_reverse'"),
        (_cfg(task_feature_lengths={"inputs": 16, "targets": 8}), "TASK_FEATURE_LENGTHS="),
    ]
    for cfg, message in cases:
        with pytest.raises(ValueError, match=f"{re.escape(message)}.*INITIAL_CHECKPOINT_PATH"):
            data.check_resumable(stored, cfg)
    with pytest.raises(ValueError, match="the host count=2, now 1"):
        data.check_resumable(dict(stored, process_count=2), _cfg())


def test_packing_gives_segments_and_t5x_features(task_dir):
    (batch,) = _take(data.get_dataset(_cfg(task_feature_lengths={"inputs": 32, "targets": 32})), 1)
    assert batch["encoder_input_tokens"].shape == (4, 32)
    assert batch["encoder_segment_ids"].max() >= 2  # several examples per row
    tgt, seg = batch["decoder_target_tokens"], batch["decoder_segment_ids"]
    # Decoder inputs are targets shifted right within each segment, starting from 0.
    starts = (seg != np.pad(seg, ((0, 0), (1, 0)))[:, :-1]) & (seg > 0)
    assert np.all(batch["decoder_input_tokens"][starts] == 0)
    inner = ~starts & (seg > 0)
    shifted = np.pad(tgt, ((0, 0), (1, 0)))[:, :-1]
    np.testing.assert_array_equal(batch["decoder_input_tokens"][inner], shifted[inner])


def test_unpacked_eval_batches(task_dir):
    (batch,) = _take(data.get_dataset(_cfg(pack=False, shuffle=False, split="validation")), 1)
    assert "encoder_segment_ids" not in batch
    assert np.all(batch["decoder_target_tokens"][:, 0] > 1)


def test_missing_task_says_what_to_do(task_dir):
    with pytest.raises(ValueError, match="MIXTURE_OR_TASK_MODULE.*did you mean"):
        data.get_task(_cfg(mixture_or_task_name="tiny_revers"))
    with pytest.raises(ImportError, match="MIXTURE_OR_TASK_MODULE"):
        data.get_task(_cfg(module="no_such_module_xyz"))
    with pytest.raises(ValueError, match="split 'test'"):
        data.get_dataset(_cfg(split="test"))
    with pytest.raises(ValueError, match="TASK_FEATURE_LENGTHS needs"):
        data.model_feature_lengths(_cfg(task_feature_lengths={"inputs": 8}))


def test_missing_vocabulary_says_which(tmp_path):
    d = testing.write_tiny_task_files(tmp_path / "t")
    (d / "spm.model").unlink()
    task = testing.register_tiny_tasks(d)
    try:
        with pytest.raises(FileNotFoundError, match="vocabulary of feature 'inputs'.*spm.model"):
            data.check_vocabularies(task)
    finally:
        testing.register_tiny_tasks(testing.write_tiny_task_files(tmp_path / "ok"))
