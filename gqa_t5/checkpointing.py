"""Orbax checkpoints for the runner: save every K steps, keep the last N, restore the latest.

A runner checkpoint `MODEL_DIR/checkpoints/<step>/` holds two items: `state` (step,
parameters, optimizer state; restored straight onto the current mesh's shardings, so a
checkpoint written on one mesh restores on another) and `data` (JSON: the data position).
`load_initial_params` reads parameters only, from a converted checkpoint (an Orbax PyTree
`{"params": ...}`, see `gqa_t5.checkpoints.orbax_params`) or from a runner checkpoint.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from gqa_t5.checkpoints import orbax_params

STATE, DATA = "state", "data"


def _abs(path: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(path).expanduser().absolute()


class CheckpointManager:
    """Thin wrapper over `ocp.CheckpointManager` with the runner's two items."""

    def __init__(self, directory: str | pathlib.Path, period: int = 1000, keep: int | None = None):
        if period < 1:
            raise ValueError(f"checkpoint period must be >= 1, got {period}")
        if keep is not None and keep < 1:
            raise ValueError(f"checkpoints to keep must be >= 1 or None (all), got {keep}")
        self.directory = _abs(directory)
        self.period = period
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=1,  # the period is decided in `save` (Orbax saves step 1 too)
            max_to_keep=keep,
            create=True,
            # Synchronous saves: a SIGKILL can only lose the checkpoint being written, and
            # Orbax publishes a step directory only once it is complete.
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=(STATE, DATA)
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def due(self, step: int) -> bool:
        """Whether `save` saves at `step` without `force`."""
        return step % self.period == 0

    def save(self, step: int, state: Any, data_state: dict, force: bool = False) -> bool:
        """Save if `step` is on the period (or `force`); returns whether it saved."""
        if not force and not self.due(step):
            return False
        if step in self._manager.all_steps():
            return False
        saved = self._manager.save(
            step,
            args=ocp.args.Composite(
                **{STATE: ocp.args.StandardSave(state), DATA: ocp.args.JsonSave(data_state)}
            ),
            force=True,
        )
        self._manager.wait_until_finished()
        return bool(saved)

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """Restore `step` onto the shardings carried by `abstract_state`'s leaves."""
        out = self._manager.restore(
            step,
            args=ocp.args.Composite(
                **{STATE: ocp.args.StandardRestore(abstract_state), DATA: ocp.args.JsonRestore()}
            ),
        )
        return out[STATE], dict(out[DATA])

    def close(self) -> None:
        self._manager.close()


def runner_step_dir(path: pathlib.Path) -> pathlib.Path | None:
    """A runner step directory for `path` (a MODEL_DIR, its checkpoints dir or a step)."""
    for candidate in (path, path / "checkpoints"):
        if (candidate / STATE).is_dir():
            return candidate
        steps = sorted(
            (int(p.name) for p in candidate.glob("[0-9]*") if p.name.isdigit()), reverse=True
        )
        for s in steps:
            if (candidate / str(s) / STATE).is_dir():
                return candidate / str(s)
    return None


def load_initial_params(path: str | pathlib.Path, abstract_params: Any) -> Any:
    """Parameters only from a converted or runner checkpoint, placed on the given shardings.

    `abstract_params` is a tree of `jax.ShapeDtypeStruct` with shardings: shapes must match
    (a checkpoint converted for another NUM_KV_HEADS fails with the first mismatch).
    """
    root = _abs(path)
    if not root.exists():
        raise FileNotFoundError(
            f"INITIAL_CHECKPOINT_PATH {str(root)!r} does not exist; pass a checkpoint written "
            "by `gqa-t5-convert` or a runner MODEL_DIR / checkpoint step directory"
        )
    step_dir = runner_step_dir(root)
    if step_dir is not None:
        logging.info("initial parameters from runner checkpoint %s", step_dir)
        with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr:
            meta = ckptr.metadata(step_dir / STATE)
        tree = getattr(meta, "item_metadata", meta)
        tree = getattr(tree, "tree", tree)
        item = {"params": jax.tree_util.tree_map(lambda _: np.zeros(()), tree["params"])}
        with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr:
            restored = ckptr.restore(
                step_dir / STATE,
                args=ocp.args.PyTreeRestore(
                    item=item,
                    restore_args=jax.tree_util.tree_map(
                        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item
                    ),
                    partial_restore=True,
                ),
            )
        params = restored["params"]
    else:
        logging.info("initial parameters from converted checkpoint %s", root)
        params = orbax_params.restore_params(root)
    return place_params(params, abstract_params, str(root))


def place_params(params: Any, abstract_params: Any, source: str = "checkpoint") -> Any:
    """Check shapes against the model and put NumPy params on device with their shardings."""
    want = orbax_params.flatten(jax.tree_util.tree_map(lambda x: x, abstract_params))
    got = orbax_params.flatten(params)
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise ValueError(
            f"{source}: parameter names do not match the model (missing {missing[:5]}, "
            f"unexpected {extra[:5]}); is the model gin file the one it was written for?"
        )
    for name, spec in want.items():
        if tuple(got[name].shape) != tuple(spec.shape):
            raise ValueError(
                f"{source}: parameter {name} has shape {tuple(got[name].shape)}, the model "
                f"expects {tuple(spec.shape)}; check NUM_HEADS / NUM_KV_HEADS and the model size"
            )
    placed = {
        name: jax.device_put(np.asarray(got[name], dtype=spec.dtype), spec.sharding)
        for name, spec in want.items()
    }
    return orbax_params.unflatten(placed)
