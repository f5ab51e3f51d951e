"""The sockets' trips to the database thread (`chat.realtime.database`): an SQLite
connection is kept between them, on the one thread they run on; a request's thread and a
database server's connections are let go after each, as Channels lets them go."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.db import OperationalError, ProgrammingError, connection, transaction

from chat import services
from chat.models import Chat
from chat.realtime.database import database_busy, database_trip

needs_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's own errors")

pytestmark = pytest.mark.django_db(transaction=True)


def used_connection():
    """The thread's connection to the database (the driver's own object), after a query."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return connection.connection


def kept() -> bool:
    """Whether the thread's connection is open and stays open (Django closes a connection
    due to close at the next chance; an in-memory SQLite database, as in the tests, never)."""
    due = connection.close_at is not None and connection.close_at <= time.monotonic()
    return connection.connection is not None and not due


async def test_the_sockets_trips_keep_their_sqlite_connection_and_give_a_servers_back():
    first = await database_trip(used_connection)()
    second = await database_trip(used_connection)()

    on_sqlite = connection.vendor == "sqlite"
    # Looked at from the same thread without a trip, which would let go of it first.
    assert await sync_to_async(kept)() is on_sqlite
    if on_sqlite:
        # The same connection: a database file is not opened, nor its schema read, again.
        # (Django never closes the tests' in-memory database at all: `kept` tells the two apart.)
        assert second is first


async def test_a_trip_inside_a_requests_thread_lets_go_of_its_connection():
    """Each request runs on a thread of its own: a connection kept there would stay open
    after the request, one more for every request served."""
    async with ThreadSensitiveContext():
        await database_trip(used_connection)()

        assert not await sync_to_async(kept)()


def error_of(sql: str, *params) -> Exception:
    """What the database answers this statement with, in a transaction of its own."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '100ms'")
            cursor.execute("SET LOCAL statement_timeout = '200ms'")
            cursor.execute(sql, params)
    except Exception as exc:
        return exc
    raise AssertionError(f"{sql} did not fail")


def lock_in_turn(first: int, second: int, both_hold_one: threading.Barrier) -> Exception | None:
    """Lock one chat's row, then, once the other thread holds the other, this one's second."""
    try:
        with transaction.atomic():
            Chat.objects.select_for_update().get(pk=first)
            both_hold_one.wait(timeout=10)
            Chat.objects.select_for_update().get(pk=second)
    except OperationalError as exc:
        return exc
    finally:
        connection.close()
    return None


def hold_row(chat_id: int, held: threading.Event, release: threading.Event) -> None:
    try:
        with transaction.atomic():
            Chat.objects.select_for_update().get(pk=chat_id)
            held.set()
            release.wait(timeout=10)
    finally:
        connection.close()


@needs_postgresql
def test_a_deadlock_and_a_lock_wait_out_of_time_are_busy_a_slow_statement_or_a_missing_table_is_not(alice):
    """Running the transaction again is the remedy for the first two (the chat's views
    answer them 503 with Retry-After, the sockets "busy"); a statement past its timeout is
    slow again, and a missing table a fault, that no retry mends (500, "failed", 1011)."""
    first, second = (services.create_group_chat(creator=alice, name=name, members=[]).pk for name in "ab")
    both_hold_one = threading.Barrier(2)
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lock_in_turn, (first, second), (second, first), (both_hold_one, both_hold_one)))
    [deadlock] = [outcome for outcome in outcomes if outcome is not None]  # PostgreSQL ends one of the two
    assert deadlock.__cause__.sqlstate == "40P01" and database_busy(deadlock)

    held, release = threading.Event(), threading.Event()
    with ThreadPoolExecutor(1) as pool:  # the chat's row locked by another connection meanwhile
        holder = pool.submit(hold_row, first, held, release)
        assert held.wait(timeout=10)
        lock_wait = error_of("SELECT 1 FROM chat_chat WHERE id = %s FOR UPDATE", first)
        release.set()
        holder.result()
    assert lock_wait.__cause__.sqlstate == "55P03" and database_busy(lock_wait)

    statement_timeout = error_of("SELECT pg_sleep(1)")
    assert statement_timeout.__cause__.sqlstate == "57014" and not database_busy(statement_timeout)

    missing_table = error_of("SELECT 1 FROM chat_table_never_made")
    assert isinstance(missing_table, ProgrammingError) and not database_busy(missing_table)
