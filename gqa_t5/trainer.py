"""Train state, the jitted train step, and the jitted predict step, on a `Partitioner`'s mesh.

The state is a plain dict `{"step", "params", "opt_state"}` (float32 parameters; the
model computes in its ACTIVATION_DTYPE). Dropout keys are `fold_in(seed key, step)`, so a
resumed run draws the same masks as an uninterrupted one.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding

from gqa_t5.models import EncoderDecoderModel
from gqa_t5.partitioning import Partitioner

State = dict[str, Any]


class NonFiniteLossError(FloatingPointError):
    """The loss, gradients or parameters became NaN or Inf at a named step."""


class Trainer:
    """Builds sharded state and compiled steps for one model, optimizer and mesh."""

    def __init__(
        self,
        model: EncoderDecoderModel,
        optimizer: optax.GradientTransformation,
        learning_rate_fn,
        partitioner: Partitioner,
        input_len: int,
        target_len: int,
        seed: int = 0,
    ):
        self.model = model
        self.optimizer = optimizer
        self.learning_rate_fn = learning_rate_fn
        self.partitioner = partitioner
        self.input_len, self.target_len = input_len, target_len
        self.seed = seed
        self._dropout_key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
        self._use_dropout = model.config.dropout_rate > 0.0
        self._build_shardings()

    # -- shapes and shardings -------------------------------------------------------
    def _init_variables(self, rng):
        return self.model.init(rng, self.input_len, self.target_len)

    def _build_shardings(self) -> None:
        p = self.partitioner
        variables = jax.eval_shape(self._init_variables, jax.random.PRNGKey(0))
        params_shape = variables["params"]
        self.param_shardings = p.param_shardings(variables["params_axes"], params_shape)
        # Optimizer-state shardings follow from the parameters' by propagation (factored
        # Adafactor rows/columns have shapes no logical rule names).
        opt_lowered = jax.jit(self.optimizer.init, in_shardings=(self.param_shardings,)).lower(
            params_shape
        )
        opt_shardings = jax.tree_util.tree_map(
            lambda sh: sh if isinstance(sh, NamedSharding) and sh.mesh == p.mesh else p.replicated,
            opt_lowered.compile().output_shardings,
        )
        opt_shape = jax.eval_shape(self.optimizer.init, params_shape)
        self.state_shardings = {
            "step": p.replicated,
            "params": self.param_shardings,
            "opt_state": opt_shardings,
        }
        shapes = {
            "step": jax.ShapeDtypeStruct((), jnp.int32),
            "params": params_shape,
            "opt_state": opt_shape,
        }
        self.abstract_state = jax.tree_util.tree_map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
            shapes,
            self.state_shardings,
        )

    @property
    def abstract_params(self):
        return self.abstract_state["params"]

    # -- state ----------------------------------------------------------------------
    def init_state(self, params: Any | None = None) -> State:
        """Fresh state from the seed, or around given (already placed) parameters."""

        def make(rng, given):
            ps = self._init_variables(rng)["params"] if given is None else given
            return {
                "step": jnp.zeros((), jnp.int32),
                "params": ps,
                "opt_state": self.optimizer.init(ps),
            }

        in_sh = (self.partitioner.replicated, None if params is None else self.param_shardings)
        fn = jax.jit(make, in_shardings=in_sh, out_shardings=self.state_shardings)
        with self.partitioner.activation_context():
            return fn(jax.random.PRNGKey(self.seed), params)

    # -- steps ----------------------------------------------------------------------
    def _train_step(self, state: State, batch: dict) -> tuple[State, dict]:
        step, params = state["step"], state["params"]
        rng = jax.random.fold_in(self._dropout_key, step) if self._use_dropout else None
        grad_fn = jax.value_and_grad(self.model.loss_fn, has_aux=True)
        (loss, sums), grads = grad_fn(params, batch, rng)
        updates, opt_state = self.optimizer.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        finite &= jnp.isfinite(optax.global_norm(new_params))
        metrics = dict(
            sums,
            loss=loss,
            grad_norm=grad_norm,
            finite=finite,
            learning_rate=self.learning_rate_fn(step),
        )
        return {"step": step + 1, "params": new_params, "opt_state": opt_state}, metrics

    @functools.cached_property
    def _jit_train_step(self):
        p = self.partitioner
        return jax.jit(
            self._train_step,
            in_shardings=(self.state_shardings, p.batch_sharding),
            out_shardings=(self.state_shardings, p.replicated),
            donate_argnums=(0,),
        )

    def train_step(self, state: State, batch: dict) -> tuple[State, dict]:
        """One optimizer step on a global batch; metrics come back replicated."""
        with self.partitioner.activation_context():
            return self._jit_train_step(state, batch)

    def _eval_step(self, params, batch: dict) -> dict:
        loss, sums = self.model.loss_fn(params, batch, None)
        return dict(sums, loss=loss)

    @functools.cached_property
    def _jit_eval_step(self):
        p = self.partitioner
        return jax.jit(
            self._eval_step,
            in_shardings=(self.param_shardings, p.batch_sharding),
            out_shardings=p.replicated,
        )

    def eval_step(self, params, batch: dict) -> dict:
        """Loss and metric sums on a batch, without dropout."""
        with self.partitioner.activation_context():
            return self._jit_eval_step(params, batch)

    @functools.cached_property
    def _jit_predict(self):
        p = self.partitioner

        def predict(params, batch):
            # Fused decode kernels only without a model axis (their shards would not
            # line up with the q/k/v and MLP parts: resharding every step).
            tokens, _ = self.model.predict_batch(
                params, batch, max_decode_len=self.target_len, fuse=p.mesh.shape["model"] == 1
            )
            return tokens

        return jax.jit(
            predict,
            in_shardings=(self.param_shardings, p.batch_sharding),
            out_shardings=p.replicated,
        )

    def predict(self, params, batch: dict) -> np.ndarray:
        """Greedy decoding of a global batch to `target_len` tokens [B, L]."""
        with self.partitioner.activation_context():
            return np.asarray(self._jit_predict(params, batch))


def check_finite(step: int, metrics: dict) -> None:
    """Raise `NonFiniteLossError` naming `step` when the step produced NaN or Inf."""
    if not bool(metrics["finite"]):
        raise NonFiniteLossError(
            f"non-finite loss, gradient or parameters at step {step} (loss "
            f"{float(metrics['loss'])}, grad norm {float(metrics['grad_norm'])}); stopped "
            "without saving it. The last checkpoint is the last good state: lower the "
            "learning rate or check the data, then restart."
        )
