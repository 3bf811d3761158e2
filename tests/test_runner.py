"""The native supervisor and the gunicorn entry point: clear start-up errors, clean and graceful stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from shop import REPO, ShopUnderTest, python
from shoplib.supervisor import free_ports

pytestmark = pytest.mark.integration  # every test here starts a process


def run(args, env=None):
    return python("-m", *args, env={"PYTHONPATH": str(REPO / "apps"), **(env or {})})


def test_a_port_in_use_is_named_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(["shoplib.supervisor", "--data-dir", str(tmp_path)], env={"PAYMENT_PORT": str(port)})
    assert result.returncode == 2
    assert f"{port} (payment; set PAYMENT_PORT to move it)" in result.stderr
    assert not (tmp_path / "payment").exists()


def test_a_malformed_variable_stops_start_up_with_its_name_and_no_traceback(tmp_path):
    result = run(
        ["shoplib.serve", "catalog", "--port", "8999"], env={"SLOW_QUERY_MS": "fast", "DATA_DIR": str(tmp_path)}
    )
    assert result.returncode == 2
    assert "SLOW_QUERY_MS: expected a number, got 'fast'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_outside_dev_the_jwt_secret_has_no_default(tmp_path):
    env = {"SHOP_ENV": "prod", "JWT_SECRET": "", "DATA_DIR": str(tmp_path)}
    result = run(["shoplib.serve", "auth", "--port", "8999"], env=env)
    assert result.returncode == 2 and "JWT_SECRET is required but not set" in result.stderr
    short = run(["shoplib.serve", "auth", "--port", "8999"], env={**env, "JWT_SECRET": "short"})
    assert short.returncode == 2 and "JWT_SECRET: must be 32 to 4096 characters long" in short.stderr
    assert "short" not in short.stderr.replace("JWT_SECRET", "")


def test_unknown_services_and_bad_ports_are_refused(tmp_path):
    assert run(["shoplib.supervisor", "--services", "catalog,shipping"]).returncode == 2
    port_zero = run(["shoplib.serve", "catalog", "--port", "0"])
    assert port_zero.returncode == 2 and "--port: must be between 1 and 65535, got 0" in port_zero.stderr
    bad_port = run(["shoplib.supervisor", "--data-dir", str(tmp_path)], env={"AUTH_PORT": "http"})
    assert bad_port.returncode == 2 and "AUTH_PORT: expected a whole number" in bad_port.stderr


def test_sigterm_lets_in_flight_requests_finish_then_stops_every_service(tmp_path):
    shop = ShopUnderTest(tmp_path, services=("catalog", "auth")).start()
    admin = shop.login("admin")
    assert shop.set_faults("catalog", admin, {"latency": {"ms": 1500}}).ok
    answers = []
    slow = threading.Thread(target=lambda: answers.append(requests.get(shop.url("catalog", "/products/1"), timeout=10)))
    slow.start()
    time.sleep(0.5)
    assert shop.stop() == 0  # SIGTERM to each service
    slow.join()
    assert answers[0].status_code == 200  # finished during the graceful stop
    for service in ("catalog", "auth"):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", shop.ports[service])) != 0, f"{service} still listening"


def test_ctrl_c_stops_the_supervised_shop_cleanly(tmp_path):
    (port,) = free_ports(1)
    env = {**os.environ, "PYTHONPATH": str(REPO / "apps"), "PAYMENT_PORT": str(port)}
    with subprocess.Popen(
        [sys.executable, "-m", "shoplib.supervisor", "--services", "payment", "--data-dir", str(tmp_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as supervised:
        assert "shop: ready" in supervised.stderr.readline()
        supervised.send_signal(signal.SIGINT)
        assert supervised.wait(timeout=30) == 0
        assert "exited" not in supervised.stderr.read()  # no service died on its own
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "payment still listening"
