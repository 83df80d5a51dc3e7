"""Data sources that fail with a message naming the missing data and the command to make it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence

import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

MEDIASUM_ENV_VAR = "GQA_T5_MEDIASUM_DIR"
MEDIASUM_SAMPLES = "news_dialogue.json"
# The MediaSum release names the split file train_val_test_split.json; LongT5's converter
# reads mediasum_train_val_test_split.json. Either is accepted.
MEDIASUM_SPLIT_FILES = ("train_val_test_split.json", "mediasum_train_val_test_split.json")
MEDIASUM_URL = "https://github.com/zcgzcgzcg1/MediaSum/tree/main/data"
_MEDIASUM_SPLIT_KEYS = {"train": "train", "validation": "val", "test": "test"}


class DataNotFoundError(FileNotFoundError):
    """A dataset has not been prepared where the task looks for it."""


def tfds_data_dir(data_dir: str | None = None) -> str:
    """The directory TFDS reads: the argument, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return data_dir or tfds.core.constants.get_default_data_dir()


def _tfds_dataset_dir(tfds_name: str, data_dir: str) -> str:
    """data_dir/name[/config]/version for a name like "scientific_papers/arxiv:1.1.1"."""
    name, _, version = tfds_name.partition(":")
    return os.path.join(data_dir, name, version) if version else os.path.join(data_dir, name)


class PreparedTfdsSource(seqio.TfdsDataSource):
    """A TfdsDataSource that never downloads and explains how to build missing data.

    Reads only what `tfds build` has prepared in the data directory (no download at
    training time); a missing dataset raises DataNotFoundError naming the command.
    """

    def __init__(
        self,
        tfds_name: str,
        build_command: str,
        tfds_data_dir: str | None = None,
        splits: Sequence[str] | Mapping[str, str] = ("train", "validation", "test"),
    ):
        super().__init__(
            tfds_name=tfds_name, tfds_data_dir=tfds_data_dir, splits=splits, read_only=True
        )
        self._tfds_name = tfds_name
        self._build_command = build_command

    def _data_dir(self) -> str:
        return tfds_data_dir(self.tfds_dataset.data_dir)

    def missing_data_error(self) -> DataNotFoundError | None:
        """The error to raise if the prepared dataset is absent, else None."""
        data_dir = self._data_dir()
        dataset_dir = _tfds_dataset_dir(self._tfds_name, data_dir)
        if tf.io.gfile.exists(os.path.join(dataset_dir, "dataset_info.json")):
            return None
        return DataNotFoundError(
            f"TFDS dataset {self._tfds_name} is not prepared: nothing at {dataset_dir}. "
            f"Build it with `{self._build_command} --data_dir={data_dir}` (or set "
            "TFDS_DATA_DIR / pass tfds_data_dir to tasks.register_tasks if it lives elsewhere)."
        )

    def _reraise_if_missing(self, error: Exception) -> None:
        missing = self.missing_data_error()
        if missing is not None:
            raise missing from None
        raise error

    def get_dataset(self, *args, **kwargs) -> tf.data.Dataset:
        try:
            return super().get_dataset(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 (TFDS raises AssertionError, OSError, ...)
            self._reraise_if_missing(e)

    def num_input_examples(self, split: str) -> int | None:
        """The split's size, or None (unknown) while the data is not prepared."""
        # None rather than an error: get_dataset already reports missing data, and under
        # tfds.testing.mock_data the examples exist while the split sizes do not.
        if self.missing_data_error() is not None:
            return None
        return super().num_input_examples(split)

    def list_shards(self, split: str) -> Sequence[str]:
        try:
            return super().list_shards(split)
        except Exception as e:  # noqa: BLE001
            self._reraise_if_missing(e)


def mediasum_dir(path: str | None = None) -> str:
    """MediaSum directory: argument, else $GQA_T5_MEDIASUM_DIR, else TFDS's manual dir."""
    return (
        path
        or os.environ.get(MEDIASUM_ENV_VAR)
        or os.path.join(tfds_data_dir(), "downloads", "manual")
    )


def mediasum_files(directory: str) -> tuple[str, str]:
    samples = os.path.join(directory, MEDIASUM_SAMPLES)
    split_files = [os.path.join(directory, f) for f in MEDIASUM_SPLIT_FILES]
    split_file = next((f for f in split_files if tf.io.gfile.exists(f)), None)
    if not tf.io.gfile.exists(samples) or split_file is None:
        raise DataNotFoundError(
            f"MediaSum needs {MEDIASUM_SAMPLES} and {MEDIASUM_SPLIT_FILES[0]} in {directory}. "
            f"Download them by hand from {MEDIASUM_URL} into that directory, or point "
            f"${MEDIASUM_ENV_VAR} (or tasks.register_tasks(media_sum_dir=...)) at them."
        )
    return samples, split_file


def _read_json(path: str):
    with tf.io.gfile.GFile(path) as f:
        data = json.load(f)
    # LongT5's copies hold the object inside a one-element list.
    return data[0] if isinstance(data, list) and len(data) == 1 else data


def mediasum_interview(speakers: Sequence[str], utterances: Sequence[str]) -> str:
    """The interview transcript as LongT5 builds it: "speaker: utterance" joined by spaces."""
    return " ".join(s + ": " + u for s, u in zip(speakers, utterances, strict=False))


def mediasum_examples(directory: str, split: str) -> Iterator[dict[str, str]]:
    """Yields {"id", "interview", "summary"} for the MediaSum split ("validation" is "val")."""
    if split not in _MEDIASUM_SPLIT_KEYS:
        raise ValueError(
            f"MediaSum split {split!r} unknown; use one of {list(_MEDIASUM_SPLIT_KEYS)}."
        )
    samples_path, split_path = mediasum_files(directory)
    ids = set(_read_json(split_path)[_MEDIASUM_SPLIT_KEYS[split]])
    for sample in _read_json(samples_path):
        if sample["id"] in ids:
            yield {
                "id": sample["id"],
                "interview": mediasum_interview(sample["speaker"], sample["utt"]),
                "summary": sample["summary"],
            }


def mediasum_source(directory: str | None = None) -> seqio.DataSource:
    """A seqio source over MediaSum's released JSON files (read when a split is requested)."""

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        del shuffle_files, seed  # one file; seqio's Task shuffles examples after the source
        root = mediasum_dir(directory)
        mediasum_files(root)  # fail now, not at the first next() deep inside tf.data
        signature = {k: tf.TensorSpec([], tf.string) for k in ("id", "interview", "summary")}
        return tf.data.Dataset.from_generator(
            lambda: mediasum_examples(root, split), output_signature=signature
        )

    return seqio.FunctionDataSource(
        dataset_fn, splits=tuple(_MEDIASUM_SPLIT_KEYS), caching_permitted=True
    )
