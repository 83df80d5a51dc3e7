"""Train state and train step on one device against a direct loss / optax computation."""

import jax
import numpy as np
import optax
import pytest

from gqa_t5 import optim, trainer
from gqa_t5.gin_utils import model_from_gin
from gqa_t5.partitioning import Partitioner


def _batch(seed=0, B=4, L=8, V=64):
    rng = np.random.default_rng(seed)
    tgt = rng.integers(2, V, size=(B, L)).astype(np.int32)
    tgt[:, -2:] = 0
    return {
        "encoder_input_tokens": rng.integers(2, V, size=(B, L)).astype(np.int32),
        "decoder_input_tokens": np.concatenate([np.zeros((B, 1), np.int32), tgt[:, :-1]], 1),
        "decoder_target_tokens": tgt,
        "decoder_loss_weights": (tgt > 0).astype(np.int32),
    }


def _trainer(dropout=0.0):
    model = model_from_gin(
        ["models/t5_1_1/tiny.gin"],
        ["VOCAB_SIZE = 64", "NUM_KV_HEADS = 2", f"DROPOUT_RATE = {dropout}"],
    )
    lr = optim.constant_schedule(0.01)
    return trainer.Trainer(model, optim.adafactor(lr), lr, Partitioner(num_kv_heads=2), 8, 8)


def test_train_step_equals_direct_loss_and_optax_update():
    tr = _trainer()
    state = tr.init_state()
    params0 = jax.tree_util.tree_map(np.asarray, state["params"])
    batch = _batch()
    (loss, _), grads = jax.value_and_grad(tr.model.loss_fn, has_aux=True)(params0, batch)
    tx = optim.adafactor(0.01)
    updates, _ = tx.update(grads, tx.init(params0), params0)
    want = optax.apply_updates(params0, updates)
    new, m = tr.train_step(state, batch)
    assert int(new["step"]) == 1
    np.testing.assert_allclose(float(m["loss"]), float(loss), rtol=1e-6)
    assert float(m["learning_rate"]) == pytest.approx(0.01) and bool(m["finite"])
    for a, b in zip(
        jax.tree_util.tree_leaves(new["params"]), jax.tree_util.tree_leaves(want), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_dropout_masks_depend_on_step_only():
    tr = _trainer(dropout=0.3)
    batch = _batch(1)

    def loss_at(step):  # fresh parameters each time: only the step differs
        state = tr.init_state()
        state["step"] = jax.device_put(np.int32(step), tr.state_shardings["step"])
        return float(tr.train_step(state, batch)[1]["loss"])

    at_0 = loss_at(0)
    assert loss_at(0) == at_0  # same seed and step: same masks
    assert loss_at(7) == loss_at(7) != at_0  # another step: other masks
    det = tr.eval_step(tr.init_state()["params"], batch)
    assert float(det["loss"]) != at_0  # dropout was on in training


def test_check_finite_names_step():
    with pytest.raises(trainer.NonFiniteLossError, match="at step 7"):
        trainer.check_finite(7, {"finite": False, "loss": float("nan"), "grad_norm": 1.0})
