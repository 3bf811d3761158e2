"""checkout's calls to its dependencies: a connection dropped before any answer is resent once; a dependency
that is down or slow becomes a 503 or 504 problem naming it."""

from __future__ import annotations

import socket
import threading

import pytest

from checkout.clients import Downstream
from shoplib.errors import Problem

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class DroppingServer:
    """Closes the first `drops` connections without answering (as a server closing an idle kept-alive
    connection does), then answers 200; with `silent`, accepts and never answers."""

    def __init__(self, drops: int, silent: bool = False) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.drops, self.silent, self.connections = drops, silent, 0
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.recv(65536)
            if self.silent:
                continue
            if self.connections > self.drops:
                conn.sendall(ANSWER)
            conn.close()


def test_a_connection_dropped_before_any_answer_is_resent_once():
    server = DroppingServer(drops=1)
    response = Downstream("catalog", server.url, timeout_s=2).call("POST", "/reservations", bearer="t", json={})
    assert response.status_code == 200 and server.connections == 2


def test_two_drops_in_a_row_are_a_503_naming_the_dependency():
    server = DroppingServer(drops=2)
    with pytest.raises(Problem) as problem:
        Downstream("catalog", server.url, timeout_s=2).call("POST", "/reservations", bearer="t", json={})
    assert problem.value.status == 503 and problem.value.extra["dependency"] == "catalog"
    assert server.connections == 2


def test_a_timeout_is_a_504_and_is_never_resent():
    server = DroppingServer(drops=0, silent=True)
    with pytest.raises(Problem) as problem:
        Downstream("payment", server.url, timeout_s=0.3).call("POST", "/payments", bearer="t", json={})
    assert problem.value.status == 504 and server.connections == 1


def test_a_dependency_that_is_down_is_a_503():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(Problem) as problem:
        Downstream("auth", f"http://127.0.0.1:{port}", timeout_s=1).call("GET", "/verify", bearer="t")
    assert problem.value.status == 503
