"""Train (pre-train, uptrain, fine-tune) a GQA T5 from gin, in t5x's conventions.

    python -m gqa_t5.train --gin_file=models/t5_1_1/small.gin --gin_file=runs/pretrain.gin \
      --gin.MODEL_DIR="'/tmp/run'" --gin.MIXTURE_OR_TASK_NAME="'c4_v220_span_corruption'"

Restarts resume from the latest checkpoint in MODEL_DIR (step, parameters, optimizer state,
data position; on DATA_BACKEND = 'grain' the Grain iterator state, restored without
replay). SIGTERM / SIGINT save a checkpoint and exit 0; a NaN/Inf loss stops with an error
naming the step and keeps the last good checkpoint.
"""

from __future__ import annotations

import logging
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from gqa_t5 import checkpointing, data, errors, gin_checks, optim, trainer, utils
from gqa_t5.checkpoints import orbax_params
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
        want = orbax_params.flatten(tr.abstract_params)
        checkpointing.check_shapes_match(
            checkpointing.runner_param_shapes(ckpt.directory / str(latest)),
            {k: tuple(v.shape) for k, v in want.items()},
            tr.model.config,
            f"MODEL_DIR checkpoint {ckpt.directory / str(latest)}",
        )
        state, data_state = ckpt.restore(latest, tr.abstract_state)
        data.check_resumable(data_state, cfg)
        logging.info("resumed from %s/%d", ckpt.directory, latest)
        return state, latest, data_state
    if initial_checkpoint_path:
        params = checkpointing.load_initial_params(
            initial_checkpoint_path, tr.abstract_params, tr.model.config
        )
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
    model_dir_path = pathlib.Path(model_dir).expanduser().absolute()
    # Validate everything cheap before MODEL_DIR exists: a bad task, vocabulary or path
    # leaves nothing behind.
    check_task_and_vocab(model, train_dataset_cfg)
    errors.check_writable_parent(model_dir_path, "MODEL_DIR")
    tr = _setup(model, train_dataset_cfg, partitioner, optimizer, learning_rate_fn, seed)
    resuming = checkpointing.runner_step_dir(model_dir_path) is not None
    if initial_checkpoint_path and not resuming:
        checkpointing.check_exists(initial_checkpoint_path)
    keep = lambda: checkpointing.runner_step_dir(model_dir_path) is not None  # noqa: E731
    with errors.removed_unless_kept(model_dir_path, keep=keep):
        model_dir_path.mkdir(parents=True, exist_ok=True)
        _write_config(model_dir_path)
        for stale in sorted((model_dir_path / "checkpoints").glob("*.orbax-checkpoint-tmp*")):
            logging.info("removing %s, a temporary left by an earlier killed run", stale)
        ckpt = checkpointing.CheckpointManager(  # Orbax removes those temporaries
            model_dir_path / "checkpoints", checkpoint_period, keep_checkpoints
        )
        return _train_loop(
            tr,
            ckpt,
            model_dir_path,
            train_dataset_cfg,
            total_steps,
            initial_checkpoint_path,
            log_every,
        )


def check_task_and_vocab(model: EncoderDecoderModel, cfg: data.DatasetConfig):
    """The task exists, its vocabulary loads, and VOCAB_SIZE covers it; returns the SeqIO task,
    or on DATA_BACKEND = 'grain' the validated exports (`grain_data.open_exports`), TF-free."""
    if cfg.backend == "grain":
        exports = data.check_inputs(cfg)  # one vocabulary for all of them (checked there)
        vocab = exports[0][0].vocabulary
        errors.check_vocab_size(model.config.vocab_size, vocab.vocab_size, cfg.mixture_or_task_name)
        return exports
    task = data.get_task(cfg)
    data.check_vocabularies(task)
    sizes = [f.vocabulary.vocab_size for f in task.output_features.values()]
    errors.check_vocab_size(model.config.vocab_size, max(sizes), task.name)
    return task


def _train_loop(
    tr: trainer.Trainer,
    ckpt: checkpointing.CheckpointManager,
    model_dir_path: pathlib.Path,
    train_dataset_cfg: data.DatasetConfig,
    total_steps: int,
    initial_checkpoint_path: str | None,
    log_every: int,
) -> dict[str, Any]:
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


_PROGS = {"train": "gqa-t5-train", "evaluate": "gqa-t5-eval", "infer": "gqa-t5-infer"}


def run_main(fn: Callable, argv: Sequence[str], description: str) -> int:
    """Shared entry: parse t5x-style gin flags, check them, run `fn` from gin.

    Exit codes and messages follow `gqa_t5.errors` (2 bad input, 1 runtime failure).
    """
    import argparse

    import gin
    from gqa_t5 import gin_utils, partitioning

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--gin_file", action="append", default=[])
    parser.add_argument("--gin_bindings", action="append", default=[])
    parser.add_argument("--gin_search_paths", action="append", default=[])
    parser.add_argument("--coordinator_address", default=None)
    parser.add_argument(
        "--verbose", action="store_true", help="also show known-harmless library warnings"
    )
    args = parser.parse_args(gin_utils.rewrite_gin_args(argv))
    utils.setup_logging(args.verbose)
    paths = [p for arg in args.gin_search_paths for p in arg.split(",") if p]
    prog = _PROGS.get(getattr(fn, "__name__", ""), "gqa-t5")

    def body() -> int:
        if not args.gin_file:
            raise errors.BadInput(
                "no --gin_file given; e.g. --gin_file=models/t5_1_1/small.gin "
                "--gin_file=runs/pretrain.gin"
            )
        partitioning.maybe_initialize_distributed(args.coordinator_address)
        try:
            gin_utils.parse_gin(args.gin_file, args.gin_bindings, paths)
        except (ValueError, SyntaxError, NameError, TypeError, ImportError, OSError) as e:
            raise errors.BadInput(
                f"gin: {errors.one_line(str(e))}{gin_checks.did_you_mean(str(e))} "
                "(strings need quotes: --gin.NAME=\"'text'\")"
            ) from e
        gin_checks.check_config(args.gin_bindings)
        result = gin.get_configurable(fn)()
        print(
            f"summary: {result}"
            if not isinstance(result, dict)
            else "summary: "
            + ", ".join(f"{k}={v}" for k, v in result.items() if k != "last_metrics")
        )
        return 0

    return errors.run_cli(prog, body, list(argv), args.verbose)


def console_main() -> None:
    from gqa_t5 import train as this  # the gin-registered module, also under `python -m`

    sys.exit(run_main(this.train, sys.argv[1:], "Train a GQA T5 model from gin files."))


if __name__ == "__main__":
    console_main()
