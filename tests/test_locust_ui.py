"""The peak hour is one click in Locust's web UI, proved in a real browser.

The lab's own Locust (compose.yaml's master and worker commands, only the addresses made native) loads a native
shop; headless Chromium, driven by Selenium through Debian's chromedriver, does what compose.yaml tells a person
to do: Stop the Steady load, New, pick PeakHourShape in the shape picker, Start. Locust runs as subprocesses
(importing it would monkey-patch pytest's process with gevent).
"""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from prom import binary
from shop import REPO, ShopUnderTest, poll_until
from shoplib.supervisor import free_ports
from stack import container_path, env_default, services

pytestmark = pytest.mark.integration  # starts the shop, Locust, chromedriver and Chromium

CHROMIUM_PACKAGES = "chromium chromium-driver"
# Headless in a sandbox-less container; without the background-networking flags Chromium's own calls home fail
# on a closed network and take connections down with them.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",  # the whole stats table in the screenshot
)
# A peak hour shrunk to seconds: busy users (think times x 0.05), 16 at the peak (the baseline a fifth: 3).
PEAK_USERS = 16
PEAK_DURATION_S = 20
UNDER_WAY = {"spawning", "running"}  # Locust's states while users run
LOAD_ENV = {
    "SHOP_THINK_TIME_SCALE": "0.05",
    "SHOP_PEAK_USERS": str(PEAK_USERS),
    "SHOP_PEAK_DURATION": f"{PEAK_DURATION_S}s",
}


def lab_command(service: str) -> list[str]:
    """compose.yaml's command for a Locust service as it runs natively: the mounted locustfile is the repo's and
    every ${VAR:-default} takes its default."""
    args = []
    for arg in services()[service]["command"]:
        in_repo = container_path(service, arg)
        args.append(str(REPO / in_repo) if in_repo else env_default(arg))
    return args


@dataclass
class LabLocust:
    url: str
    log: Path
    processes: list[subprocess.Popen[bytes]]

    def running_steady(self) -> bool:
        """Up, its worker in, and the load it starts with under way; a process that exits fails the test."""
        for process in self.processes:
            if process.poll() is not None:
                raise AssertionError(f"Locust exited with {process.returncode}:\n{self.log_tail()}")
        try:
            # A master counts its workers' users only once they have all started (at -r 1, seconds later).
            return self.stats()["state"] in UNDER_WAY
        except requests.ConnectionError:
            return False

    def stats(self) -> dict[str, Any]:
        """Locust's own view of the run: state, user_count, per-request stats (the last row is the total)."""
        answer: dict[str, Any] = requests.get(f"{self.url}/stats/requests", timeout=5).json()
        return answer

    def log_tail(self) -> str:
        return self.log.read_text()[-3000:]

    def wait_for(self, probe: Callable[[], bool], timeout: float, what: str) -> None:
        """poll_until, Locust's log as it is then in the failure."""
        try:
            poll_until(probe, timeout=timeout, interval=0.5, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None


@pytest.fixture
def chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    """Debian's Chromium through Debian's chromedriver, a fresh profile in the test's tmp dir, network logging on
    (the test reads what the page sent and got). Missing, the test skips, or fails in CI (prom.binary)."""
    browser, driver = binary("chromium", CHROMIUM_PACKAGES), binary("chromedriver", CHROMIUM_PACKAGES)
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never go looking for a driver online
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # An explicit driver path: Selenium Manager is not even started.
    service = Service(driver, log_output=str(tmp_path / "chromedriver.log"))
    page = webdriver.Chrome(service=service, options=options)
    yield page
    page.quit()


@pytest.fixture
def shop_for_ui(tmp_path: Path) -> Iterator[ShopUnderTest]:
    (workdir := tmp_path / "shop").mkdir()
    shop = ShopUnderTest(workdir, {"SEED_ORDERS": "2000"}).start()  # not the lab's 250,000: seconds to seed
    yield shop
    assert shop.stop() == 0
    assert shop.logs(message="unhandled_exception") == []


@pytest.fixture
def lab_locust(shop_for_ui: ShopUnderTest, tmp_path: Path) -> Iterator[LabLocust]:
    """The compose lab's Locust: a master with the shape picker that starts Steady by itself, and one worker."""
    web_port, master_port = free_ports(2)
    env = {
        "SHOP_CATALOG_URL": shop_for_ui.url("catalog"),
        "SHOP_CHECKOUT_URL": shop_for_ui.url("checkout"),
        "SHOP_AUTH_URL": shop_for_ui.url("auth"),
        **LOAD_ENV,
    }
    loopback = ["--web-host", "127.0.0.1", "--web-port", str(web_port)]
    master = [*lab_command("locust-master"), *loopback]
    master += ["--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port)]
    worker = lab_command("locust-worker")
    worker[worker.index("--master-host") + 1] = "127.0.0.1"
    worker += ["--master-port", str(master_port)]
    log = tmp_path / "locust.log"
    processes = []
    with log.open("wb") as out:
        for args in (master, worker):
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "locust", *args],
                    cwd=tmp_path,
                    env={**shop_for_ui.supervisor.environ, **env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        yield LabLocust(f"http://127.0.0.1:{web_port}", log, processes)
    finally:
        for process in processes:  # the master first: it tells its worker to quit
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def button(page: webdriver.Chrome, label: str) -> WebElement:
    # The page shows labels upper-cased by CSS; the DOM holds them as written.
    return page.find_element(By.XPATH, f"//button[normalize-space()='{label}']")


def header(page: webdriver.Chrome, label: str) -> str:
    """A value in the page's header bar (Status, Users, RPS ...): the element after its label; '' when absent."""
    try:
        return page.find_element(By.XPATH, f"//*[normalize-space(text())='{label}']/following-sibling::*[1]").text
    except NoSuchElementException:
        return ""


def swarm_exchange(page: webdriver.Chrome) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The form the page POSTed to /swarm and Locust's answer, from Chromium's own network log."""
    events = [json.loads(entry["message"])["message"] for entry in page.get_log("performance")]
    posts = [
        event["params"]
        for event in events
        if event["method"] == "Network.requestWillBeSent" and event["params"]["request"]["url"].endswith("/swarm")
    ]
    assert len(posts) == 1, f"the page sent {len(posts)} /swarm requests"
    request_id, sent = posts[0]["requestId"], parse_qs(posts[0]["request"].get("postData", ""))
    # The answer may still be on its way when the click returns.
    body = poll_until(
        lambda: page.execute_cdp_cmd("Network.getResponseBody", {"requestId": request_id})["body"],
        timeout=10,
        what="Locust's answer to /swarm",
    )
    return sent, json.loads(body)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header; fails unless the file is a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_peak_hour_is_one_click_in_locusts_web_ui(
    chromium: webdriver.Chrome, lab_locust: LabLocust, tmp_path: Path
) -> None:
    # The lab's Locust starts Steady by itself (--autostart) once its worker is in: the page shows it running.
    lab_locust.wait_for(lab_locust.running_steady, timeout=60, what="Locust to run Steady on its own")
    chromium.get(lab_locust.url)
    wait = WebDriverWait(chromium, 20)
    wait.until(lambda page: header(page, "Status").lower() in UNDER_WAY)

    # What compose.yaml tells a person to do: Stop, New, pick PeakHourShape in the shape picker, Start.
    button(chromium, "Stop").click()
    wait.until(lambda page: header(page, "Status").lower() == "stopped")
    button(chromium, "New").click()
    try:
        picker = Select(wait.until(lambda page: page.find_element(By.ID, "shapeClass")))
    except TimeoutException as exc:
        raise AssertionError("no shape picker: compose.yaml's locust-master must run with --class-picker") from exc
    assert "PeakHourShape" in [option.text for option in picker.options]
    picker.select_by_visible_text("PeakHourShape")
    form_users = int(chromium.find_element(By.NAME, "userCount").get_attribute("value") or 0)
    assert form_users < PEAK_USERS  # the form's own user count (what Steady left), below the shape's peak
    button(chromium, "Start").click()
    started_at = time.monotonic()

    # The form carried the pick, and Locust says it runs that shape.
    sent, answer = swarm_exchange(chromium)
    assert sent["shape_class"] == ["PeakHourShape"], sent
    assert answer["success"] is True, answer
    assert answer["message"] == "Swarming started using shape class 'PeakHourShape'", answer

    # Requests flow and the users climb to the shape's peak, past the form's user count (a shape ignores it);
    # the page itself shows it before the screenshot is taken.
    lab_locust.wait_for(
        lambda: lab_locust.stats()["user_count"] >= PEAK_USERS, timeout=PEAK_DURATION_S, what="the peak's users"
    )
    wait.until(lambda page: int(header(page, "Users") or 0) >= PEAK_USERS and float(header(page, "RPS") or 0) > 0)
    screenshot = tmp_path / "peak-hour.png"
    assert chromium.save_screenshot(str(screenshot))
    assert png_size(screenshot) == tuple(chromium.execute_script("return [window.innerWidth, window.innerHeight]"))
    assert screenshot.stat().st_size > 20_000  # a rendered page with the stats table, not a blank one

    # The shape ends the run by itself after SHOP_PEAK_DURATION (Steady, or no shape, would run forever).
    lab_locust.wait_for(
        lambda: lab_locust.stats()["state"] == "stopped", timeout=PEAK_DURATION_S + 20, what="the shape to end the run"
    )
    assert time.monotonic() - started_at >= PEAK_DURATION_S - 1
    assert "Shape test stopping" in lab_locust.log.read_text()

    # Every request succeeded: declined cards and sold-out items count as such (the locustfile's judge).
    final = lab_locust.stats()
    total = final["stats"][-1]
    assert total["name"] == "Aggregated"
    assert total["num_requests"] >= 200, total
    assert total["num_failures"] == 0, final["errors"]
    assert final["errors"] == []
    served = {row["name"].split()[0] for row in final["stats"][:-1] if row["num_requests"]}
    assert served == {"catalog", "auth", "checkout"}
    assert requests.get(f"{lab_locust.url}/exceptions", timeout=5).json()["exceptions"] == []
    (worker,) = final["workers"]  # the lab's one worker ran the users, and is still there
    assert worker["state"] != "missing"

    # Prometheus scrapes the same counts from the master: the telemetry dashboard's "requests sent (Locust)".
    scraped = requests.get(f"{lab_locust.url}/metrics", timeout=5).text
    exported = {
        sample.labels["name"]: sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "locust_requests_total"
    }
    assert exported == {row["name"]: row["num_requests"] for row in final["stats"][:-1]}


def test_the_labs_master_and_worker_stop_at_once_on_sigterm(lab_locust: LabLocust) -> None:
    """As `docker compose stop` ends them, under the Steady load they start with: one SIGTERM each (the worker
    first, compose stops dependents first), well inside the 10 s Docker waits before it kills."""
    lab_locust.wait_for(lab_locust.running_steady, timeout=60, what="the lab's Locust to run Steady")
    master, worker = lab_locust.processes
    for name, process in (("worker", worker), ("master", master)):
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0, lab_locust.log_tail()
        assert time.monotonic() - started < 3, f"the {name} took {time.monotonic() - started:.1f} s to stop"
