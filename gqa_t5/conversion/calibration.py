"""Calibration statistics: the covariance of each attention block's query inputs.

Batches stream through the MHA model once (teacher forcing); the normalised hidden states
that feed each block's queries are captured and reduced on the fly to a [D, D] second
moment over real (non-padding) positions, so memory does not grow with the number of
examples. Only the query side is needed: a common covariance on the key/value side cancels
from the weighted pooling's minimiser (see `pooling`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# RMSNorm whose output is a block's query input -> (attention module, padding from).
_NORMS = {
    "pre_self_attention_layer_norm": ("self_attention", "decoder_target_tokens"),
    "pre_cross_attention_layer_norm": ("encoder_decoder_attention", "decoder_target_tokens"),
    "pre_attention_layer_norm": ("attention", "encoder_input_tokens"),
}


def _capture(model: Any, params: Any, batch: Mapping[str, Any]) -> dict[str, jax.Array]:
    """{'decoder/layers_0/self_attention': second-moment sum [D, D], ...} and counts."""
    _, state = model.module.apply(
        {"params": params},
        batch["encoder_input_tokens"],
        batch["decoder_input_tokens"],
        batch["decoder_target_tokens"],
        enable_dropout=False,
        capture_intermediates=lambda mdl, _: mdl.name in _NORMS,
        mutable=["intermediates"],
    )
    out = {}
    for stack, layer_tree in state["intermediates"].items():
        for layer, mods in layer_tree.items():
            for norm, captured in mods.items():
                module, pad_from = _NORMS[norm]
                x_BTD = jnp.asarray(captured["__call__"][0], jnp.float32)
                w_BT = (batch[pad_from] > 0).astype(jnp.float32)
                out[f"{stack}/{layer}/{module}"] = (
                    jnp.einsum("bt,btd,bte->de", w_BT, x_BTD, x_BTD),
                    jnp.sum(w_BT),
                )
    return out


def query_covariances(
    model: Any,
    params: Any,
    batches: Iterable[Mapping[str, Any]],
    max_examples: int,
    log=print,
) -> tuple[dict[str, np.ndarray], int]:
    """E[x x^T] of every block's query inputs over up to `max_examples` examples."""
    step = jax.jit(lambda p, b: _capture(model, p, b))
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, float] = {}
    seen = 0
    for batch in batches:
        take = min(len(batch["encoder_input_tokens"]), max_examples - seen)
        if take <= 0:
            break
        batch = {k: np.asarray(v)[:take] for k, v in batch.items()}
        for name, (s, n) in step(params, batch).items():
            sums[name] = sums.get(name, 0.0) + np.asarray(s, np.float64)
            counts[name] = counts.get(name, 0.0) + float(n)
        seen += take
        log(f"  calibration: {seen}/{max_examples} examples")
    if not seen:
        raise ValueError("the calibration data gave no examples; check the task and its split")
    return {n: sums[n] / max(counts[n], 1.0) for n in sums}, seen


def task_batches(
    task: str, module: str | None, lengths: Mapping[str, int], batch_size: int = 32
) -> Iterable[dict[str, np.ndarray]]:
    """Unpacked train-split batches of a SeqIO task, in order (seqio imported here only)."""
    from gqa_t5 import data

    cfg = data.DatasetConfig(
        mixture_or_task_name=task,
        task_feature_lengths=dict(lengths),
        split="train",
        batch_size=batch_size,
        shuffle=False,
        seed=0,
        pack=False,
        module=module,
    )
    return data.numpy_batches(data.get_dataset(cfg, num_epochs=1, drop_remainder=False))


def calibrate(
    cfg: Any, flat: Mapping[str, np.ndarray], task: str, examples: int, module: str | None, log
) -> dict[str, np.ndarray]:
    """Query-input covariances of the MHA model (config, flat params) on a task's examples."""
    import tasks as builtin_tasks
    from gqa_t5.checkpoints import orbax_params
    from gqa_t5.models import EncoderDecoderModel

    known = {**builtin_tasks.FEATURE_LENGTHS, **builtin_tasks.builtin.FEATURE_LENGTHS}
    lengths = known.get(task, {"inputs": 512, "targets": 114})
    log(f"calibration: {examples} examples of {task} at {lengths}")
    batches = task_batches(task, module, lengths)
    params = orbax_params.unflatten(dict(flat))
    sigmas, _ = query_covariances(EncoderDecoderModel(cfg), params, batches, examples, log)
    return sigmas
