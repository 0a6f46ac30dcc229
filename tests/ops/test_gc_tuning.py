"""The server process's garbage-collector settings (ops/gc_tuning.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gyoza_grpc.server.ops.gc_tuning import SERVER_THRESHOLDS, tune_for_server


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_tuning_sets_the_thresholds_and_freezes_start_up_objects() -> None:
    tune_for_server()
    assert gc.get_threshold() == SERVER_THRESHOLDS
    assert gc.get_freeze_count() > 0
