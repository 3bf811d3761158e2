"""Products and stock reservations in SQLite. Stock only moves inside write transactions."""

from __future__ import annotations

import json
import uuid
from typing import Any

from shoplib.db import Database, must_exist, utc_timestamp
from shoplib.errors import Problem, ValidationFailed
from shoplib.order_lines import Line
from shoplib.releases import setting as release_setting

from . import seed
from .releases import SEARCH_LOADS_EACH_PRODUCT

CURRENCY = "USD"


def product_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "sku": row["sku"],
        "name": row["name"],
        "description": row["description"],
        "category": row["category"],
        "price": row["price_cents"] / 100,
        "currency": CURRENCY,
        "stock": row["stock"],
    }


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _owned_by(reservation: dict[str, Any], owner: str) -> bool:
    return reservation["owner"] in (owner, None)  # None: made before reservations had owners


class CatalogStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def migrate(self) -> None:
        self.db.execute(
            "products.create_table",
            """CREATE TABLE IF NOT EXISTS products (
                id INTEGER PRIMARY KEY,
                sku TEXT NOT NULL UNIQUE,
                name TEXT NOT NULL,
                description TEXT NOT NULL,
                category TEXT NOT NULL,
                price_cents INTEGER NOT NULL CHECK (price_cents > 0),
                stock INTEGER NOT NULL CHECK (stock >= 0)
            )""",
        )
        self.db.execute(
            "products.create_category_index",
            "CREATE INDEX IF NOT EXISTS idx_products_category ON products (category)",
        )
        self.db.execute(
            "reservations.create_table",
            """CREATE TABLE IF NOT EXISTS reservations (
                id TEXT PRIMARY KEY,
                reference TEXT NOT NULL UNIQUE,
                status TEXT NOT NULL CHECK (status IN ('reserved', 'released')),
                lines TEXT NOT NULL,
                total_cents INTEGER NOT NULL,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
        )
        # The customer whose order holds the stock (checkout acts for them); NULL on reservations from before.
        self.db.add_column("reservations", "owner", "TEXT")

    def seed(self, count: int) -> None:
        if self.db.execute("products.count", "SELECT COUNT(*) AS n FROM products")[0]["n"]:
            return
        with self.db.transaction():
            for row in seed.products(count):
                self.db.execute(
                    "products.seed",
                    "INSERT INTO products (sku, name, description, category, price_cents, stock) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    row,
                )

    def search(self, query: str, category: str, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        where, params = ["1 = 1"], []
        if query:
            where.append("name LIKE ? ESCAPE '\\'")
            params.append(f"%{_escape_like(query)}%")
        if category:
            where.append("category = ?")
            params.append(category)
        clause = " AND ".join(where)
        if release_setting(SEARCH_LOADS_EACH_PRODUCT, False):
            return self._search_one_by_one(clause, params, limit, offset)
        rows = self.db.execute(
            "products.search",
            f"SELECT * FROM products WHERE {clause} ORDER BY id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [product_json(row) for row in rows], self._count(clause, params)

    def _search_one_by_one(
        self, clause: str, params: list[str], limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Release 1.4.0's search: a query for the ids, then one query per product (N+1)."""
        ids = self.db.execute(
            "products.search_ids",
            f"SELECT id FROM products WHERE {clause} ORDER BY id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        items = [product for row in ids if (product := self.get(row["id"])) is not None]
        return items, self._count(clause, params)

    def _count(self, clause: str, params: list[str]) -> int:
        rows = self.db.execute("products.search_count", f"SELECT COUNT(*) AS n FROM products WHERE {clause}", params)
        return int(rows[0]["n"])

    def get(self, product_id: int) -> dict[str, Any] | None:
        rows = self.db.execute("products.get", "SELECT * FROM products WHERE id = ?", (product_id,))
        return product_json(rows[0]) if rows else None

    def reserve(self, reference: str, lines: list[Line], owner: str) -> tuple[dict[str, Any], bool]:
        """Take stock for every line or for none. Returns (reservation, created).

        Idempotent on `reference`: an active reservation is returned as it is; a released one is
        taken again (checkout retrying an order after a failed payment). A reference another customer's
        reservation holds is a conflict, and nothing of that reservation is shown.
        """
        with self.db.transaction():
            existing = self._by("reference", reference)
            if existing is not None and not _owned_by(existing, owner):
                raise Problem(409, "Reference taken", f"The reference {reference!r} belongs to another reservation.")
            if existing is not None and existing["status"] == "reserved":
                return existing, False
            priced, unavailable, unknown = [], [], []
            for index, line in enumerate(lines):
                rows = self.db.execute(
                    "products.get_for_update",
                    "SELECT name, price_cents, stock FROM products WHERE id = ?",
                    (line.product_id,),
                )
                if not rows:
                    unknown.append({"field": f"items[{index}].product_id", "message": "no such product"})
                    continue
                taken = self.db.execute_count(
                    "products.take_stock",
                    "UPDATE products SET stock = stock - ? WHERE id = ? AND stock >= ?",
                    (line.quantity, line.product_id, line.quantity),
                )
                if not taken:
                    unavailable.append(
                        {"product_id": line.product_id, "requested": line.quantity, "available": rows[0]["stock"]}
                    )
                priced.append(
                    {
                        "product_id": line.product_id,
                        "name": rows[0]["name"],
                        "quantity": line.quantity,
                        "unit_price_cents": rows[0]["price_cents"],
                    }
                )
            # Raising inside the transaction rolls back any stock already taken.
            if unknown:
                raise ValidationFailed(unknown, "Some items name products that do not exist.")
            if unavailable:
                raise Problem(409, "Insufficient stock", "Not enough stock for some items.", unavailable=unavailable)
            total = sum(p["quantity"] * p["unit_price_cents"] for p in priced)
            now = utc_timestamp()
            if existing is None:
                reservation_id = uuid.uuid4().hex
                self.db.execute(
                    "reservations.insert",
                    "INSERT INTO reservations (id, reference, status, lines, total_cents, owner, created_at, "
                    "updated_at) VALUES (?, ?, 'reserved', ?, ?, ?, ?, ?)",
                    (reservation_id, reference, json.dumps(priced), total, owner, now, now),
                )
            else:
                reservation_id = existing["reservation_id"]
                self.db.execute(
                    "reservations.retake",
                    "UPDATE reservations SET status = 'reserved', lines = ?, total_cents = ?, updated_at = ? "
                    "WHERE id = ?",
                    (json.dumps(priced), total, now, reservation_id),
                )
            return must_exist(self._by("id", reservation_id), f"reservation {reservation_id}"), True

    def release(self, reservation_id: str, owner: str) -> dict[str, Any] | None:
        """Give the stock back once; releasing again changes nothing. None: no such reservation of `owner`'s."""
        return self._release("id", reservation_id, owner)

    def release_reference(self, reference: str, owner: str) -> dict[str, Any] | None:
        """`release`, for the reservation made with `reference`."""
        return self._release("reference", reference, owner)

    def _release(self, column: str, value: str, owner: str) -> dict[str, Any] | None:
        with self.db.transaction():
            reservation = self._by(column, value)
            if reservation is None or not _owned_by(reservation, owner):
                return None
            if reservation["status"] == "released":
                return reservation
            for item in reservation["items"]:
                self.db.execute(
                    "products.return_stock",
                    "UPDATE products SET stock = stock + ? WHERE id = ?",
                    (item["quantity"], item["product_id"]),
                )
            self.db.execute(
                "reservations.release",
                "UPDATE reservations SET status = 'released', updated_at = ? WHERE id = ?",
                (utc_timestamp(), reservation["reservation_id"]),
            )
            return self._by("id", reservation["reservation_id"])

    def _by(self, column: str, value: str) -> dict[str, Any] | None:
        rows = self.db.execute(
            f"reservations.get_by_{column}", f"SELECT * FROM reservations WHERE {column} = ?", (value,)
        )
        if not rows:
            return None
        row = rows[0]
        items = [
            {
                "product_id": line["product_id"],
                "name": line["name"],
                "quantity": line["quantity"],
                "unit_price": line["unit_price_cents"] / 100,
                "unit_price_cents": line["unit_price_cents"],
            }
            for line in json.loads(row["lines"])
        ]
        return {
            "reservation_id": row["id"],
            "reference": row["reference"],
            "owner": row["owner"],
            "status": row["status"],
            "items": items,
            "total": row["total_cents"] / 100,
            "total_cents": row["total_cents"],
            "currency": CURRENCY,
        }
