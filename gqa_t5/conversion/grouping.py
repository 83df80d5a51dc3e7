"""Which key/value heads share a pooled head: partitions of K heads into G equal groups.

`best_partition` minimises the sum of per-group costs: exactly (all partitions) when there
are at most `EXACT_MAX` of them, else greedily (each group seeded with the lowest remaining
head, grown by the head that adds the least cost). The cost is a callable on a sorted
tuple of head indices, memoised here, so it may be as expensive as a full pooling.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator

EXACT_MAX = 20000


def contiguous(num_heads: int, num_groups: int) -> list[tuple[int, ...]]:
    """The paper's groups: g*(K/G) .. (g+1)*(K/G)-1."""
    per = num_heads // num_groups
    return [tuple(range(g * per, (g + 1) * per)) for g in range(num_groups)]


def num_partitions(num_heads: int, num_groups: int) -> int:
    """Number of ways to split num_heads into num_groups unordered groups of equal size."""
    per = num_heads // num_groups
    return math.factorial(num_heads) // (
        math.factorial(per) ** num_groups * math.factorial(num_groups)
    )


def _partitions(heads: tuple[int, ...], per: int) -> Iterator[list[tuple[int, ...]]]:
    if not heads:
        yield []
        return
    first, rest = heads[0], heads[1:]
    for mates in itertools.combinations(rest, per - 1):
        group = (first, *mates)
        left = tuple(h for h in rest if h not in mates)
        for tail in _partitions(left, per):
            yield [group, *tail]


def best_partition(
    num_heads: int, num_groups: int, cost: Callable[[tuple[int, ...]], float]
) -> list[tuple[int, ...]]:
    """Groups (sorted by first head) minimising sum(cost(group)); ties keep contiguous."""
    per = num_heads // num_groups
    cost = functools.lru_cache(maxsize=None)(cost)
    total = lambda part: sum(cost(g) for g in part)
    best = contiguous(num_heads, num_groups)
    if per == 1 or num_groups == 1:
        return best
    if num_partitions(num_heads, num_groups) <= EXACT_MAX:
        best_cost = total(best)
        for part in _partitions(tuple(range(num_heads)), per):
            c = total(part)
            if c < best_cost - 1e-12 * abs(best_cost):
                best, best_cost = part, c
        return best
    left, greedy = list(range(num_heads)), []
    while left:
        group = [left.pop(0)]
        while len(group) < per:
            h = min(left, key=lambda h: cost(tuple(sorted((*group, h)))))
            group.append(h)
            left.remove(h)
        greedy.append(tuple(sorted(group)))
    return greedy if total(greedy) < total(best) else best
