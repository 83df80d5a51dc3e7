"""Evaluate a checkpoint on a SeqIO task or mixture: greedy decoding, the task's metrics.

    python -m gqa_t5.eval --gin_file=models/t5_1_1/large.gin --gin_file=runs/eval.gin \
      --gin.CHECKPOINT_PATH="'/runs/ft/checkpoints/10000'" \
      --gin.MIXTURE_OR_TASK_NAME="'cnn_dailymail_v002'" --gin.EVAL_OUTPUT_DIR="'/tmp/eval'"

Writes `EVAL_OUTPUT_DIR/metrics.json` ({task: {metric: value}, plus step and checkpoint}),
seqio's per-task `<task>-metrics.jsonl` and TensorBoard summaries.
"""

from __future__ import annotations

import logging
import pathlib
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import numpy as np
import optax

from gqa_t5 import checkpointing, data, errors, trainer, utils
from gqa_t5.models import EncoderDecoderModel
from gqa_t5.partitioning import Partitioner


def load_for_inference(
    model: EncoderDecoderModel,
    checkpoint_path: str | None,
    input_len: int,
    target_len: int,
    partitioner: Partitioner | None = None,
) -> tuple[trainer.Trainer, Any, int | None]:
    """(trainer, params on the mesh, step) for a converted or runner checkpoint."""
    if not checkpoint_path:
        raise ValueError("CHECKPOINT_PATH is not set: pass --gin.CHECKPOINT_PATH=\"'/path'\"")
    checkpointing.check_exists(checkpoint_path, "CHECKPOINT_PATH")
    partitioner = partitioner or Partitioner(num_kv_heads=model.config.num_kv_heads)
    tr = trainer.Trainer(model, optax.identity(), lambda s: 0.0, partitioner, input_len, target_len)
    params = checkpointing.load_initial_params(
        checkpoint_path, tr.abstract_params, model.config, "CHECKPOINT_PATH"
    )
    return tr, params, checkpointing.step_of(checkpoint_path)


def check_inputs(model: EncoderDecoderModel, cfg: data.DatasetConfig, checkpoint_path, output_dir):
    """Validate the task (or Grain exports), vocabulary, checkpoint path and output directory
    before anything is written; return the task (or the exports, as `open_exports`)."""
    from gqa_t5.train import check_task_and_vocab

    task = check_task_and_vocab(model, cfg)
    if not checkpoint_path:
        raise ValueError("CHECKPOINT_PATH is not set: pass --gin.CHECKPOINT_PATH=\"'/path'\"")
    checkpointing.check_exists(checkpoint_path, "CHECKPOINT_PATH")
    errors.check_writable_parent(pathlib.Path(output_dir).expanduser().absolute(), "output dir")
    return task


def _padded_batches(
    features: Iterable[dict[str, np.ndarray]], batch_size: int
) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """Fixed-size batches (the last padded with zero rows) and the count of real rows."""
    buf: list = []
    for ex in features:
        buf.append(ex)
        if len(buf) == batch_size:
            yield _stack(buf, batch_size), batch_size
            buf = []
    if buf:
        yield _stack(buf, batch_size), len(buf)


def _stack(rows: list, batch_size: int) -> dict[str, np.ndarray]:
    out = {}
    for k in rows[0]:
        arr = np.stack([np.asarray(r[k], np.int32) for r in rows])
        pad = np.zeros((batch_size - len(rows),) + arr.shape[1:], np.int32)
        out[k] = np.concatenate([arr, pad])
    return out


def _local_slice(tr: trainer.Trainer, batch: dict) -> dict:
    """This host's rows of a global batch (every host reads the whole eval set)."""
    n, i = jax.process_count(), jax.process_index()
    rows = next(iter(batch.values())).shape[0] // n
    return tr.partitioner.host_batch_to_global(
        {k: v[i * rows : (i + 1) * rows] for k, v in batch.items()}
    )


def write_metrics(
    out: pathlib.Path, checkpoint_path: Any, step: int | None, split: str, metrics: dict
) -> dict[str, Any]:
    """The eval result; process 0 writes it to `metrics.json` (and `metrics-<step>.json`)."""
    result = {"checkpoint": str(checkpoint_path), "step": step, "split": split, "metrics": metrics}
    if jax.process_index() == 0:
        utils.write_json_atomic(out / "metrics.json", result)
        if step is not None:
            utils.write_json_atomic(out / f"metrics-{step}.json", result)
    return result


def predict_features(
    tr: trainer.Trainer, params, features: Iterable[dict[str, np.ndarray]], batch_size: int
) -> list[np.ndarray]:
    """Greedy predictions [L] for each example's model features, in order."""
    keys = ("encoder_input_tokens", "decoder_input_tokens")
    out: list[np.ndarray] = []
    t0, n = time.perf_counter(), 0
    for batch, real in _padded_batches(({k: f[k] for k in keys} for f in features), batch_size):
        tokens = tr.predict(params, _local_slice(tr, batch))
        out.extend(tokens[:real])
        n += real
    logging.info("decoded %d examples in %.1fs", n, time.perf_counter() - t0)
    return out


def _score_features(tr, params, features, batch_size: int) -> list[float]:
    keys = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")
    scores: list[float] = []
    score = jax.jit(tr.model.score_batch)
    for batch, real in _padded_batches(({k: f[k] for k in keys} for f in features), batch_size):
        with tr.partitioner.activation_context():
            s = score(params, _local_slice(tr, batch))
        scores.extend(np.asarray(s)[:real].tolist())
    return scores


def _numeric(metrics: dict) -> dict[str, float]:
    """Plain floats from seqio's metric values (numbers or `seqio.metrics.Scalar`)."""
    out = {}
    for k, v in metrics.items():
        v = getattr(v, "value", v)
        if isinstance(v, int | float | np.number):
            out[k] = float(v)
    return out


def evaluate(
    *,
    model: EncoderDecoderModel,
    dataset_cfg: data.DatasetConfig,
    checkpoint_path: str,
    output_dir: str,
    partitioner: Partitioner | None = None,
) -> dict[str, Any]:
    """Run seqio.Evaluator over `dataset_cfg`'s split; write and return metrics by task.

    On DATA_BACKEND = 'grain' the exported split is decoded and scored without TensorFlow
    (`gqa_t5.grain_eval`), writing the same metrics.json.
    """
    if dataset_cfg.backend == "grain":
        from gqa_t5 import grain_eval

        return grain_eval.evaluate(
            model=model,
            dataset_cfg=dataset_cfg,
            checkpoint_path=checkpoint_path,
            output_dir=output_dir,
            partitioner=partitioner,
        )
    if not output_dir:
        raise ValueError("EVAL_OUTPUT_DIR is not set: pass --gin.EVAL_OUTPUT_DIR=\"'/path'\"")
    task = check_inputs(model, dataset_cfg, checkpoint_path, output_dir)
    out = pathlib.Path(output_dir).expanduser().absolute()
    with errors.removed_unless_kept(out):
        return _evaluate(model, dataset_cfg, task, checkpoint_path, out, partitioner)


def _evaluate(model, dataset_cfg, task, checkpoint_path, out, partitioner) -> dict[str, Any]:
    import seqio

    evaluator = seqio.Evaluator(
        mixture_or_task_name=task.name,
        feature_converter=data.feature_converter(pack=False),
        eval_split=dataset_cfg.split,
        use_cached=dataset_cfg.use_cached,
        seed=dataset_cfg.seed,
        sequence_length=dataset_cfg.task_feature_lengths,
        logger_cls=[seqio.JSONLogger, seqio.TensorBoardLoggerV1]
        if jax.process_index() == 0
        else [],
        log_dir=str(out),
    )
    if not evaluator.eval_tasks:
        raise ValueError(f"{task.name!r} has no tasks with metrics on split {dataset_cfg.split!r}")
    shapes = evaluator.model_feature_shapes
    tr, params, step = load_for_inference(
        model,
        checkpoint_path,
        shapes["encoder_input_tokens"][0],
        shapes["decoder_input_tokens"][0],
        partitioner,
    )
    out.mkdir(parents=True, exist_ok=True)
    bs = dataset_cfg.batch_size

    def predict_fn(ds):
        items = list(ds.as_numpy_iterator())
        preds = predict_features(tr, params, (f for _, f in items), bs)
        return [(int(i), p.tolist()) for (i, _), p in zip(items, preds, strict=True)]

    def score_fn(ds):
        items = list(ds.as_numpy_iterator())
        scores = _score_features(tr, params, (f for _, f in items), bs)
        return [(int(i), s) for (i, _), s in zip(items, scores, strict=True)]

    future, _ = evaluator.evaluate(
        compute_metrics=True, step=step or 0, predict_fn=predict_fn, score_fn=score_fn
    )
    metrics = {name: _numeric(m) for name, m in future.result().items()}
    result = write_metrics(out, checkpoint_path, step, dataset_cfg.split, metrics)
    for name, m in metrics.items():
        logging.info("eval %s: %s", name, ", ".join(f"{k} {v:.4f}" for k, v in m.items()))
    return result


def console_main() -> None:
    from gqa_t5 import eval as this  # the gin-registered module, also under `python -m`
    from gqa_t5.train import run_main

    sys.exit(run_main(this.evaluate, sys.argv[1:], "Evaluate a GQA T5 checkpoint from gin."))


if __name__ == "__main__":
    console_main()
