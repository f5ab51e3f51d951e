"""The channel layer: channels_redis's, starting its connections over after a failure."""

from channels_redis.core import RedisChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class ReconnectingRedisChannelLayer(RedisChannelLayer):
    """channels_redis's layer, which lets all its connections go when a receive fails.

    A receive is always in flight (each process's sockets and room hub wait on one), so it is
    the first to notice a primary that died or stopped answering. The pools' idle connections
    still lead there: through Sentinel, each would hold the next command given it until its
    timeout, though a replica has been promoted meanwhile. New connections ask the Sentinels.
    A broken connection always lets them go (after a restart the idle ones are broken too);
    a read that timed out only through Sentinel, since one Redis may just be slow.
    """

    async def receive(self, channel):
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
