"""A process fans a room's events out once: its hub, not each socket, is in the room group."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from chat import events, services
from chat.routing import websocket_urlpatterns
from chat.tests import test_consumers
from chat.tests.test_consumers import receive_until

# The socket fixtures of test_consumers: each test on the in-memory layer and on Redis.
channel_layer = test_consumers.channel_layer
connect = test_consumers.connect

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def group(alice, bob, carol):
    return services.create_group_chat(creator=alice, name="Team", members=[bob, carol])


@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_the_room_group_holds_one_channel_per_process_whatever_the_sockets(
    connect, channel_layer, alice, bob, carol, group
):
    layer = get_channel_layer()
    sockets = [(await connect(user, f"/ws/chat/{group.pk}/"))[0] for user in (alice, bob, carol, alice)]
    assert len(layer.groups[events.room_group(group.pk)]) == 1

    message = await database_sync_to_async(services.send_message)(chat=group, sender=bob, body="to all four")
    for socket in sockets:
        assert (await receive_until(socket, "chat.message"))["message_id"] == message.pk

    for socket in sockets:
        await socket.disconnect()
    assert not layer.groups.get(events.room_group(group.pk))


async def test_a_socket_that_leaves_gets_nothing_more_and_the_others_still_do(connect, alice, bob, group):
    staying, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    leaving, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    await receive_until(leaving, "chat.presence")
    await leaving.disconnect()

    message = await database_sync_to_async(services.send_message)(chat=group, sender=alice, body="after bob left")

    assert (await receive_until(staying, "chat.message"))["message_id"] == message.pk


class StalledNetwork(WebsocketCommunicator):
    """A client whose network takes a few frames and then nothing until it reads: the
    server's sends to it wait, as on a full TCP buffer."""

    @property
    def output_queue(self):
        if getattr(self, "_stalled_queue", None) is None:
            self._stalled_queue = asyncio.Queue(maxsize=5)
        return self._stalled_queue


async def test_a_socket_that_stops_reading_is_let_go_and_nobody_else_waits_for_it(
    connect, alice, bob, carol, group, monkeypatch
):
    from chat.realtime import consumers, writer

    monkeypatch.setattr(writer, "MAX_QUEUED_FRAMES", 20)
    monkeypatch.setattr(consumers, "MAX_QUEUED_FRAMES", 20)
    stalled = StalledNetwork(URLRouter(websocket_urlpatterns), f"/ws/chat/{group.pk}/")
    stalled.scope["user"] = carol
    assert (await stalled.connect(timeout=3))[0]
    reader, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")

    sent = []
    for number in range(40):
        message = await database_sync_to_async(services.send_message)(chat=group, sender=alice, body=f"m{number}")
        sent.append(message.pk)
    received = [(await receive_until(reader, "chat.message"))["message_id"] for _ in sent]

    assert received == sent  # Bob got every frame, in order, though Carol's socket is stuck
    closed = None
    while closed is None:  # her network comes back: what is still on its way, then the close
        output = await stalled.receive_output(timeout=3)
        closed = output.get("code") if output["type"] == "websocket.close" else None
    assert closed == consumers.CLOSE_TOO_SLOW
    await stalled.wait(timeout=3)


@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_people_joining_the_hub_do_not_wait_for_each_others_groups(channel_layer, alice, bob, monkeypatch):
    """After a restart thousands of people reconnect at once: one whose group join is slow
    (a Redis round trip) holds up nobody else's socket."""
    layer = get_channel_layer()
    add = layer.group_add
    alice_joining, alice_may_join = asyncio.Event(), asyncio.Event()

    async def slow_for_alice(group, channel):
        if group == events.user_group(alice.pk):
            alice_joining.set()
            await alice_may_join.wait()
        await add(group, channel)

    monkeypatch.setattr(layer, "group_add", slow_for_alice)
    sockets = []
    for user in (alice, bob):
        socket = WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/ws/chat/inbox/")
        socket.scope["user"] = user
        sockets.append(socket)
    alices_connect = asyncio.ensure_future(sockets[0].connect(timeout=test_consumers.TIMEOUT))
    try:
        await asyncio.wait_for(alice_joining.wait(), test_consumers.TIMEOUT)
        connected, _ = await sockets[1].connect(timeout=test_consumers.TIMEOUT)
        assert connected
        assert (await receive_until(sockets[1], "inbox.sync"))["total_unread"] == 0
        assert not alices_connect.done()
    finally:
        alice_may_join.set()
    assert (await alices_connect)[0]
    assert (await receive_until(sockets[0], "inbox.sync"))["total_unread"] == 0
    for socket in sockets:
        await socket.disconnect()


@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_a_persons_sockets_group_holds_one_channel_per_process_whatever_their_sockets(
    connect, channel_layer, alice, group
):
    """Room sockets take no group of their own either: after a restart their thousands of
    joins (and at shutdown their leaves) would each be a Redis round trip."""
    layer = get_channel_layer()
    sockets = [
        (await connect(alice, path))[0]
        for path in (f"/ws/chat/{group.pk}/", f"/ws/chat/{group.pk}/", "/ws/chat/inbox/")
    ]
    assert len(layer.groups[events.sockets_group(alice.pk)]) == 1

    for socket in sockets:
        await socket.disconnect()
    assert not layer.groups.get(events.sockets_group(alice.pk))
