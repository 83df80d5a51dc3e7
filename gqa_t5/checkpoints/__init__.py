"""Checkpoint readers (t5x, Mesh-TF, HuggingFace, gqa-t5 Orbax) and the Orbax writer.

Every reader maps the source's names to gqa-t5's parameter names ('encoder/layers_0/
attention/key/kernel', the flax params of `gqa_t5.network.Transformer`) and loads one
tensor at a time, as float32 NumPy in gqa-t5's layout, so conversion never holds more
than a tensor or two in memory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("t5x", "t5x_orbax", "mesh_tf", "huggingface", "gqa_t5")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit gqa-t5 (names the fix)."""


class Reader:
    """Lazily readable tensors keyed by gqa-t5 parameter name."""

    format: str = ""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.hints: dict[str, Any] = {}  # config facts the tensors do not show
        self._entries: dict[str, tuple[tuple[int, ...], Callable[[], np.ndarray]]] = {}

    def add(self, name: str, shape: tuple[int, ...], load: Callable[[], np.ndarray]) -> None:
        if name in self._entries:
            raise CheckpointError(f"{self.path}: two source tensors map to {name}")
        self._entries[name] = (tuple(int(d) for d in shape), load)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: s for k, (s, _) in self._entries.items()}

    def read(self, name: str) -> np.ndarray:
        """One tensor as float32, checked for shape and finiteness."""
        shape, load = self._entries[name]
        try:
            array = np.asarray(load())
        except CheckpointError:
            raise
        except Exception as e:  # truncated or corrupt data surfaces here
            raise CheckpointError(
                f"{self.path}: could not read tensor {name} ({type(e).__name__}: {e}); the "
                f"checkpoint looks truncated or corrupt: copy it again"
            ) from e
        array = array.astype(np.float32, copy=False)
        if array.shape != shape:
            raise CheckpointError(
                f"{self.path}: tensor {name} has {array.shape} values, header says {shape}"
            )
        if not np.all(np.isfinite(array)):
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise CheckpointError(
                f"{self.path}: tensor {name} has {bad} NaN/Inf values; the source checkpoint "
                f"is corrupt or diverged: use another step"
            )
        return array

    def iter_tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        for name in sorted(self._entries):
            yield name, self.read(name)


def detect_format(path: str | os.PathLike) -> str:
    """One of FORMATS, from the files at `path`; CheckpointError if none fits."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"input {p} does not exist")
    if p.is_file():
        if p.name.endswith(".safetensors") or p.name.endswith(".safetensors.index.json"):
            return "huggingface"
        if p.name.endswith(".index") or Path(str(p) + ".index").exists():
            return "mesh_tf"
        if p.name == "checkpoint":
            return "t5x"
        raise CheckpointError(_unknown(p))
    if Path(str(p) + ".index").exists():
        return "mesh_tf"
    names = {c.name for c in p.iterdir()}
    if "model.safetensors" in names or "model.safetensors.index.json" in names:
        return "huggingface"
    if any(n.endswith(".index") for n in names):
        return "mesh_tf"
    if "_METADATA" in names:
        from gqa_t5.checkpoints import orbax_params

        top = orbax_params.tree_keys(p)
        return "gqa_t5" if "params" in top else "t5x_orbax"
    if "checkpoint" in names:
        return "t5x"
    if "state" in names and (p / "state").is_dir():  # a t5x step directory, checkpoint_N/
        inner = {c.name for c in (p / "state").iterdir()}
        if "_METADATA" in inner:
            return "t5x_orbax"
        if "checkpoint" in inner:
            return "t5x"
    steps = sorted(
        (int(n.rsplit("_", 1)[1]) for n in names if re.fullmatch(r"checkpoint_\d+", n)),
    )
    if steps:
        raise CheckpointError(
            f"{p} is a t5x run directory (steps {steps[:3]}{' ...' if len(steps) > 3 else ''}); "
            f"pass one step directory, e.g. --input {p / f'checkpoint_{steps[-1]}'}"
        )
    raise CheckpointError(_unknown(p))


def _unknown(p: Path) -> str:
    return (
        f"{p}: not a recognised checkpoint. Expected a t5x step directory 'checkpoint_N' "
        f"(msgpack 'checkpoint' + zarr arrays, or '_CHECKPOINT_METADATA' + Orbax 'state/'), "
        f"a Mesh-TF checkpoint "
        f"('model.ckpt-N.index' + data shards), a HuggingFace T5 directory "
        f"('model.safetensors' or 'model.safetensors.index.json' + 'config.json'), or a "
        f"gqa-t5 Orbax checkpoint; or pass --format explicitly"
    )


def open_checkpoint(path: str | os.PathLike, fmt: str = "auto") -> Reader:
    """A Reader for the checkpoint at `path` (format detected unless given)."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "huggingface":
        from gqa_t5.checkpoints.huggingface import HuggingFaceReader as cls
    elif fmt == "mesh_tf":
        from gqa_t5.checkpoints.mesh_tf import MeshTFReader as cls
    elif fmt == "t5x":
        from gqa_t5.checkpoints.t5x import T5xLegacyReader as cls
    elif fmt in ("t5x_orbax", "gqa_t5"):
        from gqa_t5.checkpoints.t5x import OrbaxTreeReader as cls
    else:
        raise CheckpointError(f"unknown format {fmt!r}; use auto or one of {FORMATS}")
    if not Path(path).exists():
        raise CheckpointError(f"input {path} does not exist")
    reader = cls(path)
    reader.format = fmt
    return reader


def layer_index_map(names: Mapping[str, Any]) -> dict[str, int]:
    """Number of layers per stack ('encoder', 'decoder') among gqa-t5 names."""
    counts: dict[str, int] = {}
    for n in names:
        parts = n.split("/")
        if len(parts) > 1 and parts[1].startswith("layers_"):
            counts[parts[0]] = max(counts.get(parts[0], 0), int(parts[1][7:]) + 1)
    return counts
