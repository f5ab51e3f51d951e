"""Many room sockets ending at once, as when their server process stops: each leaves its
presence, whatever ends it, and the room's count follows."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from chat import services
from chat.models import Chat, RoomPresence
from chat.realtime import presence
from chat.tests import test_consumers
from chat.tests.test_consumers import TIMEOUT, presence_becomes

# The socket fixtures of test_consumers: each test on the in-memory layer and on Redis.
channel_layer = test_consumers.channel_layer
connect = test_consumers.connect
group = test_consumers.group
fast_debounce = test_consumers.fast_debounce

pytestmark = pytest.mark.django_db(transaction=True)


async def rows_of(user) -> list[str]:
    return await database_sync_to_async(
        lambda: list(RoomPresence.objects.filter(user=user).values_list("channel_name", flat=True))
    )()


async def test_sockets_ending_together_all_leave_and_are_counted_once(connect, alice, bob, carol, group):
    watcher, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    tabs = [(await connect(user, f"/ws/chat/{group.pk}/"))[0] for user in [bob, carol] * 6]
    await presence_becomes(watcher, 3)
    assert len(await rows_of(bob)) == 6

    for tab in tabs:  # cancelled, not closed: as a stopping server ends them
        tab.future.cancel()
    await asyncio.gather(*(tab.wait(timeout=TIMEOUT) for tab in tabs), return_exceptions=True)

    await presence_becomes(watcher, 1)
    assert await rows_of(bob) == [] and await rows_of(carol) == []
    assert len(await rows_of(alice)) == 1


async def test_more_sockets_leaving_than_one_statement_takes_all_leave(connect, alice, bob, group, monkeypatch):
    monkeypatch.setattr(presence, "LEAVE_BATCH", 2)
    watcher, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    tabs = [(await connect(bob, f"/ws/chat/{group.pk}/"))[0] for _ in range(5)]
    await presence_becomes(watcher, 2)

    await asyncio.gather(*(tab.disconnect() for tab in tabs))

    await presence_becomes(watcher, 1)
    assert await rows_of(bob) == []


def test_sockets_joining_together_join_though_one_of_their_chats_was_deleted_meanwhile(group, alice, bob):
    """Their presence rows go in one INSERT, which a row pointing at a chat deleted since its
    socket was let in would fail: the other sockets of the batch join all the same."""
    gone = services.create_group_chat(creator=alice, name="Soon gone", members=[bob])
    Chat.objects.filter(pk=gone.pk).delete()
    presence.join_many([("kept", group.pk, alice.pk), ("gone", gone.pk, alice.pk), ("also kept", group.pk, bob.pk)])
    assert sorted(RoomPresence.objects.values_list("channel_name", flat=True)) == ["also kept", "kept"]
