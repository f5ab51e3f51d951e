"""The one place that names and sends channel-layer events.

Services call these from `transaction.on_commit`. Frames are hints: each carries the
chat and message ids a client needs to notice a gap and catch up over HTTP
(`messages/?after=<id>`), because a channel layer delivers at most once.

Changes to messages already sent (edits, deletes for everyone, reactions) have a cursor of
their own: each takes the chat's next `change_seq` (1, 2, 3, ... per chat) and its frame
carries it. A room renders the chat's cursor into the page and keeps the highest it has
seen; a frame that skips a number, and every socket (re)open, makes it fetch
`messages/?changed_since=<cursor>`: the current bubbles of the messages changed since.

Event vocabulary (the consumer method that handles each is named after it):

room group ``chat.room.<chat_id>``
    chat.message   a new message: ids, previous id in the chat, sender, rendered bubble
    chat.revoked   these users lost access (removed, left) or the group was deleted
    chat.renamed   the group has a new name: update the room's header
    chat.presence  how many people are online in the room now (counted once per change)
    chat.edited    a message's text changed: message id, change_seq, the re-rendered bubble
    chat.deleted   a message was deleted for everyone: message id, change_seq, the placeholder bubble
    chat.reacted   a message's reactions changed: message id, change_seq, the re-rendered bubble
user group ``chat.user.<user_id>`` (the inbox socket of every tab)
    inbox.message  a new message in one of their chats, with unread counts
    inbox.unread   their unread count of one chat changed (read elsewhere)
    inbox.changed  a chat was added, removed or renamed, or its last message edited or
                   deleted: refresh the list
sockets group ``chat.sockets.<user_id>`` (every socket of the user, room and inbox)
    session.ended  close the sockets of one session (logged out) or of all (password
                   changed, account deactivated or deleted), on every server process
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import hashlib
import json
import logging

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.template.loader import render_to_string
from django.utils.text import Truncator

from chat import presence, selectors

logger = logging.getLogger(__name__)


def room_group(chat_id: int) -> str:
    return f"chat.room.{chat_id}"


def user_group(user_id: int) -> str:
    return f"chat.user.{user_id}"


def sockets_group(user_id: int) -> str:
    return f"chat.sockets.{user_id}"


def session_tag(session_key: str | None) -> str | None:
    """A session's name on the channel layer: a digest, never the key itself (it is a login)."""
    return hashlib.sha256(session_key.encode()).hexdigest()[:32] if session_key else None


def send(group: str, event: dict) -> None:
    send_many([(group, event)])


def send_many(group_events: list[tuple[str, dict]]) -> None:
    """Send events to groups in one trip to the event loop."""
    layer = get_channel_layer()
    if layer is not None and group_events:
        run_on_serving_loop(group_send_all, layer, group_events)


# The event loop of this process's websocket server, noted by the consumers.
_serving_loop: asyncio.AbstractEventLoop | None = None


def note_serving_loop() -> None:
    """Called on the server's loop: events from its worker threads are handed to it."""
    global _serving_loop
    _serving_loop = asyncio.get_running_loop()


def run_on_serving_loop(send_events, *args, wait: bool = False) -> None:
    """Run `await send_events(*args)` without making the calling thread wait for it.

    Services send events from Django's one sync thread, which also runs every view and
    every socket's database work. Waiting there for the event loop (`async_to_sync`)
    ties each send to the loop's backlog of frames to deliver; handing the coroutine
    over lets the thread go on to the next request. Where no server loop runs (a
    management command, a test without sockets), or with `wait`, the sends are done
    before this returns.
    """
    loop = _serving_loop
    if not wait and loop is not None and loop.is_running() and not loop.is_closed() and not on_loop(loop):
        # A fresh context: the caller's belongs to its request (and to asgiref's record of
        # the sync thread being busy, which would refuse the sends' own database work).
        loop.call_soon_threadsafe(queue_on_this_loop, send_events, args, context=contextvars.Context())
    else:
        async_to_sync(send_events)(*args)


class PerLoop:
    """One instance per event loop: a server's lives as long as the server; a management
    command's or a test's `async_to_sync` gets a fresh one with nothing left over from
    an earlier loop. Subclasses take the loop in `__init__` and keep it as `self.loop`."""

    _current: PerLoop | None = None

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop

    @classmethod
    def for_running_loop(cls):
        loop = asyncio.get_running_loop()
        current = cls.__dict__.get("_current")
        if current is None or current.loop is not loop:
            current = cls(loop)
            cls._current = current
        return current


def queue_on_this_loop(send_events, args: tuple) -> None:
    EventQueue.for_running_loop().put(send_events, args)


class EventQueue(PerLoop):
    """Event sends handed to the loop, run one after the other in the order handed over,
    so frames of one chat leave in the order their messages were stored."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__(loop)
        self.waiting: collections.deque = collections.deque()
        self.runner: asyncio.Task | None = None

    def put(self, send_events, args: tuple) -> None:
        self.waiting.append((send_events, args))
        if self.runner is None or self.runner.done():
            self.runner = self.loop.create_task(self.run())

    async def run(self) -> None:
        while self.waiting:
            send_events, args = self.waiting.popleft()
            try:
                await send_events(*args)
            except Exception:  # a layer that is down: clients catch up from the database
                logger.exception("Sending events failed")


def on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


# Group sends in flight at once. On Redis each is a few round trips, so one after the
# other a 100-member room waits 100 x those; all at once would each take a connection
# and exhaust the pool ("Too many connections").
CONCURRENT_GROUP_SENDS = 16


async def group_send_all(layer, group_events: list[tuple[str, dict]]) -> None:
    for start in range(0, len(group_events), CONCURRENT_GROUP_SENDS):
        chunk = group_events[start : start + CONCURRENT_GROUP_SENDS]
        await asyncio.gather(*(layer.group_send(group, event) for group, event in chunk))


def message_created(*, message, prev_id: int) -> None:
    """Tell the room (the bubble) at once, then the inboxes of the members not viewing it.

    Members with the room open see the message there and their room socket marks it
    read, which sends them `inbox.unread`; an `inbox.message` too would only make their
    badges flicker, and costs a group send per viewer per message in a busy room.
    The inbox side goes through `InboxFanout`: at most once a second per chat.
    """
    run_on_serving_loop(deliver_message, room_message_event(message=message, prev_id=prev_id), message)


def room_message_event(*, message, prev_id: int) -> dict:
    sender_name = selectors.display_name(message.sender)
    html = render_to_string("chat/partials/message_bubble.html", {"message": message, "sender_name": sender_name})
    frame = {
        "type": "chat.message",
        "chat_id": message.chat_id,
        "message_id": message.pk,
        "prev_id": prev_id,
        "sender_id": message.sender_id,
        "html": html,
    }
    # Encoded once here rather than once per socket: a room of 100 sends the same text 100 times.
    return {
        "type": "chat.message",
        "chat_id": message.chat_id,
        "message_id": message.pk,
        "sender_id": message.sender_id,
        "text": json.dumps(frame),
    }


async def deliver_message(room_event: dict, message) -> None:
    await get_channel_layer().group_send(room_group(message.chat_id), room_event)
    await InboxFanout.for_running_loop().note(message)


def inbox_message_events(*, message) -> list[dict]:
    """`inbox.message` for each member not reading the chat: the message and their counts."""
    sender_name = selectors.display_name(message.sender)
    preview = Truncator(message.body).chars(120)  # as chat_row.html's truncatechars: marked "…", not cut
    viewers = presence.viewer_ids(chat_id=message.chat_id) - {message.sender_id}
    return [
        {
            "type": "inbox.message",
            "user_id": user_id,
            "chat_id": message.chat_id,
            "message_id": message.pk,
            "sender_id": message.sender_id,
            "sender_name": sender_name,
            "preview": preview,
            "sent_at": message.created_at.isoformat(),
            "unread": unread,
            "total_unread": total,
        }
        for user_id, (unread, total) in selectors.unread_by_member(chat_id=message.chat_id, excluding=viewers).items()
    ]


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
        self.newest: dict[int, object] = {}  # chat id -> the newest message not fanned out
        self.last_run: dict[int, float] = {}
        self.timers: dict[int, asyncio.TimerHandle] = {}

    async def note(self, message) -> None:
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
        self.timers[chat_id] = self.loop.call_later(max(0.0, wait), self.start, chat_id)

    def start(self, chat_id: int) -> None:
        self.timers.pop(chat_id, None)
        self.loop.create_task(self.run(chat_id))

    async def run(self, chat_id: int) -> None:
        message = self.newest.pop(chat_id, None)
        if message is None:
            return
        self.last_run[chat_id] = self.loop.time()
        self.prune()
        try:
            # Plain sync_to_async: on Django's sync thread (the caller's, for a command or a
            # test) and inside its transaction, with no closing of "old" connections.
            inbox_events = await sync_to_async(inbox_message_events)(message=message)
            await post_to_mailbox(get_channel_layer(), inbox_events)
        except Exception:  # a database or layer that is down: the next message's fan-out carries the counts
            logger.exception("Inbox fan-out for chat %s failed", chat_id)

    def prune(self) -> None:
        if len(self.last_run) > 1000:
            now = self.loop.time()
            self.last_run = {c: at for c, at in self.last_run.items() if now - at < INBOX_UPDATE_INTERVAL}


def serving_here(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this loop is the websocket server's, which lives on (not a short-lived one)."""
    return loop is _serving_loop


def unread_changed(*, memberships) -> None:
    """Tell each member whose read position moved their new counts (one totals query)."""
    totals = selectors.total_unread_by_user(user_ids={m.user_id for m in memberships})
    send_to_inboxes(
        [
            {
                "type": "inbox.unread",
                "user_id": m.user_id,
                "chat_id": m.chat_id,
                "unread": m.unread_count,
                "total_unread": totals.get(m.user_id, 0),
            }
            for m in memberships
        ]
    )


def send_to_inboxes(inbox_events: list[dict]) -> None:
    """Hand inbox count updates (each with its "user_id") to this process's mailbox."""
    layer = get_channel_layer()
    if layer is not None and inbox_events:
        run_on_serving_loop(post_to_mailbox, layer, inbox_events)


async def post_to_mailbox(layer, inbox_events: list[dict]) -> None:
    await InboxMailbox.for_running_loop().post(layer, inbox_events)


# How long a closing loop waits for the inbox updates still held.
FINAL_SEND_SECONDS = 2.0
# A person's inbox gets at most one update per chat this often; the first goes at once.
INBOX_UPDATE_INTERVAL = 1.0


class InboxMailbox(PerLoop):
    """Inbox count updates on their way out, at most one per person and chat a second.

    Every message is an `inbox.message` to each member not viewing the room: a group send
    each, a few Redis round trips. A busy room of a hundred would spend the server on
    them; a badge needs only the latest counts. So an update to a chat's row in one
    person's inbox goes at once if none went in the last INBOX_UPDATE_INTERVAL, and
    otherwise waits out the interval, replaced meanwhile by any newer one. One mailbox
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
            self.sender = self.loop.create_task(self.send_when_due())

    async def send_when_due(self) -> None:
        try:
            while self.waiting:
                # Short naps: an update posted meanwhile may fall due before the one slept for.
                await asyncio.sleep(min(max(0.0, self.next_due() - self.loop.time()), INBOX_UPDATE_INTERVAL / 4))
                while batch := self.take_batch(list(self.waiting)):
                    await self.send(batch)
        except asyncio.CancelledError:  # the loop is closing: nothing stays behind, if it can go quickly
            last = [self.with_latest_total(event) for event in self.take_all()]
            with contextlib.suppress(TimeoutError):
                # Bounded: a layer already shutting down must not hold the loop's close forever.
                await asyncio.wait_for(self.send(last), FINAL_SEND_SECONDS)
            raise

    def take_batch(self, keys: list[tuple[int, int]]) -> list[dict]:
        """Up to CONCURRENT_GROUP_SENDS of these updates that are due, one per person in flight."""
        now = self.loop.time()
        if now - self.pruned_at >= INBOX_UPDATE_INTERVAL:
            self.prune(now)
        batch, people = [], set()
        for key in keys:
            if len(batch) == CONCURRENT_GROUP_SENDS:
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
        events, self.waiting = list(self.waiting.values()), {}
        return events

    def next_due(self) -> float:
        return min(self.last_sent.get(key, -INBOX_UPDATE_INTERVAL) for key in self.waiting) + INBOX_UPDATE_INTERVAL

    async def send(self, events: list[dict]) -> None:
        try:
            await group_send_all(self.layer, [(user_group(event["user_id"]), event) for event in events])
        except Exception:  # a layer that is down: these updates are lost; the next ones carry the counts
            logger.exception("Sending %d inbox updates failed", len(events))


def merge_inbox_events(older: dict, newer: dict) -> dict:
    """A new message's update carries everything; a read update only corrects the counts."""
    if newer["type"] == "inbox.unread" and older["type"] == "inbox.message":
        return {**older, "unread": newer["unread"], "total_unread": newer["total_unread"]}
    return newer


def chat_list_changed(*, user_ids, chat_id: int) -> None:
    send_many([(user_group(user_id), {"type": "inbox.changed", "chat_id": chat_id}) for user_id in user_ids])


def chat_renamed(*, chat_id: int, name: str, user_ids) -> None:
    """The open rooms show the new name in their headers; the inboxes refresh their rows."""
    send(room_group(chat_id), {"type": "chat.renamed", "chat_id": chat_id, "name": name})
    chat_list_changed(user_ids=user_ids, chat_id=chat_id)


def access_revoked(*, chat_id: int, user_ids, channel_names, deleted: bool = False) -> None:
    """Close the rooms of people who lost access, and drop the chat from their lists.

    The frame goes to the room's group and to each of their sockets: were one dropped (a
    full channel), the other still closes them.
    """
    layer = get_channel_layer()
    if layer is None:
        return chat_list_changed(user_ids=user_ids, chat_id=chat_id)
    revoked = {"type": "chat.revoked", "chat_id": chat_id, "user_ids": list(user_ids), "deleted": deleted}
    # Waited for: a message sent right after must not reach a socket still in the group.
    run_on_serving_loop(revoke, layer, room_group(chat_id), revoked, channel_names, wait=True)
    chat_list_changed(user_ids=user_ids, chat_id=chat_id)


async def revoke(layer, group: str, revoked: dict, channel_names: list[str]) -> None:
    """To the room (each process's hub takes those sockets out of it), and to each of the
    sockets itself, so a frame dropped on one path still closes them."""
    await layer.group_send(group, revoked)
    for channel_name in channel_names:
        await layer.send(channel_name, revoked)


async def presence_changed(*, chat_id: int, online: int) -> None:
    """Tell every socket in the room how many people are online (counted once, in `chat.presence`)."""
    event = {"type": "chat.presence", "chat_id": chat_id, "online": online}
    await get_channel_layer().group_send(room_group(chat_id), event)


def session_ended(*, user_id: int, close_code: int, session_key: str | None = None) -> None:
    """Close the user's sockets of this session, or all of them, on every server process."""
    event = {"type": "session.ended", "session": session_tag(session_key), "close_code": close_code}
    layer = get_channel_layer()
    if layer is None:
        return
    try:  # waited for: the sockets are closing before the logout's response
        run_on_serving_loop(layer.group_send, sockets_group(user_id), event, wait=True)
    except Exception:
        # The layer is down (Redis restarting): the logout or password change itself must
        # still happen. Sockets cut off by the outage reconnect, and the handshake then
        # checks the session again.
        logger.exception("Closing the sockets of user %s failed", user_id)


# --- message changes: edits, deletes for everyone, reactions ------------------------------


def message_edited(*, message, is_last: bool) -> None:
    """The room gets the new bubble; the inboxes re-read their rows if it is the preview."""
    send_message_change("chat.edited", message=message)
    if is_last:
        chat_list_changed(user_ids=selectors.member_ids(chat_id=message.chat_id), chat_id=message.chat_id)


def message_deleted(*, message, is_last: bool, memberships) -> None:
    """The room gets the placeholder; members who had it unread get their new counts."""
    send_message_change("chat.deleted", message=message)
    if memberships:
        unread_changed(memberships=memberships)
    if is_last:
        chat_list_changed(user_ids=selectors.member_ids(chat_id=message.chat_id), chat_id=message.chat_id)


def reactions_changed(*, message) -> None:
    send_message_change("chat.reacted", message=message)


def send_message_change(event_type: str, *, message) -> None:
    """One frame for the whole room, rendered and JSON-encoded once (as `chat.message`).

    The bubble is rendered for no one in particular: the page marks the viewer's own
    messages and reactions (data-sender-id, data-reactor-ids) itself.
    """
    message = selectors.with_reactions([message])[0]
    html = render_to_string("chat/partials/message_bubble.html", {"message": message})
    frame = {
        "type": event_type,
        "chat_id": message.chat_id,
        "message_id": message.pk,
        "change_seq": message.change_seq,
        "html": html,
    }
    event = {"type": event_type, "chat_id": message.chat_id, "message_id": message.pk, "text": json.dumps(frame)}
    send(room_group(message.chat_id), event)
