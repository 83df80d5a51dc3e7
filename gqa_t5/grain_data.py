"""The Grain input path: exported task splits -> this host's batches of model features.

A `grain.MapDataset` pipeline per task (ArrayRecord source, per-host shard
`[process_index::process_count]`, seeded global shuffle reshuffled each epoch, repeat,
decode, EOS), mixed by rate (`MapDataset.mix`), then cut into *units* of K consecutive
examples, K = max(feature lengths) as seqio packs. A unit is packed exactly as
`seqio.EncDecFeatureConverter(pack=True)` packs the same examples. Span corruption units are
128 documents (T5's concatenation group) whose segments get fresh noise from a generator
seeded by (seed, host, unit index), so every epoch draws new noise.

The iterator's state is (unit, first unconsumed example of that unit); greedy packing is
prefix-consistent, so a restore re-packs the unit from that example on and reads nothing
the checkpointed run consumed (span corruption re-reads its unit's <= 128 documents).
Resuming costs the same at step 10 and at step 900k.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import pathlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from gqa_t5 import grain_format as fmt
from gqa_t5 import grain_ops

DATA_DIR_ENV = "GRAIN_DATA_DIR"
_READ_LOG_ENV = "GQA_T5_GRAIN_READ_LOG"  # tests: append "<task> <record>" per read
READS: collections.Counter = collections.Counter()  # records decoded, by task
_LOCK = threading.Lock()


def data_dir(value: str | None) -> pathlib.Path:
    path = value or os.environ.get(DATA_DIR_ENV)
    if not path:
        raise ValueError(
            "DATA_BACKEND = 'grain' needs the exports' directory: pass "
            "--gin.GRAIN_DATA_DIR=\"'/path/to/exports'\" (or set $GRAIN_DATA_DIR)"
        )
    return pathlib.Path(path).expanduser().absolute()


@dataclasses.dataclass(frozen=True)
class Export:
    """One exported task split, validated."""

    meta: dict
    directory: pathlib.Path

    @property
    def name(self) -> str:
        return self.meta["task"]

    @property
    def vocabulary(self) -> fmt.Vocabulary:
        return fmt.vocabulary(str(self.directory / fmt.VOCAB_FILE))


def open_exports(
    root: pathlib.Path, name: str, split: str, lengths: Mapping[str, int] | None
) -> list[tuple[Export, float]]:
    """(export, rate) for a task (rate 1) or each task of a mixture, checked for `lengths`."""
    meta = fmt.read_metadata(root, name, split)
    fmt.check_lengths(meta, lengths, root)  # a mixture's: the longest of its tasks'
    parts = meta["tasks"].items() if meta.get("kind") == "mixture" else [(name, 1.0)]
    out = []
    for task, rate in parts:
        m = fmt.read_metadata(root, task, split) if task != name else meta
        out.append((Export(m, fmt.export_dir(root, task, split)), float(rate)))
    vocabs = {e.meta["vocabulary"]["sha256"] for e, _ in out}
    if len(vocabs) > 1:
        raise fmt.ExportError(f"the tasks of {name!r} were exported with different vocabularies")
    return out


def _decoder(task: str):
    log = os.environ.get(_READ_LOG_ENV)

    def decode(item: tuple[int, bytes]) -> dict:
        index, record = item
        with _LOCK:
            READS[task] += 1
            if log:
                with open(log, "a") as f:
                    f.write(f"{task} {index}\n")
        ex = fmt.decode_record(record)
        ex["_id"] = (task, index)
        return ex

    return decode


def _batched_source_class():
    import grain

    class BatchedSource(grain.sources.ArrayRecordDataSource):
        """ArrayRecordDataSource whose batched read Grain's MapDataset uses.

        Grain sends `MapDataset._getitems` to a source only if it has `_getitems`;
        ArrayRecord's batched read is `__getitems__` (one C++ call for many records).
        """

        def _getitems(self, indices):
            return self.__getitems__(indices)

    return BatchedSource


def _BatchedSource(paths):  # noqa: N802
    return _batched_source_class()(paths)


def records(
    export: Export, *, shuffle: bool, seed: int, num_epochs: int | None, shard: tuple[int, int]
):
    """This host's decoded records of one export as a MapDataset (shuffled, repeated)."""
    import grain

    src = _BatchedSource([str(export.directory / fmt.DATA_FILE)])
    ds = grain.MapDataset.source(src).map_with_index(lambda i, r: (i, r))
    index, count = shard
    ds = ds[index::count]
    if len(ds) == 0:
        raise fmt.ExportError(
            f"{export.directory} has {len(src)} examples, fewer than the {count} hosts"
        )
    if shuffle:
        ds = ds.shuffle(seed=seed)
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    return ds.map(_decoder(export.name))


class Stream:
    """Units of examples -> packed (or padded) rows; a pure function of (unit, start)."""

    def __init__(
        self,
        exports: list[tuple[Export, float]],
        lengths: Mapping[str, int],
        *,
        seed: int = 0,
        shuffle: bool = True,
        num_epochs: int | None = None,
        pack: bool = True,
        shard: tuple[int, int] = (0, 1),
    ):
        import grain

        self.lengths = {k: int(lengths[k]) for k in grain_ops.KEYS}
        self.pack = pack
        self.seed, self.host = seed, shard[0]
        self.k = max(self.lengths.values())
        self.span_corruption = any("span_corruption" in e.meta["postcache"] for e, _ in exports)
        if self.span_corruption and len(exports) > 1:
            raise ValueError("span corruption inside a mixture is not supported by the Grain path")
        self.vocab_size = exports[0][0].meta["vocabulary"]["vocab_size"]
        self.eos_id = exports[0][0].meta["vocabulary"]["eos_id"]
        datasets = [
            records(e, shuffle=shuffle, seed=seed + i, num_epochs=num_epochs, shard=shard)
            for i, (e, _) in enumerate(exports)
        ]
        if len(datasets) == 1:
            self.examples = datasets[0]
        else:
            self.examples = grain.MapDataset.mix(datasets, [r for _, r in exports])
        self.unit_size = grain_ops.CONCAT_DOCUMENTS if self.span_corruption else self.k

    def num_units(self) -> int | None:
        n = len(self.examples)
        return None if n >= 2**62 else -(-n // self.unit_size)

    def _read(self, lo: int, hi: int) -> list[dict]:
        """Examples lo..hi-1 in one batched read (ArrayRecord reads them together, in C++)."""
        return list(self.examples._getitems(list(range(lo, hi))))  # noqa: SLF001

    def _unit_examples(self, u: int, start: int) -> list[dict]:
        lo, hi = u * self.unit_size, min((u + 1) * self.unit_size, len(self.examples))
        if not self.span_corruption:
            return [
                grain_ops.append_eos_after_trim(ex, self.lengths, self.eos_id)
                for ex in self._read(lo + start, hi)
            ]
        rng = np.random.default_rng([self.seed, self.host, u])
        docs = [ex["targets"] for ex in self._read(lo, hi)]
        segs = grain_ops.span_corruption(docs, rng, self.lengths, self.vocab_size)
        return [grain_ops.append_eos_after_trim(s, self.lengths, self.eos_id) for s in segs][start:]

    def rows(self, u: int, start: int = 0) -> list[tuple[dict, int]]:
        """(model features, example index to resume from after it) of unit `u` from `start`."""
        exs = self._unit_examples(u, start)
        out: list[tuple[dict, int]] = []
        if not self.pack:
            for j, ex in enumerate(exs, start + 1):
                out.append((grain_ops.unpacked_features(ex, self.lengths), j))
            return out
        at = start
        while at < start + len(exs):  # seqio packs groups of K examples
            end = (at // self.k + 1) * self.k
            group = exs[at - start : end - start]
            packed = grain_ops.pack(group, self.lengths)
            firsts = [at + r["_first"] for r in packed[1:]] + [at + len(group)]
            out.extend(
                (grain_ops.packed_features(r), f) for r, f in zip(packed, firsts, strict=True)
            )
            at += len(group)
        return out


class BatchIterator:
    """This host's batches, with `state()` after each batch for the checkpoint."""

    def __init__(
        self,
        stream: Stream,
        batch_size: int,
        state: Mapping[str, int] | None = None,
        prefetch: int = 2,
        drop_remainder: bool = True,
    ):
        self.stream, self.batch_size = stream, batch_size
        self.drop_remainder = drop_remainder
        self._state = {"unit": 0, "example": 0, **(state or {})}
        self._prefetch = prefetch
        self._gen = self._batches()

    def state(self) -> dict[str, int]:
        """Where the next batch starts: a unit and the first example of it not yet consumed."""
        return dict(self._state)

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch, self._state = next(self._gen)
        return batch

    def _units(self) -> Iterator[tuple[int, list]]:
        u, start = self._state["unit"], self._state["example"]
        last = self.stream.num_units()
        if self._prefetch <= 0:
            while last is None or u < last:
                yield u, self.stream.rows(u, start)
                u, start = u + 1, 0
            return
        with concurrent.futures.ThreadPoolExecutor(self._prefetch) as pool:
            pending: collections.deque = collections.deque()
            nxt, first = u, True
            while True:
                while len(pending) < self._prefetch and (last is None or nxt < last):
                    s = start if first else 0
                    pending.append((nxt, pool.submit(self.stream.rows, nxt, s)))
                    nxt, first = nxt + 1, False
                if not pending:
                    return
                unit, fut = pending.popleft()
                yield unit, fut.result()

    def _batches(self) -> Iterator[tuple[dict, dict]]:
        buf: list[dict] = []
        state = dict(self._state)
        for u, rows in self._units():
            for j, (row, resume) in enumerate(rows):
                buf.append(row)
                last_row = j == len(rows) - 1
                state = (
                    {"unit": u + 1, "example": 0} if last_row else {"unit": u, "example": resume}
                )
                if len(buf) == self.batch_size:
                    yield _stack(buf), state
                    buf = []
        if buf and not self.drop_remainder:
            yield _stack(buf), state


def _stack(rows: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.stack([r[k] for r in rows]).astype(np.int32) for k in rows[0]}


def eval_examples(export: Export, lengths: Mapping[str, int] | None, seed: int = 0) -> list[dict]:
    """Every example of an export in order, after its postcache (EOS; span corruption seeded)."""
    stream = Stream(
        [(export, 1.0)], lengths or _longest(export), seed=seed, shuffle=False, num_epochs=1
    )
    out = []
    for u in range(stream.num_units()):
        out.extend(stream._unit_examples(u, 0))
    return out


def _longest(export: Export) -> dict[str, int]:
    """Lengths that keep every example whole (+1 for EOS): seqio's TASK_FEATURE_LENGTHS=None."""
    stream = Stream([(export, 1.0)], {"inputs": 1, "targets": 1}, shuffle=False, num_epochs=1)
    n = {"inputs": 1, "targets": 1}
    for i in range(len(stream.examples)):
        ex = stream.examples[i]
        for k in n:
            if k in ex:
                n[k] = max(n[k], len(ex[k]) + 1)
    return n


def resume_state(stored: Mapping[str, Any] | None) -> dict | None:
    """This host's iterator state from a checkpoint's data item (None: start of stream)."""
    if not stored or "grain" not in stored:
        return None
    import jax

    return stored["grain"].get(str(jax.process_index()))


def train_iterator(cfg, state: Mapping[str, int] | None = None) -> BatchIterator:
    """This host's training batches for a `data.DatasetConfig` on the grain backend."""
    import jax

    from gqa_t5 import data

    if not isinstance(cfg.mixture_or_task_name, str) or not cfg.mixture_or_task_name:
        raise ValueError("no task given: set --gin.MIXTURE_OR_TASK_NAME=\"'<exported task>'\"")
    lengths = data.model_feature_lengths(cfg)
    lengths = {"inputs": lengths["encoder"], "targets": lengths["decoder"]}
    exports = open_exports(data_dir(cfg.data_dir), cfg.mixture_or_task_name, cfg.split, lengths)
    stream = Stream(
        exports,
        lengths,
        seed=cfg.seed or 0,
        shuffle=cfg.shuffle,
        num_epochs=None,
        pack=cfg.pack,
        shard=(jax.process_index(), jax.process_count()),
    )
    return BatchIterator(stream, data.per_host_batch_size(cfg.batch_size), state, cfg.prefetch)
