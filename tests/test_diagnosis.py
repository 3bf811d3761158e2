"""The diagnosis engine in process: trace arithmetic, blame, ranking and the command line's contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from incident import cli
from incident.backends import BackendError, Backends
from incident.blame import error_origins, errors_blame, latency_blame, peer_services
from incident.diagnosis import Diagnoser, parse_window
from incident.traces import Span, hex_id, parse_trace, self_time_ns

MS = 1_000_000


def span(span_id, parent, service, name, start_ms, end_ms, *, kind="internal", error=False, trace="t1", **attributes):  # noqa: PLR0917
    return Span(trace, span_id, parent, service, name, kind, start_ms * MS, end_ms * MS, error, attributes)


def order_trace(trace="t1", payment_ms=60, wait_ms=2, fail_payment=False, payment_answers=True):
    """checkout POST /orders -> charge payment -> client call -> payment POST /payments -> gateway."""
    end = 12 + payment_ms + wait_ms  # when the gateway answers
    fail = {"error": fail_payment, "trace": trace}
    peer = {"server.address": "127.0.0.1", "server.port": 8083}
    spans = [
        span("a", "", "checkout", "POST /orders", 0, end + 10, kind="server", **fail),
        span("b", "a", "checkout", "charge payment", 5, end + 5, **fail),
        span("c", "b", "checkout", "POST", 6, end + 4, kind="client", **fail, **peer),
    ]
    if payment_answers:
        spans += [
            span("d", "c", "payment", "POST /payments", 8 + wait_ms, end + 2, kind="server", **fail),
            span("e", "d", "payment", "gateway authorize", 12 + wait_ms, end, kind="client", **fail),
        ]
    return spans


def test_self_time_is_the_duration_less_the_union_of_the_children():
    parent = span("p", "", "s", "p", 0, 100)
    children = [span("1", "p", "s", "x", 10, 30), span("2", "p", "s", "y", 20, 50), span("3", "p", "s", "z", 60, 70)]
    assert self_time_ns(parent, children) == 50 * MS
    assert self_time_ns(parent, [span("4", "p", "s", "late", 90, 150)]) == 90 * MS  # clipped to the parent


@pytest.mark.parametrize(
    ("raw", "digits", "expected"),
    [
        ("AAECAwQFBgcICQoLDA0ODw==", 32, "000102030405060708090a0b0c0d0e0f"),
        ("2a3b", 32, "0" * 28 + "2a3b"),  # Tempo's search drops leading zeros
        ("AAECAwQFBgc=", 16, "0001020304050607"),
        ("ABCDEF0123456789", 16, "abcdef0123456789"),
    ],
)
def test_ids_are_read_as_hex_whatever_the_encoding(raw, digits, expected):
    assert hex_id(raw, digits) == expected


def test_a_tempo_trace_is_parsed_into_spans():
    body = {
        "trace": {
            "resourceSpans": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "payment"}}]},
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": "AAECAwQFBgcICQoLDA0ODw==",
                                    "spanId": "AAECAwQFBgc=",
                                    "parentSpanId": "AQIDBAUGBwg=",
                                    "name": "gateway authorize",
                                    "kind": "SPAN_KIND_CLIENT",
                                    "startTimeUnixNano": "1000",
                                    "endTimeUnixNano": "5000",
                                    "attributes": [{"key": "payment.amount_cents", "value": {"intValue": "1999"}}],
                                    "status": {"code": "STATUS_CODE_ERROR"},
                                }
                            ]
                        }
                    ],
                }
            ]
        }
    }
    (parsed,) = parse_trace(body)
    assert (parsed.service, parsed.name, parsed.kind, parsed.error) == ("payment", "gateway authorize", "client", True)
    assert parsed.parent_id == "0102030405060708" and parsed.duration_ns == 4000
    assert parsed.attributes["payment.amount_cents"] == 1999


def test_added_time_in_a_callee_is_blamed_on_the_callee_not_its_callers():
    baseline = [order_trace(f"b{i}") for i in range(3)]
    window = [order_trace(f"w{i}", payment_ms=400) for i in range(3)]
    blame = latency_blame(window, baseline)
    assert blame.top() == ("payment", "gateway authorize")
    assert blame.shares[blame.top()] > 0.9


def test_waiting_on_a_stalled_callee_is_blamed_on_the_callee():
    baseline = [order_trace(f"b{i}") for i in range(3)]
    window = [order_trace(f"w{i}", wait_ms=2000) for i in range(3)]  # queued before payment ran it
    assert latency_blame(window, baseline).top() == ("payment", "POST /payments")


def test_an_error_starts_at_the_deepest_failing_span():
    trace = order_trace(fail_payment=True)
    assert error_origins(trace, {}) == [(("payment", "gateway authorize"), "errors")]


def test_a_callee_that_never_answered_is_the_origin_by_its_address():
    peers = peer_services([order_trace("ok")])
    assert peers == {"127.0.0.1:8083": "payment"}
    unanswered = order_trace("dead", fail_payment=True, payment_answers=False)
    assert error_origins(unanswered, peers) == [(("payment", ""), "down")]
    blame, symptoms = errors_blame([unanswered], [order_trace("ok")])
    assert blame.top() == ("payment", "") and symptoms[("payment", "")] == "down"


@pytest.mark.parametrize(("raw", "seconds"), [("90s", 90), ("5m", 300), ("1h", 3600)])
def test_windows(raw, seconds):
    assert parse_window(raw) == seconds


@pytest.mark.parametrize("raw", ["5", "5x", "-1m", "2d", "5s", "25h", ""])
def test_bad_windows_are_refused_with_the_reason(raw):
    with pytest.raises(ValueError, match=r"duration|between"):
        parse_window(raw)


def prometheus_answers(window: dict[str, list], baseline: dict[str, list]):
    """A transport whose Prometheus answers each query from the table whose key is a fragment of it (the
    baseline table for `offset` queries); Tempo and Loki are unreachable."""

    def transport(backend: str, path: str, params: Any) -> Any:
        if backend != "prometheus":
            raise BackendError(backend, "cannot reach it (test)")
        if path.endswith("query_exemplars"):
            return {"status": "success", "data": []}
        query = params["query"]
        table = baseline if "offset" in query else window
        series = next((rows for fragment, rows in table.items() if fragment in query), [])
        result = [{"metric": labels, "value": [0, str(value)]} for labels, value in series]
        return {"status": "success", "data": {"resultType": "vector", "result": result}}

    return transport


def route(service, method, path):
    return {"service": service, "method": method, "route": path}


COUNT, SUM = "http_request_duration_seconds_count[", "http_request_duration_seconds_sum["


def test_metrics_alone_blame_the_callee_when_its_caller_is_slow_too():
    orders, payments = route("checkout", "POST", "/orders"), route("payment", "POST", "/payments")
    up = [({"service": s}, 1.0) for s in ("checkout", "payment", "auth", "catalog")]
    transport = prometheus_answers(
        window={COUNT: [(orders, 100), (payments, 100)], SUM: [(orders, 60.0), (payments, 45.0)], "up{": up},
        baseline={COUNT: [(orders, 100), (payments, 100)], SUM: [(orders, 15.0), (payments, 6.0)]},
    )
    diagnosis = Diagnoser(Backends(transport)).diagnose(60, end=1_000_000)
    assert diagnosis.culprit is not None
    assert (diagnosis.culprit.service, diagnosis.culprit.symptom) == ("payment", "latency")
    assert diagnosis.culprit.operation == "POST /payments"
    assert diagnosis.partial and set(diagnosis.unavailable) == {"tempo", "loki"}


def test_a_healthy_shop_by_metrics_is_healthy_and_says_what_was_unreadable():
    steady = {COUNT: [(route("checkout", "POST", "/orders"), 100)], SUM: [(route("checkout", "POST", "/orders"), 10.0)]}
    transport = prometheus_answers(window=steady, baseline=steady)
    diagnosis = Diagnoser(Backends(transport)).diagnose(60, end=1_000_000)
    assert (diagnosis.status, diagnosis.culprit) == ("healthy", None)
    document = diagnosis.to_json()
    assert document["partial"] is True and document["unavailable"]["tempo"].startswith("cannot reach")
    assert set(document) >= {"status", "culprit", "confidence", "candidates", "evidence", "window"}


def test_nothing_readable_is_unknown_not_healthy(monkeypatch, capsys):
    def unreachable(backend, path, params):
        raise BackendError(backend, "cannot reach it (test)")

    monkeypatch.setattr(cli, "http_transport", lambda urls, timeout: unreachable)
    assert cli.main(["diagnose", "--json"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == "unknown"
    assert "prometheus could not be read: cannot reach it (test)" in err


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["diagnose", "--window", "5x"], {}, "--window: expected a duration"),
        (["diagnose", "--prometheus", "ftp://x"], {}, "--prometheus: expected an http(s) URL"),
        (["gate", "--p95", "fast"], {}, "--p95: expected a latency"),
        (["gate", "--error-ratio", "2"], {}, "--error-ratio: must be between 0 and 1"),
        (["diagnose"], {"LOKI_URL": "loki:3100"}, "LOKI_URL: expected an http(s) URL"),
        (["rollback"], {}, "invalid choice: 'rollback'"),
    ],
)
def test_bad_arguments_are_one_clear_line_and_exit_2(monkeypatch, capsys, argv, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        code = cli.main(argv)
    except SystemExit as stopped:  # argparse's own exit
        code = stopped.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.integration
@pytest.mark.parametrize("command", [[], ["diagnose"], ["gate"]])
def test_the_shoplab_command_is_installed_with_help_everywhere(command):
    shoplab = Path(sys.executable).parent / "shoplab"  # the console script `make` installs into .venv
    result = subprocess.run([str(shoplab), *command, "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("usage: shoplab"), result.stderr
