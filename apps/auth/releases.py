"""auth's releases, oldest first: 1.2.0 runs on a fresh start."""

from __future__ import annotations

from shoplib.releases import Release

# Read per request by auth.users: how many times the cost of the stored hash a login pays.
LOGIN_HASH_COST = "login_hash_cost_factor"

RELEASES = (
    Release("1.2.0", "Logins check the password against its stored scrypt hash (n=2^14)."),
    Release(
        "1.3.0",
        "Logins re-derive every password at four times the scrypt cost to upgrade it, but never store the "
        "upgraded hash: each login pays both, and burns about five times the CPU.",
        changes={LOGIN_HASH_COST: 4},
    ),
)
