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
    # Objects made later, by requests, are still collected on their own (the collector is not turned off): once
    # more than the threshold of containers are made, a young collection has run without anyone asking.
    young_collections = gc.get_stats()[0]["collections"]
    made_by_requests = [[n] for n in range(2 * GC_YOUNG_THRESHOLD)]
    assert gc.isenabled()
    assert gc.get_stats()[0]["collections"] > young_collections
    del made_by_requests
