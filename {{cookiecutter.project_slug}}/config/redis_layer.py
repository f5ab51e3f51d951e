"""The channel layer: channels_redis's, starting its connections over after a failure."""

import asyncio
from contextlib import suppress

from channels_redis.core import RedisChannelLayer
from redis.asyncio import BlockingConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Connections per process (channels_redis's default), and how long a command waits for one.
POOL_SIZE = 100
POOL_WAIT_SECONDS = 20


class ReconnectingRedisChannelLayer(RedisChannelLayer):
    """channels_redis's layer, which lets all its connections go when a receive fails.

    A receive is always in flight (each process's sockets and room hub wait on one), so it is
    the first to notice a primary that died or stopped answering. The pools' idle connections
    still lead there: through Sentinel, each would hold the next command given it until its
    timeout, though a replica has been promoted meanwhile. New connections ask the Sentinels.
    A broken connection always lets them go (after a restart the idle ones are broken too);
    a read that timed out only through Sentinel, since one Redis may just be slow.
    """

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
        """channels_redis's receive, ended for sure when cancelled.

        A cancellation that meets the blocking pop's read timeout can be lost inside redis-py
        (the timeout swallows it and the command is retried): the receive then goes on popping,
        and the socket whose receive it was never finishes closing, which holds up a server's
        graceful shutdown until its timeout. Run as a task of its own, the receive is cancelled
        again until it has ended.
        """
        receiving = asyncio.ensure_future(self.receive_reconnecting(channel))
        try:
            return await asyncio.shield(receiving)
        except asyncio.CancelledError:
            while not receiving.done():
                receiving.cancel()
                await asyncio.wait({receiving}, timeout=0.1)
            with suppress(BaseException):
                receiving.result()  # retrieved, so asyncio does not report it
            raise

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
