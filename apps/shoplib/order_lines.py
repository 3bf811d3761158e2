"""The `items: [{product_id, quantity}]` a customer orders: the one wire format checkout reads from an
order and sends on to catalog as a reservation.

It is domain data, not generic validation, but both sides must read it alike, and a service image holds
only shoplib and its own package; so it lives here, once, rather than as two copies that could drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .validation import MAX_ID, Fields

MAX_ORDER_LINES = 50
MAX_QUANTITY = 100


@dataclass(frozen=True)
class Line:
    product_id: int
    quantity: int


def order_lines(body: dict[str, Any], fields: Fields) -> list[Line]:
    """`items: [{product_id, quantity}]`, one line per product (checkout's orders, catalog's reservations)."""
    lines: list[Line] = []
    seen: set[int] = set()
    for index, item in enumerate(fields.array(body, "items", max_items=MAX_ORDER_LINES) or []):
        at = f"items[{index}]"
        if not isinstance(item, dict):
            fields.fail(at, "must be an object with product_id and quantity")
            continue
        product_id = fields.integer(item, "product_id", at=at, minimum=1, maximum=MAX_ID)
        quantity = fields.integer(item, "quantity", at=at, minimum=1, maximum=MAX_QUANTITY)
        if product_id is not None and product_id in seen:
            fields.fail(f"{at}.product_id", "is listed twice; give one line per product")
        elif product_id is not None and quantity is not None:
            seen.add(product_id)
            lines.append(Line(product_id, quantity))
    return lines
