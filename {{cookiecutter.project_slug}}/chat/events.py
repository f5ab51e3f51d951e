"""The one place that names and sends channel-layer events.

Services call these from `transaction.on_commit`. Frames are hints: each carries the
chat and message ids a client needs to notice a gap and catch up over HTTP
(`messages/?after=<id>`), because a channel layer delivers at most once. How events
travel from here to the sockets (the server loop, the room hubs, the inbox mailbox) is
the `chat.realtime` package.

Changes to messages already sent (edits, deletes for everyone, reactions) have a cursor of
their own: each takes the chat's next `change_seq` (1, 2, 3, ... per chat) and its frame
carries it. A room renders the chat's cursor into the page and keeps the highest it has
seen; a frame that skips a number, or a socket (re)open greeting (`chat.sync`) with a
higher cursor, makes it fetch `messages/?changed_since=<cursor>`: the current bubbles of the
messages changed since.

Event vocabulary (the consumer method that handles each is named after it):

room group ``chat.room.<chat_id>``
    chat.message   a new message: ids, previous id in the chat, sender, rendered bubble (one
                   sent over a room socket reaches its own process's sockets from the hub
                   directly: `chat.realtime.hub.send_to_room`)
    chat.revoked   these users lost access (removed, left) or the group was deleted
    chat.renamed   the group has a new name: update the room's header
    chat.presence  how many people are online in the room now (counted once per change)
    chat.typing    a member is typing: their id and name; never stored, and forgotten by
                   viewers a few seconds after the last one or when their message arrives
                   (reaches its own process's sockets from the hub directly, as the message)
    chat.edited    a message's text changed: message id, change_seq, the re-rendered bubble
    chat.deleted   a message was deleted for everyone: message id, change_seq, the placeholder bubble
    chat.reacted   a message's reactions changed: message id, change_seq, the re-rendered bubble
Every event to the inboxes or a sockets group carries its person's "user_id": a process's
sockets get them through one channel in many groups (`chat.realtime.hub.UserHub`).

inboxes group ``chat.inboxes`` (every process with an inbox socket, for the inbox socket of
every tab of the person the event names)
    inbox.batch    many people's events below, in "events", sent as one (the mailbox's
                   merged updates, a list change for every member)
    inbox.message  a new message in one of their chats, with unread counts and whether
                   it holds an @mention of them they have not read ("mentioned")
    inbox.unread   their unread count of one chat changed (read elsewhere)
    inbox.changed  a chat was added, removed or renamed, or its last message edited or
                   deleted: refresh the list
    inbox.muted    they muted or unmuted one of their chats (in another tab): restyle its
                   row, and the total unread, which leaves muted chats out
    inbox.blocked  they blocked or unblocked someone: their open rooms collapse or expand
                   that person's messages
sockets group ``chat.sockets.<user_id>`` (every socket of the user, room and inbox)
    session.ended  close the sockets of one session (logged out) or of all (password
                   changed, account deactivated or deleted), on every server process
    chat.revoked   as in the room group, for their room sockets of that chat (the second
                   path, in case the room's copy is dropped), addressed by "user_id" with
                   "chat_deleted" instead of "user_ids" and "deleted"
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import NamedTuple

from channels.layers import get_channel_layer
from django.template.loader import render_to_string
from django.utils.text import Truncator

from chat import selectors
from chat.conf import chat_setting
from chat.realtime import hub, mailbox, presence
from chat.realtime.loop import QueuedSend, group_send_all, run_all_on_serving_loop, run_on_serving_loop

logger = logging.getLogger(__name__)


def room_group(chat_id: int) -> str:
    return f"chat.room.{chat_id}"


# Every process with an inbox socket open is in this group once (its `UserHub`): inbox
# events name their person ("user_id") and go to every such process, which hands them to
# that person's inbox sockets there, if any. Many people's updates travel together as one
# "inbox.batch": a message to a room of a hundred is one group send, not a hundred.
INBOXES_GROUP = "chat.inboxes"


def sockets_group(user_id: int) -> str:
    return f"chat.sockets.{user_id}"


def to_user(user_id: int, event: dict) -> tuple[str, dict]:
    """An event for one person's inbox sockets: the inboxes group, and the event naming them."""
    return INBOXES_GROUP, {**event, "user_id": user_id}


def inbox_batch(inbox_events: list[dict]) -> tuple[str, dict]:
    """Inbox events of many people (each naming its "user_id"), sent as one."""
    return INBOXES_GROUP, {"type": "inbox.batch", "events": inbox_events}


def room_sync_frame(*, chat_id: int, last_message_id: int | None, change_seq: int) -> dict:
    """A room socket's greeting on each open (not an event: the socket sends it itself)."""
    return {"type": "chat.sync", "chat_id": chat_id, "last_message_id": last_message_id or 0, "change_seq": change_seq}


class RoomGreeting(NamedTuple):
    text: str  # the chat.sync frame, JSON-encoded
    last_message_id: int  # the room's newest message then: the socket's frames follow it


def room_greetings(asks: list[tuple[int, int | None]]) -> dict[tuple[int, int | None], RoomGreeting]:
    """The greetings of room sockets opening together, by (chat id, the id after which the
    socket asked for what it missed, or None); chats gone are absent.

    A greeting carries the bubbles of the messages after that id ("html", oldest first)
    when there are at most CHAT_PAGE_SIZE of them: after a restart every room that missed
    a few messages gets them with its greeting instead of fetching them. One query for the
    rooms, one for their messages and one for the messages' reactions, whatever the number
    of sockets; each bubble rendered once, each greeting encoded once for all the sockets
    of a room that ask the same.
    """
    cursors = selectors.room_cursors_by_chat({chat_id for chat_id, _ in asks})
    oldest_asked: dict[int, int] = {}  # per chat, the smallest id a socket that missed something asked after
    for chat_id, after in asks:
        if after is not None and chat_id in cursors and after < (cursors[chat_id]["last_message_id"] or 0):
            oldest_asked[chat_id] = min(after, oldest_asked.get(chat_id, after))
    limit = chat_setting("CHAT_PAGE_SIZE")
    # Each chat's newest limit + 1 after its oldest ask: a socket's missed messages are
    # all there if it missed at most `limit` (more, and it fetches them page by page).
    newest = selectors.newest_messages_after(oldest_asked, limit=limit + 1)
    bubbles: dict[int, str] = {}
    greetings = {}
    for chat_id, after in asks:
        if chat_id not in cursors:
            continue
        frame = room_sync_frame(chat_id=chat_id, **cursors[chat_id])
        missed = [message for message in newest.get(chat_id, ()) if message.pk > after] if after is not None else []
        if 0 < len(missed) <= limit:
            for message in missed:
                if message.pk not in bubbles:
                    bubbles[message.pk] = bubble_html(message)
            frame["html"] = "".join(bubbles[message.pk] for message in missed)
        greetings[(chat_id, after)] = RoomGreeting(json.dumps(frame), frame["last_message_id"])
    return greetings


def bubble_html(message) -> str:
    """A message's bubble as every member gets it (the page marks the viewer's own)."""
    sender_name = selectors.display_name(message.sender)
    return render_to_string("chat/partials/message_bubble.html", {"message": message, "sender_name": sender_name})


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


def message_created(*, message, prev_id: int) -> None:
    messages_created(messages=[message], prev_id=prev_id)


def messages_created(*, messages: list, prev_id: int, outsiders: frozenset[int] | None = None) -> None:
    """Tell the room (the bubbles) at once, then the inboxes of the members not viewing it.
    `messages`: stored together, in order, the first after `prev_id`. `outsiders`: see
    `chat.realtime.hub.send_to_room`.

    Handed to the event loop in one go, so its event queue hands all their frames to this
    process's sockets before the first goes to the layer (`chat.realtime.loop.EventQueue`).

    Members with the room open see the message there and their room socket marks it
    read, which sends them `inbox.unread`; an `inbox.message` too would only make their
    badges flicker, and costs a group send per viewer per message in a busy room.
    The inbox side goes through `chat.realtime.mailbox`: at most once a second per chat.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    # Without `outsiders` the sockets here get the messages through the layer too: no local
    # part, so no later message's frame is handed to them before these go to the layer.
    local_part = None if outsiders is None else mailbox.hand_message_over_here
    sends = []
    for message in messages:
        try:
            room_event = room_message_event(message=message, prev_id=prev_id)
        except Exception:  # as each message's own commit hook: the others still go (clients fill the gap)
            logger.exception("Announcing message %s failed", message.pk)
        else:
            sends.append(QueuedSend(mailbox.deliver_message, (layer, room_event, message, outsiders), local_part))
        prev_id = message.pk
    run_all_on_serving_loop(sends)


def room_message_event(*, message, prev_id: int) -> dict:
    html = bubble_html(message)
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
        "prev_id": prev_id,  # the room hubs hand a chat's messages to their sockets in this order
        "sender_id": message.sender_id,
        "text": json.dumps(frame),
        "queued_at": time.time(),  # the room hubs measure how far behind they deliver
    }


# The most messages a room hub reads for one chat at once (`late_message_events`): past
# that (the layer lost many), the pages fetch the rest as they would.
MAX_LATE_MESSAGES = 500


def late_message_events(asks: list[tuple[int, int, int, tuple[int, ...]]]) -> dict[tuple, list[dict]]:
    """By (chat id, after id, up to id, waiting ids): the room events of the chat's messages
    after the first id, up to the second, but those waiting at the hub already, oldest
    first, each naming the one before it in the chat (read or waiting). For the room hubs,
    which read what the layer brought late or lost instead of letting every page fetch it
    (`RoomHub.hand_late`): one query for all the chats of a trip, one for their reactions,
    each bubble rendered once. At most MAX_LATE_MESSAGES a chat: the messages waiting are
    not read again, so however many wait between the gaps, the gaps are what is read."""
    by_chat = selectors.messages_between(asks, limit=MAX_LATE_MESSAGES)
    late = {}
    for ask in asks:
        chat_id, after, up_to, waiting = ask
        read = [message for message in by_chat.get(chat_id, ()) if after < message.pk <= up_to]
        known = sorted({after, *waiting, *(message.pk for message in read)})
        before = dict(zip(known[1:], known, strict=False))
        late[ask] = [room_message_event(message=message, prev_id=before[message.pk]) for message in read]
    return late


def inbox_message_events(*, message) -> list[dict]:
    """`inbox.message` for each member not reading the chat: the message and their counts."""
    sender_name = selectors.display_name(message.sender)
    preview = Truncator(message.body).chars(120)  # as chat_row.html's truncatechars: marked "…", not cut
    viewers = presence.viewer_ids(chat_id=message.chat_id) - {message.sender_id}
    mentioned = selectors.unread_mention_ids(chat_id=message.chat_id)
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
            "mentioned": user_id in mentioned,
        }
        for user_id, (unread, total) in selectors.unread_by_member(chat_id=message.chat_id, excluding=viewers).items()
    ]


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
        run_on_serving_loop(mailbox.post_to_mailbox, layer, inbox_events)


def chat_list_changed(*, user_ids, chat_id: int) -> None:
    changed = [{"type": "inbox.changed", "chat_id": chat_id, "user_id": user_id} for user_id in user_ids]
    if changed:
        send(*inbox_batch(changed))


def chat_renamed(*, chat_id: int, name: str, user_ids) -> None:
    """The open rooms show the new name in their headers; the inboxes refresh their rows."""
    send(room_group(chat_id), {"type": "chat.renamed", "chat_id": chat_id, "name": name})
    chat_list_changed(user_ids=user_ids, chat_id=chat_id)


def access_revoked(*, chat_id: int, user_ids, socket_user_ids, deleted: bool = False) -> None:
    """Close the rooms of people who lost access, and drop the chat from their lists.

    The frame goes to the room's group and to the sockets group of each of them with a
    socket in the room (`socket_user_ids`): were one dropped (a full channel), the other
    still closes them.
    """
    layer = get_channel_layer()
    if layer is None:
        return chat_list_changed(user_ids=user_ids, chat_id=chat_id)
    revoked = {"type": "chat.revoked", "chat_id": chat_id, "user_ids": list(user_ids), "deleted": deleted}
    # Waited for: a message sent right after must not reach a socket still in the group.
    run_on_serving_loop(revoke, layer, room_group(chat_id), revoked, socket_user_ids, wait=True)
    chat_list_changed(user_ids=user_ids, chat_id=chat_id)


async def revoke(layer, group: str, revoked: dict, socket_user_ids) -> None:
    """To the room (each process's room hub takes those sockets out of it), and to each of
    those people's sockets (through each process's user hub), so a frame dropped on one path
    still closes them."""
    await layer.group_send(group, revoked)
    # Addressed by "user_id" alone: a process still on the previous version (a rolling
    # deploy) has room sockets in this group too, which would take a revocation naming
    # their person, or a deleted chat, as one of their own room, whatever the chat.
    copy = {**revoked, "user_ids": [], "deleted": False, "chat_deleted": revoked["deleted"]}
    for user_id in socket_user_ids:
        await layer.group_send(sockets_group(user_id), {**copy, "user_id": user_id})


async def presence_changed(*, chat_id: int, online: int) -> None:
    """Tell every socket in the room how many people are online (counted once, in `chat.presence`)."""
    event = {"type": "chat.presence", "chat_id": chat_id, "online": online}
    await get_channel_layer().group_send(room_group(chat_id), event)


def typing(*, chat_id: int, user_id: int, name: str, outsiders: frozenset[int] | None = None) -> None:
    """Tell the room someone is typing; each process's hub hands it to its sockets there.
    Encoded once here, as a message's frame is: every socket but the typist's sends the same text.
    `outsiders`: see `chat.realtime.hub.send_to_room`."""
    layer = get_channel_layer()
    if layer is None:
        return
    frame = {"type": "chat.typing", "chat_id": chat_id, "user_id": user_id, "name": name}
    event = {**frame, "text": json.dumps(frame)}
    local_part = None if outsiders is None else hub.hand_over_here
    run_all_on_serving_loop([QueuedSend(hub.send_to_room, (layer, event, outsiders), local_part)])


def session_ended(*, user_id: int, close_code: int, session_key: str | None = None) -> None:
    """Close the user's sockets of this session, or all of them, on every server process."""
    event = {"type": "session.ended", "user_id": user_id, "session": session_tag(session_key), "close_code": close_code}
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


# --- people: mute a chat, block a person ----------------------------------------------


def chat_muted(*, user_id: int, chat_id: int, muted: bool) -> None:
    """Every tab of theirs restyles the chat's row and takes the new total (muted chats are
    not in it). Sent straight, not through the mailbox: merged there with a held
    `inbox.message` of the same chat, one of the two would be lost."""
    total = selectors.total_unread_for_user_id(user_id=user_id)
    send(*to_user(user_id, {"type": "inbox.muted", "chat_id": chat_id, "muted": muted, "total_unread": total}))


def block_changed(*, blocker_id: int, blocked_id: int, blocked: bool) -> None:
    """The blocker's tabs collapse (or expand again) that person's messages in open rooms.
    The blocked person is told nothing; their next message in a direct chat is refused."""
    send(*to_user(blocker_id, {"type": "inbox.blocked", "person_id": blocked_id, "blocked": blocked}))


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
