"""catalog's releases, oldest first: 1.3.0 runs on a fresh start."""

from __future__ import annotations

from shoplib.releases import Release

# Read per request by catalog.store: search loads each product found with a query of its own.
SEARCH_LOADS_EACH_PRODUCT = "search_loads_each_product"

RELEASES = (
    Release("1.3.0", "Product search reads a page of products in one query."),
    Release(
        "1.4.0",
        "Search refactored through the product repository: one query for the ids, then one per product (N+1).",
        changes={SEARCH_LOADS_EACH_PRODUCT: True},
    ),
)
