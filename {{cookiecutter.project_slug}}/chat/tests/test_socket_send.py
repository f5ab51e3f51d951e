"""Sending over the room socket: the `send` frame, its ack, retries, and its refusals.

Runs on the in-memory layer and, with REDIS_URL, on Redis (the `connect` fixture of
test_consumers).
"""

import asyncio
import json
import time
from urllib.parse import urlencode

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chat import services, views
from chat.conf import chat_setting
from chat.models import Membership, Message, RoomPresence
from chat.realtime import consumers, presence, sends, shutdown
from chat.realtime.hub import RoomHub
from chat.realtime.loop import EventQueue
from chat.tests import test_consumers
from chat.tests.asgi_http import over_asgi
from chat.tests.database_faults import (
    every_pooled_connection_taken,
    hold_sqlite_write_lock,
    needs_connection_pool,
    needs_sqlite_writer_lock,
    release_lock,
    table_missing,
)
from chat.tests.test_consumers import expect_close, receive_until
from chat.tests.test_events_retry import eventually

# The socket fixtures of test_consumers: each test on the in-memory layer and on Redis.
channel_layer = test_consumers.channel_layer
connect = test_consumers.connect
fast_debounce = test_consumers.fast_debounce

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def group(alice, bob, carol):
    return services.create_group_chat(creator=alice, name="Team", members=[bob, carol])


def send_frame(client_id, body):
    return json.dumps({"type": "send", "client_id": client_id, "body": body})


async def answers(room, count: int) -> dict[str, dict]:
    """The socket's next `count` answers to sends (acks and error frames), by client id: an
    error waits for no frame, so it may come before the acks of earlier sends."""
    replies = {}
    while len(replies) < count:
        frame = json.loads(await room.receive_from(timeout=3))
        if frame["type"] in ("ack", "error") and "client_id" in frame:
            replies[frame["client_id"]] = frame
    return replies


async def stored(**filters) -> list[Message]:
    return await database_sync_to_async(lambda: list(Message.objects.filter(**filters).order_by("pk")))()


async def test_a_send_frame_is_stored_acked_and_delivered_to_the_room(connect, alice, bob, group):
    alice_room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    bob_room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")

    await alice_room.send_to(text_data=send_frame("c-1", "<b>hello</b>"))

    ack = await receive_until(alice_room, "ack")
    [message] = await stored(chat=group)
    assert ack == {"type": "ack", "client_id": "c-1", "message_id": message.pk}
    assert (message.body, message.sender_id, message.client_id) == ("<b>hello</b>", alice.pk, "c-1")
    frame = await receive_until(bob_room, "chat.message")
    assert frame["message_id"] == message.pk
    assert "&lt;b&gt;hello&lt;/b&gt;" in frame["html"]


async def test_the_ack_follows_the_messages_own_frame_when_the_rooms_frames_leave_late(
    connect, alice, bob, group, monkeypatch
):
    """Acked before its frame, a page waits a moment and then fetches the message: when a
    process's frames leave late, every sender would add a fetch per message to it."""
    deliver = RoomHub.deliver

    async def late(self, event, **kwargs):
        await asyncio.sleep(0.3)
        await deliver(self, event, **kwargs)

    monkeypatch.setattr(RoomHub, "deliver", late)
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    await connect(bob, f"/ws/chat/{group.pk}/")

    await room.send_to(text_data=send_frame("c-1", "hello"))

    frames = []
    while not frames or frames[-1]["type"] != "ack":
        frames.append(json.loads(await room.receive_from(timeout=3)))
    [message] = await stored(chat=group)
    assert [(f["type"], f.get("message_id")) for f in frames if f["type"] in ("chat.message", "ack")] == [
        ("chat.message", message.pk),
        ("ack", message.pk),
    ]


def hold_message_sends(monkeypatch, *held: int) -> tuple[list[int], dict[int, asyncio.Event]]:
    """The ids of the room messages the layer is asked to send, in order; the sends of the
    `held` ones (the first is 1) wait until their event is set."""
    layer = get_channel_layer()
    group_send, message_sends, releases = layer.group_send, [], {number: asyncio.Event() for number in held}

    async def held_group_send(group_name, event):
        if event["type"] == "chat.message":
            message_sends.append(event["message_id"])
            if len(message_sends) in releases:
                await releases[len(message_sends)].wait()
        await group_send(group_name, event)

    monkeypatch.setattr(layer, "group_send", held_group_send)
    return message_sends, releases


async def test_messages_stored_together_reach_the_sockets_here_before_the_first_goes_through_the_layer(
    connect, alice, bob, carol, group, monkeypatch
):
    """The frames of a group go to this process's sockets in one go: a layer send between
    them (a Redis round trip) let every socket's writer, and the server, write once per
    message. Here the layer's send of the group's first message never finishes."""
    groups = recording_trips(monkeypatch, first_trip_takes=0.3)
    message_sends, releases = hold_message_sends(monkeypatch, 2)
    rooms = {person: (await connect(person, f"/ws/chat/{group.pk}/"))[0] for person in (alice, bob, carol)}
    try:
        await rooms[bob].send_to(text_data=send_frame("first", "first"))
        await asyncio.sleep(0.1)  # during the first trip: the next two are stored together
        await rooms[alice].send_to(text_data=send_frame("second", "second"))
        await rooms[carol].send_to(text_data=send_frame("third", "third"))

        framed = [(await receive_until(rooms[bob], "chat.message"))["message_id"] for _ in range(3)]
        acks = [await receive_until(rooms[alice], "ack"), await receive_until(rooms[carol], "ack")]
        sent_through_the_layer = list(message_sends)
    finally:
        for release in releases.values():
            release.set()

    assert groups[:2] == [1, 2]
    messages = await stored(chat=group)
    assert framed == [m.pk for m in messages]
    assert [ack["message_id"] for ack in acks] == [m.pk for m in messages[1:]]
    assert sent_through_the_layer == framed[:2], "the third waits behind the second's layer send"


async def test_a_message_sent_over_http_is_not_overtaken_here_by_a_socket_send_stored_after_it(
    connect, alice, bob, group, monkeypatch
):
    """A message stored outside the sockets' queue (sent over HTTP where no server loop takes
    it, as here) reaches this process's sockets through the layer only; a socket send stored
    after it waits for its layer send before going to them straight from the hub."""
    message_sends, releases = hold_message_sends(monkeypatch, 1, 2)
    alice_room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    bob_room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    queue = EventQueue.for_running_loop()
    try:
        await alice_room.send_to(text_data=send_frame("first", "first"))
        await receive_until(bob_room, "chat.message")  # straight from the hub; its layer send is held
        await database_sync_to_async(services.send_message)(chat=group, sender=bob, body="over http")
        await alice_room.send_to(text_data=send_frame("third", "third"))
        await eventually(lambda: len(queue.waiting) == 2)  # both wait behind the first's layer send
        releases[1].set()
        await eventually(lambda: len(message_sends) == 2)  # the one sent over HTTP is held now

        seen_meanwhile = []
        while not await bob_room.receive_nothing(timeout=0.3):
            seen_meanwhile.append(json.loads(await bob_room.receive_from()))
    finally:
        for release in releases.values():
            release.set()

    assert [frame for frame in seen_meanwhile if frame["type"] == "chat.message"] == []
    _, over_http, third = await stored(chat=group)
    later = {(await receive_until(bob_room, "chat.message"))["message_id"] for _ in range(2)}
    assert later == {over_http.pk, third.pk}


async def test_a_client_id_sent_twice_at_once_gets_both_acks_with_its_frame(connect, alice, group):
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    for _ in range(2):  # a client resending before the first answer
        await room.send_to(text_data=send_frame("twice", "once"))

    acks = [await asyncio.wait_for(receive_until(room, "ack"), 1) for _ in range(2)]

    [message] = await stored(chat=group)
    assert [ack["message_id"] for ack in acks] == [message.pk, message.pk]


async def test_an_ack_whose_frame_never_comes_is_sent_after_a_bounded_wait(connect, alice, group, monkeypatch):
    monkeypatch.setattr(consumers, "ACK_WAITS_FOR_FRAME_SECONDS", 0.2)

    async def frame_lost(self, event):
        return None

    monkeypatch.setattr(consumers.RoomConsumer, "chat_message", frame_lost)
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")

    await room.send_to(text_data=send_frame("c-1", "hello"))

    ack = await asyncio.wait_for(receive_until(room, "ack"), 1)
    assert [m.pk for m in await stored(chat=group)] == [ack["message_id"]]


async def test_a_resent_client_id_is_acked_with_the_first_message_and_stored_once(connect, alice, group):
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    await room.send_to(text_data=send_frame("retry-me", "once"))
    first = await receive_until(room, "ack")
    # A retry after a reconnect: a new socket, the same client id.
    again, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    await again.send_to(text_data=send_frame("retry-me", "once"))
    second = await receive_until(again, "ack")

    assert first["message_id"] == second["message_id"]
    assert [m.pk for m in await stored(chat=group)] == [first["message_id"]]


async def test_the_same_client_id_from_two_people_is_two_messages(connect, alice, bob, group):
    alice_room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    bob_room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    await alice_room.send_to(text_data=send_frame("same", "from alice"))
    await bob_room.send_to(text_data=send_frame("same", "from bob"))
    acks = [await receive_until(alice_room, "ack"), await receive_until(bob_room, "ack")]
    assert acks[0]["message_id"] != acks[1]["message_id"]
    assert len(await stored(chat=group)) == 2


@pytest.mark.parametrize(
    ("frame", "code", "client_id"),
    [
        ({"type": "send", "body": "no id"}, "malformed", None),
        ({"type": "send", "client_id": "", "body": "empty id"}, "malformed", None),
        ({"type": "send", "client_id": "x" * 65, "body": "long id"}, "malformed", None),
        ({"type": "send", "client_id": 7, "body": "number id"}, "malformed", None),
        ({"type": "send", "client_id": "c", "body": None}, "malformed", "c"),
        ({"type": "send", "client_id": "c", "body": "   "}, "invalid", "c"),
        ({"type": "send", "client_id": "c", "body": "x" * 4001}, "invalid", "c"),
        ({"type": "send", "client_id": "c", "body": "a\x00b"}, "invalid", "c"),
        ({"type": "send", "client_id": "c\x00", "body": "hi"}, "invalid", "c\x00"),
        # A lone surrogate, which JSON can spell ("\\ud800") and no database can store.
        ({"type": "send", "client_id": "c", "body": "a\ud800b"}, "malformed", "c"),
        ({"type": "send", "client_id": "c\udfff", "body": "hi"}, "malformed", None),
        ({"type": "send", "client_id": "c", "body": "hi", "after": ""}, "malformed", "c"),
        ({"type": "send", "client_id": "c", "body": "hi", "after": "x" * 65}, "malformed", "c"),
        ({"type": "send", "client_id": "c", "body": "hi", "after": 7}, "malformed", "c"),
        ({"type": "send", "client_id": "c", "body": "hi", "after": "b\x00"}, "invalid", "c"),
        ({"type": "send", "client_id": "c", "body": "hi", "after": "nobody-sent-this"}, "out_of_order", "c"),
    ],
)
async def test_bad_send_frames_get_an_error_and_store_nothing(connect, alice, group, frame, code, client_id):
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    await room.send_to(text_data=json.dumps(frame))
    error = await receive_until(room, "error")
    assert (error["code"], error.get("client_id")) == (code, client_id)
    assert error["error"]
    if "\x00" in json.dumps(frame):
        assert error["error"] == "Null characters are not allowed."
    assert await stored(chat=group) == []
    await room.send_to(text_data='{"type": "ping"}')
    await receive_until(room, "pong")


async def test_sends_past_the_rate_are_refused_with_retry_after(connect, alice, group, settings):
    settings.CHAT_RATE_LIMITS = {"send": "2/m"}
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    for number in range(3):
        await room.send_to(text_data=send_frame(f"c-{number}", f"message {number}"))
    replies = await answers(room, 3)
    assert [replies[f"c-{number}"]["type"] for number in range(3)] == ["ack", "ack", "error"]
    assert replies["c-2"]["code"] == "rate_limited"
    assert 0 < replies["c-2"]["retry_after"] <= 120  # a sliding window: at most two periods
    assert len(await stored(chat=group)) == 2


async def test_sends_do_not_use_up_the_frame_budget(connect, alice, group, monkeypatch):
    monkeypatch.setattr(consumers, "FRAME_BUDGET", 2)
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    for number in range(5):
        await room.send_to(text_data=send_frame(f"c-{number}", "busy"))
        await receive_until(room, "ack")
    assert len(await stored(chat=group)) == 5


async def test_a_removed_member_cannot_send_over_a_socket_that_missed_its_revocation(
    connect, alice, bob, group, monkeypatch
):
    async def revocation_lost(self, event):
        return None

    monkeypatch.setattr(consumers.RoomConsumer, "chat_revoked", revocation_lost)
    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    await receive_until(room, "chat.presence")
    await database_sync_to_async(services.remove_member)(chat=group, actor=alice, user=bob)

    await room.send_to(text_data=send_frame("late", "still here?"))

    error = await receive_until(room, "error")
    assert (error["code"], error["client_id"]) == ("forbidden", "late")
    await expect_close(room, consumers.CLOSE_FORBIDDEN)
    assert await stored(chat=group) == []


# A database busy with another writer: SQLite refuses at once past its timeout, where
# PostgreSQL would wait for the row locks instead of failing.
async def test_an_emoji_spelled_as_an_escaped_surrogate_pair_is_stored(connect, alice, group):
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    await room.send_to(text_data='{"type": "send", "client_id": "pair", "body": "\\ud83d\\ude00 hi"}')
    ack = await receive_until(room, "ack")
    assert [(m.pk, m.body) for m in await stored(chat=group)] == [(ack["message_id"], "\U0001f600 hi")]


async def test_the_longest_message_is_read_however_its_client_escapes_it(connect, alice, group):
    """A send is never refused unread as too large for its escaping: every character of the
    longest message astral and escaped as a surrogate pair, 12 bytes each as json.dumps
    writes them by default, with a client id of 64 such characters too."""
    body, client_id = "\U0001f600" * chat_setting("CHAT_MAX_MESSAGE_LENGTH"), "\U0001f389" * 64
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    await room.send_to(text_data=json.dumps({"type": "send", "client_id": client_id, "body": body}))

    ack = await receive_until(room, "ack")
    assert [(m.pk, m.body) for m in await stored(chat=group)] == [(ack["message_id"], body)]


def recording_trips(monkeypatch, *, first_trip_takes: float = 0.0) -> list[int]:
    """The number of sends of each group stored, in order; the first group's trip takes
    `first_trip_takes` seconds on the database thread (a database slow to answer)."""
    store_together, groups = sends.store_together, []

    def recorded(group_sends, here=None):
        groups.append(len(group_sends))
        if len(groups) == 1:
            time.sleep(first_trip_takes)
        return store_together(group_sends, here)

    monkeypatch.setattr(sends, "store_together", recorded)
    return groups


async def test_a_send_that_fails_unexpectedly_fails_alone_and_its_socket_stays_open(
    connect, alice, bob, carol, group, monkeypatch
):
    """A bug hit by one send of a group: the group is stored again one send per trip, the
    others are acked, and the one gets a "failed" error frame (as a 500 would be)."""
    resolve_mentions = services.resolve_mentions

    def failing_on_boom(*, chat, sender, body):
        if body == "boom":
            raise RuntimeError("a bug")
        return resolve_mentions(chat=chat, sender=sender, body=body)

    monkeypatch.setattr(services, "resolve_mentions", failing_on_boom)
    # The next sends arrive during the first trip, and are stored as one group.
    groups = recording_trips(monkeypatch, first_trip_takes=0.3)
    rooms = {person: (await connect(person, f"/ws/chat/{group.pk}/"))[0] for person in (alice, bob, carol)}
    await rooms[alice].send_to(text_data=send_frame("first", "first"))
    await asyncio.sleep(0.1)
    await rooms[bob].send_to(text_data=send_frame("boom", "boom"))
    await rooms[carol].send_to(text_data=send_frame("second", "second"))

    acks = [await receive_until(rooms[alice], "ack"), await receive_until(rooms[carol], "ack")]
    failed = await receive_until(rooms[bob], "error")

    assert groups[:2] == [1, 2], "first alone, then boom and second together"
    assert (failed["code"], failed["client_id"]) == ("failed", "boom")
    assert [m.body for m in await stored(chat=group)] == ["first", "second"]
    assert [ack["client_id"] for ack in acks] == ["first", "second"]
    await rooms[bob].send_to(text_data='{"type": "ping"}')
    await receive_until(rooms[bob], "pong")


@needs_sqlite_writer_lock
@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_a_send_that_finds_the_database_busy_gets_a_retryable_error_and_a_retry_stores_it(
    connect, alice, group, settings
):
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    await receive_until(room, "chat.sync")  # its handshake's reads are done
    locker = await database_sync_to_async(hold_sqlite_write_lock)()
    try:
        await room.send_to(text_data=send_frame("busy-1", "wait for it"))
        error = await receive_until(room, "error")
    finally:
        await database_sync_to_async(release_lock)(locker)
    assert (error["code"], error["client_id"], error["retry_after"]) == ("busy", "busy-1", 1)
    assert await stored(chat=group) == []

    await room.send_to(text_data=send_frame("busy-1", "wait for it"))
    ack = await receive_until(room, "ack")
    assert [m.pk for m in await stored(chat=group)] == [ack["message_id"]]


@needs_sqlite_writer_lock
@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_sends_answered_busy_are_not_counted_against_the_rate(connect, alice, group, settings):
    """A page resends a "busy" send every second: through a database outage that must not use
    up the person's rate (the group counted it before its transaction, which then failed)."""
    settings.CHAT_RATE_LIMITS = {"send": "2/m"}
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    await receive_until(room, "chat.sync")
    locker = await database_sync_to_async(hold_sqlite_write_lock)()
    try:
        for _ in range(3):
            await room.send_to(text_data=send_frame("busy-1", "wait for it"))
            assert (await receive_until(room, "error"))["code"] == "busy"
    finally:
        await database_sync_to_async(release_lock)(locker)

    for number in (1, 2):  # the whole rate is still there
        await room.send_to(text_data=send_frame(f"after-{number}", "stored"))
        await receive_until(room, "ack")
    assert len(await stored(chat=group)) == 2


@needs_sqlite_writer_lock
def test_an_http_send_that_finds_the_database_busy_is_a_503_with_retry_after(client, alice, group):
    client.force_login(alice)
    url = reverse("chat:send", args=[group.pk])
    locker = hold_sqlite_write_lock()
    try:
        response = client.post(url, {"body": "wait", "client_id": "http-1"}, headers={"HX-Request": "true"})
    finally:
        release_lock(locker)
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert "busy" in response.content.decode()
    assert not Message.objects.exists()

    retried = client.post(url, {"body": "wait", "client_id": "http-1"}, headers={"HX-Request": "true"})
    assert retried.status_code == 200
    assert Message.objects.count() == 1


@pytest.fixture
def pool_taken():
    """`every_pooled_connection_taken` for an async test, set up on the test's own thread."""
    with every_pooled_connection_taken() as give_back:
        yield give_back


@needs_connection_pool
def test_with_every_pooled_connection_taken_chat_requests_are_503_with_retry_after(client, alice, group, caplog):
    """A request past the pool waits its timeout for a connection. Its first read is the
    session, before any view: it gets a 503 that the page retries, rendered without the
    database, never a 500."""
    client.force_login(alice)
    room_url, send_url = reverse("chat:room", args=[group.pk]), reverse("chat:send", args=[group.pk])
    with every_pooled_connection_taken():
        page = client.get(room_url)
        sent = client.post(send_url, {"body": "wait", "client_id": "pool-1"}, headers={"HX-Request": "true"})

    for response in (page, sent):
        assert (response.status_code, response["Retry-After"]) == (503, "1")
        assert "The server is busy. Try again in a moment." in response.content.decode()
    assert f'<a href="{room_url}">Try again</a>' in page.content.decode()
    assert "<!DOCTYPE html>" not in sent.content.decode()  # the fragment the send form shows
    unavailable = [record for record in caplog.records if record.name == "django.request"]
    assert [record.levelname for record in unavailable] == ["WARNING", "WARNING"]
    assert not Message.objects.exists()

    retried = client.post(send_url, {"body": "wait", "client_id": "pool-1"}, headers={"HX-Request": "true"})
    assert retried.status_code == 200
    assert list(Message.objects.values_list("body", flat=True)) == ["wait"]


async def test_a_send_meeting_a_database_error_that_waiting_does_not_mend_is_failed_not_busy(
    connect, alice, group, caplog
):
    """A missing table (a `migrate` not run) is the server's fault: "busy" would have the page
    send again every second for ever. It is "failed", logged as an error with its traceback."""
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    await receive_until(room, "chat.sync")
    async with table_missing(Message):
        await room.send_to(text_data=send_frame("broken-1", "no table for me"))
        error = await receive_until(room, "error")
    assert (error["code"], error["client_id"]) == ("failed", "broken-1")
    assert "retry_after" not in error
    assert [record.levelname for record in caplog.records if record.name == "chat.realtime.sends"] == ["ERROR"]
    assert await stored(chat=group) == []
    await room.send_to(text_data=send_frame("broken-1", "no table for me"))  # the table back: stored
    assert (await receive_until(room, "ack"))["client_id"] == "broken-1"


async def test_a_socket_whose_handshake_meets_a_database_error_that_waiting_does_not_mend_is_closed_with_1011(
    connect, alice, group, caplog
):
    async with table_missing(Membership):
        refused, connected, _ = await connect(alice, f"/ws/chat/{group.pk}/")
        assert connected
        await expect_close(refused, consumers.CLOSE_SERVER_ERROR)
    [record] = [record for record in caplog.records if "Refusing" in record.getMessage()]
    assert (record.levelname, record.exc_info is not None) == ("ERROR", True)

    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    assert (await receive_until(room, "chat.sync"))["chat_id"] == group.pk


@pytest.mark.parametrize("failing", ["room presence", "inbox total", "visibility"])
async def test_a_database_error_at_or_after_the_handshake_closes_the_socket_with_1011_not_a_crash(
    connect, alice, group, caplog, failing
):
    """What a socket writes or reads as it opens or once let in (a room's presence row, written
    in its handshake's trip; the inbox's unread total; a change of what it views) failing:
    closed with a code the page reconnects from, logged once as what it is, instead of an
    exception out of the consumer."""
    path = "/ws/chat/inbox/" if failing == "inbox total" else f"/ws/chat/{group.pk}/"
    if failing == "visibility":
        socket, _, _ = await connect(alice, path)
        await receive_until(socket, "chat.sync")
        async with table_missing(RoomPresence):
            await socket.send_to(text_data='{"type": "visibility", "visible": false}')
            await expect_close(socket, consumers.CLOSE_SERVER_ERROR)
    else:
        async with table_missing(Membership if failing == "inbox total" else RoomPresence):
            socket, connected, _ = await connect(alice, path)
            assert connected
            await expect_close(socket, consumers.CLOSE_SERVER_ERROR)
    logged_as = "Refusing" if failing == "room presence" else "Closing"  # refused in its handshake
    [record] = [record for record in caplog.records if record.getMessage().startswith(logged_as)]
    assert (record.levelname, record.exc_info is not None) == ("ERROR", True)


async def test_a_visibility_change_meeting_a_busy_database_keeps_the_socket_and_is_written_next_time(
    connect, alice, group, monkeypatch
):
    """What a socket views is a hint: a busy database (here its error, as SQLite's writer lock
    gives it) loses one report, not the socket, and the page's next report writes it."""
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    await receive_until(room, "chat.sync")
    write_visible, written = presence.set_visible, []

    def busy_once(*, channel_name, visible):
        if not written:
            written.append("refused")
            raise OperationalError("database is locked")
        written.append(visible)
        write_visible(channel_name=channel_name, visible=visible)

    monkeypatch.setattr(presence, "set_visible", busy_once)
    for _ in range(2):
        await room.send_to(text_data=json.dumps({"type": "visibility", "visible": False}))
        await room.send_to(text_data='{"type": "ping"}')
        await receive_until(room, "pong")  # still open
    assert written == ["refused", False]
    rows = await database_sync_to_async(lambda: list(RoomPresence.objects.values_list("visible", flat=True)))()
    assert rows == [False]


@needs_connection_pool
async def test_with_every_pooled_connection_taken_a_socket_is_closed_with_1013_and_let_in_later(
    connect, alice, group, pool_taken, caplog
):
    """Its handshake's trip to the database found no connection: "try again later", which
    the page reconnects from with backoff, instead of a failed handshake and a traceback."""
    refused, connected, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    assert connected
    await expect_close(refused, consumers.CLOSE_TRY_AGAIN_LATER)
    assert any("the database is unavailable" in record.getMessage() for record in caplog.records)

    pool_taken()
    room, connected, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    assert connected
    assert (await receive_until(room, "chat.sync"))["chat_id"] == group.pk


async def test_a_retry_of_a_stored_message_is_acked_even_at_the_rate_limit_and_costs_nothing(
    connect, alice, group, settings
):
    settings.CHAT_RATE_LIMITS = {"send": "2/m"}
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    await room.send_to(text_data=send_frame("first", "one"))
    first = await receive_until(room, "ack")
    for _ in range(3):  # the ack was lost, say: the client sends it again, and again
        await room.send_to(text_data=send_frame("first", "one"))
        assert (await receive_until(room, "ack"))["message_id"] == first["message_id"]

    await room.send_to(text_data=send_frame("second", "two"))  # the retries left room for this one
    await receive_until(room, "ack")
    await room.send_to(text_data=send_frame("first", "one"))  # at the limit now: still answered
    assert (await receive_until(room, "ack"))["message_id"] == first["message_id"]
    await room.send_to(text_data=send_frame("third", "three"))
    assert (await receive_until(room, "error"))["code"] == "rate_limited"
    assert len(await stored(chat=group)) == 2


async def test_sends_arriving_together_are_each_stored_once_in_order_and_one_refusal_refuses_only_itself(
    connect, alice, bob, carol, group
):
    rooms = {person: (await connect(person, f"/ws/chat/{group.pk}/"))[0] for person in (alice, bob, carol)}
    for room in rooms.values():
        await look_away(room)
    for number in range(10):  # all in flight at once: stored in groups, not one by one
        for person, room in rooms.items():
            await room.send_to(text_data=send_frame(f"{person.username}-{number}", f"{person.username} {number}"))
    await rooms[bob].send_to(text_data=send_frame("too-long", "x" * 4001))  # over CHAT_MAX_MESSAGE_LENGTH

    replies = {person: await answers(room, 11 if person is bob else 10) for person, room in rooms.items()}
    refused = replies[bob].pop("too-long")
    acks = {person: [replies[person][f"{person.username}-{n}"] for n in range(10)] for person in rooms}

    assert (refused["code"], refused["client_id"]) == ("invalid", "too-long")
    messages = await stored(chat=group)
    assert len(messages) == 30
    for person, person_acks in acks.items():
        ids = [ack["message_id"] for ack in person_acks]
        assert ids == sorted(ids)  # each person's messages keep the order they were sent in
        assert [m.body for m in messages if m.pk in ids] == [f"{person.username} {n}" for n in range(10)]
    assert await unread_counts(group) == await unread_counts_one_by_one(group)


async def test_sends_are_counted_against_the_rate_before_their_group_locks_the_chat(
    connect, alice, bob, group, monkeypatch
):
    """The rate's cache round trips are made before the group's transaction: the chat's row
    lock, which every other server process's sends to this chat wait for, is not held
    through them."""
    in_transaction = []
    check_rates = services.check_rates

    def noting_the_transaction(**kwargs):
        # On the thread that stores the group; each call counts a whole group, in one round trip.
        in_transaction.extend([connection.in_atomic_block] * len(kwargs["keys"]))
        return check_rates(**kwargs)

    monkeypatch.setattr(services, "check_rates", noting_the_transaction)
    rooms = [(await connect(person, f"/ws/chat/{group.pk}/"))[0] for person in (alice, bob)]
    for number in range(5):
        for index, room in enumerate(rooms):
            await room.send_to(text_data=send_frame(f"{index}-{number}", f"message {number}"))
    for room in rooms:
        for _ in range(5):
            await receive_until(room, "ack")

    assert len(await stored(chat=group)) == 10
    assert in_transaction == [False] * 10


def test_the_statements_of_a_group_of_sends_do_not_grow_with_its_sends(alice, bob, carol, group):
    """Every other server process's sends to the chat wait for its row lock while a group
    holds it: the group's statements are as many for twelve sends as for three."""

    def statements_until_commit(count: int) -> int:
        people = (alice, bob, carol)
        group_sends = [
            sends.Send(chat_id=group.pk, sender=people[i % 3], body=f"message {i}", client_id=f"{count}-{i}")
            for i in range(count)
        ]
        with CaptureQueriesContext(connection) as queries:
            results = sends.store_together(group_sends)
        assert all(isinstance(result, Message) for result in results)
        statements = [query["sql"] for query in queries.captured_queries]
        return next(i for i, sql in enumerate(statements) if sql.startswith("COMMIT"))

    assert statements_until_commit(3) == statements_until_commit(12)
    assert Message.objects.filter(chat=group).count() == 15


def test_a_group_of_one_senders_sends_marks_them_read_up_to_their_last_as_one_by_one(alice, bob, carol, group):
    """The usual group, one person's sends (a plain UPDATE marks them read, not the CASE of
    several senders): the messages before theirs are read too, as when stored one by one."""
    before = services.send_message(chat=group, sender=bob, body="before")
    group_sends = [sends.Send(chat_id=group.pk, sender=alice, body=f"m{i}", client_id=f"a-{i}") for i in range(3)]

    results = sends.store_together(group_sends)

    assert list(Message.objects.filter(chat=group).order_by("pk")) == [before, *results]
    read = dict(group.memberships.values_list("user_id", "last_read_message_id"))
    unread = dict(group.memberships.values_list("user_id", "unread_count"))
    assert read[alice.pk] == results[-1].pk
    assert unread == {alice.pk: 0, bob.pk: 3, carol.pk: 4}


def test_a_group_of_sends_brings_the_chat_back_for_a_member_who_deleted_it(alice, bob, carol, group):
    services.soft_delete_chat(chat=group, user=carol)
    group_sends = [sends.Send(chat_id=group.pk, sender=alice, body=f"back {i}", client_id=f"a-{i}") for i in range(2)]

    sends.store_together(group_sends)

    shown = dict(group.memberships.values_list("user_id", "is_hidden"))
    unread = dict(group.memberships.values_list("user_id", "unread_count"))
    assert shown == {alice.pk: False, bob.pk: False, carol.pk: False}
    assert unread == {alice.pk: 0, bob.pk: 2, carol.pk: 2}


def test_a_group_of_sends_shows_the_chat_again_to_its_sender_who_had_deleted_it(alice, group):
    services.soft_delete_chat(chat=group, user=alice)

    sends.store_together([sends.Send(chat_id=group.pk, sender=alice, body="back", client_id="a-1")])

    assert not group.memberships.get(user=alice).is_hidden


def test_a_retry_among_new_sends_is_answered_with_its_first_message_and_the_new_ones_stored_once(
    alice, bob, carol, group
):
    """The group reads the client ids already used: a retry is answered with its first
    message without rolling the group back to one savepoint per send (a client resending one
    used client id over and over must not make everyone's sends take the slow path)."""
    (first,) = sends.store_together([sends.Send(chat_id=group.pk, sender=alice, body="first", client_id="a-1")])
    group_sends = [
        sends.Send(chat_id=group.pk, sender=bob, body="new", client_id="b-1"),
        sends.Send(chat_id=group.pk, sender=alice, body="first", client_id="a-1"),
        sends.Send(chat_id=group.pk, sender=carol, body="also new", client_id="c-1"),
        sends.Send(chat_id=group.pk, sender=carol, body="also new", client_id="c-1"),  # twice in the group
    ]

    with CaptureQueriesContext(connection) as queries:
        results = sends.store_together(group_sends)

    assert not [query for query in queries.captured_queries if query["sql"].startswith("ROLLBACK")]  # no retake
    stored = list(Message.objects.filter(chat=group).order_by("pk"))
    assert [message.body for message in stored] == ["first", "new", "also new"]
    assert results == [stored[1], first, stored[2], stored[2]]
    assert dict(group.memberships.values_list("user_id", "unread_count")) == {alice.pk: 2, bob.pk: 1, carol.pk: 0}


def after_frame(client_id, body, after=None):
    return json.dumps({"type": "send", "client_id": client_id, "body": body, "after": after})


async def test_sends_naming_the_one_before_keep_their_order_when_one_of_them_is_not_stored(connect, alice, bob, group):
    """A client that sends without waiting for acks names the send before each ("after"):
    the first refused, the ones after it are not stored before it is dealt with."""
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    await room.send_to(text_data=after_frame("m-1", "one"))
    await room.send_to(text_data=after_frame("m-2", "x" * 4001, after="m-1"))  # too long: refused for good
    await room.send_to(text_data=after_frame("m-3", "three", after="m-2"))
    await room.send_to(text_data=after_frame("m-4", "four", after="m-3"))

    replies = await answers(room, 4)

    assert [replies[f"m-{n}"]["type"] for n in range(1, 5)] == ["ack", "error", "error", "error"]
    assert [replies[f"m-{n}"].get("code") for n in range(2, 5)] == ["invalid", "out_of_order", "out_of_order"]
    assert (replies["m-3"]["after"], replies["m-4"]["after"]) == ("m-2", "m-3")
    assert [m.body for m in await stored(chat=group)] == ["one"]

    # The client gives "m-2" back to its writer and sends the others again, after the last stored.
    await room.send_to(text_data=after_frame("m-3", "three", after="m-1"))
    await room.send_to(text_data=after_frame("m-4", "four", after="m-3"))
    replies = await answers(room, 2)

    messages = await stored(chat=group)
    assert [m.body for m in messages] == ["one", "three", "four"]
    assert [replies["m-3"]["message_id"], replies["m-4"]["message_id"]] == [m.pk for m in messages[1:]]
    bob_room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    await bob_room.send_to(text_data=after_frame("b-1", "bob's", after="m-1"))  # alice's client id, not his
    assert (await receive_until(bob_room, "error"))["code"] == "out_of_order"


@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_a_send_after_one_answered_busy_is_not_stored_nor_counted_and_goes_once_that_one_is(
    connect, alice, group, monkeypatch, settings
):
    settings.CHAT_RATE_LIMITS = {"send": "2/m"}
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    monkeypatch.setattr(sends, "MAX_DELIVERY_LAG_SECONDS", -1.0)  # over capacity for this one
    await room.send_to(text_data=after_frame("b-1", "first"))
    assert (await receive_until(room, "error"))["code"] == "busy"
    monkeypatch.setattr(sends, "MAX_DELIVERY_LAG_SECONDS", 1.0)
    await room.send_to(text_data=after_frame("b-2", "second", after="b-1"))
    assert (await receive_until(room, "error"))["code"] == "out_of_order"

    await room.send_to(text_data=after_frame("b-1", "first"))
    await room.send_to(text_data=after_frame("b-2", "second", after="b-1"))
    replies = await answers(room, 2)

    assert {reply["type"] for reply in replies.values()} == {"ack"}, "out of order cost a send of the rate"
    assert [m.body for m in await stored(chat=group)] == ["first", "second"]
    await room.send_to(text_data=after_frame("b-2", "second", after="not-stored"))  # a retry of a stored one
    assert (await receive_until(room, "ack"))["message_id"] == replies["b-2"]["message_id"]


@pytest.mark.parametrize("one_by_one", [False, True], ids=["together", "one_by_one"])
def test_a_group_stores_a_send_after_one_stored_earlier_in_it_and_refuses_one_after_a_refused_one(
    alice, bob, group, one_by_one
):
    sends.store_together([sends.Send(chat_id=group.pk, sender=alice, body="stored", client_id="a-0")])
    group_sends = [
        sends.Send(chat_id=group.pk, sender=alice, body="one", client_id="a-1", after="a-0"),
        sends.Send(chat_id=group.pk, sender=alice, body="two", client_id="a-2", after="a-1"),
        sends.Send(chat_id=group.pk, sender=bob, body="", client_id="b-1"),  # refused: empty
        sends.Send(chat_id=group.pk, sender=bob, body="bob", client_id="b-2", after="b-1"),
    ]
    store = sends.store_one_by_one if one_by_one else sends.store_in_bulk
    counted = sends.count_against_rate(group_sends)

    results, stored_now = store(group_sends, counted, *([] if one_by_one else [{}]))

    messages = list(Message.objects.filter(chat=group).order_by("pk"))
    assert [m.body for m in messages] == ["stored", "one", "two"]
    assert results[:2] == messages[1:]
    assert isinstance(results[3], services.OutOfOrder) and results[3].after == "b-1"
    assert stored_now == [True, True, False, False]


def test_a_client_id_taken_while_a_group_is_stored_stores_the_group_one_send_at_a_time(
    alice, bob, carol, group, monkeypatch
):
    """A retry racing its first send through another process: the group's insert fails on
    the unique client id, and its sends are stored again each in a savepoint of its own."""
    insert, raced = services.insert_in_order, []

    def taken_meanwhile(messages):
        if not raced:
            raced.append(Message.objects.create(chat=group, sender=alice, body="raced", client_id="a-1"))
        insert(messages)

    monkeypatch.setattr(services, "insert_in_order", taken_meanwhile)
    group_sends = [
        sends.Send(chat_id=group.pk, sender=alice, body="one", client_id="a-1"),
        sends.Send(chat_id=group.pk, sender=bob, body="two", client_id="b-1"),
    ]

    results = sends.store_together(group_sends)

    stored = list(Message.objects.filter(chat=group).order_by("pk"))
    assert [message.body for message in stored] == ["one", "two"]  # the raced row went with the rollback
    assert results == stored
    assert dict(group.memberships.values_list("user_id", "unread_count")) == {alice.pk: 1, bob.pk: 0, carol.pk: 2}


async def test_sends_to_several_chats_arriving_together_are_counted_unread_for_each_member_of_each(
    connect, alice, bob, carol, group
):
    pair = await database_sync_to_async(services.create_group_chat)(creator=alice, name="Pair", members=[bob])
    sockets = [
        (person, chat, (await connect(person, f"/ws/chat/{chat.pk}/"))[0])
        for chat in (group, pair)
        for person in (alice, bob, carol)
        if chat is group or person is not carol
    ]
    watchers = {chat: (await connect(bob, f"/ws/chat/{chat.pk}/"))[0] for chat in (group, pair)}  # another tab
    for _, _, room in [*sockets, *[(None, None, watcher) for watcher in watchers.values()]]:
        await look_away(room)
    for number in range(6):
        for person, chat, room in sockets:
            await room.send_to(text_data=send_frame(f"{person.username}-{chat.pk}-{number}", f"{number}"))
    await sockets[0][2].send_to(text_data=send_frame("empty", "   "))  # refused: never counted
    replies = [await answers(room, 7 if index == 0 else 6) for index, (_, _, room) in enumerate(sockets)]

    assert replies[0]["empty"]["code"] == "invalid"
    assert all(
        reply["type"] == "ack"
        for replies_of in replies
        for reply in replies_of.values()
        if reply is not replies[0]["empty"]
    )
    for chat in (group, pair):
        assert await unread_counts(chat) == await unread_counts_one_by_one(chat)
        # Each message names the one stored before it in its chat: a client notices a gap by it.
        ids = [message.pk for message in await stored(chat=chat)]
        frames = [await receive_until(watchers[chat], "chat.message") for _ in ids]
        previous = [0, *ids[:-1]]
        assert [(frame["message_id"], frame["prev_id"]) for frame in frames] == list(zip(ids, previous, strict=True))
    assert (await unread_counts(pair)).keys() == {alice.pk, bob.pk}


async def look_away(room) -> None:
    """The tab is hidden: the messages arriving on this socket are not marked read."""
    await room.send_to(text_data=json.dumps({"type": "visibility", "visible": False}))
    await room.send_to(text_data=json.dumps({"type": "ping"}))
    await receive_until(room, "pong")


async def unread_counts(chat) -> dict[int, int]:
    return await database_sync_to_async(lambda: dict(chat.memberships.values_list("user_id", "unread_count")))()


async def unread_counts_one_by_one(chat) -> dict[int, int]:
    """What each member's unread count is after the chat's messages stored one at a time:
    the messages of the others after that member's own last one."""

    def count():
        senders = list(Message.objects.filter(chat=chat).order_by("pk").values_list("sender_id", flat=True))
        counts = {}
        for user_id in chat.memberships.values_list("user_id", flat=True):
            own = [position for position, sender in enumerate(senders) if sender == user_id]
            after = own[-1] + 1 if own else 0
            counts[user_id] = sum(1 for sender in senders[after:] if sender != user_id)
        return counts

    return await database_sync_to_async(count)()


@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_past_capacity_a_send_is_answered_busy_at_once_and_its_retry_is_stored_once(
    connect, alice, bob, group, monkeypatch
):
    from chat.realtime import sends

    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    # This process delivers room messages later than it may: it takes no more sends until it catches up.
    monkeypatch.setattr(sends, "MAX_DELIVERY_LAG_SECONDS", -1.0)
    await room.send_to(text_data=send_frame("later", "when you can"))
    error = await receive_until(room, "error")
    assert (error["code"], error["client_id"], error["retry_after"]) == ("busy", "later", sends.BUSY_RETRY_AFTER)
    assert await stored(chat=group) == []

    monkeypatch.setattr(sends, "MAX_DELIVERY_LAG_SECONDS", 1.0)
    await room.send_to(text_data=send_frame("later", "when you can"))
    ack = await receive_until(room, "ack")
    assert [m.pk for m in await stored(chat=group)] == [ack["message_id"]]


def test_an_http_retry_of_a_stored_message_is_answered_at_the_rate_limit_and_costs_nothing(
    client, alice, group, settings
):

    settings.CHAT_RATE_LIMITS = {"send": "2/m"}
    client.force_login(alice)
    url = reverse("chat:send", args=[group.pk])
    htmx = {"HX-Request": "true"}
    assert client.post(url, {"body": "one", "client_id": "h-1"}, headers=htmx).status_code == 200
    assert client.post(url, {"body": "one", "client_id": "h-1"}, headers=htmx).status_code == 200  # a retry
    assert client.post(url, {"body": "two", "client_id": "h-2"}, headers=htmx).status_code == 200
    assert client.post(url, {"body": "one", "client_id": "h-1"}, headers=htmx).status_code == 200  # at the limit
    assert client.post(url, {"body": "three", "client_id": "h-3"}, headers=htmx).status_code == 429
    assert list(Message.objects.order_by("pk").values_list("client_id", flat=True)) == ["h-1", "h-2"]


async def test_sends_a_socket_pipelines_are_stored_together_and_acked_in_order(connect, alice, group, monkeypatch):
    """A client that does not wait for each ack: the socket reads on, and its sends go in
    groups, not one trip each."""
    groups = recording_trips(monkeypatch, first_trip_takes=0.2)
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    for number in range(10):
        await room.send_to(text_data=send_frame(f"p-{number}", f"pipelined {number}"))

    acks = [await receive_until(room, "ack") for _ in range(10)]

    assert [ack["client_id"] for ack in acks] == [f"p-{number}" for number in range(10)]
    messages = await stored(chat=group)
    assert [m.pk for m in messages] == [ack["message_id"] for ack in acks]
    assert [m.body for m in messages] == [f"pipelined {number}" for number in range(10)]
    assert len(groups) < 10 and sum(groups) == 10


async def test_past_its_sends_in_flight_a_socket_reads_no_more_frames_until_one_is_answered(
    connect, alice, group, monkeypatch
):
    monkeypatch.setattr(consumers, "MAX_SENDS_IN_FLIGHT", 2)
    recording_trips(monkeypatch, first_trip_takes=0.5)
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    await receive_until(room, "chat.sync")
    for number in range(3):
        await room.send_to(text_data=send_frame(f"f-{number}", f"in flight {number}"))
    await room.send_to(text_data='{"type": "ping"}')

    answers = []
    while len(answers) < 4:
        frame = json.loads(await room.receive_from(timeout=3))
        if frame["type"] in ("ack", "pong"):
            answers.append(frame.get("client_id", "pong"))

    assert answers[0] == "f-0", "the ping waited behind the third send, which waited for a slot"
    assert sorted(answers) == ["f-0", "f-1", "f-2", "pong"]


async def test_a_send_waiting_behind_a_stuck_database_is_answered_busy_within_the_wait(
    connect, alice, bob, carol, group, monkeypatch
):
    """The group on the database thread takes longer than MAX_WAIT_SECONDS (SQLite's writer
    lock held elsewhere waits up to 20 s): the send waiting behind it, and a send arriving
    meanwhile, are answered "busy" within the wait, nothing stored; the stuck one is stored
    once the database answers."""
    monkeypatch.setattr(sends, "MAX_WAIT_SECONDS", 0.3)
    recording_trips(monkeypatch, first_trip_takes=1.5)
    rooms = {person: (await connect(person, f"/ws/chat/{group.pk}/"))[0] for person in (alice, bob, carol)}
    await rooms[alice].send_to(text_data=send_frame("stuck", "stuck"))
    await asyncio.sleep(0.1)
    await rooms[bob].send_to(text_data=send_frame("behind", "behind"))
    await asyncio.sleep(0.4)
    await rooms[carol].send_to(text_data=send_frame("later", "later"))

    behind = await asyncio.wait_for(receive_until(rooms[bob], "error"), 0.8)
    later = await asyncio.wait_for(receive_until(rooms[carol], "error"), 0.5)
    ack = await receive_until(rooms[alice], "ack")

    assert [(e["code"], e["client_id"], e["retry_after"]) for e in (behind, later)] == [
        ("busy", "behind", sends.BUSY_RETRY_AFTER),
        ("busy", "later", sends.BUSY_RETRY_AFTER),
    ]
    assert [m.pk for m in await stored(chat=group)] == [ack["message_id"]]


@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_past_capacity_an_http_send_is_a_503_with_retry_after_as_socket_sends_are_busy(
    connect, async_client, alice, group, monkeypatch, caplog
):
    """HTTP sends do not get past the sockets' queue: the same capacity answers both. The
    503 is logged as a warning: expected under overload, not an error to report."""

    await connect(alice, f"/ws/chat/{group.pk}/")  # the server's loop and its room hub
    await async_client.aforce_login(alice)
    url, htmx = reverse("chat:send", args=[group.pk]), {"HX-Request": "true"}
    monkeypatch.setattr(sends, "MAX_DELIVERY_LAG_SECONDS", -1.0)  # frames leave late here

    refused = await async_client.post(url, {"body": "over HTTP", "client_id": "h-busy"}, headers=htmx)

    assert (refused.status_code, refused["Retry-After"]) == (503, str(sends.BUSY_RETRY_AFTER))
    assert "busy" in refused.content.decode()
    assert [r.levelname for r in caplog.records if r.name == "django.request"] == ["WARNING"]
    assert await stored(chat=group) == []
    monkeypatch.setattr(sends, "MAX_DELIVERY_LAG_SECONDS", 1.0)
    accepted = await async_client.post(url, {"body": "over HTTP", "client_id": "h-busy"}, headers=htmx)
    assert accepted.status_code == 200
    assert [m.client_id for m in await stored(chat=group)] == ["h-busy"]


# --- sends over HTTP, on a server: stored with the sockets' --------------------------------

CSRF_SECRET = "c" * 32  # a CSRF token as Django's cookie holds it


async def logged_in(user) -> str:
    """A session cookie of `user`'s, made before the test holds the database thread."""
    client = Client()
    await database_sync_to_async(client.force_login)(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


async def post_on_the_server(path: str, fields: dict, session: str) -> tuple[int, dict, str]:
    """POST `fields` to `path` as htmx does, through Django's ASGI handler (which serves each
    request on a thread of its own, as on a server), with the `session` cookie: the status,
    the headers and the body."""
    body = urlencode(fields).encode()
    headers = [
        (b"origin", b"https://testserver"),
        (b"cookie", f"{session}; {settings.CSRF_COOKIE_NAME}={CSRF_SECRET}".encode()),
        (b"x-csrftoken", CSRF_SECRET.encode()),
        (b"hx-request", b"true"),
        (b"content-type", b"application/x-www-form-urlencoded"),
        (b"content-length", str(len(body)).encode()),
    ]
    return await over_asgi(ASGIHandler(), "POST", path, headers, body)


@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_an_http_send_is_stored_in_one_group_with_the_socket_sends_waiting_beside_it(
    connect, alice, bob, carol, group, monkeypatch
):
    """On a server, an HTTP send waits in the sockets' queue, and is stored in their group:
    one transaction, one writer, not a transaction of its own on its request's thread
    waiting for the chat's row lock (or SQLite's writer) behind theirs."""
    groups = recording_trips(monkeypatch, first_trip_takes=0.3)
    rooms = {person: (await connect(person, f"/ws/chat/{group.pk}/"))[0] for person in (alice, bob)}
    url, session = reverse("chat:send", args=[group.pk]), await logged_in(carol)

    await rooms[alice].send_to(text_data=send_frame("first", "first"))
    await asyncio.sleep(0.1)  # during the first trip: the next two wait, and go together
    await rooms[bob].send_to(text_data=send_frame("second", "second"))
    status, _, bubble = await post_on_the_server(url, {"body": "over http", "client_id": "http-1"}, session)

    assert status == 200
    assert groups[:2] == [1, 2]
    first, second, over_http = await stored(chat=group)
    assert (second.client_id, over_http.client_id) == ("second", "http-1")
    assert f'id="message-{over_http.pk}"' in bubble and "over http" in bubble
    again = await post_on_the_server(url, {"body": "over http", "client_id": "http-1"}, session)
    assert again[0] == 200 and len(await stored(chat=group)) == 3  # a retry: the same message


@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_an_http_send_waiting_past_capacity_is_a_503_within_a_second_and_nothing_is_stored(
    connect, alice, bob, group, monkeypatch
):
    """Behind a group stuck on the database (SQLite's writer held elsewhere, a database
    restarting), an HTTP send is answered busy once it has waited MAX_WAIT_SECONDS, as a
    socket's is, not after the database's own timeout (SQLite's 20 s)."""
    monkeypatch.setattr(sends, "MAX_WAIT_SECONDS", 0.3)
    monkeypatch.setattr(views, "refusing_sends", lambda: False)  # the queue's own shedding answers
    recording_trips(monkeypatch, first_trip_takes=1.5)
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    url, session = reverse("chat:send", args=[group.pk]), await logged_in(bob)

    await room.send_to(text_data=send_frame("stuck", "stuck"))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    status, headers, _ = await post_on_the_server(url, {"body": "behind", "client_id": "http-busy"}, session)
    waited = time.monotonic() - started

    assert (status, headers["retry-after"]) == (503, str(sends.BUSY_RETRY_AFTER))
    assert waited < 1.0
    await receive_until(room, "ack")
    assert [m.client_id for m in await stored(chat=group)] == ["stuck"]
    retried = await post_on_the_server(url, {"body": "behind", "client_id": "http-busy"}, session)
    assert retried[0] == 200
    assert [m.client_id for m in await stored(chat=group)] == ["stuck", "http-busy"]


async def test_a_server_started_with_its_lifespan_stores_http_sends_in_groups_before_any_socket_opens(
    alice, group, monkeypatch
):
    groups, session = recording_trips(monkeypatch), await logged_in(alice)
    startup, answers = [{"type": "lifespan.startup"}], []

    async def receive():
        if startup:
            return startup.pop()
        await asyncio.Event().wait()

    async def send(message):
        answers.append(message["type"])

    lifespan = asyncio.get_running_loop().create_task(shutdown.Lifespan()({"type": "lifespan"}, receive, send))
    try:
        await eventually(lambda: answers == ["lifespan.startup.complete"])
        status, _, _ = await post_on_the_server(reverse("chat:send", args=[group.pk]), {"body": "hello"}, session)
    finally:
        lifespan.cancel()

    assert status == 200
    assert groups == [1]
    assert [m.body for m in await stored(chat=group)] == ["hello"]


@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_sends_the_queue_refuses_get_the_answers_of_the_http_route(connect, alice, group, settings, monkeypatch):
    """A send refused in the queue is answered as the route answers it: a bad body 400 in the
    form's error slot, past the rate 429 with Retry-After; nothing stored."""
    groups = recording_trips(monkeypatch)
    await connect(alice, f"/ws/chat/{group.pk}/")
    url, session = reverse("chat:send", args=[group.pk]), await logged_in(alice)

    empty = await post_on_the_server(url, {"body": "   ", "client_id": "blank"}, session)
    settings.CHAT_RATE_LIMITS = {"send": "1/m"}
    first = await post_on_the_server(url, {"body": "one", "client_id": "one"}, session)
    over = await post_on_the_server(url, {"body": "two", "client_id": "two"}, session)

    assert len(groups) == 3  # each went through the queue
    assert (empty[0], empty[1]["hx-retarget"]) == (400, f"#send-error-{group.pk}")
    assert "Write a message" in empty[2]
    assert first[0] == 200
    assert (over[0], int(over[1]["retry-after"]) > 0) == (429, True)
    assert [m.client_id for m in await stored(chat=group)] == ["one"]


@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_with_atomic_requests_an_http_send_is_stored_in_its_requests_transaction(
    connect, alice, group, monkeypatch
):
    """Inside the request's transaction (ATOMIC_REQUESTS) the queue would wait for the locks
    that transaction holds (SQLite's writer) and store outside it: the send is stored there."""
    groups = recording_trips(monkeypatch)
    monkeypatch.setitem(connections.settings[DEFAULT_DB_ALIAS], "ATOMIC_REQUESTS", True)
    await connect(alice, f"/ws/chat/{group.pk}/")
    session = await logged_in(alice)

    status, _, _ = await asyncio.wait_for(
        post_on_the_server(reverse("chat:send", args=[group.pk]), {"body": "atomic", "client_id": "a"}, session), 5
    )

    assert status == 200
    assert groups == []
    assert [m.body for m in await stored(chat=group)] == ["atomic"]
