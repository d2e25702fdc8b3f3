"""The workload, pure: which subject token each call presents, and the statistics of a run.

Real traffic is many users, each presenting their current access token, some of them
several times in a short while (a page that makes several calls). `plan_sequence` draws
each call's token: with probability `repeat_share` a token already presented in this run
(uniformly among those), otherwise the next never-presented token of the pool. When the
pool runs out every further call is a repeat, so the share actually achieved is computed
from what was sent (`achieved_repeat_share`) and reported next to the one asked for.

A gateway that caches verified tokens (piigate does) verifies only first presentations;
one that verifies every call (the reference) does not care. Each in-flight level gets a
pool of its own, so a token verified during one level is never "fresh" in the next.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def plan_sequence(pool_size: int, repeat_share: float, length: int, seed: int) -> list[int]:
    """`length` indexes into a pool of `pool_size` tokens (see the module docstring)."""
    if pool_size < 1 or length < 0 or not 0.0 <= repeat_share <= 1.0:
        raise ValueError("pool_size >= 1, length >= 0, repeat_share in [0, 1]")
    rng = random.Random(seed)
    sequence: list[int] = []
    fresh = 0
    for _ in range(length):
        if fresh == 0 or (fresh < pool_size and rng.random() >= repeat_share):
            sequence.append(fresh)
            fresh += 1
        else:
            sequence.append(rng.randrange(fresh))
    return sequence


def achieved_repeat_share(sequence: Sequence[int], sent: int) -> float:
    """Share of the first `sent` calls whose token had been presented before in the run."""
    sent = min(sent, len(sequence))
    if sent == 0:
        return 0.0
    return 1.0 - len(set(sequence[:sent])) / sent


def split_inflight(inflight: int, connections: int) -> list[int]:
    """Calls in flight per connection: `inflight` spread over at most `connections`
    connections, none idle (1 in flight is one connection with one call)."""
    if inflight < 1 or connections < 1:
        raise ValueError("inflight and connections must be positive")
    used = min(inflight, connections)
    base, extra = divmod(inflight, used)
    return [base + (1 if i < extra else 0) for i in range(used)]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of ascending values, nearest rank; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def interleave(first: Sequence[T], second: Sequence[T], second_share: float, seed: int) -> list[T]:
    """Both lists merged in a seeded random order in which, at every point, about
    `second_share` of the items come from `second` (until one list runs out)."""
    rng = random.Random(seed)
    out: list[T] = []
    i = j = 0
    while i < len(first) or j < len(second):
        take_second = j < len(second) and (i >= len(first) or rng.random() < second_share)
        if take_second:
            out.append(second[j])
            j += 1
        else:
            out.append(first[i])
            i += 1
    return out
