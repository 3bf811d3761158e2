"""The lab's alert receiver: Alertmanager posts webhooks here; each alert becomes one JSON line on stdout.

Standard library only, so it runs in the plain Python image. Listens on 0.0.0.0:8080 (PORT to change);
GET /healthz for the compose healthcheck.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1024 * 1024


_stdout = threading.Lock()


def log(message: str, **fields: object) -> None:
    """One JSON line per call, whole: webhooks arrive on concurrent threads, and print() writes the text and
    its newline separately, so two lines could interleave."""
    line = {"timestamp": datetime.now(UTC).isoformat(), "level": "INFO", "service": "alert-sink", "message": message}
    with _stdout:
        sys.stdout.write(json.dumps({**line, **fields}) + "\n")
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer(200 if self.path == "/healthz" else 404, {"status": "ok"} if self.path == "/healthz" else {})

    def do_POST(self) -> None:
        if self.path != "/alerts":
            self._answer(404, {"detail": "post Alertmanager webhooks to /alerts"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if not 0 < length <= MAX_BODY:
                raise ValueError(f"body must be 1 byte to {MAX_BODY} bytes")
            payload = json.loads(self.rfile.read(length))
            alerts = payload["alerts"]
            if not isinstance(alerts, list):
                raise ValueError("alerts must be a list")
        except (ValueError, KeyError, TypeError) as exc:
            self._answer(400, {"detail": f"not an Alertmanager webhook: {exc}"})
            return
        for alert in alerts:
            log(
                "alert",
                status=alert.get("status"),
                alertname=alert.get("labels", {}).get("alertname"),
                labels=alert.get("labels", {}),
                summary=alert.get("annotations", {}).get("summary"),
                starts_at=alert.get("startsAt"),
                ends_at=alert.get("endsAt"),
                receiver=payload.get("receiver"),
            )
        self._answer(200, {"received": len(alerts)})

    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: object) -> None:  # one JSON line per alert is the only output
        pass


def main() -> int:
    raw_port = os.environ.get("PORT", "8080")
    if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
        print(f"webhook_sink: PORT must be a port number, got {raw_port!r}", file=sys.stderr)
        return 2
    port = int(raw_port)
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    # As PID 1 in its container, an unhandled SIGTERM would be ignored and `docker compose stop` would wait 10 s
    # to kill it. shutdown() waits for serve_forever() to return, so it must run off the main thread.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    log("listening", port=port)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.server_close()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
