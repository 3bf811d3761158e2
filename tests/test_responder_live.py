"""The responder end to end, with real processes: the shop, the responder, Debian's Prometheus and Alertmanager
on the project's configs, and Tempo/Loki read-API doubles over the test's OTLP receiver (doubles, not Tempo or
Loki). A bad payment release is paged, diagnosed and rolled back with nobody touching it; Alertmanager's
resends cause one action; in suggest mode nothing changes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from native_lab import NativeLab, native_lab, running_responder
from shop import poll_until, python

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeLab]:
    with native_lab(tmp_path_factory.mktemp("responder-lab"), {"RESPONDER_MODE": "auto"}) as running:
        yield running


def test_a_bad_payment_release_is_paged_diagnosed_and_rolled_back_on_its_own(lab: NativeLab) -> None:
    result = python("-m", "incident.cli", "scenario", "run", "payment-bad-release", "--json", env=lab.env, timeout=600)
    verdict = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert verdict["verdict"] == "pass" and verdict["reasons"] == []
    assert verdict["diagnosis"]["culprit"]["service"] == "payment"
    timings = verdict["timings"]
    assert timings["detect_s"] < timings["mitigate_s"] < timings["recover_s"]
    # The rollback was the responder's, recorded with the incident that caused it.
    state = lab.release("payment")
    assert state["stable"]["version"] == "2.4.0"
    rollback = state["history"][0]
    assert rollback["action"] == "rollback" and rollback["actor"] == "responder" and "incident" in rollback["reason"]
    incidents = requests.get(f"{lab.responder}/incidents", timeout=5).json()["incidents"]
    acted = [i for i in incidents if i["action"] and i["action"]["kind"] == "rollback"]
    assert len(acted) == 1 and acted[0]["action"]["outcome"] == "done"
    assert acted[0]["culprit"]["service"] == "payment" and acted[0]["timestamps"]["mitigated"]

    # payment's pages resolved: Alertmanager told the responder, which closed their incidents. (checkout's
    # fast-burn SLO page, if it fired, resolves only when its 5-minute window is clean.)
    def payment_pages_resolved() -> bool:
        found = requests.get(f"{lab.responder}/incidents", timeout=5).json()["incidents"]
        payment = [i for i in found if i["alert"]["service"] == "payment"]
        return bool(payment) and all(i["status"] == "resolved" for i in payment)

    poll_until(payment_pages_resolved, timeout=180, what="Alertmanager's resolved notifications for payment")


def acted_on(responder: str, incident_id: str) -> dict:
    """The incident once the responder has decided what to do about it."""

    def decided() -> dict | None:
        incident = requests.get(f"{responder}/incidents/{incident_id}", timeout=5).json()
        return incident if incident["action"] else None

    return poll_until(decided, timeout=60, what=f"the responder's decision on incident {incident_id}")


def page(service: str, fingerprint: str, status: str = "firing") -> dict:
    return {
        "version": "4",
        "status": status,
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "HighErrorRate", "service": service, "severity": "page"},
                "annotations": {"runbook": "look at the payment dashboard"},
                "startsAt": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
                "fingerprint": fingerprint,
            }
        ],
    }


def test_resent_webhooks_make_one_incident_and_one_action(lab: NativeLab, tmp_path: Path) -> None:
    """A responder of its own (the lab's has rolled payment back already, and its cooldown would hold)."""
    with running_responder(tmp_path, lab.shop, {**lab.env, "CANARY_INTERVAL_S": "0"}) as responder:
        resend_and_check(lab, responder)


def resend_and_check(lab: NativeLab, responder: str) -> None:
    url = lab.shop.url("payment", "/admin/release")
    assert requests.put(url, json={"version": "2.5.0"}, headers=lab.admin(), timeout=5).status_code == 200
    body = page("payment", uuid.uuid4().hex[:16])
    answers = [requests.post(f"{responder}/alerts", json=body, headers=lab.pager(), timeout=10) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 202]
    (incident_id,) = answers[0].json()["opened"]
    assert answers[1].json()["repeated"] == [incident_id] == answers[2].json()["repeated"]
    done = acted_on(responder, incident_id)
    assert done["action"]["kind"] == "rollback" and done["action"]["outcome"] == "done"
    state = lab.release("payment")
    assert state["stable"]["version"] == "2.4.0"
    assert [h["actor"] for h in state["history"] if h["action"] == "rollback"].count("responder") >= 1
    # A second page about the same service inside the cooldown does not roll back again.
    assert requests.put(url, json={"version": "2.5.0"}, headers=lab.admin(), timeout=5).status_code == 200
    second = requests.post(
        f"{responder}/alerts", json=page("payment", uuid.uuid4().hex[:16]), headers=lab.pager(), timeout=10
    )
    (second_id,) = second.json()["opened"]
    skipped = acted_on(responder, second_id)
    assert skipped["action"]["outcome"] == "skipped" and "cooldown" in skipped["action"]["detail"]
    assert lab.release("payment")["stable"]["version"] == "2.5.0"
    requests.post(f"{url}/rollback", headers=lab.admin(), timeout=5)


def test_in_suggest_mode_the_responder_changes_nothing(lab: NativeLab, tmp_path: Path) -> None:
    suggest = {**lab.env, "RESPONDER_MODE": "suggest", "CANARY_INTERVAL_S": "0"}
    with running_responder(tmp_path, lab.shop, suggest) as url:
        admin = lab.admin()
        release_url = lab.shop.url("checkout", "/admin/release")
        assert requests.put(release_url, json={"version": "1.9.0"}, headers=admin, timeout=5).status_code == 200
        opened = requests.post(
            f"{url}/alerts", json=page("checkout", uuid.uuid4().hex[:16]), headers=lab.pager(), timeout=10
        )
        (incident_id,) = opened.json()["opened"]
        incident = acted_on(url, incident_id)
        assert incident["action"]["kind"] == "suggest"
        assert "shoplab rollback checkout" in incident["action"]["detail"]
        assert lab.release("checkout")["stable"]["version"] == "1.9.0"
        requests.post(f"{release_url}/rollback", headers=admin, timeout=5)
