"""Adafactor (optax, T5.1.1 settings) and t5x's schedules against float64 NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gqa_t5 import optim


def test_rsqrt_decay_is_flat_in_warmup_then_decays():
    lr = optim.create_learning_rate_scheduler("constant * rsqrt_decay", 1.0, warmup_steps=100)
    steps = np.array([0, 50, 100, 400, 10_000])
    want = 1.0 / np.sqrt(np.maximum(steps, 100))
    np.testing.assert_allclose([float(lr(s)) for s in steps], want, rtol=1e-6)


def test_step_offset_delays_the_schedule_as_in_t5x():
    # t5x: step = max(0, step - step_offset); flat at 1/sqrt(warmup) until the offset.
    lr = optim.create_learning_rate_scheduler(
        "constant * rsqrt_decay", 1.0, warmup_steps=10, step_offset=100
    )
    steps = [0, 100, 110, 140, 1100]
    want = [1 / np.sqrt(10), 1 / np.sqrt(10), 1 / np.sqrt(10), 1 / np.sqrt(40), 1 / 10**1.5]
    np.testing.assert_allclose([float(lr(s)) for s in steps], want, rtol=1e-6)


def test_initial_step_continues_pretraining_schedule():
    lr = optim.create_learning_rate_scheduler(
        "constant * rsqrt_decay", 1.0, warmup_steps=10_000, initial_step=1_000_000
    )
    np.testing.assert_allclose(float(lr(0)), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(float(lr(21_000)), 1 / np.sqrt(1_021_000), rtol=1e-6)


def test_uptrain_gin_continues_the_1m_step_rsqrt_schedule():
    import gin
    from gqa_t5 import gin_utils

    gin_utils.parse_gin(["models/t5_1_1/tiny.gin", "runs/uptrain.gin"], finalize=False)
    try:
        lr = gin.get_configurable(optim.create_learning_rate_scheduler)()
    finally:
        gin.clear_config()
    for step in (0, 1, 21_000, 50_000):
        np.testing.assert_allclose(float(lr(step)), 1 / np.sqrt(1_000_000 + step), rtol=1e-6)


def test_decay_every_factor():
    lr = optim.create_learning_rate_scheduler(
        "constant * decay_every", 2.0, decay_factor=0.5, steps_per_decay=10
    )
    want = [2.0, 2.0, 1.0, 0.5, 0.5, 2.0 * 0.5**10]
    np.testing.assert_allclose([float(lr(s)) for s in (0, 9, 10, 20, 29, 100)], want, rtol=1e-6)
    with pytest.raises(ValueError, match="steps_per_decay"):
        optim.create_learning_rate_scheduler("decay_every", steps_per_decay=0)


def test_constant_and_linear_factors():
    assert float(optim.constant_schedule(1e-3)(12345)) == pytest.approx(1e-3)
    lr = optim.create_learning_rate_scheduler(
        "constant * linear_warmup * linear_decay", 2.0, warmup_steps=10, total_steps=100
    )
    np.testing.assert_allclose(float(lr(5)), 2.0 * 0.5 * 0.95, rtol=1e-6)


def test_bad_schedule_names_fail_clearly():
    with pytest.raises(ValueError, match="unknown learning-rate factor"):
        optim.create_learning_rate_scheduler("constant * cosine")
    with pytest.raises(ValueError, match="total_steps"):
        optim.create_learning_rate_scheduler("linear_decay")


def _reference_adafactor(params, grads_seq, lr):
    """Shazeer & Stern Adafactor with T5.1.1's settings, float64, step by step."""
    eps1, eps2, clip, min_dim = 1e-30, 1e-3, 1.0, 128
    state, params = {}, {k: v.astype(np.float64) for k, v in params.items()}
    for t, grads in enumerate(grads_seq):
        decay = 1.0 - (t + 1.0) ** -0.8
        for k, g in grads.items():
            g = g.astype(np.float64)
            g2 = g * g + eps1
            if g.ndim == 2 and min(g.shape) >= min_dim:
                vr = decay * state.get((k, "r"), 0.0) + (1 - decay) * g2.mean(1)
                vc = decay * state.get((k, "c"), 0.0) + (1 - decay) * g2.mean(0)
                state[(k, "r")], state[(k, "c")] = vr, vc
                v = np.outer(vr / vr.mean(), vc)
            else:
                v = decay * state.get((k, "v"), 0.0) + (1 - decay) * g2
                state[(k, "v")] = v
            u = g / np.sqrt(v)
            u = u / max(1.0, np.sqrt(np.mean(u * u)) / clip)
            scale = max(np.sqrt(np.mean(params[k] ** 2)), eps2)
            params[k] = params[k] - lr * scale * u
    return params


def test_adafactor_matches_float64_reference_factored_and_not():
    rng = np.random.default_rng(0)
    params = {
        "kernel": rng.normal(size=(256, 128)).astype(np.float32) * 0.05,
        "scale": np.ones(64, np.float32),
        "small": np.zeros((8, 4), np.float32),  # below min_dim: unfactored, scale floor eps2
    }
    grads_seq = [
        {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
        for _ in range(3)
    ]
    tx = optim.adafactor(0.01)
    p = jax.tree_util.tree_map(jnp.asarray, params)
    state = tx.init(p)
    for grads in grads_seq:
        updates, state = tx.update(jax.tree_util.tree_map(jnp.asarray, grads), state, p)
        p = jax.tree_util.tree_map(lambda a, b: a + b, p, updates)
    want = _reference_adafactor(params, grads_seq, 0.01)
    for k in params:
        np.testing.assert_allclose(np.asarray(p[k]), want[k], rtol=2e-5, atol=1e-7, err_msg=k)
