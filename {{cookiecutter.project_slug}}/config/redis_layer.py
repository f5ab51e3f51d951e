"""The channel layer: channels_redis's, starting its connections over after a failure,
stopping its receives for sure when they are cancelled, and making fewer round trips.

Each message to a busy room is a group send from the process that stored it and a receive
in every process with someone in the room. channels_redis makes four round trips for the
one and four for each of the other, one after the other, and each costs the event loop a
task and a system call or two. Here a group send is two round trips (on one Redis) and a
process takes up to RECEIVE_BATCH events queued for it in one. At 100 messages a second into
a room of 100 on two processes (`benchmarks/bench_fanout.py --processes 2 --rates 100`) this
took the slowest deliveries (p99) from 0.5 to 1.7 s down to 0.2 to 0.6 s.
"""

import asyncio
import collections
import itertools
import logging
import time
from contextlib import suppress

from channels_redis.core import BoundedQueue, RedisChannelLayer
from redis.asyncio import BlockingConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chat.realtime.loop import cancel_until_done, stop_if_cancelled

# Connections per process (channels_redis's default), and how long a command waits for one.
POOL_SIZE = 100
POOL_WAIT_SECONDS = 20
# The most messages of the process's channels taken off Redis in one round trip.
RECEIVE_BATCH = 100

logger = logging.getLogger(__name__)

# A group send's pushes to its members' keys, in one script: each key's expired messages
# dropped, then the message pushed unless the key is at its capacity. KEYS: the members'
# keys; ARGV: a message for each, a capacity for each, the time, the oldest time kept, the
# keys' expiry. Returns how many keys were full.
GROUP_PUSH = """
local count = #KEYS
local now, oldest, expiry = ARGV[2 * count + 1], ARGV[2 * count + 2], ARGV[2 * count + 3]
local full = 0
for i = 1, count do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, oldest)
    if redis.call('ZCARD', KEYS[i]) < tonumber(ARGV[count + i]) then
        redis.call('ZADD', KEYS[i], now, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        full = full + 1
    end
end
return full
"""


class ReconnectingRedisChannelLayer(RedisChannelLayer):
    """channels_redis's layer, which lets all its connections go when a receive fails, and
    whose receives stop when they are cancelled (`receive`).

    A receive is always in flight (each process's sockets and room hub wait on one), so it is
    the first to notice a primary that died or stopped answering. The pools' idle connections
    still lead there: through Sentinel, each would hold the next command given it until its
    timeout, though a replica has been promoted meanwhile. New connections ask the Sentinels.
    A broken connection always lets them go (after a restart the idle ones are broken too);
    a read that timed out only through Sentinel, since one Redis may just be slow.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.receive_buffer = ReceiveBuffers(self.get_capacity)
        # Events popped off a process's key, each with the time it was sent, not handed out yet.
        self.taken: dict[str, collections.deque[tuple[bytes, float]]] = collections.defaultdict(collections.deque)
        # The pop under way for each such key: it outlives a receive cancelled meanwhile.
        self.popping: dict[str, asyncio.Task] = {}
        self.group_push = None  # GROUP_PUSH, registered: sent by its digest after the first time

    def create_pool(self, index):
        """A pool that makes a command wait for a free connection when all are busy, where
        redis-py's default pool raises "Too many connections": thousands of sockets opening
        at once (a server restarting under them) would otherwise fail handshakes and sends.
        Through Sentinel, channels_redis's own pool."""
        host = dict(self.hosts[index])
        if "address" not in host:
            return super().create_pool(index)
        host.setdefault("max_connections", POOL_SIZE)
        host.setdefault("timeout", POOL_WAIT_SECONDS)
        return BlockingConnectionPool.from_url(host.pop("address"), **host)

    async def receive(self, channel):
        """channels_redis's receive, run in a task of its own that stops when its caller is cancelled.

        A cancel can be lost inside channels_redis's receive (on Python 3.11, see
        `cancel_until_done`), which then blocks on Redis again, five seconds after five
        seconds: a socket or room hub cancelled as its event loop closes (a server shutting
        down, a test ending) would keep the loop from ever closing. Here the caller gets its
        CancelledError at once, and the receive is cancelled again until it has stopped.
        """
        stop_if_cancelled()
        receiving = asyncio.ensure_future(self.receive_reconnecting(channel))
        try:
            return await asyncio.shield(receiving)
        except asyncio.CancelledError:
            await cancel_until_done(receiving)
            with suppress(BaseException):
                receiving.result()  # retrieved, so asyncio does not report it
            raise

    async def receive_single(self, channel):
        """The next message of a channel; for this process's channel (the one Redis key that
        every local channel shares: "specific.<id>!"), taken off Redis with those behind it,
        up to RECEIVE_BATCH in one round trip.

        channels_redis makes four round trips a message there, one after the other (its
        backup queue's clean-up script, the pop, the backup's write, the backup's clean-up),
        so a busy room's events queued behind Redis round trips. Here the pop runs in a task
        of its own (`pop_under_way`): a receive cancelled while it waits (a hub whose last
        socket left) leaves it running, and what it took waits here for the next receive,
        whichever local channel it is for. An event that waited here longer than the layer's
        `expiry` is dropped, as Redis would have dropped it.
        """
        if not channel.endswith("!"):
            return await super().receive_single(channel)
        assert self.require_valid_channel_name(channel, receive=True), "Channel name invalid"
        while True:
            taken, oldest = self.taken[channel], time.time() - self.expiry
            while taken and taken[0][1] < oldest:
                taken.popleft()
            if taken:
                break
            await asyncio.shield(self.pop_under_way(channel))
        member, _ = taken.popleft()
        message = self.deserialize(member)
        return message.pop("__asgi_channel__", channel), message

    def pop_under_way(self, channel) -> asyncio.Task:
        """The pop of the channel's events under way in this event loop, or a new one."""
        popping = self.popping.get(channel)
        if popping is None or popping.done() or popping.get_loop() is not asyncio.get_running_loop():
            popping = self.popping[channel] = asyncio.ensure_future(self.pop(channel))
            popping.add_done_callback(retrieved)  # the receive that started it may be gone
        return popping

    async def pop(self, channel) -> None:
        """Whatever is queued for the channel (up to RECEIVE_BATCH), else the first event to
        come within channels_redis's blocking time, or none: kept in `taken`."""
        connection = self.connection(self.consistent_hash(channel))
        key = self.prefix + channel
        popped = await connection.zpopmin(key, RECEIVE_BATCH)
        if not popped:
            result = await connection.bzpopmin(key, timeout=self.brpop_timeout)
            popped = [result[1:]] if result is not None else []
        self.taken[channel].extend((member, float(sent_at)) for member, sent_at in popped)

    async def group_send(self, group, message):
        """channels_redis's group send in two round trips instead of four (on one Redis; one
        more for each further shard with members): the group's members read in one (its
        expired members dropped first, in the same pipeline), and the message pushed to
        their keys in one script a shard (each key's expired messages dropped in it). A
        message to a room is one group send; each round trip saved is one less wait for the
        event queue sending it."""
        assert self.require_valid_group_name(group), "Group name not valid"
        key = self._group_key(group)
        connection = self.connection(self.consistent_hash(group))
        async with connection.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(key, min=0, max=int(time.time()) - self.group_expiry)
            pipe.zrange(key, 0, -1)
            _, members = await pipe.execute()
        channels = [member.decode("utf8") for member in members]
        keys_by_shard, messages, capacities = self._map_channel_keys_to_connection(channels, message)
        for index, keys in keys_by_shard.items():
            now = time.time()
            args = [messages[key] for key in keys] + [capacities[key] for key in keys]
            args += [now, int(now) - int(self.expiry), int(self.expiry)]
            shard = self.connection(index)
            if self.group_push is None:
                self.group_push = shard.register_script(GROUP_PUSH)
            full = await self.group_push(keys=keys, args=args, client=shard)
            if full:
                logger.info("%s of %s channels over capacity in group %s", full, len(channels), group)

    async def change_groups(self, changes: list[tuple[bool, str, str]]) -> list[Exception | None]:
        """Group joins and leaves, (join, group, channel) each, made as `group_add` and
        `group_discard` make them, in the order given, in one round trip for each Redis
        they are on (side by side); for each change, None or the exception that failed it.
        The chat's hubs give the changes asked for together here
        (chat.realtime.loop.GroupChanges): a process stopping under thousands of sockets
        leaves the groups of every person and room it served at once, and its successor
        joins them again as they reconnect."""
        outcomes: list[Exception | None] = [None] * len(changes)
        by_shard = collections.defaultdict(list)
        for position, (join, group, channel) in enumerate(changes):
            by_shard[self.consistent_hash(group)].append((position, join, self._group_key(group), channel))
        await asyncio.gather(*(self.change_on_shard(index, part, outcomes) for index, part in by_shard.items()))
        return outcomes

    async def change_on_shard(self, index: int, changes: list, outcomes: list) -> None:
        """One Redis's part of `change_groups`, tried again once on a connection that broke
        (an idle one left from before Redis restarted): made again, each change ends the same."""
        for attempt in (1, 2):
            try:
                async with self.connection(index).pipeline(transaction=False) as pipe:
                    for _, join, key, channel in changes:
                        if join:
                            pipe.zadd(key, {channel: time.time()})
                            pipe.expire(key, self.group_expiry)
                        else:
                            pipe.zrem(key, channel)
                    replies = iter(await pipe.execute(raise_on_error=False))
            except Exception as exc:
                if attempt == 1 and isinstance(exc, RedisConnectionError | RedisTimeoutError):
                    continue
                for position, *_ in changes:
                    outcomes[position] = exc
                return
            for position, join, _, _ in changes:
                own = list(itertools.islice(replies, 2 if join else 1))  # a join's ZADD and EXPIRE
                outcomes[position] = next((reply for reply in own if isinstance(reply, Exception)), None)
            return

    async def flush(self):
        self.taken.clear()
        for popping in self.popping.values():
            popping.cancel()
        self.popping.clear()
        await super().flush()

    async def receive_reconnecting(self, channel):
        try:
            return await super().receive(channel)
        except RedisConnectionError:
            await self.close_pools()
            raise
        except RedisTimeoutError:
            if self.through_sentinel:
                await self.close_pools()
            raise

    @property
    def through_sentinel(self) -> bool:
        return any("master_name" in host for host in self.hosts)


def retrieved(task: asyncio.Task) -> None:
    """Mark a task's exception as seen: a pop whose receive was cancelled has nobody to raise
    it to (the next receive starts a pop of its own), and asyncio would report it."""
    if not task.cancelled():
        task.exception()


class ReceiveBuffers(dict):
    """The events taken off Redis for each local channel, not received yet, each channel
    holding as many as its capacity on Redis (CHANNEL_LAYERS' `channel_capacity`).

    channels_redis holds the layer's default capacity (100) for every channel and drops the
    oldest past it. Whichever local channel's receive takes a pop's events hands the others'
    to their channels here; a room hub busy handing out a burst of its own would lose events
    that Redis had kept for it (its capacity there is 10,000).
    """

    def __init__(self, capacity_of):
        super().__init__()
        self.capacity_of = capacity_of

    def __missing__(self, channel):
        buffer = self[channel] = BoundedQueue(self.capacity_of(channel))
        return buffer
