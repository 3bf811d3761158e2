"""`python -m shoplib.serve <service>`: one service under gunicorn, with the settings the container uses.

One worker process with threads: fault state, metrics and exemplars live in one process. Process-wide
set-up (JSON logging, the OpenTelemetry SDK and its threads) happens in gunicorn's post_fork hook, in the
worker, before the app is loaded (the app is not preloaded in the master), so start-up work such as
migrations and seeding is already logged and traced; worker_exit flushes what is still queued.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from datetime import UTC, datetime
from typing import Any

from gunicorn.app.base import BaseApplication

from .config import ConfigError, cli_argument, integer
from .config import load as load_settings
from .logs import configure_logging
from .services import RESPONDER, SERVICES
from .telemetry import configure_telemetry, shutdown_telemetry


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
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
        "root": {"level": "INFO", "handlers": []},  # post_fork adds the worker's stdout handler
        "loggers": {"gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False}},
    }
    return {
        "bind": f"{host}:{port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 30,
        "graceful_timeout": 10,  # in-flight requests finish on SIGTERM, within compose's stop grace period
        "keepalive": 5,
        "preload_app": False,
        "accesslog": None,  # the app writes its own access line, with trace ids
        "logconfig_dict": json_logs,
        "proc_name": f"shop-{service}",
        "control_socket_disable": True,  # four masters would fight over one $HOME/.gunicorn/gunicorn.ctl
        "post_fork": post_fork,
        "worker_exit": _worker_exit,
    }


def _error(service: str, message: str, detail: str) -> int:
    line = {
        "timestamp": datetime.now(UTC).isoformat(),
        "level": "ERROR",
        "logger": "shop.serve",
        "service": service,
        "message": message,
        "detail": detail,
    }
    print(json.dumps(line), file=sys.stderr, flush=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shoplib.serve", description=__doc__)
    parser.add_argument("service", choices=(*SERVICES, RESPONDER))
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (the container uses 0.0.0.0)")
    parser.add_argument("--port", type=cli_argument(integer(1, 65535)), default=8080)
    parser.add_argument("--threads", type=cli_argument(integer(1, 256)), default=8)
    args = parser.parse_args(argv)
    try:
        # Checked here, in the master, so a bad variable is one clear line instead of a worker traceback.
        settings = load_settings(importlib.import_module(args.service).SETTINGS)
    except ConfigError as exc:
        return _error(args.service, "invalid_configuration", str(exc))
    options = gunicorn_options(args.service, args.host, args.port, args.threads, settings["LOG_LEVEL"])
    ShopServer(args.service, options).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
