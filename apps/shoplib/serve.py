"""`python -m shoplib.serve <service>`: one service under gunicorn, with the settings the container uses.

One worker process with threads: fault state, metrics and exemplars live in one process. Process-wide
set-up (JSON logging, the OpenTelemetry SDK and its threads) happens in gunicorn's post_fork hook, in the
worker, before the app is loaded (the app is not preloaded in the master), so start-up work such as
migrations and seeding is already logged and traced; worker_exit flushes what is still queued. The requests
gunicorn refuses before the app sees them are answered, logged and counted as the app's are (ShopWorker).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import os
import sys
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from gunicorn import glogging, util
from gunicorn.app.base import BaseApplication
from gunicorn.http.errors import (
    ConfigurationProblem,
    ExpectationFailed,
    ForbiddenProxyRequest,
    InvalidResponseHeader,
    InvalidResponseHeaderName,
    LimitRequestHeaders,
    LimitRequestLine,
    ParseException,
    UnsupportedTransferCoding,
)
from gunicorn.workers.gthread import ThreadWorker

from . import metrics
from .config import ConfigError, cli_argument, integer
from .config import load as load_settings
from .errors import PROBLEM_CONTENT_TYPE, Problem
from .logs import configure_logging
from .services import RESPONDER, SERVICES
from .telemetry import configure_telemetry, shutdown_telemetry

# gunicorn's own status for what it refuses (gunicorn.workers.base.Worker.handle_error); any other malformed
# request is a 400. The detail never echoes the request: it may hold control characters, or a secret in a query.
_REJECTIONS: tuple[tuple[type[ParseException], int, str], ...] = (
    (LimitRequestLine, 414, "The request line is longer than the server accepts."),
    (LimitRequestHeaders, 431, "The request has more header fields, or larger ones, than the server accepts."),
    (UnsupportedTransferCoding, 501, "The request's Transfer-Encoding is not supported; send chunked or none."),
    (ExpectationFailed, 417, "The request's Expect header cannot be met; send 100-continue or none."),
    (ForbiddenProxyRequest, 403, "The proxy protocol header is not accepted from this address."),
)
_access_log = logging.getLogger("shop.access")


class ShopWorker(ThreadWorker):
    """gunicorn's threaded worker, answering a request gunicorn refuses before the app sees it (a malformed request
    line, headers over its limits, a broken chunked body) as the app answers any error: problem+json, an access
    line on stdout and a count in http_rejected_requests_total. gunicorn alone sends an HTML page that no access
    line or metric shows."""

    app: ShopServer

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        server_fault = (InvalidResponseHeader, InvalidResponseHeaderName, ConfigurationProblem)
        if not isinstance(exc, ParseException) or isinstance(exc, server_fault):
            super().handle_error(req, client, addr, exc)  # the app's or the server's fault: gunicorn's 500, logged
            return
        status, detail = next(
            ((code, text) for kind, code, text in _REJECTIONS if isinstance(exc, kind)),
            (400, "The request is not valid HTTP/1.1; it was not passed to the service."),
        )
        req = req or getattr(exc, "req", None)  # a bad header keeps the request line it came with
        method = str(getattr(req, "method", "") or "")
        metrics.HTTP_REJECTED_REQUESTS.labels(self.app.service, str(status)).inc()
        _access_log.info(
            "request",
            extra={
                "method": method if method in metrics.KNOWN_METHODS or not method else "OTHER",
                "route": "rejected",
                "path": str(getattr(req, "path", "") or ""),  # the path only: a query may carry a secret
                "status": status,
                "reason": type(exc).__name__,
            },
        )
        phrase = HTTPStatus(status).phrase
        body = json.dumps(Problem(status, phrase, detail, kind="rejected-request").body()).encode()
        head = (
            f"HTTP/1.1 {status} {phrase}\r\nConnection: close\r\nContent-Type: {PROBLEM_CONTENT_TYPE}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        try:
            util.write_nonblock(client, head.encode("ascii") + body)
        except OSError:
            self.log.debug("Failed to send the rejection; the client has gone.")


class ShopGunicornLogger(glogging.Logger):
    """gunicorn's logger without gunicorn's access lines. The app writes its own, with trace ids; gunicorn, because
    logconfig_dict is set, would build its access fields for every request and log them to a logger with no handler.
    Without that, catalog alone at 200 req/s spent 334 µs of CPU a request instead of 392 (dark, one A/B pair)."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return


class ShopServer(BaseApplication):
    def __init__(self, service: str, options: dict[str, Any]) -> None:
        self.service = service
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return importlib.import_module(self.service).create_app()


# Allocations (less deallocations) between young-generation collections; CPython's default is 700. Spans and log
# records wait seconds for their batch: they survive young collections and, promoted, set off full ones.
GC_YOUNG_THRESHOLD = 7000


def _post_worker_init(_worker: Any) -> None:
    """Once the app is loaded, what start-up made (modules, the app, its caches: some 70,000 objects) is frozen out of
    the cyclic collector, which otherwise walks all of it in every full collection (57 ms of catalog's CPU each, with
    telemetry on), and the young generation is collected a tenth as often. gc.callbacks in the four services over
    65 s of bench/overhead.py's lab mode at 150 users: 0.56 s of collection before (catalog: 4 full collections),
    0.09 s after, and one collection of 0.04-0.15 s here."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _worker_exit(_server: Any, _worker: Any) -> None:
    shutdown_telemetry()  # flush spans and logs still queued when SIGTERM arrives


def gunicorn_options(service: str, host: str, port: int, threads: int, log_level: str) -> dict[str, Any]:
    def post_fork(_server: Any, _worker: Any) -> None:
        configure_logging(service, log_level)
        configure_telemetry(service)

    json_logs = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "shoplib.logs.ShopJsonFormatter", "service": service}},
        "filters": {"redact": {"()": "shoplib.telemetry.QueryRedactingLogFilter"}},  # a logged URL's secrets
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["redact"],
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": "INFO", "handlers": []},  # post_fork adds the worker's stdout handler
        "loggers": {"gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False}},
    }
    return {
        "bind": f"{host}:{port}",
        "workers": 1,
        "worker_class": ShopWorker,  # gunicorn's gthread, answering its own rejections as the app does
        "threads": threads,
        "timeout": 30,
        "graceful_timeout": 10,  # in-flight requests finish on SIGTERM, within compose's stop grace period
        "keepalive": 5,
        "preload_app": False,
        "accesslog": None,  # the app writes its own access line, with trace ids
        "logger_class": ShopGunicornLogger,
        "logconfig_dict": json_logs,
        "proc_name": f"shop-{service}",
        "control_socket_disable": True,  # four masters would fight over one $HOME/.gunicorn/gunicorn.ctl
        "post_fork": post_fork,
        "post_worker_init": _post_worker_init,
        "worker_exit": _worker_exit,
    }


def _say(service: str, level: str, message: str, detail: str) -> None:
    line = {
        "timestamp": datetime.now(UTC).isoformat(),
        "level": level,
        "logger": "shop.serve",
        "service": service,
        "message": message,
        "detail": detail,
    }
    print(json.dumps(line), file=sys.stderr, flush=True)


def _error(service: str, message: str, detail: str) -> int:
    _say(service, "ERROR", message, detail)
    return 2


DEFAULT_THREADS = 8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shoplib.serve", description=__doc__)
    parser.add_argument("service", choices=(*SERVICES, RESPONDER))
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (the container uses 0.0.0.0)")
    parser.add_argument("--port", type=cli_argument(integer(1, 65535)), default=8080)
    parser.add_argument(
        "--threads", type=cli_argument(integer(1, 256)), help="worker threads (default: the service's THREADS, or 8)"
    )
    args = parser.parse_args(argv)
    service = importlib.import_module(args.service)
    try:
        # Checked here, in the master, so a bad variable is one clear line instead of a worker traceback.
        settings = load_settings(service.SETTINGS)
    except ConfigError as exc:
        return _error(args.service, "invalid_configuration", str(exc))
    threads = args.threads or getattr(service, "THREADS", DEFAULT_THREADS)
    if settings["SHOP_ENV"] == "dev" and not (os.environ.get("JWT_SECRET") or os.environ.get("JWT_SECRET_FILE")):
        _say(
            args.service,
            "WARNING",
            "jwt_secret_of_this_process",
            "JWT_SECRET is not set: tokens are signed with a random secret of this process that no other service "
            "accepts; `make services` (python -m shoplib.supervisor) gives all of them one",
        )
    options = gunicorn_options(args.service, args.host, args.port, threads, settings["LOG_LEVEL"])
    ShopServer(args.service, options).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
