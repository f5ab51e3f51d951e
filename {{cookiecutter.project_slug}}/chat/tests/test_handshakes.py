"""The database work of sockets opening together goes in shared trips (`chat.realtime.handshakes`)."""

import asyncio

import pytest

from chat.realtime import handshakes

pytestmark = pytest.mark.django_db(transaction=True)

batches = []


def squares(numbers):
    batches.append(numbers)
    return {number: number * number for number in numbers if number >= 0}


def fails(items):
    raise LookupError("the database went away")


@pytest.fixture(autouse=True)
def no_batches_yet():
    batches.clear()


async def test_a_trip_reads_the_items_asked_of_one_batch_together_once_each():
    results = await asyncio.gather(
        handshakes.in_shared_batch(squares, 3),
        handshakes.in_shared_batch(squares, 4),
        handshakes.in_shared_batch(squares, 3),  # a second socket of the same room
        handshakes.in_shared_batch(squares, -1, default="none"),  # absent from what the batch found
        handshakes.in_shared_trip(lambda: "a socket's own"),
    )

    assert results == [9, 16, 9, "none", "a socket's own"]
    assert batches == [[3, 4, -1]]


async def test_what_a_batch_raised_reaches_each_of_its_askers_and_no_other():
    results = await asyncio.gather(
        handshakes.in_shared_batch(fails, 1),
        handshakes.in_shared_batch(fails, 2),
        handshakes.in_shared_batch(squares, 5),
        handshakes.in_shared_trip(lambda: "fine"),
        return_exceptions=True,
    )

    assert [type(result) for result in results[:2]] == [LookupError, LookupError]
    assert results[2:] == [25, "fine"]


def test_the_sessions_of_a_trip_load_in_one_query_each_as_it_would_alone(alice, bob, django_assert_num_queries):
    from django.contrib.sessions.backends.db import SessionStore
    from django.test import Client
    from django.utils.functional import SimpleLazyObject

    def logged_in(user):
        browser = Client()
        browser.force_login(user)
        return browser.session.session_key

    keys = [logged_in(alice), logged_in(bob)]
    lazy = SimpleLazyObject(lambda: SessionStore(keys[1]))  # as Channels wraps a scope's session
    lazy._setup()
    sessions = [SessionStore(keys[0]), lazy, SessionStore(keys[0])]  # the room and inbox socket of one page
    unknown = SessionStore("nosuchsessionkey0123456789abcdefgh")

    with django_assert_num_queries(1):
        handshakes.load_sessions([*sessions, unknown])
    with django_assert_num_queries(0):
        loaded = [dict(session.items()) for session in sessions]
    assert loaded == [dict(SessionStore(key).items()) for key in (keys[0], keys[1], keys[0])]
    assert [int(data["_auth_user_id"]) for data in loaded] == [alice.pk, bob.pk, alice.pk]
    with django_assert_num_queries(1):  # a session not found loads on its own, as before
        assert dict(unknown.items()) == {}
