"""A real, short headless Locust run of the shop's journeys against the real shop, and how Locust starts.

Locust always runs as a subprocess (`python -m locust`): importing it monkey-patches the process with gevent,
which must never happen inside pytest.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from shop import REPO, ShopUnderTest, python

pytestmark = pytest.mark.integration  # every test here starts a process

SHOPPERS = REPO / "locustfiles" / "locustfile.py"
CATALOG_SIZE = 600
# Every journey's requests, as Locust names them: (method, name).
JOURNEY_REQUESTS = {
    ("GET", "catalog /products?category=[category]"),
    ("GET", "catalog /products?q=[term]"),
    ("GET", "catalog /products/[id]"),
    ("POST", "auth /login"),
    ("GET", "checkout /orders"),
    ("POST", "checkout /orders"),
    ("POST", "checkout /orders (declining card)"),
}


def locust(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60):
    return python("-m", "locust", "-f", str(SHOPPERS), *args, cwd=cwd, env=env, timeout=timeout)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def shop_for_load(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShopUnderTest]:
    """A shop of its own: the run sells out a third of the products on purpose and sends thousands of requests."""
    shop = ShopUnderTest(tmp_path_factory.mktemp("load")).start()
    for product_id in range(3, CATALOG_SIZE + 1, 3):
        shop.set_stock(product_id, 0)
    yield shop
    assert shop.stop() == 0
    assert shop.logs(message="unhandled_exception") == []


@pytest.fixture(scope="module")
def peak_hour_run(shop_for_load: ShopUnderTest, tmp_path_factory: pytest.TempPathFactory):
    """A 24-second peak hour (16 users at the peak), every journey equally likely so each one surely runs."""
    workdir = tmp_path_factory.mktemp("locust")
    env = {
        "SHOP_CATALOG_URL": shop_for_load.url("catalog"),
        "SHOP_CHECKOUT_URL": shop_for_load.url("checkout"),
        "SHOP_AUTH_URL": shop_for_load.url("auth"),
        "SHOP_THINK_TIME_SCALE": "0.05",
        "SHOP_PEAK_USERS": "16",
        "SHOP_PEAK_DURATION": "24s",
    }
    reports = workdir / "reports"
    result = locust(
        "--headless",
        "--shape",
        "PeakHourShape",
        "--equal-weights",
        "--only-summary",
        "--csv",
        str(reports / "run"),
        "--html",
        str(reports / "run.html"),
        cwd=workdir,
        env=env,
        timeout=90,
    )
    return result, reports


@pytest.mark.parametrize(
    ("args", "where"),
    [
        ((), "locustfiles"),  # Locust's convention: a locustfile.py where it is started
        (("-f", "locustfiles"), "."),  # the directory form Locust's docs suggest: helpers (_*.py) are skipped
        (("-f", "locustfiles/locustfile.py"), "."),
    ],
)
def test_each_way_locust_is_pointed_at_the_lab_runs_the_shoppers(shop_for_load, tmp_path, args, where):
    env = {
        "SHOP_CATALOG_URL": shop_for_load.url("catalog"),
        "SHOP_CHECKOUT_URL": shop_for_load.url("checkout"),
        "SHOP_AUTH_URL": shop_for_load.url("auth"),
        "SHOP_THINK_TIME_SCALE": "0.05",
    }
    csv_prefix = tmp_path / "run"
    result = python(
        "-m",
        "locust",
        *args,
        "--headless",
        "-u",
        "2",
        "-r",
        "2",
        "-t",
        "4s",
        "--only-summary",
        "--csv",
        str(csv_prefix),
        cwd=REPO / where,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (total,) = [row for row in read_csv(tmp_path / "run_stats.csv") if row["Name"] == "Aggregated"]
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0


def test_the_run_ends_by_itself_with_exit_code_0(peak_hour_run):
    result, _reports = peak_hour_run
    assert result.returncode == 0, result.stderr[-5000:]
    assert "Shape test stopping" in result.stderr  # the shape ended it: no -t was given


def test_every_journey_appears_in_the_stats_without_a_failure(peak_hour_run):
    _result, reports = peak_hour_run
    rows = read_csv(reports / "run_stats.csv")
    counts = {(row["Type"], row["Name"]): int(row["Request Count"]) for row in rows if row["Name"] != "Aggregated"}
    assert set(counts) == JOURNEY_REQUESTS  # nothing unnamed either: a raw URL would be a row of its own
    assert all(count > 0 for count in counts.values()), counts
    (total,) = [row for row in rows if row["Name"] == "Aggregated"]
    assert int(total["Request Count"]) >= 300
    assert int(total["Failure Count"]) == 0
    assert read_csv(reports / "run_failures.csv") == []
    assert read_csv(reports / "run_exceptions.csv") == []
    assert "checkout /orders (declining card)" in (reports / "run.html").read_text()


def test_declines_and_sold_out_items_happened_and_were_expected(peak_hour_run, shop_for_load):
    """0 failures means something only if the 402s and 409s really came: the shop's own logs say they did."""
    peak_hour_run[0].check_returncode()
    assert shop_for_load.logs(message="order_paid")
    assert shop_for_load.logs(message="order_declined")
    assert shop_for_load.logs(message="order_rejected")  # 409: a sold-out product in the order
    assert shop_for_load.logs(message="order_failed") == []


def test_the_users_followed_the_peak_hour_shape(peak_hour_run):
    _result, reports = peak_hour_run
    users = [int(row["User Count"]) for row in read_csv(reports / "run_stats_history.csv")]
    peak_at = users.index(max(users))
    assert max(users) >= 16  # the peak (a spike of 24 lasts under a second here, between two ticks)
    assert 3 in users[:peak_at]  # baseline first: a fifth of the peak
    assert 3 in users[peak_at:]  # and back down before the end


def test_the_default_mix_is_mostly_catalog_reads_with_few_orders_and_fewer_declines(tmp_path):
    result = locust("--show-task-ratio-json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    tasks = json.loads(result.stdout)["total"]["Shopper"]["tasks"]
    ratio = {name: task["ratio"] for name, task in tasks.items()}
    catalog = ratio["browse_category"] + ratio["search"] + ratio["view_product"]
    orders = ratio["place_order"] + ratio["pay_with_declining_card"]
    assert catalog >= 0.8
    assert 0.03 <= orders <= 0.1
    assert 0 < ratio["pay_with_declining_card"] / orders <= 0.1
    assert ratio["log_in"] < orders


# Runs in a subprocess (Locust's import patches the process): Locust's own RequestStats, with requests and
# failures logged at given ages, and 5,000 chart points, trimmed as the lab's long-running master trims them.
TRIM = """
import json, time
from unittest import mock
from locust.stats import RequestStats
import _retention as retention

now = float(int(time.time()))
stats = RequestStats()
for age in (7200, 3601, 3599, 5):
    with mock.patch("time.time", return_value=now - age):
        stats.log_request("GET", "catalog /products/[id]", 12, 100)
        stats.log_error("GET", "catalog /products/[id]", "expected 200, got 500")
stats.history.extend({"time": str(point)} for point in range(5000))
dropped = retention.trim(stats, now + 0.5)
entry = stats.get("catalog /products/[id]", "GET")
print(json.dumps({
    "dropped": dropped,
    "requests": sorted(int(now) - second for second in entry.num_reqs_per_sec),
    "failures": sorted(int(now) - second for second in entry.num_fail_per_sec),
    "total": sorted(int(now) - second for second in stats.total.num_reqs_per_sec),
    "first_point": stats.history[0]["time"],
    "points": len(stats.history),
    "counted": stats.total.num_requests,
}))
"""


def test_a_long_running_master_keeps_an_hour_of_counts_and_six_hours_of_charts(tmp_path):
    result = python("-c", TRIM, cwd=tmp_path, env={"PYTHONPATH": str(REPO / "locustfiles")})
    assert result.returncode == 0, result.stderr
    trimmed = json.loads(result.stdout)
    assert trimmed["requests"] == trimmed["failures"] == trimmed["total"] == [5, 3599]
    assert (trimmed["points"], trimmed["first_point"]) == (6 * 720, str(5000 - 6 * 720))
    assert trimmed["dropped"] == 2 * 2 * 2 + (5000 - 6 * 720)  # 2 old seconds x (requests, failures) x 2 entries
    assert trimmed["counted"] == 4  # the totals stay whole: only the per-second detail goes


# Runs in a subprocess: one Shopper places one order against a stand-in checkout that reads each request and
# closes the connection without a word for the first `drops` of them, as a server closing an idle kept-alive
# connection does when a request crosses the close.
RESEND = r"""
import json, math, os, sys
from gevent.server import StreamServer

drops, keys = int(sys.argv[1]), []

def checkout(sock, _address):
    with sock, sock.makefile("rb") as stream:
        while stream.readline():
            headers = {}
            while (line := stream.readline()) not in (b"\r\n", b""):
                name, value = line.decode().split(":", 1)
                headers[name.strip().lower()] = value.strip()
            stream.read(int(headers.get("content-length", 0)))
            keys.append(headers["idempotency-key"])
            if len(keys) <= drops:
                return
            body = b'{"order_id": "0123", "status": "paid"}'
            sock.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

server = StreamServer(("127.0.0.1", 0), checkout)
server.start()
os.environ["SHOP_CHECKOUT_URL"] = f"http://127.0.0.1:{server.server_port}"
import locust, locustfile
from locust.env import Environment

environment = Environment(user_classes=[locustfile.Shopper], events=locust.events)
environment.create_local_runner()
shopper = locustfile.Shopper(environment)
shopper.token, shopper.token_renew_at = "a-token", math.inf
shopper.order(locustfile.DATA["cards"]["approving"], "checkout /orders", declining=False)
entry = environment.stats.get("checkout /orders", "POST")
print(json.dumps({"keys": keys, "requests": entry.num_requests, "failures": entry.num_failures}))
"""


@pytest.mark.parametrize(("drops", "failures"), [(0, 0), (1, 0), (2, 1)])
def test_an_order_lost_with_its_connection_is_sent_once_more_with_the_same_key(tmp_path, drops, failures):
    result = python("-c", RESEND, str(drops), cwd=tmp_path, env={"PYTHONPATH": str(REPO / "locustfiles")})
    assert result.returncode == 0, result.stderr
    sent = json.loads(result.stdout.splitlines()[-1])
    assert len(sent["keys"]) == min(drops, 1) + 1  # one resend at most
    assert len(set(sent["keys"])) == 1  # ... with the same Idempotency-Key: never a second order
    assert (sent["requests"], sent["failures"]) == (1, failures)  # a lost attempt is not a request of its own


@pytest.mark.parametrize(
    ("env", "args", "named"),
    [
        ({"SHOP_PEAK_USERS": "lots"}, (), "SHOP_PEAK_USERS: expected a whole number of users, got 'lots'"),
        ({"SHOP_CATALOG_URL": "catalog:8080"}, (), "SHOP_CATALOG_URL"),
        ({}, ("--shape", "Rampage"), "--shape: invalid choice: 'Rampage'"),
    ],
)
def test_bad_settings_stop_locust_before_any_user_starts(tmp_path, env, args, named):
    result = locust("--headless", "-u", "1", "-t", "1s", *args, cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert "All users spawned" not in result.stderr
