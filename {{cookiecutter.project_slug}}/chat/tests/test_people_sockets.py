"""Mute and block over the sockets: the blocked person's open room obeys at once, and the
person's other tabs hear their own mutes and blocks.

Runs on the in-memory layer and, with REDIS_URL, on Redis (the `connect` fixture of
test_consumers).
"""

import json

import pytest
from channels.db import database_sync_to_async

from chat import selectors, services
from chat.models import Message
from chat.tests import test_consumers
from chat.tests.test_consumers import receive_until

channel_layer = test_consumers.channel_layer
connect = test_consumers.connect
fast_debounce = test_consumers.fast_debounce

pytestmark = pytest.mark.django_db(transaction=True)


def send_frame(client_id, body):
    return json.dumps({"type": "send", "client_id": client_id, "body": body})


async def test_an_open_room_of_a_person_just_blocked_gets_a_blocked_error_and_stays_open(
    connect, alice, bob, direct_chat
):
    bob_room, connected, _ = await connect(bob, f"/ws/chat/{direct_chat.pk}/")
    assert connected
    await database_sync_to_async(services.block_user)(blocker=alice, blocked=bob)

    await bob_room.send_to(text_data=send_frame("c-1", "are you there?"))

    error = await receive_until(bob_room, "error")
    assert (error["code"], error["client_id"]) == ("blocked", "c-1")
    assert error["error"] == "You can’t send messages to this person."
    assert not await database_sync_to_async(Message.objects.exists)()
    await bob_room.send_to(text_data=json.dumps({"type": "ping"}))
    assert await receive_until(bob_room, "pong") == {"type": "pong"}


async def test_after_unblocking_the_same_socket_sends_again(connect, alice, bob, direct_chat):
    await database_sync_to_async(services.block_user)(blocker=alice, blocked=bob)
    bob_room, _, _ = await connect(bob, f"/ws/chat/{direct_chat.pk}/")
    await bob_room.send_to(text_data=send_frame("c-1", "hello?"))
    assert (await receive_until(bob_room, "error"))["code"] == "blocked"

    await database_sync_to_async(services.unblock_user)(blocker=alice, blocked=bob)
    await bob_room.send_to(text_data=send_frame("c-2", "hello!"))

    assert (await receive_until(bob_room, "ack"))["client_id"] == "c-2"


async def test_a_blocked_persons_group_messages_still_reach_the_blocker(connect, alice, bob, group_chat):
    await database_sync_to_async(services.block_user)(blocker=alice, blocked=bob)
    alice_room, _, _ = await connect(alice, f"/ws/chat/{group_chat.pk}/")
    bob_room, _, _ = await connect(bob, f"/ws/chat/{group_chat.pk}/")

    await bob_room.send_to(text_data=send_frame("g-1", "to everyone"))

    assert (await receive_until(bob_room, "ack"))["client_id"] == "g-1"
    frame = await receive_until(alice_room, "chat.message")  # collapsed by the blocker's page
    assert frame["sender_id"] == bob.pk


async def test_blocking_and_unblocking_tell_the_blockers_tabs_only(connect, alice, bob, direct_chat):
    alice_inbox, _, _ = await connect(alice, "/ws/chat/inbox/")
    bob_inbox, _, _ = await connect(bob, "/ws/chat/inbox/")

    await database_sync_to_async(services.block_user)(blocker=alice, blocked=bob)
    await database_sync_to_async(services.unblock_user)(blocker=alice, blocked=bob)

    blocked = await receive_until(alice_inbox, "inbox.blocked")
    assert blocked == {"type": "inbox.blocked", "user_id": alice.pk, "person_id": bob.pk, "blocked": True}
    assert (await receive_until(alice_inbox, "inbox.blocked"))["blocked"] is False
    assert (await receive_until(bob_inbox, "inbox.sync"))["type"] == "inbox.sync"
    assert await bob_inbox.receive_nothing(timeout=0.3)


async def test_muting_tells_the_members_tabs_the_total_without_the_muted_chat(connect, alice, bob, group_chat):
    await database_sync_to_async(services.send_message)(chat=group_chat, sender=bob, body="hi")
    inbox, _, _ = await connect(alice, "/ws/chat/inbox/")
    assert (await receive_until(inbox, "inbox.sync"))["total_unread"] == 1

    await database_sync_to_async(services.set_chat_muted)(chat=group_chat, user=alice, muted=True)

    frame = await receive_until(inbox, "inbox.muted")
    assert frame == {
        "type": "inbox.muted",
        "user_id": alice.pk,
        "chat_id": group_chat.pk,
        "muted": True,
        "total_unread": 0,
    }


async def test_a_message_in_a_muted_chat_updates_its_row_but_not_the_total(connect, alice, bob, group_chat):
    await database_sync_to_async(services.set_chat_muted)(chat=group_chat, user=alice, muted=True)
    inbox, _, _ = await connect(alice, "/ws/chat/inbox/")

    await database_sync_to_async(services.send_message)(chat=group_chat, sender=bob, body="quiet please")

    frame = await receive_until(inbox, "inbox.message")
    assert (frame["chat_id"], frame["unread"], frame["total_unread"]) == (group_chat.pk, 1, 0)
    assert await database_sync_to_async(selectors.total_unread)(user=alice) == 0
