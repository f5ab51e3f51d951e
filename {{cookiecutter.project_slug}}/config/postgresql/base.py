"""Django's PostgreSQL backend, whose pool checks a connection without a round trip.

Django's pool checks each connection it hands out with an empty query, so that after
PostgreSQL restarts a request gets a fresh connection instead of an error. A server
process takes a connection from its pool for every request and for every database trip
of its sockets, all on the one thread that does the process's database work: that check
was one round trip more for each message stored, each reaction, each typing signal.

A connection that PostgreSQL closed (a restart, a terminated backend, a crash) has the
server's goodbye, or the end of the stream, waiting on its socket. So the check looks
there first, and asks the server only when something is waiting. Set as the engine by
config/settings.py when the pool is on.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool


def check_connection(conn) -> None:
    """Raise if the pooled connection is unusable; a round trip only if its socket has news."""
    if conn.closed or conn.broken:
        raise ConnectionError("The connection is closed.")
    waiting = select.poll()  # not select.select: a busy server has file descriptors past 1024
    waiting.register(conn.fileno(), select.POLLIN | select.POLLPRI)
    if waiting.poll(0):
        ConnectionPool.check_connection(conn)


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        pool = super().pool
        if pool is not None and self.settings_dict["CONN_HEALTH_CHECKS"]:
            # psycopg_pool takes its check only as an argument, which Django sets.
            pool._check = check_connection
        return pool
