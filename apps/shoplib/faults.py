"""Runtime fault injection: declared per service, switched through /admin/faults, never by restart."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import request
from opentelemetry import trace
from pydantic import BaseModel, Field, create_model

from .api import StrictBody
from .errors import Problem, ValidationFailed
from .metrics import FAULT_ACTIVE

_log = logging.getLogger("shop.faults")
_REQUIRED = object()


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # int, float or str
    minimum: float = 0
    maximum: float = 0
    default: Any = _REQUIRED
    description: str = ""

    def field(self) -> Any:
        """The parameter as a pydantic field: (type, constraints and default)."""
        default = ... if self.default is _REQUIRED else self.default
        if self.kind is str:
            return (str | None, Field(default, max_length=200, description=self.description))
        return (self.kind, Field(default, ge=self.minimum, le=self.maximum, description=self.description))

    def describe(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"type": {int: "integer", float: "number", str: "string"}[self.kind]}
        if self.kind is not str:
            spec.update(minimum=self.minimum, maximum=self.maximum)
        if self.default is not _REQUIRED:
            spec["default"] = self.default
        if self.description:
            spec["description"] = self.description
        return spec


@dataclass(frozen=True)
class Fault:
    """A fault a service can inject. `activate`/`deactivate` do the real damage and undo it."""

    name: str
    description: str
    params: tuple[Param, ...] = ()
    activate: Callable[[dict[str, Any]], None] | None = field(default=None, compare=False)
    deactivate: Callable[[], None] | None = field(default=None, compare=False)


_ROUTE = Param("route", str, default=None, description="only requests whose path starts with this")

COMMON_FAULTS: tuple[Fault, ...] = (
    Fault(
        "latency",
        "Delay requests by `ms` milliseconds with the given probability.",
        (Param("ms", int, 1, 60_000), Param("probability", float, 0, 1, default=1.0), _ROUTE),
    ),
    Fault(
        "errors",
        "Fail a share (`rate`) of requests with an HTTP `status` error.",
        (Param("rate", float, 0, 1), Param("status", int, 500, 599, default=500), _ROUTE),
    ),
)


class FaultRegistry:
    """Which faults are active in this process, with their parameters."""

    def __init__(self, service: str, faults: Sequence[Fault]) -> None:
        def title(name: str) -> str:
            return "".join(part.capitalize() for part in name.split("_"))

        self.service = service
        self.faults = {fault.name: fault for fault in (*COMMON_FAULTS, *faults)}
        self._active: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        for name in self.faults:
            FAULT_ACTIVE.labels(service, name).set(0)
        # PUT /admin/faults's body for this service's faults: `{fault: {param: value}}`.
        choices: dict[str, Any] = {}
        for name, fault in self.faults.items():
            params = {param.name: param.field() for param in fault.params}
            model = create_model(f"{title(service)}{title(name)}Fault", __base__=StrictBody, **params)
            choices[name] = (model | None, Field(None, description=fault.description))
        self.changes: type[BaseModel] = create_model(f"{title(service)}FaultChanges", __base__=StrictBody, **choices)

    def describe(self) -> dict[str, Any]:
        return {
            name: {"description": fault.description, "params": {p.name: p.describe() for p in fault.params}}
            for name, fault in self.faults.items()
        }

    def active(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: dict(params) for name, params in self._active.items()}

    def params(self, name: str) -> dict[str, Any] | None:
        return self._active.get(name)

    def chosen(self, changes: BaseModel) -> dict[str, dict[str, Any]]:
        """The faults a validated PUT body (`self.changes`) switches on, with their parameters; 400 if none."""
        chosen = {name: params.model_dump() for name, params in changes if params is not None}
        if not chosen:
            raise ValidationFailed([{"field": "", "message": f"name at least one fault: {', '.join(self.faults)}"}])
        return chosen

    def apply(self, changes: dict[str, dict[str, Any]], actor: str) -> None:
        with self._lock:
            for name, params in changes.items():
                fault = self.faults[name]
                if name in self._active and fault.deactivate:
                    fault.deactivate()
                if fault.activate:
                    fault.activate(params)
                self._active[name] = params
                FAULT_ACTIVE.labels(self.service, name).set(1)
                _log.warning("fault_set", extra={"fault": name, "params": params, "actor": actor})

    def clear(self, names: Sequence[str] | None, actor: str) -> list[str]:
        """Deactivate the named faults (all when None); unknown names are a 400 problem."""
        if names is not None:
            unknown = [n for n in names if n not in self.faults]
            if unknown:
                raise Problem(400, "Unknown fault", f"No fault named {', '.join(unknown)}; see GET /admin/faults.")
        with self._lock:
            cleared = [n for n in (names if names is not None else list(self._active)) if n in self._active]
            for name in cleared:
                fault = self.faults[name]
                if fault.deactivate:
                    fault.deactivate()
                del self._active[name]
                FAULT_ACTIVE.labels(self.service, name).set(0)
                _log.warning("fault_cleared", extra={"fault": name, "actor": actor})
            return cleared

    def inject_into_request(self) -> None:
        """Apply the request-level faults (latency, errors) to the current request."""
        latency = self._matching("latency")
        if latency and random.random() < latency["probability"]:
            trace.get_current_span().set_attribute("shop.fault.injected", "latency")
            time.sleep(latency["ms"] / 1000)
        errors = self._matching("errors")
        if errors and random.random() < errors["rate"]:
            trace.get_current_span().set_attribute("shop.fault.injected", "errors")
            raise Problem(errors["status"], "Injected fault", f"The errors fault is active on {self.service}.")

    def _matching(self, name: str) -> dict[str, Any] | None:
        params = self._active.get(name)
        if params is None or (params["route"] and not request.path.startswith(params["route"])):
            return None
        return params
