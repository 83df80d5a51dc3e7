"""T5's span-corruption segment lengths, in plain Python (TF-free).

Shared by the SeqIO preprocessor (`tasks.span_corruption`) and its NumPy twin
(`gqa_t5.grain_ops`).
"""

from __future__ import annotations

NOISE_DENSITY = 0.15
MEAN_NOISE_SPAN_LENGTH = 3.0


def span_corruption_lengths(
    inputs_length: int,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> tuple[int, int]:
    """Longest raw segment whose corrupted inputs (+ EOS) fit inputs_length; its target length.

    Returns (tokens_length, targets_length); (568, 114) for inputs 512 at T5's settings.
    """

    def corrupted_lengths(tokens_length: int) -> tuple[int, int]:
        num_noise = int(round(tokens_length * noise_density))
        num_spans = int(round(num_noise / mean_noise_span_length))
        # One sentinel per span on each side, plus EOS.
        return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length - 1
    while corrupted_lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = corrupted_lengths(tokens_length)
    # At density 0.5 the targets could end up one longer than the inputs; T5 trims one.
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length
