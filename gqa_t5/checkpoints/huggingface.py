"""HuggingFace T5 weights (`model.safetensors` or a sharded index; T5 1.0 and 1.1).

Safetensors headers are parsed here rather than through `safetensors.safe_open` so that
bfloat16 tensors load without torch and each tensor is read alone by offset.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

from gqa_t5.checkpoints import CheckpointError, Reader

_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F64": np.float64,
}
_ATTN = {"q": "query", "k": "key", "v": "value", "o": "out"}
# (stack, sublayer index) -> gqa-t5 module names.
_SUBLAYER = {
    ("encoder", "0"): ("attention", "pre_attention_layer_norm"),
    ("encoder", "1"): ("mlp", "pre_mlp_layer_norm"),
    ("decoder", "0"): ("self_attention", "pre_self_attention_layer_norm"),
    ("decoder", "1"): ("encoder_decoder_attention", "pre_cross_attention_layer_norm"),
    ("decoder", "2"): ("mlp", "pre_mlp_layer_norm"),
}
_BLOCK = re.compile(r"(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.(.+)")
# Copies of `shared.weight` that some exports also write.
_IGNORED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def hf_to_gqa_name(name: str, tied: bool) -> tuple[str | None, bool]:
    """(gqa-t5 name or None to skip, whether to transpose) for one HF tensor name."""
    if name == "shared.weight":
        return "token_embedder/embedding", False
    if name in _IGNORED or (name == "lm_head.weight" and tied):
        return None, False
    if name == "lm_head.weight":
        return "decoder/logits_dense/kernel", True
    if name in ("encoder.final_layer_norm.weight", "decoder.final_layer_norm.weight"):
        stack = name.split(".")[0]
        return f"{stack}/{stack}_norm/scale", False
    m = _BLOCK.fullmatch(name)
    if m is None:
        raise CheckpointError(f"unexpected HuggingFace T5 tensor {name}")
    stack, block, sub, rest = m.groups()
    if (stack, sub) not in _SUBLAYER:
        raise CheckpointError(f"unexpected HuggingFace T5 tensor {name}")
    module, norm = _SUBLAYER[(stack, sub)]
    if rest == "layer_norm.weight":
        return f"{stack}/layers_{block}/{norm}/scale", False
    if rest.endswith("relative_attention_bias.weight"):
        if block != "0":
            raise CheckpointError(f"{name}: per-layer relative position biases are not T5")
        return f"{stack}/relpos_bias/rel_embedding", True
    m2 = re.fullmatch(r"(?:SelfAttention|EncDecAttention)\.([qkvo])\.weight", rest)
    if m2 and module != "mlp":
        return f"{stack}/layers_{block}/{module}/{_ATTN[m2.group(1)]}/kernel", True
    m3 = re.fullmatch(r"DenseReluDense\.(wi_0|wi_1|wi|wo)\.weight", rest)
    if m3 and module == "mlp":
        return f"{stack}/layers_{block}/mlp/{m3.group(1)}/kernel", True
    raise CheckpointError(f"unexpected HuggingFace T5 tensor {name}")


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """(tensor name -> {dtype, shape, data_offsets}, data start) with size checks."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file (no header)")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise CheckpointError(f"{path}: truncated safetensors file (header cut off)")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from e
    header.pop("__metadata__", None)
    end = max((h["data_offsets"][1] for h in header.values()), default=0)
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path}: truncated safetensors file ({size} bytes, header needs {8 + n + end}); "
            f"download it again"
        )
    return header, 8 + n


def _loader(path: Path, info: dict, start: int, transpose: bool):
    dtype = info["dtype"]
    if dtype not in _DTYPES:
        raise CheckpointError(f"{path}: unsupported tensor dtype {dtype}")

    def load() -> np.ndarray:
        lo, hi = info["data_offsets"]
        count = (hi - lo) // np.dtype(_DTYPES[dtype]).itemsize
        a = np.fromfile(path, dtype=_DTYPES[dtype], count=count, offset=start + lo)
        a = a.reshape(info["shape"]).astype(np.float32)
        return np.ascontiguousarray(a.T) if transpose else a

    return load


class HuggingFaceReader(Reader):
    """Reads a HuggingFace T5 directory (config.json + safetensors)."""

    def __init__(self, path):
        super().__init__(path)
        root = self.path if self.path.is_dir() else self.path.parent
        config = _read_config(root)
        files = _weight_files(self.path)
        headers = {f: read_safetensors_header(f) for f in files}
        has_lm_head = any("lm_head.weight" in h for h, _ in headers.values())
        tied = _tied_and_scaled(config, has_lm_head)
        for f, (header, start) in headers.items():
            for name, info in sorted(header.items()):
                target, transpose = hf_to_gqa_name(name, tied)
                if target is None:
                    continue
                shape = tuple(info["shape"])[::-1] if transpose else tuple(info["shape"])
                self.add(target, shape, _loader(f, info, start, transpose))
                if name == "shared.weight" and not tied and not has_lm_head:
                    # transformers 5 saves T5.1.1 with lm_head tied to (and dropped in
                    # favour of) the embedding, unscaled: an untied copy is equivalent.
                    self.add(
                        "decoder/logits_dense/kernel", shape[::-1], _loader(f, info, start, True)
                    )
        self.hints = _hints(config, tied)


def _tied_and_scaled(config: dict, has_lm_head: bool) -> bool:
    """T5 1.0 logits: tied to the embedding and scaled by 1/sqrt(d_model)."""
    if "scale_decoder_outputs" in config:  # transformers >= 5 says it directly
        return bool(config["scale_decoder_outputs"])
    if "tie_word_embeddings" in config:
        return bool(config["tie_word_embeddings"])
    return not has_lm_head


def _read_config(root: Path) -> dict:
    p = root / "config.json"
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text())
    except ValueError as e:
        raise CheckpointError(f"{p}: not valid JSON ({e})") from e


def _weight_files(path: Path) -> list[Path]:
    if path.is_file() and path.name.endswith(".safetensors"):
        return [path]
    index = path if path.is_file() else path / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{index}: not a safetensors index ({e})") from e
        files = sorted({index.parent / f for f in weight_map.values()})
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise CheckpointError(f"{index}: shard files missing: {missing}")
        return files
    single = path / "model.safetensors"
    if not single.exists():
        raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json")
    return [single]


def _hints(config: dict, tied: bool) -> dict:
    """T5Config fields that only config.json knows."""
    hints: dict = {"logits_via_embedding": bool(tied)}
    proj = config.get("feed_forward_proj")
    if proj is not None:
        gated = proj.startswith("gated-")
        act = proj.removeprefix("gated-")
        # NOTE: HF maps "gated-gelu" to gelu_new (tanh), but plain "gelu" to exact gelu.
        table = {"gelu": "gelu" if gated else "gelu_exact", "gelu_new": "gelu"}
        act = {**table, "relu": "relu", "silu": "silu"}.get(act)
        if act is None:
            raise CheckpointError(f"feed_forward_proj={proj!r} is not supported")
        hints["mlp_activations"] = (act, "linear") if gated else (act,)
    if "relative_attention_max_distance" in config:
        hints["relative_attention_max_distance"] = int(config["relative_attention_max_distance"])
    if "layer_norm_epsilon" in config and float(config["layer_norm_epsilon"]) != 1e-6:
        raise CheckpointError("layer_norm_epsilon other than 1e-6 is not supported")
    return hints
