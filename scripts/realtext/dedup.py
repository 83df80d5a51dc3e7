"""Splits by a stable hash, exact and near-duplicate detection (MinHash LSH), n-gram overlap.

Near-duplicates: two texts whose word-trigram sets have Jaccard similarity J share at
least one of `BANDS` LSH keys (each `ROWS` MinHash values) with probability
1 - (1 - J**ROWS)**BANDS: 0.98 at J = 0.8, 0.40 at J = 0.5, 0.06 at J = 0.3. Texts under
`MIN_SHINGLE_WORDS` words are compared exactly after normalisation.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable, Iterable

import numpy as np

BANDS, ROWS = 8, 4
MIN_SHINGLE_WORDS = 8
OVERLAP_N = 10  # a paragraph sharing a 10-word sequence with a dev/test text is removed
_PRIME = (1 << 61) - 1
_rng = np.random.default_rng(20231)
_A = _rng.integers(1, 1 << 31, size=BANDS * ROWS, dtype=np.uint64)
_B = _rng.integers(0, 1 << 31, size=BANDS * ROWS, dtype=np.uint64)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def split_of(source_id: str, validation: float, test: float) -> str:
    """'test', 'validation' or 'train' from the SHA-1 of the id (stable across runs)."""
    bucket = int(hashlib.sha1(source_id.encode("utf-8")).hexdigest()[:8], 16) / 0x100000000
    if bucket < test:
        return "test"
    if bucket < test + validation:
        return "validation"
    return "train"


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words (punctuation, case and spacing ignored)."""
    return _WORD.findall(text.lower())


def normalized(text: str) -> str:
    """The text's words joined by one space, digits kept."""
    return " ".join(words(text))


def lsh_keys(text: str) -> list[str]:
    """Band keys of the text's MinHash signature, or one exact key for short texts."""
    ws = words(text)
    if len(ws) < MIN_SHINGLE_WORDS:
        return ["x" + " ".join(ws)]
    shingles = {" ".join(ws[i : i + 3]) for i in range(len(ws) - 2)}
    h = np.fromiter((zlib.crc32(s.encode()) for s in shingles), np.uint64, len(shingles))
    # (a * h + b) mod p with h, a < 2**32 and b < 2**31 stays below 2**64.
    sig = ((h[:, None] * _A[None, :] + _B[None, :]) % _PRIME).min(axis=0)
    return [
        f"{band}:{sig[band * ROWS : (band + 1) * ROWS].tobytes().hex()}" for band in range(BANDS)
    ]


class NearDuplicateIndex:
    """Remembers texts' LSH keys; `seen(text)` is True when a near-duplicate was added."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def add(self, text: str) -> None:
        self.keys.update(lsh_keys(text))

    def seen(self, text: str) -> bool:
        return any(k in self.keys for k in lsh_keys(text))

    def add_if_new(self, text: str) -> bool:
        """Adds the text and returns True unless a near-duplicate was already there."""
        keys = lsh_keys(text)
        if any(k in self.keys for k in keys):
            return False
        self.keys.update(keys)
        return True


def _ngram_hashes(ws: list[str], n: int) -> Iterable[int]:
    return (zlib.crc32(" ".join(ws[i : i + n]).encode()) for i in range(len(ws) - n + 1))


class OverlapIndex:
    """Word n-grams of held-out texts; `overlaps(paragraph)` if it shares one (or equals one)."""

    def __init__(self, n: int = OVERLAP_N) -> None:
        self.n = n
        self.grams: set[int] = set()
        self.short: set[str] = set()

    def add(self, text: str) -> None:
        ws = words(text)
        if len(ws) >= self.n:
            self.grams.update(_ngram_hashes(ws, self.n))
        elif len(ws) >= 4:
            self.short.add(" ".join(ws))

    def overlaps(self, text: str) -> bool:
        ws = words(text)
        if " ".join(ws) in self.short:
            return True
        return any(h in self.grams for h in _ngram_hashes(ws, self.n))


def remove_cross_split_duplicates(
    splits: dict[str, list[dict]], key: str, key_fn: Callable[[str], str] | None = None
) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """Drops validation/test examples near-duplicating train (and test ones duplicating
    validation), and exact repeats within a split; returns the kept splits and counts.

    `key_fn(row[key])` is the text compared (default the field itself), e.g. a question
    without its template words.
    """
    index = NearDuplicateIndex()
    kept: dict[str, list[dict]] = {}
    removed: dict[str, int] = {}
    for split in ("train", "validation", "test"):
        rows = splits.get(split, [])
        texts = [key_fn(r[key]) if key_fn else r[key] for r in rows]
        if split == "train":
            exact: set[str] = set()
            out = []
            for row, text in zip(rows, texts, strict=True):
                norm = normalized(text)
                if norm not in exact:
                    exact.add(norm)
                    out.append(row)
                    index.add(text)
        else:
            out = []
            local = NearDuplicateIndex()
            for row, text in zip(rows, texts, strict=True):
                if not index.seen(text) and local.add_if_new(text):
                    out.append(row)
            index.keys.update(local.keys)
        removed[split] = len(rows) - len(out)
        kept[split] = out
    return kept, removed
