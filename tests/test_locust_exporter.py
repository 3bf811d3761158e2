"""What the lab's Locust master serves Prometheus at /metrics (locustfiles/_exporter.py), read back by
prometheus_client's own parser of the text format."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from shop import load_locustfile_module

exporter = load_locustfile_module("_exporter")
Sent, exposition = exporter.Sent, exporter.exposition


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_requests_failures_and_users_by_service_and_request_name():
    text = exposition(
        [Sent("GET", "catalog /products/[id]", 120, 0), Sent("POST", "checkout /orders (declining card)", 7, 1)], 16
    )
    samples = _samples(text)
    product = (("method", "GET"), ("name", "catalog /products/[id]"), ("service", "catalog"))
    declined = (("method", "POST"), ("name", "checkout /orders (declining card)"), ("service", "checkout"))
    assert samples == {
        ("locust_requests_total", product): 120,
        ("locust_requests_total", declined): 7,
        ("locust_request_failures_total", product): 0,
        ("locust_request_failures_total", declined): 1,
        ("locust_users", ()): 16,
    }
    assert "# TYPE locust_requests_total counter" in text


def test_label_values_are_escaped():
    text = exposition([Sent("GET", 'catalog "odd"\\name\nnext', 1, 0)], 0)
    (labels,) = [dict(key) for (name, key) in _samples(text) if name == "locust_requests_total"]
    assert labels["name"] == 'catalog "odd"\\name\nnext'


def test_no_requests_yet_is_still_a_valid_exposition():
    assert _samples(exposition([], 0)) == {("locust_users", ()): 0}
