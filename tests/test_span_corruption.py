"""Span corruption: lengths, noise statistics, sentinel interleaving, the full preprocessor."""

import types

import numpy as np
import pytest
import seqio
import tensorflow as tf

from tasks import span_corruption as sc

VOCAB = types.SimpleNamespace(vocab_size=1000)  # sentinels 999, 998, ...
FEATURES = {"targets": types.SimpleNamespace(vocabulary=VOCAB)}


def _spans(mask):
    """Lengths of the runs of True in a boolean vector."""
    padded = np.concatenate([[False], mask, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(padded))
    return edges[1::2] - edges[::2]


def _reconstruct(inputs, targets, vocab_size=VOCAB.vocab_size, num_sentinels=100):
    """Undo span corruption: each input sentinel k -> target tokens after target sentinel k."""
    is_sentinel = lambda t: t >= vocab_size - num_sentinels
    fills, current = {}, None
    for t in targets:
        if is_sentinel(t):
            current = int(t)
            fills[current] = []
        else:
            fills[current].append(int(t))
    out = []
    for t in inputs:
        out.extend(fills[int(t)] if is_sentinel(t) else [int(t)])
    return out


def test_lengths_match_t5_for_inputs_512():
    assert sc.span_corruption_lengths(512) == (568, 114)


@pytest.mark.parametrize("inputs_length", [64, 512, 1024])
def test_lengths_are_the_longest_that_fit(inputs_length):
    def corrupted(n):  # float64 reference: non-noise + one sentinel per span + EOS
        noise = round(n * 0.15)
        spans = round(noise / 3)
        return n - noise + spans + 1, noise + spans + 1

    tokens, targets = sc.span_corruption_lengths(inputs_length)
    assert corrupted(tokens)[0] <= inputs_length < corrupted(tokens + 1)[0]
    assert targets == corrupted(tokens)[1]


def test_sentinels_hand_computed():
    tokens = tf.constant([10, 11, 12, 13, 14, 15, 16, 17])
    mask = tf.constant([False, False, True, True, False, False, True, False])
    inputs = sc.noise_span_to_unique_sentinel(tokens, mask, VOCAB).numpy().tolist()
    targets = sc.nonnoise_span_to_unique_sentinel(tokens, mask, VOCAB).numpy().tolist()
    assert inputs == [10, 11, 999, 14, 15, 998, 17]
    assert targets == [999, 12, 13, 998, 16, 997]


def test_noise_mask_exact_counts_for_a_full_segment():
    for seed in range(30):
        seeds = [tf.constant([seed, 1]), tf.constant([seed, 2])]
        mask = sc.random_spans_noise_mask(tf.constant(568), seeds).numpy()
        spans = _spans(mask)
        assert mask.shape == (568,) and not mask[0]  # starts with a non-noise span
        assert mask.sum() == 85  # round(568 * 0.15)
        assert len(spans) == 28 and spans.min() >= 1  # round(85 / 3) non-empty spans
        assert len(_spans(~mask)) == 28  # alternating: as many non-noise spans


def test_measured_noise_density_and_mean_span_length():
    rng = np.random.default_rng(0)
    noise = spans = total = 0
    lengths = []
    for i, length in enumerate(rng.integers(50, 1200, size=300)):
        seeds = [tf.constant([i, 7]), tf.constant([i, 8])]
        mask = sc.random_spans_noise_mask(tf.constant(int(length)), seeds).numpy()
        noise += mask.sum()
        spans += len(_spans(mask))
        total += length
        lengths.extend(_spans(mask))
    assert noise / total == pytest.approx(0.15, abs=0.002)
    assert noise / spans == pytest.approx(3.0, abs=0.05)
    # Spans vary in length (a random segmentation), not a fixed 3.
    assert min(lengths) == 1 and max(lengths) >= 8


def test_select_random_chunk_is_aligned_and_covers_all_chunks():
    doc = tf.range(3, 28)  # 25 tokens -> chunks [0:10], [10:20], [20:25]
    seen = set()
    with seqio.map_seed_manager(5):
        ds = tf.data.Dataset.from_tensors({"targets": doc}).repeat(40)
        ds = sc.select_random_chunk(ds, max_length=10)
        for ex in ds.as_numpy_iterator():
            seen.add(tuple(ex["targets"].tolist()))
    full = list(range(3, 28))
    assert seen == {tuple(full[0:10]), tuple(full[10:20]), tuple(full[20:25])}


def _docs(seed=0, n=60):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, 900, size=int(rng.integers(1, 300))).astype(np.int32) for _ in range(n)]


def _corrupt(docs, seed):
    ds = tf.data.Dataset.from_generator(
        lambda: ({"targets": d} for d in docs),
        output_signature={"targets": tf.TensorSpec([None], tf.int32)},
    )
    with seqio.map_seed_manager(seed):
        ds = sc.span_corruption(ds, {"inputs": 512, "targets": 114}, FEATURES)
    return list(ds.as_numpy_iterator())


def test_span_corruption_preprocessor_round_trips_and_fits():
    docs = _docs()
    examples = _corrupt(docs, seed=3)
    stream = np.concatenate(docs).tolist()
    assert len(examples) == -(-len(stream) // 568)  # 568-token segments, last one shorter
    rebuilt = []
    for i, ex in enumerate(examples):
        inputs, targets = ex["inputs"], ex["targets"]
        if i < len(examples) - 1:  # full segments fill inputs 511 + EOS and targets 113 + EOS
            assert (len(inputs), len(targets)) == (511, 113)
        assert len(inputs) <= 511 and len(targets) <= 113
        sentinels_in = inputs[inputs >= 900].tolist()
        sentinels_out = targets[targets >= 900].tolist()
        assert sentinels_in == sentinels_out == list(range(999, 999 - len(sentinels_in), -1))
        assert targets[0] == 999  # targets open with <extra_id_0>
        rebuilt.extend(_reconstruct(inputs, targets))
    assert rebuilt == stream


def test_span_corruption_is_seeded():
    docs = _docs(seed=1, n=10)
    a, b, c = _corrupt(docs, 3), _corrupt(docs, 3), _corrupt(docs, 4)
    assert all(np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, c, strict=True))


def test_span_corruption_rejects_short_targets():
    ds = tf.data.Dataset.from_tensors({"targets": tf.range(3, 50)})
    with pytest.raises(ValueError, match="targets of length >= 114, got 100"):
        sc.span_corruption(ds, {"inputs": 512, "targets": 100}, FEATURES)
