"""The websocket consumers, tested over the wire with Channels' WebsocketCommunicator.

Every test runs on the in-memory layer and, when REDIS_URL is set and channels_redis is
installed, again on Redis (through the project's own Redis layer if it has one).
"""

import asyncio
import contextlib
import json
import os
import re
import threading
import uuid
from importlib import import_module

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.db import OperationalError, connection, transaction
from django.urls import reverse
from django.utils.module_loading import import_string
from django.utils.text import Truncator

from chat import selectors, services
from chat.models import Membership, RoomPresence
from chat.realtime import consumers, handshakes, presence, read_marks, shutdown
from chat.realtime.database import background_trip, changes_trip, database_trip, fan_out_trip
from chat.routing import websocket_urlpatterns

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 3


def redis_layer_available() -> bool:
    try:
        import channels_redis  # noqa: F401
    except ImportError:
        return False
    return bool(os.environ.get("REDIS_URL"))


def redis_layer_backend() -> str:
    """The project's own Redis layer if it has one (a subclass may add to channels_redis's), else channels_redis's."""
    from channels_redis.core import RedisChannelLayer

    backend = django_settings.CHANNEL_LAYERS["default"]["BACKEND"]
    return backend if issubclass(import_string(backend), RedisChannelLayer) else "channels_redis.core.RedisChannelLayer"


@pytest.fixture(
    params=[
        "memory",
        pytest.param(
            "redis",
            marks=pytest.mark.skipif(
                not redis_layer_available(), reason="set REDIS_URL (and install channels_redis) to test on Redis"
            ),
        ),
    ]
)
def channel_layer(request, settings):
    if request.param == "redis":
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": redis_layer_backend(),
                "CONFIG": {
                    "hosts": [os.environ["REDIS_URL"]],
                    "prefix": f"test-{uuid.uuid4().hex[:8]}",
                    "channel_capacity": {"*!chat-hub-*": 10_000},
                },
            }
        }
    else:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    yield request.param
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def fast_debounce(monkeypatch):
    monkeypatch.setattr(read_marks, "FLUSH_SECONDS", 0.01)
    monkeypatch.setattr(presence, "RECOUNT_DELAY_SECONDS", 0.01)
    monkeypatch.setattr(presence, "RECOUNT_INTERVAL_SECONDS", 0.01)
    # Users of earlier tests may have had the same ids: each test starts with fresh budgets.
    monkeypatch.setattr(consumers, "_frame_windows", {})


@pytest.fixture
async def connect(channel_layer):
    """Open a socket as a user; stops every socket the test opened at the end."""
    opened = []

    async def open_socket(user, path, session=None):
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
        communicator.scope["user"] = user
        if session is not None:
            communicator.scope["session"] = session
        connected, code = await communicator.connect(timeout=TIMEOUT)
        opened.append(communicator)
        return communicator, connected, code

    yield open_socket
    for communicator in opened:
        await communicator.wait(timeout=0) if communicator.future.done() else communicator.future.cancel()
    # What the sockets set going (their clean-up, events, inbox fan-outs) is done before the
    # test's database is emptied: SQLite's shared in-memory database refuses to be flushed
    # while a trip of theirs still reads it, and the next test then finds this one's users.
    if stopping := [communicator.future for communicator in opened if not communicator.future.done()]:
        await asyncio.wait(stopping, timeout=TIMEOUT)
    await shutdown.send_what_is_waiting()
    # The presence recounts their leaving asked for, then whatever trip is still on the
    # database thread (one thread, in turn: an empty trip ends after it). A trip cancelled
    # on the loop's side still runs there, and on a loaded machine it outlived the above.
    await asyncio.sleep(2 * (presence.RECOUNT_DELAY_SECONDS + presence.RECOUNT_INTERVAL_SECONDS))
    await changes_trip(lambda: None)()  # a message change of theirs, on its own thread on a database server
    await background_trip(lambda: None)()  # their presence rows' deletion and recount, the same
    await fan_out_trip(lambda: None)()  # their messages' inbox counts, the same
    await database_trip(lambda: None)()


# Frames a room socket gets without asking: its greeting, and presence counts.
UNASKED = {"chat.sync", "chat.presence"}


async def receive_until(communicator, frame_type, timeout=TIMEOUT):
    """The next frame of this type, skipping others (presence, sync...)."""
    while True:
        frame = json.loads(await communicator.receive_from(timeout=timeout))
        if frame["type"] == frame_type:
            return frame


async def gets_only_unasked_frames(communicator, timeout: float) -> bool:
    """Whether the socket gets no frame within `timeout` but its greeting and presence counts,
    which come in any order as the sockets join (at once, with `fast_debounce`)."""
    await asyncio.sleep(timeout)
    while not communicator.output_queue.empty():
        output = communicator.output_queue.get_nowait()
        if output["type"] != "websocket.send" or json.loads(output["text"])["type"] not in UNASKED:
            return False
    return True


async def presence_becomes(communicator, online):
    """Presence frames until one says `online` people: a count sent before a join may come first."""
    while (await receive_until(communicator, "chat.presence"))["online"] != online:
        pass


async def expect_close(communicator, code):
    while True:
        output = await communicator.receive_output(timeout=TIMEOUT)
        if output["type"] == "websocket.close":
            assert output["code"] == code
            return


@pytest.fixture
def group(alice, bob, carol):
    return services.create_group_chat(creator=alice, name="Team", members=[bob, carol])


@pytest.fixture
def anonymous():
    from django.contrib.auth.models import AnonymousUser

    return AnonymousUser()


async def test_anonymous_sockets_are_closed_with_4401(connect, anonymous, group):
    for path in ["/ws/chat/inbox/", f"/ws/chat/{group.pk}/"]:
        communicator, connected, _ = await connect(anonymous, path)
        assert connected
        await expect_close(communicator, consumers.CLOSE_UNAUTHENTICATED)


async def test_a_refused_socket_never_takes_a_channel_on_the_layer(connect, anonymous, make_user, group, monkeypatch):
    """Refused before Channels starts receiving for it: nothing of it waits on the layer
    (on Redis a blocking pop that its close would have to cancel), however many come."""
    layer = channel_layers["default"]
    channels_taken = []
    take_channel = layer.new_channel

    async def new_channel(prefix="specific."):
        channels_taken.append(prefix)
        return await take_channel(prefix)

    monkeypatch.setattr(layer, "new_channel", new_channel)
    outsider = await database_sync_to_async(make_user)("outsider")
    for user, path, code in [
        (anonymous, "/ws/chat/inbox/", consumers.CLOSE_UNAUTHENTICATED),
        (anonymous, f"/ws/chat/{group.pk}/", consumers.CLOSE_UNAUTHENTICATED),
        (outsider, f"/ws/chat/{group.pk}/", consumers.CLOSE_FORBIDDEN),
    ]:
        communicator, connected, _ = await connect(user, path)
        assert connected
        await expect_close(communicator, code)
    assert channels_taken == []


async def test_non_members_and_unknown_chats_are_closed_with_4403(connect, make_user, group):
    outsider = await database_sync_to_async(make_user)("outsider")
    for chat_id in [group.pk, 999_999, 10**30]:
        communicator, connected, _ = await connect(outsider, f"/ws/chat/{chat_id}/")
        assert connected
        await expect_close(communicator, consumers.CLOSE_FORBIDDEN)


async def test_member_joins_room_and_sees_presence(connect, alice, group):
    room, connected, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    assert connected
    frame = await receive_until(room, "chat.presence")
    assert frame["online"] == 1
    await room.disconnect()


async def test_a_room_greets_each_open_with_its_newest_message_and_change_cursor(connect, alice, bob, group):
    room, connected, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    assert connected
    assert await receive_until(room, "chat.sync") == {
        "type": "chat.sync",
        "chat_id": group.pk,
        "last_message_id": 0,
        "change_seq": 0,
    }
    await room.disconnect()

    first = await database_sync_to_async(services.send_message)(chat=group, sender=bob, body="one")
    await database_sync_to_async(services.edit_message)(message=first, user=bob, body="one, edited")
    newest = await database_sync_to_async(services.send_message)(chat=group, sender=bob, body="two")
    reopened, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    frame = await receive_until(reopened, "chat.sync")
    assert (frame["last_message_id"], frame["change_seq"]) == (newest.pk, 1)
    await reopened.disconnect()


def bubble_ids(html: str) -> list[int]:
    return [int(found) for found in re.findall(r'data-message-id="(\d+)"', html)]


async def test_a_room_opened_after_a_message_gets_the_messages_since_with_its_greeting(connect, alice, bob, group):
    send = database_sync_to_async(services.send_message)
    seen, missed, newest = [await send(chat=group, sender=bob, body=f"m{n}") for n in range(3)]

    reopened, _, _ = await connect(alice, f"/ws/chat/{group.pk}/?after={seen.pk}")
    greeting = await receive_until(reopened, "chat.sync")
    assert greeting["last_message_id"] == newest.pk
    assert bubble_ids(greeting["html"]) == [missed.pk, newest.pk]  # oldest first, as messages/?after= answers
    assert "m1" in greeting["html"] and "Bob" in greeting["html"]

    for path in (f"/ws/chat/{group.pk}/?after={newest.pk}", f"/ws/chat/{group.pk}/"):  # nothing missed; not asked
        room, _, _ = await connect(alice, path)
        assert "html" not in await receive_until(room, "chat.sync")


async def test_a_greeting_brings_no_more_than_a_page_nor_what_the_member_cleared(connect, alice, bob, group, settings):
    settings.CHAT_PAGE_SIZE = 2
    send = database_sync_to_async(services.send_message)
    cleared = [await send(chat=group, sender=bob, body=f"old {n}") for n in range(2)][-1]
    await database_sync_to_async(services.soft_delete_chat)(chat=group, user=alice)
    kept = [await send(chat=group, sender=bob, body=f"new {n}") for n in range(2)]

    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/?after=0")  # all: but not what she cleared
    assert bubble_ids((await receive_until(room, "chat.sync"))["html"]) == [kept[0].pk, kept[1].pk]

    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/?after=0")  # four missed, more than a page
    greeting = await receive_until(room, "chat.sync")
    assert "html" not in greeting and greeting["last_message_id"] == kept[1].pk > cleared.pk  # so the page fetches


@pytest.mark.parametrize("after", ["abc", "-1", "1.5", "²", str(2**63)])
async def test_a_room_asking_after_no_message_id_is_told_and_greeted_without_messages(connect, alice, group, after):
    room, connected, _ = await connect(alice, f"/ws/chat/{group.pk}/?after={after}")
    assert connected
    error = await receive_until(room, "error")
    assert (error["code"], error["error"]) == ("invalid", "“after” must be the id of a message.")
    assert "html" not in await receive_until(room, "chat.sync")  # and the socket stays open


async def test_a_room_whose_greeting_cannot_be_read_stays_open(connect, alice, group, monkeypatch):
    def database_restarting(chat_ids):
        raise OperationalError("the database system is shutting down")

    monkeypatch.setattr(selectors, "room_cursors_by_chat", database_restarting)
    room, connected, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    assert connected
    await room.send_to(text_data='{"type": "ping"}')
    types = []
    while not types or types[-1] != "pong":
        types.append(json.loads(await room.receive_from(timeout=TIMEOUT))["type"])
    assert "chat.sync" not in types  # the page catches up on its own after a few seconds
    await room.disconnect()


async def test_inbox_greets_with_total_unread(connect, alice, bob, group):
    await database_sync_to_async(services.send_message)(chat=group, sender=bob, body="hi")
    inbox, connected, _ = await connect(alice, "/ws/chat/inbox/")
    assert connected
    frame = await receive_until(inbox, "inbox.sync")
    assert frame["total_unread"] == 1
    await inbox.disconnect()


async def test_message_fans_out_to_the_room_and_the_inboxes_of_members_not_viewing_it(
    connect, alice, bob, carol, group
):
    rooms = [(await connect(user, f"/ws/chat/{group.pk}/"))[0] for user in (alice, bob)]
    inboxes = {user.username: (await connect(user, "/ws/chat/inbox/"))[0] for user in (alice, bob, carol)}

    message = await database_sync_to_async(services.send_message)(chat=group, sender=alice, body="<b>hello</b>")

    for room in rooms:
        frame = await receive_until(room, "chat.message")
        assert frame["message_id"] == message.pk
        assert frame["prev_id"] == 0
        assert frame["chat_id"] == group.pk
        assert "&lt;b&gt;hello&lt;/b&gt;" in frame["html"]
    # The sender's other tabs and carol (not viewing) get the new message in their lists;
    # bob, viewing the room, has it marked read and gets his new counts instead.
    sender_frame = await receive_until(inboxes["alice"], "inbox.message")
    assert (sender_frame["message_id"], sender_frame["unread"], sender_frame["total_unread"]) == (message.pk, 0, 0)
    carol_frame = await receive_until(inboxes["carol"], "inbox.message")
    assert (carol_frame["message_id"], carol_frame["unread"], carol_frame["total_unread"]) == (message.pk, 1, 1)
    bob_frame = json.loads(await inboxes["bob"].receive_from(timeout=TIMEOUT))
    if bob_frame["type"] == "inbox.sync":
        bob_frame = json.loads(await inboxes["bob"].receive_from(timeout=TIMEOUT))
    assert (bob_frame["type"], bob_frame["unread"], bob_frame["total_unread"]) == ("inbox.unread", 0, 0)
    for communicator in [*rooms, *inboxes.values()]:
        await communicator.disconnect()


async def test_prev_id_chains_consecutive_messages(connect, alice, bob, group):
    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    first = await database_sync_to_async(services.send_message)(chat=group, sender=alice, body="one")
    second = await database_sync_to_async(services.send_message)(chat=group, sender=alice, body="two")
    frames = [await receive_until(room, "chat.message") for _ in range(2)]
    assert [(f["message_id"], f["prev_id"]) for f in frames] == [(first.pk, 0), (second.pk, first.pk)]
    await room.disconnect()


async def test_presence_counts_people_not_tabs(connect, alice, bob, group):
    path = f"/ws/chat/{group.pk}/"
    alice_tab1, _, _ = await connect(alice, path)
    alice_tab2, _, _ = await connect(alice, path)
    bob_tab, _, _ = await connect(bob, path)
    await presence_becomes(bob_tab, 2)

    await alice_tab1.disconnect()
    assert (await receive_until(bob_tab, "chat.presence"))["online"] == 2
    await alice_tab2.disconnect()
    await presence_becomes(bob_tab, 1)
    await bob_tab.disconnect()


async def test_viewer_receiving_a_message_has_it_marked_read(connect, alice, bob, group):
    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    inbox, _, _ = await connect(bob, "/ws/chat/inbox/")
    await database_sync_to_async(services.send_message)(chat=group, sender=alice, body="read me")

    frame = await receive_until(inbox, "inbox.unread")
    assert (frame["unread"], frame["total_unread"]) == (0, 0)
    membership = await database_sync_to_async(Membership.objects.get)(chat=group, user=bob)
    assert membership.unread_count == 0
    await room.disconnect()
    await inbox.disconnect()


async def test_hidden_tab_does_not_mark_read(connect, alice, bob, group):
    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    await room.send_to(text_data=json.dumps({"type": "visibility", "visible": False}))
    await room.send_to(text_data=json.dumps({"type": "ping"}))
    await receive_until(room, "pong")
    await database_sync_to_async(services.send_message)(chat=group, sender=alice, body="later")
    await receive_until(room, "chat.message")
    await asyncio.sleep(0.1)
    membership = await database_sync_to_async(Membership.objects.select_related("chat").get)(chat=group, user=bob)
    assert membership.unread_count == 1

    await room.send_to(text_data=json.dumps({"type": "read", "message_id": membership.chat.last_message_id}))
    await asyncio.sleep(0.1)
    await database_sync_to_async(membership.refresh_from_db)()
    assert membership.unread_count == 0
    await room.disconnect()


async def test_removed_member_has_room_closed_and_list_refreshed(connect, alice, bob, group):
    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    inbox, _, _ = await connect(bob, "/ws/chat/inbox/")
    await database_sync_to_async(services.remove_member)(chat=group, actor=alice, user=bob)

    frame = await receive_until(room, "chat.revoked")
    assert frame["deleted"] is False
    await expect_close(room, consumers.CLOSE_FORBIDDEN)
    assert (await receive_until(inbox, "inbox.changed"))["chat_id"] == group.pk
    await inbox.disconnect()


async def test_deleting_a_group_closes_every_room(connect, alice, bob, group):
    rooms = [(await connect(user, f"/ws/chat/{group.pk}/"))[0] for user in (alice, bob)]
    await database_sync_to_async(services.delete_group)(chat=group, actor=alice)
    for room in rooms:
        assert (await receive_until(room, "chat.revoked"))["deleted"] is True
        await expect_close(room, consumers.CLOSE_FORBIDDEN)


async def test_renaming_a_group_tells_its_open_rooms_and_refreshes_the_lists(connect, alice, bob, group):
    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    inbox, _, _ = await connect(bob, "/ws/chat/inbox/")
    await database_sync_to_async(services.rename_group)(chat=group, actor=alice, name="Renamed")

    assert await receive_until(room, "chat.renamed") == {"type": "chat.renamed", "chat_id": group.pk, "name": "Renamed"}
    assert (await receive_until(inbox, "inbox.changed"))["chat_id"] == group.pk
    await inbox.disconnect()
    await room.disconnect()


async def test_new_group_appears_in_every_members_list(connect, alice, bob, carol):
    inbox, _, _ = await connect(bob, "/ws/chat/inbox/")
    chat = await database_sync_to_async(services.create_group_chat)(creator=alice, name="New", members=[bob, carol])
    assert (await receive_until(inbox, "inbox.changed"))["chat_id"] == chat.pk
    await inbox.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "malformed"),
        ("[1, 2]", "malformed"),
        ('{"no": "type"}', "malformed"),
        ('{"type": "explode"}', "unknown_type"),
        ('{"type": "read", "message_id": "12"}', "malformed"),
        ('{"type": "read", "message_id": true}', "malformed"),
        ('{"type": "ping", "pad": "' + "x" * 60_000 + '"}', "frame_too_large"),
        ('{"type": "ping", "x": ' + "[" * 3000, "malformed"),
        ("[" * 4000, "malformed"),
        ('{"type": "edit", "message_id": 1, "body": "a\\ud800b"}', "malformed"),
        ('{"type": "react", "message_id": 1, "emoji": "\\udfff"}', "malformed"),
        ('{"type": "visibility", "visible": "no"}', "malformed"),
        ('{"type": "visibility"}', "malformed"),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_stays_open(connect, alice, group, frame, code):
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    await room.send_to(text_data=frame)
    error = await receive_until(room, "error")
    assert error["code"] == code
    await room.send_to(text_data='{"type": "ping"}')
    await receive_until(room, "pong")
    await room.disconnect()


@pytest.mark.parametrize("send", ["send_text_now", "send_now"])
async def test_a_frame_to_a_socket_the_server_has_closed_meanwhile_is_dropped_quietly(send, caplog):
    """The server raises (uvicorn) or drops it (daphne): the disconnect that follows cleans up."""
    consumer = consumers.RoomConsumer()

    async def closed(message):
        raise OSError("the socket is closed")

    consumer.base_send = closed
    with caplog.at_level("DEBUG", logger="chat.realtime.consumers"):
        await getattr(consumer, send)('{"type": "pong"}')
    assert [record.levelname for record in caplog.records if "was not sent" in record.getMessage()] == ["DEBUG"]


async def test_binary_frames_get_an_error(connect, alice):
    inbox, _, _ = await connect(alice, "/ws/chat/inbox/")
    await inbox.send_to(bytes_data=b"\x00\x01")
    assert (await receive_until(inbox, "error"))["code"] == "binary_frame"
    await inbox.disconnect()


async def test_frame_floods_are_dropped_with_one_error(connect, alice, group, monkeypatch):
    monkeypatch.setattr(consumers, "FRAME_BUDGET", 3)
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    for _ in range(6):
        await room.send_to(text_data='{"type": "ping"}')
    frames = []
    while not await room.receive_nothing(timeout=0.2):
        frames.append(json.loads(await room.receive_from()))
    replies = [(frame["type"], frame.get("code")) for frame in frames if frame["type"] not in UNASKED]
    assert replies == [("pong", None)] * 3 + [("error", "rate_limited")]
    error = next(frame for frame in frames if frame["type"] == "error")
    assert 0 < error["retry_after"] <= consumers.FRAME_WINDOW_SECONDS  # when the window ends
    await room.disconnect()


async def test_a_long_message_s_live_preview_is_shortened_with_an_ellipsis_as_the_list_renders_it(
    connect, alice, bob, group
):
    inbox, _, _ = await connect(bob, "/ws/chat/inbox/")
    await database_sync_to_async(services.send_message)(chat=group, sender=alice, body="word " * 100)

    frame = await receive_until(inbox, "inbox.message")
    assert frame["preview"] == Truncator("word " * 100).chars(120)
    assert frame["preview"].endswith("…")
    await inbox.disconnect()


async def test_a_member_with_the_room_in_a_background_tab_still_gets_inbox_updates(connect, alice, bob, group):
    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    inbox, _, _ = await connect(bob, "/ws/chat/inbox/")
    await room.send_to(text_data=json.dumps({"type": "visibility", "visible": False}))
    await room.send_to(text_data='{"type": "ping"}')
    await receive_until(room, "pong")

    message = await database_sync_to_async(services.send_message)(chat=group, sender=alice, body="while away")

    frame = await receive_until(inbox, "inbox.message")
    assert (frame["message_id"], frame["unread"], frame["total_unread"]) == (message.pk, 1, 1)
    await room.disconnect()
    await inbox.disconnect()


async def test_a_removed_member_gets_no_more_messages_even_if_the_revoked_frame_is_lost(
    connect, alice, bob, group, monkeypatch
):
    async def frame_lost(self, event):
        return None

    monkeypatch.setattr(consumers.RoomConsumer, "chat_revoked", frame_lost)
    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    await receive_until(room, "chat.presence")
    await database_sync_to_async(services.remove_member)(chat=group, actor=alice, user=bob)

    await database_sync_to_async(services.send_message)(chat=group, sender=alice, body="not for bob")

    # A presence count sent before the removal may still come; no message may.
    assert await gets_only_unasked_frames(room, 0.5)
    await room.disconnect()


# Sockets end with the login they were opened with.


def session_store(session_key):
    return import_module(django_settings.SESSION_ENGINE).SessionStore(session_key)


def logged_in_session(client, user):
    """The session a browser logged in as this user holds (the client stays logged in with it)."""
    client.force_login(user)
    return session_store(client.session.session_key)


async def test_logout_closes_every_socket_of_that_session_and_stops_its_read_marks(connect, client, alice, bob, group):
    session = await database_sync_to_async(logged_in_session)(client, bob)
    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/", session=session)
    inbox, _, _ = await connect(bob, "/ws/chat/inbox/", session=session)
    other_device, _, _ = await connect(bob, "/ws/chat/inbox/", session=session_store("other"))
    await receive_until(room, "chat.presence")

    response = await database_sync_to_async(client.post)(reverse("logout"))
    assert response.status_code in {200, 302}  # a page or a redirect, as the host project's logout does

    await expect_close(room, consumers.CLOSE_UNAUTHENTICATED)
    await expect_close(inbox, consumers.CLOSE_UNAUTHENTICATED)
    await database_sync_to_async(services.send_message)(chat=group, sender=alice, body="after logout")
    assert (await receive_until(other_device, "inbox.message"))["preview"] == "after logout"
    await asyncio.sleep(0.1)  # read marks are flushed every FLUSH_SECONDS (0.01 here)
    membership = await database_sync_to_async(Membership.objects.get)(chat=group, user=bob)
    assert membership.unread_count == 1
    assert not await database_sync_to_async(RoomPresence.objects.filter(user=bob).exists)()


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("password", consumers.CLOSE_SESSION_CHANGED),
        ("deactivate", consumers.CLOSE_UNAUTHENTICATED),
        ("delete", consumers.CLOSE_UNAUTHENTICATED),
    ],
)
async def test_a_login_change_closes_every_socket_of_the_user(connect, alice, bob, group, change, code):
    rooms = [(await connect(bob, f"/ws/chat/{group.pk}/"))[0] for _ in range(2)]
    inbox, _, _ = await connect(bob, "/ws/chat/inbox/")
    alice_room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")

    def apply_change():
        if change == "password":
            bob.set_password("a-new-password")
            bob.save()
        elif change == "deactivate":
            bob.is_active = False
            bob.save()
        else:
            bob.delete()

    await database_sync_to_async(apply_change)()

    for socket in [*rooms, inbox]:
        await expect_close(socket, code)
    await presence_becomes(alice_room, 1)
    await alice_room.send_to(text_data='{"type": "ping"}')
    await receive_until(alice_room, "pong")


async def test_saving_other_fields_of_a_user_leaves_their_sockets_open(connect, bob):
    inbox, _, _ = await connect(bob, "/ws/chat/inbox/")
    await receive_until(inbox, "inbox.sync")
    bob.first_name = "Robert"
    await database_sync_to_async(bob.save)()
    await inbox.send_to(text_data='{"type": "ping"}')
    await receive_until(inbox, "pong")


# Whatever ends a socket, it leaves no presence or group behind.


async def test_a_cancelled_socket_leaves_the_room_and_its_presence(connect, alice, bob, group):
    """As when the server shuts down or kills a socket that took too long to close."""
    alice_room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    alice_inbox, _, _ = await connect(alice, "/ws/chat/inbox/")
    bob_room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    await presence_becomes(bob_room, 2)

    alice_room.future.cancel()

    await presence_becomes(bob_room, 1)
    assert not await database_sync_to_async(RoomPresence.objects.filter(user=alice).exists)()
    # No longer counted as viewing the room: her inbox gets the new message.
    message = await database_sync_to_async(services.send_message)(chat=group, sender=bob, body="still there?")
    assert (await receive_until(alice_inbox, "inbox.message"))["message_id"] == message.pk


# One user cannot flood the server.


async def test_sockets_past_the_per_user_cap_are_closed_with_4429(connect, settings, alice, bob, group):
    settings.CHAT_MAX_SOCKETS_PER_USER = 3
    sockets = [(await connect(alice, path))[0] for path in ["/ws/chat/inbox/", f"/ws/chat/{group.pk}/"] * 2]
    await expect_close(sockets[3], consumers.CLOSE_TOO_MANY_SOCKETS)
    bob_room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    await bob_room.send_to(text_data='{"type": "ping"}')
    await receive_until(bob_room, "pong")

    await sockets[0].disconnect()
    again, _, _ = await connect(alice, "/ws/chat/inbox/")
    assert (await receive_until(again, "inbox.sync"))["type"] == "inbox.sync"


async def test_a_room_socket_opens_in_one_trip_to_the_database_thread(connect, alice, group, monkeypatch):
    """Its user, membership and presence row in one trip shared with the other sockets opening
    (after a restart, asked one after another, each step waited behind every handshake that
    came meanwhile), then its greeting in a second."""
    trips = []
    run_all = handshakes._run_all
    monkeypatch.setattr(handshakes, "_run_all", lambda trip: trips.append(len(trip)) or run_all(trip))

    room, connected, _ = await connect(alice, f"/ws/chat/{group.pk}/")

    assert connected
    await receive_until(room, "chat.sync")
    assert trips == [1, 1]
    assert await database_sync_to_async(RoomPresence.objects.filter(user=alice).count)() == 1


async def test_a_room_socket_refused_at_the_cap_after_its_trip_leaves_no_presence(
    connect, settings, alice, group, monkeypatch
):
    """Two rooms of one person open together, one under the cap: both pass the trip's look
    at the count and write their presence rows; the event loop lets one in, and the other
    takes its row away as it closes."""
    settings.CHAT_MAX_SOCKETS_PER_USER = 1
    path = f"/ws/chat/{group.pk}/"
    join_many, joined = presence.join_many, []
    monkeypatch.setattr(presence, "join_many", lambda sockets: joined.append(len(sockets)) or join_many(sockets))

    opened = await asyncio.gather(connect(alice, path), connect(alice, path))

    async def close_codes() -> list:
        await asyncio.sleep(0.05)
        codes = []
        for communicator, _, _ in opened:
            outputs = [communicator.output_queue.get_nowait() for _ in range(communicator.output_queue.qsize())]
            codes += [output["code"] for output in outputs if output["type"] == "websocket.close"]
        return codes

    codes, rows = [], None
    for _ in range(100):
        codes += await close_codes()
        rows = await database_sync_to_async(RoomPresence.objects.filter(user=alice).count)()
        if codes and rows == 1:
            break
    assert joined == [2]  # both rows written in the one trip
    assert codes == [consumers.CLOSE_TOO_MANY_SOCKETS]
    assert rows == 1


async def test_a_room_socket_given_up_while_its_handshake_waits_leaves_no_presence(connect, alice, group):
    """A client that gives up while its handshake waits for the database thread (after a
    restart, behind thousands of others) is cancelled before its trip runs; the trip still
    writes its presence row, which the clean-up then removes: nobody sees them in the room
    until the row would expire (90 s). (`connect`: its teardown waits for the database
    threads, which the clean-up's last steps use.)"""
    socket = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/chat/{group.pk}/")
    socket.scope["user"] = alice
    async with sockets_thread_held():
        await socket.send_input({"type": "websocket.connect"})
        await asyncio.sleep(0.2)  # its handshake's work queued behind the trip holding the thread
        socket.future.cancel()
    await database_trip(lambda: None)()  # its handshake's trip has run: the row was written

    rows = None
    for _ in range(100):
        rows = await database_sync_to_async(RoomPresence.objects.filter(user=alice).count)()
        if rows == 0:
            break
        await asyncio.sleep(0.05)
    assert rows == 0


async def next_reply(communicator) -> str:
    """The type of the next frame that is not a greeting or a presence count (or the error's code)."""
    while (frame := json.loads(await communicator.receive_from(timeout=TIMEOUT)))["type"] in UNASKED:
        pass
    return frame.get("code") or frame["type"]


async def test_the_frame_budget_is_shared_by_a_users_sockets(connect, alice, bob, group, monkeypatch):
    monkeypatch.setattr(consumers, "FRAME_BUDGET", 4)
    tabs = [(await connect(alice, f"/ws/chat/{group.pk}/"))[0] for _ in range(3)]
    replies = []
    for tab in [tabs[0], tabs[0], tabs[1], tabs[1], tabs[2], tabs[0]]:
        await tab.send_to(text_data='{"type": "ping"}')
        replies.append(await next_reply(tab))

    assert replies == ["pong"] * 4 + ["rate_limited"] * 2
    bob_room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    await bob_room.send_to(text_data='{"type": "ping"}')
    assert await next_reply(bob_room) == "pong"


@pytest.fixture
def counts(monkeypatch):
    """The arguments of each presence count the process makes, in order."""
    asked = []
    real_online_counts = presence.online_counts

    def counted_online_counts(**kwargs):
        asked.append(kwargs)
        return real_online_counts(**kwargs)

    monkeypatch.setattr(presence, "online_counts", counted_online_counts)
    return asked


async def test_rooms_due_while_a_count_goes_out_are_counted_in_one_query(
    connect, alice, bob, carol, group, counts, monkeypatch
):
    other = await database_sync_to_async(services.create_group_chat)(creator=bob, name="Other", members=[carol])
    both_joined = asyncio.Event()
    held = []
    real_presence_changed = presence.events.presence_changed

    async def first_held_until_both_joined(**kwargs):
        if not held:
            held.append(kwargs)
            await asyncio.wait_for(both_joined.wait(), TIMEOUT)
        await real_presence_changed(**kwargs)

    monkeypatch.setattr(presence.events, "presence_changed", first_held_until_both_joined)
    alice_room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    while not held:
        await asyncio.sleep(0.01)
    bob_room, _, _ = await connect(bob, f"/ws/chat/{other.pk}/")
    carol_room, _, _ = await connect(carol, f"/ws/chat/{group.pk}/")
    await receive_until(bob_room, "chat.sync")
    await receive_until(carol_room, "chat.sync")  # their joins asked for their rooms' counts
    await asyncio.sleep(2 * presence.RECOUNT_DELAY_SECONDS)  # both counts are due once the first is out
    both_joined.set()

    await presence_becomes(carol_room, 2)
    await presence_becomes(bob_room, 1)
    assert counts[:2] == [{"chat_ids": [group.pk]}, {"chat_ids": sorted([group.pk, other.pk])}]


@contextlib.asynccontextmanager
async def chat_row_locked(chat_id: int):
    """The chat's row locked by another connection meanwhile, as a send to the chat on another
    server process holds it (`services.locked_chats`)."""
    locked, release = threading.Event(), threading.Event()

    def hold_the_chats_row():
        try:
            with transaction.atomic():
                services.locked_chats().get(pk=chat_id)
                locked.set()
                release.wait(5)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_chats_row)
    holder.start()
    try:
        assert await asyncio.to_thread(locked.wait, 5)
        yield
    finally:
        release.set()
        await asyncio.to_thread(holder.join)


@pytest.mark.skipif(connection.vendor == "sqlite", reason="PostgreSQL's row locks")
async def test_a_room_socket_opens_while_a_send_holds_its_chats_row(connect, alice, group):
    """Its presence row points at the chat, and is inserted without waiting for the lock that
    sends, read marks and changes take. Under a lock that made it wait, the presence rows of
    sockets opening in several rooms at once (a restart) deadlocked with batches of read
    marks, each holding a room's row the other wanted."""
    async with chat_row_locked(group.pk):
        room, connected, _ = await asyncio.wait_for(connect(alice, f"/ws/chat/{group.pk}/"), 2)
        assert connected
        await receive_until(room, "chat.sync", timeout=2)


@pytest.mark.skipif(connection.vendor == "sqlite", reason="on SQLite read marks share the sockets' database thread")
async def test_read_marks_waiting_for_their_chats_lock_hold_up_no_handshake_or_send(connect, alice, bob, carol, group):
    """A batch of read marks locks its chat's row, as a send to the chat does on every server
    process. Waiting for that lock, it waits on a thread of its own: a socket opens and a send
    is acked meanwhile, and the mark is written once the lock goes."""
    message = await database_sync_to_async(services.send_message)(chat=group, sender=bob, body="read me")
    other = await database_sync_to_async(services.create_group_chat)(creator=carol, name="Other", members=[bob])
    alice_room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    await receive_until(alice_room, "chat.sync")

    async with chat_row_locked(group.pk):
        await alice_room.send_to(text_data=json.dumps({"type": "read", "message_id": message.pk}))
        await asyncio.sleep(0.2)  # the batch is waiting for the lock
        carol_other, connected, _ = await asyncio.wait_for(connect(carol, f"/ws/chat/{other.pk}/"), 2)
        await asyncio.wait_for(receive_until(carol_other, "chat.sync"), 2)
        await carol_other.send_to(text_data=json.dumps({"type": "send", "client_id": "meanwhile", "body": "here"}))
        sent = await asyncio.wait_for(receive_until(carol_other, "ack"), 2)

    assert connected and sent["client_id"] == "meanwhile"
    read_up_to = database_sync_to_async(lambda: Membership.objects.get(chat=group, user=alice).last_read_message_id)
    for _ in range(50):
        if await read_up_to() == message.pk:
            break
        await asyncio.sleep(0.1)
    assert await read_up_to() == message.pk


@contextlib.asynccontextmanager
async def sockets_thread_held():
    """The sockets' database thread busy meanwhile, as with a long trip of handshakes."""
    busy, release = threading.Event(), threading.Event()

    def hold():
        busy.set()
        release.wait(5)

    trip = asyncio.ensure_future(database_trip(hold)())
    try:
        assert await asyncio.to_thread(busy.wait, 5)
        yield
    finally:
        release.set()
        await trip


def send_from_a_request_thread(**kwargs):
    try:
        return services.send_message(**kwargs)
    finally:
        connection.close()


@pytest.mark.skipif(connection.vendor == "sqlite", reason="on SQLite fan-outs share the sockets' database thread")
async def test_a_messages_inbox_fan_out_does_not_wait_for_the_sockets_database_thread(connect, alice, carol, group):
    """A message's inbox fan-out counts unread messages for its whole room, a few queries, on
    a thread of its own: it does not wait behind the handshakes and sends queued on the
    sockets' thread, nor do they wait behind it (after a restart under load, fan-outs took
    most of that thread's time while thousands of sockets waited to open)."""
    inbox, _, _ = await connect(carol, "/ws/chat/inbox/")
    await receive_until(inbox, "inbox.sync")
    async with sockets_thread_held():
        body = "sent while the sockets' thread is busy"
        message = await asyncio.to_thread(send_from_a_request_thread, chat=group, sender=alice, body=body)
        frame = await receive_until(inbox, "inbox.message", timeout=3)
    assert (frame["message_id"], frame["unread"], frame["total_unread"]) == (message.pk, 1, 1)
    await inbox.disconnect()


async def counts_settle(counts: list, quiet: float = 0.3) -> None:
    while True:
        seen = len(counts)
        await asyncio.sleep(quiet)
        if len(counts) == seen:
            return


async def test_presence_is_counted_once_per_change_not_once_per_socket(connect, alice, bob, carol, group, counts):
    sockets = [(await connect(user, f"/ws/chat/{group.pk}/"))[0] for user in [alice, bob] * 4]
    for socket in sockets:
        await presence_becomes(socket, 2)
    await counts_settle(counts)  # a slow machine may still be recounting the first burst
    counts.clear()

    sockets.append((await connect(carol, f"/ws/chat/{group.pk}/"))[0])

    for socket in sockets:
        await presence_becomes(socket, 3)
    assert counts == [{"chat_ids": [group.pk]}]
