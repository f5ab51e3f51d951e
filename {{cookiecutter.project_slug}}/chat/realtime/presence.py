"""Who is online in a room, counted the same way by every server process.

Each open room socket is a `RoomPresence` row. A process refreshes the rows of its own
sockets in one UPDATE every `HEARTBEAT_SECONDS`; rows not refreshed within
`STALE_AFTER` (a process that crashed) stop counting and are deleted.

A join or leave asks for a recount of its room (`recount_soon`): each process counts a
room once per burst of changes and sends the number to the room's sockets, instead of
every socket counting on every change (a room of N sockets joined by N more: N x N queries).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from django.utils import timezone

from chat import events
from chat.models import RoomPresence
from chat.realtime.database import database_trip
from chat.realtime.loop import LoopTask

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30
STALE_AFTER = timedelta(seconds=HEARTBEAT_SECONDS * 3)

# A burst of joins (a page of people opening the room) becomes one count; while people keep
# coming and going (a restart's thousands of sockets reopening), a room's count goes out at
# most once per interval: each one is a frame to every socket in the room.
RECOUNT_DELAY_SECONDS = 0.2
RECOUNT_INTERVAL_SECONDS = 1.0

# Rows deleted in one statement at most (SQLite takes a limited number of parameters).
LEAVE_BATCH = 500

_local_channels: set[str] = set()
_leaving: dict[str, asyncio.Future] = {}  # channel name -> resolved once its row is deleted
_recount_wanted: set[int] = set()
_recounts: dict[int, LoopTask] = {}


def live_sockets(*, chat_id: int):
    """The room's sockets whose process refreshed them recently (not a crashed one's)."""
    return RoomPresence.objects.filter(chat_id=chat_id, seen_at__gte=timezone.now() - STALE_AFTER)


def online_count(*, chat_id: int) -> int:
    """Distinct people with at least one live socket in the room (tabs count once)."""
    return live_sockets(chat_id=chat_id).values("user_id").distinct().count()


def viewer_ids(*, chat_id: int) -> set[int]:
    """The people reading the room right now (open in a tab that is not in the background)."""
    return set(live_sockets(chat_id=chat_id).filter(visible=True).values_list("user_id", flat=True))


def set_visible(*, channel_name: str, visible: bool) -> None:
    RoomPresence.objects.filter(channel_name=channel_name).exclude(visible=visible).update(visible=visible)


def room_user_ids(*, chat_id: int, user_ids: list[int] | None = None) -> list[int]:
    """The people (of these, or anyone) with a socket open in a room."""
    sockets = RoomPresence.objects.filter(chat_id=chat_id)
    if user_ids is not None:
        sockets = sockets.filter(user_id__in=user_ids)
    return list(sockets.values_list("user_id", flat=True).distinct())


def join_many(sockets) -> dict:
    """The presence rows of sockets opening together, (channel name, chat id, user id) each,
    in one INSERT (`chat.realtime.handshakes.in_shared_batch`); a channel name is new with
    each socket, so there is no row to update first."""
    now = timezone.now()
    rows = [RoomPresence(channel_name=name, chat_id=chat, user_id=user, seen_at=now) for name, chat, user in sockets]
    RoomPresence.objects.bulk_create(rows)
    return {}


def remove(*, channel_names: list[str]) -> None:
    RoomPresence.objects.filter(channel_name__in=channel_names).delete()


def refresh(channel_names: list[str]) -> None:
    now = timezone.now()
    RoomPresence.objects.filter(channel_name__in=channel_names).update(seen_at=now)
    RoomPresence.objects.filter(seen_at__lt=now - STALE_AFTER).delete()


async def track(channel_name: str) -> None:
    """Start refreshing this socket's row (and start the process's heartbeat once)."""
    _local_channels.add(channel_name)
    _heartbeat.ensure_running()


def untrack(channel_name: str) -> None:
    _local_channels.discard(channel_name)


async def leave(channel_name: str) -> None:
    """Delete this socket's row, in one statement with the rows of every socket that left
    while the previous statement ran. A server that stops closes all its sockets at once:
    its shutdown then waits for a few DELETEs, not for one trip to the database thread per
    socket. Raises what the deletion raised."""
    untrack(channel_name)
    deleted = asyncio.get_running_loop().create_future()
    _leaving[channel_name] = deleted
    _remover.ensure_running()
    await deleted


async def _remove_leavers() -> None:
    while _leaving:
        batch = {name: _leaving.pop(name) for name in list(_leaving)[:LEAVE_BATCH]}
        try:
            await database_trip(remove)(channel_names=list(batch))
        except Exception as exc:
            _settle(batch.values(), exc)
        else:
            _settle(batch.values(), None)


def _settle(waiters, exc: Exception | None) -> None:
    for deleted in waiters:
        if deleted.done() or deleted.get_loop().is_closed():
            continue
        if exc is None:
            deleted.set_result(None)
        else:
            deleted.set_exception(exc)


async def _beat_while_tracking() -> None:
    while _local_channels:
        await asyncio.sleep(HEARTBEAT_SECONDS)
        try:
            await database_trip(refresh)(sorted(_local_channels))
        except Exception:  # a failed beat (database restarting) is retried at the next one
            logger.exception("Room presence heartbeat failed")


_heartbeat = LoopTask(_beat_while_tracking)
_remover = LoopTask(_remove_leavers)


def recount_soon(chat_id: int) -> None:
    """Count the room's people shortly (once for all changes until then) and tell its sockets."""
    _recount_wanted.add(chat_id)
    if chat_id not in _recounts:
        _recounts[chat_id] = LoopTask(lambda: _recount(chat_id))
    _recounts[chat_id].ensure_running()


async def _recount(chat_id: int) -> None:
    # A change while counting is counted again: the room's last number is never stale.
    loop = asyncio.get_running_loop()
    counted_at = float("-inf")
    try:
        while chat_id in _recount_wanted:
            await asyncio.sleep(max(RECOUNT_DELAY_SECONDS, counted_at + RECOUNT_INTERVAL_SECONDS - loop.time()))
            _recount_wanted.discard(chat_id)
            counted_at = loop.time()
            try:
                online = await database_trip(online_count)(chat_id=chat_id)
                await events.presence_changed(chat_id=chat_id, online=online)
            except Exception:  # the database or the layer is restarting; the next change recounts
                logger.exception("Recounting presence in chat %s failed", chat_id)
    finally:
        if chat_id in _recounts and _recounts[chat_id].is_current():
            del _recounts[chat_id]
