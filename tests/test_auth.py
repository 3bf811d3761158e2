"""auth: login, token verification, demo users, password storage."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
from prometheus_client import REGISTRY

from auth import users
from auth.throttle import FailureCounter, Limits
from conftest import bearer
from shop import PASSWORDS
from shoplib.config import load as load_settings

ADMIN_PASSWORD = "admin-test-password"


@pytest.fixture
def auth(client_for):
    return client_for("auth", DEMO_ADMIN_PASSWORD=ADMIN_PASSWORD)


def login(client, username="alice", password="alice-pass", address="127.0.0.1"):
    return client.post(
        "/login", json={"username": username, "password": password}, environ_base={"REMOTE_ADDR": address}
    )


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
    token = login(auth, "admin", ADMIN_PASSWORD).json["access_token"]
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


def test_concurrent_logins_derive_at_most_two_hashes_at_once(client_for, monkeypatch):
    """scrypt holds 16 MiB per derivation: twelve logins at once must not hold twelve times that."""
    auth = client_for("auth", LOGIN_MAX_PENDING=12, LOGIN_HASH_WAIT_S=30)  # all twelve wait their turn
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


# --- login abuse: failed logins lock the username and the address; hashing is bounded ---


def logins(outcome):
    return REGISTRY.get_sample_value("auth_logins_total", {"outcome": outcome}) or 0.0


def assert_throttled(response):
    assert response.status_code == 429
    assert response.content_type == "application/problem+json"
    assert response.json["type"] == "urn:shoplab:problem:login-throttled"
    assert 1 <= int(response.headers["Retry-After"]) <= 30  # the first lock: LOGIN_LOCKOUT_S


def test_failed_logins_lock_the_username_even_for_the_right_password(auth, monkeypatch):
    assert [login(auth, "alice", f"guess-{n}").status_code for n in range(5)] == [401] * 5
    derivations, real_scrypt = [], users._scrypt
    monkeypatch.setattr(
        users, "_scrypt", lambda *args, **kwargs: derivations.append(args) or real_scrypt(*args, **kwargs)
    )
    throttled = logins("throttled")
    assert_throttled(login(auth, "alice", "alice-pass"))
    assert logins("throttled") == throttled + 1
    assert derivations == []  # a locked login costs no hashing: a flood of them is cheap


def test_another_user_and_another_address_are_unaffected_by_a_locked_username(auth):
    for n in range(5):
        login(auth, "alice", f"guess-{n}")
    assert login(auth, "bob", "bob-pass").status_code == 200
    assert_throttled(login(auth, "alice", "alice-pass", address="10.0.0.9"))  # the username is locked everywhere


def test_failed_logins_from_one_address_lock_it_for_every_username(client_for):
    auth = client_for("auth", LOGIN_MAX_FAILURES_PER_ADDRESS=4)
    # Four names, one failure each: no username reaches its limit, the address does.
    assert [login(auth, f"user{n}", "guess", address="10.0.0.1").status_code for n in range(4)] == [401] * 4
    assert_throttled(login(auth, "bob", "bob-pass", address="10.0.0.1"))
    assert login(auth, "bob", "bob-pass", address="10.0.0.2").status_code == 200


def test_only_failed_logins_count_toward_the_limits(client_for):
    """The load generator logs many users in from one address: that must never lock it."""
    auth = client_for(
        "auth", LOGIN_MAX_FAILURES_PER_USER=2, LOGIN_MAX_FAILURES_PER_ADDRESS=3, DEMO_ADMIN_PASSWORD=ADMIN_PASSWORD
    )
    for user in ("alice", "bob", "admin") * 3:
        assert login(auth, user, {**PASSWORDS, "admin": ADMIN_PASSWORD}[user]).status_code == 200
    # A success starts the user's count afresh: one failure, a success, one failure is not two in a row.
    assert [login(auth, "alice", password).status_code for password in ("typo", "alice-pass") * 2] == [401, 200] * 2
    # The address's count is not reset by a success: its third failure locks it.
    assert login(auth, "mallory", "guess").status_code == 401
    assert_throttled(login(auth, "bob", "bob-pass"))


def test_a_rejected_login_is_logged_and_counted_without_the_submitted_username(auth, caplog):
    caplog.set_level(logging.INFO, logger="auth")
    typed = "my-Secret-Password-1"  # typed in the username field
    rejected = logins("rejected")
    login(auth, typed, "x")
    login(auth, typed, "y")
    lines = [record for record in caplog.records if record.getMessage() == "login_rejected"]
    assert len(lines) == 2 and logins("rejected") == rejected + 2
    for record in lines:
        assert typed.lower() not in repr(vars(record)).lower()
    # The digest lets an operator count attempts on one name without reading it.
    assert lines[0].username_digest == lines[1].username_digest and lines[1].recent_failures == 2
    login(auth)  # an accepted login names its user
    assert [r.username for r in caplog.records if r.getMessage() == "login_accepted"] == ["alice"]


@pytest.mark.parametrize(
    ("max_pending", "wait_s"),
    [pytest.param(3, 0.2, id="waits-briefly-for-a-derivation"), pytest.param(2, 30, id="no-room-to-wait")],
)
def test_a_login_that_cannot_start_hashing_is_refused_with_503(client_for, monkeypatch, max_pending, wait_s):
    """Logins waiting on the hash hold auth's worker threads, which /verify (every checkout request) needs too."""
    auth = client_for("auth", LOGIN_MAX_PENDING=max_pending, LOGIN_HASH_WAIT_S=wait_s)
    release, started = threading.Event(), threading.Semaphore(0)
    real_scrypt = users.hashlib.scrypt

    def held(*args, **kwargs):
        started.release()
        release.wait(10)
        return real_scrypt(*args, **kwargs)

    monkeypatch.setattr(users.hashlib, "scrypt", held)
    app = auth.application

    def login_alone():
        with app.test_client() as client:
            return login(client).status_code

    busy = logins("busy")
    with ThreadPoolExecutor(2) as pool:
        hashing = [pool.submit(login_alone) for _ in range(2)]
        assert started.acquire(timeout=10) and started.acquire(timeout=10)  # both derivations under way
        refused = login(auth)  # answered while both still hash: it did not wait for them
        release.set()
        assert [future.result(timeout=10) for future in hashing] == [200, 200]
    assert refused.status_code == 503 and refused.content_type == "application/problem+json"
    assert refused.json["type"] == "urn:shoplab:problem:login-busy" and refused.headers["Retry-After"] == "1"
    assert logins("busy") == busy + 1
    assert login(auth).status_code == 200


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


LIMITS = Limits(max_failures=3, window_s=60, lockout_s=30, max_lockout_s=100, max_keys=100)


def test_each_further_lock_lasts_twice_as_long_up_to_the_maximum():
    clock = FakeClock()
    counter = FailureCounter(LIMITS, clock)
    lockouts = []
    for _ in range(4):
        results = [counter.failed("alice") for _ in range(3)]
        assert [recent for recent, _ in results] == [1, 2, 3]
        lockouts.append(results[-1][1])
        assert counter.retry_after("alice") == lockouts[-1]
        clock.now += lockouts[-1]
        assert counter.retry_after("alice") == 0
    assert lockouts == [30, 60, 100, 100]


def test_failures_spread_wider_than_the_window_never_lock():
    clock = FakeClock()
    counter = FailureCounter(LIMITS, clock)
    for _ in range(10):
        assert counter.failed("alice")[1] == 0
        clock.now += 31  # at most two failures within any 60 s
    assert counter.retry_after("alice") == 0


def test_tracked_keys_are_bounded_and_quiet_ones_forgotten():
    clock = FakeClock()
    counter = FailureCounter(LIMITS, clock)
    for n in range(1000):
        counter.failed(f"user{n}")
    assert len(counter) == LIMITS.max_keys
    clock.now += 2 * LIMITS.max_lockout_s  # quiet for twice the longest lock
    counter.failed("another")
    assert len(counter) == 1
