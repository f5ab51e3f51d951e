"""The inbox mailbox of `chat.realtime.mailbox`: what a busy room's inbox updates become."""

import asyncio
import logging

import pytest

from chat.events import INBOXES_GROUP
from chat.realtime import mailbox
from chat.realtime.mailbox import InboxMailbox

INTERVAL = 0.2


@pytest.fixture(autouse=True)
def short_interval(monkeypatch):
    monkeypatch.setattr(mailbox, "INBOX_UPDATE_INTERVAL", INTERVAL)


class RecordingLayer:
    def __init__(self):
        self.group_sends: list[tuple[str, dict]] = []
        self.sent: list[tuple[str, dict, float]] = []  # each update of each batch

    async def group_send(self, group: str, event: dict) -> None:
        self.group_sends.append((group, event))
        assert event["type"] == "inbox.batch"
        now = asyncio.get_running_loop().time()
        self.sent.extend((group, update, now) for update in event["events"])


def new_message(user_id: int, chat_id: int, message_id: int, unread: int, total: int) -> dict:
    return {
        "type": "inbox.message",
        "user_id": user_id,
        "chat_id": chat_id,
        "message_id": message_id,
        "preview": f"message {message_id}",
        "unread": unread,
        "total_unread": total,
    }


def read(user_id: int, chat_id: int, unread: int, total: int) -> dict:
    return {"type": "inbox.unread", "user_id": user_id, "chat_id": chat_id, "unread": unread, "total_unread": total}


async def test_an_update_to_a_quiet_chat_is_sent_before_post_returns():
    layer = RecordingLayer()
    await InboxMailbox.for_running_loop().post(layer, [new_message(7, 1, 10, unread=1, total=1)])
    assert [(group, event["message_id"]) for group, event, _ in layer.sent] == [(INBOXES_GROUP, 10)]


async def test_the_updates_of_a_rooms_members_go_as_one_group_send():
    layer = RecordingLayer()
    members = range(100, 200)
    await InboxMailbox.for_running_loop().post(layer, [new_message(m, 1, 10, unread=1, total=1) for m in members])
    assert len(layer.group_sends) == 1
    assert [event["user_id"] for _, event, _ in layer.sent] == list(members)


async def wait_for_sends(layer: RecordingLayer, count: int) -> None:
    for _ in range(100):
        if len(layer.sent) >= count:
            return
        await asyncio.sleep(INTERVAL / 10)


async def test_a_busy_chat_updates_each_inbox_once_an_interval_with_the_latest_counts():
    layer, mailbox = RecordingLayer(), InboxMailbox.for_running_loop()
    # Before the first post, not when the layer saw it: the mailbox counts the interval from
    # its own clock reading, which a busy machine may take a few milliseconds before the send.
    first_posted = asyncio.get_running_loop().time()
    await mailbox.post(layer, [new_message(7, 1, 10, unread=1, total=1)])
    await mailbox.post(layer, [new_message(7, 1, 11, unread=2, total=2)])  # waits out the interval
    await mailbox.post(layer, [read(7, 1, unread=0, total=0)])  # merges into message 11's update
    await mailbox.post(layer, [new_message(7, 2, 12, unread=1, total=1)])  # another chat: due at once
    assert [event["message_id"] for _, event, _ in layer.sent] == [10, 12]

    await wait_for_sends(layer, 3)
    _, merged, at = layer.sent[2]
    # Message 11's preview with the counts of the read that came after it, and the newest
    # total (chat 2's message came later): the badge does not go back to 0.
    assert (merged["chat_id"], merged["message_id"], merged["unread"], merged["total_unread"]) == (1, 11, 0, 1)
    assert at - first_posted >= INTERVAL
    await asyncio.sleep(INTERVAL * 1.5)
    assert len(layer.sent) == 3


async def test_an_update_held_for_one_person_does_not_hold_back_another_persons():
    layer, mailbox = RecordingLayer(), InboxMailbox.for_running_loop()
    await mailbox.post(layer, [new_message(7, 1, 10, unread=1, total=1)])
    await mailbox.post(layer, [new_message(7, 1, 11, unread=2, total=2)])  # held
    await mailbox.post(layer, [new_message(8, 1, 11, unread=1, total=1)])

    assert [(event["user_id"], event["message_id"]) for _, event, _ in layer.sent] == [(7, 10), (8, 11)]
    await wait_for_sends(layer, 3)
    assert (layer.sent[2][1]["user_id"], layer.sent[2][1]["message_id"]) == (7, 11)


async def test_a_layer_that_is_down_is_logged_and_does_not_fail_the_post(caplog):
    class DownLayer:
        async def group_send(self, group, event):
            raise ConnectionError("Redis is restarting")

    with caplog.at_level(logging.ERROR, logger="chat.events"):
        await InboxMailbox.for_running_loop().post(DownLayer(), [read(1, 1, 0, 0)])
    assert "inbox updates failed" in caplog.text


def test_updates_still_waiting_when_the_loop_closes_are_sent():
    layer = RecordingLayer()

    async def two_quick_messages():
        mailbox = InboxMailbox.for_running_loop()
        await mailbox.post(layer, [new_message(7, 1, 10, unread=1, total=1)])
        await mailbox.post(layer, [new_message(7, 1, 11, unread=2, total=2)])

    asyncio.run(two_quick_messages())
    assert [event["message_id"] for _, event, _ in layer.sent] == [10, 11]


@pytest.mark.django_db(transaction=True)
async def test_a_busy_chats_held_back_fan_out_goes_out_after_the_request_that_sent_it_ended(
    direct_chat, alice, bob, monkeypatch, caplog
):
    """A server process with no socket open yet sends a request's events from the request's
    own thread (`async_to_sync`, as a command does). The chat's next inbox fan-out, held
    back for the interval, runs after that request has ended: not in its context, whose
    thread executor is gone by then."""
    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer

    from chat import services
    from chat.realtime import loop as realtime_loop

    monkeypatch.setattr(realtime_loop, "_serving_loop", None)
    layer = get_channel_layer()
    inboxes = await layer.new_channel()
    await layer.group_add(INBOXES_GROUP, inboxes)

    def a_request_sending_two_messages():
        return [services.send_message(chat=direct_chat, sender=alice, body=f"hi {n}").pk for n in (1, 2)]

    sent = await sync_to_async(a_request_sending_two_messages)()
    seen = []
    with caplog.at_level(logging.ERROR, logger="chat.realtime.mailbox"):
        while len(seen) < 2:
            batch = await asyncio.wait_for(layer.receive(inboxes), INTERVAL * 10)
            seen += [event["message_id"] for event in batch["events"] if event["user_id"] == bob.pk]
    assert seen == sent
    assert "failed" not in caplog.text


@pytest.mark.django_db(transaction=True)
def test_messages_stored_together_in_a_command_each_reach_the_inboxes(direct_chat, alice, bob, monkeypatch):
    """Where no websocket server runs (a management command), each of the messages stored
    together is announced on a short-lived loop of its own, which runs its inbox fan-out
    before it closes: on one loop for all, the second's fan-out, held back for the
    interval, would wait on a loop that is gone."""
    from django.db import transaction

    from chat import events, services
    from chat.realtime import loop as realtime_loop

    class Recording:
        def __init__(self):
            self.group_sends = []

        async def group_send(self, group, event):
            self.group_sends.append(event)

    layer = Recording()
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    monkeypatch.setattr(realtime_loop, "_serving_loop", None)

    with transaction.atomic():
        sends = [(alice, "one", "", None, ""), (alice, "two", "", None, "")]
        stored = services.store_sends_together(chat_id=direct_chat.pk, sends=sends)

    batches = [event["events"] for event in layer.group_sends if event["type"] == "inbox.batch"]
    bobs = [update["message_id"] for updates in batches for update in updates if update["user_id"] == bob.pk]
    assert bobs == [message.pk for message, _ in stored]
