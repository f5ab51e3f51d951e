"""A database that cannot answer for a moment, as tests make it: SQLite's one writer lock
held by another connection, or every connection of PostgreSQL's pool taken."""

import contextlib
import sqlite3

import pytest
from django.db import connection

needs_sqlite_writer_lock = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's writer lock")

needs_connection_pool = pytest.mark.skipif(
    connection.vendor != "postgresql" or not connection.settings_dict.get("OPTIONS", {}).get("pool"),
    reason="PostgreSQL's connection pool (DB_POOL=true)",
)


def hold_sqlite_write_lock():
    """A second connection to the test database that takes SQLite's one write lock."""
    other = sqlite3.connect(connection.settings_dict["NAME"], uri=True, timeout=0.1)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE chat_chat SET name = name")
    return other


def release_lock(other) -> None:
    other.rollback()
    other.close()


@contextlib.contextmanager
def every_pooled_connection_taken(wait: float = 0.2):
    """No connection free in the pool (a restart's thousands of reconnects, say): whoever
    needs one meanwhile waits `wait` seconds for it, then gets PoolTimeout. Yields a
    function that gives them back before the end."""
    connection.close()  # the test's own connection, back to the pool
    pool, taken = connection.pool, []
    configured = pool.timeout

    def give_back() -> None:
        """And a new pool for the tests after: this one grew to its largest, and keeps that."""
        if not taken:
            return
        pool.timeout = configured
        while taken:
            pool.putconn(taken.pop())
        connection.close_pool()

    try:
        for _ in range(pool.max_size):
            taken.append(pool.getconn(timeout=10))
        pool.timeout = wait
        yield give_back
    finally:
        give_back()
