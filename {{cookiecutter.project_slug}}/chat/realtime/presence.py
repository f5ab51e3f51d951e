"""Who is online in a room, counted the same way by every server process.

Each open room socket is a `RoomPresence` row. A process refreshes the rows of its own
sockets in one UPDATE every `HEARTBEAT_SECONDS`; rows not refreshed within
`STALE_AFTER` (a process that crashed) stop counting and are deleted.

A join or leave asks for a recount of its room (`recount_soon`): each process counts a
room once per burst of changes and sends the number to the room's sockets, instead of
every socket counting on every change (a room of N sockets joined by N more: N x N queries).
The rooms due together are counted in one query: after a restart, a process's rooms all
recount at once, every second while their sockets come back.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from chat import events
from chat.models import Chat, RoomPresence
from chat.realtime.database import background_trip
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
_recount_wanted: dict[int, float] = {}  # chat id -> loop time its recount was first asked for
_counted_at: dict[int, float] = {}  # chat id -> loop time of its last count, within the last interval


def live_sockets(*, chat_ids: list[int]):
    """The rooms' sockets whose process refreshed them recently (not a crashed one's)."""
    return RoomPresence.objects.filter(chat_id__in=chat_ids, seen_at__gte=timezone.now() - STALE_AFTER)


def online_counts(*, chat_ids: list[int]) -> dict[int, int]:
    """Distinct people with at least one live socket in each of these rooms (tabs count
    once), in one query."""
    counted = (
        live_sockets(chat_ids=chat_ids)
        .values("chat_id")
        .annotate(online=Count("user_id", distinct=True))
        .values_list("chat_id", "online")
    )
    return dict.fromkeys(chat_ids, 0) | dict(counted)


def viewer_ids(*, chat_id: int) -> set[int]:
    """The people reading the room right now (open in a tab that is not in the background)."""
    return set(live_sockets(chat_ids=[chat_id]).filter(visible=True).values_list("user_id", flat=True))


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
    in one INSERT (a `chat.realtime.handshakes.Batch` of their handshakes' trip); a channel
    name is new with each socket, so there is no row to update first.

    A chat deleted meanwhile fails the INSERT (its row would point nowhere): then the other
    sockets' rows go in without it. A socket whose chat is gone must not refuse the others
    opening with it (each would be refused with 1011 and reconnect)."""
    now = timezone.now()
    rows = [RoomPresence(channel_name=name, chat_id=chat, user_id=user, seen_at=now) for name, chat, user in sockets]
    try:
        with transaction.atomic():
            RoomPresence.objects.bulk_create(rows)
    except IntegrityError:
        chats = set(Chat.objects.filter(pk__in={row.chat_id for row in rows}).values_list("pk", flat=True))
        RoomPresence.objects.bulk_create([row for row in rows if row.chat_id in chats])
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
            await background_trip(remove)(channel_names=list(batch))
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
            await background_trip(refresh)(sorted(_local_channels))
        except Exception:  # a failed beat (database restarting) is retried at the next one
            logger.exception("Room presence heartbeat failed")


_heartbeat = LoopTask(_beat_while_tracking)
_remover = LoopTask(_remove_leavers)


def recount_soon(chat_id: int) -> None:
    """Count the room's people shortly (once for all changes until then) and tell its sockets."""
    _recount_wanted.setdefault(chat_id, asyncio.get_running_loop().time())
    _recounter.ensure_running()


def recount_due_at(chat_id: int, wanted_at: float) -> float:
    """RECOUNT_DELAY_SECONDS after the first change (a burst of joins is counted once), and
    RECOUNT_INTERVAL_SECONDS after the room's last count."""
    return max(wanted_at + RECOUNT_DELAY_SECONDS, _counted_at.get(chat_id, float("-inf")) + RECOUNT_INTERVAL_SECONDS)


async def _recount_while_wanted() -> None:
    # A change while counting asks again: the room's last number is never stale.
    loop = asyncio.get_running_loop()
    while _recount_wanted:
        now = loop.time()
        due_at = {chat_id: recount_due_at(chat_id, wanted_at) for chat_id, wanted_at in _recount_wanted.items()}
        first = min(due_at.values())
        if first > now:
            # Never past RECOUNT_DELAY_SECONDS: a room asking meanwhile is due no sooner.
            await asyncio.sleep(min(first - now, RECOUNT_DELAY_SECONDS))
            continue
        # The rooms due, and with them those past their delay that are due within
        # RECOUNT_DELAY_SECONDS of their interval, a little early: rooms counted together stay
        # together, one query for all of them instead of one each, spread over every second.
        # Never a room before its delay: a socket's greeting comes before the count its join
        # asked for.
        due = sorted(
            chat_id
            for chat_id, at in due_at.items()
            if at <= now + RECOUNT_DELAY_SECONDS and _recount_wanted[chat_id] + RECOUNT_DELAY_SECONDS <= now
        )
        for chat_id in due:
            del _recount_wanted[chat_id]
            _counted_at[chat_id] = now
        for chat_id in [chat_id for chat_id, at in _counted_at.items() if at < now - RECOUNT_INTERVAL_SECONDS]:
            del _counted_at[chat_id]
        try:
            online = await background_trip(online_counts)(chat_ids=due)
            for chat_id in due:
                await events.presence_changed(chat_id=chat_id, online=online[chat_id])
        except Exception:  # the database or the layer is restarting; the next change recounts
            logger.exception("Recounting presence in chats %s failed", due)


_recounter = LoopTask(_recount_while_wanted)
