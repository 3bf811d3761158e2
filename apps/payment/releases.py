"""payment's releases, oldest first: 2.4.0 runs on a fresh start."""

from __future__ import annotations

from shoplib.releases import Release

# Read per request by payment.views: the share of authorizations the release's gateway client loses.
CLIENT_FAILURE_RATE = "gateway_client_failure_rate"

RELEASES = (
    Release("2.4.0", "Card gateway client with one attempt per authorization."),
    Release(
        "2.5.0",
        "New gateway client that retries timeouts, but resends with a fresh request id: the gateway refuses the "
        "duplicate and about 15% of payments fail with 502.",
        changes={CLIENT_FAILURE_RATE: 0.15},
    ),
)
