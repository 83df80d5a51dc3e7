"""Train (pre-train, uptrain, fine-tune) a GQA T5 from gin, in t5x's conventions.

    python -m gqa_t5.train --gin_file=models/t5_1_1/small.gin --gin_file=runs/pretrain.gin \
      --gin.MODEL_DIR="'/tmp/run'" --gin.MIXTURE_OR_TASK_NAME="'c4_v220_span_corruption'"

Restarts resume from the latest checkpoint in MODEL_DIR (step, parameters, optimizer state,
data position; on DATA_BACKEND = 'grain' the Grain iterator state, restored without
replay). SIGTERM / SIGINT save a checkpoint and exit 0; a NaN/Inf loss stops with an error
naming the step and keeps the last good checkpoint.
"""

from __future__ import annotations

import linecache
import logging
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from gqa_t5 import checkpointing, data, optim, trainer, utils
from gqa_t5.models import EncoderDecoderModel
from gqa_t5.partitioning import Partitioner

METRICS_FILE = "train_metrics.jsonl"


def _setup(
    model: EncoderDecoderModel,
    cfg: data.DatasetConfig,
    partitioner,
    optimizer,
    learning_rate_fn,
    seed: int,
) -> trainer.Trainer:
    lengths = data.model_feature_lengths(cfg)
    if partitioner is None:
        partitioner = Partitioner(num_kv_heads=model.config.num_kv_heads)
    if cfg.batch_size % (partitioner.data_size or 1):
        raise ValueError(
            f"BATCH_SIZE={cfg.batch_size} must be divisible by the mesh's data axis "
            f"({partitioner.data_size})"
        )
    return trainer.Trainer(
        model,
        optimizer(learning_rate_fn),
        learning_rate_fn,
        partitioner,
        lengths["encoder"],
        lengths["decoder"],
        seed=seed,
    )


def _initial_state(
    tr: trainer.Trainer,
    ckpt: checkpointing.CheckpointManager,
    initial_checkpoint_path: str | None,
    cfg: data.DatasetConfig,
):
    """(state, start step, stored data position): the latest checkpoint, else
    INITIAL_CHECKPOINT_PATH, else init."""
    latest = ckpt.latest_step()
    if latest is not None:
        state, data_state = ckpt.restore(latest, tr.abstract_state)
        data.check_resumable(data_state, cfg)
        logging.info("resumed from %s/%d", ckpt.directory, latest)
        return state, latest, data_state
    if initial_checkpoint_path:
        params = checkpointing.load_initial_params(initial_checkpoint_path, tr.abstract_params)
        return tr.init_state(params), 0, None
    return tr.init_state(), 0, None


class _PendingMetrics:
    """Step metrics kept on device and fetched together at log and save steps.

    Fetching every step would block the host on the device each step, so input packing
    could not overlap with the step. Every fetch checks all steps since the last one.
    """

    def __init__(self):
        self._steps: list[tuple[int, dict]] = []

    def add(self, step: int, metrics: dict) -> None:
        self._steps.append((step, metrics))

    def fetch_checked(self) -> dict | None:
        """The latest step's metrics on the host; raises naming the first non-finite step."""
        if not self._steps:
            return None
        fetched, self._steps = jax.device_get(self._steps), []
        for step, metrics in fetched:
            trainer.check_finite(step, metrics)
        return fetched[-1][1]


def _global_tokens(host_batch: dict[str, np.ndarray]) -> int:
    """Non-padding input and target tokens in the global batch, estimated from this host's.

    Exact counts would need a cross-host sum each step; hosts' shards are alike in size.
    """
    host = np.sum(host_batch["encoder_input_tokens"] > 0)
    host += np.sum(host_batch["decoder_target_tokens"] > 0)
    return int(host) * jax.process_count()


def _log(step: int, m: dict, rates: dict, writer: utils.SummaryWriter, model_dir: pathlib.Path):
    weight = max(float(m["weight_sum"]), 1e-9)
    record = {
        "step": step,
        "loss": float(m["loss_sum"]) / weight,  # per target token, z-loss included
        "objective": float(m["loss"]),  # what was differentiated (LOSS_NORMALIZING_FACTOR)
        "cross_ent_loss": (float(m["loss_sum"]) - float(m["z_loss_sum"])) / weight,
        "z_loss": float(m["z_loss_sum"]) / weight,
        "accuracy": float(m["correct_sum"]) / weight,
        "learning_rate": float(m["learning_rate"]),
        "grad_norm": float(m["grad_norm"]),
        **rates,
    }
    logging.info(
        "step %d  loss %.4f  accuracy %.4f  lr %.3g  %.2f steps/s  %.0f tokens/s  ETA %s",
        step,
        record["loss"],
        record["accuracy"],
        record["learning_rate"],
        rates["steps_per_sec"],
        rates["tokens_per_sec"],
        utils.format_eta(rates["eta_sec"]),
    )
    if jax.process_index() == 0:
        writer.scalars(step, {f"train/{k}": v for k, v in record.items() if k != "step"})
        utils.append_jsonl(model_dir / METRICS_FILE, record)
    return record


def train(
    *,
    model: EncoderDecoderModel,
    model_dir: str,
    train_dataset_cfg: data.DatasetConfig,
    total_steps: int,
    learning_rate_fn: optim.Schedule | None = None,
    optimizer: Callable = optim.adafactor,
    partitioner: Partitioner | None = None,
    checkpoint_period: int = 1000,
    keep_checkpoints: int | None = None,
    initial_checkpoint_path: str | None = None,
    log_every: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Train to `total_steps`, resuming from MODEL_DIR; returns a summary dict.

    `learning_rate_fn` defaults to fine-tuning's constant 1e-3 (`optim.constant_schedule()`).
    """
    if learning_rate_fn is None:
        learning_rate_fn = optim.constant_schedule()
    if not model_dir:
        raise ValueError("MODEL_DIR is not set: pass --gin.MODEL_DIR=\"'/path/to/run'\"")
    if total_steps < 0 or log_every < 1:
        raise ValueError(f"TRAIN_STEPS={total_steps} must be >= 0 and log_every >= 1")
    data.check_inputs(train_dataset_cfg)  # bad exports fail before anything is written
    model_dir_path = pathlib.Path(model_dir).expanduser().absolute()
    model_dir_path.mkdir(parents=True, exist_ok=True)
    _write_config(model_dir_path)
    tr = _setup(model, train_dataset_cfg, partitioner, optimizer, learning_rate_fn, seed)
    ckpt = checkpointing.CheckpointManager(
        model_dir_path / "checkpoints", checkpoint_period, keep_checkpoints
    )
    state, start, data_state = _initial_state(tr, ckpt, initial_checkpoint_path, train_dataset_cfg)
    summary = {
        "model_dir": str(model_dir_path),
        "start_step": start,
        "step": start,
        "status": "done",
        "last_metrics": None,
    }
    if start >= total_steps:
        logging.info("already at step %d >= TRAIN_STEPS=%d; nothing to do", start, total_steps)
        return summary
    batches = data.train_batches(train_dataset_cfg, start, data_state)
    writer = utils.SummaryWriter(model_dir_path, enabled=jax.process_index() == 0)
    progress = utils.Progress(start, total_steps)
    pending = _PendingMetrics()
    step = start
    with utils.StopSignals() as stop:
        while step < total_steps:
            batch = next(batches, None)
            if batch is None:
                raise RuntimeError(f"training data ran out at step {step}; is the split empty?")
            progress.add_tokens(_global_tokens(batch))
            state, metrics = tr.train_step(state, tr.partitioner.host_batch_to_global(batch))
            step += 1
            pending.add(step, metrics)
            if step % log_every == 0 or step == total_steps or stop.received:
                summary["last_metrics"] = _log(
                    step, pending.fetch_checked(), progress.rates(step), writer, model_dir_path
                )
            if stop.received:
                summary["status"] = f"stopped by signal {stop.received}"
                break
            if ckpt.due(step):
                pending.fetch_checked()  # never save a state that followed a NaN/Inf step
                ckpt.save(step, state, data.data_position(train_dataset_cfg, step, batches))
    pending.fetch_checked()
    if step not in ckpt.all_steps():
        ckpt.save(step, state, data.data_position(train_dataset_cfg, step, batches), force=True)
    ckpt.close()
    writer.close()
    summary["step"] = step
    logging.info(
        "summary: %s at step %d (from %d), checkpoints in %s",
        summary["status"],
        step,
        start,
        ckpt.directory,
    )
    return summary


def _write_config(model_dir: pathlib.Path) -> None:
    import gin

    if jax.process_index() == 0:
        tmp = model_dir / ".config.gin.tmp"
        tmp.write_text(gin.config_str())
        tmp.replace(model_dir / "config.gin")


_USER_ERRORS = (ValueError, OSError, ImportError, RuntimeError, SyntaxError, FloatingPointError)


def _is_user_error(e: BaseException) -> bool:
    """Whether `e` is a message meant for the user: raised by a `raise` in gqa_t5 or gin.

    Those say what to do (bad paths, gin values, missing tasks, NaN); anything else (an
    error inside a library, a TypeError from a bug) needs its traceback.
    """
    if not isinstance(e, _USER_ERRORS) or e.__traceback__ is None:
        return False
    import gin

    tb = e.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    path = pathlib.Path(code.co_filename).resolve()
    ours = (pathlib.Path(__file__).parent, pathlib.Path(gin.__file__).parent)
    line = linecache.getline(code.co_filename, tb.tb_lineno).strip()
    return any(path.is_relative_to(d.resolve()) for d in ours) and line.startswith("raise")


def run_main(fn: Callable, argv: Sequence[str], description: str) -> int:
    """Shared entry: parse t5x-style gin flags, run `fn` from gin, map errors to exit 1.

    The project's own errors print one line; unexpected ones also log their traceback.
    """
    import argparse

    import gin
    from gqa_t5 import gin_utils, partitioning

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--gin_file", action="append", default=[])
    parser.add_argument("--gin_bindings", action="append", default=[])
    parser.add_argument("--gin_search_paths", action="append", default=[])
    parser.add_argument("--coordinator_address", default=None)
    args = parser.parse_args(gin_utils.rewrite_gin_args(argv))
    utils.setup_logging()
    paths = [p for arg in args.gin_search_paths for p in arg.split(",") if p]
    try:
        if not args.gin_file:
            raise ValueError(
                "no --gin_file given; e.g. --gin_file=models/t5_1_1/small.gin "
                "--gin_file=runs/pretrain.gin"
            )
        partitioning.maybe_initialize_distributed(args.coordinator_address)
        gin_utils.parse_gin(args.gin_file, args.gin_bindings, paths)
        result = gin.get_configurable(fn)()
    except Exception as e:
        if not _is_user_error(e):
            logging.exception("unexpected error (a bug, not a bad flag?)")
        message = str(e).split("\n  In call to configurable")[0]  # gin's note, one line
        print(f"error: {type(e).__name__}: {message}", file=sys.stderr)
        return 1
    print(
        f"summary: {result}"
        if not isinstance(result, dict)
        else "summary: " + ", ".join(f"{k}={v}" for k, v in result.items() if k != "last_metrics")
    )
    return 0


def console_main() -> None:
    from gqa_t5 import train as this  # the gin-registered module, also under `python -m`

    sys.exit(run_main(this.train, sys.argv[1:], "Train a GQA T5 model from gin files."))


if __name__ == "__main__":
    console_main()
