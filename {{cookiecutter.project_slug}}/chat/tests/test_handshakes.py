"""The database work of sockets opening together goes in shared trips (`chat.realtime.handshakes`)."""

import asyncio
from functools import partial

import pytest

from chat.realtime import handshakes

pytestmark = pytest.mark.django_db(transaction=True)


async def test_work_with_the_same_key_runs_once_per_trip_and_each_asker_gets_its_result():
    calls = []

    def read(name):
        calls.append(name)
        return f"{name}: read"

    results = await asyncio.gather(
        handshakes.in_shared_trip(partial(read, "room 1"), key=("cursors", 1)),
        handshakes.in_shared_trip(partial(read, "room 1, another socket"), key=("cursors", 1)),
        handshakes.in_shared_trip(partial(read, "room 2"), key=("cursors", 2)),
        handshakes.in_shared_trip(partial(read, "a socket's own")),
        handshakes.in_shared_trip(partial(read, "a socket's own")),
    )

    assert results == ["room 1: read", "room 1: read", "room 2: read", "a socket's own: read", "a socket's own: read"]
    assert sorted(calls) == ["a socket's own", "a socket's own", "room 1", "room 2"]


async def test_what_keyed_work_raised_reaches_each_asker_and_no_other_work():
    def fails():
        raise LookupError("the chat is gone")

    results = await asyncio.gather(
        handshakes.in_shared_trip(fails, key=("cursors", 1)),
        handshakes.in_shared_trip(fails, key=("cursors", 1)),
        handshakes.in_shared_trip(lambda: "fine"),
        return_exceptions=True,
    )

    assert [type(result) for result in results[:2]] == [LookupError, LookupError]
    assert results[2] == "fine"
