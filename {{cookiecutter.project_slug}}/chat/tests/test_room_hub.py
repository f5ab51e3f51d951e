"""A process fans a room's events out once: its hub, not each socket, is in the room group."""

import asyncio
import json
import time

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.urls import reverse

from chat import events, metrics, services
from chat.models import Membership, Message
from chat.realtime import consumers, loop
from chat.realtime import hub as hub_module
from chat.realtime.hub import CLOSE_LAYER_LOST, RoomHub, UserHub
from chat.routing import websocket_urlpatterns
from chat.tests import test_consumers
from chat.tests.test_consumers import expect_close, gets_only_unasked_frames, logged_in_session, receive_until
from chat.tests.test_socket_send import send_frame

# The socket fixtures of test_consumers: each test on the in-memory layer and on Redis, with
# presence counted and read marks written without their production delays.
channel_layer = test_consumers.channel_layer
connect = test_consumers.connect
fast_debounce = test_consumers.fast_debounce

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def group(alice, bob, carol):
    return services.create_group_chat(creator=alice, name="Team", members=[bob, carol])


@pytest.fixture
def other_group(alice, bob):
    return services.create_group_chat(creator=alice, name="Other", members=[bob])


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


@pytest.mark.parametrize("sent_over", ["http", "socket", "typing"])
async def test_a_room_event_from_here_does_not_overtake_a_revocation_the_hub_is_still_handing_over(
    connect, alice, bob, carol, group, monkeypatch, sent_over
):
    """Another process removed bob: its revocation reached this process's hub, which is busy
    handing it over. A message stored here meanwhile, or alice typing, never reaches bob's
    socket: sent over HTTP it waits behind the revocation in the hub's channel; from a
    socket, this process's hub hands it over at once (carol has it while the hub is still
    busy), but the socket's database trip found bob no longer a member."""
    sender, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    watcher, _, _ = await connect(carol, f"/ws/chat/{group.pk}/")
    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    await receive_until(room, "chat.presence")
    deliver, parked, release = RoomHub.deliver, asyncio.Event(), asyncio.Event()

    async def slow_revocation(self, event, **how):
        if event["type"] == "chat.revoked":
            parked.set()
            await release.wait()
        await deliver(self, event, **how)

    monkeypatch.setattr(RoomHub, "deliver", slow_revocation)
    await database_sync_to_async(Membership.objects.filter(chat=group, user=bob).delete)()
    revoked = {"type": "chat.revoked", "chat_id": group.pk, "user_ids": [bob.pk], "deleted": False}
    await get_channel_layer().group_send(events.room_group(group.pk), revoked)  # as the other process does
    await asyncio.wait_for(parked.wait(), 3)

    if sent_over == "http":
        await database_sync_to_async(services.send_message)(chat=group, sender=alice, body="not for bob")
    elif sent_over == "socket":
        await sender.send_to(text_data=send_frame("not-for-bob", "not for bob"))
        assert (await receive_until(watcher, "chat.message"))["html"]  # the shortcut was taken
    else:
        await sender.send_to(text_data='{"type": "typing"}')
        assert (await receive_until(watcher, "chat.typing"))["user_id"] == alice.pk  # the shortcut was taken

    assert await gets_only_unasked_frames(room, 0.3)
    release.set()
    frames = []
    while (output := await room.receive_output(timeout=3))["type"] != "websocket.close":
        frames.append(json.loads(output["text"])["type"])
    assert "chat.revoked" in frames and not {"chat.message", "chat.typing"} & set(frames)


class RoomSendsHeldBack:
    """The layer's room group sends wait for `released` (Redis slow to answer), the first
    `failing` of them then fail (Redis restarting); every other call goes straight through."""

    def __init__(self, layer, *, failing: int = 0):
        self.group_send, self.failing = layer.group_send, failing
        self.released = asyncio.Event()

    async def __call__(self, group: str, event: dict) -> None:
        if group.startswith("chat.room."):
            await self.released.wait()
            if self.failing:
                self.failing -= 1
                raise ConnectionError("Redis is restarting")
        await self.group_send(group, event)


async def layer_event(layer, channel: str, event_type: str) -> dict:
    """The next event of this type on a channel of the layer, skipping others (presence)."""
    while (event := await asyncio.wait_for(layer.receive(channel), 3))["type"] != event_type:
        pass
    return event


async def room_of_two_processes(connect, alice, bob, group) -> tuple[str, object, object]:
    """A channel in the room's group standing for another process's hub, and two sockets in
    the room here: Alice's, to send with, and Bob's."""
    layer = get_channel_layer()
    other_process = await layer.new_channel()
    await layer.group_add(events.room_group(group.pk), other_process)
    sender, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    await receive_until(room, "chat.presence")
    return other_process, sender, room


@pytest.mark.parametrize("sockets_here", ["up-to-the-bound", "past-the-bound"])
async def test_a_message_sent_over_a_socket_reaches_the_room_s_sockets_here_without_waiting_for_the_layer(
    connect, alice, bob, group, monkeypatch, sockets_here
):
    """This process's hub hands it to its sockets at once; the other processes get it through
    the layer, and the hub skips its own copy. Past MAX_SOCKETS_CHECKED sockets here, the
    send asks nobody's membership but the senders', and the message comes here through the
    layer too, as a message sent over HTTP does. Either way the sockets here get it once."""
    if sockets_here == "past-the-bound":
        monkeypatch.setattr("chat.realtime.hub.MAX_SOCKETS_CHECKED", 1)
    layer = get_channel_layer()
    other_process, sender, room = await room_of_two_processes(connect, alice, bob, group)
    held_back = RoomSendsHeldBack(layer)
    monkeypatch.setattr(layer, "group_send", held_back)

    await sender.send_to(text_data=send_frame("straight-1", "straight here"))
    ack = await receive_until(sender, "ack")

    if sockets_here == "up-to-the-bound":
        assert (await receive_until(room, "chat.message"))["message_id"] == ack["message_id"]
        held_back.released.set()
    else:
        assert await gets_only_unasked_frames(room, 0.3), "not handed over before the layer brought it"
        held_back.released.set()
        assert (await receive_until(room, "chat.message"))["message_id"] == ack["message_id"]
    assert (await layer_event(layer, other_process, "chat.message"))["message_id"] == ack["message_id"]
    assert await gets_only_unasked_frames(room, 0.5), "the hub's own copy from the layer is not handed over again"


async def test_a_message_whose_layer_send_is_retried_reaches_the_sockets_here_once(
    connect, alice, bob, group, monkeypatch
):
    monkeypatch.setattr(loop, "SEND_RETRY_PAUSES", (0.05, 0.05))
    layer = get_channel_layer()
    other_process, sender, room = await room_of_two_processes(connect, alice, bob, group)
    held_back = RoomSendsHeldBack(layer, failing=1)
    held_back.released.set()
    monkeypatch.setattr(layer, "group_send", held_back)

    await sender.send_to(text_data=send_frame("retried-1", "once here"))
    ack = await receive_until(sender, "ack")

    assert (await receive_until(room, "chat.message"))["message_id"] == ack["message_id"]
    assert (await layer_event(layer, other_process, "chat.message"))["message_id"] == ack["message_id"]
    assert await gets_only_unasked_frames(room, 0.5), "the retry went to the layer, not to the sockets here again"


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


def hub_readers() -> list[asyncio.Task]:
    return [task for task in asyncio.all_tasks() if task.get_coro().__qualname__ == "ProcessHub.read"]


async def test_once_every_socket_has_left_no_hub_reads_on(connect, alice, bob, group):
    """An idle process waits on no receive (on Redis, a connection blocked for nothing), and
    an event loop that closes has no reader left to cancel."""
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    inbox, _, _ = await connect(bob, "/ws/chat/inbox/")
    assert len(hub_readers()) == 2  # the room hub's and the user hub's

    await room.disconnect()
    await inbox.disconnect()
    assert hub_readers() == []

    again, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    message = await database_sync_to_async(services.send_message)(chat=group, sender=bob, body="back again")
    assert (await receive_until(again, "chat.message"))["message_id"] == message.pk


@pytest.mark.parametrize("ending", ["logout", "password"])
async def test_a_room_socket_idle_after_its_frames_still_gets_the_next_one_and_its_close(
    connect, client, alice, bob, group, ending
):
    """A room socket writes only while it has frames queued: once they are out it holds no
    writer task, and the next frame or close must start one."""
    session = await database_sync_to_async(logged_in_session)(client, bob)
    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/", session=session)
    await receive_until(room, "chat.presence")
    await asyncio.sleep(0.2)  # idle: every frame so far written

    message = await database_sync_to_async(services.send_message)(chat=group, sender=alice, body="after a pause")
    assert (await receive_until(room, "chat.message"))["message_id"] == message.pk
    await asyncio.sleep(0.2)

    if ending == "logout":
        await database_sync_to_async(client.post)(reverse("logout"))
        await expect_close(room, consumers.CLOSE_UNAUTHENTICATED)
    else:
        bob.set_password("a-new-password")
        await database_sync_to_async(bob.save)()
        await expect_close(room, consumers.CLOSE_SESSION_CHANGED)


@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_a_person_s_sockets_group_holds_one_channel_per_process_whatever_their_sockets(
    connect, channel_layer, bob, group, other_group
):
    layer = get_channel_layer()
    paths = [f"/ws/chat/{group.pk}/", f"/ws/chat/{group.pk}/", f"/ws/chat/{other_group.pk}/", "/ws/chat/inbox/"]
    sockets = [(await connect(bob, path))[0] for path in paths]

    assert len(layer.groups[events.sockets_group(bob.pk)]) == 1

    for socket in sockets:
        await socket.disconnect()
    assert not layer.groups.get(events.sockets_group(bob.pk))


@pytest.mark.parametrize("deleted", [False, True], ids=["removed", "group-deleted"])
async def test_a_revocation_lost_on_the_room_s_path_still_closes_the_room_through_the_person_s_sockets(
    connect, alice, bob, group, monkeypatch, deleted
):
    deliver = RoomHub.deliver

    async def revocations_lost(self, event, **how):
        if event.get("type") != "chat.revoked":
            await deliver(self, event, **how)

    monkeypatch.setattr(RoomHub, "deliver", revocations_lost)
    chat_id = group.pk  # a deleted group's instance has none afterwards
    room, _, _ = await connect(bob, f"/ws/chat/{chat_id}/")
    await receive_until(room, "chat.presence")

    if deleted:
        await database_sync_to_async(services.delete_group)(chat=group, actor=alice)
    else:
        await database_sync_to_async(services.remove_member)(chat=group, actor=alice, user=bob)

    frame = await receive_until(room, "chat.revoked")
    assert (frame["chat_id"], frame["deleted"]) == (chat_id, deleted)
    await expect_close(room, consumers.CLOSE_FORBIDDEN)


async def test_losing_one_room_leaves_the_person_s_other_rooms_open(connect, alice, bob, group, other_group):
    leaving, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    staying, _, _ = await connect(bob, f"/ws/chat/{other_group.pk}/")
    await receive_until(staying, "chat.presence")

    await database_sync_to_async(services.remove_member)(chat=group, actor=alice, user=bob)
    await expect_close(leaving, consumers.CLOSE_FORBIDDEN)

    message = await database_sync_to_async(services.send_message)(chat=other_group, sender=alice, body="still here")
    assert (await receive_until(staying, "chat.message"))["message_id"] == message.pk
    await staying.send_to(text_data='{"type": "ping"}')
    await receive_until(staying, "pong")


@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_the_sockets_group_copy_of_a_revocation_is_ignored_by_a_previous_version_s_room_sockets(
    connect, channel_layer, alice, bob, group
):
    """During a rolling deploy the previous version's room sockets, each in its person's
    sockets group, close on a revocation that names their person or a deleted chat, whatever
    the chat: the copy sent there names nobody and no deletion."""
    layer = get_channel_layer()
    previous_version_socket = await layer.new_channel()
    await layer.group_add(events.sockets_group(bob.pk), previous_version_socket)
    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    await receive_until(room, "chat.presence")

    await database_sync_to_async(services.delete_group)(chat=group, actor=alice)

    event = await asyncio.wait_for(layer.receive(previous_version_socket), 3)
    assert (event["type"], event["user_ids"], event["deleted"]) == ("chat.revoked", [], False)
    assert (event["user_id"], event["chat_deleted"]) == (bob.pk, True)


@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_people_joining_the_hub_do_not_wait_for_each_others_groups(channel_layer, alice, bob, monkeypatch):
    """After a restart thousands of people reconnect at once: one whose group join is slow
    (a Redis round trip) holds up nobody else's socket."""
    layer = get_channel_layer()
    add = layer.group_add
    alice_joining, alice_may_join = asyncio.Event(), asyncio.Event()

    async def slow_for_alice(group, channel):
        if group == events.sockets_group(alice.pk):
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
async def test_a_process_is_in_the_inboxes_group_once_while_it_has_inbox_sockets(
    connect, channel_layer, alice, bob, carol, group
):
    """In a busy room every reader's read mark is an inbox update: a process with only room
    sockets takes none, and one with inbox sockets takes each batch once, whoever it is for."""
    layer = get_channel_layer()
    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    assert not layer.groups.get(events.INBOXES_GROUP)

    inboxes = [(await connect(user, "/ws/chat/inbox/"))[0] for user in (alice, carol, carol)]
    for inbox in inboxes:
        await receive_until(inbox, "inbox.sync")  # greeted once in the group
    assert len(layer.groups[events.INBOXES_GROUP]) == 1
    await database_sync_to_async(services.send_message)(chat=group, sender=alice, body="for carol's inboxes")
    for inbox in inboxes[1:]:
        assert (await receive_until(inbox, "inbox.message"))["user_id"] == carol.pk

    for inbox in inboxes:
        await inbox.disconnect()
    assert not layer.groups.get(events.INBOXES_GROUP)
    assert len(layer.groups[events.sockets_group(bob.pk)]) == 1  # the room socket still hears a logout
    await room.disconnect()


async def test_sockets_a_hub_lets_go_when_its_layer_failed_close_with_a_code_every_server_sends(
    connect, alice, bob, group
):
    """An application may close with 1000 or 3000-4999 only on daphne (its websocket library
    refuses the rest): a 1011 never reached the client, whose socket stayed open, deaf."""
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    inbox, _, _ = await connect(bob, "/ws/chat/inbox/")
    await receive_until(inbox, "inbox.sync")

    await RoomHub.for_running_loop().reset()
    await UserHub.for_running_loop().reset()

    await expect_close(room, CLOSE_LAYER_LOST)
    await expect_close(inbox, CLOSE_LAYER_LOST)
    assert CLOSE_LAYER_LOST == 1000 or 3000 <= CLOSE_LAYER_LOST <= 4999


async def test_frames_that_reach_sockets_before_their_accept_wait_for_it(connect, alice, bob, group, monkeypatch):
    """A room socket is in its room's hub, and an inbox socket in its person's, a moment
    before the accept: what a hub hands them meanwhile is sent after the accept, and both
    stay in their hubs (the server refuses anything but the accept first)."""
    message = await database_sync_to_async(services.send_message)(chat=group, sender=bob, body="just then")
    room_frame = events.room_message_event(message=message, prev_id=0)
    inbox_frame = {"type": "inbox.changed", "chat_id": group.pk, "user_id": alice.pk}

    def delivering_at_once(patch, hub_class, event):
        joined = hub_class.join

        async def join(hub, consumer):
            await joined(hub, consumer)
            await hub.deliver(event)

        patch.setattr(hub_class, "join", join)

    with monkeypatch.context() as patch:
        delivering_at_once(patch, RoomHub, room_frame)
        room, connected, _ = await connect(alice, f"/ws/chat/{group.pk}/")
        assert connected  # the accept came first
        assert (await receive_until(room, "chat.message"))["message_id"] == message.pk

    with monkeypatch.context() as patch:
        delivering_at_once(patch, UserHub, inbox_frame)
        inbox, connected, _ = await connect(alice, "/ws/chat/inbox/")
        assert connected
        assert await receive_until(inbox, "inbox.changed") == inbox_frame

    later = await database_sync_to_async(services.send_message)(chat=group, sender=bob, body="and later")
    assert (await receive_until(room, "chat.message"))["message_id"] == later.pk  # still in the room's hub
    await database_sync_to_async(services.rename_group)(chat=group, actor=alice, name="Renamed")
    assert (await receive_until(inbox, "inbox.changed"))["chat_id"] == group.pk  # still in her hub


@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_an_inbox_socket_whose_inboxes_group_join_fails_is_left_nowhere(
    connect, channel_layer, alice, monkeypatch
):
    layer = get_channel_layer()
    add = layer.group_add

    async def inboxes_group_down(group, channel):
        if group == events.INBOXES_GROUP:
            raise ConnectionError("Redis is restarting")
        await add(group, channel)

    monkeypatch.setattr(layer, "group_add", inboxes_group_down)
    socket = WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/ws/chat/inbox/")
    socket.scope["user"] = alice
    with pytest.raises(ConnectionError):
        await socket.connect(timeout=test_consumers.TIMEOUT)
    hub = UserHub.for_running_loop()
    assert alice.pk not in hub.sockets  # not under her key either: nothing stays for a socket that is gone
    assert not layer.groups.get(events.sockets_group(alice.pk))


def message_from_another_process(group, message_id: int, prev_id: int) -> dict:
    """A message's room event as another server process sends it through the layer."""
    frame = {"type": "chat.message", "chat_id": group.pk, "message_id": message_id, "prev_id": prev_id}
    return {
        "type": "chat.message",
        "chat_id": group.pk,
        "message_id": message_id,
        "prev_id": prev_id,
        "sender_id": 0,
        "text": json.dumps({**frame, "html": f"<p>{message_id}</p>"}),
        "queued_at": time.time(),
    }


async def message_ids(room, count: int) -> list[int]:
    return [(await receive_until(room, "chat.message"))["message_id"] for _ in range(count)]


async def messages_and_reactions(room, count: int) -> list[tuple[str, int]]:
    """The type and message id of the room's next `count` message and reaction frames."""
    frames = []
    while len(frames) < count:
        frame = json.loads(await room.receive_from(timeout=3))
        if frame["type"] in ("chat.message", "chat.reacted"):
            frames.append((frame["type"], frame["message_id"]))
    return frames


async def test_a_message_that_comes_before_the_one_it_follows_waits_for_it_here(connect, alice, group):
    """Messages from two processes: the later one comes first. The sockets here get them in
    their order, so no page sees a gap to wait for and fetch."""
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    layer = get_channel_layer()
    await layer.group_send(events.room_group(group.pk), message_from_another_process(group, 101, 100))
    assert await message_ids(room, 1) == [101]

    await layer.group_send(events.room_group(group.pk), message_from_another_process(group, 103, 102))
    await layer.group_send(events.room_group(group.pk), message_from_another_process(group, 104, 103))
    await asyncio.sleep(0.2)
    await layer.group_send(events.room_group(group.pk), message_from_another_process(group, 102, 101))

    assert await message_ids(room, 3) == [102, 103, 104]


async def test_a_message_whose_previous_one_never_comes_goes_after_a_bounded_wait(connect, alice, group, monkeypatch):
    monkeypatch.setattr(hub_module, "HOLD_FOR_PREVIOUS_SECONDS", 0.3)
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    layer = get_channel_layer()
    await layer.group_send(events.room_group(group.pk), message_from_another_process(group, 201, 200))
    assert await message_ids(room, 1) == [201]
    started = asyncio.get_running_loop().time()

    # 202 was lost on the way: 204 and 203 wait for it, then go in their order; the page fetches the gap.
    await layer.group_send(events.room_group(group.pk), message_from_another_process(group, 204, 203))
    await layer.group_send(events.room_group(group.pk), message_from_another_process(group, 203, 202))

    assert await message_ids(room, 2) == [203, 204]
    assert asyncio.get_running_loop().time() - started >= 0.3
    await layer.group_send(events.room_group(group.pk), message_from_another_process(group, 205, 204))
    assert await message_ids(room, 1) == [205]  # after them, without waiting


async def test_messages_whose_events_came_too_late_are_read_here_and_handed_in_order(
    connect, alice, bob, group, monkeypatch
):
    """Another process stored two messages whose events the layer is slow to bring (or
    lost), then a third whose event came: once the third has waited long enough, the hub
    reads the two from the database and hands all three in their order. The pages see no
    gap, so none of them fetches the same messages over HTTP."""
    # Long enough that "went at once" below cannot be a busy machine's slow frame.
    monkeypatch.setattr(hub_module, "HOLD_FOR_PREVIOUS_SECONDS", 1.0)
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    first, slow, lost, third = [
        await database_sync_to_async(Message.objects.create)(chat=group, sender=bob, body=body)
        for body in ("first", "slow on the way", "lost on the way", "third")
    ]
    layer = get_channel_layer()
    await layer.group_send(events.room_group(group.pk), message_from_another_process(group, first.pk, 0))
    assert await message_ids(room, 1) == [first.pk]
    read_before = metrics.totals[metrics.LATE_MESSAGES_READ]

    await layer.group_send(events.room_group(group.pk), message_from_another_process(group, third.pk, lost.pk))
    frames = [await receive_until(room, "chat.message") for _ in range(3)]

    assert [(frame["message_id"], frame["prev_id"]) for frame in frames] == [
        (slow.pk, first.pk),
        (lost.pk, slow.pk),
        (third.pk, lost.pk),
    ]
    assert "slow on the way" in frames[0]["html"] and "lost on the way" in frames[1]["html"]
    assert metrics.totals[metrics.LATE_MESSAGES_READ] - read_before == 2
    # The slow one's own event comes at last: its sockets have it, so it goes no further;
    # the next message chains on the three and goes at once.
    await layer.group_send(events.room_group(group.pk), message_from_another_process(group, slow.pk, first.pk))
    await layer.group_send(events.room_group(group.pk), message_from_another_process(group, third.pk + 1, third.pk))
    started = asyncio.get_running_loop().time()
    assert await message_ids(room, 1) == [third.pk + 1]
    assert asyncio.get_running_loop().time() - started < 1.0


async def test_only_the_gaps_between_waiting_messages_are_read_however_many_wait_between(
    connect, alice, bob, group, monkeypatch
):
    """Two gaps, with more messages waiting between them than one read takes: the hub reads
    the gaps alone and hands everything in order (read with the waiting messages, the read
    was full before the second gap, and every page of the room fetched it)."""
    monkeypatch.setattr(hub_module, "HOLD_FOR_PREVIOUS_SECONDS", 0.3)
    monkeypatch.setattr(events, "MAX_LATE_MESSAGES", 5)  # fewer than wait between the gaps
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    ids = [
        (await database_sync_to_async(Message.objects.create)(chat=group, sender=bob, body=f"m{i}")).pk
        for i in range(14)
    ]
    layer = get_channel_layer()
    await layer.group_send(events.room_group(group.pk), message_from_another_process(group, ids[0], 0))
    assert await message_ids(room, 1) == [ids[0]]
    read_before = metrics.totals[metrics.LATE_MESSAGES_READ]

    lost = {1, 2, 11, 12}  # the layer brings the others, each naming the one before it
    for i in range(len(ids) - 1, 0, -1):
        if i not in lost:
            event = message_from_another_process(group, ids[i], ids[i - 1])
            await layer.group_send(events.room_group(group.pk), event)
    frames = [await receive_until(room, "chat.message") for _ in range(len(ids) - 1)]

    assert [(frame["message_id"], frame["prev_id"]) for frame in frames] == list(zip(ids[1:], ids, strict=False))
    assert metrics.totals[metrics.LATE_MESSAGES_READ] - read_before == len(lost)


def test_a_late_read_names_each_messages_previous_one_in_its_chat_waiting_or_read(alice, bob, group):
    """Messages of another chat between this one's do not break the chain, and a message
    read after a waiting one names that one."""
    elsewhere = services.create_group_chat(creator=bob, name="Elsewhere", members=[alice])
    ids = []
    for i in range(6):
        ids.append(Message.objects.create(chat=group, sender=bob, body=f"m{i}").pk)
        Message.objects.create(chat=elsewhere, sender=bob, body=f"other {i}")
    ask = (group.pk, ids[0], ids[4], (ids[2], ids[5]))  # 2 and 5 wait at the hub; 5 follows 4

    events_read = events.late_message_events([ask])[ask]

    assert [(event["message_id"], event["prev_id"]) for event in events_read] == [
        (ids[1], ids[0]),
        (ids[3], ids[2]),
        (ids[4], ids[3]),
    ]


async def test_a_change_coming_while_late_messages_are_read_goes_after_them(connect, alice, bob, group, monkeypatch):
    """A reaction to a message whose wait ran out, arriving while the hub reads the one
    before it from the database, still reaches the pages after its message (a page ignores
    a change to a message it does not show)."""
    monkeypatch.setattr(hub_module, "HOLD_FOR_PREVIOUS_SECONDS", 0.3)
    read_late = events.late_message_events

    def slow_read(asks):
        time.sleep(0.5)  # a busy database
        return read_late(asks)

    monkeypatch.setattr(events, "late_message_events", slow_read)
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    first, lost, last = [
        await database_sync_to_async(Message.objects.create)(chat=group, sender=bob, body=body)
        for body in ("first", "lost on the way", "last")
    ]
    layer = get_channel_layer()
    await layer.group_send(events.room_group(group.pk), message_from_another_process(group, first.pk, 0))
    assert await message_ids(room, 1) == [first.pk]

    await layer.group_send(events.room_group(group.pk), message_from_another_process(group, last.pk, lost.pk))
    await asyncio.sleep(0.5)  # its wait is over, the read under way
    reacted = {"type": "chat.reacted", "chat_id": group.pk, "message_id": last.pk}
    await layer.group_send(events.room_group(group.pk), {**reacted, "text": json.dumps(reacted)})
    frames = await messages_and_reactions(room, 3)

    assert frames == [("chat.message", lost.pk), ("chat.message", last.pk), ("chat.reacted", last.pk)]


@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_a_waiting_message_s_changes_wait_with_it_and_its_wait_is_not_counted_as_lag(
    connect, alice, group, monkeypatch
):
    """A reaction to a message still waiting here would reach pages that do not show it yet,
    which ignore it: it goes right after its message. And waiting for another process's
    message is not this process falling behind: no send is refused "busy" for it."""
    monkeypatch.setattr(hub_module, "HOLD_FOR_PREVIOUS_SECONDS", 0.3)
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    layer = get_channel_layer()
    await layer.group_send(events.room_group(group.pk), message_from_another_process(group, 301, 300))
    assert await message_ids(room, 1) == [301]

    reacted = {"type": "chat.reacted", "chat_id": group.pk, "message_id": 303}
    await layer.group_send(events.room_group(group.pk), message_from_another_process(group, 303, 302))
    await layer.group_send(events.room_group(group.pk), {**reacted, "text": json.dumps(reacted)})
    frames = await messages_and_reactions(room, 2)

    assert frames == [("chat.message", 303), ("chat.reacted", 303)]
    assert RoomHub.for_running_loop().lag() < 0.2  # it waited 0.3 s, for the other process
