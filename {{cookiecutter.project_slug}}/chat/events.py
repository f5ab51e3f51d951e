"""The one place that names and sends channel-layer events.

Services call these from `transaction.on_commit`. Frames are hints: each carries the
chat and message ids a client needs to notice a gap and catch up over HTTP
(`messages/?after=<id>`), because a channel layer delivers at most once.

Event vocabulary (the consumer method that handles each is named after it):

room group ``chat.room.<chat_id>``
    chat.message   a new message: ids, previous id in the chat, sender, rendered bubble
    chat.revoked   these users lost access (removed, left) or the group was deleted
    chat.presence  recount who is online in the room
user group ``chat.user.<user_id>`` (the inbox socket of every tab)
    inbox.message  a new message in one of their chats, with unread counts
    inbox.unread   their unread count of one chat changed (read elsewhere)
    inbox.changed  a chat was added, removed or renamed: refresh the list
"""

from __future__ import annotations

import asyncio
import json

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.template.loader import render_to_string

from chat import presence, selectors


def room_group(chat_id: int) -> str:
    return f"chat.room.{chat_id}"


def user_group(user_id: int) -> str:
    return f"chat.user.{user_id}"


def send(group: str, event: dict) -> None:
    send_many([(group, event)])


def send_many(group_events: list[tuple[str, dict]]) -> None:
    """Send events to groups in one trip to the event loop.

    Called from a worker thread, each `async_to_sync` waits for the loop (and the GIL):
    one trip per message instead of one per member keeps a busy room's sends cheap.
    """
    layer = get_channel_layer()
    if layer is not None and group_events:
        async_to_sync(group_send_all)(layer, group_events)


# Group sends in flight at once. On Redis each is a few round trips, so one after the
# other a 100-member room waits 100 x those; all at once would each take a connection
# and exhaust the pool ("Too many connections").
CONCURRENT_GROUP_SENDS = 16


async def group_send_all(layer, group_events: list[tuple[str, dict]]) -> None:
    for start in range(0, len(group_events), CONCURRENT_GROUP_SENDS):
        chunk = group_events[start : start + CONCURRENT_GROUP_SENDS]
        await asyncio.gather(*(layer.group_send(group, event) for group, event in chunk))


def message_created(*, message, prev_id: int) -> None:
    """Tell the room (the bubble) and the inbox (the counts) of every member not viewing it.

    Members with the room open see the message there and their room socket marks it
    read, which sends them `inbox.unread`; an `inbox.message` too would only make their
    badges flicker, and costs a group send per viewer per message in a busy room.
    """
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
    send(
        room_group(message.chat_id),
        {"type": "chat.message", "message_id": message.pk, "sender_id": message.sender_id, "text": json.dumps(frame)},
    )
    preview = message.body[:120]
    viewers = presence.viewer_ids(chat_id=message.chat_id) - {message.sender_id}
    send_many(
        [
            (
                user_group(user_id),
                {
                    "type": "inbox.message",
                    "chat_id": message.chat_id,
                    "message_id": message.pk,
                    "sender_id": message.sender_id,
                    "sender_name": sender_name,
                    "preview": preview,
                    "unread": unread,
                    "total_unread": total,
                },
            )
            for user_id, (unread, total) in selectors.unread_by_member(chat_id=message.chat_id).items()
            if user_id not in viewers
        ]
    )


def unread_changed(*, memberships) -> None:
    """Tell each member whose read position moved their new counts (one totals query)."""
    totals = selectors.total_unread_by_user(user_ids={m.user_id for m in memberships})
    send_many(
        [
            (
                user_group(m.user_id),
                {
                    "type": "inbox.unread",
                    "chat_id": m.chat_id,
                    "unread": m.unread_count,
                    "total_unread": totals.get(m.user_id, 0),
                },
            )
            for m in memberships
        ]
    )


def chat_list_changed(*, user_ids, chat_id: int) -> None:
    send_many([(user_group(user_id), {"type": "inbox.changed", "chat_id": chat_id}) for user_id in user_ids])


def access_revoked(*, chat_id: int, user_ids, channel_names, deleted: bool = False) -> None:
    """Close the rooms of people who lost access, and drop the chat from their lists.

    Their sockets also leave the room group here, on the server: were the `chat.revoked`
    frame dropped (a full channel), they still would not get another message.
    """
    send(
        room_group(chat_id),
        {"type": "chat.revoked", "chat_id": chat_id, "user_ids": list(user_ids), "deleted": deleted},
    )
    layer = get_channel_layer()
    if layer is not None and channel_names:
        async_to_sync(discard_all)(layer, room_group(chat_id), channel_names)
    chat_list_changed(user_ids=user_ids, chat_id=chat_id)


async def discard_all(layer, group: str, channel_names: list[str]) -> None:
    for channel_name in channel_names:
        await layer.group_discard(group, channel_name)


async def presence_changed(*, chat_id: int) -> None:
    """Ask every socket in the room to recount who is online (sent from consumers)."""
    await get_channel_layer().group_send(room_group(chat_id), {"type": "chat.presence", "chat_id": chat_id})
