"""Mesh-TensorFlow T5 checkpoints (`model.ckpt-N.index` + data shards).

Names map as t5x's `checkpoint_importer` maps them; Mesh-TF kernels are already
[in, out] with heads as contiguous column blocks, and q carries no 1/sqrt(d) factor
(folded into its initialiser), so values pass through unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

from gqa_t5.checkpoints import CheckpointError, Reader

_STACK = {"encoder": "encoder", "decoder": "decoder", "transformer": "decoder"}
_ATTN = {"q": "query", "k": "key", "v": "value", "o": "out"}
_NORMS = {
    "encoder": ["pre_attention_layer_norm", "pre_mlp_layer_norm"],
    "decoder": [
        "pre_self_attention_layer_norm",
        "pre_cross_attention_layer_norm",
        "pre_mlp_layer_norm",
    ],
}
_S = r"(encoder|decoder|transformer)"
_RULES = [
    (re.compile(r"shared/embedding"), lambda m: "token_embedder/embedding"),
    (
        re.compile(_S + r"/block_(\d+)/layer_000/SelfAttention/relative_attention_bias"),
        lambda m: f"{_STACK[m[1]]}/relpos_bias/rel_embedding" if int(m[2]) == 0 else "!",
    ),
    (
        re.compile(_S + r"/block_(\d+)/layer_\d+/(SelfAttention|EncDecAttention)/([qkvo])"),
        lambda m: (
            f"{_STACK[m[1]]}/layers_{int(m[2])}/{_attn_module(m[1], m[3])}/{_ATTN[m[4]]}/kernel"
        ),
    ),
    (
        re.compile(_S + r"/block_(\d+)/layer_\d+/DenseReluDense/(wi|wo)(?:_(\d+))?/kernel"),
        lambda m: (
            f"{_STACK[m[1]]}/layers_{int(m[2])}/mlp/{m[3]}{'_' + m[4] if m[4] else ''}/kernel"
        ),
    ),
    (
        re.compile(_S + r"/block_(\d+)/layer_(\d+)/(?:layer|rms)_norm/scale"),
        lambda m: f"{_STACK[m[1]]}/layers_{int(m[2])}/{_NORMS[_STACK[m[1]]][int(m[3])]}/scale",
    ),
    (
        re.compile(_S + r"/(?:final_layer|rms)_norm/scale"),
        lambda m: f"{_STACK[m[1]]}/{_STACK[m[1]]}_norm/scale",
    ),
    (re.compile(r"(?:decoder|transformer)/logits/kernel"), lambda m: "decoder/logits_dense/kernel"),
]
_SLOT = re.compile(r".*(_slot_vc|_slot_vr|_slot_v|_slot_m)$")
_IGNORED = re.compile(r"global_step|.*/(?:Adafactor|adafactor).*")


def _attn_module(stack: str, kind: str) -> str:
    if stack == "encoder":
        return "attention"
    return "self_attention" if kind == "SelfAttention" else "encoder_decoder_attention"


def mesh_tf_to_gqa_name(name: str) -> str | None:
    """gqa-t5 name for one Mesh-TF variable, or None for optimizer slots and the step."""
    if _SLOT.fullmatch(name) or _IGNORED.fullmatch(name):
        return None
    for pattern, fn in _RULES:
        m = pattern.fullmatch(name)
        if m:
            target = fn(m)
            if target == "!":
                raise CheckpointError(f"{name}: per-layer relative position biases are not T5")
            return target
    raise CheckpointError(f"unexpected Mesh-TF T5 variable {name}")


def _checkpoint_prefix(path: Path) -> str:
    """'dir/model.ckpt-N' from a prefix, an '.index' file or a directory (latest step)."""
    if path.name.endswith(".index"):
        return str(path)[: -len(".index")]
    if Path(str(path) + ".index").exists():
        return str(path)
    indexes = sorted(path.glob("*.index")) if path.is_dir() else []
    if not indexes:
        raise CheckpointError(f"{path}: no Mesh-TF '*.index' file")

    def step(p: Path) -> int:
        m = re.search(r"-(\d+)\.index$", p.name)
        return int(m.group(1)) if m else -1

    return str(max(indexes, key=step))[: -len(".index")]


class MeshTFReader(Reader):
    """Reads variables with TensorFlow's checkpoint reader, one at a time."""

    def __init__(self, path):
        super().__init__(path)
        import tensorflow as tf  # heavy: only when this format is read

        prefix = _checkpoint_prefix(self.path)
        try:
            reader = tf.train.load_checkpoint(prefix)
            shapes = reader.get_variable_to_shape_map()
        except Exception as e:
            raise CheckpointError(
                f"{prefix}: could not open the Mesh-TF checkpoint ({type(e).__name__}: {e}); "
                f"the index or data shards are missing or truncated"
            ) from e
        for name, shape in sorted(shapes.items()):
            target = mesh_tf_to_gqa_name(name)
            if target is not None:
                self.add(target, tuple(shape), lambda n=name: reader.get_tensor(n))
        self.hints = {"logits_via_embedding": "decoder/logits_dense/kernel" not in self.shapes()}
