"""Django's PostgreSQL backend, whose pool checks a busy connection without a round trip.

Django's pool checks each connection it hands out with an empty query, so that after
PostgreSQL restarts a request gets a fresh connection instead of an error. A server
process takes a connection from its pool for every request and for every database trip
of its sockets, all on the one thread that does the process's database work: that check
was one round trip more for each message stored, each reaction, each typing signal.

A connection that PostgreSQL closed (a restart, a terminated backend) has the server's
goodbye, or the end of the stream, waiting on its socket. So a connection checked less
than QUIET_SECONDS ago is checked there, and asked with a round trip only when something
is waiting. A connection quiet for longer, or new to the pool, gets the round trip: a
server that vanished without a word (a host that crashed, an address moved by a failover,
a firewall that forgot the idle connection) leaves nothing on the socket. Set as the
engine by config/settings.py when the pool is on.
"""

from __future__ import annotations

import select
import time
import weakref

from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool

QUIET_SECONDS = 5.0
_checked_at: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_connection(conn) -> None:
    """Raise if the pooled connection is unusable (psycopg_pool then drops it and tries another)."""
    if conn.closed or conn.broken:
        raise ConnectionError("The connection is closed.")
    now = time.monotonic()
    checked_at, _checked_at[conn] = _checked_at.get(conn), now
    if checked_at is None or now - checked_at > QUIET_SECONDS or has_news(conn):
        ConnectionPool.check_connection(conn)


def has_news(conn) -> bool:
    """Whether anything arrived on the idle connection's socket (the server closing it)."""
    if not hasattr(select, "poll"):  # Windows: no poll; always ask the server
        return True
    waiting = select.poll()  # not select.select: a busy server has file descriptors past 1024
    waiting.register(conn.fileno(), select.POLLIN | select.POLLPRI)
    return bool(waiting.poll(0))


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        pool = super().pool
        if pool is not None and self.settings_dict["CONN_HEALTH_CHECKS"] and pool._check is not check_connection:
            # psycopg_pool takes its check only as an argument, which Django sets
            # (tests/test_postgresql_pool.py fails if this private attribute changes).
            pool._check = check_connection
        return pool
