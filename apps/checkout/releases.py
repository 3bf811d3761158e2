"""checkout's releases, oldest first: 1.8.0 runs on a fresh start."""

from __future__ import annotations

from shoplib.releases import Release

from .orders import OrderStore


def checkout_releases(orders: OrderStore) -> tuple[Release, ...]:
    return (
        Release("1.8.0", "Orders keyed by user: listing a user's orders reads the orders.user_id index."),
        Release(
            "1.9.0",
            "Migration that rebuilds the orders table's indexes and forgets orders.user_id: listing a user's "
            "orders scans the whole table. Rolling back re-creates the index.",
            migrate=orders.drop_user_index,
            revert=orders.create_user_index,
        ),
    )
