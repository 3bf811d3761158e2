"""Product browsing (public) and stock reservations (checkout's, for a customer: internal, see require_service)."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint

from shoplib.api import operation
from shoplib.app import extension
from shoplib.errors import Problem
from shoplib.security import acting_for, require_service
from shoplib.validation import MAX_ID

from .schemas import (
    REFERENCE,
    RESERVATION_ID,
    Product,
    ProductPage,
    ProductPath,
    ProductSearch,
    ReferencePath,
    Reservation,
    ReservationPath,
    ReservationRequest,
)
from .store import CatalogStore

bp = Blueprint("catalog", __name__)

_REFERENCE = re.compile(REFERENCE)
_RESERVATION_ID = re.compile(RESERVATION_ID)


def _store() -> CatalogStore:
    return extension("catalog.store", CatalogStore)


@bp.get("/products")
@operation("Search the products", query=ProductSearch, responses={200: ProductPage})
def list_products(query: ProductSearch) -> Any:
    items, total = _store().search(query.q.strip(), query.category.strip(), query.limit, query.offset)
    return {"items": items, "total": total, "limit": query.limit, "offset": query.offset}


@bp.get("/products/<int:product_id>")
@operation("One product, with its stock", path=ProductPath, responses={200: Product})
def get_product(product_id: int) -> Any:
    product = _store().get(product_id) if product_id <= MAX_ID else None
    if product is None:
        raise Problem(404, "Not found", f"There is no product {product_id}.")
    return product


@bp.post("/reservations")
@require_service("checkout")
@operation(
    "Reserve an order's stock (checkout's, for a customer; 200: this reference's reservation already exists)",
    body=ReservationRequest,
    responses={200: Reservation, 201: Reservation},
    secured=True,
)
def reserve(body: ReservationRequest) -> Any:
    reservation, created = _store().reserve(body.reference, body.items, acting_for())
    return reservation, 201 if created else 200


@bp.delete("/reservations/by-reference/<reference>")
@require_service("checkout")
@operation(
    "Release the stock an order's reservation holds, by its reference",
    path=ReferencePath,
    responses={200: Reservation},
    secured=True,
)
def release_by_reference(reference: str) -> Any:
    """Checkout's release of an order's stock when it may not know the reservation's id (the answer to its
    reservation was lost) or only knows the order: by the reference it reserved with."""
    reservation = _store().release_reference(reference, acting_for()) if _REFERENCE.fullmatch(reference) else None
    if reservation is None:
        raise Problem(404, "Not found", f"There is no reservation with reference {reference}.")
    return reservation


@bp.delete("/reservations/<reservation_id>")
@require_service("checkout")
@operation("Release a reservation's stock", path=ReservationPath, responses={200: Reservation}, secured=True)
def release(reservation_id: str) -> Any:
    # Another customer's reservation is as absent as one that never existed.
    reservation = _store().release(reservation_id, acting_for()) if _RESERVATION_ID.fullmatch(reservation_id) else None
    if reservation is None:
        raise Problem(404, "Not found", f"There is no reservation {reservation_id}.")
    return reservation
