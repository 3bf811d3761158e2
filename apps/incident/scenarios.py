"""Reproducible game days: inject a bad release or a fault into a running lab, watch what the alerts, the
responder and the shop do, and give a verdict with time to detect, diagnose, mitigate and recover.

A scenario reads only what an operator could: Prometheus' alerts and metrics, the responder's incidents, the
services' release state. Timings are from the moment of injection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

from shoplib.db import parse_timestamp
from shoplib.services import SERVICES

from .backends import BackendError, Backends, http_transport
from .diagnosis import diagnose_from
from .drills import Traffic, Undo, admin_fault
from .releases import ReleaseClient, ReleaseError, TokenSource

DETECT_LIMIT_S = 90.0
MITIGATE_LIMIT_S = 60.0  # after detection
RECOVER_LIMIT_S = 180.0  # after mitigation
HEALTHY_ERROR_RATIO, HEALTHY_P95_S = 0.01, 1.0
POLL_S = 1.0


@dataclass(frozen=True)
class Lab:
    """Where a lab answers: the shop's services, Prometheus, Alertmanager and the responder."""

    urls: Mapping[str, str]
    prometheus: str
    alertmanager: str
    responder: str
    token: TokenSource

    def admin_token(self) -> str:
        return self.token()

    def releases(self) -> ReleaseClient:
        return ReleaseClient(self.urls, self.token)

    def unreachable(self) -> list[str]:
        """The parts of the lab that do not answer (empty when all do)."""
        probes = {
            **{service: f"{url}/healthz" for service, url in self.urls.items()},
            "prometheus": f"{self.prometheus}/-/ready",
            "alertmanager": f"{self.alertmanager}/-/ready",
            "responder": f"{self.responder}/healthz",
        }
        missing = []
        for name, url in probes.items():
            try:
                if not requests.get(url, timeout=3).ok:
                    missing.append(f"{name} ({url})")
            except requests.RequestException:
                missing.append(f"{name} ({url})")
        return missing


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    service: str  # the culprit the alert and the diagnosis must name
    operation: str | None  # the operation the diagnosis must name, where it must name one
    inject: Callable[[Lab], Undo]
    remediation: str  # "rollback" (the responder's, on an alert), "canary" (canary analysis), "runbook"


def deploy(service: str, version: str, canary_percent: int = 0) -> Callable[[Lab], Undo]:
    def inject(lab: Lab) -> Undo:
        client = lab.releases()
        before = client.state(service)
        client.deploy(service, version, canary_percent)

        def undo() -> None:  # only if nothing rolled it back
            now = client.state(service)
            running = {now["stable"]["version"]} | ({now["canary"]["version"]} if now.get("canary") else set())
            if version in running and before["stable"]["version"] != version:
                client.rollback(service, f"scenario cleanup: {version} was still running")

        return undo

    return inject


def catalogue() -> dict[str, Scenario]:
    scenarios = [
        Scenario(
            "payment-bad-release",
            "payment 2.5.0 goes out to everyone and fails about 15% of payments; the responder rolls it back.",
            "payment",
            "gateway authorize",
            deploy("payment", "2.5.0"),
            "rollback",
        ),
        Scenario(
            "payment-canary",
            "payment 2.5.0 as a 10% canary; canary analysis sees its errors and rolls it back before any page.",
            "payment",
            None,
            deploy("payment", "2.5.0", canary_percent=10),
            "canary",
        ),
        Scenario(
            "orders-missing-index",
            "checkout 1.9.0 drops the orders.user_id index; listing orders slows down; the responder rolls it "
            "back, which re-creates the index.",
            "checkout",
            "orders.list_by_user",
            deploy("checkout", "1.9.0"),
            "rollback",
        ),
        Scenario(
            "checkout-lock-contention",
            "checkout's database write lock is held most of the time (the db_lock fault); no release to roll "
            "back, so the responder suggests the runbook step and the scenario clears the fault.",
            "checkout",
            None,
            admin_fault("checkout", {"db_lock": {"hold_ms": 1500, "release_ms": 100}}),
            "runbook",
        ),
    ]
    return {scenario.name: scenario for scenario in scenarios}


@dataclass
class Result:
    scenario: str
    reasons: list[str] = field(default_factory=list)
    timings: dict[str, float | None] = field(
        default_factory=lambda: {"detect_s": None, "diagnose_s": None, "mitigate_s": None, "recover_s": None}
    )
    diagnosis: dict[str, Any] | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[tuple[float, str]] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "fail" if self.reasons else "pass"

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "timings": dict(self.timings),
            "diagnosis": self.diagnosis,
            "actions": list(self.actions),
            "timeline": [{"at_s": round(at, 1), "event": event} for at, event in self.timeline],
        }


Progress = Callable[[str], None]


class Run:
    """One scenario against one lab; `progress` gets a line per phase and per event as they happen."""

    def __init__(self, scenario: Scenario, lab: Lab, progress: Progress, traffic_customers: int = 4) -> None:
        self.scenario = scenario
        self.lab = lab
        self.progress = progress
        self.customers = traffic_customers
        self.prometheus = Backends(http_transport({"prometheus": lab.prometheus}, 5.0))
        self.result = Result(scenario.name)
        self.started = 0.0
        self.injected_at = datetime.now(UTC)

    def execute(self) -> Result:
        traffic = Traffic(self.lab.urls, customers=self.customers).start() if self.customers else None
        undo: Undo | None = None
        try:
            self._phase(f"warming up: {self.customers} customers of light traffic for 20 s")
            time.sleep(20)
            self._check_quiet()
            self._phase(f"inject: {self.scenario.summary}")
            self.started = time.monotonic()
            self.injected_at = datetime.now(UTC)
            undo = self.scenario.inject(self.lab)
            self._event("injected")
            if self.scenario.remediation == "canary":
                self._canary()
            else:
                undo = self._alert_diagnose_mitigate(undo)
            if self.result.timings["mitigate_s"] is not None:
                self._recover()
        finally:
            if undo is not None:
                try:
                    undo()
                except (ReleaseError, requests.RequestException) as exc:
                    self.result.reasons.append(f"cleanup failed: {exc}")
            if traffic is not None:
                traffic.stop()
        return self.result

    # --- phases ---

    def _alert_diagnose_mitigate(self, undo: Undo) -> Undo | None:
        scenario, timings = self.scenario, self.result.timings
        self._phase(f"detect: waiting up to {DETECT_LIMIT_S:.0f} s for a page")
        first = self._wait(DETECT_LIMIT_S, self._first_page)
        if first is None:
            self.result.reasons.append(f"no page alert fired within {DETECT_LIMIT_S:.0f} s")
            return undo
        timings["detect_s"] = self._since_injection(first["activeAt"])
        self._event(self._describe(first))
        # An SLO page may come first (it pages on the symptom); a page must also name the culprit.
        culprit_page = first if first["service"] == scenario.service else None
        if culprit_page is None:
            culprit_page = self._wait(DETECT_LIMIT_S - self._elapsed(), lambda: self._first_page(scenario.service))
            if culprit_page is None:
                self.result.reasons.append(f"no page named {scenario.service} within {DETECT_LIMIT_S:.0f} s")
            else:
                self._event(self._describe(culprit_page))
        self._phase("diagnose: waiting for the responder's incident")
        incident = self._wait(MITIGATE_LIMIT_S, self._diagnosed_incident)
        if incident is None:
            self.result.reasons.append("the responder recorded no diagnosed incident")
            diagnosis = diagnose_from({"prometheus": self.lab.prometheus}, 60).to_json()
        else:
            timings["diagnose_s"] = self._since_injection(incident["timestamps"]["diagnosed"])
            diagnosis = incident["diagnosis"]
        self.result.diagnosis = diagnosis
        culprit = (diagnosis or {}).get("culprit") or {}
        self._event(f"diagnosis: {culprit.get('service')} {culprit.get('operation') or ''}".rstrip())
        if culprit.get("service") != scenario.service:
            self.result.reasons.append(f"the diagnosis named {culprit.get('service')}, not {scenario.service}")
        if scenario.operation and culprit.get("operation") != scenario.operation:
            self.result.reasons.append(f"the diagnosis named {culprit.get('operation')}, not {scenario.operation}")
        if scenario.remediation == "rollback":
            self._phase("mitigate: waiting for the responder's rollback")
            done = self._wait(MITIGATE_LIMIT_S, self._rolled_back_by_responder)
            if done is None:
                self.result.reasons.append(f"no automatic rollback within {MITIGATE_LIMIT_S:.0f} s of the page")
                return undo
            timings["mitigate_s"] = self._since_injection(done["at"])
            self.result.actions.append(done)
            self._event(f"rolled back by {done['actor']}: {done['version']}")
            return None
        # runbook: the responder suggests, the operator (this scenario) applies the fix
        self._phase("mitigate: the responder must suggest the runbook; then the scenario clears the fault")
        suggested = self._wait(MITIGATE_LIMIT_S, self._acted_incident)
        if suggested is None:
            self.result.reasons.append("the responder recorded no action for the incident")
        else:
            self.result.actions.append({"by": "responder", **suggested["action"]})
            if suggested["action"]["kind"] != "suggest":
                self.result.reasons.append(f"the responder did {suggested['action']['kind']}, expected a suggestion")
            self._event(f"responder: {suggested['action']['kind']}: {suggested['action']['detail']}")
        undo()
        timings["mitigate_s"] = self._elapsed()
        self.result.actions.append({"by": "scenario", "kind": "runbook", "detail": "cleared the fault"})
        self._event("fault cleared (the runbook step)")
        return None

    def _canary(self) -> None:
        timings = self.result.timings
        self._phase(f"canary analysis: waiting up to {DETECT_LIMIT_S:.0f} s for a rollback, with no page")
        done = self._wait(DETECT_LIMIT_S, self._rolled_back_by_responder)
        pages = self._pages_since_injection()
        if done is None:
            self.result.reasons.append(f"canary analysis did not roll back within {DETECT_LIMIT_S:.0f} s")
            return
        timings["detect_s"] = timings["diagnose_s"] = timings["mitigate_s"] = self._since_injection(done["at"])
        self.result.actions.append(done)
        self.result.diagnosis = {"culprit": {"service": self.scenario.service, "operation": None}, "by": "canary"}
        self._event(f"canary rolled back by {done['actor']}: {done['reason']}")
        if pages:
            self.result.reasons.append(f"a page fired before the canary was rolled back: {pages[0]['alertname']}")

    def _recover(self) -> None:
        self._phase(f"recover: waiting up to {RECOVER_LIMIT_S:.0f} s for resolved alerts and a healthy shop")
        healthy = self._wait(RECOVER_LIMIT_S, self._healthy)
        if healthy is None:
            self.result.reasons.append(f"the shop did not recover within {RECOVER_LIMIT_S:.0f} s of mitigation")
            return
        self.result.timings["recover_s"] = self._elapsed()
        self._event(f"recovered: {healthy}")

    # --- what the lab shows ---

    def _check_quiet(self) -> None:
        firing = self._firing_pages()
        if firing:
            names = ", ".join(f"{a['alertname']} {a['service']}" for a in firing)
            self._event(f"warning: pages already firing before the injection: {names}")

    def _firing_pages(self) -> list[dict[str, str]]:
        alerts = requests.get(f"{self.lab.prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        return [
            {**a["labels"], "activeAt": a["activeAt"]}
            for a in alerts
            if a["state"] == "firing"
            and a["labels"].get("severity") == "page"
            and a["labels"].get("service") in SERVICES
        ]

    def _describe(self, page: dict[str, str]) -> str:
        route = f" {page['route']}" if page.get("route") else ""
        since = self._since_injection(page["activeAt"])
        return f"page {page['alertname']} on {page['service']}{route}, firing since {since} s"

    def _pages_since_injection(self) -> list[dict[str, str]]:
        return [a for a in self._firing_pages() if parse_timestamp(a["activeAt"]) >= self.injected_at]

    def _first_page(self, service: str | None = None) -> dict[str, str] | None:
        """The first page (about `service`, when given) delivered since the injection, as the responder received
        it from Alertmanager (which holds back the callers' symptoms while the culprit pages): its alert, with
        when it fired."""
        delivered = sorted(
            (i for i in self._incidents() if service in (None, i["alert"]["service"])),
            key=lambda i: i["timestamps"]["received"],
        )
        if not delivered:
            return None
        alert = delivered[0]["alert"]
        return {**alert["labels"], "service": alert["service"], "activeAt": delivered[0]["timestamps"]["fired"]}

    def _incidents(self) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.lab.responder}/incidents", params={"limit": 50}, timeout=5).json()
        return [
            i
            for i in answer["incidents"]
            if parse_timestamp(i["timestamps"]["received"]) >= self.injected_at and i["alert"]["service"] in SERVICES
        ]

    def _diagnosed_incident(self) -> dict[str, Any] | None:
        found = [i for i in self._incidents() if i["timestamps"]["diagnosed"]]
        return min(found, key=lambda i: i["timestamps"]["diagnosed"]) if found else None

    def _acted_incident(self) -> dict[str, Any] | None:
        found = [i for i in self._incidents() if i["action"]]
        return min(found, key=lambda i: i["timestamps"]["received"]) if found else None

    def _rolled_back_by_responder(self) -> dict[str, Any] | None:
        history = self.lab.releases().state(self.scenario.service)["history"]
        for entry in history:
            if (
                entry["action"] == "rollback"
                and entry["actor"] == "responder"
                and parse_timestamp(entry["at"]) >= self.injected_at
            ):
                return {"by": "responder", **entry}
        return None

    def _healthy(self) -> str | None:
        if any(a["service"] == self.scenario.service for a in self._firing_pages()):
            return None
        at = time.time()
        try:
            errors = self.prometheus.query(
                'sum(rate(http_request_duration_seconds_count{status_code=~"5.."}[30s])) '
                "/ sum(rate(http_request_duration_seconds_count[30s]))",
                at,
            )
            p95 = self.prometheus.query(
                "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[30s])))", at
            )
        except BackendError:
            return None
        ratio = errors[0].value if errors else 0.0
        latency = p95[0].value if p95 else 0.0
        if ratio < HEALTHY_ERROR_RATIO and latency < HEALTHY_P95_S:
            return f"no page on {self.scenario.service}, {ratio:.2%} errors, p95 {latency * 1000:.0f} ms"
        return None

    # --- bookkeeping ---

    def _wait(self, limit_s: float, probe: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            try:
                found = probe()
            except (requests.RequestException, ReleaseError, ValueError, KeyError):
                found = None  # a backend blinked; ask again
            if found:
                return found
            time.sleep(POLL_S)
        return None

    def _elapsed(self) -> float:
        return round(time.monotonic() - self.started, 1) if self.started else 0.0

    def _since_injection(self, stamp: str | None) -> float | None:
        return round((parse_timestamp(stamp) - self.injected_at).total_seconds(), 1) if stamp else None

    def _phase(self, text: str) -> None:
        self.progress(f"[{self._elapsed():6.1f}s] {text}")

    def _event(self, text: str) -> None:
        self.result.timeline.append((self._elapsed(), text))
        self.progress(f"[{self._elapsed():6.1f}s]   {text}")


def render(result: Result) -> str:
    """The verdict as a person reads it: timeline, timings, diagnosis, actions, PASS/FAIL and why."""
    lines = [f"scenario {result.scenario}: {result.verdict.upper()}", "", "timeline"]
    lines += [f"  {at:6.1f} s  {event}" for at, event in result.timeline]
    lines += ["", "timings (from injection)"]
    for name, value in result.timings.items():
        lines.append(f"  {name.removesuffix('_s'):<9} {'-' if value is None else f'{value:.1f} s'}")
    culprit = (result.diagnosis or {}).get("culprit") or {}
    lines += ["", f"diagnosis  {culprit.get('service')}  {culprit.get('operation') or ''}".rstrip()]
    for action in result.actions:
        lines.append(
            f"action     {action.get('by')}: {action.get('kind') or action.get('action')} "
            f"{action.get('detail') or action.get('reason') or ''}".rstrip()
        )
    if result.reasons:
        lines += ["", "why it failed"] + [f"  - {reason}" for reason in result.reasons]
    return "\n".join(lines)
