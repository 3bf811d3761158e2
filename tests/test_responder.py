"""The responder in process: what it accepts as a webhook, what it refuses, and how canary checks judge.
(End to end with real processes: test_responder_live.py.)"""

from __future__ import annotations

import base64

import pytest

from incident import cli
from responder.canary import Track, judge
from shoplib.supervisor import free_ports

TOKEN = "t" * 40
TOKEN_B64 = base64.b64encode(f"alertmanager:{TOKEN}".encode()).decode()
FIRING = {
    "status": "firing",
    "labels": {"alertname": "HighErrorRate", "service": "payment", "severity": "page"},
    "annotations": {"summary": "payment fails"},
    "startsAt": "2026-11-23T06:00:00.123456789Z",
    "fingerprint": "0123456789abcdef",
}


@pytest.fixture
def app(make_app):
    # Nothing answers at the backends or the shop here: the tests stop before any action.
    return make_app("responder", CANARY_INTERVAL_S=0, RESPONDER_MODE="off", RESPONDER_TOKEN=TOKEN)


@pytest.fixture
def client(app):
    """Alertmanager's side: every request carries the responder's token."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    return client


@pytest.mark.parametrize("authorization", [None, "Bearer " + "x" * 48, "Basic " + TOKEN_B64, f"Bearer {TOKEN}x"])
def test_pages_without_the_responders_token_are_a_401_and_record_nothing(app, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = app.test_client().post("/alerts", json={"alerts": [FIRING]}, headers=headers)
    assert response.status_code == 401 and "RESPONDER_TOKEN" in response.json["detail"]
    assert app.test_client().get("/incidents").json == {"incidents": []}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "alerts"),
        ({"alerts": "x"}, "alerts"),
        ({"alerts": [5]}, "alerts[0]"),
        ({"alerts": [{**FIRING, "status": "burning"}]}, "alerts[0].status"),
        ({"alerts": [{**FIRING, "startsAt": "yesterday"}]}, "alerts[0].startsAt"),
        ({"alerts": [{**FIRING, "labels": {"service": "payment"}}]}, "alerts[0].labels.alertname"),
        ({"alerts": [{**FIRING, "labels": {**FIRING["labels"], "n": 5}}]}, "alerts[0].labels.n"),
        ({"alerts": [{k: v for k, v in FIRING.items() if k != "fingerprint"}]}, "alerts[0].fingerprint"),
    ],
)
def test_a_bad_webhook_is_a_400_naming_the_field_and_records_nothing(client, body, field):
    response = client.post("/alerts", json=body)
    assert response.status_code == 400
    assert field in [e["field"] for e in response.json["errors"]]
    assert client.get("/incidents").json == {"incidents": []}


def test_not_json_is_refused_and_an_unknown_incident_is_404(client):
    assert client.post("/alerts", data="{", content_type="application/json").status_code == 400
    assert client.post("/alerts", data="alerts").status_code == 415
    assert client.get("/incidents/" + "0" * 32).status_code == 404
    assert client.get("/incidents/../../etc").status_code == 404


def test_a_page_opens_one_incident_however_often_it_is_resent_and_tickets_are_ignored(app, client):
    ticket = {**FIRING, "fingerprint": "fedcba9876543210", "labels": {**FIRING["labels"], "severity": "ticket"}}
    first = client.post("/alerts", json={"alerts": [FIRING, ticket]})
    again = client.post("/alerts", json={"alerts": [FIRING]})
    assert first.status_code == again.status_code == 202
    (opened,) = first.json["opened"]
    assert again.json == {"opened": [], "repeated": [opened], "resolved": []}
    app.extensions["responder.engine"].drain()
    incident = client.get(f"/incidents/{opened}").json
    assert incident["action"] == {"kind": "none", "outcome": "skipped", "detail": "RESPONDER_MODE=off: recorded only"}
    resolved = client.post("/alerts", json={"alerts": [{**FIRING, "status": "resolved"}]})
    assert resolved.json["resolved"] == [opened]
    assert client.get(f"/incidents/{opened}").json["status"] == "resolved"
    assert [i["id"] for i in client.get("/incidents").json["incidents"]] == [opened]


@pytest.mark.parametrize(
    ("canary", "stable", "state"),
    [
        (Track(requests=5, errors=5), Track(requests=100), "waiting"),
        (Track(requests=40, errors=6), Track(requests=400, errors=4), "failing"),  # 15% vs 1%
        (Track(requests=15, errors=2), Track(requests=400), "failing"),  # p = 0.3% at stable's 0.5% floor
        (Track(requests=40, errors=1), Track(requests=400), "healthy"),  # one error is chance (p = 18%)
        (Track(requests=40, errors=3), Track(requests=400, errors=20), "healthy"),  # 7.5% vs 5%: not 5 points
        (Track(requests=40, errors=1), Track(requests=400, errors=8), "healthy"),
        (Track(requests=40, p95_s=0.4), Track(requests=400, p95_s=0.1), "failing"),
        (Track(requests=40, p95_s=0.14), Track(requests=400, p95_s=0.1), "healthy"),  # within twice
        (Track(requests=40, p95_s=0.03), Track(requests=400, p95_s=0.01), "healthy"),  # under the 50 ms floor
    ],
)
def test_a_canary_check_compares_the_canary_with_stable(canary, stable, state):
    assert judge(canary, stable).state == state


def test_a_scenario_against_a_lab_that_does_not_answer_exits_2_naming_what_is_missing(monkeypatch, capsys):
    closed = free_ports(1)[0]
    for name in ("PROMETHEUS_URL", "ALERTMANAGER_URL", "RESPONDER_URL", "PAYMENT_URL"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("SHOPLAB_ADMIN_TOKEN", "unused")
    assert cli.main(["scenario", "run", "payment-bad-release", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "the lab does not answer" in err and "responder (" in err and "payment (" in err
