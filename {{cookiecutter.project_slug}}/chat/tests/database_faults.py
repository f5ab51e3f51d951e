"""A database that cannot answer for a moment, as tests make it: SQLite's one writer lock
held by another connection, or every connection of PostgreSQL's pool taken. And one that
answers with an error no wait mends: a table missing."""

import contextlib
import sqlite3

import pytest
from channels.db import database_sync_to_async
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


@contextlib.asynccontextmanager
async def table_missing(model):
    """The model's table renamed away, as a `migrate` not run leaves it: every query of it
    fails (SQLite's OperationalError, as a busy database's; PostgreSQL's ProgrammingError),
    on every connection. Put back at the end."""
    table = model._meta.db_table
    await database_sync_to_async(rename_table)(table, f"{table}_gone")
    try:
        yield
    finally:
        await database_sync_to_async(rename_table)(f"{table}_gone", table)


def rename_table(old: str, new: str) -> None:
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {quote(old)} RENAME TO {quote(new)}")
