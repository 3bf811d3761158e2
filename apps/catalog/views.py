"""Product browsing (public) and stock reservations (checkout's, for a customer: internal, see require_service)."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint

from shoplib.app import extension
from shoplib.errors import Problem
from shoplib.order_lines import order_lines
from shoplib.security import acting_for, require_service
from shoplib.validation import MAX_ID, Fields, json_body, query_int, query_text

from .store import CatalogStore

bp = Blueprint("catalog", __name__)

_REFERENCE = re.compile(r"[A-Za-z0-9_.:-]+")
_RESERVATION_ID = re.compile(r"[0-9a-f]{32}")


def _store() -> CatalogStore:
    return extension("catalog.store", CatalogStore)


@bp.get("/products")
def list_products() -> Any:
    limit = query_int("limit", 20, 1, 100)
    offset = query_int("offset", 0, 0, 1_000_000)
    items, total = _store().search(query_text("q"), query_text("category"), limit, offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@bp.get("/products/<int:product_id>")
def get_product(product_id: int) -> Any:
    product = _store().get(product_id) if product_id <= MAX_ID else None
    if product is None:
        raise Problem(404, "Not found", f"There is no product {product_id}.")
    return product


@bp.post("/reservations")
@require_service("checkout")
def reserve() -> Any:
    body = json_body()
    fields = Fields()
    reference = fields.string(body, "reference", max_length=100, pattern=_REFERENCE, hint="letters, digits, . _ : -")
    lines = order_lines(body, fields)
    fields.raise_if_any()
    reservation, created = _store().reserve(reference or "", lines, acting_for())
    return reservation, 201 if created else 200


@bp.delete("/reservations/by-reference/<reference>")
@require_service("checkout")
def release_by_reference(reference: str) -> Any:
    """Checkout's release of an order's stock when it may not know the reservation's id (the answer to its
    reservation was lost) or only knows the order: by the reference it reserved with."""
    reservation = _store().release_reference(reference, acting_for()) if _REFERENCE.fullmatch(reference) else None
    if reservation is None:
        raise Problem(404, "Not found", f"There is no reservation with reference {reference}.")
    return reservation


@bp.delete("/reservations/<reservation_id>")
@require_service("checkout")
def release(reservation_id: str) -> Any:
    # Another customer's reservation is as absent as one that never existed.
    reservation = _store().release(reservation_id, acting_for()) if _RESERVATION_ID.fullmatch(reservation_id) else None
    if reservation is None:
        raise Problem(404, "Not found", f"There is no reservation {reservation_id}.")
    return reservation
