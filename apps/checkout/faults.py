"""checkout's own faults: real SQLite write-lock contention and a really missing index."""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Any

from shoplib.db import Database
from shoplib.faults import Fault, Param

from .orders import OrderStore

_log = logging.getLogger("checkout.faults")


class WriteLockHolder:
    """A thread that holds the database's write lock (BEGIN IMMEDIATE) for `hold_ms`, lets go for
    `release_ms`, and again, until stopped: every order write queues behind it for real."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, params: dict[str, Any]) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(params["hold_ms"] / 1000, params["release_ms"] / 1000, self._stop),
            name="db-lock-fault",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self, hold_s: float, release_s: float, stop: threading.Event) -> None:
        conn = self.db.open_connection()
        try:
            while not stop.is_set():
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError:  # the shop kept the lock past busy_timeout: try again
                    continue
                stop.wait(hold_s)
                conn.execute("COMMIT")
                stop.wait(release_s)
        except Exception:  # noqa: BLE001 - a fault must never take the service down
            _log.exception("db_lock_fault_stopped")
        finally:
            conn.close()


def checkout_faults(db: Database, orders: OrderStore) -> list[Fault]:
    holder = WriteLockHolder(db)
    return [
        Fault(
            "db_lock",
            "Hold the orders database's write lock for `hold_ms`, release it for `release_ms`, repeat.",
            (Param("hold_ms", int, 10, 60_000), Param("release_ms", int, 1, 60_000, default=100)),
            activate=holder.start,
            deactivate=holder.stop,
        ),
        Fault(
            "missing_index",
            "Drop the index on orders.user_id, so listing a user's orders scans the whole table.",
            activate=lambda _params: orders.drop_user_index(),
            deactivate=orders.create_user_index,
        ),
    ]
