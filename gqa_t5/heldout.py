"""Held-out loss of a checkpoint: per-example NLL and target tokens on a validation split.

The loss is summed token NLL over summed target tokens (nats per token; no z-loss, no label
smoothing), over the first `max_examples` unpacked, unshuffled examples of the split, so
that every checkpoint of a grid is scored on the same examples (paired comparisons).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time

import jax
import numpy as np

from gqa_t5 import data
from gqa_t5.models import EncoderDecoderModel

_KEYS = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")


def heldout_loss(
    model: EncoderDecoderModel,
    checkpoint_path: str,
    dataset_cfg: data.DatasetConfig,
    max_examples: int,
) -> dict:
    """{'loss', 'examples', 'tokens', 'nll', 'targets'}: per-example NLL sums and token counts."""
    from gqa_t5 import eval as eval_lib

    if max_examples < 1:
        raise ValueError(f"heldout_examples={max_examples} must be >= 1")
    cfg = dataclasses.replace(dataset_cfg, pack=False, shuffle=False)
    lengths = data.model_feature_lengths(cfg)
    examples = _examples(cfg, lengths, max_examples)
    if not examples:
        raise ValueError(f"split {cfg.split!r} of {cfg.mixture_or_task_name!r} has no examples")
    tr, params, _ = eval_lib.load_for_inference(
        model, checkpoint_path, lengths["encoder"], lengths["decoder"]
    )
    score = jax.jit(model.score_batch)
    t0, nll = time.perf_counter(), []
    bs = cfg.batch_size
    for i in range(0, len(examples), bs):
        rows = examples[i : i + bs]
        batch = {k: np.stack([r[k] for r in rows]) for k in _KEYS}
        pad = bs - len(rows)
        batch = {k: np.pad(v, ((0, pad), (0, 0))) for k, v in batch.items()}
        with tr.partitioner.activation_context():
            ll = np.asarray(score(params, tr.partitioner.host_batch_to_global(batch)))
        nll.extend((-ll[: len(rows)]).tolist())
    tokens = [int((r["decoder_target_tokens"] > 0).sum()) for r in examples]
    loss = float(np.sum(nll) / np.sum(tokens))
    logging.info(
        "held-out loss %.4f on %d examples (%d tokens) in %.1fs",
        loss,
        len(examples),
        sum(tokens),
        time.perf_counter() - t0,
    )
    return {
        "loss": loss,
        "examples": len(examples),
        "tokens": int(sum(tokens)),
        "nll": nll,
        "targets": tokens,
    }


def _examples(cfg: data.DatasetConfig, lengths: dict[str, int], max_examples: int) -> list[dict]:
    """The first `max_examples` unpacked examples of the split, on either data backend."""
    if cfg.backend == "grain":
        from gqa_t5 import grain_data, grain_ops

        task_lengths = {"inputs": lengths["encoder"], "targets": lengths["decoder"]}
        exports = grain_data.open_exports(
            grain_data.data_dir(cfg.data_dir), cfg.mixture_or_task_name, cfg.split, task_lengths
        )
        examples = (
            grain_ops.unpacked_features(ex, task_lengths)
            for export, _ in exports
            for ex in grain_data.eval_examples(export, task_lengths, seed=cfg.seed or 0)
        )
        return [{k: f[k] for k in _KEYS} for f in itertools.islice(examples, max_examples)]
    ds = data.get_dataset(cfg, num_epochs=1, drop_remainder=False).unbatch().take(max_examples)
    return [{k: np.asarray(ex[k]) for k in _KEYS} for ex in ds.as_numpy_iterator()]
