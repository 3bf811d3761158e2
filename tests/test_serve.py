"""shoplib.serve's gunicorn settings: what each worker does once its app is loaded."""

from __future__ import annotations

import gc

import pytest

from shoplib.serve import GC_YOUNG_THRESHOLD, gunicorn_options


@pytest.fixture
def collector_restored():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_a_loaded_worker_freezes_what_start_up_made_and_collects_the_young_less_often(collector_restored):
    made_at_start_up = [{"product": n} for n in range(1000)]  # tracked containers, as an app's caches are
    before = gc.get_freeze_count()
    options = gunicorn_options("catalog", "127.0.0.1", 8080, 8, "info")

    options["post_worker_init"](object())

    assert gc.get_freeze_count() >= before + len(made_at_start_up)
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
    # Objects made later, by requests, are collected as before.
    later = [{"order": 1}]
    later.append(later)  # a cycle: only the collector frees it
    del later
    assert gc.collect() >= 1
