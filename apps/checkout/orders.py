"""Orders in SQLite (WAL, synchronous=FULL). An order row doubles as its idempotency record."""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shoplib.db import Database, must_exist, utc_timestamp

_log = logging.getLogger("checkout.orders")

USER_INDEX = "idx_orders_user_id"
CREATE_USER_INDEX = f"CREATE INDEX IF NOT EXISTS {USER_INDEX} ON orders (user_id, created_at)"
TERMINAL = ("paid", "declined", "rejected")
# A pending order untouched this long was abandoned by its request (gunicorn's timeout is 30 s): a retry of its
# key or the reconciler may take it over. ORDER_STALE_AFTER_S sets it.
DEFAULT_STALE_AFTER_S = 120.0


@dataclass(frozen=True)
class Claim:
    """What claiming an idempotency key found: `new`/`retry` (process it), `replay`, `conflict`, `busy`."""

    outcome: str
    order: dict[str, Any]


class OrderStore:
    def __init__(self, db: Database, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> None:
        self.db = db
        self.stale_after = timedelta(seconds=stale_after_s)

    def migrate(self) -> None:
        # The unique key leads with idempotency_key on purpose: with user_id first, it would double as an
        # index on user_id and the missing_index fault would change nothing.
        self.db.execute(
            "orders.create_table",
            """CREATE TABLE IF NOT EXISTS orders (
                id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                idempotency_key TEXT NOT NULL,
                request_hash TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'declined', 'rejected', 'failed')),
                items TEXT NOT NULL,
                total_cents INTEGER,
                currency TEXT NOT NULL DEFAULT 'USD',
                reservation_id TEXT,
                payment_id TEXT,
                card_last4 TEXT,
                shipping_address TEXT,
                response_status INTEGER,
                response_body TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                UNIQUE (idempotency_key, user_id)
            )""",
        )
        self.db.execute("orders.create_user_index", CREATE_USER_INDEX)
        # 1 while the order's stock may still be held though it did not end paid: the reconciler's to-do list.
        self.db.add_column("orders", "stock_to_release", "INTEGER NOT NULL DEFAULT 0")

    def seed_history(self, count: int) -> None:
        """A large order history, generated inside SQLite (seconds, not minutes), the same every time.

        Spread over 5,000 customers, with alice and bob owning a share, so listing one user's orders
        without the user index means scanning every row.
        """
        if count == 0 or self.db.execute("orders.any", "SELECT 1 FROM orders LIMIT 1"):
            return
        _log.info("seeding_order_history", extra={"orders": count})
        with self.db.transaction():
            self.db.execute(
                "orders.seed",
                """WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < ?)
                INSERT INTO orders (id, user_id, idempotency_key, request_hash, status, items, total_cents,
                    currency, reservation_id, payment_id, card_last4, shipping_address, response_status,
                    created_at, updated_at)
                SELECT printf('%032x', i),
                    CASE i % 2000 WHEN 0 THEN 'alice' WHEN 1 THEN 'bob' ELSE printf('user-%05d', (i * 7919) % 5000) END,
                    'seed-' || i, 'seed',
                    CASE WHEN i % 23 = 0 THEN 'declined' ELSE 'paid' END,
                    json_array(
                        json_object('product_id', 1 + (i * 31) % 500, 'name', 'Product ' || (1 + (i * 31) % 500),
                                    'quantity', 1 + i % 3, 'unit_price_cents', 999 + (i * 13) % 5000),
                        json_object('product_id', 1 + (i * 37) % 500, 'name', 'Product ' || (1 + (i * 37) % 500),
                                    'quantity', 1 + i % 2, 'unit_price_cents', 1999 + (i * 17) % 3000)),
                    (1 + i % 3) * (999 + (i * 13) % 5000) + (1 + i % 2) * (1999 + (i * 17) % 3000),
                    'USD', printf('%032x', i), printf('pay_%028x', i), '4242',
                    (1 + i % 998) || ' Main Street, Springfield, IL 62704, United States',
                    CASE WHEN i % 23 = 0 THEN 402 ELSE 201 END,
                    strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '-' || ((i * 37) % 31536000) || ' seconds'),
                    strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '-' || ((i * 37) % 31536000) || ' seconds')
                FROM seq""",
                (count - 1,),
            )
        self.db.execute("orders.checkpoint", "PRAGMA wal_checkpoint(TRUNCATE)")

    def claim(self, user_id: str, key: str, request_hash: str, items: list[dict[str, Any]], last4: str) -> Claim:
        """Create the order for this (user, Idempotency-Key), or report what an earlier request left."""
        order_id = uuid.uuid4().hex
        now = utc_timestamp()
        try:
            self.db.execute(
                "orders.claim",
                "INSERT INTO orders (id, user_id, idempotency_key, request_hash, status, items, card_last4, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                (order_id, user_id, key, request_hash, json.dumps(items), last4, now, now),
            )
            return Claim("new", must_exist(self.get(order_id), f"order {order_id}"))
        except sqlite3.IntegrityError:
            pass
        rows = self.db.execute(
            "orders.get_by_key", "SELECT * FROM orders WHERE idempotency_key = ? AND user_id = ?", (key, user_id)
        )
        order = dict(rows[0])
        if order["request_hash"] != request_hash:
            return Claim("conflict", order)
        if order["status"] in TERMINAL:
            return Claim("replay", order)
        # A failed attempt (a dependency was down), or one abandoned mid-way by a crash, may be retried;
        # only one request wins the retry.
        stale = utc_timestamp(datetime.now(UTC) - self.stale_after)
        # The retry holds the order's stock again from here (it reserves by the same reference), so the flag goes.
        retaken = self.db.execute_count(
            "orders.retake",
            "UPDATE orders SET status = 'pending', stock_to_release = 0, updated_at = ? "
            "WHERE id = ? AND (status = 'failed' OR (status = 'pending' AND updated_at < ?))",
            (now, order["id"], stale),
        )
        return Claim("retry" if retaken else "busy", order)

    def record_reservation(self, order_id: str, reservation: dict[str, Any]) -> None:
        self.db.execute(
            "orders.record_reservation",
            "UPDATE orders SET reservation_id = ?, items = ?, total_cents = ?, currency = ?, updated_at = ? "
            "WHERE id = ?",
            (
                reservation["reservation_id"],
                json.dumps(reservation["items"]),
                reservation["total_cents"],
                reservation["currency"],
                utc_timestamp(),
                order_id,
            ),
        )

    def finish(
        self,
        order_id: str,
        status: str,
        response_status: int,
        response_body: dict[str, Any],
        payment_id: str | None = None,
        *,
        stock_to_release: bool = False,
    ) -> None:
        """Record the outcome a replay of this Idempotency-Key must return."""
        self.db.execute(
            "orders.finish",
            "UPDATE orders SET status = ?, payment_id = ?, response_status = ?, response_body = ?, "
            "stock_to_release = ?, updated_at = ? WHERE id = ?",
            (
                status,
                payment_id,
                response_status,
                json.dumps(response_body),
                int(stock_to_release),
                utc_timestamp(),
                order_id,
            ),
        )

    def mark_failed(self, order_id: str, *, stock_to_release: bool) -> None:
        """The attempt failed before any outcome; the same key may try again."""
        self.db.execute(
            "orders.mark_failed",
            "UPDATE orders SET status = 'failed', stock_to_release = ?, updated_at = ? "
            "WHERE id = ? AND status = 'pending'",
            (int(stock_to_release), utc_timestamp(), order_id),
        )

    def unsettled(self, stale_before: datetime, limit: int) -> list[dict[str, Any]]:
        """What the reconciler must look at: orders pending since before `stale_before` (their request died), and
        orders that ended without being paid but may still hold stock. Oldest first."""
        rows = self.db.execute(
            "orders.unsettled",
            "SELECT * FROM orders WHERE (status = 'pending' AND updated_at < ?) "
            "OR (stock_to_release = 1 AND status IN ('failed', 'declined', 'rejected')) "
            "ORDER BY updated_at LIMIT ?",
            (utc_timestamp(stale_before), limit),
        )
        return [dict(row) for row in rows]

    def take_over(self, order: dict[str, Any]) -> bool:
        """Claim an order for the reconciler as a retry of its key would (one winner): it stays pending, touched,
        while the reconciler settles it, so a client's retry meanwhile is told to wait. False: someone else has it."""
        return bool(
            self.db.execute_count(
                "orders.take_over",
                "UPDATE orders SET status = 'pending', updated_at = ? "
                "WHERE id = ? AND status = ? AND updated_at = ? AND stock_to_release = ?",
                (utc_timestamp(), order["id"], order["status"], order["updated_at"], order["stock_to_release"]),
            )
        )

    def stock_released(self, order_id: str, status: str) -> None:
        """The reconciler gave the order's stock back: it returns to `status` with nothing left to do."""
        self.db.execute(
            "orders.stock_released",
            "UPDATE orders SET status = ?, stock_to_release = 0, updated_at = ? WHERE id = ?",
            (status, utc_timestamp(), order_id),
        )

    def get(self, order_id: str) -> dict[str, Any] | None:
        rows = self.db.execute("orders.get", "SELECT * FROM orders WHERE id = ?", (order_id,))
        return dict(rows[0]) if rows else None

    def list_for_user(self, user_id: str, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """The user's orders, newest first: the query the missing_index fault turns into a full scan."""
        rows = self.db.execute(
            "orders.list_by_user",
            "SELECT * FROM orders WHERE user_id = ? ORDER BY created_at DESC LIMIT ? OFFSET ?",
            (user_id, limit, offset),
        )
        total = self.db.execute(
            "orders.count_by_user", "SELECT COUNT(*) AS n FROM orders WHERE user_id = ?", (user_id,)
        )
        return [dict(row) for row in rows], total[0]["n"]

    def drop_user_index(self) -> None:
        self.db.execute("orders.drop_user_index", f"DROP INDEX IF EXISTS {USER_INDEX}")

    def create_user_index(self) -> None:
        self.db.execute("orders.create_user_index", CREATE_USER_INDEX)
