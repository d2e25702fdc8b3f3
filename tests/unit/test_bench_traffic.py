"""The benchmark's workload planning and statistics."""

from __future__ import annotations

import math

import pytest

from bench.traffic import (
    achieved_repeat_share,
    interleave,
    percentile,
    plan_sequence,
    split_inflight,
)


def test_no_repeats_asked_presents_every_token_once_then_repeats() -> None:
    sequence = plan_sequence(pool_size=5, repeat_share=0.0, length=8, seed=1)
    assert sequence[:5] == [0, 1, 2, 3, 4]
    assert all(0 <= i < 5 for i in sequence[5:])  # the pool ran out: repeats only


def test_all_repeats_keeps_presenting_the_first_token() -> None:
    assert plan_sequence(pool_size=5, repeat_share=1.0, length=4, seed=1) == [0, 0, 0, 0]


def test_the_asked_share_is_achieved_while_the_pool_lasts() -> None:
    sequence = plan_sequence(pool_size=100_000, repeat_share=0.3, length=20_000, seed=3)
    assert achieved_repeat_share(sequence, len(sequence)) == pytest.approx(0.3, abs=0.02)
    fresh = [i for n, i in enumerate(sequence) if i not in sequence[:n]][:50]
    assert fresh == list(range(50))  # first presentations come in pool order


def test_plans_are_deterministic_per_seed() -> None:
    assert plan_sequence(50, 0.5, 200, seed=9) == plan_sequence(50, 0.5, 200, seed=9)
    assert plan_sequence(50, 0.5, 200, seed=9) != plan_sequence(50, 0.5, 200, seed=10)


def test_achieved_share_counts_only_what_was_sent() -> None:
    assert achieved_repeat_share([0, 1, 0, 0], sent=2) == 0.0
    assert achieved_repeat_share([0, 1, 0, 0], sent=4) == 0.5
    assert achieved_repeat_share([0, 1], sent=0) == 0.0


@pytest.mark.parametrize(
    ("inflight", "connections", "expected"),
    [(1, 4, [1]), (16, 4, [4, 4, 4, 4]), (6, 4, [2, 2, 1, 1]), (3, 8, [1, 1, 1])],
)
def test_calls_in_flight_spread_over_connections(
    inflight: int, connections: int, expected: list[int]
) -> None:
    assert split_inflight(inflight, connections) == expected


def test_nothing_to_split_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        split_inflight(0, 4)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 1) == 7.0
    assert math.isnan(percentile([], 50))


def test_interleave_keeps_both_orders_and_every_item() -> None:
    merged = interleave(["a1", "a2", "a3"], ["b1", "b2"], 0.5, seed=4)
    assert sorted(merged) == ["a1", "a2", "a3", "b1", "b2"]
    assert [m for m in merged if m.startswith("a")] == ["a1", "a2", "a3"]
    assert [m for m in merged if m.startswith("b")] == ["b1", "b2"]
    assert interleave(["a"], ["b"], 0.0, seed=4) == ["a", "b"]
    assert interleave(["a"], ["b"], 1.0, seed=4) == ["b", "a"]
