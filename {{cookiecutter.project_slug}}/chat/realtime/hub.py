"""Events fanned out once per server process, not once per socket.

Each process has one `RoomHub` (per event loop) holding its open room sockets by chat.
The hub, not every socket, is in the channel layer's room group: a message to a room of
a hundred is one delivery to each process that has someone in it (one Redis push instead
of a hundred), and the hub hands the already-encoded frame to its local sockets in turn.
Likewise one `UserHub` holds every socket by person, in each person's sockets group once
per process however many tabs they have open, and in the inboxes group while the process
has any inbox socket. No socket has a channel of its own on the layer, so an idle one costs
the layer nothing, and a restart's thousands of reopening sockets change no group of their
own.

A message stored from this process's room sockets, and someone typing there, reach this
process's sockets in the room straight from the hub (`send_to_room`), and the other
processes' through the layer; the hub skips its own copy coming back (in a room of more
than MAX_SOCKETS_CHECKED sockets here, the layer brings it here too). Through the layer
alone, those frames waited for Redis twice (the group send, then the hub's receive). The
send's database trip reads, under the chat's row lock (typing's, which stores nothing,
without it), which of the people with a socket here are still members: a socket whose
person was removed by another process, whose revocation may still wait in the hub's
channel, is left out, so the shortcut never overtakes a revocation to reach it.

The hub's channel carries every room event of its process, so it must not be small: on
Redis, `channel_capacity` in CHANNEL_LAYERS gives it HUB_CHANNEL_CAPACITY (a warning is
logged at start if it would drop frames earlier); in memory the hub sizes its own queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from typing import NamedTuple

from channels.consumer import get_handler_name
from channels.layers import InMemoryChannelLayer, get_channel_layer

from chat import events, metrics
from chat.realtime import handshakes
from chat.realtime.database import log_database_error
from chat.realtime.loop import PerLoop, cancel_until_done, group_add, group_discard, stop_if_cancelled

logger = logging.getLogger(__name__)

HUB_CHANNEL_CAPACITY = 10_000
# The close code of the sockets a hub lets go when its layer failed: reconnect and catch up.
# An application's own code (daphne's websocket library refuses to send 1011 from one).
CLOSE_LAYER_LOST = 4011
# The layer's `channel_capacity` pattern for hub channels.
HUB_CHANNEL_PATTERN = "*!chat-hub-*"
# In a message's event sent through the layer: the hub that handed it to its sockets already.
HANDED_OVER_BY = "handed_over_by"
# A room with more sockets than this in the process gets its socket-sent messages through the
# layer, as a message stored outside the send queue does: the send's membership check asks about every
# person with a socket here, under the chat's row lock that other processes' sends wait
# for, and its cost grows with them (on PostgreSQL: 0.2 ms for 1 person, 0.6 for 100, 0.9
# for 200, 4.1 for 1,000), while the trip through the layer it saves is about 1.3 ms.
MAX_SOCKETS_CHECKED = 200
# How long a room message waits here for the one before it, at most (see RoomHub.deliver).
HOLD_FOR_PREVIOUS_SECONDS = 1.0
# The most messages a room hub remembers having read ahead of their late events, per chat.
MAX_READ_AHEAD = 1_000


class WaitingMessage(NamedTuple):
    """A room message waiting here for the one before it (RoomHub.deliver)."""

    event: dict
    outsiders: frozenset[int]
    changes: list  # (event, outsiders) of its edits, deletes and reactions meanwhile


class LateRead(NamedTuple):
    """A chat's late read under way here (RoomHub.hand_late): the newest message handed
    before it, and the changes of later messages that came meanwhile."""

    after: int
    changes: list  # (event, outsiders), handed once the messages read have gone


def hub_channel_name(process_channel: str) -> str:
    """A process-local channel ("<prefix>!<id>"), renamed so a capacity pattern finds it."""
    local, _, name = process_channel.partition("!")
    return f"{local}!chat-hub-{name}"


class ProcessHub(PerLoop):
    """One channel of this process, in the groups of its local sockets' keys (a chat, a
    person), handing each event to the sockets of its key."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__(loop)
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.sockets: dict[int, set] = {}  # key -> its local sockets
        self.reader: asyncio.Task | None = None
        self.changing = asyncio.Lock()  # the channel and its reader (a start, a reset)
        # A key's subscription (its joins and leaves): its lock, and how many hold or await it.
        self.key_locks: dict[int, tuple[asyncio.Lock, list[int]]] = {}
        # Names this hub on the events it handed to its sockets itself (`send_to_room`).
        self.name = secrets.token_hex(8)

    def key_of(self, consumer) -> int:
        raise NotImplementedError

    def groups_of(self, key: int) -> set[str]:
        """The groups the hub is in while the key has a socket here."""
        raise NotImplementedError

    async def join(self, consumer) -> None:
        """Deliver the events of the socket's key to it from now on."""
        await self.subscribe(self.key_of(consumer), consumer)

    async def leave(self, consumer) -> None:
        await self.unsubscribe(self.key_of(consumer), consumer)

    async def subscribe(self, key: int, consumer) -> None:
        """Count the socket among the key's, the hub in the key's groups before it.

        Only a key's first socket joins its groups and only its last leaves them, under the
        key's own lock, so its set of sockets and the hub's group membership never disagree;
        different keys (the people of a restart's thousands of sockets) subscribe side by side
        rather than one Redis round trip after another. A socket whose key has sockets already
        joins without the lock: a key with thousands (the inboxes') takes one more or one less
        at constant cost.
        """
        while True:
            channel = await self.start()
            if key in self.sockets:  # the hub is in the key's groups already: no lock to queue for
                self.sockets[key].add(consumer)
                return
            async with self.holding(key):
                if key not in self.sockets:
                    # First the groups, then the socket: a socket whose join failed (the layer
                    # is down) must not stand there and keep the next one from subscribing.
                    for group in self.groups_of(key):  # one, in practice: no task to gather it in
                        await group_add(self.layer, group, channel)
                if self.channel == channel:
                    self.sockets.setdefault(key, set()).add(consumer)
                    break
            # The layer failed and the hub was reset meanwhile: subscribe its new channel.
        await self.start()  # the last socket of another key may have stopped the reader meanwhile

    async def unsubscribe(self, key: int, consumer) -> None:
        async with self.holding(key):
            sockets = self.sockets.get(key)
            if sockets is None or consumer not in sockets:
                return
            sockets.discard(consumer)  # in place: deliveries hand events to a copy
            if sockets:
                return
            del self.sockets[key]
            self.forget(key)
            try:
                for group in self.groups_of(key):
                    await group_discard(self.layer, group, self.channel)
            except Exception:  # the layer is down; the groups expire there on its own
                logger.warning("%s could not leave the groups of %s", type(self).__name__, key, exc_info=True)
        if not self.sockets:
            await self.stop_reading()

    @contextlib.asynccontextmanager
    async def holding(self, key: int):
        """The key's lock, forgotten once nobody holds or awaits it (people come and go)."""
        lock, users = self.key_locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self.key_locks[key]

    async def start(self) -> str:
        """The hub's channel, with a reader for it (made again after a reset)."""
        if self.channel is not None and self.reader is not None and not self.reader.done():
            return self.channel
        async with self.changing:
            if self.channel is None:
                self.channel = hub_channel_name(await self.layer.new_channel())
                self.check_capacity()
            if self.reader is None or self.reader.done():
                self.reader = self.loop.create_task(self.read(self.channel))
            return self.channel

    async def stop_reading(self) -> None:
        """The last socket left: the reader stops (the next join starts another), so an idle
        process waits on no receive, and a loop that closes has no reader left to cancel."""
        async with self.changing:
            reader = self.reader
            if self.sockets or reader is None or reader is asyncio.current_task():
                return  # someone joined meanwhile, or the reader let its last socket go itself
            self.reader = None
            await cancel_until_done(reader)

    def check_capacity(self) -> None:
        if self.layer.get_capacity(self.channel) >= HUB_CHANNEL_CAPACITY:
            return
        if isinstance(self.layer, InMemoryChannelLayer):
            # In-process queues: this hub's is simply made big enough. (The in-memory layer
            # takes no `channel_capacity` patterns from settings.)
            rule = (re.compile(re.escape(self.channel)), HUB_CHANNEL_CAPACITY)
            self.layer.channel_capacity = [rule, *self.layer.channel_capacity]
            return
        logger.warning(
            'The channel layer holds only %d events for the room hub: set "channel_capacity": {"%s": %d} '
            "in CHANNEL_LAYERS' CONFIG so busy rooms lose no frames.",
            self.layer.get_capacity(self.channel),
            HUB_CHANNEL_PATTERN,
            HUB_CHANNEL_CAPACITY,
        )

    async def read(self, channel: str) -> None:
        try:
            while True:
                event = await self.layer.receive(channel)
                if event.pop(HANDED_OVER_BY, None) != self.name:  # else its sockets have it already
                    await self.deliver(event)
                stop_if_cancelled()
        except asyncio.CancelledError:
            raise
        except Exception:
            # The layer failed (Redis restarting) and may have lost the hub's groups: the
            # sockets reconnect, join again and catch up, as each would on its own.
            logger.exception("%s lost its channel layer; closing its sockets", type(self).__name__)
            await self.reset()

    async def reset(self) -> None:
        async with self.changing:
            by_key, self.sockets, self.channel, self.reader = self.sockets, {}, None, None
        for key in by_key:
            self.forget(key)
        consumers = {consumer for sockets in by_key.values() for consumer in sockets}  # some under two keys
        metrics.count(metrics.SOCKETS_CLOSED_LAYER_LOST, len(consumers))
        for consumer in consumers:
            try:
                await consumer.close(code=CLOSE_LAYER_LOST)
            except Exception:
                logger.debug("Closing %s failed", consumer, exc_info=True)

    async def deliver(self, event: dict) -> None:
        raise NotImplementedError

    def forget(self, key: int) -> None:
        """The key's last socket here left: what the hub kept for it goes too."""

    async def hand_over(self, event: dict, consumers) -> None:
        """One event to each of these sockets, one after the other."""
        for consumer in consumers:
            handler = getattr(consumer, get_handler_name(event), None)
            if handler is None:
                continue
            try:
                await handler(event)
            except Exception:  # one socket's failure is not the others'; that socket is let go
                logger.exception("Delivering %s to %s failed", event.get("type"), consumer)
                metrics.count(metrics.SOCKETS_DROPPED)
                await self.leave(consumer)


class RoomHub(ProcessHub):
    """The process's room sockets by chat, in each room's group once."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__(loop)
        # How late the last room message reached this process's sockets, and when.
        self.last_lag = 0.0
        self.last_lag_at = float("-inf")
        # By chat: the newest message handed to its sockets here, and the messages waiting
        # for the one before them (by that one's id; each with its changes meanwhile), with
        # the timer that lets them go.
        self.newest_handed: dict[int, int] = {}
        self.waiting: dict[int, dict[int, WaitingMessage]] = {}
        self.waiting_timers: dict[int, asyncio.TimerHandle] = {}
        self.handing_late: set[asyncio.Task] = set()
        # By chat: the messages read here because their events were late, until those come;
        # and the late read under way, if any.
        self.read_ahead: dict[int, set[int]] = {}
        self.reading_late: dict[int, LateRead] = {}

    def key_of(self, consumer) -> int:
        return consumer.chat_id

    def forget(self, key: int) -> None:
        self.newest_handed.pop(key, None)
        self.read_ahead.pop(key, None)
        self.stop_waiting(key)  # a late read under way finds no socket and hands nothing

    def groups_of(self, key: int) -> set[str]:
        return {events.room_group(key)}

    def lag(self) -> float:
        """Seconds a room message delivered in the last second waited for this hub: the
        largest noted within that second, which a smaller one does not replace (0 if none).
        The sends queue's measure of whether this process keeps up; a message from this
        process's own sockets counts from the database thread's hand-over, the others' from
        their process's, through the layer."""
        return self.last_lag if self.loop.time() - self.last_lag_at < 1.0 else 0.0

    def user_ids_by_chat(self, chat_ids) -> dict[int, frozenset[int]]:
        """The people with a room socket here, for each of these chats that has at most
        MAX_SOCKETS_CHECKED sockets here (a busier one is left out: its messages and typing
        go through the layer)."""
        by_chat = {}
        for chat_id in chat_ids:
            sockets = self.sockets.get(chat_id, ())
            if len(sockets) <= MAX_SOCKETS_CHECKED:
                by_chat[chat_id] = frozenset(consumer.user_id for consumer in sockets)
        return by_chat

    async def deliver(self, event: dict, *, outsiders: frozenset[int] = frozenset()) -> None:
        """Hand one room event to each local socket of its chat (`hand_to_room`), a chat's
        messages in their order.

        A message from another process comes through the layer, one from here straight from
        this hub, so the next message, sent here, can come first; each page would see a gap,
        wait for it and, once the layer is a little slow, fetch it: a busy process would get
        a fetch from every page of the room for each message the layer brought late. So a
        message whose previous one (`prev_id`) has not been handed over here waits for it,
        at most HOLD_FOR_PREVIOUS_SECONDS, and goes right after it; past that (the layer
        is slow or lost it) the hub reads what it waited for from the database and hands
        that first (`hand_late`). The edits, deletes and
        reactions of a waiting message wait with it (a page ignores a change to a message
        it does not show). A chat's first message here waits for nothing, nor does one from
        an earlier version, without `prev_id`. Lag is noted as the event reaches the hub:
        waiting for another process's message is not this process falling behind."""
        self.note_lag(event)
        chat_id, prev_id = event.get("chat_id"), event.get("prev_id")
        if event.get("type") != "chat.message":
            if not self.held_with_its_message(event, outsiders):
                await self.hand_to_room(event, outsiders)
            return
        if self.came_after_its_read(chat_id, event["message_id"]):
            return
        newest = self.newest_handed.get(chat_id)
        if prev_id is not None and newest is not None and prev_id > newest and chat_id in self.sockets:
            self.waiting.setdefault(chat_id, {})[prev_id] = WaitingMessage(event, outsiders, [])
            if chat_id not in self.waiting_timers:
                self.waiting_timers[chat_id] = self.loop.call_later(HOLD_FOR_PREVIOUS_SECONDS, self.wait_over, chat_id)
            return
        await self.hand_message_and_followers(event, outsiders, [])

    def held_with_its_message(self, event: dict, outsiders: frozenset[int]) -> bool:
        """Whether this change (an edit, delete or reaction) waits: with its message, still
        waiting here, or until the messages being read late have gone (it may be one of them)."""
        chat_id, message_id = event.get("chat_id"), event.get("message_id")
        if (waiting_message := self.waiting_message(chat_id, message_id)) is not None:
            waiting_message.changes.append((event, outsiders))
            return True
        reading = self.reading_late.get(chat_id)
        if reading is not None and isinstance(message_id, int) and message_id > reading.after:
            reading.changes.append((event, outsiders))
            return True
        return False

    def waiting_message(self, chat_id, message_id) -> WaitingMessage | None:
        for waiting_message in self.waiting.get(chat_id, {}).values():
            if waiting_message.event["message_id"] == message_id:
                return waiting_message
        return None

    async def hand_message_and_followers(self, event: dict, outsiders: frozenset[int], changes: list) -> None:
        """The message, the changes that waited with it, then each message waiting for it in turn."""
        chat_id = event["chat_id"]
        while True:
            if chat_id in self.sockets:
                self.newest_handed[chat_id] = max(self.newest_handed.get(chat_id, 0), event["message_id"])
            await self.hand_to_room(event, outsiders)
            for change, change_outsiders in changes:
                await self.hand_to_room(change, change_outsiders)
            waiting = self.waiting.get(chat_id)
            follower = waiting.pop(event["message_id"], None) if waiting else None
            if waiting is not None and not waiting:
                self.stop_waiting(chat_id)
            if follower is None:
                return
            event, outsiders, changes = follower

    def wait_over(self, chat_id: int) -> None:
        """The messages that waited for a previous one too long go (`hand_late`). Taken at
        once, so that a chat's new waiting messages get a timer and a wait of their own;
        while a chat's earlier late read runs, they wait on (as its followers, they may go
        with it)."""
        if chat_id in self.reading_late:
            self.waiting_timers[chat_id] = self.loop.call_later(HOLD_FOR_PREVIOUS_SECONDS, self.wait_over, chat_id)
            return
        self.waiting_timers.pop(chat_id, None)
        waiting = self.waiting.pop(chat_id, None)
        if waiting:
            self.reading_late[chat_id] = LateRead(self.newest_handed.get(chat_id, 0), [])
            task = self.loop.create_task(self.hand_late(chat_id, waiting))
            self.handing_late.add(task)
            task.add_done_callback(self.handing_late.discard)

    async def hand_late(self, chat_id: int, waiting: dict[int, WaitingMessage]) -> None:
        """The messages these waited for, read from the database (`read_late`), then these,
        in their order: no page sees a gap. A busy process, or a slow layer, brings another
        process's message late to every process at once; each page fetching it over HTTP
        would cost the room's processes a request per page (a hundred for one message)
        just when they are behind, which made them later still. Here it is one shared trip
        per process, each bubble rendered once. If the read fails, these go alone and the
        pages fetch the gap, as before. Changes that came during the read go last."""
        try:
            await self.hand_late_messages(chat_id, waiting)
        finally:
            for change, outsiders in self.reading_late.pop(chat_id).changes:
                try:
                    if not self.held_with_its_message(change, outsiders):
                        await self.hand_to_room(change, outsiders)
                except Exception:
                    logger.exception("Handing over a change of message %s failed", change.get("message_id"))

    async def hand_late_messages(self, chat_id: int, waiting: dict[int, WaitingMessage]) -> None:
        by_id = {waiting_message.event["message_id"]: waiting_message for waiting_message in waiting.values()}
        read = {}
        for event in await self.read_late(chat_id, up_to=max(waiting), waiting_ids=tuple(sorted(by_id))):
            if event["message_id"] not in by_id:
                read[event["message_id"]] = by_id[event["message_id"]] = WaitingMessage(event, frozenset(), [])
        if chat_id not in self.sockets:
            return  # everyone here left during the read: nothing to hand, nothing to remember
        for message_id, (event, outsiders, changes) in sorted(by_id.items()):
            try:
                if message_id <= self.newest_handed.get(chat_id, 0):
                    # Its own event came during the read and went (or a socket that joined
                    # meanwhile had it with its greeting): only its changes are news.
                    for change, change_outsiders in changes:
                        await self.hand_to_room(change, change_outsiders)
                    continue
                if message_id in read:
                    self.read_ahead.setdefault(chat_id, set()).add(message_id)
                    metrics.count(metrics.LATE_MESSAGES_READ)
                await self.hand_message_and_followers(event, outsiders, changes)
            except Exception:  # the next one still goes; its pages fetch what this one lacked
                logger.exception("Handing over message %s failed", event.get("message_id"))

    def came_after_its_read(self, chat_id: int, message_id: int) -> bool:
        """Whether this is the late event of a message read and handed here already: its
        sockets have it, and would only write it to each of them again. (Ids whose events
        never come, lost by the layer, are let go once a chat has more than MAX_READ_AHEAD.)"""
        read = self.read_ahead.get(chat_id)
        if not read:
            return False
        if len(read) > MAX_READ_AHEAD:
            read.difference_update(sorted(read)[:-MAX_READ_AHEAD])
        if message_id not in read:
            return False
        read.discard(message_id)
        return True

    async def read_late(self, chat_id: int, *, up_to: int, waiting_ids: tuple[int, ...]) -> list[dict]:
        """The events of the chat's messages after the newest handed here, up to `up_to` (the
        newest a waiting message waits for), but the waiting ones, oldest first; none if that
        read fails. Read with them, the messages waiting between two gaps took the read's room
        (a page, then), and the gaps past them were left for every page to fetch."""
        newest = self.newest_handed.get(chat_id)
        if newest is None or chat_id not in self.sockets:
            return []
        try:
            ask = (chat_id, newest, up_to, waiting_ids)
            return await handshakes.in_shared_batch(events.late_message_events, ask, socket_open=True)
        except Exception as exc:
            log_database_error(logger, exc, "Messages of chat %s waited for here could not be read", chat_id)
            return []

    def stop_waiting(self, chat_id: int) -> None:
        self.waiting.pop(chat_id, None)
        timer = self.waiting_timers.pop(chat_id, None)
        if timer is not None:
            timer.cancel()

    def note_lag(self, event: dict) -> None:
        if "queued_at" in event:
            lag = max(0.0, time.time() - event["queued_at"])
            if lag >= self.lag():  # a later, smaller one does not hide it within the second
                self.last_lag, self.last_lag_at = lag, self.loop.time()

    async def hand_to_room(self, event: dict, outsiders: frozenset[int]) -> None:
        """Hand one room event to each local socket of its chat, one after the other (not to
        the sockets of `outsiders`, people no longer members)."""
        consumers = [c for c in self.sockets.get(event.get("chat_id"), ()) if c.user_id not in outsiders]
        if event.get("type") == "chat.revoked":
            # Out of the room here, whatever their own handler does: nothing more reaches them.
            consumers = [c for c in consumers if event["deleted"] or c.user.pk in event["user_ids"]]
            for consumer in consumers:
                await self.leave(consumer)
        await self.hand_over(event, consumers)


async def send_to_room(layer, event: dict, outsiders: frozenset[int] | None) -> None:
    """A room event from this process (a new message, someone typing) to its room's
    sockets in every process.

    `outsiders`: the people with a socket here in that room whom the sender's database trip
    found not to be members (None: it did not look, as for a message stored outside the send queue).
    Knowing them, this process's sockets get the event straight from its hub
    (`hand_over_here`), all but theirs, and the layer brings it to the other processes;
    else the layer brings it here too.
    """
    await hand_over_here(layer, event, outsiders)
    await layer.group_send(events.room_group(event["chat_id"]), event)


async def hand_over_here(layer, event: dict, outsiders: frozenset[int] | None) -> None:
    """`send_to_room`'s part that needs no layer (its arguments, as an event queue's local
    part takes them): the event to this process's sockets in its room, once, if the sender
    knew its `outsiders`.

    Once: the event queue hands the events waiting in it to the sockets here before the
    first of them goes to the layer (`loop.EventQueue`), and a retry of the layer's send
    comes back here. Marked on the event, which the hubs take off before handing it over
    (a process still on an earlier version, in a rolling deploy, takes no notice of it).
    An event whose order against a socket's message matters to the page (its sender's "is
    typing" before it) takes this way too: sent through the layer alone, it would be
    overtaken here by the message for as long as Redis takes to bring it back.
    """
    hub = RoomHub.made_for_running_loop()
    if outsiders is not None and hub is not None and event.get(HANDED_OVER_BY) != hub.name:
        await hub.deliver(event, outsiders=outsiders)
        event[HANDED_OVER_BY] = hub.name


# The UserHub's key of every inbox socket besides its person's: no user has the id 0.
INBOX_SOCKETS = 0


class UserHub(ProcessHub):
    """The process's sockets by person, in each person's sockets group once, and in the
    inboxes group (`events.INBOXES_GROUP`) while any inbox socket is open here; each socket
    gets the events it has a handler for (room sockets: a session ending, a revocation).

    Inbox events go to every process with inbox sockets, many people's in one
    "inbox.batch": a message to a room of a hundred, or their hundred read marks, is one
    group send and one delivery per process, where it was a group send per person. A
    process with only room sockets takes none.

    Every event names its person ("user_id"): the hub's one channel is in many people's
    groups, and an event does not say which group it came through.
    """

    def key_of(self, consumer) -> int:
        return consumer.user_id

    def groups_of(self, key: int) -> set[str]:
        return {events.INBOXES_GROUP} if key == INBOX_SOCKETS else {events.sockets_group(key)}

    async def join(self, consumer) -> None:
        await super().join(consumer)
        if consumer.takes_inbox_events:
            await self.subscribe(INBOX_SOCKETS, consumer)

    async def leave(self, consumer) -> None:
        if consumer.takes_inbox_events:
            await self.unsubscribe(INBOX_SOCKETS, consumer)
        await super().leave(consumer)

    async def deliver(self, event: dict) -> None:
        if event.get("type") == "inbox.batch":
            for one in event["events"]:
                await self.hand_over(one, list(self.sockets.get(one.get("user_id"), ())))
            return
        await self.hand_over(event, list(self.sockets.get(event.get("user_id"), ())))
