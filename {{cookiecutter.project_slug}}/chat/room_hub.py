"""Room events fanned out once per server process, not once per socket.

Each process has one hub (per event loop) holding its open room sockets by chat. The hub,
not every socket, is in the channel layer's room group: a message to a room of a hundred
is one delivery to each process that has someone in it (one Redis push instead of a
hundred), and the hub hands the already-encoded frame to its local sockets in turn.

The hub's channel carries every room event of its process, so it must not be small: on
Redis, `channel_capacity` in CHANNEL_LAYERS gives it HUB_CHANNEL_CAPACITY (a warning is
logged at start if it would drop frames earlier); in memory the hub sizes its own queue.
"""

from __future__ import annotations

import asyncio
import logging
import re

from channels.consumer import get_handler_name
from channels.layers import InMemoryChannelLayer, get_channel_layer

from chat import events

logger = logging.getLogger(__name__)

HUB_CHANNEL_CAPACITY = 10_000
# The layer's `channel_capacity` pattern for hub channels.
HUB_CHANNEL_PATTERN = "*!chat-hub-*"


def hub_channel_name(process_channel: str) -> str:
    """A process-local channel ("<prefix>!<id>"), renamed so a capacity pattern finds it."""
    local, _, name = process_channel.partition("!")
    return f"{local}!chat-hub-{name}"


class RoomHub(events.PerLoop):
    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__(loop)
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.rooms: dict[int, set] = {}
        self.reader: asyncio.Task | None = None
        self.changing = asyncio.Lock()

    async def join(self, consumer) -> None:
        """Deliver the room events of `consumer.chat_id` to this socket from now on.

        The subscriptions change under one lock (joins, leaves, a reset after the layer
        failed), so a room's set of sockets and the hub's group membership never disagree.
        """
        async with self.changing:
            await self.start()
            if not self.rooms.get(consumer.chat_id):
                # First the group, then the socket: a socket whose join failed (the layer is
                # down) must not stand in the room and keep the next one from subscribing.
                await self.layer.group_add(events.room_group(consumer.chat_id), self.channel)
            self.rooms.setdefault(consumer.chat_id, set()).add(consumer)

    async def leave(self, consumer) -> None:
        async with self.changing:
            sockets = self.rooms.get(consumer.chat_id)
            if sockets is None or consumer not in sockets:
                return
            sockets.discard(consumer)
            if sockets:
                return
            del self.rooms[consumer.chat_id]
            try:
                await self.layer.group_discard(events.room_group(consumer.chat_id), self.channel)
            except Exception:  # the layer is down; the group expires there on its own
                logger.warning("The room hub could not leave chat %s's group", consumer.chat_id, exc_info=True)

    async def start(self) -> None:
        """A channel and a reader for it (again, after a reset); under the `changing` lock."""
        if self.channel is None:
            self.channel = hub_channel_name(await self.layer.new_channel())
            self.check_capacity()
        if self.reader is None or self.reader.done():
            self.reader = self.loop.create_task(self.read(self.channel))

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
                await self.deliver(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The layer failed (Redis restarting) and may have lost the hub's groups: the
            # sockets reconnect, join again and catch up, as each would on its own.
            logger.exception("The room hub lost its channel layer; closing its sockets")
            await self.reset()

    async def reset(self) -> None:
        async with self.changing:
            rooms, self.rooms, self.channel, self.reader = self.rooms, {}, None, None
        for sockets in rooms.values():
            for consumer in sockets:
                try:
                    await consumer.close(code=1011)
                except Exception:
                    logger.debug("Closing %s failed", consumer.channel_name, exc_info=True)

    async def deliver(self, event: dict) -> None:
        """Hand one room event to each local socket of its chat, one after the other."""
        chat_id = event.get("chat_id")
        consumers = list(self.rooms.get(chat_id, ()))
        if event.get("type") == "chat.revoked":
            # Out of the room here, whatever their own handler does: nothing more reaches them.
            consumers = [c for c in consumers if event["deleted"] or c.user.pk in event["user_ids"]]
            for consumer in consumers:
                await self.leave(consumer)
        for consumer in consumers:
            handler = getattr(consumer, get_handler_name(event), None)
            if handler is None:
                continue
            try:
                await handler(event)
            except Exception:  # one socket's failure is not the room's; that socket is let go
                logger.exception("Delivering %s to %s failed", event.get("type"), consumer.channel_name)
                await self.leave(consumer)
