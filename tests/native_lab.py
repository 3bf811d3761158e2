"""The whole lab natively, for the responder's end-to-end tests and the scenarios benchmark: the shop, the
responder, Debian's Prometheus and Alertmanager on the project's configs, and Tempo/Loki read-API doubles over an
OTLP receiver of the tests' own (doubles, not Tempo or Loki)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from backend_doubles import BackendDouble
from otlp_receiver import OtlpReceiver
from prom import Alertmanager, Prometheus
from shop import ShopUnderTest, exporting_to, poll_until
from shoplib.services import RESPONDER
from shoplib.supervisor import Supervisor, free_ports


@dataclass
class NativeLab:
    shop: ShopUnderTest
    responder: str
    prometheus: Prometheus
    alertmanager: Alertmanager
    env: dict[str, str]  # what `shoplab` and another responder need to find this lab

    def pager(self) -> dict[str, str]:
        """What Alertmanager sends the responder: the token the native shop generated in its data folder."""
        return {"Authorization": f"Bearer {self.shop.supervisor.secret('RESPONDER_TOKEN')}"}

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.shop.login('admin')}"}

    def release(self, service: str) -> dict[str, Any]:
        answer: dict[str, Any] = requests.get(
            self.shop.url(service, "/admin/release"), headers=self.admin(), timeout=5
        ).json()
        return answer


@contextmanager
def running_responder(
    workdir: Path, shop: ShopUnderTest, env: Mapping[str, str], port: int | None = None
) -> Iterator[str]:
    """The responder as a real process beside `shop`; yields its URL."""
    port = port or free_ports(1)[0]
    stdout = workdir / f"responder-{port}.stdout"
    with stdout.open("wb") as out:
        responder = Supervisor(
            workdir / f"responder-{port}",
            {**shop.ports, RESPONDER: port},
            services=(RESPONDER,),
            environ={**shop.supervisor.environ, **env},
            stdout=out,
        ).start()
    try:
        if not responder.wait_ready(60):
            raise RuntimeError(f"the responder did not start:\n{stdout.read_text()[-3000:]}")
        yield f"http://127.0.0.1:{port}"
    finally:
        responder.stop()


@contextmanager
def native_lab(
    workdir: Path, responder_env: Mapping[str, str] | None = None, seed_orders: int = 2000
) -> Iterator[NativeLab]:
    """`seed_orders`: checkout's order history (250 000 in the lab; a missing index shows only on a big table)."""
    with ExitStack() as stack:
        receiver = OtlpReceiver().start()
        stack.callback(receiver.stop)
        tempo, loki = BackendDouble("tempo", receiver).start(), BackendDouble("loki", receiver).start()
        stack.callback(tempo.stop)
        stack.callback(loki.stop)
        shop = ShopUnderTest(
            workdir,
            exporting_to(receiver.endpoint, 200, SEED_ORDERS=str(seed_orders)),
        ).start()
        stack.callback(shop.stop)
        sink_port, responder_port = free_ports(2)
        alertmanager = Alertmanager(
            workdir,
            f"http://127.0.0.1:{sink_port}/alerts",
            f"http://127.0.0.1:{responder_port}/alerts",
            shop.supervisor.secret("RESPONDER_TOKEN"),
        ).start()
        stack.callback(alertmanager.stop)
        prometheus = Prometheus(workdir, shop.ports, alertmanager=alertmanager.address).start()
        stack.callback(prometheus.stop)
        poll_until(lambda: prometheus.targets_up("shop"), timeout=30, what="Prometheus to scrape the shop")
        backends = {"PROMETHEUS_URL": prometheus.url, "TEMPO_URL": tempo.url, "LOKI_URL": loki.url}
        responder_url = stack.enter_context(
            running_responder(workdir, shop, {**backends, **(responder_env or {})}, responder_port)
        )
        env = {
            **backends,
            "ALERTMANAGER_URL": f"http://{alertmanager.address}",
            "RESPONDER_URL": responder_url,
            "JWT_SECRET_FILE": shop.supervisor.environ["JWT_SECRET_FILE"],  # shoplab signs its admin tokens
            **{f"{service.upper()}_URL": url for service, url in shop.urls.items()},
        }
        yield NativeLab(shop, responder_url, prometheus, alertmanager, env)
