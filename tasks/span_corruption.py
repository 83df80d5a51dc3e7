"""T5.1.1 span corruption (noise density 0.15, mean span 3) as SeqIO preprocessors.

The recipe of T5's `c4_v220_span_corruption`: take a random chunk of each document, pack
documents into one stream, cut it into segments of `tokens_length` (568 for inputs 512),
mask random spans, and replace each noise span in the inputs (and each non-noise span in
the targets) by one sentinel, counting down from the vocabulary's last id (<extra_id_0>).
"""

from __future__ import annotations

from collections.abc import Mapping

import seqio
import tensorflow as tf

from tasks.span_lengths import (  # noqa: F401  (re-exported)
    MEAN_NOISE_SPAN_LENGTH,
    NOISE_DENSITY,
    span_corruption_lengths,
)

_MAX_CHUNK_LENGTH = 65536
_CONCAT_BATCH_SIZE = 128


def _random_segmentation(num_items: tf.Tensor, num_segments: tf.Tensor, seed) -> tf.Tensor:
    """Lengths of a uniformly random split of num_items into num_segments non-empty parts."""
    is_boundary = tf.cast(tf.range(num_items - 1) < num_segments - 1, tf.int32)
    is_boundary = seqio.utils.stateless_shuffle(is_boundary, seed)
    segment_id = tf.cumsum(tf.pad(is_boundary, [[1, 0]]))
    return tf.math.segment_sum(tf.ones_like(segment_id), segment_id)


def random_spans_noise_mask(
    length: tf.Tensor,
    seeds,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> tf.Tensor:
    """Boolean [length] mask: alternating non-noise / noise spans, starting with non-noise.

    round(length * noise_density) tokens are noise, in round(num_noise / mean span) spans.
    """
    orig_length = length
    length = tf.maximum(length, 2)  # room for one noise and one non-noise token
    num_noise = tf.cast(tf.round(tf.cast(length, tf.float32) * noise_density), tf.int32)
    num_noise = tf.clip_by_value(num_noise, 1, length - 1)
    num_spans = tf.cast(tf.round(tf.cast(num_noise, tf.float32) / mean_noise_span_length), tf.int32)
    num_spans = tf.maximum(num_spans, 1)
    noise_lengths = _random_segmentation(num_noise, num_spans, seeds[0])
    nonnoise_lengths = _random_segmentation(length - num_noise, num_spans, seeds[1])
    span_lengths = tf.reshape(tf.stack([nonnoise_lengths, noise_lengths], axis=1), [-1])
    span_starts = tf.cumsum(span_lengths)[:-1]
    starts_indicator = tf.math.unsorted_segment_sum(tf.ones_like(span_starts), span_starts, length)
    span_index = tf.cumsum(starts_indicator)
    return tf.equal(span_index % 2, 1)[:orig_length]


def noise_span_to_unique_sentinel(
    tokens: tf.Tensor, noise_mask: tf.Tensor, vocabulary: seqio.Vocabulary
) -> tf.Tensor:
    """Replaces each noise span by one sentinel: vocab_size - 1, vocab_size - 2, ..."""
    prev_is_noise = tf.pad(noise_mask[:-1], [[1, 0]])
    first_noise = tf.logical_and(noise_mask, tf.logical_not(prev_is_noise))
    later_noise = tf.logical_and(noise_mask, prev_is_noise)
    sentinel = vocabulary.vocab_size - tf.cumsum(tf.cast(first_noise, tokens.dtype))
    tokens = tf.where(first_noise, sentinel, tokens)
    return tf.boolean_mask(tokens, tf.logical_not(later_noise))


def nonnoise_span_to_unique_sentinel(
    tokens: tf.Tensor, noise_mask: tf.Tensor, vocabulary: seqio.Vocabulary
) -> tf.Tensor:
    """The targets' side: each non-noise span becomes one sentinel."""
    return noise_span_to_unique_sentinel(tokens, tf.logical_not(noise_mask), vocabulary)


@seqio.map_over_dataset(num_seeds=1)
def _random_chunk(x: Mapping[str, tf.Tensor], seed, key: str, max_length: int):
    tokens = x[key]
    num_chunks = (tf.size(tokens) + max_length - 1) // max_length
    start = max_length * tf.random.stateless_uniform(
        [], seed=seed, maxval=num_chunks, dtype=tf.int32
    )
    return {key: tokens[start : start + max_length]}


def select_random_chunk(
    dataset: tf.data.Dataset, key: str = "targets", max_length: int = _MAX_CHUNK_LENGTH
) -> tf.data.Dataset:
    """Keeps one random max_length-aligned chunk of each non-empty document."""
    dataset = dataset.filter(lambda x: tf.size(x[key]) > 0)
    return _random_chunk(dataset, key=key, max_length=max_length)


def reduce_concat_tokens(
    dataset: tf.data.Dataset, key: str = "targets", batch_size: int = _CONCAT_BATCH_SIZE
) -> tf.data.Dataset:
    """Concatenates groups of batch_size documents into one stream (less padding later)."""
    dataset = dataset.map(lambda x: {key: x[key]})
    dataset = dataset.padded_batch(batch_size, padded_shapes={key: [-1]})

    def concat(x):
        tokens = tf.reshape(x[key], [-1])
        return {key: tf.boolean_mask(tokens, tf.not_equal(tokens, 0))}

    return dataset.map(concat, num_parallel_calls=tf.data.AUTOTUNE)


def split_tokens(
    dataset: tf.data.Dataset, max_tokens: int, key: str = "targets"
) -> tf.data.Dataset:
    """Cuts each stream into consecutive segments of max_tokens (the last one shorter)."""

    def to_segments(x):
        tokens = x[key]
        n = tf.size(tokens)
        num_segments = (n + max_tokens - 1) // max_tokens
        padded = tf.pad(tokens, [[0, num_segments * max_tokens - n]])
        lengths = tf.minimum(max_tokens, n - max_tokens * tf.range(num_segments))
        return tf.data.Dataset.from_tensor_slices(
            {key: tf.reshape(padded, [num_segments, max_tokens]), "length": lengths}
        )

    dataset = dataset.flat_map(to_segments)
    return dataset.map(lambda x: {key: x[key][: x["length"]]})


@seqio.map_over_dataset(num_seeds=2)
def _denoise(x, seeds, vocabulary, noise_density, mean_noise_span_length):
    tokens = x["targets"]
    noise_mask = random_spans_noise_mask(
        tf.size(tokens), seeds, noise_density, mean_noise_span_length
    )
    return {
        "inputs": noise_span_to_unique_sentinel(tokens, noise_mask, vocabulary),
        "targets": nonnoise_span_to_unique_sentinel(tokens, noise_mask, vocabulary),
    }


def span_corruption(
    dataset: tf.data.Dataset,
    sequence_length: Mapping[str, int],
    output_features: Mapping[str, seqio.Feature],
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> tf.data.Dataset:
    """SeqIO preprocessor: tokenized "targets" documents -> span-corrupted inputs/targets.

    Run seqio.preprocessors.append_eos_after_trim after it, as T5 does.
    """
    tokens_length, targets_length = span_corruption_lengths(
        sequence_length["inputs"], noise_density, mean_noise_span_length
    )
    if sequence_length["targets"] < targets_length:
        raise ValueError(
            f"Span corruption of inputs {sequence_length['inputs']} needs targets of length "
            f">= {targets_length}, got {sequence_length['targets']}."
        )
    dataset = select_random_chunk(dataset)
    dataset = reduce_concat_tokens(dataset)
    dataset = split_tokens(dataset, tokens_length)
    return _denoise(
        dataset,
        vocabulary=output_features["targets"].vocabulary,
        noise_density=noise_density,
        mean_noise_span_length=mean_noise_span_length,
    )
