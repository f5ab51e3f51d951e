"""The channel layer: channels_redis's, starting its connections over after a failure and
stopping its receives for sure when they are cancelled."""

import asyncio
from contextlib import suppress

from channels_redis.core import RedisChannelLayer
from redis.asyncio import BlockingConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chat.realtime.loop import cancel_until_done, stop_if_cancelled

# Connections per process (channels_redis's default), and how long a command waits for one.
POOL_SIZE = 100
POOL_WAIT_SECONDS = 20


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
