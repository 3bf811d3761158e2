"""`new_app` and `init_app`: what every service's app gets the same way — configuration, tracing of its
requests, RED metrics, releases, faults, errors, health and readiness, and the admin endpoints.

Process-wide set-up (logging to stdout, the OpenTelemetry SDK) is not the factory's business: gunicorn's
post_fork hook does it (shoplib.serve), so building an app changes nothing outside that app."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from opentelemetry import trace
from pydantic import BaseModel
from pydantic import Field as PydanticField

from . import api, metrics
from .config import Setting
from .config import load as load_settings
from .db import Database
from .errors import Problem, register_error_handlers
from .faults import Fault, FaultRegistry
from .releases import VERSION_ATTRIBUTE, Release, ReleaseChange, ReleaseNote, Releases, current_version
from .security import current_principal, require_admin
from .telemetry import instrument_app

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

ReadinessCheck = tuple[str, Callable[[], None]]
T = TypeVar("T")

# Flask's MAX_CONTENT_LENGTH for every service: bodies are small JSON documents.
MAX_BODY_BYTES = 64 * 1024

# Paths that operators and scrapers use: no faults, no RED metrics, no access lines.
_INFRA_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json")
_access_log = logging.getLogger("shop.access")

infra = Blueprint("shop_infra", __name__)


@dataclass
class ShopState:
    """What the shared hooks and endpoints need to know about the app they serve."""

    service: str
    db: Database | None = None
    faults: FaultRegistry | None = None
    releases: Releases | None = None
    readiness: tuple[ReadinessCheck, ...] = field(default=())


class _InsertionOrderJson(DefaultJSONProvider):
    sort_keys = False  # problem+json reads best in the order it was written: type, title, status, detail


def new_app(
    import_name: str, service: str, settings: Sequence[Setting], test_config: dict[str, Any] | None = None
) -> Flask:
    """A Flask app configured from the environment, then `test_config` (tests only)."""
    app = Flask(import_name)
    app.config.from_mapping(load_settings(settings))
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES)
    if test_config:
        app.config.update(test_config)
    app.json = _InsertionOrderJson(app)
    app.extensions["shop"] = ShopState(service)
    return app


def extension(name: str, kind: type[T]) -> T:
    """The current app's `app.extensions[name]`, checked to be a `kind` (a service's store or clients)."""
    value = current_app.extensions[name]
    if not isinstance(value, kind):
        raise TypeError(f"app.extensions[{name!r}] is a {type(value).__name__}, not a {kind.__name__}")
    return value


def open_database(app: Flask) -> Database:
    """The service's SQLite file, `<DATA_DIR>/<service>.db`."""
    service = app.extensions["shop"].service
    return Database(
        Path(app.config["DATA_DIR"]) / f"{service}.db",
        service,
        busy_timeout_ms=app.config["DB_BUSY_TIMEOUT_MS"],
        slow_query_ms=app.config["SLOW_QUERY_MS"],
    )


def init_app(
    app: Flask,
    *,
    db: Database,
    releases: Sequence[Release],
    faults: Sequence[Fault] = (),
    readiness: Sequence[ReadinessCheck] = (),
) -> None:
    """Attach the shared behaviour to an app made by `new_app`, once, before it serves. `releases` are the
    service's versions, oldest first (see shoplib.releases); their history lives in `db`.

    Where the factory calls it among its blueprints does not matter; the order inside does: the
    instrumentor's before_request is registered first, so the request's server span already exists when
    ours injects faults, and our after_request reads its trace id for the exemplar."""
    state = app.extensions["shop"]
    state.db = db
    # Wrapped before the instrumentor wraps it in turn: reading a chunked body is part of the request's span.
    app.wsgi_app = _buffered_chunked_body(app, app.wsgi_app)  # type: ignore[method-assign,assignment]
    instrument_app(app)
    register_error_handlers(app)
    state.faults = FaultRegistry(state.service, faults)
    state.releases = Releases(state.service, releases, db)
    state.readiness = tuple(readiness)
    app.before_request(_before_request)
    app.after_request(_after_request)
    app.teardown_request(_teardown_request)
    app.register_blueprint(infra)


def _buffered_chunked_body(app: Flask, wsgi_app: WSGIApplication) -> WSGIApplication:
    """A chunked body (no Content-Length) is read in full before Flask sees the request, up to MAX_CONTENT_LENGTH
    and one byte more, and handed on with its length: the request is then the same as one that sent those bytes
    with a Content-Length, so over the limit it is the same 413 problem.

    Werkzeug bounds such a stream at the limit without telling the view it was cut: an order followed by 70 KiB of
    garbage read as just the order, a 201. A malformed chunk raises gunicorn's ParseException out of here, which
    shoplib.serve's worker answers as a 400 like any other malformed request."""

    def buffered(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        limit = app.config.get("MAX_CONTENT_LENGTH")
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        # Only a server that de-chunks the stream says so (wsgi.input_terminated): gunicorn and Werkzeug's do.
        if limit is not None and chunked and not environ.get("CONTENT_LENGTH") and environ.get("wsgi.input_terminated"):
            body = _read_at_most(environ["wsgi.input"], limit + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            del environ["HTTP_TRANSFER_ENCODING"]  # Werkzeug ignores Content-Length beside chunked
        return wsgi_app(environ, start_response)

    return buffered


def _read_at_most(stream: Any, size: int) -> bytes:
    body = bytearray()
    while len(body) < size:
        chunk = stream.read(min(64 * 1024, size - len(body)))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def close_app(app: Flask) -> None:
    """Close the database connections of an app made by `new_app` and `init_app`, once it is done serving."""
    db = app.extensions["shop"].db
    if db is not None:
        db.close()


def _state() -> ShopState:
    return extension("shop", ShopState)


def _faults() -> FaultRegistry:
    registry = _state().faults
    if registry is None:
        raise RuntimeError("init_app was not called on this app")
    return registry


def _releases() -> Releases:
    releases = _state().releases
    if releases is None:
        raise RuntimeError("init_app was not called on this app")
    return releases


def _service() -> str:
    return _state().service


def _is_infra() -> bool:
    return request.path in _INFRA_PATHS


def _before_request() -> None:
    g.request_started = time.perf_counter()
    if _is_infra():
        return
    metrics.HTTP_REQUESTS_IN_FLIGHT.labels(_service()).inc()
    g.counted_in_flight = True
    # The server span started before this hook; the spans after it get the version from ReleaseSpanProcessor.
    g.release = _releases().choose()
    trace.get_current_span().set_attribute(VERSION_ATTRIBUTE, g.release.version)
    if not request.path.startswith("/admin/"):
        _faults().inject_into_request()


def _after_request(response: Response) -> Response:
    if _is_infra():
        return response
    seconds = time.perf_counter() - g.get("request_started", time.perf_counter())
    method, route = metrics.request_route()
    version = g.release.version if "release" in g else current_version()
    metrics.HTTP_REQUEST_DURATION.labels(_service(), method, route, str(response.status_code), version).observe(
        seconds, exemplar=metrics.trace_exemplar()
    )
    _access_log.info(
        "request",
        extra={
            "method": method,
            "route": route,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round(seconds * 1000, 2),
        },
    )
    return response


def _teardown_request(_exc: BaseException | None) -> None:
    if g.pop("counted_in_flight", False):
        metrics.HTTP_REQUESTS_IN_FLIGHT.labels(_service()).dec()
    if g.pop("release", None) is not None:
        Releases.forget()  # worker threads are reused: the next request must not inherit this one's release


class Health(BaseModel):
    status: str
    service: str


class Readiness(Health):
    checks: dict[str, str]


class FaultsState(BaseModel):
    service: str
    active: dict[str, dict[str, Any]] = PydanticField(description="the faults on now, with their parameters")
    available: dict[str, dict[str, Any]] = PydanticField(description="every fault this service has")


class ReleaseState(BaseModel):
    service: str
    stable: dict[str, Any]
    canary: dict[str, Any] | None
    previous: str | None
    available: list[dict[str, Any]]
    history: list[dict[str, Any]]


@infra.get("/openapi.json")
def openapi() -> Any:
    service = _service()
    document = current_app.extensions.get("shop.openapi")
    if document is None:
        description = f"The {service} service of shoplab. Every error is problem details (RFC 9457)."
        document = api.document(current_app, f"shoplab {service}", current_version(), description)
        current_app.extensions["shop.openapi"] = document
    return document


@infra.get("/healthz")
@api.operation("Liveness: the process answers", responses={200: Health})
def healthz() -> Any:
    return {"status": "ok", "service": _service()}


@infra.get("/readyz")
@api.operation("Readiness: its database and dependencies answer (503 says which does not)", responses={200: Readiness})
def readyz() -> Any:
    checks: dict[str, str] = {}
    for name, check in _state().readiness:
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready, and says why
            checks[name] = f"failed: {exc}"
    if all(result == "ok" for result in checks.values()):
        return {"status": "ready", "service": _service(), "checks": checks}
    raise Problem(503, "Not ready", f"{_service()} is not ready to serve.", checks=checks)


@infra.get("/metrics")
def metrics_endpoint() -> Response:
    return metrics.exposition()


def _faults_state() -> Any:
    registry = _faults()
    return jsonify(service=_service(), active=registry.active(), available=registry.describe())


@infra.get("/admin/faults")
@require_admin
@api.operation("The faults on now and every fault there is (admin)", responses={200: FaultsState}, secured=True)
def get_faults() -> Any:
    return _faults_state()


@infra.put("/admin/faults")
@require_admin
@api.operation(
    "Switch faults on, or change their parameters (admin)",
    body=lambda: _faults().changes,
    responses={200: FaultsState},
    secured=True,
)
def put_faults(body: BaseModel) -> Any:
    registry = _faults()
    registry.apply(registry.chosen(body), actor=current_principal().sub)
    return _faults_state()


@infra.delete("/admin/faults")
@require_admin
@api.operation(
    "Switch faults off: those named by ?fault=, else all (admin)", responses={200: FaultsState}, secured=True
)
def delete_faults() -> Any:
    names = request.args.getlist("fault") or None
    _faults().clear(names, actor=current_principal().sub)
    return _faults_state()


def _release_state() -> Any:
    return jsonify(_releases().describe())


@infra.get("/admin/release")
@require_admin
@api.operation("What runs: stable, canary, history (admin)", responses={200: ReleaseState}, secured=True)
def get_release() -> Any:
    return _release_state()


@infra.put("/admin/release")
@require_admin
@api.operation(
    "Deploy a release: everywhere, or as a canary (admin)",
    body=ReleaseChange,
    responses={200: ReleaseState},
    secured=True,
)
def put_release(body: ReleaseChange) -> Any:
    releases = _releases()
    releases.check(body)
    releases.deploy(body.version, body.canary_percent, actor=current_principal().sub)
    return _release_state()


@infra.post("/admin/release/promote")
@require_admin
@api.operation(
    "Promote the canary to stable (admin)",
    body=ReleaseNote,
    body_optional=True,
    responses={200: ReleaseState},
    secured=True,
)
def promote_release(body: ReleaseNote) -> Any:
    _releases().promote(actor=current_principal().sub, reason=body.reason)
    return _release_state()


@infra.post("/admin/release/rollback")
@require_admin
@api.operation(
    "Roll back to the previous stable release (admin)",
    body=ReleaseNote,
    body_optional=True,
    responses={200: ReleaseState},
    secured=True,
)
def rollback_release(body: ReleaseNote) -> Any:
    _releases().rollback(actor=current_principal().sub, reason=body.reason)
    return _release_state()
