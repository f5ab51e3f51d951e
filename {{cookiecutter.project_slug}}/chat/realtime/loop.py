"""The server's event loop, and the work handed to it from Django's threads.

Services run on Django's sync thread; the sockets live on the websocket server's event
loop. `run_on_serving_loop` hands event sends over without waiting for them, and
`EventQueue` runs them in the order handed over. `PerLoop` and `LoopTask` keep one
instance or one background task per event loop: a server's lives as long as the server,
while a management command's or a test's `async_to_sync` loop gets fresh ones with
nothing left over from an earlier loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from asgiref.sync import async_to_sync

logger = logging.getLogger(__name__)

# The event loop of this process's server, noted by its ASGI lifespan's startup where the
# server runs one (shutdown.Lifespan), and by the consumers.
_serving_loop: asyncio.AbstractEventLoop | None = None


def note_serving_loop() -> None:
    """Called on the server's loop: events from its worker threads are handed to it."""
    global _serving_loop
    _serving_loop = asyncio.get_running_loop()


def serving_loop_elsewhere() -> asyncio.AbstractEventLoop | None:
    """The websocket server's loop, when it runs and the caller is on another thread (one of
    Django's): work can be handed to it. None in a management command, in a test without
    sockets, or on the loop itself."""
    loop = _serving_loop
    if loop is not None and loop.is_running() and not loop.is_closed() and not on_loop(loop):
        return loop
    return None


def serving_here(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this loop is the websocket server's, which lives on (not a short-lived one)."""
    return loop is _serving_loop


def on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class QueuedSend(NamedTuple):
    """`await send_events(*args)`, one send of the event queue.

    `local_part`: the part of `send_events` that needs no channel layer (frames for this
    process's sockets), which `EventQueue` may run early with the same arguments, even
    while an earlier send's `send_events` is still on its way; then `send_events` must skip
    what it did.
    """

    send_events: Callable[..., Awaitable[None]]
    args: tuple
    local_part: Callable[..., Awaitable[None]] | None = None


def run_on_serving_loop(send_events, *args, wait: bool = False) -> None:
    """Run `await send_events(*args)` without making the calling thread wait for it.

    Services send events from Django's one sync thread, which also runs every view and
    every socket's database work. Waiting there for the event loop (`async_to_sync`)
    ties each send to the loop's backlog of frames to deliver; handing the coroutine
    over lets the thread go on to the next request. Where no server loop runs (a
    management command, a test without sockets), or with `wait`, the sends are done
    before this returns.
    """
    run_all_on_serving_loop([QueuedSend(send_events, args)], wait=wait)


def run_all_on_serving_loop(sends: list[QueuedSend], *, wait: bool = False) -> None:
    """`run_on_serving_loop` for several sends, queued on the loop together, in order."""
    loop = serving_loop_elsewhere()
    if not wait and loop is not None:
        # A fresh context: the caller's belongs to its request (and to asgiref's record of
        # the sync thread being busy, which would refuse the sends' own database work).
        loop.call_soon_threadsafe(queue_on_this_loop, sends, context=contextvars.Context())
    else:
        # Each on a loop of its own, as if handed over alone: a management command's or a
        # test's short-lived loop sends what is due at once (`mailbox.InboxFanout`). One that
        # fails does not keep the others from going; the first failure is raised after them.
        failed = None
        for send in sends:
            try:
                async_to_sync(send.send_events)(*send.args)
            except Exception as exc:
                failed = failed or exc
        if failed is not None:
            raise failed


class PerLoop:
    """One instance per event loop. Subclasses take the loop in `__init__` and keep it as
    `self.loop`; `for_running_loop()` gives the running loop's, made on first use."""

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

    @classmethod
    def made_for_running_loop(cls):
        """The running loop's instance if it has one, else None (none is made)."""
        current = cls.__dict__.get("_current")
        return current if current is not None and on_loop(current.loop) else None

    @classmethod
    def of_serving_loop(cls):
        """The websocket server's loop's instance if it has one, else None: from any
        thread, for reads only."""
        current = cls.__dict__.get("_current")
        return current if current is not None and serving_here(current.loop) else None


class LoopTask:
    """A background task that runs while it has work: `ensure_running()` starts it on the
    running loop unless it already runs there (a finished task, or one of a loop that is
    gone, is started again)."""

    def __init__(self, run: Callable[[], Awaitable[None]]):
        self.run = run
        self.task: asyncio.Task | None = None

    def ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self.run())


# Between two cancels of a task that has not stopped yet (see `cancel_until_done`).
CANCEL_AGAIN_AFTER = 0.1


async def cancel_until_done(task: asyncio.Task) -> None:
    """Cancel the task and wait until it has stopped, cancelling it again while it runs on.

    A cancel can be lost on Python 3.11: `asyncio.wait_for`, which redis-py sends every
    command through, returns the command's result instead of raising when the cancel
    comes just as the command completes, and the task goes on (a receive blocks again).
    A cancel of the caller meanwhile does not cut this short; it is raised at the end.
    """
    cancelled = False
    while not task.done():
        task.cancel()
        try:
            await asyncio.wait([task], timeout=CANCEL_AGAIN_AFTER)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


def stop_if_cancelled() -> None:
    """Raise CancelledError in a task that was cancelled but went on (a cancel lost on the way,
    see `cancel_until_done`): called before it waits again, so it stops instead."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def queue_on_this_loop(sends: list[QueuedSend]) -> None:
    EventQueue.for_running_loop().put_all(sends)


# Pauses before sending again what failed (Redis restarting, or Sentinel promoting a replica):
# about half a minute in all. Frames are hints, so one that goes out late or twice is harmless;
# one never sent leaves open sockets unaware of a message until the next one shows a gap.
SEND_RETRY_PAUSES = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


class EventQueue(PerLoop):
    """Event sends handed to the loop, run one after the other in the order handed over,
    so frames of one chat leave in the order their messages were stored. A send that fails
    is tried again after SEND_RETRY_PAUSES, the ones behind it waiting their turn; once one
    has used them all, the layer counts as down and each send gets one try until one works.

    Before each send, the local parts (see `QueuedSend`) of the sends waiting at the front
    of the queue run, up to the first send without one, so the order of frames is kept.
    A group of messages stored together (queued together, `run_all_on_serving_loop`) thus
    reaches this process's sockets in one go: each socket's writer takes all of them in
    one write. A layer send between them (a Redis round trip) let every writer run, and
    the server write to every socket, once per message; on daphne a write costs a few
    system calls per socket.

    Sends handed over while one is on its way to the layer do not wait for it to have
    their local parts run, if its own local part ran without failing: this process's
    sockets have its frames already, so nothing here is overtaken, and a sender's ack (which
    follows its message's frame) does not wait for a Redis round trip, or for the layer's
    retries, it has no part in. They still stop at the first send waiting without a local
    part, or whose local part failed (its send hands its frames over itself, later).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__(loop)
        self.waiting: collections.deque[QueuedSend] = collections.deque()
        # Whether the local part of each send at the front of `waiting` that has had its
        # turn ran without failing (the first send without one ends them).
        self.local_parts_run: collections.deque[bool] = collections.deque()
        self.running_local_parts = asyncio.Lock()
        self.runner: asyncio.Task | None = None
        self.early: set[asyncio.Task] = set()  # local parts run while a send is on its way
        self.sending_after_local_part = False  # a send is on its way whose local part ran, and did not fail
        self.layer_down = False

    def put_all(self, sends: list[QueuedSend]) -> None:
        self.waiting.extend(sends)
        if self.runner is None or self.runner.done():
            self.runner = self.loop.create_task(self.run())
        elif self.sending_after_local_part and not self.running_local_parts.locked() and not self.early_pending():
            early = self.loop.create_task(self.run_local_parts_while_sending())
            self.early.add(early)
            early.add_done_callback(self.early.discard)

    def early_pending(self) -> bool:
        """Whether an early run is due that has not started yet: it takes these sends too."""
        return any(not task.done() for task in self.early)

    async def finished(self) -> None:
        """Once every send handed over so far has been made (or has failed)."""
        while pending := [task for task in (self.runner, *self.early) if task is not None and not task.done()]:
            await asyncio.wait(pending)

    async def run(self) -> None:
        while self.waiting:
            async with self.running_local_parts:
                await self.run_local_parts()
            send_events, args, _ = self.waiting.popleft()
            # The front send's local part ran unless it has none (then none behind it ran).
            self.sending_after_local_part = self.local_parts_run.popleft() if self.local_parts_run else False
            try:
                await self.send(send_events, args)
            finally:
                self.sending_after_local_part = False

    async def send(self, send_events, args) -> None:
        for pause in (*(() if self.layer_down else SEND_RETRY_PAUSES), None):
            try:
                await send_events(*args)
            except Exception:
                if pause is None:  # a layer that stays down: clients catch up from the database
                    logger.exception("Sending events failed")
                    self.layer_down = True
                    return
                logger.warning("Sending events failed; trying again in %g s", pause, exc_info=True)
                await asyncio.sleep(pause)
            else:
                self.layer_down = False
                return

    async def run_local_parts_while_sending(self) -> None:
        async with self.running_local_parts:
            if self.sending_after_local_part:  # else the runner runs them before its next send
                await self.run_local_parts()

    async def run_local_parts(self) -> None:
        while len(self.local_parts_run) < len(self.waiting):
            if self.local_parts_run and not self.local_parts_run[-1]:
                return  # after a failed one: its frames come with its send, and these after them
            _, args, local_part = self.waiting[len(self.local_parts_run)]
            if local_part is None:
                return
            try:
                await local_part(*args)
            except Exception:  # its send does it again, and logs why it fails
                logger.debug("The local part of a send failed", exc_info=True)
                self.local_parts_run.append(False)
            else:
                self.local_parts_run.append(True)


# Group sends in flight at once. On Redis each is a few round trips, so one after the
# other a 100-member room waits 100 x those; all at once would each take a connection
# and exhaust the pool ("Too many connections").
CONCURRENT_GROUP_SENDS = 16


async def group_send_all(layer, group_events: list[tuple[str, dict]]) -> None:
    for start in range(0, len(group_events), CONCURRENT_GROUP_SENDS):
        chunk = group_events[start : start + CONCURRENT_GROUP_SENDS]
        await asyncio.gather(*(layer.group_send(group, event) for group, event in chunk))


# Group joins and leaves of sockets in flight at once, on a layer that makes each alone. A
# server restarting under thousands of sockets sees them all open (or close) together; on
# Redis each change takes a pooled connection. The project's layer waits for a free one
# (config/redis_layer.py), but channels_redis's own pool (through Sentinel, or in a project
# that keeps channels_redis's layer) raises "Too many connections" past its 100 instead of
# waiting, failing handshakes and the room hub's reads alike.
CONCURRENT_GROUP_CHANGES = 32
# Group changes given at most to one `change_groups` call, on a layer that has it.
GROUP_CHANGE_BATCH = 500


class GroupChangeFailed(Exception):
    """A group join or leave the layer could not make; its cause is what the layer raised."""


class GroupChanges(PerLoop):
    """The group joins and leaves of this loop's hubs.

    A layer with `change_groups(changes)` (config/redis_layer.py: one pipeline a Redis)
    gets the changes asked for while it makes one batch together in its next, up to
    GROUP_CHANGE_BATCH, (join, group, channel) each, in the order asked; it returns, for
    each, None or the exception that failed it. When a process stops, its hubs leave the
    groups of every person and room it served, thousands at once; one round trip each
    held its exit up by a second on Redis, and its successor's joins as long. A layer
    without it gets each change alone, CONCURRENT_GROUP_CHANGES at a time.

    A join whose caller is cancelled while it waits for its batch is taken back; once in a
    batch, and for a leave always, it is made all the same (a leave whose caller went away
    still takes the hub out of the group).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__(loop)
        self.slots = asyncio.Semaphore(CONCURRENT_GROUP_CHANGES)
        # By layer: the changes waiting for its next batch, each with its caller's future.
        self.waiting: dict[object, list[tuple[bool, str, str, asyncio.Future]]] = {}
        self.batches = LoopTask(self.make_batches)

    async def change(self, layer, *, join: bool, group: str, channel: str) -> None:
        if not hasattr(layer, "change_groups"):
            async with self.slots:
                await (layer.group_add if join else layer.group_discard)(group, channel)
            return
        # Checked here, as the layer's own group_add would: a bad name fails its caller alone.
        layer.require_valid_group_name(group)
        layer.require_valid_channel_name(channel)
        change = (join, group, channel, self.loop.create_future())
        self.waiting.setdefault(layer, []).append(change)
        self.batches.ensure_running()
        try:
            await change[3]
        except asyncio.CancelledError:
            waiting = self.waiting.get(layer, [])
            if join and change in waiting:
                waiting.remove(change)
            raise

    async def make_batches(self) -> None:
        batch = []
        try:
            while self.waiting:
                stop_if_cancelled()
                layer, waiting = next(iter(self.waiting.items()))
                batch = waiting[:GROUP_CHANGE_BATCH]
                del waiting[:GROUP_CHANGE_BATCH]
                del self.waiting[layer]
                if waiting:  # behind the other layers' changes, if any
                    self.waiting[layer] = waiting
                try:
                    outcomes = await layer.change_groups([change[:3] for change in batch])
                except Exception as exc:
                    outcomes = [exc] * len(batch)
                settle(batch, outcomes)
                batch = []
        except asyncio.CancelledError:  # the loop is closing: nobody waits for what is left
            for waiting in [batch, *self.waiting.values()]:
                for *_, done in waiting:
                    done.cancel()
            self.waiting.clear()
            raise


def settle(batch: list[tuple[bool, str, str, asyncio.Future]], outcomes: list[Exception | None]) -> None:
    """Each caller its change's outcome: its own exception for a change that failed, whose
    cause is the layer's (one shared by hundreds of callers would gather all their tracebacks)."""
    errors = [error for error in outcomes if error is not None]
    if errors:
        logger.warning("%d of %d group changes failed: %r", len(errors), len(batch), errors[0])
    for (join, group, _, done), error in zip(batch, outcomes, strict=True):
        if done.done():  # its caller was cancelled
            continue
        if error is None:
            done.set_result(None)
        else:
            failure = GroupChangeFailed(f"{'joining' if join else 'leaving'} {group} failed: {error!r}")
            failure.__cause__ = error
            done.set_exception(failure)


async def group_add(layer, group: str, channel: str) -> None:
    await GroupChanges.for_running_loop().change(layer, join=True, group=group, channel=channel)


async def group_discard(layer, group: str, channel: str) -> None:
    await GroupChanges.for_running_loop().change(layer, join=False, group=group, channel=channel)
