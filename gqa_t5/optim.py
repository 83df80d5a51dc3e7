"""Adafactor with T5.1.1's settings (through optax) and t5x's learning-rate schedules.

Relation to t5x's own `adafactor.Adafactor` (differences are immaterial for T5.1.1's 1-D
and 2-D parameters):
- Same factoring: both factor the two largest dimensions when the smaller of them is
  >= `min_dim_size_to_factor` (t5x ignores its logical factor rules for rank <= 2).
  Both keep row/column second moments, decay 1 - (count + 1)^-0.8, clip the update's RMS
  at 1.0 and scale by max(RMS(param), 1e-3); `test_optim.py` checks the arithmetic
  against a float64 reference of that algorithm.
- t5x keeps the optimizer state of a t5x checkpoint when uptraining; a converted checkpoint
  (INITIAL_CHECKPOINT_PATH) carries parameters only, so the second-moment estimate starts
  from zero. At count 0 the decay is 1 - 1^-0.8 = 0, so the first step uses that step's
  squared gradient alone, as a fresh t5x run would.
- No `global_norm_clip_threshold`, `max_parameter_scale` or `skip_nan_updates` (T5.1.1 sets
  none of them); NaNs stop the run instead (see `trainer`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

Schedule = Callable[[jax.Array], jax.Array]

_FACTORS = ("constant", "rsqrt_decay", "linear_warmup", "linear_decay", "decay_every")


def create_learning_rate_scheduler(
    factors: str = "constant * rsqrt_decay",
    base_learning_rate: float = 1.0,
    warmup_steps: int = 10_000,
    decay_factor: float = 0.5,
    steps_per_decay: int = 20_000,
    step_offset: int = 0,
    total_steps: int | None = None,
    initial_step: int = 0,
) -> Schedule:
    """t5x's `utils.create_learning_rate_scheduler`: a product of named factors of `s`.

    s = max(0, step - step_offset) + initial_step. `step_offset` is t5x's: the schedule
    starts `step_offset` steps late. `initial_step` (not in t5x) is the schedule's step at
    this run's step 0: uptraining continues pre-training's schedule with initial_step =
    1,000,000 (rsqrt: 1 / sqrt(1M + step), 1e-3 at first), as a t5x run restored from the
    1M-step checkpoint would, whose step counter carries on.

    constant: base_learning_rate; rsqrt_decay: 1 / sqrt(max(s, warmup_steps)) (flat during
    warm-up, as in T5); linear_warmup: min(1, s / warmup_steps); linear_decay:
    max(0, 1 - s / total_steps); decay_every: decay_factor ** (s // steps_per_decay).
    """
    names = [f.strip() for f in factors.split("*") if f.strip()]
    unknown = [n for n in names if n not in _FACTORS]
    if unknown:
        raise ValueError(f"unknown learning-rate factor(s) {unknown}; use a product of {_FACTORS}")
    if "linear_decay" in names and not total_steps:
        raise ValueError("the linear_decay factor needs total_steps (set TRAIN_STEPS)")
    if "decay_every" in names and steps_per_decay < 1:
        raise ValueError(
            f"the decay_every factor needs steps_per_decay >= 1, got {steps_per_decay}"
        )
    if warmup_steps < 0 or base_learning_rate < 0 or step_offset < 0 or initial_step < 0:
        raise ValueError(
            f"warmup_steps={warmup_steps}, base_learning_rate={base_learning_rate}, "
            f"step_offset={step_offset} and initial_step={initial_step} must be >= 0"
        )

    def schedule(step: jax.Array) -> jax.Array:
        s = jnp.maximum(jnp.asarray(step, jnp.float32) - step_offset, 0.0) + initial_step
        lr = jnp.asarray(1.0, jnp.float32)
        for name in names:
            if name == "constant":
                lr = lr * base_learning_rate
            elif name == "rsqrt_decay":
                lr = lr / jnp.sqrt(jnp.maximum(s, max(warmup_steps, 1)))
            elif name == "linear_warmup":
                lr = lr * jnp.minimum(1.0, s / max(warmup_steps, 1))
            elif name == "decay_every":
                lr = lr * decay_factor ** jnp.floor(s / steps_per_decay)
            else:
                lr = lr * jnp.maximum(0.0, 1.0 - s / total_steps)
        return lr

    return schedule


def constant_schedule(learning_rate: float = 1e-3) -> Schedule:
    """Fine-tuning's constant learning rate (T5.1.1 / the paper: 1e-3)."""
    return create_learning_rate_scheduler("constant", base_learning_rate=learning_rate)


def adafactor(
    learning_rate_fn: Schedule | float,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    factored: bool = True,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0,
    epsilon1: float = 1e-30,
    epsilon2: float = 1e-3,
    min_dim_size_to_factor: int = 128,
) -> optax.GradientTransformation:
    """optax Adafactor with T5.1.1's defaults (no momentum, no weight decay)."""
    if epsilon2 != 1e-3:
        # optax hard-codes the parameter-scale floor at 1e-3 (t5x's epsilon2).
        raise ValueError(f"optax's Adafactor fixes epsilon2 at 1e-3, got {epsilon2}")
    return optax.adafactor(
        learning_rate=learning_rate_fn,
        min_dim_size_to_factor=min_dim_size_to_factor,
        decay_rate=decay_rate,
        decay_offset=step_offset,
        multiply_by_parameter_scale=multiply_by_parameter_scale,
        clipping_threshold=clipping_threshold,
        momentum=None,
        eps=epsilon1,
        factored=factored,
    )
