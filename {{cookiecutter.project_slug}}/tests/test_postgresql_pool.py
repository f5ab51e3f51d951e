"""The pool's check of PostgreSQL connections (config/postgresql/base.py): no round trip
for a healthy connection, and a connection PostgreSQL closed is never handed out."""

import time

import psycopg
import pytest
from django.db import connection

from config.postgresql import base as pool_backend

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql" or not connection.settings_dict.get("OPTIONS", {}).get("pool"),
        reason="PostgreSQL's pool (DB_POOL=true)",
    ),
]


@pytest.fixture
def server_checks(monkeypatch):
    """The connections checked with a round trip: psycopg_pool's check is an empty query."""
    checked = []
    execute = psycopg.Connection.execute

    def noting_checks(conn, query, *args, **kwargs):
        if query == "":
            checked.append(conn)
        return execute(conn, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", noting_checks)
    return checked


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def use_pooled_connections(times: int) -> None:
    for _ in range(times):
        connection.close()  # back to the pool
        backend_pid()


def test_a_busy_pooled_connection_is_handed_out_without_a_round_trip(server_checks):
    use_pooled_connections(5)  # each connection new to the pool is asked once
    server_checks.clear()

    use_pooled_connections(5)

    assert server_checks == []


def test_a_connection_quiet_for_a_while_is_checked_with_the_server(server_checks, monkeypatch):
    use_pooled_connections(5)
    server_checks.clear()
    monkeypatch.setattr(pool_backend, "QUIET_SECONDS", 0.0)

    use_pooled_connections(2)

    assert len(server_checks) == 2


def test_connections_postgresql_closed_are_replaced_before_anyone_uses_them(server_checks):
    pooled = set()
    for _ in range(6):  # the pool's connections, as they come round
        connection.close()
        pooled.add(backend_pid())
    connection.close()
    params = connection.get_connection_params()
    admin_params = {key: params[key] for key in ("dbname", "user", "password", "host", "port") if params.get(key)}
    with psycopg.connect(**admin_params, autocommit=True) as admin:
        # Only those: other threads' connections (taken from the pool and not given back) stay.
        admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [list(pooled)])
        deadline = time.monotonic() + 10
        alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)"
        while admin.execute(alive, [list(pooled)]).fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.05)

    after = backend_pid()  # no error: the pool's closed connections were checked and dropped

    assert after not in pooled
    assert server_checks, "a closed connection is checked with the server before it is dropped"
