"""The sockets' trips to the database thread (`chat.realtime.database`): an SQLite
connection is kept between them, on the one thread they run on; a request's thread and a
database server's connections are let go after each, as Channels lets them go."""

import time

import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.db import connection

from chat.realtime.database import database_trip

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
