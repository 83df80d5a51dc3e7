"""Datasets for the runner: tasks and mixtures, the encoder-decoder feature converter,
packing, a seeded deterministic order, and the data position for resuming.

Two backends, picked by `DATA_BACKEND` (DatasetConfig.backend): 'seqio' (default; imports
seqio and TensorFlow when a task is read) and 'grain' (TF-free: reads exports written by
`gqa-t5-export` from GRAIN_DATA_DIR, see `gqa_t5.grain_data`; its iterator state is saved in
the checkpoint and restored without replay). On the seqio backend the position is the
number of examples consumed: the training stream is a deterministic function of the seed, so
a restart skips `step * per_host_batch` converted (packed)
examples and continues exactly where the checkpoint left off. The replay costs time growing
with the step, and is exact only for the same seed, host count, batch size, task and feature
lengths, which `check_resumable` enforces.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

if TYPE_CHECKING:
    import seqio
    import tensorflow as tf

BACKENDS = ("seqio", "grain")


@dataclasses.dataclass
class DatasetConfig:
    """t5x's `utils.DatasetConfig`: which SeqIO task, split, lengths and batch to read."""

    mixture_or_task_name: str | seqio.Task | seqio.Mixture = ""
    task_feature_lengths: Mapping[str, int] | None = None
    split: str = "train"
    batch_size: int = 8  # global, across all hosts
    shuffle: bool = True
    seed: int | None = 0
    use_cached: bool = False
    pack: bool = True
    module: str | None = None
    use_memory_cache: bool = False
    backend: str = "seqio"  # DATA_BACKEND: 'seqio' or 'grain'
    data_dir: str | None = None  # GRAIN_DATA_DIR: exports as <data_dir>/<task>/<split>/
    prefetch: int = 2  # grain: units packed ahead in threads
    max_examples: int | None = None  # MAX_EVAL_EXAMPLES (grain eval): first N of each task

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"DATA_BACKEND={self.backend!r}: use one of {BACKENDS}")
        if self.max_examples is not None and (self.backend != "grain" or self.max_examples < 1):
            raise ValueError(
                f"MAX_EVAL_EXAMPLES={self.max_examples!r}: a positive count, on "
                "DATA_BACKEND='grain' only (seqio evaluates whole splits)"
            )


def import_task_module(module: str | None) -> None:
    """Import the module that registers the tasks (t5x's MIXTURE_OR_TASK_MODULE)."""
    if not module:
        return
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"cannot import MIXTURE_OR_TASK_MODULE={module!r} ({e}); pass the Python module "
            "that registers your SeqIO tasks, e.g. --gin.MIXTURE_OR_TASK_MODULE=\"'tasks'\""
        ) from e


def get_task(cfg: DatasetConfig) -> seqio.Task | seqio.Mixture:
    """The registered task or mixture, with a helpful error when it is missing."""
    import seqio

    import_task_module(cfg.module)
    name = cfg.mixture_or_task_name
    if isinstance(name, seqio.Task | seqio.Mixture):
        return name
    if not name:
        raise ValueError("no task given: set --gin.MIXTURE_OR_TASK_NAME=\"'<task name>'\"")
    try:
        return seqio.get_mixture_or_task(name)
    except ValueError:
        known = list(seqio.TaskRegistry.names()) + list(seqio.MixtureRegistry.names())
        close = difflib.get_close_matches(name, known, n=5)
        raise ValueError(
            f"SeqIO task or mixture {name!r} is not registered. Set MIXTURE_OR_TASK_MODULE "
            f"to the module that registers it (now {cfg.module!r})"
            + (f"; did you mean one of {close}?" if close else "")
        ) from None


def check_vocabularies(task: seqio.Task | seqio.Mixture) -> None:
    """Load every output feature's vocabulary now, so a bad path fails before training."""
    for name, feature in task.output_features.items():
        vocab = feature.vocabulary
        try:
            vocab.vocab_size  # noqa: B018  (forces SentencePiece to load its model file)
        except Exception as e:  # TF and SentencePiece raise several types for a bad path
            path = getattr(vocab, "sentencepiece_model_file", None)
            raise FileNotFoundError(
                f"vocabulary of feature {name!r} of {task.name!r} cannot be loaded"
                + (f" from {path!r}" if path else "")
                + f" ({type(e).__name__}); check the path the task registers"
            ) from e


def feature_converter(pack: bool) -> seqio.FeatureConverter:
    import seqio

    return seqio.EncDecFeatureConverter(pack=pack)


def per_host_batch_size(batch_size: int) -> int:
    n = jax.process_count()
    if batch_size % n:
        raise ValueError(f"BATCH_SIZE={batch_size} must be divisible by the host count {n}")
    return batch_size // n


def get_dataset(
    cfg: DatasetConfig,
    *,
    num_epochs: int | None = None,
    skip_examples: int = 0,
    drop_remainder: bool = True,
) -> tf.data.Dataset:
    """This host's batched model features, deterministic for a seed, from `skip_examples` on."""
    import seqio
    import tensorflow as tf

    task = get_task(cfg)
    check_vocabularies(task)
    if cfg.split not in _splits(task):
        raise ValueError(f"split {cfg.split!r} not in {task.name!r} (has {sorted(_splits(task))})")
    shard = seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count())
    try:
        ds = seqio.get_dataset(
            task,
            dict(cfg.task_feature_lengths or {}),
            feature_converter(cfg.pack),
            dataset_split=cfg.split,
            use_cached=cfg.use_cached,
            shuffle=cfg.shuffle,
            num_epochs=num_epochs,
            shard_info=shard,
            seed=cfg.seed,
            verbose=False,
        )
    except (tf.errors.NotFoundError, FileNotFoundError) as e:
        raise FileNotFoundError(
            f"data for {task.name!r} split {cfg.split!r} is missing ({e}). Download or "
            "prepare it (TFDS: `tfds build`; cached tasks: seqio's cache_tasks_main, or set "
            "USE_CACHED_TASKS = False)"
        ) from e
    if skip_examples:
        ds = ds.skip(skip_examples)
    ds = ds.batch(per_host_batch_size(cfg.batch_size), drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)  # packs the next batches while the device steps


def _splits(task) -> set[str]:
    import seqio

    if isinstance(task, seqio.Mixture):
        return set.intersection(*[set(t.splits) for t in task.tasks])
    return set(task.splits)


def numpy_batches(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
    """Batches as dicts of NumPy arrays (int32), in the dataset's order."""
    for batch in ds.as_numpy_iterator():
        yield {k: np.asarray(v, np.int32) for k, v in batch.items()}


def _task_name(cfg: DatasetConfig) -> str:
    name = cfg.mixture_or_task_name
    return name if isinstance(name, str) else name.name


def check_inputs(cfg: DatasetConfig) -> list | None:
    """Grain backend: validate the exports (present, whole, vocabulary, lengths) up front and
    return them as `grain_data.open_exports` does; None on the seqio backend."""
    if cfg.backend != "grain":
        return None
    from gqa_t5 import grain_data

    if not isinstance(cfg.mixture_or_task_name, str) or not cfg.mixture_or_task_name:
        raise ValueError("no task given: set --gin.MIXTURE_OR_TASK_NAME=\"'<exported task>'\"")
    lengths = dict(cfg.task_feature_lengths or {})
    wanted = {k: int(lengths[k]) for k in ("inputs", "targets") if k in lengths}
    return grain_data.open_exports(
        grain_data.data_dir(cfg.data_dir), cfg.mixture_or_task_name, cfg.split, wanted or None
    )


def train_batches(
    cfg: DatasetConfig, start_step: int, stored: Mapping[str, Any] | None
) -> Iterator[dict[str, np.ndarray]]:
    """This host's training batches from `start_step`: the seqio stream replayed to it, or
    the Grain iterator restored from the checkpoint's state (`stored`)."""
    if cfg.backend == "grain":
        from gqa_t5 import grain_data

        return grain_data.train_iterator(cfg, grain_data.resume_state(stored))
    skip = start_step * per_host_batch_size(cfg.batch_size)
    return numpy_batches(get_dataset(cfg, num_epochs=None, skip_examples=skip))


def data_position(cfg: DatasetConfig, step: int, batches: Any = None) -> dict:
    """What a checkpoint stores about the input stream: the position and what fixes the order.

    On the grain backend `batches` is the iterator, whose state is stored per host.
    """
    grain_state = {}
    if cfg.backend == "grain" and batches is not None:
        grain_state = {"grain": {str(jax.process_index()): batches.state()}}
    return {
        "backend": cfg.backend,
        **grain_state,
        "step": step,
        "examples_consumed_per_host": step * per_host_batch_size(cfg.batch_size),
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "process_count": jax.process_count(),
        "task": _task_name(cfg),
        "task_feature_lengths": {k: int(v) for k, v in (cfg.task_feature_lengths or {}).items()},
    }


def check_resumable(stored: Mapping, cfg: DatasetConfig) -> None:
    """Raise if skipping `stored`'s position would not continue the same stream under `cfg`.

    Keys missing from `stored` (older checkpoints) are not checked.
    """
    now = data_position(cfg, 0)
    macros = {
        "batch_size": "BATCH_SIZE",
        "seed": "RANDOM_SEED",
        "process_count": "the host count",
        "task": "MIXTURE_OR_TASK_NAME",
        "task_feature_lengths": "TASK_FEATURE_LENGTHS",
    }
    if stored.get("backend", "seqio") != cfg.backend:
        raise ValueError(
            "MODEL_DIR's checkpoint was trained with "
            f"DATA_BACKEND={stored.get('backend', 'seqio')!r}, now {cfg.backend!r}: resume with "
            "the same backend, or start a new MODEL_DIR "
            "with INITIAL_CHECKPOINT_PATH set to this one (parameters only)."
        )
    bad = [
        f"{macro}={stored[key]!r}, now {now[key]!r}"
        for key, macro in macros.items()
        if stored.get(key) is not None and stored[key] != now[key]
    ]
    if bad:
        raise ValueError(
            "MODEL_DIR's checkpoint cannot be resumed exactly: it was trained with "
            + "; ".join(bad)
            + ". Resuming replays the input stream, which only matches when these are the "
            "same: rerun with the stored values, or start a new MODEL_DIR with "
            "INITIAL_CHECKPOINT_PATH set to this one (parameters only)."
        )


def model_feature_lengths(cfg: DatasetConfig) -> dict[str, int]:
    """Encoder and decoder lengths the model sees (t5x's feature converter naming)."""
    lengths = dict(cfg.task_feature_lengths or {})
    missing = {"inputs", "targets"} - set(lengths)
    if missing:
        raise ValueError(
            f"TASK_FEATURE_LENGTHS needs {sorted(missing)}, got {lengths}; e.g. "
            "--gin.TASK_FEATURE_LENGTHS=\"{'inputs': 512, 'targets': 114}\""
        )
    return {"encoder": int(lengths["inputs"]), "decoder": int(lengths["targets"])}
