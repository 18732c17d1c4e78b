import gc
from collections.abc import Iterator

import pytest

from wiring import services


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_a_reading_service_freezes_what_exists_and_collects_less_often(restored_gc: None) -> None:
    kept = [{"made": "at start"} for _ in range(1000)]
    services.steady_gc()
    assert gc.get_threshold() == services.GC_THRESHOLDS
    assert gc.get_freeze_count() >= len(kept)
