"""shoplib.db's connections: one per thread, each closed by the code that owns it, none left for the collector
(Python 3.13 warns about a connection collected open, and the suite turns warnings into errors)."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from shoplib.db import Database


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "test.db", "test", busy_timeout_ms=100, slow_query_ms=1000)
    yield database
    database.close()


def _connection_of_a_thread(db):
    """The connection a thread used, once that thread has ended."""
    used = []
    thread = threading.Thread(target=lambda: used.append(db.connection))
    thread.start()
    thread.join()
    return used[0]


def _is_closed(conn):
    try:
        conn.execute("SELECT 1")
    except sqlite3.ProgrammingError as exc:
        assert "closed" in str(exc)
        return True
    return False


def test_each_thread_keeps_its_own_connection_and_close_closes_every_one(db):
    mine = db.connection
    assert db.connection is mine
    theirs = _connection_of_a_thread(db)
    assert theirs is not mine and not _is_closed(mine)
    db.close()
    assert _is_closed(mine) and _is_closed(theirs)
    db.ping()  # a statement after close opens a new connection
    assert db.connection is not mine


def test_the_connection_of_an_ended_thread_is_closed_when_the_next_connection_opens(db):
    ended = _connection_of_a_thread(db)
    assert not _is_closed(ended)  # nothing has opened since its thread ended
    db.ping()  # this thread's first statement opens its connection
    assert _is_closed(ended)
