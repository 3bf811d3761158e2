"""The diagnosis engine in process: trace arithmetic, blame, ranking and the command line's contract."""

from __future__ import annotations

import ast
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from backend_doubles import instant_query, query_range, trace_json
from backend_doubles import search as double_search
from incident import cli, diagnosis
from incident.backends import BackendError, Backends, replaying
from incident.blame import error_origins, errors_blame, latency_blame, peer_services
from incident.diagnosis import Diagnoser, parse_window
from incident.traces import Span, hex_id, parse_trace, self_time_ns
from otlp_receiver import LogRecord as OtlpLog
from otlp_receiver import OtlpReceiver
from otlp_receiver import Span as OtlpSpan

MS = 1_000_000


def span(span_id, parent, service, name, start_ms, end_ms, *, kind="internal", error=False, trace="t1", **attributes):  # noqa: PLR0917
    return Span(trace, span_id, parent, service, name, kind, start_ms * MS, end_ms * MS, error, attributes)


def order_trace(trace="t1", payment_ms=60, wait_ms=2, fail_payment=False, payment_answers=True):
    """checkout POST /orders -> charge payment -> client call -> payment POST /payments -> gateway."""
    end = 12 + payment_ms + wait_ms  # when the gateway answers
    fail = {"error": fail_payment, "trace": trace}
    peer = {"http.url": "http://127.0.0.1:8083/payments"}  # what the shop's client spans record
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

    monkeypatch.setattr(diagnosis, "http_transport", lambda urls, timeout: unreachable)
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
        (["undo"], {}, "invalid choice: 'undo'"),
        (["deploy", "payment", "2.5.0", "--canary", "150"], {}, "--canary: must be between 0 and 100"),
        (["rollback", "billing"], {}, "invalid choice: 'billing'"),
        (["scenario", "run", "nope"], {}, "invalid choice: 'nope'"),
        (["releases"], {"PAYMENT_URL": "payment"}, "PAYMENT_URL: expected an http(s) URL"),
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


FAULT_INTERNALS = ("/admin/faults", "shop_fault_active", "shop.fault.injected", "FaultRegistry", "shoplib.faults")


@pytest.mark.parametrize("module", ["backends", "blame", "cli", "diagnosis", "links", "metrics", "report", "traces"])
def test_diagnosis_reads_no_fault_bookkeeping(module):
    """From symptoms only: no module behind `shoplab diagnose` names the shop's fault switches or imports the
    drills (the one place fault_set appears is the filter that keeps those log lines out)."""
    source = (Path(cli.__file__).parent / f"{module}.py").read_text()
    assert not [name for name in FAULT_INTERNALS if name in source]
    tree = ast.parse(source)
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "drills" not in imported and "incident.drills" not in imported
    assert source.count("fault_set") <= 1 and ("fault_set" not in source or 'NOT_SYMPTOMS = "fault_set' in source)


# --- recorded incidents: the real Prometheus, Tempo 3.0.3 and Loki 3.7.6 (tests/fixtures/diagnosis/README.md) ---

FIXTURES = Path(__file__).parent / "fixtures" / "diagnosis"
RECORDINGS = sorted(FIXTURES.glob("*.json.gz"))


def recording(path: Path) -> dict[str, Any]:
    return json.loads(gzip.decompress(path.read_bytes()))


def test_there_are_recordings_of_real_backends():
    assert len(RECORDINGS) >= 10
    assert {recording(path)["drill"] for path in RECORDINGS} >= {"healthy", "stalled-payment", "missing-index"}


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda path: path.name.removesuffix(".json.gz"))
def test_a_recorded_incident_is_diagnosed_as_it_was_live(path):
    recorded = recording(path)
    diagnosis = Diagnoser(Backends(replaying(recorded["exchanges"]))).diagnose(recorded["window_s"], recorded["end"])
    # Every request was one the recording answered; a backend that was down while recording is named.
    assert set(diagnosis.unavailable) == {e["backend"] for e in recorded["exchanges"] if "error" in e}
    expected = recorded["expected"]
    if expected is None:
        assert diagnosis.status == "healthy" and diagnosis.culprit is None
        return
    assert diagnosis.culprit is not None and diagnosis.culprit.service == expected["service"]
    if expected["operation"] is not None:
        assert diagnosis.culprit.operation == expected["operation"]
    assert {e.signal for e in diagnosis.evidence} == {"metrics", "traces", "logs"} or expected["service"] in {
        e.summary.split()[0].rstrip(":") for e in diagnosis.evidence
    }


LABEL_MAPS = ("stream", "metric")  # label name -> value: which names appear depends on the data, not the API


def shape(value: Any, key: str = "") -> Any:
    """A JSON value's structure: keys and types, lists as the union of their items' shapes."""
    if isinstance(value, dict) and key in LABEL_MAPS:
        return {"<label>": _merge_all(shape(item) for item in value.values())}
    if isinstance(value, dict):
        return {name: shape(item, name) for name, item in value.items()}
    if isinstance(value, list):
        merged: dict[str, Any] = {}
        for item in value:
            merged = _merge(merged, {"item": shape(item, key)})
        return [merged.get("item")]
    return type(value).__name__


def _merge(left: Any, right: Any) -> Any:
    if isinstance(left, list) and isinstance(right, list):
        return [_merge(left[0], right[0])]
    if isinstance(left, dict) and isinstance(right, dict):
        return {key: _merge(left.get(key), right.get(key)) if key in left else right[key] for key in {*left, *right}}
    return right if left is None else left


def fits(double: Any, real: Any, where: str = "") -> list[str]:
    """Every key and type the double produces, the real backend produced too (int and float are both numbers)."""
    numbers = {"int", "float"}
    if isinstance(double, dict):
        if not isinstance(real, dict):
            return [f"{where}: object where the real one has {real}"]
        return [
            p
            for key, item in double.items()
            for p in (
                fits(item, real[key], f"{where}.{key}") if key in real else [f"{where}.{key}: not in the real answer"]
            )
        ]
    if isinstance(double, list):
        if not isinstance(real, list):
            return [f"{where}: list where the real one has {real}"]
        return fits(double[0], real[0], f"{where}[]") if double[0] is not None and real[0] is not None else []
    if double != real and not {double, real} <= numbers:
        return [f"{where}: {double} where the real one has {real}"]
    return []


def _merge_all(shapes: Any) -> Any:
    merged: Any = None
    for item in shapes:
        merged = item if merged is None else _merge(merged, item)
    return merged


def real_answers(predicate) -> Any:
    """The merged shape of every recorded answer the predicate picks."""
    bodies = [e["body"] for path in RECORDINGS for e in recording(path)["exchanges"] if e.get("body") and predicate(e)]
    assert bodies, "no such answer was recorded"
    return _merge_all(shape(body) for body in bodies)


@pytest.fixture
def collected():
    """An OTLP test receiver (not listening) holding a two-span trace and two log records, as the shop exports
    them."""
    receiver = OtlpReceiver()
    resource = {"service.namespace": "shop", "service.instance.id": "i-1"}
    trace, root, child, now = "0" + "ab" * 15 + "c", "1" * 16, "2" * 16, time.time_ns()
    receiver.spans += [
        OtlpSpan("checkout", "POST /orders", trace, root, "", 2, 2, now, now + 9 * MS, {"http.route": "/orders"}),
        OtlpSpan("checkout", "POST", trace, child, root, 3, 0, now + MS, now + 8 * MS, {"http.status_code": 502}),
    ]
    slow = {"operation": "orders.list_by_user", "duration_ms": 61.5}
    receiver.logs += [
        OtlpLog("checkout", "slow_query", "WARN", trace, root, slow, now, resource),
        OtlpLog("checkout", "order_failed", "ERROR", trace, root, {"order_id": "x"}, now + MS, resource),
    ]
    yield receiver, trace, now
    receiver.stop()


def test_the_tempo_double_answers_in_the_shapes_tempo_does(collected):
    receiver, trace, now = collected
    traces = real_answers(lambda e: "/api/v2/traces/" in e["path"])
    assert fits(shape(trace_json(receiver.spans_of(trace))), traces) == []
    searched = shape(json.loads((FIXTURES / "tempo-search.json").read_text()))
    assert fits(shape(double_search(receiver, "{ status = error }", 0, now / 1e9 + 1, 5)), searched) == []


def test_the_loki_double_answers_in_the_shapes_loki_does(collected):
    receiver, _trace, now = collected
    second = 10**9
    selector = '{service_name="checkout"} | severity_text=~"(?i)warn.*|error"'
    logs = query_range(receiver, selector, now - second, now + second, 9)
    assert len(logs["data"]["result"]) == 2
    assert fits(shape(logs), real_answers(lambda e: e["path"].endswith("/query_range"))) == []
    count = 'sum by (service_name) (count_over_time({service_namespace="shop"} |= "slow" [60s]))'
    counts = instant_query(receiver, count, now + second)
    assert counts["data"]["result"][0]["value"][1] == "1"
    assert fits(shape(counts), real_answers(lambda e: e["path"].endswith("/query"))) == []
