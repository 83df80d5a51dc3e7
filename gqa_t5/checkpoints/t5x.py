"""t5x checkpoints (legacy msgpack + zarr, and Orbax) and gqa-t5's own Orbax checkpoints.

Legacy layout: a msgpack `checkpoint` file holding `{"version": v, "optimizer":
{"target": params, "state": ...}}` (version 0: the optimizer dict itself) in which each
large array is replaced by a TensorStore spec pointing at a zarr directory such as
`target.encoder.layers_0.attention.query.kernel`; small arrays are inline.
"""

from __future__ import annotations

import numpy as np
import tensorstore as ts
from flax import serialization

from gqa_t5.checkpoints import CheckpointError, Reader, orbax_params


def _is_ts_spec(x) -> bool:
    return isinstance(x, dict) and "driver" in x and ("kvstore" in x or "path" in x)


def _walk(tree, prefix=""):
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and not _is_ts_spec(v):
            yield from _walk(v, name + "/")
        else:
            yield name, v


def _absolute_spec(spec: dict, root: str) -> dict:
    """The spec with its (checkpoint-relative) path resolved under `root`."""
    spec = {**spec}
    kv = dict(spec.get("kvstore", {}))
    if "path" in kv:
        kv["path"] = f"{root}/{kv['path']}"
        kv["driver"] = "file"
        kv.pop("bucket", None)
        spec["kvstore"] = kv
    elif "path" in spec:  # tensorstore < 0.1.14 specs
        spec["kvstore"] = {"driver": "file", "path": f"{root}/{spec.pop('path')}"}
    spec.pop("dtype", None)  # read the stored dtype; bfloat16 may be stored as uint16
    return spec


def _ts_loader(spec: dict, name: str):
    def load() -> np.ndarray:
        store = ts.open(spec, open=True).result()
        a = store.read().result()
        if a.dtype == np.uint16:  # t5x v2 stores bfloat16 bytes as uint16
            import ml_dtypes

            a = a.view(ml_dtypes.bfloat16)
        return a

    return load


WHOLE_TREE_BYTES = 2 << 30  # float32 bytes under which OrbaxTreeReader restores at once


class T5xLegacyReader(Reader):
    """Reads a t5x checkpoint directory with a msgpack `checkpoint` file."""

    def __init__(self, path):
        super().__init__(path)
        ckpt_file = self.path if self.path.is_file() else self.path / "checkpoint"
        if not ckpt_file.exists() and (self.path / "state" / "checkpoint").exists():
            ckpt_file = self.path / "state" / "checkpoint"  # t5x's checkpoint_N/state/
        root = str(ckpt_file.parent.absolute())
        try:
            contents = serialization.msgpack_restore(ckpt_file.read_bytes())
        except Exception as e:
            raise CheckpointError(
                f"{ckpt_file}: not a readable t5x msgpack checkpoint ({type(e).__name__}: "
                f"{e}); the file is truncated or not a t5x checkpoint"
            ) from e
        optimizer = contents.get("optimizer", contents) if contents.get("version") else contents
        if not isinstance(optimizer, dict) or "target" not in optimizer:
            raise CheckpointError(
                f"{ckpt_file}: no 'target' parameters in the t5x checkpoint (keys "
                f"{sorted(contents)})"
            )
        for name, leaf in _walk(optimizer["target"]):
            if _is_ts_spec(leaf):
                spec = _absolute_spec(leaf, root)
                shape = tuple(leaf.get("metadata", {}).get("shape", ()))
                if not shape:
                    shape = tuple(ts.open(spec, open=True).result().shape)
                self.add(name, shape, _ts_loader(spec, name))
            else:
                arr = np.asarray(leaf)
                self.add(name, arr.shape, lambda a=arr: a)
        self.hints = {"logits_via_embedding": "decoder/logits_dense/kernel" not in self.shapes()}
        step = optimizer.get("state", {}).get("step") if isinstance(optimizer, dict) else None
        if step is not None and not _is_ts_spec(step):
            self.hints["step"] = int(np.asarray(step))


class OrbaxTreeReader(Reader):
    """Reads the params of an Orbax PyTree checkpoint: gqa-t5's ('params') or t5x's ('target')."""

    def __init__(self, path):
        super().__init__(path)
        if (self.path / "state" / "_METADATA").exists():  # t5x's checkpoint_N/ step directory
            self.path = self.path / "state"
        try:
            top = orbax_params.tree_keys(self.path)
        except Exception as e:
            raise CheckpointError(f"{self.path}: unreadable Orbax metadata ({e})") from e
        root = next(
            (
                r
                for r in (("params",), ("target",), ("optimizer", "target"), ("state", "target"))
                if r[0] in top
            ),
            None,
        )
        if root is None:
            raise CheckpointError(
                f"{self.path}: Orbax tree has no 'params' or 't5x 'target' (keys {top})"
            )
        try:
            shapes = orbax_params.tree_shapes(self.path, root)
        except ValueError as e:
            raise CheckpointError(str(e)) from e
        # One Orbax restore costs ~0.1 s of fixed overhead: a checkpoint that fits in memory
        # comfortably is read in one restore on the first read (small models: 190 leaves in
        # ~1 s, not ~20 s); larger ones (T5-XXL) leaf by leaf, never all in memory.
        whole = sum(4 * int(np.prod(s)) for s in shapes.values()) <= WHOLE_TREE_BYTES
        self._whole: dict[str, np.ndarray] | None = None
        for name, shape in sorted(shapes.items()):
            keys = (*root, *name.split("/"))
            if whole:
                self.add(name, shape, lambda n=name, r=root: self._from_whole(r, n))
            else:
                self.add(name, shape, lambda k=keys: orbax_params.restore_leaf(self.path, k))
        self.hints = {"logits_via_embedding": "decoder/logits_dense/kernel" not in shapes}
        if root == ("target",) and "state" in top:
            try:
                self.hints["step"] = int(orbax_params.restore_leaf(self.path, ("state", "step")))
            except Exception:  # no step saved: the caller falls back to step 0
                pass

    def _from_whole(self, root: tuple[str, ...], name: str) -> np.ndarray:
        """`name` from one restore of the whole tree under `root` (each leaf handed out once)."""
        if self._whole is None:
            self._whole = orbax_params.restore_subtree(self.path, root)
        if name in self._whole:
            return self._whole.pop(name)
        return orbax_params.restore_leaf(self.path, (*root, *name.split("/")))
