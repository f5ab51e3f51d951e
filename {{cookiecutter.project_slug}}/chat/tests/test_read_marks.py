"""Read marks a server process holds reach the database, also when the process is stopping."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from chat import services
from chat.models import Membership
from chat.realtime import read_marks

pytestmark = pytest.mark.django_db(transaction=True)


async def stop_background_tasks() -> None:
    """What a stopping server's event loop does last: cancel every task still running, and wait."""
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def bob_membership(chat) -> Membership:
    return Membership.objects.get(chat=chat, user__username="bob")


async def test_marks_held_when_the_server_stops_are_written_before_it_exits(group_chat, alice):
    message = await database_sync_to_async(services.send_message)(chat=group_chat, sender=alice, body="hi")
    bob = await database_sync_to_async(bob_membership)(group_chat)
    assert bob.unread_count == 1

    read_marks.mark(chat_id=group_chat.pk, user_id=bob.user_id, up_to_id=message.pk)
    await asyncio.sleep(0)  # the writer starts waiting out its interval, as on a server that runs on
    await stop_background_tasks()  # well within FLUSH_SECONDS: the periodic write has not run

    bob = await database_sync_to_async(bob_membership)(group_chat)
    assert (bob.last_read_message_id, bob.unread_count) == (message.pk, 0)


async def test_marks_are_written_in_one_batch_per_flush(group_chat, alice, monkeypatch):
    monkeypatch.setattr(read_marks, "FLUSH_SECONDS", 0.01)
    first = await database_sync_to_async(services.send_message)(chat=group_chat, sender=alice, body="one")
    second = await database_sync_to_async(services.send_message)(chat=group_chat, sender=alice, body="two")
    bob = await database_sync_to_async(bob_membership)(group_chat)

    read_marks.mark(chat_id=group_chat.pk, user_id=bob.user_id, up_to_id=second.pk)
    read_marks.mark(chat_id=group_chat.pk, user_id=bob.user_id, up_to_id=first.pk)  # an older one arrives late
    for _ in range(100):
        bob = await database_sync_to_async(bob_membership)(group_chat)
        if bob.last_read_message_id == second.pk:
            break
        await asyncio.sleep(0.02)
    assert (bob.last_read_message_id, bob.unread_count) == (second.pk, 0)
