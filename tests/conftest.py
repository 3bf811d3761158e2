"""Fixtures: apps built in-process for unit tests, and the real multi-process shop for the rest."""

from __future__ import annotations

import importlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from otlp_receiver import OtlpReceiver
from prom import Prometheus
from shop import ShopUnderTest, exporting_to, poll_until
from shoplib.app import close_app
from shoplib.config import load as load_settings
from shoplib.security import SERVICE_ROLE, sign_token
from shoplib.services import SERVICES

# In-process tests build the apps with dev defaults; no exporter threads start (that is gunicorn's post_fork).
os.environ["SHOP_ENV"] = "dev"

# Fixtures that start real processes: a test that uses one (directly or through another) is an integration test.
PROCESS_FIXTURES = {"shop", "prometheus"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _in_process_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keeps the fast tier honest: a test not marked integration fails if it starts a process."""
    if request.node.get_closest_marker("integration"):
        return

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError(f"{request.node.nodeid} starts a process: mark it @pytest.mark.integration")

    monkeypatch.setattr(subprocess, "Popen", refuse)


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """`make_app("catalog", SEED_PRODUCTS=20)` builds a service with its own temporary database; the apps'
    connections are closed when the test ends."""
    built: list[Flask] = []

    def build(service: str, **config: Any) -> Flask:
        test_config = {"TESTING": True, "DATA_DIR": str(tmp_path / service), **config}
        app = importlib.import_module(service).create_app(test_config)
        built.append(app)
        return app

    yield build
    for app in built:
        close_app(app)


@pytest.fixture
def token_for() -> Callable[..., str]:
    """Signs a token as auth would (same settings, so same secret), without a login round trip."""
    signer = Flask("signer")
    signer.config.from_mapping(load_settings(()))

    def sign(
        sub: str = "alice", roles: tuple[str, ...] = ("customer",), ttl_s: int = 600, customer: str | None = None
    ) -> str:
        return sign_token(signer.config, sub, roles, ttl_s, customer=customer)

    return sign


@pytest.fixture
def service_headers(token_for: Callable[..., str]) -> dict[str, str]:
    """checkout's own token acting for alice: what catalog's reservations and payment's payments accept."""
    return bearer(token_for("checkout", (SERVICE_ROLE,), customer="alice"))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """The test client of the module's `app` fixture."""
    return app.test_client()


@pytest.fixture
def headers(token_for: Callable[..., str]) -> dict[str, str]:
    """A customer's Authorization header."""
    return bearer(token_for())


@pytest.fixture
def client_for(make_app: Callable[..., Flask]) -> Callable[..., FlaskClient]:
    def build(service: str, **config: Any) -> FlaskClient:
        return make_app(service, **config).test_client()

    return build


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory, otlp: OtlpReceiver) -> Iterator[ShopUnderTest]:
    """The four services as real processes, exporting traces and logs to the test's OTLP receiver."""
    running = ShopUnderTest(tmp_path_factory.mktemp("shop"), exporting_to(otlp.endpoint)).start()
    yield running
    assert running.stop() == 0
    # Whatever the tests threw at it, no request may have ended in an unexpected error.
    assert running.logs(message="unhandled_exception") == []


@pytest.fixture(scope="session")
def admin_token(shop: ShopUnderTest) -> str:
    return shop.login("admin")


@pytest.fixture(scope="session")
def prometheus(shop: ShopUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """The real Prometheus on the project's prometheus.yml and rules, scraping the session's shop."""
    running = Prometheus(tmp_path_factory.mktemp("prometheus"), shop.ports).start()
    poll_until(
        lambda: running.targets_up("shop") and running.targets_up("prometheus"),
        timeout=30,
        what="the shop's four targets and Prometheus itself to be up",
    )
    yield running
    running.stop()


@pytest.fixture
def clean_faults(shop: ShopUnderTest, admin_token: str) -> Iterator[None]:
    """Whatever a test injects is cleared afterwards, so tests stay independent."""
    yield
    for service in SERVICES:
        shop.clear_faults(service, admin_token)
