"""Orbax parameter checkpoints: the converter's output and the runner's initial checkpoint.

The checkpoint is an Orbax PyTree checkpoint whose tree is `{"params": <flax params>}`,
float32 NumPy leaves. `save_params` accepts ordinary arrays or `LazyArray` leaves; lazy
leaves are loaded and written one at a time, so a checkpoint larger than RAM can be
written tensor by tensor (Orbax's stock handlers hold every leaf in memory at once).
Lazy leaves are recorded as `np.ndarray`, so stock Orbax restores them unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint._src.serialization import ocdbt_utils, type_handlers
from orbax.checkpoint._src.serialization import tensorstore_utils as ts_utils
from orbax.checkpoint._src.serialization import type_handler_registry as handler_registry

RECORD_NAME = "conversion.json"


class LazyArray:
    """A tensor known by shape and dtype whose values are produced on demand by `load`."""

    def __init__(self, shape: tuple[int, ...], dtype: Any, load: Callable[[], np.ndarray]):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self._load = load

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def load(self) -> np.ndarray:
        value = np.asarray(self._load(), dtype=self.dtype)
        if value.shape != self.shape:
            raise ValueError(f"lazy tensor produced shape {value.shape}, expected {self.shape}")
        return value


class _SequentialLazyHandler(type_handlers.NumpyHandler):
    """Writes LazyArray leaves one after another; recorded as 'np.ndarray'."""

    def __init__(self, on_written: Callable[[str, np.ndarray], None] | None = None):
        super().__init__(deepcopy_host_arrays=False)
        self._on_written = on_written

    async def _background_serialize(self, values, infos, args=None):
        for value, info, arg in zip(values, infos, args, strict=True):
            await info.await_path_creation()
            spec = ts_utils.build_array_write_spec(
                info=info,
                arg=arg,
                global_shape=value.shape,
                local_shape=value.shape,
                dtype=value.dtype,
                use_ocdbt=info.is_ocdbt_checkpoint,
                process_index=ocdbt_utils.get_process_index_for_subdir(
                    use_ocdbt=info.is_ocdbt_checkpoint
                ),
            )
            array = value.load()  # only this tensor is in memory while it is written
            store = await ts_utils.ts.open(
                ts_utils.ts.Spec(spec.json), create=True, open=True, context=info.ts_context
            )
            await store.write(array)
            if self._on_written is not None:
                self._on_written(info.name, array)
            del array


def lazy_type_handler_registry(
    on_written: Callable[[str, np.ndarray], None] | None = None,
) -> Any:
    """Orbax's default type handlers plus one that writes `LazyArray` leaves in turn."""
    return handler_registry.create_type_handler_registry(
        *handler_registry._DEFAULT_TYPE_HANDLERS,
        (LazyArray, _SequentialLazyHandler(on_written)),
    )


def _load_all(flat: Mapping[str, Any], on_written) -> dict[str, np.ndarray]:
    out = {}
    for name, leaf in flat.items():
        out[name] = leaf.load() if isinstance(leaf, LazyArray) else leaf
        if on_written is not None:
            on_written(f"params.{name}", out[name])
    return out


def _as_float32(leaf: Any) -> Any:
    if isinstance(leaf, LazyArray):
        if leaf.dtype != np.float32:
            raise ValueError(f"lazy leaves must be float32, got {leaf.dtype}")
        return leaf
    return np.asarray(leaf, dtype=np.float32)


@contextlib.contextmanager
def publish_dir(
    path: Path,
    overwrite: bool = False,
    extra_files: Mapping[str, str | Callable[[], str]] | None = None,
) -> Iterator[Path]:
    """Yield a temp directory beside `path`; on success publish it as `path` atomically.

    An existing `path` is an error unless `overwrite`, in which case the old directory is
    swapped out and removed only after the new one is in place. `extra_files` (name -> text,
    or a function giving it) are written into the temp directory before it is published.
    On any error the temp directory is removed and `path` is left as it was.
    """
    if path.exists() and not overwrite:
        raise FileExistsError(f"output {path} already exists; pass overwrite=True (--overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text() if callable(text) else text)
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_params(
    path: str | os.PathLike,
    params: Mapping[str, Any],
    *,
    overwrite: bool = False,
    extra_files: Mapping[str, str | Callable[[], str]] | None = None,
    on_written: Callable[[str, np.ndarray], None] | None = None,
) -> Path:
    """Write `{"params": params}` as an Orbax checkpoint at `path`, atomically.

    Args:
      params: nested dict of arrays or `LazyArray`s (stored as float32).
      overwrite: replace an existing `path`; otherwise an existing path is an error.
      extra_files: file name -> text (or a function giving it, called once every tensor is
        written), written inside the checkpoint before it is published.
      on_written: called with (leaf name, array) after each lazy leaf is written.
    """
    path = Path(path).absolute()
    with publish_dir(path, overwrite, extra_files) as tmp:
        tree = {"params": _map_nested(_as_float32, params)}
        try:
            registry = lazy_type_handler_registry(on_written)
            handler = ocp.PyTreeCheckpointHandler(type_handler_registry=registry)
        except TypeError:  # another Orbax's NumpyHandler: load every tensor, then write
            tree = {"params": unflatten(_load_all(flatten(tree["params"]), on_written))}
            handler = ocp.PyTreeCheckpointHandler()
        with ocp.Checkpointer(handler) as ckptr:
            ckptr.save(tmp / "ckpt", args=ocp.args.PyTreeSave(tree))
        # Orbax publishes into its own directory; move its contents to the temp root.
        for child in (tmp / "ckpt").iterdir():
            child.rename(tmp / child.name)
        (tmp / "ckpt").rmdir()
    return path


def _restore_args(metadata_tree: Any) -> Any:
    return _map_nested(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata_tree)


def _tree_metadata(path: Path) -> dict:
    if not (path / "_METADATA").exists():
        raise FileNotFoundError(
            f"{path} is not an Orbax PyTree checkpoint (no _METADATA); pass the directory "
            f"that save_params or `gqa-t5-convert` wrote"
        )
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr:
        meta = ckptr.metadata(path)
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    return _map_nested(lambda m: m, dict(tree))


def tree_keys(path: str | os.PathLike) -> list[str]:
    """Top-level keys of an Orbax PyTree checkpoint's tree."""
    return sorted(_tree_metadata(Path(path).absolute()))


def tree_shapes(path: str | os.PathLike, root: tuple[str, ...] = ("params",)) -> dict:
    """Flat 'a/b/c' -> shape of every array leaf under `root`, from the metadata only."""
    node = _tree_metadata(Path(path).absolute())
    for k in root:
        if not isinstance(node, Mapping) or k not in node:
            raise ValueError(f"{path}: checkpoint tree has no {'/'.join(root)}")
        node = node[k]
    return {k: tuple(m.shape) for k, m in flatten(node).items() if hasattr(m, "shape")}


def param_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Flat 'a/b/c' -> shape of every leaf under "params", read from the metadata only."""
    return tree_shapes(path, ("params",))


def _restore_partial(path: Path, item: dict) -> dict:
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr:
        return ckptr.restore(
            path,
            args=ocp.args.PyTreeRestore(
                item=item, restore_args=_restore_args(item), partial_restore=True
            ),
        )


def checksum(array: np.ndarray) -> str:
    """CRC-32 of a tensor's float32 bytes (C order), as recorded in conversion.json."""
    data = np.ascontiguousarray(array, dtype=np.float32)
    return f"crc32:{zlib.crc32(memoryview(data).cast('B')):08x}"


def restore_params(path: str | os.PathLike, verify: bool = True) -> dict:
    """The nested params dict of a checkpoint written by `save_params`, as NumPy arrays.

    With `verify`, tensors are checked against the checksums in `conversion.json` (if any).
    """
    path = Path(path).absolute()
    shapes = param_shapes(path)
    item = {"params": unflatten({k: np.zeros((), np.float32) for k in shapes})}
    params = _map_nested(np.asarray, _restore_partial(path, item)["params"])
    if verify:
        verify_checksums(path, params)
    return params


def verify_checksums(path: Path, params: Mapping[str, Any]) -> None:
    """CheckpointError naming the first tensor whose checksum differs from conversion.json."""
    from gqa_t5.checkpoints import CheckpointError

    record = Path(path) / RECORD_NAME
    if not record.is_file():
        return
    want = json.loads(record.read_text()).get("checksums") or {}
    for name, array in flatten(params).items():
        if name in want and checksum(array) != want[name]:
            raise CheckpointError(
                f"{path}: tensor {name} does not match its checksum in {RECORD_NAME} "
                f"({checksum(array)} != {want[name]}); the checkpoint is corrupt, convert it "
                "again"
            )


def restore_subtree(path: str | os.PathLike, root: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Flat 'a/b/c' -> array of every leaf under `root` (e.g. ('params',)), in one restore."""
    path = Path(path).absolute()
    item = unflatten(
        {"/".join((*root, k)): np.zeros((), np.float32) for k in tree_shapes(path, root)}
    )
    node = _restore_partial(path, item)
    for k in root:
        node = node[k]
    return {k: np.asarray(v) for k, v in flatten(node).items()}


def restore_leaf(path: str | os.PathLike, keys: tuple[str, ...]) -> np.ndarray:
    """One array leaf, e.g. ('params', 'encoder', 'encoder_norm', 'scale'), read alone."""
    item = unflatten({"/".join(keys): np.zeros((), np.float32)})
    node = _restore_partial(Path(path).absolute(), item)
    for k in keys:
        node = node[k]
    return np.asarray(node)


def _map_nested(fn: Callable[[Any], Any], tree: Mapping[str, Any]) -> dict:
    return {k: _map_nested(fn, v) if isinstance(v, Mapping) else fn(v) for k, v in tree.items()}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {'a/b/c': leaf}."""
    return dict(_walk(tree, prefix))


def _walk(tree: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _walk(v, name + "/")
        else:
            yield name, v


def unflatten(flat: Mapping[str, Any]) -> dict:
    """{'a/b/c': leaf} -> nested dict."""
    out: dict = {}
    for name, leaf in flat.items():
        node = out
        *parents, last = name.split("/")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = leaf
    return out
