"""What the responder does with a page: diagnose it from symptoms, then roll back a recent release of the
culprit (mode auto), only say what it would do (suggest), or just record the incident (off).

One action per incident: the incident is keyed by Alertmanager's fingerprint and start, so resends and
regrouping find the same one; a cooldown per service keeps two alerts about one bad release from rolling
back twice. A resolved alert is never acted on. Every decision is logged, traced and counted."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import trace

from incident.diagnosis import Diagnosis
from incident.releases import ReleaseClient, ReleaseError, recently_deployed
from shoplib.db import parse_timestamp, utc_timestamp
from shoplib.services import SERVICES

from .incidents import IncidentStore
from .metrics import ACTIONS, INCIDENTS_OPEN

_log = logging.getLogger("responder")
_tracer = trace.get_tracer(__name__)
Diagnose = Callable[[], Diagnosis]


@dataclass(frozen=True)
class Policy:
    mode: str  # auto, suggest or off
    cooldown: timedelta
    recent_deploy: timedelta


class Responder:
    def __init__(self, store: IncidentStore, releases: ReleaseClient, diagnose: Diagnose, policy: Policy) -> None:
        self.store = store
        self.releases = releases
        self.diagnose = diagnose
        self.policy = policy
        # One at a time: two pages about the same release must see each other's rollback (the cooldown).
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="responder")

    def receive(self, alerts: list[dict[str, Any]]) -> dict[str, list[str]]:
        """Record each page alert of a webhook; handle the new firing ones in the background."""
        opened, repeated, resolved = [], [], []
        for alert in alerts:
            if alert["labels"].get("severity") != "page":
                continue
            if alert["status"] == "resolved":
                incident, changed = self.store.resolve(alert["fingerprint"], alert["startsAt"])
                if incident is not None:
                    resolved.append(incident["id"])
                if incident is not None and changed:  # Alertmanager resends resolutions too
                    _log.info("incident_resolved", extra=_fields(incident))
                continue
            incident, created = self.store.open(alert)
            if not created:
                repeated.append(incident["id"])
                continue
            opened.append(incident["id"])
            _log.warning("incident_opened", extra=_fields(incident))
            self._worker.submit(self._handle_safely, incident["id"])
        INCIDENTS_OPEN.set(self.store.count_firing())
        return {"opened": opened, "repeated": repeated, "resolved": resolved}

    def drain(self) -> None:
        """Wait for every incident received so far to be handled (tests, shutdown)."""
        self._worker.submit(lambda: None).result()

    def _handle_safely(self, incident_id: str) -> None:
        try:
            self.handle(incident_id)
        except Exception:  # noqa: BLE001 - one bad incident must not stop the worker
            _log.exception("incident_handling_failed", extra={"incident_id": incident_id})
            self._record(incident_id, "none", "failed", "the responder failed while handling it; see its logs")

    def handle(self, incident_id: str) -> None:
        incident = self._incident(incident_id)
        with _tracer.start_as_current_span("respond", attributes={"incident.id": incident_id}) as span:
            if self.policy.mode == "off":
                self._record(incident_id, "none", "skipped", "RESPONDER_MODE=off: recorded only")
                return
            diagnosis = self.diagnose()
            service, operation, source = _culprit(diagnosis, incident)
            self.store.diagnosed(incident_id, diagnosis.to_json(), service, operation)
            incident = self._incident(incident_id)
            _log.warning("incident_diagnosed", extra={**_fields(incident), "source": source})
            span.set_attributes({"culprit.service": service or "", "culprit.operation": operation or ""})
            if service is None:
                self._record(incident_id, "suggest", "done", _runbook(incident, "no culprit found"))
                return
            self._act(incident, service)

    def _act(self, incident: dict[str, Any], service: str) -> None:
        incident_id = incident["id"]
        try:
            state = self.releases.state(service)
        except ReleaseError as exc:
            self._record(incident_id, "none", "failed", f"could not read {service}'s release: {exc.reason}")
            return
        why = recently_deployed(state, self.policy.recent_deploy)
        if why is None:
            self._record(incident_id, "suggest", "done", _runbook(incident, f"no recent release on {service}"))
            return
        version = state["canary"]["version"] if state.get("canary") else state["stable"]["version"]
        if self.policy.mode == "suggest":
            self._record(
                incident_id, "suggest", "done", f"roll back {service} {version} ({why}): shoplab rollback {service}"
            )
            return
        if self._incident(incident_id)["status"] == "resolved":
            self._record(incident_id, "none", "skipped", "the alert resolved before the responder acted")
            return
        since = utc_timestamp(datetime.now(UTC) - self.policy.cooldown)
        earlier = self.store.last_rollback(service, since)
        if earlier is not None:
            self._record(
                incident_id,
                "none",
                "skipped",
                f"{service} was rolled back at {earlier['timestamps']['mitigated']} for incident {earlier['id']} "
                f"(cooldown {self.policy.cooldown.total_seconds():.0f} s)",
            )
            return
        reason = f"responder: {incident['alert']['alertname']} (incident {incident_id}); {why}"
        try:
            after = self.releases.rollback(service, reason)
        except ReleaseError as exc:
            self._record(incident_id, "rollback", "failed", f"rolling back {service} {version} failed: {exc.reason}")
            return
        self._record(
            incident_id, "rollback", "done", f"rolled back {service} {version}; now {after['stable']['version']}"
        )

    def _record(self, incident_id: str, action: str, outcome: str, detail: str) -> None:
        self.store.acted(incident_id, action, outcome, detail)
        ACTIONS.labels(action, outcome).inc()
        incident = self._incident(incident_id)
        message = "incident_mitigated" if (action, outcome) == ("rollback", "done") else "incident_action"
        _log.warning(message, extra={**_fields(incident), "action": action, "outcome": outcome, "detail": detail})

    def _incident(self, incident_id: str) -> dict[str, Any]:
        incident = self.store.get(incident_id)
        if incident is None:
            raise LookupError(f"incident {incident_id} is missing")
        return incident


def _culprit(diagnosis: Diagnosis, incident: Mapping[str, Any]) -> tuple[str | None, str | None, str]:
    """The diagnosis' culprit; when it names none (a backend down, too little traffic yet), the alert's own
    service, which Alertmanager's inhibition has already narrowed to the culprit rather than its callers."""
    if diagnosis.culprit is not None:
        return diagnosis.culprit.service, diagnosis.culprit.operation, "diagnosis"
    service = incident["alert"]["service"]
    return (service, None, "alert") if service in SERVICES else (None, None, "none")


def _runbook(incident: Mapping[str, Any], why: str) -> str:
    annotations = incident["alert"]["annotations"]
    step = annotations.get("runbook") or annotations.get("runbook_url") or "see prometheus/runbooks.md"
    return f"{why}; nothing to roll back. Runbook: {step}"


def _fields(incident: Mapping[str, Any]) -> dict[str, Any]:
    alert = incident["alert"]
    return {
        "incident_id": incident["id"],
        "alertname": alert["alertname"],
        "alert_service": alert["service"],
        "route": alert["labels"].get("route", ""),
        "culprit_service": incident["culprit"]["service"],
        "culprit_operation": incident["culprit"]["operation"],
        **_timings(incident["timestamps"]),
    }


def _timings(stamps: Mapping[str, str | None]) -> dict[str, float]:
    """Seconds from the alert firing to each later step that happened."""
    fired = parse_timestamp(str(stamps["fired"]))
    timings = {}
    for step, key in (("diagnosed", "diagnose_s"), ("mitigated", "mitigate_s"), ("resolved", "recover_s")):
        moment = stamps.get(step)
        if moment:
            timings[key] = round((parse_timestamp(moment) - fired).total_seconds(), 1)
    return timings
