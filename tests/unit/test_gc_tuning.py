"""A serving process's collector: startup objects frozen, young collections rarer."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ordermesh_platform.gc_tuning import OLDER_THRESHOLDS, YOUNG_THRESHOLD, tune_for_serving


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_what_exists_when_serving_starts_is_frozen_and_young_collections_are_rarer() -> None:
    held = [[i] for i in range(100)]  # containers alive at the start, as modules are
    gc.unfreeze()
    tune_for_serving()
    assert gc.get_freeze_count() >= len(held)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    assert YOUNG_THRESHOLD > 700  # Python's default, which this is meant to raise
