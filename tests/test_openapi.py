"""Each service's OpenAPI 3.1 document (/openapi.json, built from the pydantic models its views validate with), and
schemathesis holding the real services to it: no server error, every answer in its documented status, content
type and schema, and every input the document rules out rejected (issue #13)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask

from shop import SERVICES as SHOP_SERVICES
from shop import ShopUnderTest
from shoplib.api import openapi_path
from shoplib.config import load as load_settings
from shoplib.security import SERVICE_ROLE, sign_token

SERVICES = (*SHOP_SERVICES, "responder")
# Not documented: Prometheus's exposition format, the document itself, and Flask's static files (none served).
UNDOCUMENTED = {"/metrics", "/openapi.json", "/static/<path:filename>"}
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
    "negative_data_rejection"
)
EXAMPLES = 20  # per operation and phase: the run stays under a minute, every operation well covered
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.mark.parametrize("service", SERVICES)
def test_the_document_is_openapi_3_1_and_describes_every_route(make_app, service):
    app: Flask = make_app(service)
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    document = response.json
    assert document["openapi"] == "3.1.0" and document["info"]["title"] == f"shoplab {service}"
    routes = {openapi_path(rule.rule) for rule in app.url_map.iter_rules() if rule.rule not in UNDOCUMENTED}
    assert set(document["paths"]) == routes
    for path, operations in document["paths"].items():
        for method, described in operations.items():
            # Whatever else an operation answers is problem details, documented once as its default.
            problem = described["responses"]["default"]["content"]["application/problem+json"]["schema"]
            assert problem == {"$ref": "#/components/schemas/ProblemDetails"}, (method, path)


def test_the_request_body_is_validated_by_the_schema_the_document_shows(make_app, token_for):
    """Catalog's reservation body: the document's limits are the ones a request meets."""
    app: Flask = make_app("catalog")
    client = app.test_client()
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    assert schemas["ReservationRequest"]["properties"]["items"]["maxItems"] == 50
    assert schemas["Line"]["properties"]["quantity"]["maximum"] == 100
    headers = {"Authorization": f"Bearer {token_for('checkout', (SERVICE_ROLE,), customer='alice')}"}
    too_many = {"reference": "order-1", "items": [{"product_id": 1, "quantity": 101}]}
    response = client.post("/reservations", json=too_many, headers=headers)
    assert response.status_code == 400
    assert response.json["errors"] == [
        {"field": "items[0].quantity", "message": "Input should be less than or equal to 100"}
    ]


@pytest.fixture(scope="module")
def api_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShopUnderTest]:
    # A shop of its own: schemathesis's logins lock 127.0.0.1 out, its orders take stock.
    env = {"OTEL_SDK_DISABLED": "true"}
    shop = ShopUnderTest(tmp_path_factory.mktemp("openapi"), env, services=SERVICES).start()
    yield shop
    assert shop.stop() == 0
    assert shop.logs(message="unhandled_exception") == []


def _token(shop: ShopUnderTest, sub: str, roles: tuple[str, ...], customer: str | None = None) -> str:
    return sign_token(load_settings((), shop.supervisor.environ), sub, roles, 3600, customer=customer)


def _schemathesis(shop: ShopUnderTest, service: str, token: str, *options: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(SCHEMATHESIS), "--config-file", str(CONFIG), "run", shop.url(service, "/openapi.json"), "--checks", CHECKS,
        "--max-examples", str(EXAMPLES), "--seed", "1", "--workers", "1", "--no-color",
        "--generation-database", "none",
        "--header", f"Authorization: Bearer {token}", *options,
    ]  # fmt: skip
    # One worker: hypothesis describes its strategies from their source, which fails from several threads. No
    # example database: what a run tries follows from the seed alone, on any machine.
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.integration
@pytest.mark.parametrize("service", SERVICES)
def test_schemathesis_finds_nothing(api_shop, service):
    if service in ("catalog", "payment"):  # their reservations and payments are checkout's, for a customer
        token = _token(api_shop, "checkout", (SERVICE_ROLE,), customer="alice")
    elif service == "responder":
        token = api_shop.supervisor.secret("RESPONDER_TOKEN")
    else:
        token = _token(api_shop, "alice", ("customer",))
    run = _schemathesis(api_shop, service, token)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert cases and int(cases[1]) == int(cases[2]) >= 100, run.stdout[-3000:]

    # The admin operations with an admin's token, all but the PUTs: schemathesis would switch faults on and roll
    # out every release, whose errors are the point of them.
    admin = _schemathesis(
        api_shop, service, _token(api_shop, "admin", ("admin",)), "--include-path-regex", "^/admin/",
        "--exclude-method", "PUT",
    )  # fmt: skip
    assert admin.returncode == 0, admin.stdout[-6000:] + admin.stderr[-2000:]


def test_a_running_service_serves_its_document(api_shop):
    document = requests.get(api_shop.url("checkout", "/openapi.json"), timeout=10).json()
    assert "/orders" in document["paths"] and document["openapi"] == "3.1.0"
