"""A room socket's outgoing frames, written by a task of its own: nobody waits on a slow socket.

The room hub hands each room event of the process to its local sockets one after the
other. Handed straight to the server, a frame for a client that stopped reading waits
until that client's buffer drains (uvicorn waits; a proxy's buffers only delay it), and
every socket after it in the room waits too. So a room socket's frames wait in a queue
of its own, which its writer task empties; the hub only appends. A client that falls
MAX_QUEUED_FRAMES behind cannot keep up: its queue is dropped and it is closed with
CLOSE_TOO_SLOW, reconnects, and catches up from the database like any client that
missed frames. A socket's writer is made before it joins its room, held until the socket is
accepted: a frame that comes in between waits for the accept instead of breaking the handshake.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

# About ten seconds of a room sending 100 messages a second. The frames are the hub's
# shared, already-encoded texts: a queue holds references, not copies.
MAX_QUEUED_FRAMES = 1000

CLOSE = object()  # in the queue: close the socket once the frames before it are written


class SocketWriter:
    """The frames waiting for one socket, and the task writing them while there are any.

    An idle socket has neither a task nor a queue: most sockets are idle most of the time,
    and each would otherwise hold a waiting task, an event and an empty deque (a few KiB).
    """

    __slots__ = ("send_text", "close", "too_slow", "frames", "task", "closing", "held")

    def __init__(
        self,
        *,
        send_text: Callable[[str], Awaitable[None]],
        close: Callable[[int | None], Awaitable[None]],
        too_slow: Callable[[], None],
        held: bool = False,
    ):
        self.send_text, self.close, self.too_slow = send_text, close, too_slow
        self.frames: collections.deque | None = None  # made with the first frame
        self.task: asyncio.Task | None = None
        self.closing = False
        self.held = held  # frames wait until `release` (the socket is not accepted yet)

    def put_text(self, text: str) -> None:
        if self.closing:
            return
        if self.frames is not None and len(self.frames) >= MAX_QUEUED_FRAMES:
            self.stop()
            self.too_slow()
            return
        self.queue(text)

    def put_close(self, code: int | None) -> None:
        if not self.closing:
            self.queue((CLOSE, code))
            self.closing = True

    def queue(self, frame) -> None:
        if self.frames is None:
            self.frames = collections.deque()
        self.frames.append(frame)
        if not self.held and (self.task is None or self.task.done()):
            self.task = asyncio.get_running_loop().create_task(self.write())

    def release(self) -> None:
        """The socket is accepted: write what waited, and every frame from now on."""
        self.held = False
        if self.frames and (self.task is None or self.task.done()):
            self.task = asyncio.get_running_loop().create_task(self.write())

    def stop(self) -> None:
        """Drop what is queued and write nothing more (the socket is gone, or being let go)."""
        self.closing = True
        self.frames = None
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def write(self) -> None:
        """Until the queue is empty; then the socket is idle again, and its next frame starts a new task."""
        while self.frames:
            frame = self.frames.popleft()
            if isinstance(frame, str):
                await self.send_text(frame)
            else:
                await self.close(frame[1])
                return
        self.frames = self.task = None
