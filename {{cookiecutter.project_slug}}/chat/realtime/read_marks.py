"""Read marks from room sockets, written in batches.

A viewer's room marks each incoming message read. Written one by one, a busy room would
cost a transaction per viewer per message; instead each server process collects the
marks of its sockets and writes them every `FLUSH_SECONDS` in one transaction
(`services.mark_read_many`).
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async

from chat import services
from chat.realtime.loop import LoopTask

logger = logging.getLogger(__name__)

# A second is quick enough for "read" to show elsewhere, and halves the inbox.unread
# traffic of a busy room against half a second.
FLUSH_SECONDS = 1.0

_pending: dict[tuple[int, int], int] = {}


def mark(*, chat_id: int, user_id: int, up_to_id: int) -> None:
    """Queue "read up to this message"; the latest position per member wins."""
    key = (chat_id, user_id)
    _pending[key] = max(_pending.get(key, 0), up_to_id)
    _flusher.ensure_running()


async def _flush_periodically() -> None:
    while _pending:
        await asyncio.sleep(FLUSH_SECONDS)
        batch = dict(_pending)
        _pending.clear()
        try:
            await database_sync_to_async(services.mark_read_many)(marks=batch)
        except Exception:  # the database is restarting; viewers mark read again on their next message
            logger.exception("Writing %d read marks failed", len(batch))


_flusher = LoopTask(_flush_periodically)
