"""Orbax runner checkpoints: round trip, keep-last-N, params-only initial checkpoints."""

import jax
import numpy as np
import pytest

from gqa_t5 import checkpointing, errors, optim, trainer
from gqa_t5.checkpoints import orbax_params
from gqa_t5.gin_utils import model_from_gin
from gqa_t5.partitioning import Partitioner


def _trainer(kv=2):
    model = model_from_gin(["models/t5_1_1/tiny.gin"], ["VOCAB_SIZE = 64", f"NUM_KV_HEADS = {kv}"])
    lr = optim.constant_schedule(0.01)
    return trainer.Trainer(model, optim.adafactor(lr), lr, Partitioner(num_kv_heads=kv), 8, 8)


def _np(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def test_save_restore_keep_last_n(tmp_path):
    tr = _trainer()
    state = tr.init_state()
    ck = checkpointing.CheckpointManager(tmp_path / "ck", period=2, keep=2)
    saved = [s for s in range(1, 7) if ck.save(s, state, {"step": s, "batch_size": 4})]
    assert saved == [2, 4, 6] and ck.all_steps() == [4, 6] and ck.latest_step() == 6
    restored, data_state = ck.restore(6, tr.abstract_state)
    assert data_state == {"step": 6, "batch_size": 4}
    for a, b in zip(
        jax.tree_util.tree_leaves(_np(state)), jax.tree_util.tree_leaves(_np(restored)), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_initial_params_from_converted_and_runner_checkpoints(tmp_path):
    tr = _trainer()
    params = _np(tr.init_state()["params"])
    shifted = jax.tree_util.tree_map(lambda x: x + 1.0, params)
    orbax_params.save_params(tmp_path / "converted", shifted)
    got = checkpointing.load_initial_params(tmp_path / "converted", tr.abstract_params)
    for a, b in zip(
        jax.tree_util.tree_leaves(_np(got)), jax.tree_util.tree_leaves(shifted), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    ck = checkpointing.CheckpointManager(tmp_path / "run" / "checkpoints", period=1)
    state = tr.init_state(got)
    ck.save(3, state, {"step": 3}, force=True)
    for path in (tmp_path / "run", tmp_path / "run" / "checkpoints" / "3"):
        again = checkpointing.load_initial_params(path, tr.abstract_params)
        for a, b in zip(
            jax.tree_util.tree_leaves(_np(again)), jax.tree_util.tree_leaves(shifted), strict=True
        ):
            np.testing.assert_array_equal(a, b)


def test_bad_initial_checkpoints_say_what_to_do(tmp_path):
    with pytest.raises(errors.BadInput, match="INITIAL_CHECKPOINT_PATH.*does not exist"):
        checkpointing.load_initial_params(tmp_path / "nope", _trainer().abstract_params)
    mha = _np(_trainer(kv=4).init_state()["params"])
    orbax_params.save_params(tmp_path / "mha", mha)
    with pytest.raises(ValueError, match="key/kernel has shape .*NUM_KV_HEADS"):
        checkpointing.load_initial_params(tmp_path / "mha", _trainer(kv=2).abstract_params)
