"""New messages and unread counts on their way to the inboxes, merged so a busy room
does not become a storm of badge updates.

`deliver_message` sends a message's bubble to its room at once; the inbox side then
goes through `InboxFanout` (one unread count per chat and second) and `InboxMailbox`
(at most one update per person and chat a second). One of each per event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging

from asgiref.sync import sync_to_async

from chat import events
from chat.realtime import hub
from chat.realtime.database import fan_out_trip
from chat.realtime.loop import PerLoop, serving_here

logger = logging.getLogger(__name__)

# How long a closing loop waits for the inbox updates still held.
FINAL_SEND_SECONDS = 2.0
# A person's inbox gets at most one update per chat this often; the first goes at once.
INBOX_UPDATE_INTERVAL = 1.0
# Updates sent together, as one "inbox.batch" to every process with inbox sockets.
BATCH_SIZE = 500


async def deliver_message(layer, room_event: dict, message, outsiders: frozenset[int] | None = None) -> None:
    await hub.send_to_room(layer, room_event, outsiders)
    await InboxFanout.for_running_loop().note(layer, message)


async def hand_message_over_here(layer, room_event: dict, message, outsiders: frozenset[int] | None = None) -> None:
    """`deliver_message`'s part that needs no layer: the bubble to this process's sockets."""
    await hub.hand_over_here(layer, room_event, outsiders)


class InboxFanout(PerLoop):
    """A chat's new messages reach its members' inboxes at most once per INBOX_UPDATE_INTERVAL.

    Each fan-out counts unread messages for every member not viewing the chat: two
    queries over the whole room. A busy room would run them for every message; a badge
    needs only the latest. So the first message of a quiet chat goes out at once, and
    the ones after it within the interval are folded into one fan-out at its end, for
    the newest of them. One per event loop, as the mailbox it feeds.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__(loop)
        self.layer = None
        self.newest: dict[int, object] = {}  # chat id -> the newest message not fanned out
        self.last_run: dict[int, float] = {}
        self.timers: dict[int, asyncio.TimerHandle] = {}
        self.running: set[asyncio.Task] = set()  # fan-outs whose timer has fired

    async def note(self, layer, message) -> None:
        self.layer = layer
        chat_id = message.chat_id
        older = self.newest.get(chat_id)
        if older is None or older.pk < message.pk:
            self.newest[chat_id] = message
        if chat_id in self.timers:
            return  # a fan-out is already due; it will take the newest
        wait = self.last_run.get(chat_id, -INBOX_UPDATE_INTERVAL) + INBOX_UPDATE_INTERVAL - self.loop.time()
        if wait <= 0 and not serving_here(self.loop):
            await self.run(chat_id)  # a management command's or a test's own loop: now, before it closes
            return
        # In a context of its own: the caller's may be a request's (a process with no socket
        # yet sends a view's events from the view's thread, `run_on_serving_loop`), whose
        # thread is gone by the time the fan-out is due.
        self.timers[chat_id] = self.loop.call_later(max(0.0, wait), self.start, chat_id, context=contextvars.Context())

    def start(self, chat_id: int) -> None:
        self.timers.pop(chat_id, None)
        task = self.loop.create_task(self.run(chat_id))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def run_all_now(self) -> None:
        """Every fan-out held back, now, and every one already running, finished (the server
        is stopping: see `chat.realtime.shutdown`)."""
        while self.timers or self.running:
            for chat_id in list(self.timers):
                timer = self.timers.pop(chat_id, None)  # another's run may have let its timer fire
                if timer is not None:
                    timer.cancel()
                    await self.run(chat_id)
            if self.running:
                await asyncio.wait(list(self.running))

    async def run(self, chat_id: int) -> None:
        message = self.newest.pop(chat_id, None)
        if message is None:
            return
        self.last_run[chat_id] = self.loop.time()
        self.prune()
        try:
            inbox_events = await counts_trip(self.loop)(events.inbox_message_events)(message=message)
            await post_to_mailbox(self.layer, inbox_events)
        except Exception:  # a database or layer that is down: the next message's fan-out carries the counts
            logger.exception("Inbox fan-out for chat %s failed", chat_id)

    def prune(self) -> None:
        if len(self.last_run) > 1000:
            now = self.loop.time()
            self.last_run = {c: at for c, at in self.last_run.items() if now - at < INBOX_UPDATE_INTERVAL}


def counts_trip(loop: asyncio.AbstractEventLoop):
    """Where a fan-out reads its counts: on the server's loop, a thread of their own
    (`fan_out_trip`), not the sockets' thread that handshakes and sends wait for. Elsewhere,
    plain sync_to_async: the caller's thread (a command's, a test's) and its transaction,
    with no closing of "old" connections."""
    return fan_out_trip if serving_here(loop) else sync_to_async


async def post_to_mailbox(layer, inbox_events: list[dict]) -> None:
    await InboxMailbox.for_running_loop().post(layer, inbox_events)


class InboxMailbox(PerLoop):
    """Inbox count updates on their way out, at most one per person and chat a second.

    Every message is an `inbox.message` to each member not viewing the room, and every read
    mark an `inbox.unread`. A busy room of a hundred would spend the server on them; a
    badge needs only the latest counts. So an update to a chat's row in one person's inbox
    goes at once if none went in the last INBOX_UPDATE_INTERVAL, and otherwise waits out
    the interval, replaced meanwhile by any newer one. The updates due together go as one
    "inbox.batch" to the processes with inbox sockets (one group send for a room of a
    hundred; sent one per person, they had cost a few Redis round trips each). One mailbox
    per event loop: a management command's `async_to_sync` gets a fresh one, with
    everything due at once; a server's sends whatever still waits when it shuts down.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__(loop)
        self.layer = None
        self.waiting: dict[tuple[int, int], dict] = {}  # (user id, chat id) -> event
        self.last_sent: dict[tuple[int, int], float] = {}
        # The newest total unread per person: an update held for one chat must not take
        # their badge back to the total of its time after another chat's went out.
        self.latest_total: dict[int, int] = {}
        self.pruned_at = loop.time()
        self.sender: asyncio.Task | None = None

    async def post(self, layer, inbox_events: list[dict]) -> None:
        """Send these updates if they are due; leave the others to wait out their interval."""
        self.layer = layer
        posted = []
        for event in inbox_events:
            key = (event["user_id"], event["chat_id"])
            older = self.waiting.pop(key, None)
            self.waiting[key] = event if older is None else merge_inbox_events(older, event)
            self.latest_total[key[0]] = event["total_unread"]
            posted.append(key)
        while batch := self.take_batch(posted):
            await self.send(batch)
        if self.waiting and (self.sender is None or self.sender.done()):
            self.sender = self.loop.create_task(self.send_when_due(), context=contextvars.Context())  # as the timers

    async def send_when_due(self) -> None:
        try:
            while self.waiting:
                # Short naps: an update posted meanwhile may fall due before the one slept for.
                await asyncio.sleep(min(max(0.0, self.next_due() - self.loop.time()), INBOX_UPDATE_INTERVAL / 4))
                while batch := self.take_batch(list(self.waiting)):
                    await self.send(batch)
        except asyncio.CancelledError:  # the loop is closing: nothing stays behind, if it can go quickly
            with contextlib.suppress(TimeoutError):
                # Bounded: a layer already shutting down must not hold the loop's close forever.
                await asyncio.wait_for(self.send_all_now(), FINAL_SEND_SECONDS)
            raise

    async def send_all_now(self) -> None:
        """Every update waiting, now, each with its person's newest total (the server is stopping)."""
        last = [self.with_latest_total(event) for event in self.take_all()]
        if last:
            await self.send(last)

    def take_batch(self, keys: list[tuple[int, int]]) -> list[dict]:
        """Up to BATCH_SIZE of these updates that are due, one per person (an update per
        chat of theirs goes with the next batch, in order)."""
        now = self.loop.time()
        if now - self.pruned_at >= INBOX_UPDATE_INTERVAL:
            self.prune(now)
        batch, people = [], set()
        for key in keys:
            if len(batch) == BATCH_SIZE:
                break
            due = now - self.last_sent.get(key, -INBOX_UPDATE_INTERVAL) >= INBOX_UPDATE_INTERVAL
            if due and key in self.waiting and key[0] not in people:
                people.add(key[0])
                batch.append(self.with_latest_total(self.waiting.pop(key)))
                self.last_sent[key] = now
        return batch

    def with_latest_total(self, event: dict) -> dict:
        return {**event, "total_unread": self.latest_total.get(event["user_id"], event["total_unread"])}

    def prune(self, now: float) -> None:
        self.last_sent = {key: at for key, at in self.last_sent.items() if now - at < INBOX_UPDATE_INTERVAL}
        waiting_people = {user_id for user_id, _ in self.waiting}
        self.latest_total = {person: total for person, total in self.latest_total.items() if person in waiting_people}
        self.pruned_at = now

    def take_all(self) -> list[dict]:
        held, self.waiting = list(self.waiting.values()), {}
        return held

    def next_due(self) -> float:
        return min(self.last_sent.get(key, -INBOX_UPDATE_INTERVAL) for key in self.waiting) + INBOX_UPDATE_INTERVAL

    async def send(self, updates: list[dict]) -> None:
        try:
            await self.layer.group_send(*events.inbox_batch(updates))
        except Exception:  # a layer that is down: they wait out the interval and go again, unless replaced
            logger.exception("Sending %d inbox updates failed", len(updates))
            for update in updates:
                key = (update["user_id"], update["chat_id"])
                newer = self.waiting.get(key)
                self.waiting[key] = update if newer is None else merge_inbox_events(update, newer)


def merge_inbox_events(older: dict, newer: dict) -> dict:
    """A new message's update carries everything; a read update only corrects the counts."""
    if newer["type"] == "inbox.unread" and older["type"] == "inbox.message":
        return {**older, "unread": newer["unread"], "total_unread": newer["total_unread"]}
    return newer
