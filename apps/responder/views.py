"""POST /alerts (Alertmanager's webhook), GET /incidents and GET /incidents/<id>."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, current_app

from shoplib.app import extension
from shoplib.errors import Problem
from shoplib.security import require_shared_token
from shoplib.validation import Fields, json_body, query_int

from .engine import Responder
from .incidents import IncidentStore

bp = Blueprint("responder", __name__)
_INCIDENT_ID = re.compile(r"[0-9a-f]{32}")
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")


def _responder() -> Responder:
    return extension("responder.engine", Responder)


def _store() -> IncidentStore:
    return extension("responder.incidents", IncidentStore)


@bp.post("/alerts")
def receive_alerts() -> Any:
    # Only Alertmanager may page the responder: it could roll a release back.
    require_shared_token(current_app.config["RESPONDER_TOKEN"], "the responder's token (RESPONDER_TOKEN)")
    alerts = read_webhook(json_body())
    return _responder().receive(alerts), 202


@bp.get("/incidents")
def list_incidents() -> Any:
    limit = query_int("limit", 20, 1, 200)
    return {"incidents": _store().recent(limit)}


@bp.get("/incidents/<incident_id>")
def get_incident(incident_id: str) -> Any:
    incident = _store().get(incident_id) if _INCIDENT_ID.fullmatch(incident_id) else None
    if incident is None:
        raise Problem(404, "Not found", f"There is no incident {incident_id}.")
    return incident


def read_webhook(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The alerts of an Alertmanager webhook (version 4), checked as a whole: a 400 names every bad field."""
    fields = Fields()
    alerts = fields.array(body, "alerts", max_items=1000)
    checked = []
    for index, alert in enumerate(alerts or []):
        at = f"alerts[{index}]"
        if not isinstance(alert, dict):
            fields.fail(at, "must be an object")
            continue
        status = fields.string(alert, "status", at=at, max_length=10)
        if status is not None and status not in ("firing", "resolved"):
            fields.fail(f"{at}.status", "must be firing or resolved")
        fingerprint = fields.string(alert, "fingerprint", at=at, max_length=64)
        starts_at = fields.string(alert, "startsAt", at=at, max_length=40, pattern=_STAMP, hint="RFC 3339")
        labels = _strings(fields, alert, "labels", at, required=True)
        annotations = _strings(fields, alert, "annotations", at, required=False)
        if labels is not None and not labels.get("alertname"):
            fields.fail(f"{at}.labels.alertname", "is required")
        checked.append(
            {
                "status": status,
                "fingerprint": fingerprint,
                "startsAt": starts_at,
                "labels": labels or {},
                "annotations": annotations or {},
            }
        )
    fields.raise_if_any()
    return checked


def _strings(fields: Fields, alert: dict[str, Any], key: str, at: str, *, required: bool) -> dict[str, str] | None:
    value = fields.object(alert, key, at=at, required=required)
    if value is None:
        return None
    for name, text in value.items():
        if not isinstance(text, str) or len(text) > 4096:
            fields.fail(f"{at}.{key}.{name}", "must be a string of at most 4096 characters")
    return value
