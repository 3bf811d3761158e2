"""The `items: [{product_id, quantity}]` a customer orders: the one wire format checkout reads from an
order and sends on to catalog as a reservation.

It is domain data, not generic validation, but both sides must read it alike, and a service image holds
only shoplib and its own package; so it lives here, once, rather than as two copies that could drift.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from .api import Body
from .validation import MAX_ID

MAX_ORDER_LINES = 50
MAX_QUANTITY = 100


class Line(Body):
    product_id: int = Field(ge=1, le=MAX_ID)
    quantity: int = Field(ge=1, le=MAX_QUANTITY)


class OrderLines(Body):
    """`items`, one line per product (checkout's orders, catalog's reservations)."""

    items: Annotated[list[Line], Field(min_length=1, max_length=MAX_ORDER_LINES)]

    @field_validator("items")
    @classmethod
    def _one_line_per_product(cls, lines: list[Line]) -> list[Line]:
        seen: set[int] = set()
        for index, line in enumerate(lines):
            if line.product_id in seen:
                raise PydanticCustomError(
                    "duplicate_product",
                    "is listed twice; give one line per product",
                    {"at": f"[{index}].product_id"},  # the field named is that line's product_id
                )
            seen.add(line.product_id)
        return lines
