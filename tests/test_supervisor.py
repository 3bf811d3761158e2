"""The native shop's secrets (token-signing key, admin password, responder token): one set per data folder,
generated, private; the published ones the code once shipped with are dead."""

from __future__ import annotations

import jwt
import pytest
import requests

from shop import ShopUnderTest
from shoplib.config import load
from shoplib.services import RESPONDER
from shoplib.supervisor import GENERATED_SECRETS, JWT_SECRET_NAME, secret_file

# What the code once shipped with for native runs: anyone could sign an admin token, log in as the admin, or page
# the responder (and have it roll a release back) with these.
PUBLISHED_DEV_SECRET = "dev-only-secret-never-use-outside-a-laptop"
PUBLISHED_ADMIN_PASSWORD = "admin-pass"
PUBLISHED_RESPONDER_TOKEN = "dev-only-responder-token-never-use-outside-a-laptop"


def test_each_data_folder_gets_its_own_secret_that_only_its_owner_can_read(tmp_path):
    first, second = secret_file(tmp_path / "one"), secret_file(tmp_path / "two")
    secrets = [load((), {"SHOP_ENV": "prod", "JWT_SECRET_FILE": str(path)})["JWT_SECRET"] for path in (first, second)]
    assert secrets[0] != secrets[1] and min(map(len, secrets)) >= 32
    for path in (first, second):
        assert path.stat().st_mode & 0o077 == 0, oct(path.stat().st_mode)
    assert secret_file(tmp_path / "one").read_text() == first.read_text()  # made once, kept across restarts
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [JWT_SECRET_NAME]  # no temporary file left


def test_a_native_shop_refuses_tokens_signed_with_the_published_dev_secret(shop):
    """The session's shop runs as `make services` does, with no JWT_SECRET: a token with a real admin's claims,
    signed with the published secret, is refused; signed with the data folder's secret it is accepted."""
    secret_file = shop.workdir / "data" / JWT_SECRET_NAME
    assert secret_file.stat().st_mode & 0o077 == 0
    real = shop.login("admin")  # signed by auth ...
    claims = jwt.decode(real, options={"verify_signature": False})
    faults = shop.url("catalog", "/admin/faults")  # ... and checked by catalog: one secret for the shop

    def status(token: str) -> int:
        return requests.get(faults, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code

    assert status(real) == 200
    assert status(jwt.encode(claims, secret_file.read_text().strip(), algorithm="HS256")) == 200
    assert status(jwt.encode(claims, PUBLISHED_DEV_SECRET, algorithm="HS256")) == 401


def test_a_native_shop_generates_its_admin_password_and_refuses_the_published_one(shop):
    data = shop.workdir / "data"
    assert sorted(GENERATED_SECRETS.values()) == sorted(p.name for p in data.iterdir() if p.is_file())
    password = (data / GENERATED_SECRETS["DEMO_ADMIN_PASSWORD"]).read_text().strip()
    assert len(password) >= 32 and (data / "admin-password").stat().st_mode & 0o077 == 0

    def login(secret: str) -> int:
        credentials = {"username": "admin", "password": secret}
        return requests.post(shop.url("auth", "/login"), json=credentials, timeout=10).status_code

    assert login(password) == 200
    assert login(PUBLISHED_ADMIN_PASSWORD) == 401


@pytest.mark.integration
def test_a_native_responder_takes_pages_only_with_its_generated_token(tmp_path):
    responder = ShopUnderTest(tmp_path, {"OTEL_SDK_DISABLED": "true"}, services=(RESPONDER,)).start()
    try:
        token = (tmp_path / "data" / GENERATED_SECRETS["RESPONDER_TOKEN"]).read_text().strip()
        alerts = responder.url(RESPONDER, "/alerts")

        def page(secret: str) -> int:
            headers = {"Authorization": f"Bearer {secret}"}
            return requests.post(alerts, json={"alerts": []}, headers=headers, timeout=10).status_code

        assert page(PUBLISHED_RESPONDER_TOKEN) == 401
        assert page(token) == 400  # past the credentials check: an empty page is a bad request
    finally:
        assert responder.stop() == 0
