"""Message changes over the room socket: the `edit`, `delete` and `react` frames, their
acks and error frames, and the change frames every open room (and inbox) gets.

Runs on the in-memory layer and, with REDIS_URL, on Redis (the `connect` fixture of
test_consumers).
"""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.db import connection

from chat import services
from chat.models import Message, Reaction
from chat.realtime import consumers
from chat.tests import test_consumers
from chat.tests.database_faults import table_missing
from chat.tests.test_consumers import expect_close, gets_only_unasked_frames, receive_until

channel_layer = test_consumers.channel_layer
connect = test_consumers.connect
fast_debounce = test_consumers.fast_debounce

pytestmark = pytest.mark.django_db(transaction=True)
THUMBS = "👍"


@pytest.fixture
def group(alice, bob, carol):
    return services.create_group_chat(creator=alice, name="Team", members=[bob, carol])


@pytest.fixture
def bobs_message(group, bob):
    return services.send_message(chat=group, sender=bob, body="first words")


def frame(**fields) -> str:
    return json.dumps(fields)


async def stored(message) -> Message:
    return await database_sync_to_async(Message.objects.get)(pk=message.pk)


async def test_an_edit_frame_is_acked_and_every_room_gets_the_new_bubble(connect, group, bob, carol, bobs_message):
    bob_room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    carol_room, _, _ = await connect(carol, f"/ws/chat/{group.pk}/")

    await bob_room.send_to(text_data=frame(type="edit", message_id=bobs_message.pk, body="<i>better</i>"))

    ack = await receive_until(bob_room, "ack")
    assert ack == {"type": "ack", "action": "edit", "message_id": bobs_message.pk, "change_seq": 1}
    edited = await receive_until(carol_room, "chat.edited")
    assert (edited["message_id"], edited["change_seq"], edited["chat_id"]) == (bobs_message.pk, 1, group.pk)
    assert "&lt;i&gt;better&lt;/i&gt;" in edited["html"] and "bubble-edited" in edited["html"]
    assert (await stored(bobs_message)).body == "<i>better</i>"


async def test_reactions_from_two_people_reach_the_room_with_counts(connect, group, alice, bob, carol, bobs_message):
    alice_room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    carol_room, _, _ = await connect(carol, f"/ws/chat/{group.pk}/")
    bob_room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")  # only watches

    await alice_room.send_to(text_data=frame(type="react", message_id=bobs_message.pk, emoji=THUMBS))
    await receive_until(alice_room, "ack")
    await carol_room.send_to(text_data=frame(type="react", message_id=bobs_message.pk, emoji=THUMBS))
    await receive_until(carol_room, "ack")

    frames = [await receive_until(bob_room, "chat.reacted") for _ in range(2)]
    assert [f["change_seq"] for f in frames] == [1, 2]
    assert f'data-reactor-ids="{alice.pk} {carol.pk}"' in frames[1]["html"]
    assert "Alice, Carol" in frames[1]["html"]


async def test_a_reaction_sent_again_with_its_intent_changes_nothing_more(connect, group, alice, bob, bobs_message):
    """A retry whose ack was lost, or a second tab: with "on" the reaction ends as meant, and
    what is already so is acked without a change or a frame."""
    alice_room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    bob_room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    acks, frames = [], []
    for on, changes in [(True, True), (True, False), (False, True), (False, False)]:
        await alice_room.send_to(text_data=frame(type="react", message_id=bobs_message.pk, emoji=THUMBS, on=on))
        acks.append((await receive_until(alice_room, "ack"))["change_seq"])
        if changes:
            frames.append(await receive_until(bob_room, "chat.reacted"))
    assert acks == [1, 1, 2, 2]
    assert [f["change_seq"] for f in frames] == [1, 2]
    assert await gets_only_unasked_frames(bob_room, 0.3)
    assert not await database_sync_to_async(Reaction.objects.exists)()


async def test_a_change_meeting_a_database_error_that_waiting_does_not_mend_is_failed_not_busy(
    connect, group, alice, bobs_message, caplog
):
    """A missing table is the server's fault: "failed", logged as an error, not a "busy"
    that the page would try again for ever."""
    alice_room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    await receive_until(alice_room, "chat.sync")
    async with table_missing(Reaction):
        await alice_room.send_to(text_data=frame(type="react", message_id=bobs_message.pk, emoji=THUMBS))
        error = await receive_until(alice_room, "error")
    assert (error["code"], error["action"], error["message_id"]) == ("failed", "react", bobs_message.pk)
    assert "retry_after" not in error
    [record] = [record for record in caplog.records if record.name == "chat.realtime.consumers"]
    assert (record.levelname, record.exc_info is not None) == ("ERROR", True)


@pytest.mark.skipif(connection.vendor == "sqlite", reason="on SQLite changes share the sockets' database thread")
async def test_a_reaction_waiting_for_its_chats_lock_holds_up_no_send_of_the_process(
    connect, group, alice, bob, bobs_message
):
    """Every send and change of a chat takes its row's lock, on every server process. A
    reaction waiting for it (another process's sends hold it) waits on a thread of its own:
    a send to another chat from this process is stored and acked meanwhile."""
    other = await database_sync_to_async(services.create_group_chat)(creator=alice, name="Other", members=[bob])
    alice_room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    alice_other, _, _ = await connect(alice, f"/ws/chat/{other.pk}/")
    await receive_until(alice_other, "chat.sync")

    async with test_consumers.chat_row_locked(group.pk):
        await alice_room.send_to(text_data=frame(type="react", message_id=bobs_message.pk, emoji=THUMBS))
        await asyncio.sleep(0.2)  # the reaction is waiting for the lock
        await alice_other.send_to(text_data=frame(type="send", client_id="meanwhile", body="still here"))
        sent = await asyncio.wait_for(receive_until(alice_other, "ack"), 2)
    reacted = await receive_until(alice_room, "ack")

    assert sent["client_id"] == "meanwhile"
    assert (reacted["action"], reacted["message_id"]) == ("react", bobs_message.pk)
    assert await database_sync_to_async(lambda: list(bobs_message.reactions.values_list("emoji", flat=True)))() == [
        THUMBS
    ]


async def test_a_delete_frame_blanks_the_message_for_the_room(connect, group, alice, bob, bobs_message):
    alice_room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    bob_room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")

    await bob_room.send_to(text_data=frame(type="delete", message_id=bobs_message.pk))

    assert (await receive_until(bob_room, "ack"))["action"] == "delete"
    deleted = await receive_until(alice_room, "chat.deleted")
    assert "This message was deleted." in deleted["html"] and "first words" not in deleted["html"]
    assert (await stored(bobs_message)).body == ""


@pytest.mark.parametrize(
    ("who", "fields", "code"),
    [
        ("carol", {"type": "edit", "body": "not mine"}, "forbidden"),
        ("carol", {"type": "delete"}, "forbidden"),
        ("alice", {"type": "edit", "body": "admin, not mine"}, "forbidden"),
        ("bob", {"type": "edit", "body": ""}, "invalid"),
        ("bob", {"type": "edit", "body": None}, "malformed"),
        ("carol", {"type": "react", "emoji": "🦄"}, "invalid"),
        ("carol", {"type": "react"}, "malformed"),
        ("carol", {"type": "react", "emoji": ["👍"]}, "malformed"),
        ("carol", {"type": "react", "emoji": "👍", "on": "yes"}, "malformed"),
    ],
)
async def test_refused_changes_get_error_frames_and_change_nothing(
    connect, group, bobs_message, who, fields, code, request
):
    room, _, _ = await connect(request.getfixturevalue(who), f"/ws/chat/{group.pk}/")

    await room.send_to(text_data=frame(message_id=bobs_message.pk, **fields))

    error = await receive_until(room, "error")
    assert (error["code"], error["action"], error["message_id"]) == (code, fields["type"], bobs_message.pk)
    assert (await stored(bobs_message)).change_seq == 0


@pytest.mark.parametrize("message_id", [0, -1, "7", True, None])
async def test_a_change_needs_an_integer_message_id(connect, group, bob, message_id):
    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    await room.send_to(text_data=frame(type="delete", message_id=message_id))
    assert (await receive_until(room, "error"))["code"] == "malformed"


async def test_another_chats_message_is_not_found(connect, group, alice, bob, carol):
    elsewhere = await database_sync_to_async(services.create_group_chat)(creator=bob, name="Other", members=[carol])
    theirs = await database_sync_to_async(services.send_message)(chat=elsewhere, sender=bob, body="not here")
    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")

    await room.send_to(text_data=frame(type="edit", message_id=theirs.pk, body="moved"))

    error = await receive_until(room, "error")
    assert (error["code"], error["message_id"]) == ("not_found", theirs.pk)
    assert (await stored(theirs)).body == "not here"


async def test_a_message_before_the_members_cleared_history_is_not_found(connect, group, carol, bobs_message):
    """As on the routes: what a member deleted for themselves ("delete chat") is gone for them."""
    await database_sync_to_async(services.soft_delete_chat)(chat=group, user=carol)
    room, _, _ = await connect(carol, f"/ws/chat/{group.pk}/")

    await room.send_to(text_data=frame(type="react", message_id=bobs_message.pk, emoji=THUMBS))

    error = await receive_until(room, "error")
    assert (error["code"], error["message_id"]) == ("not_found", bobs_message.pk)
    assert not await database_sync_to_async(Reaction.objects.exists)()


async def test_the_edit_window_is_enforced_on_the_socket(connect, group, bob, bobs_message, settings):
    settings.CHAT_EDIT_WINDOW_SECONDS = 1
    await database_sync_to_async(
        lambda: Message.objects.filter(pk=bobs_message.pk).update(created_at=bobs_message.created_at.replace(year=2000))
    )()
    room, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    await room.send_to(text_data=frame(type="edit", message_id=bobs_message.pk, body="late"))
    error = await receive_until(room, "error")
    assert error["code"] == "forbidden" and "1 second" in error["error"]


async def test_change_frames_share_the_routes_rate_limits(connect, group, alice, bobs_message, settings):
    settings.CHAT_RATE_LIMITS = {"react": "1/m"}
    room, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    await room.send_to(text_data=frame(type="react", message_id=bobs_message.pk, emoji=THUMBS))
    await receive_until(room, "ack")
    await room.send_to(text_data=frame(type="react", message_id=bobs_message.pk, emoji=THUMBS))
    error = await receive_until(room, "error")
    assert error["code"] == "rate_limited" and error["retry_after"] > 0


async def test_a_member_removed_meanwhile_is_refused_and_closed(connect, group, alice, carol, bobs_message):
    room, _, _ = await connect(carol, f"/ws/chat/{group.pk}/")
    await database_sync_to_async(lambda: group.memberships.filter(user=carol).delete())()
    await room.send_to(text_data=frame(type="react", message_id=bobs_message.pk, emoji=THUMBS))
    assert (await receive_until(room, "error"))["code"] == "forbidden"
    await expect_close(room, consumers.CLOSE_FORBIDDEN)


async def test_editing_the_last_message_refreshes_every_inbox(connect, group, alice, bob, bobs_message):
    inbox, _, _ = await connect(alice, "/ws/chat/inbox/")
    await receive_until(inbox, "inbox.sync")
    await database_sync_to_async(services.edit_message)(message=bobs_message, user=bob, body="new preview")
    assert (await receive_until(inbox, "inbox.changed"))["chat_id"] == group.pk


async def test_deleting_an_unread_message_sends_the_new_counts(connect, group, alice, bob, bobs_message):
    inbox, _, _ = await connect(alice, "/ws/chat/inbox/")
    assert (await receive_until(inbox, "inbox.sync"))["total_unread"] == 1
    await database_sync_to_async(services.delete_message)(message=bobs_message, actor=bob)
    update = await receive_until(inbox, "inbox.unread")
    assert (update["chat_id"], update["unread"], update["total_unread"]) == (group.pk, 0, 0)
