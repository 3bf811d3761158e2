"""SQLite access shared by every service: one connection per thread, WAL, timed and traced statements."""

from __future__ import annotations

import functools
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .errors import Problem
from .metrics import DB_QUERY_DURATION

_log = logging.getLogger("shop.db")
_tracer = trace.get_tracer(__name__)
T = TypeVar("T")
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_WHITESPACE = re.compile(r"\s+")


@functools.lru_cache(maxsize=1024)
def _one_line(sql: str) -> str:
    """A statement on one line, as spans and slow-query logs show it (the shop has a few dozen: cached)."""
    return _WHITESPACE.sub(" ", sql).strip()


def must_exist(row: T | None, what: str) -> T:
    """A row the caller has just written inside its own transaction or under a unique key: missing, it is a
    bug (an error), never a 404."""
    if row is None:
        raise LookupError(f"{what} is missing right after it was written")
    return row


def utc_timestamp(moment: datetime | None = None) -> str:
    """How rows store time: UTC, milliseconds, 'Z' — one format, so text order is time order."""
    return (moment or datetime.now(UTC)).strftime(TIMESTAMP_FORMAT)[:-4] + "Z"


def parse_timestamp(stamp: str) -> datetime:
    """A moment written by `utc_timestamp`, or by Prometheus and Alertmanager (RFC 3339, nanoseconds allowed)."""
    text = stamp.strip().replace("Z", "+00:00")
    if "." in text:  # Python reads at most microseconds
        head, _, rest = text.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits) :]}"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Database:
    """A SQLite file used from many request threads.

    Every statement goes through `execute`, which names it (the `operation` label of
    db_query_duration_seconds) and logs a WARN `slow_query` line above the threshold.
    """

    def __init__(self, path: Path, service: str, *, busy_timeout_ms: int, slow_query_ms: float) -> None:
        self.path = path
        self.service = service
        self.busy_timeout_ms = busy_timeout_ms
        self.slow_query_ms = slow_query_ms
        self._local = threading.local()
        # Every connection `connection` opened, by the thread it serves, so `close` can close them all.
        self._lock = threading.Lock()
        self._connections: dict[threading.Thread, sqlite3.Connection] = {}
        path.parent.mkdir(parents=True, exist_ok=True)

    def open_connection(self) -> sqlite3.Connection:
        """A new autocommit connection with the lab's pragmas (transactions are explicit)."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")  # orders and payments must survive a power cut
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @property
    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on its first statement and kept for the next ones."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.open_connection()
            with self._lock:
                # A thread that has ended leaves its connection here: closed now, not whenever it is collected.
                for thread in [thread for thread in self._connections if not thread.is_alive()]:
                    self._connections.pop(thread).close()
                self._connections[threading.current_thread()] = conn
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close every thread's connection, when whoever owns the database is done with it (a test's app).
        A statement after this opens a new connection."""
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
            self._local = threading.local()
        for conn in connections:
            conn.close()

    def execute(self, operation: str, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run one statement and fetch all its rows."""
        return self._run(operation, sql, params)[0]

    def execute_count(self, operation: str, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a write statement and return how many rows it changed."""
        return self._run(operation, sql, params)[1]

    def _run(self, operation: str, sql: str, params: Sequence[Any]) -> tuple[list[sqlite3.Row], int]:
        """One span per statement, named by its operation so a trace says which query took the time; it covers
        fetching the rows too, where SQLite does most of a scan's work. 'database is locked' after the busy
        timeout becomes a 503 problem."""
        started = time.perf_counter()
        attributes = {
            "db.system": "sqlite",
            "db.name": self.service,
            "db.operation.name": operation,
            "db.statement": _one_line(sql),
        }
        with _tracer.start_as_current_span(
            operation,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return self._fetch(sql, params)
            except sqlite3.IntegrityError:
                raise  # a unique-key conflict is an answer (an idempotent retry), not a failure
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            finally:
                self._observe(operation, attributes["db.statement"], time.perf_counter() - started)

    def _fetch(self, sql: str, params: Sequence[Any]) -> tuple[list[sqlite3.Row], int]:
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql, params)
            return cursor.fetchall(), cursor.rowcount
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise Problem(
                    503,
                    "Database busy",
                    f"The {self.service} database stayed locked for {self.busy_timeout_ms} ms; retry shortly.",
                    kind="database-busy",
                    headers={"Retry-After": "1"},
                ) from exc
            raise
        finally:
            cursor.close()

    def _observe(self, operation: str, statement: str, seconds: float) -> None:
        DB_QUERY_DURATION.labels(self.service, operation).observe(seconds)
        duration_ms = seconds * 1000
        if duration_ms >= self.slow_query_ms:
            _log.warning(
                "slow_query",
                extra={
                    "operation": operation,
                    "statement": statement,
                    "duration_ms": round(duration_ms, 2),
                    "threshold_ms": self.slow_query_ms,
                },
            )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front so read-then-write is atomic."""
        self.execute("begin", "BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self.connection.in_transaction:
                self.connection.execute("ROLLBACK")
            raise
        self.execute("commit", "COMMIT")

    def add_column(self, table: str, column: str, definition: str) -> None:
        """Add a column to a table made by an earlier version (data kept across upgrades), once."""
        columns = {row["name"] for row in self.execute(f"{table}.columns", f"PRAGMA table_info({table})")}
        if column not in columns:
            self.execute(f"{table}.add_{column}", f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    def ping(self) -> None:
        self.execute("ping", "SELECT 1")
