"""The room hub when its Redis connection fails: it lets every connection of the layer go.

Through Sentinel, a pooled connection left idle during a failover still leads to the old
primary; if that one stopped answering, each command given such a connection waits out its
timeout. After the hub's own connection failed, no old connection may be handed out again.
"""

import asyncio
import shutil

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers, get_channel_layer

from chat.room_hub import RoomHub
from chat.tests.test_ratelimit import RedisProcess

TIMEOUT = 5


@pytest.fixture
def redis_layer(settings, tmp_path):
    """A channels_redis layer on a redis-server of the test's own."""
    pytest.importorskip("channels_redis", reason="the Redis channel layer comes with the redis option")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    redis = RedisProcess(str(tmp_path))
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{redis.port}/0"], "channel_capacity": {"*!chat-hub-*": 10_000}},
        }
    }
    channel_layers.backends.clear()
    yield redis
    redis.stop()


def clients(redis) -> list[dict]:
    """The connections open on the test's Redis, besides the one asking."""
    from redis import Redis

    with Redis(port=redis.port) as probe:
        own = probe.client_id()
        return [client for client in probe.client_list() if client["id"] != own]


async def wait_for(condition) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not await condition():
            await asyncio.sleep(0.05)


async def hub_loses_its_connection(redis) -> set[str]:
    layer = get_channel_layer()
    hub = RoomHub.for_running_loop()
    async with hub.changing:
        await hub.start()  # the hub's reader blocks on its channel (BZPOPMIN)
    # Some more connections for the pool: sends at once, each on a connection of its own.
    await asyncio.gather(*(layer.group_send(f"chat.room.{n}", {"type": "chat.presence"}) for n in range(4)))

    async def blocked() -> bool:
        return any(c["cmd"] == "bzpopmin" for c in await sync_to_async(clients)(redis))

    await wait_for(blocked)
    before = {client["id"] for client in await sync_to_async(clients)(redis)}
    reader = next(c for c in await sync_to_async(clients)(redis) if c["cmd"] == "bzpopmin")
    await sync_to_async(kill_client)(redis, reader["id"])

    async def hub_reset() -> bool:
        return hub.reader is None

    await wait_for(hub_reset)
    after = {client["id"] for client in await sync_to_async(clients)(redis)}
    return before & after


def kill_client(redis, client_id: str) -> None:
    from redis import Redis

    with Redis(port=redis.port) as probe:
        probe.client_kill_filter(_id=client_id)


def test_after_its_connection_fails_the_hub_closes_every_connection_the_layer_pooled(redis_layer):
    still_open = asyncio.run(hub_loses_its_connection(redis_layer))
    assert still_open == set(), "connections from before the failure are never handed out again"
