"""auth: login, token verification, demo users, password storage."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest

from auth import users
from conftest import bearer
from shoplib.config import load as load_settings


@pytest.fixture
def auth(client_for):
    return client_for("auth")


def login(client, username="alice", password="alice-pass"):
    return client.post("/login", json={"username": username, "password": password})


def test_login_issues_a_bearer_token_that_verify_accepts(auth):
    response = login(auth)
    assert response.status_code == 200
    body = response.json
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["iss"] == "shoplab-auth" and claims["aud"] == "shoplab" and claims["exp"] > time.time()
    verified = auth.get("/verify", headers=bearer(body["access_token"]))
    assert verified.status_code == 200
    assert verified.json["sub"] == "alice" and verified.json["roles"] == ["customer"]


def test_admin_has_the_admin_role(auth):
    token = login(auth, "admin", "admin-pass").json["access_token"]
    assert auth.get("/verify", headers=bearer(token)).json["roles"] == ["admin"]


@pytest.mark.parametrize(("username", "password"), [("alice", "wrong-pass"), ("mallory", "alice-pass")])
def test_bad_credentials_are_401_without_saying_which_part_was_wrong(auth, username, password):
    response = login(auth, username, password)
    assert response.status_code == 401
    assert response.content_type == "application/problem+json"
    assert response.json["detail"] == "Invalid username or password."
    assert "Bearer" in response.headers["WWW-Authenticate"]


def test_demo_password_comes_from_the_environment(client_for):
    auth = client_for("auth", DEMO_BOB_PASSWORD="a-better-secret")
    assert login(auth, "bob", "bob-pass").status_code == 401
    assert login(auth, "bob", "a-better-secret").status_code == 200


def test_passwords_are_stored_hashed(make_app, tmp_path):
    make_app("auth")
    stored = b"".join(path.read_bytes() for path in (tmp_path / "auth").glob("auth.db*"))  # WAL included
    assert b"alice-pass" not in stored and b"scrypt$" in stored


SECRET = load_settings(())["JWT_SECRET"]  # what the apps under test use


def _forge(claims, secret=SECRET, algorithm="HS256"):
    base = {
        "sub": "alice",
        "roles": ["admin"],
        "iss": "shoplab-auth",
        "aud": "shoplab",
        "iat": int(time.time()),
        "exp": int(time.time()) + 600,
    }
    return jwt.encode({**base, **claims}, secret, algorithm=algorithm)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(_forge({}, secret="another-secret-that-is-long-enough-1234"), id="wrong-secret"),
        pytest.param(_forge({"exp": int(time.time()) - 60}), id="expired"),
        pytest.param(_forge({"iss": "someone-else"}), id="wrong-issuer"),
        pytest.param(_forge({"aud": "another-app"}), id="wrong-audience"),
        pytest.param(_forge({"sub": 42}), id="non-string-subject"),
        pytest.param(jwt.encode({"sub": "alice", "roles": ["admin"]}, None, algorithm="none"), id="alg-none"),
        pytest.param("not.a.jwt", id="garbage"),
        pytest.param("x" * 5000, id="huge"),
    ],
)
def test_verify_rejects_forged_expired_and_malformed_tokens(auth, token):
    response = auth.get("/verify", headers=bearer(token))
    assert response.status_code == 401
    assert response.content_type == "application/problem+json"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic YWxpY2U6YWxpY2UtcGFzcw=="])
def test_verify_needs_a_bearer_header(auth, header):
    headers = {} if header is None else {"Authorization": header}
    assert auth.get("/verify", headers=headers).status_code == 401


def test_a_token_forged_with_the_right_secret_and_claims_is_accepted(auth):
    # The control for the rejections above: they fail for the reason named, not for the secret.
    assert auth.get("/verify", headers=bearer(_forge({}))).json["sub"] == "alice"


def test_concurrent_logins_derive_at_most_two_hashes_at_once(auth, monkeypatch):
    """scrypt holds 16 MiB per derivation: twelve logins at once must not hold twelve times that."""
    running, highest = [0], [0]
    guard = threading.Lock()
    real_scrypt = users.hashlib.scrypt

    def counted(*args, **kwargs):
        with guard:
            running[0] += 1
            highest[0] = max(highest[0], running[0])
        try:
            time.sleep(0.05)
            return real_scrypt(*args, **kwargs)
        finally:
            with guard:
                running[0] -= 1

    monkeypatch.setattr(users.hashlib, "scrypt", counted)
    app = auth.application

    def login(_: int) -> int:
        with app.test_client() as client:
            return client.post("/login", json={"username": "alice", "password": "alice-pass"}).status_code

    with ThreadPoolExecutor(12) as pool:
        assert list(pool.map(login, range(12))) == [200] * 12
    assert highest[0] == 2
