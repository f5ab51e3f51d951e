"""The database work of sockets opening together goes in shared trips (`chat.realtime.handshakes`)."""

import asyncio
import sqlite3

import pytest
from django.contrib.auth.backends import ModelBackend
from django.db import connection

from chat import selectors
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


def doubles(numbers):
    batches.append(numbers)
    return {number: 2 * number for number in numbers}


def square_then_double(number):
    """A socket's own work in steps: each step read with the other sockets' in the same trip."""
    square = yield handshakes.Batch(squares, number, default="none")
    if square == "none":
        return "refused"
    return (yield handshakes.Batch(doubles, square))


def fails_in_its_second_step():
    yield handshakes.Batch(squares, 1)
    yield handshakes.Batch(fails, 1)
    return "not reached"


def no_steps_needed():
    return "refused at once"
    yield  # a generator all the same


def recovers_from_a_failed_batch():
    try:
        yield handshakes.Batch(fails, 1)
    except LookupError:
        return "recovered"


async def test_a_sockets_own_work_goes_on_from_its_batches_in_the_same_trip(monkeypatch):
    trips = []
    run_all = handshakes._run_all
    monkeypatch.setattr(handshakes, "_run_all", lambda trip: trips.append(len(trip)) or run_all(trip))

    results = await asyncio.gather(
        handshakes.in_shared_trip(lambda: square_then_double(2)),
        handshakes.in_shared_trip(lambda: square_then_double(3)),
        handshakes.in_shared_batch(squares, 5),  # another socket's single batch, read in the first round
        handshakes.in_shared_trip(lambda: square_then_double(-1)),  # ends after one step
        handshakes.in_shared_trip(recovers_from_a_failed_batch),
        handshakes.in_shared_trip(lambda: "a socket's own"),
    )

    assert results == [8, 18, 25, "refused", "recovered", "a socket's own"]
    assert trips == [6]
    assert batches == [[2, 3, 5, -1], [4, 9]]


async def test_a_failed_batch_reaches_each_step_that_asked_for_it_with_the_traceback_it_came_with():
    results = await asyncio.gather(
        *(handshakes.in_shared_trip(fails_in_its_second_step) for _ in range(20)),
        handshakes.in_shared_trip(no_steps_needed),
        return_exceptions=True,
    )

    assert {type(result) for result in results[:20]} == {LookupError}
    assert results[20] == "refused at once"
    error = results[0]
    frames = []
    trace = error.__traceback__
    while trace is not None:
        frames.append(trace.tb_frame.f_code.co_name)
        trace = trace.tb_next
    # Raised in each of the 20 steps, yet its traceback goes through one of them, not all.
    assert frames.count("fails_in_its_second_step") == 1


async def test_work_withdrawn_while_queued_never_runs_and_work_in_a_trip_runs_to_its_end():
    ran = []
    first = handshakes.shared_trip(lambda: ran.append("first"))
    second = handshakes.shared_trip(lambda: ran.append("second"))

    assert handshakes.withdraw(second)
    await asyncio.shield(first)

    assert ran == ["first"]
    assert second.cancelled()
    assert not handshakes.withdraw(first)  # done: nothing to take back


async def test_the_asks_of_open_sockets_go_in_the_next_trip_ahead_of_waiting_handshakes(monkeypatch):
    monkeypatch.setattr(handshakes, "TRIP_SIZE", 3)

    await asyncio.gather(
        *(handshakes.in_shared_batch(squares, number) for number in range(5)),
        handshakes.in_shared_batch(squares, 10, socket_open=True),  # asked last, an open socket's greeting
    )

    assert batches == [[10, 0, 1], [2, 3, 4]]


async def test_a_batch_of_more_items_than_a_query_may_name_is_read_in_several(monkeypatch):
    monkeypatch.setattr(handshakes, "items_per_query", lambda: 2)

    results = await asyncio.gather(*(handshakes.in_shared_batch(squares, number) for number in range(5)))

    assert results == [0, 1, 4, 9, 16]
    assert batches == [[0, 1], [2, 3], [4]]


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's limit on a statement's variables")
async def test_a_trip_names_no_more_items_a_query_than_sqlite_allows_variables():
    """SQLite before 3.32 allows 999 variables a statement: a trip of 1,000 rooms' memberships
    (a user and a chat each) would fail. Here the limit is lowered to 40 on the trips' connection."""

    def set_variables_limit(limit):
        connection.ensure_connection()
        return connection.connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)

    default = await handshakes.in_shared_trip(lambda: set_variables_limit(40))
    try:
        per_query = await handshakes.in_shared_trip(handshakes.items_per_query)
        memberships = await asyncio.gather(
            *(handshakes.in_shared_batch(selectors.memberships_by_pair, (user_id, 1)) for user_id in range(1, 31))
        )
    finally:
        await handshakes.in_shared_trip(lambda: set_variables_limit(default))

    assert per_query == 5
    assert memberships == [None] * 30


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


class OwnLookupBackend:
    """A backend with a `get_user` of its own: its users are never read in the trip's query."""

    def authenticate(self, request, **credentials):
        return None

    def get_user(self, user_id):
        from django.contrib.auth.backends import ModelBackend

        return ModelBackend().get_user(user_id)


class RefusesErinBackend(ModelBackend):
    """ModelBackend's `get_user` (so read in the trip's query) with a refusal of its own."""

    def user_can_authenticate(self, user):
        return user.username != "erin" and super().user_can_authenticate(user)


def test_the_users_of_a_trip_load_in_one_query_each_as_channels_would_load_it(
    alice, bob, carol, dave, make_user, settings, django_assert_num_queries
):
    """Same users, same refusals as Channels' `get_user`: a changed password (its session
    flushed), no auth hash, an inactive user, one the backend's own rule refuses, a deleted
    one, a backend no longer configured, a session never logged in; a backend with a
    `get_user` of its own still reads its user itself."""
    import inspect

    from channels.auth import get_user
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from django.test import Client

    own_lookup, refuses_erin = f"{__name__}.OwnLookupBackend", f"{__name__}.RefusesErinBackend"
    settings.AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend", own_lookup, refuses_erin]
    erin, frank, gone = make_user("erin"), make_user("frank"), make_user("gone")

    def logged_in(user, backend=None):
        browser = Client()
        browser.force_login(user, backend=backend)
        return browser.session.session_key

    def anonymous_session():
        store = SessionStore()
        store["seen_the_welcome"] = True
        store.create()
        return store.session_key

    def sessions():
        keys = {
            "alice": logged_in(alice),
            "alice again": logged_in(alice),
            "bob, password changed since": logged_in(bob),
            "carol, made inactive since": logged_in(carol),
            "dave, through a backend with its own get_user": logged_in(dave, own_lookup),
            "erin, through a backend that refuses her": logged_in(erin, refuses_erin),
            "frank, through a backend no longer configured": logged_in(frank),
            "frank, without an auth hash": logged_in(frank),
            "gone, deleted since": logged_in(gone),
            "never logged in": anonymous_session(),
        }
        removed_backend = SessionStore(keys["frank, through a backend no longer configured"])
        removed_backend[BACKEND_SESSION_KEY] = "some.removed.Backend"
        removed_backend.save()
        no_hash = SessionStore(keys["frank, without an auth hash"])
        del no_hash[HASH_SESSION_KEY]
        no_hash.save()
        return keys

    for_channels, for_the_trip = sessions(), sessions()  # a flush deletes a session: one set each
    bob.set_password("a-new-password")
    bob.save()
    carol.is_active = False
    carol.save()
    gone.delete()

    as_channels = {name: inspect.unwrap(get_user)({"session": SessionStore(key)}) for name, key in for_channels.items()}
    trip = {name: {"session": SessionStore(key)} for name, key in for_the_trip.items()}
    handshakes.load_sessions(scope["session"] for scope in trip.values())
    with django_assert_num_queries(5):  # the users; the flushes of bob's and frank's sessions (a SELECT, a DELETE)
        handshakes.load_users(list(trip.values()))
    with django_assert_num_queries(1):  # dave's backend reads his alone
        trip_users = {name: handshakes.user_for_scope(scope) for name, scope in trip.items()}

    assert {name: user.pk for name, user in trip_users.items()} == {name: user.pk for name, user in as_channels.items()}
    assert {name for name, user in trip_users.items() if user.is_authenticated} == {
        "alice",
        "alice again",
        "dave, through a backend with its own get_user",
    }
    assert not SessionStore().exists(for_the_trip["bob, password changed since"])
    assert trip["alice"]["user"] is not trip["alice again"]["user"]  # each socket its own, as with Channels
