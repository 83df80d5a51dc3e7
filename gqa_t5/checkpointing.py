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
from gqa_t5.errors import BadInput

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


def step_of(path: str | pathlib.Path) -> int | None:
    """The training step of a runner checkpoint path (MODEL_DIR, checkpoints/ or a step)."""
    step_dir = runner_step_dir(_abs(path))
    name = (step_dir or _abs(path)).name
    return int(name) if name.isdigit() else None


def check_exists(path: str | pathlib.Path, macro: str = "INITIAL_CHECKPOINT_PATH") -> None:
    """BadInput naming `macro` unless the checkpoint path exists."""
    if not _abs(path).exists():
        raise BadInput(
            f"{macro} {str(_abs(path))!r} does not exist; pass a checkpoint written by "
            "`gqa-t5-convert` or a runner MODEL_DIR / checkpoint step directory "
            f"(--gin.{macro}=\"'/path'\")"
        )


def _state_metadata_params(step_dir: pathlib.Path) -> Any:
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr:
        meta = ckptr.metadata(step_dir / STATE)
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    return tree["params"]


def runner_param_shapes(step_dir: pathlib.Path) -> dict[str, tuple[int, ...]]:
    """Flat name -> shape of a runner checkpoint's parameters, from its metadata only."""
    flat = orbax_params.flatten(_state_metadata_params(step_dir))
    return {k: tuple(m.shape) for k, m in flat.items() if hasattr(m, "shape")}


# T5Config field -> the gin flag that sets it.
_FIELD_FLAGS = {
    "num_heads": "NUM_HEADS",
    "num_kv_heads": "NUM_KV_HEADS",
    "group_encoder": "GROUP_ENCODER",
    "vocab_size": "VOCAB_SIZE",
    "emb_dim": "network.T5Config.emb_dim",
    "head_dim": "network.T5Config.head_dim",
    "mlp_dim": "network.T5Config.mlp_dim",
    "num_encoder_layers": "network.T5Config.num_encoder_layers",
    "num_decoder_layers": "network.T5Config.num_decoder_layers",
}


def check_shapes_match(
    found: dict[str, tuple[int, ...]], want: dict[str, tuple[int, ...]], config, source: str
) -> None:
    """BadInput naming the gin flags to change when a checkpoint's shapes differ from the model's.

    `found` and `want` map flat parameter names to shapes; `config` is the model's T5Config.
    """
    if {k: tuple(v) for k, v in found.items()} == {k: tuple(v) for k, v in want.items()}:
        return
    from gqa_t5 import convert  # infers the config a set of shapes belongs to

    try:
        got = convert.infer_config(found, {"mlp_activations": config.mlp_activations}, source)
    except Exception:  # noqa: BLE001 - shapes of no T5: fall back to the first difference
        got = None
    diffs = [
        (flag, getattr(got, f), getattr(config, f))
        for f, flag in _FIELD_FLAGS.items()
        if got is not None and getattr(got, f) != getattr(config, f)
    ]
    model_gin = _abs(source) / "model.gin"
    also = f" (or --gin_file={model_gin})" if model_gin.is_file() else ""
    if diffs:
        flags = " ".join(f"--gin.{flag}={g}" for flag, g, _ in diffs)
        was = ", ".join(f"{flag}={g} (the model has {m})" for flag, g, m in diffs)
        raise BadInput(f"{source} was written for {was}; pass {flags}{also}")
    missing, extra = sorted(set(want) - set(found)), sorted(set(found) - set(want))
    wrong = [n for n in sorted(set(want) & set(found)) if tuple(want[n]) != tuple(found[n])]
    detail = (
        f"parameter {wrong[0]} has shape {tuple(found[wrong[0]])}, the model expects "
        f"{tuple(want[wrong[0]])}"
        if wrong
        else f"missing {missing[:3]}, unexpected {extra[:3]}"
    )
    raise BadInput(
        f"{source}: {detail}; pass the model gin file it was written with (--gin_file=...){also}"
    )


def load_initial_params(
    path: str | pathlib.Path,
    abstract_params: Any,
    config: Any = None,
    macro: str = "INITIAL_CHECKPOINT_PATH",
) -> Any:
    """Parameters only from a converted or runner checkpoint, placed on the given shardings.

    `abstract_params` is a tree of `jax.ShapeDtypeStruct` with shardings: shapes must match
    `config` (a mismatch names the gin flag to change); `macro` names the path in messages.
    """
    check_exists(path, macro)
    root = _abs(path)
    step_dir = runner_step_dir(root)
    if step_dir is not None:
        logging.info("initial parameters from runner checkpoint %s", step_dir)
        tree = _state_metadata_params(step_dir)
        if config is not None:
            want = orbax_params.flatten(abstract_params)
            check_shapes_match(
                runner_param_shapes(step_dir),
                {k: tuple(v.shape) for k, v in want.items()},
                config,
                str(root),
            )
        item = {"params": jax.tree_util.tree_map(lambda _: np.zeros(()), tree)}
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
        if config is not None:
            want = orbax_params.flatten(abstract_params)
            check_shapes_match(
                orbax_params.param_shapes(root),
                {k: tuple(v.shape) for k, v in want.items()},
                config,
                str(root),
            )
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
