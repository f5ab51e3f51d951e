"""Read marks a server process holds reach the database, also when the process is stopping,
and never deadlock with a send to their chat."""

import asyncio
import threading
import time

import pytest
from channels.db import database_sync_to_async
from django.db import connection, transaction
from django.db.models import F

from chat import services
from chat.models import Chat, Membership
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


@pytest.mark.skipif(connection.vendor == "sqlite", reason="SQLite has one writer: nothing to deadlock")
def test_a_batch_of_read_marks_and_a_send_to_the_chat_wait_for_each_other_without_deadlock(group_chat, alice, carol):
    """A send locks its chat's row, then updates memberships (the sender's read mark, the
    others' unread counts). A batch of read marks that locked a membership first, while the
    send held another, would wait for the send while the send waited for it."""
    message = services.send_message(chat=group_chat, sender=carol, body="read me")
    alice_membership = Membership.objects.get(chat=group_chat, user=alice)
    bob = bob_membership(group_chat)
    send_holds_the_chat, marks_started = threading.Event(), threading.Event()
    errors = []

    def send_to_the_chat():
        try:
            with transaction.atomic():
                Chat.objects.select_for_update().get(pk=group_chat.pk)
                Membership.objects.filter(pk=bob.pk).update(unread_count=F("unread_count") + 1)
                send_holds_the_chat.set()
                marks_started.wait(5)
                time.sleep(0.3)  # the batch is waiting by now
                Membership.objects.filter(pk=alice_membership.pk).update(unread_count=F("unread_count") + 1)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    def mark_both_read():
        try:
            assert send_holds_the_chat.wait(5)
            marks_started.set()
            marks = {(group_chat.pk, alice.pk): message.pk, (group_chat.pk, bob.user_id): message.pk}
            services.mark_read_many(marks=marks)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send_to_the_chat), threading.Thread(target=mark_both_read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert errors == []
    read = dict(Membership.objects.filter(chat=group_chat).values_list("user_id", "last_read_message_id"))
    assert (read[alice.pk], read[bob.user_id]) == (message.pk, message.pk)
