"""Read marks from room sockets, written in batches.

A viewer's room marks each incoming message read. Written one by one, a busy room would
cost a transaction per viewer per message; instead each server process collects the
marks of its sockets and writes them every `FLUSH_SECONDS` in one transaction
(`services.mark_read_many`). A server shutting down (SIGTERM: a deploy, a restart)
cancels the writer, which then writes what it still holds, within FINAL_FLUSH_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from chat import services
from chat.realtime.database import background_trip
from chat.realtime.loop import LoopTask

logger = logging.getLogger(__name__)

# A second is quick enough for "read" to show elsewhere, and halves the inbox.unread
# traffic of a busy room against half a second.
FLUSH_SECONDS = 1.0
# How long a stopping server waits for the marks it still holds to be written.
FINAL_FLUSH_SECONDS = 2.0

_pending: dict[tuple[int, int], int] = {}


def mark(*, chat_id: int, user_id: int, up_to_id: int) -> None:
    """Queue "read up to this message"; the latest position per member wins."""
    key = (chat_id, user_id)
    _pending[key] = max(_pending.get(key, 0), up_to_id)
    _flusher.ensure_running()


async def _flush_periodically() -> None:
    try:
        while _pending:
            await asyncio.sleep(FLUSH_SECONDS)
            await _write(_take_pending())
    except asyncio.CancelledError:  # the loop is closing (the server stops): write what is left, if quickly
        if _pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_write(_take_pending()), FINAL_FLUSH_SECONDS)
        raise


def _take_pending() -> dict[tuple[int, int], int]:
    batch = dict(_pending)
    _pending.clear()
    return batch


async def _write(batch: dict[tuple[int, int], int]) -> None:
    try:
        await background_trip(services.mark_read_many)(marks=batch)
    except Exception:  # the database is restarting; viewers mark read again on their next message
        logger.exception("Writing %d read marks failed", len(batch))


_flusher = LoopTask(_flush_periodically)
