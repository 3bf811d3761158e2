"""The native shop's token-signing secret: one per data folder, generated, private; the old published one is dead."""

from __future__ import annotations

import jwt
import requests

from shoplib.config import load
from shoplib.supervisor import JWT_SECRET_NAME, jwt_secret_file

# The development secret the code once shipped with: anyone could sign an admin token with it.
PUBLISHED_DEV_SECRET = "dev-only-secret-never-use-outside-a-laptop"


def test_each_data_folder_gets_its_own_secret_that_only_its_owner_can_read(tmp_path):
    first, second = jwt_secret_file(tmp_path / "one"), jwt_secret_file(tmp_path / "two")
    secrets = [load((), {"SHOP_ENV": "prod", "JWT_SECRET_FILE": str(path)})["JWT_SECRET"] for path in (first, second)]
    assert secrets[0] != secrets[1] and min(map(len, secrets)) >= 32
    for path in (first, second):
        assert path.stat().st_mode & 0o077 == 0, oct(path.stat().st_mode)
    assert jwt_secret_file(tmp_path / "one").read_text() == first.read_text()  # made once, kept across restarts
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
