"""Evaluate and infer on Grain exports (TF-free): greedy decoding, the tasks' metrics.

Predictions are detokenized with the export's vocabulary as seqio's
`SentencePieceVocabulary.decode` does; targets are the exported pretokenized strings; each
task's postprocess function and metric functions (recorded in its metadata.json, e.g.
`tasks.metrics:rouge`) are applied as `seqio.Evaluator` applies them. `evaluate` writes the
same `metrics.json` as the seqio path.
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import jax

from gqa_t5 import errors, grain_data, utils
from gqa_t5 import grain_format as fmt


def _lengths(cfg) -> dict[str, int] | None:
    lengths = dict(cfg.task_feature_lengths or {})
    return {k: int(lengths[k]) for k in ("inputs", "targets")} if lengths else None


def _exports(model, cfg, checkpoint_path: str, output_dir: str) -> list[grain_data.Export]:
    """The validated exports, after the checks every entry point makes before writing
    (exports, VOCAB_SIZE, CHECKPOINT_PATH, a writable output directory)."""
    from gqa_t5.eval import check_inputs

    return [e for e, _ in check_inputs(model, cfg, checkpoint_path, output_dir)]


def _text(ex: dict, key: str, vocab: fmt.Vocabulary) -> str | None:
    if f"{key}_pretokenized" in ex:
        return str(ex[f"{key}_pretokenized"])
    if key in ex:
        return vocab.decode(ex[key].tolist())
    return None


def _decode_all(load, predict_features, cfg, export: grain_data.Export, lengths):
    """(examples, model features, decoded predictions) of one export, in order."""
    from gqa_t5 import grain_ops

    exs = grain_data.eval_examples(export, lengths, seed=cfg.seed or 0)[: cfg.max_examples]
    lengths = lengths or grain_data._longest(export)
    feats = [grain_ops.unpacked_features(ex, lengths) for ex in exs]
    tr, params, step = load(lengths)
    preds = predict_features(tr, params, feats, cfg.batch_size)
    vocab = export.vocabulary
    return exs, [vocab.decode(p.tolist()) for p in preds], step


def evaluate(*, model, dataset_cfg, checkpoint_path: str, output_dir: str, partitioner=None):
    """Metrics of every exported task of `dataset_cfg` that has metric functions."""
    if not output_dir:
        raise ValueError("EVAL_OUTPUT_DIR is not set: pass --gin.EVAL_OUTPUT_DIR=\"'/path'\"")
    exports = _exports(model, dataset_cfg, checkpoint_path, output_dir)
    exports = [e for e in exports if e.meta.get("metric_fns")]
    if not exports:
        raise ValueError(
            f"{dataset_cfg.mixture_or_task_name!r} has no tasks with metrics on split "
            f"{dataset_cfg.split!r} (metadata.json lists no metric_fns)"
        )
    out = pathlib.Path(output_dir).expanduser().absolute()
    with errors.removed_unless_kept(out):
        return _evaluate(model, dataset_cfg, exports, checkpoint_path, out, partitioner)


def _evaluate(model, dataset_cfg, exports, checkpoint_path, out, partitioner) -> dict[str, Any]:
    from gqa_t5.eval import load_for_inference, predict_features, write_metrics

    out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, dict[str, float]] = {}
    step = None
    for export in exports:

        def load(lengths):
            return load_for_inference(
                model, checkpoint_path, lengths["inputs"], lengths["targets"], partitioner
            )

        lengths = _lengths(dataset_cfg)
        exs, preds, step = _decode_all(load, predict_features, dataset_cfg, export, lengths)
        post = fmt.resolve_callable(export.meta.get("postprocess_fn"))
        vocab = export.vocabulary
        targets = [_text(ex, "targets", vocab) for ex in exs]
        if post is not None:
            targets = [
                post(t, example=ex, is_target=True) for t, ex in zip(targets, exs, strict=True)
            ]
            preds = [post(p, example=ex, is_target=False) for p, ex in zip(preds, exs, strict=True)]
        task_metrics: dict[str, float] = {}
        for name in export.meta["metric_fns"]:
            task_metrics.update(
                {k: float(v) for k, v in fmt.resolve_callable(name)(targets, preds).items()}
            )
        metrics[export.name] = task_metrics
        logging.info(
            "eval %s: %s", export.name, ", ".join(f"{k} {v:.4f}" for k, v in task_metrics.items())
        )
        if jax.process_index() == 0:
            utils.append_jsonl(out / f"{export.name}-metrics.jsonl", {"step": step, **task_metrics})
            # seqio's inference log: what the metrics scored, one line per example.
            lines = [
                {"index": i, "target": t, "prediction": p}
                for i, (t, p) in enumerate(zip(targets, preds, strict=True))
            ]
            utils.write_text_atomic(
                out / f"{export.name}-{step or 0:06}.jsonl",
                "".join(json.dumps(line) + "\n" for line in lines),
            )
    return write_metrics(out, checkpoint_path, step, dataset_cfg.split, metrics)


def infer(*, model, dataset_cfg, checkpoint_path: str, output_dir: str, partitioner=None):
    """Decode every example of each exported task; write `<task>-<step>.jsonl`."""
    from gqa_t5.eval import load_for_inference, predict_features
    from gqa_t5.infer import prediction_line, write_predictions

    if not output_dir:
        raise ValueError("INFER_OUTPUT_DIR is not set: pass --gin.INFER_OUTPUT_DIR=\"'/path'\"")
    out = pathlib.Path(output_dir).expanduser().absolute()
    lengths = _lengths(dataset_cfg)
    if lengths is None:
        raise ValueError("TASK_FEATURE_LENGTHS is required: decoding runs to the 'targets' length")
    written: dict[str, str] = {}
    step: Any = None
    for export in _exports(model, dataset_cfg, checkpoint_path, output_dir):

        def load(lengths):
            return load_for_inference(
                model, checkpoint_path, lengths["inputs"], lengths["targets"], partitioner
            )

        exs, preds, step = _decode_all(load, predict_features, dataset_cfg, export, lengths)
        vocab = export.vocabulary
        lines = [
            prediction_line(i, _text(ex, "inputs", vocab), p, _text(ex, "targets", vocab))
            for i, (ex, p) in enumerate(zip(exs, preds, strict=True))
        ]
        if (path := write_predictions(out, export.name, step, lines)) is not None:
            written[export.name] = path
    return {"checkpoint": str(checkpoint_path), "step": step, "outputs": written}
