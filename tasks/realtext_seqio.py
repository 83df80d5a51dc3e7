"""SeqIO registration of the real-text tasks (tasks/realtext.py); imports TensorFlow."""

from __future__ import annotations

import os

import seqio
import tensorflow as tf

from tasks import realtext, span_corruption

_POSTCACHE = {
    "span_corruption": span_corruption.span_corruption,
    "append_eos_after_trim": seqio.preprocessors.append_eos_after_trim,
}


class RealTextVocabulary(seqio.SentencePieceVocabulary):
    """SentencePieceVocabulary whose lazy load names the build command if the file is absent."""

    def _model_context(self):
        if not os.path.exists(self.sentencepiece_model_file):
            raise realtext.RealTextDataNotFoundError(
                f"Real-text vocabulary {self.sentencepiece_model_file} not found: run "
                f"`{realtext.BUILD_COMMAND}` (or set ${realtext.DATA_ENV_VAR})."
            )
        return super()._model_context()


def _signature(task: realtext.TextTask) -> dict:
    sig = {key: tf.TensorSpec([], tf.string) for key in ("inputs", "targets")}
    if task.name == realtext.SPAN_CORRUPTION:
        sig = {"targets": tf.TensorSpec([], tf.string)}
    for key in task.extra_keys:
        sig[key] = tf.TensorSpec([None] if key == "answers" else [], tf.string)
    return sig


def _dataset_fn(task: realtext.TextTask, data_dir):
    def dataset_fn(split: str, shuffle_files: bool, seed=None) -> tf.data.Dataset:
        del shuffle_files, seed  # one file per split, read in order
        realtext.split_path(task.name, split, data_dir)  # the clear error, before TF
        return tf.data.Dataset.from_generator(
            lambda: realtext.text_examples(task.name, split, data_dir),
            output_signature=_signature(task),
        )

    return dataset_fn


def register(data_dir=None) -> None:
    """(Re-)registers every realtext task and the mixture; nothing is read until asked."""
    path = realtext.vocabulary_path(data_dir)
    vocabulary = RealTextVocabulary(path, extra_ids=realtext.EXTRA_IDS)
    features = {
        "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=False),
        "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
    }
    for name in realtext.MIXTURES:
        seqio.MixtureRegistry.remove(name)
    for name, task in realtext.TEXT_TASKS.items():
        seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add(
            name,
            source=seqio.FunctionDataSource(_dataset_fn(task, data_dir), splits=task.splits),
            preprocessors=[
                seqio.preprocessors.tokenize,
                seqio.CacheDatasetPlaceholder(),
                *[_POSTCACHE[p] for p in task.postcache],
            ],
            output_features=features,
            metric_fns=list(task.metric_fns),
            postprocess_fn=task.postprocess_fn,
        )
    for name, members in realtext.MIXTURES.items():
        seqio.MixtureRegistry.add(name, list(members), default_rate=1.0)
