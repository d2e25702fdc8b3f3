"""`piigate serve` settles the garbage collector before its first call: what start-up
built is frozen out of every later collection, and the young generation is collected
less often (the figures are in `settle_garbage_collector`'s docstring)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from piigate.cli.serve import GC_THRESHOLDS, settle_garbage_collector


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    built_at_start_up = [[] for _ in range(1000)]  # tracked by the collector
    gc.unfreeze()
    settle_garbage_collector()
    assert gc.get_freeze_count() >= len(built_at_start_up)
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700  # CPython's default, which the bench measured against
