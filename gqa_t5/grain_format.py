"""On-disk format of a Grain export: `<data_dir>/<task>/<split>/` holding `data.array_record`
(one msgpack record per example), `vocab.model` (a copy of the SentencePiece model) and
`metadata.json`. A mixture's directory holds only `metadata.json` naming its tasks and rates.

Readers validate before training starts: a missing or truncated export, a vocabulary whose
checksum differs from the one recorded, or feature lengths longer than the export was made
for raise `ExportError`, one line naming the file and the fix. TF-free: NumPy, msgpack,
sentencepiece and array_record only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pathlib
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

from gqa_t5 import errors

FORMAT_VERSION = 1
DATA_FILE, META_FILE, VOCAB_FILE = "data.array_record", "metadata.json", "vocab.model"
EXTRA_IDS = 100
_I32 = "__int32__"


class ExportError(errors.BadInput):
    """A Grain export is missing, damaged or does not fit the run; the message says the fix.

    Bad input (exit 2 through `gqa_t5.errors`); still a ValueError for callers that catch it.
    """


def export_dir(data_dir: str | pathlib.Path, task: str, split: str) -> pathlib.Path:
    return pathlib.Path(data_dir).expanduser().absolute() / task / split


def export_hint(task: str, split: str, data_dir: str | pathlib.Path) -> str:
    return f"gqa-t5-export --task={task} --split={split} --out_dir={data_dir} --overwrite"


def encode_record(example: Mapping[str, Any]) -> bytes:
    """One example as msgpack: int arrays as raw int32 bytes, strings as str."""
    out: dict[str, Any] = {}
    for k, v in example.items():
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        if isinstance(v, np.ndarray) and v.dtype.kind in "iu":
            out[k] = {_I32: np.ascontiguousarray(v, np.int32).tobytes()}
        elif isinstance(v, np.ndarray):  # e.g. an array of answer strings
            out[k] = [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in v.tolist()]
        elif isinstance(v, list | tuple):
            out[k] = [x.decode("utf-8") if isinstance(x, bytes) else x for x in v]
        else:
            out[k] = v
    return msgpack.packb(out, use_bin_type=True)


def decode_record(record: bytes) -> dict[str, Any]:
    """The inverse of `encode_record` (int32 arrays back as NumPy)."""
    raw = msgpack.unpackb(record, raw=False)
    return {
        k: np.frombuffer(v[_I32], np.int32) if isinstance(v, dict) and _I32 in v else v
        for k, v in raw.items()
    }


def sha256(path: str | pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_metadata(data_dir: str | pathlib.Path, task: str, split: str) -> dict[str, Any]:
    """The export's metadata after checking its files are all there and whole."""
    d = export_dir(data_dir, task, split)
    meta_path = d / META_FILE
    hint = export_hint(task, split, data_dir)
    if not meta_path.is_file():
        raise ExportError(
            f"no Grain export at {meta_path}: export it on a machine with seqio or the task's "
            f"TF-free provider: `{hint}` (or set GRAIN_DATA_DIR to where it is)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{meta_path} is not valid JSON ({e}); re-export: `{hint}`") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{meta_path} has format_version {meta.get('format_version')!r}, this gqa-t5 "
            f"reads {FORMAT_VERSION}; re-export: `{hint}`"
        )
    if meta.get("kind") == "mixture":
        return meta
    data = d / DATA_FILE
    if not data.is_file():
        raise ExportError(f"{data} is missing; re-export: `{hint}`")
    if data.stat().st_size != meta["data_bytes"]:
        raise ExportError(
            f"{data} has {data.stat().st_size} bytes, metadata.json records "
            f"{meta['data_bytes']} (truncated or replaced); re-export: `{hint}`"
        )
    vocab = d / VOCAB_FILE
    if not vocab.is_file() or sha256(vocab) != meta["vocabulary"]["sha256"]:
        raise ExportError(
            f"{vocab} is missing or its sha256 differs from the one in metadata.json "
            f"({meta['vocabulary']['sha256'][:12]}...): it is not the vocabulary the "
            f"export was tokenized with; re-export: `{hint}`"
        )
    return meta


def check_lengths(
    meta: Mapping[str, Any], lengths: Mapping[str, int] | None, data_dir: str | pathlib.Path
) -> None:
    """Raise if a requested feature length is longer than the export was made for."""
    made = meta.get("feature_lengths") or {}
    too_long = {k: v for k, v in (lengths or {}).items() if k in made and int(v) > int(made[k])}
    if too_long:
        path = export_dir(data_dir, meta["task"], meta["split"]) / META_FILE
        raise ExportError(
            f"TASK_FEATURE_LENGTHS {dict(too_long)} are longer than {path} was exported for "
            f"({dict(made)}); re-export with --feature_lengths='{json.dumps(dict(lengths))}' "
            f"or lower TASK_FEATURE_LENGTHS"
        )


class Vocabulary:
    """SentencePiece with T5's extra ids, decoding as `seqio.SentencePieceVocabulary`."""

    def __init__(self, path: str | pathlib.Path, extra_ids: int = EXTRA_IDS):
        import sentencepiece as spm

        self.path = str(path)
        self._sp = spm.SentencePieceProcessor(model_file=self.path)
        self.extra_ids = extra_ids
        self.piece_size = self._sp.get_piece_size()
        self.vocab_size = self.piece_size + extra_ids
        self.eos_id, self.unk_id = self._sp.eos_id(), self._sp.unk_id()

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._sp.encode(text), np.int32)

    def decode(self, ids) -> str:
        """Up to and including the first EOS; extra ids become UNK (seqio's `decode`)."""
        ids = [self.unk_id if int(i) >= self.piece_size else int(i) for i in ids]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id) + 1]
        return self._sp.decode_ids(ids)


@functools.lru_cache(maxsize=8)
def vocabulary(path: str, extra_ids: int = EXTRA_IDS) -> Vocabulary:
    return Vocabulary(path, extra_ids)


def resolve_callable(name: str | None):
    """'module:qualname' -> the object (metric and postprocess functions in metadata)."""
    if not name:
        return None
    import importlib

    module, _, qual = name.partition(":")
    obj = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def callable_name(fn) -> str:
    """The 'module:qualname' that `resolve_callable` turns back into `fn`."""
    fn = getattr(fn, "func", fn)  # functools.partial: its function (arguments not kept)
    return f"{fn.__module__}:{fn.__qualname__}"
