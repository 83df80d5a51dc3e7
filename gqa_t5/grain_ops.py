"""NumPy versions of the postcache preprocessors and of seqio's EncDecFeatureConverter.

- `append_eos_after_trim`: seqio.preprocessors.append_eos_after_trim.
- Span corruption, T5's recipe as in `tasks/span_corruption.py`: a random chunk of each
  document, the documents of a group concatenated, cut into `tokens_length` segments
  (568 for inputs 512), a random-spans noise mask (density 0.15, mean span 3), each noise
  span replaced by one sentinel in the inputs (and each non-noise span in the targets),
  sentinels counting down from vocab_size - 1.
- `pack`: seqio.utils.trim_and_pack_dataset's greedy packing of a group of examples (seqio
  packs groups of max(feature_lengths) examples), segment ids and positions included.
- `packed_features` / `unpacked_features`: EncDecFeatureConverter's model features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

NOISE_DENSITY = 0.15
MEAN_NOISE_SPAN_LENGTH = 3.0
MAX_CHUNK_LENGTH = 65536
CONCAT_DOCUMENTS = 128  # reduce_concat_tokens' batch size
KEYS = ("inputs", "targets")


def append_eos_after_trim(
    ex: Mapping[str, np.ndarray], lengths: Mapping[str, int] | None, eos_id: int = 1
) -> dict:
    """Trim each of inputs/targets to length - 1 and append EOS (other keys pass through)."""
    out = dict(ex)
    for k in KEYS:
        if k in ex:
            v = np.asarray(ex[k], np.int32)
            if lengths is not None and lengths.get(k) is not None:
                v = v[: int(lengths[k]) - 1]
            out[k] = np.concatenate([v, np.asarray([eos_id], np.int32)])
    return out


def span_corruption_lengths(
    inputs_length: int,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> tuple[int, int]:
    """`tasks.span_lengths.span_corruption_lengths`: (568, 114) for inputs 512.

    Imported when called, not with this module: `import tasks` loads TensorFlow wherever it
    is installed, and the Grain path stays TF-free.
    """
    from tasks.span_lengths import span_corruption_lengths as lengths

    return lengths(inputs_length, noise_density, mean_noise_span_length)


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator):
    """Lengths of a uniformly random split of num_items into num_segments non-empty parts."""
    boundary = np.zeros(num_items - 1, np.int32)
    boundary[: num_segments - 1] = 1
    boundary = rng.permutation(boundary)
    segment_id = np.cumsum(np.concatenate([[0], boundary]))
    return np.bincount(segment_id, minlength=num_segments)


def random_spans_noise_mask(
    length: int,
    rng: np.random.Generator,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> np.ndarray:
    """Boolean [length] mask of alternating non-noise / noise spans, non-noise first."""
    orig_length, length = length, max(length, 2)
    num_noise = int(
        np.clip(np.round(np.float32(length) * np.float32(noise_density)), 1, length - 1)
    )
    num_spans = max(int(np.round(np.float32(num_noise) / np.float32(mean_noise_span_length))), 1)
    noise = _random_segmentation(num_noise, num_spans, rng)
    nonnoise = _random_segmentation(length - num_noise, num_spans, rng)
    spans = np.stack([nonnoise, noise], axis=1).reshape(-1)
    starts = np.zeros(length, np.int32)
    starts[np.cumsum(spans)[:-1]] = 1
    return (np.cumsum(starts) % 2 == 1)[:orig_length]


def noise_span_to_unique_sentinel(
    tokens: np.ndarray, noise: np.ndarray, vocab_size: int
) -> np.ndarray:
    prev = np.concatenate([[False], noise[:-1]])
    first = noise & ~prev
    out = np.where(first, vocab_size - np.cumsum(first), tokens).astype(np.int32)
    return out[~(noise & prev)]


def denoise(tokens: np.ndarray, rng: np.random.Generator, vocab_size: int) -> dict:
    """One segment -> {"inputs", "targets"} with sentinels (no EOS yet)."""
    mask = random_spans_noise_mask(len(tokens), rng)
    return {
        "inputs": noise_span_to_unique_sentinel(tokens, mask, vocab_size),
        "targets": noise_span_to_unique_sentinel(tokens, ~mask, vocab_size),
    }


def span_corruption(
    documents: Sequence[np.ndarray],
    rng: np.random.Generator,
    lengths: Mapping[str, int],
    vocab_size: int,
) -> list[dict]:
    """A group of tokenized documents -> span-corrupted examples (no EOS yet)."""
    tokens_length, targets_length = span_corruption_lengths(int(lengths["inputs"]))
    if int(lengths["targets"]) < targets_length:
        raise ValueError(
            f"Span corruption of inputs {lengths['inputs']} needs targets of length "
            f">= {targets_length}, got {lengths['targets']}."
        )
    chunks = []
    for doc in documents:
        doc = np.asarray(doc, np.int32)
        if doc.size == 0:
            continue
        num_chunks = -(-doc.size // MAX_CHUNK_LENGTH)
        start = MAX_CHUNK_LENGTH * int(rng.integers(num_chunks))
        chunks.append(doc[start : start + MAX_CHUNK_LENGTH])
    if not chunks:
        return []
    stream = np.concatenate(chunks)
    stream = stream[stream != 0]
    return [
        denoise(stream[i : i + tokens_length], rng, vocab_size)
        for i in range(0, stream.size, tokens_length)
    ]


def pack(examples: Sequence[Mapping[str, np.ndarray]], lengths: Mapping[str, int]) -> list[dict]:
    """seqio's greedy packing of one group: rows of tokens, segment ids and positions.

    Returns rows as {"inputs", "inputs_segment_ids", "inputs_positions", "targets", ...}
    plus "_first": the index in `examples` of each row's first example (resume points).
    """
    rows: list[dict] = []
    partial: dict[str, list[np.ndarray]] = {k: [] for k in KEYS}
    size = dict.fromkeys(KEYS, 0)
    first = 0

    def flush(start: int) -> None:
        row: dict = {"_first": start}
        for k in KEYS:
            n = int(lengths[k])
            tokens = np.zeros(n, np.int32)
            positions = np.zeros(n, np.int32)
            at = 0
            for piece in partial[k]:
                tokens[at : at + piece.size] = piece
                positions[at : at + piece.size] = np.arange(piece.size)
                at += piece.size
            # seqio: segment id = running count of position-0 tokens, zero on padding.
            seg = (np.cumsum(positions == 0) * (tokens != 0)).astype(np.int32)
            row[k], row[f"{k}_positions"], row[f"{k}_segment_ids"] = tokens, positions, seg
        rows.append(row)

    for i, ex in enumerate(examples):
        one = {}
        for k in KEYS:
            v = np.asarray(ex[k], np.int32)[: int(lengths[k])]
            one[k] = v[: int(np.count_nonzero(v))]
        if any(size[k] + one[k].size > int(lengths[k]) for k in KEYS):
            flush(first)
            partial = {k: [] for k in KEYS}
            size = dict.fromkeys(KEYS, 0)
            first = i
        for k in KEYS:
            partial[k].append(one[k])
            size[k] += one[k].size
    flush(first)
    return rows


def _autoregressive(targets: np.ndarray, segment_ids: np.ndarray | None = None) -> np.ndarray:
    """seqio.utils.make_autoregressive_inputs with bos 0: shift right, 0 at segment starts."""
    shifted = np.concatenate([np.zeros(targets.shape[:-1] + (1,), np.int32), targets[..., :-1]], -1)
    if segment_ids is None:
        return shifted
    prev = np.concatenate(
        [np.zeros(segment_ids.shape[:-1] + (1,), np.int32), segment_ids[..., :-1]], -1
    )
    return np.where(segment_ids == prev, shifted, 0).astype(np.int32)


def packed_features(row: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """EncDecFeatureConverter(pack=True)'s features of one packed row."""
    return {
        "encoder_input_tokens": row["inputs"],
        "decoder_target_tokens": row["targets"],
        "decoder_input_tokens": _autoregressive(row["targets"], row["targets_segment_ids"]),
        "decoder_loss_weights": (row["targets"] != 0).astype(np.int32),
        "encoder_segment_ids": row["inputs_segment_ids"].astype(np.int32),
        "decoder_segment_ids": row["targets_segment_ids"].astype(np.int32),
        "encoder_positions": row["inputs_positions"],
        "decoder_positions": row["targets_positions"],
    }


def unpacked_features(ex: Mapping[str, np.ndarray], lengths: Mapping[str, int]) -> dict:
    """EncDecFeatureConverter(pack=False)'s features: trimmed and zero-padded."""
    padded = {}
    for k in KEYS:
        n = int(lengths[k])
        v = np.asarray(ex[k], np.int32)[:n]
        padded[k] = np.pad(v, (0, n - v.size))
    return {
        "encoder_input_tokens": padded["inputs"],
        "decoder_target_tokens": padded["targets"],
        "decoder_input_tokens": _autoregressive(padded["targets"]),
        "decoder_loss_weights": (padded["targets"] != 0).astype(np.int32),
    }
