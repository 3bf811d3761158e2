"""The shop's journeys on HttpUser (python-requests) instead of FastHttpUser, for
`python bench/load_capacity.py --compare-clients` only: the measurement behind the
choice in locustfiles/locustfile.py."""

from __future__ import annotations

from locust import HttpUser
from locustfile import ShopJourneys, Steady

__all__ = ["RequestsShopper", "Steady"]  # Steady: the benchmark steps the load through Steady's user count


class RequestsShopper(ShopJourneys, HttpUser):
    pass
