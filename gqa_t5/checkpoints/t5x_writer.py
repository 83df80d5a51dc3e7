"""Converted parameters as a t5x train-state checkpoint that `t5x.train` restores.

t5x (Orbax era) keeps each step in `<dir>/checkpoint_<step>/`: `_CHECKPOINT_METADATA`
(the CheckpointManager's record) and `state/`, an OCDBT PyTree checkpoint of
`TrainState.state_dict()`:

    {"target": <flax params>,
     "state": {"step": int32 [],
               "param_states": {<params' tree>: {"m", "v", "v_col", "v_row"}}}}

The param states are t5x's Adafactor slots (`t5x.adafactor._AdafactorParamState`),
written here as zeros, i.e. a fresh optimizer: `v_row`/`v_col` for a factored parameter,
`v` for the others, and a [1] placeholder in each unused slot. Point t5x's
`INITIAL_CHECKPOINT_PATH` at the step directory. Leaves are written one at a time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orbax.checkpoint as ocp

from gqa_t5.checkpoints import orbax_params

SLOTS = ("m", "v", "v_col", "v_row")
STEP_PREFIX = "checkpoint"  # t5x's get_checkpoint_prefix()
# t5x.adafactor.Adafactor's defaults (gin/t5x/model.gin keeps them).
MIN_DIM_SIZE_TO_FACTOR = 128


def step_dir_name(step: int) -> str:
    return f"{STEP_PREFIX}_{int(step)}"


def adafactor_slot_shapes(
    shape: tuple[int, ...],
    *,
    factored: bool = True,
    min_dim_size_to_factor: int = MIN_DIM_SIZE_TO_FACTOR,
    momentum: bool = False,
) -> dict[str, tuple[int, ...]]:
    """Shapes of t5x Adafactor's slots for a parameter (its heuristic factoring rule).

    As `Adafactor.init_param_state` with no factor map: factor over the two largest
    dimensions when the second largest is at least `min_dim_size_to_factor`.
    """
    shape = tuple(int(d) for d in shape)
    slots = {k: (1,) for k in SLOTS}
    dims = None
    if factored and len(shape) >= 2:
        order = np.argsort(shape)  # the same call t5x makes, so ties break the same way
        if shape[order[-2]] >= min_dim_size_to_factor:
            dims = (int(order[-2]),), (int(order[-1]),)
    if dims is None:
        slots["v"] = shape
    else:
        d1, d0 = dims
        slots["v_row"] = tuple(int(d) for d in np.delete(shape, d0))
        slots["v_col"] = tuple(int(d) for d in np.delete(shape, d1))
    if momentum:
        slots["m"] = shape
    return slots


def _zeros(shape: tuple[int, ...]) -> orbax_params.LazyArray:
    return orbax_params.LazyArray(shape, np.float32, lambda: np.zeros(shape, np.float32))


def train_state_tree(
    params: Mapping[str, Any],
    step: int,
    *,
    min_dim_size_to_factor: int = MIN_DIM_SIZE_TO_FACTOR,
) -> dict:
    """t5x's `TrainState.state_dict()` for `params` with a zero Adafactor state (pure)."""
    flat = orbax_params.flatten(params)
    states = {}
    for name, leaf in flat.items():
        shapes = adafactor_slot_shapes(leaf.shape, min_dim_size_to_factor=min_dim_size_to_factor)
        for slot, shape in shapes.items():
            states[f"{name}/{slot}"] = _zeros(shape)
    return {
        "target": params,
        "state": {
            "step": np.asarray(step, np.int32),
            "param_states": orbax_params.unflatten(states),
        },
    }


def save_t5x(
    path: str | os.PathLike,
    params: Mapping[str, Any],
    *,
    step: int = 0,
    overwrite: bool = False,
    extra_files: Mapping[str, str | Callable[[], str]] | None = None,
    on_written: Callable[[str, np.ndarray], None] | None = None,
    min_dim_size_to_factor: int = MIN_DIM_SIZE_TO_FACTOR,
) -> Path:
    """Write `path/checkpoint_<step>/` as t5x writes it, atomically; return that step dir.

    Args:
      params: nested dict of float32 arrays or `LazyArray`s (gqa-t5 = t5x names).
      extra_files: file name -> text (or a function giving it, called once every tensor is
        written), written in `path` (beside the step directory).
      on_written: called with (leaf name, array) after each lazy leaf is written.
    """
    path = Path(path).absolute()
    with orbax_params.publish_dir(path, overwrite, extra_files) as tmp:
        tree = train_state_tree(params, step, min_dim_size_to_factor=min_dim_size_to_factor)
        handler = ocp.PyTreeCheckpointHandler(
            use_ocdbt=True,
            type_handler_registry=orbax_params.lazy_type_handler_registry(
                # progress counts the parameters, not the zero optimizer slots
                None
                if on_written is None
                else lambda n, a: n.startswith("target") and on_written(n, a)
            ),
        )
        options = ocp.CheckpointManagerOptions(step_prefix=STEP_PREFIX, create=True)
        with ocp.CheckpointManager(tmp, options=options, item_handlers={"state": handler}) as m:
            m.save(int(step), args=ocp.args.Composite(state=ocp.args.PyTreeSave(tree)))
            m.wait_until_finished()
    return path / step_dir_name(step)


def restore_train_state(step_dir: str | os.PathLike) -> dict:
    """The whole state tree of a t5x step directory (or its `state/`), as NumPy arrays."""
    state = Path(step_dir).absolute()
    state = state / "state" if (state / "state").is_dir() else state
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr:
        meta = ckptr.metadata(state)
        tree = getattr(getattr(meta, "item_metadata", meta), "tree", meta)
        item = orbax_params._map_nested(lambda _: np.zeros((), np.float32), dict(tree))
        restore_args = orbax_params._map_nested(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item
        )
        out = ckptr.restore(
            state, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args)
        )
    return orbax_params._map_nested(np.asarray, out)
