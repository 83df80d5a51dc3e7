"""Greedy inference over a SeqIO task's split, written as JSON lines.

    python -m gqa_t5.infer --gin_file=models/t5_1_1/large.gin --gin_file=runs/infer.gin \
      --gin.CHECKPOINT_PATH="'/runs/ft/checkpoints/10000'" \
      --gin.MIXTURE_OR_TASK_NAME="'cnn_dailymail_v002'" --gin.INFER_OUTPUT_DIR="'/tmp/infer'"

One file per task, `INFER_OUTPUT_DIR/<task>-<step>.jsonl`, one line per example in the
split's order: {"index", "inputs", "prediction", "targets"(when present)}.
"""

from __future__ import annotations

import json
import logging
import pathlib
import sys
from typing import TYPE_CHECKING, Any

import jax

from gqa_t5 import data, utils
from gqa_t5.eval import check_inputs, load_for_inference, predict_features
from gqa_t5.models import EncoderDecoderModel
from gqa_t5.partitioning import Partitioner

if TYPE_CHECKING:
    import seqio


def _task_examples(task: seqio.Task, cfg: data.DatasetConfig) -> tuple[list, list]:
    """(raw examples, model features) of the split, in order, unpacked."""
    lengths = dict(cfg.task_feature_lengths)
    raw = task.get_dataset(
        lengths, split=cfg.split, use_cached=cfg.use_cached, shuffle=False, num_epochs=1
    )
    feats = data.feature_converter(pack=False)(raw, lengths)
    return list(raw.as_numpy_iterator()), list(feats.as_numpy_iterator())


def _text(task: seqio.Task, ex: dict, name: str) -> str | None:
    if f"{name}_pretokenized" in ex:
        v = ex[f"{name}_pretokenized"]
        return v.decode() if isinstance(v, bytes) else str(v)
    if name in ex and name in task.output_features:
        return task.output_features[name].vocabulary.decode(ex[name].tolist())
    return None


def infer(
    *,
    model: EncoderDecoderModel,
    dataset_cfg: data.DatasetConfig,
    checkpoint_path: str,
    output_dir: str,
    partitioner: Partitioner | None = None,
) -> dict[str, Any]:
    """Decode every example of the split; write `<task>-<step>.jsonl` per task."""
    if dataset_cfg.backend == "grain":
        from gqa_t5 import grain_eval

        return grain_eval.infer(
            model=model,
            dataset_cfg=dataset_cfg,
            checkpoint_path=checkpoint_path,
            output_dir=output_dir,
            partitioner=partitioner,
        )
    import seqio

    if not output_dir:
        raise ValueError("INFER_OUTPUT_DIR is not set: pass --gin.INFER_OUTPUT_DIR=\"'/path'\"")
    lengths = data.model_feature_lengths(dataset_cfg)
    root = check_inputs(model, dataset_cfg, checkpoint_path, output_dir)
    tasks = root.tasks if isinstance(root, seqio.Mixture) else [root]
    tr, params, step = load_for_inference(
        model, checkpoint_path, lengths["encoder"], lengths["decoder"], partitioner
    )
    out = pathlib.Path(output_dir).expanduser().absolute()
    written = {}
    for task in tasks:
        data.check_vocabularies(task)
        raw, feats = _task_examples(task, dataset_cfg)
        preds = predict_features(tr, params, feats, dataset_cfg.batch_size)
        vocab = task.output_features["targets"].vocabulary
        lines = [
            prediction_line(
                i, _text(task, ex, "inputs"), vocab.decode(p.tolist()), _text(task, ex, "targets")
            )
            for i, (ex, p) in enumerate(zip(raw, preds, strict=True))
        ]
        if (path := write_predictions(out, task.name, step, lines)) is not None:
            written[task.name] = path
    return {"checkpoint": str(checkpoint_path), "step": step, "outputs": written}


def prediction_line(index: int, inputs: str | None, prediction: str, targets: str | None) -> str:
    """One line of a predictions file (JSON; "targets" only where the example has them)."""
    rec = {"index": index, "inputs": inputs, "prediction": prediction}
    if targets is not None:
        rec["targets"] = targets
    return json.dumps(rec, ensure_ascii=False)


def write_predictions(
    out: pathlib.Path, task_name: str, step: int | None, lines: list[str]
) -> str | None:
    """Process 0 writes `<task>-<step or final>.jsonl` (one JSON line each); its path, else None."""
    if jax.process_index() != 0:
        return None
    path = out / f"{task_name}-{step if step is not None else 'final'}.jsonl"
    utils.write_text_atomic(path, "".join(line + "\n" for line in lines))
    logging.info("wrote %d predictions to %s", len(lines), path)
    return str(path)


def console_main() -> None:
    from gqa_t5 import infer as this  # the gin-registered module, also under `python -m`
    from gqa_t5.train import run_main

    sys.exit(run_main(this.infer, sys.argv[1:], "Decode a SeqIO split with a GQA T5 checkpoint."))


if __name__ == "__main__":
    console_main()
