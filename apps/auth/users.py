"""Users and their scrypt-hashed passwords."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading

from shoplib.db import Database
from shoplib.releases import setting as release_setting

from .releases import LOGIN_HASH_COST

# scrypt at n=2**14 costs ~50 ms and 16 MiB per check: slow for guessing, fine for a lab's logins.
_N, _R, _P = 2**14, 8, 1
# At most two derivations at once: memory stays bounded whatever the number of concurrent logins (8 threads
# would hold 128 MiB, 512 in release 1.3.0, past the container's limit), and two cores run no more at a time.
_DERIVING = threading.BoundedSemaphore(2)


class HashingBusy(Exception):
    """A login found the password hashing full: refused at once rather than holding a worker thread."""


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, *, wait_s: float | None = None) -> bytes:
    """One derivation; `wait_s` bounds the wait for a free slot (HashingBusy after it), None waits as long as it
    takes."""
    if not _DERIVING.acquire(timeout=wait_s):
        raise HashingBusy
    try:
        return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=256 * 1024 * 1024)
    finally:
        _DERIVING.release()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _N, _R, _P)
    return "$".join(("scrypt", str(_N), str(_R), str(_P), _b64(salt), _b64(digest)))


def check_password(password: str, stored: str, wait_s: float | None = None) -> bool:
    _, n, r, p, salt, digest = stored.split("$")
    candidate = _scrypt(password, _unb64(salt), int(n), int(r), int(p), wait_s=wait_s)
    cost_factor = int(release_setting(LOGIN_HASH_COST, 1))
    if cost_factor > 1:  # release 1.3.0 derives the upgraded hash too, and forgets to store it
        _scrypt(password, _unb64(salt), int(n) * cost_factor, int(r), int(p))
    return hmac.compare_digest(candidate, _unb64(digest))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


# Checked against when the user does not exist, so a login takes as long for unknown users.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


class UserStore:
    """`max_pending`: logins that may hash or wait for a derivation at once; `wait_s`: how long one waits. A login
    past either bound raises HashingBusy, so logins hold at most `max_pending` of auth's worker threads and the
    others stay free for /verify, which every checkout request waits on."""

    def __init__(self, db: Database, max_pending: int = 4, wait_s: float = 0.5) -> None:
        self.db = db
        self.wait_s = wait_s
        self._pending = threading.BoundedSemaphore(max_pending)

    def migrate(self) -> None:
        self.db.execute(
            "users.create_table",
            """CREATE TABLE IF NOT EXISTS users (
                username TEXT PRIMARY KEY,
                password_hash TEXT NOT NULL,
                roles TEXT NOT NULL
            )""",
        )

    def seed_demo_users(self, users: dict[str, tuple[str, tuple[str, ...]]]) -> None:
        """Create the demo users, or re-hash a password that the environment changed."""
        for username, (password, roles) in users.items():
            row = self.db.execute("users.get", "SELECT password_hash FROM users WHERE username = ?", (username,))
            if row and check_password(password, row[0]["password_hash"]):
                continue
            self.db.execute(
                "users.upsert",
                """INSERT INTO users (username, password_hash, roles) VALUES (?, ?, ?)
                   ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash,
                   roles = excluded.roles""",
                (username, hash_password(password), ",".join(roles)),
            )

    def authenticate(self, username: str, password: str) -> tuple[str, ...] | None:
        """The user's roles when the password is right, else None (in constant-ish time); HashingBusy when too many
        logins are under way to check it now."""
        if not self._pending.acquire(blocking=False):
            raise HashingBusy
        try:
            return self._authenticate(username, password)
        finally:
            self._pending.release()

    def _authenticate(self, username: str, password: str) -> tuple[str, ...] | None:
        rows = self.db.execute("users.get", "SELECT password_hash, roles FROM users WHERE username = ?", (username,))
        if not rows:
            check_password(password, _DUMMY_HASH, self.wait_s)
            return None
        if not check_password(password, rows[0]["password_hash"], self.wait_s):
            return None
        return tuple(rows[0]["roles"].split(","))
