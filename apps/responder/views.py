"""POST /alerts (Alertmanager's webhook), GET /incidents and GET /incidents/<id>."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

from flask import Blueprint, current_app
from pydantic import BaseModel, ConfigDict, Field

from shoplib.api import Body, Query, matching, operation
from shoplib.app import extension
from shoplib.errors import Problem
from shoplib.security import require_shared_token

from .engine import Responder
from .incidents import IncidentStore

bp = Blueprint("responder", __name__)
P = ParamSpec("P")
R = TypeVar("R")
INCIDENT_ID = r"^[0-9a-f]{32}$"
_INCIDENT_ID = re.compile(INCIDENT_ID)
LabelValue = Annotated[str, Field(max_length=4096)]


class AlertLabels(Body):
    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, LabelValue] = Field(init=False)  # every other label: text, as alertname

    alertname: LabelValue = Field(min_length=1)


class Alert(Body):
    status: Literal["firing", "resolved"]
    fingerprint: str = Field(min_length=1, max_length=64)
    startsAt: str = matching(  # Alertmanager's name
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$", "an RFC 3339 time"
    )
    labels: AlertLabels
    annotations: dict[str, LabelValue] = Field(default_factory=dict)


class Webhook(Body):
    """Alertmanager's webhook (version 4): only what the responder reads."""

    alerts: Annotated[list[Alert], Field(min_length=1, max_length=1000)]


class IncidentList(Query):
    limit: int = Field(20, ge=1, le=200)


class IncidentPath(BaseModel):
    incident_id: str = Field(pattern=INCIDENT_ID)


class Incidents(BaseModel):
    incidents: list[dict[str, Any]]


def _responder() -> Responder:
    return extension("responder.engine", Responder)


def _store() -> IncidentStore:
    return extension("responder.incidents", IncidentStore)


def _from_alertmanager(view: Callable[P, R]) -> Callable[P, R]:
    """Only Alertmanager may page the responder (it could roll a release back): checked before the body is read."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        require_shared_token(current_app.config["RESPONDER_TOKEN"], "the responder's token (RESPONDER_TOKEN)")
        return view(*args, **kwargs)

    return wrapper


@bp.post("/alerts")
@_from_alertmanager
@operation(
    "Alertmanager's webhook: open, update or resolve incidents (and act on them)",
    body=Webhook,
    responses={202: None},
    secured=True,
)
def receive_alerts(body: Webhook) -> Any:
    return _responder().receive([alert.model_dump() for alert in body.alerts]), 202


@bp.get("/incidents")
@operation("The most recent incidents", query=IncidentList, responses={200: Incidents})
def list_incidents(query: IncidentList) -> Any:
    return {"incidents": _store().recent(query.limit)}


@bp.get("/incidents/<incident_id>")
@operation("One incident, with what was done", path=IncidentPath, responses={200: None})
def get_incident(incident_id: str) -> Any:
    incident = _store().get(incident_id) if _INCIDENT_ID.fullmatch(incident_id) else None
    if incident is None:
        raise Problem(404, "Not found", f"There is no incident {incident_id}.")
    return incident
