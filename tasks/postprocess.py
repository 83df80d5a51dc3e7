"""Postprocess functions shared by the SeqIO tasks and the Grain path (no TensorFlow)."""

from __future__ import annotations

from collections.abc import Mapping


def trivia_qa_postprocess(
    answer: str, example: Mapping | None = None, is_target: bool = False
) -> str | list[str]:
    """Predictions pass through; targets become the example's list of answer aliases."""
    if is_target and example is not None:
        return [a.decode("utf-8") if isinstance(a, bytes) else a for a in example["answers"]]
    return answer
