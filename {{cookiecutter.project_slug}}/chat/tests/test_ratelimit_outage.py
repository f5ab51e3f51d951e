"""The rate limiter when its Redis fails: one failure pauses the cache, not every request.

A cache that stops answering costs each call its timeout, on the thread that serves every
view and socket of the process; during a Redis failover every send would pay it, and every
request or socket with a connection of its own to the old primary would pay it again.
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import caches

from chat import ratelimit
from chat.tests import test_ratelimit

UNLIMITED = "1000/d"  # a day-long window: the test never straddles two

# The counts in a real Redis of the test's own, which the test stops and starts again.
redis_cache = test_ratelimit.redis_cache


def counted(key: object) -> int | None:
    """The uses counted for `key` in the current window of UNLIMITED, as Redis holds them."""
    window = int(time.time() // 86400)
    return caches["default"].get(ratelimit.window_key("send", key, window))


def elsewhere(function, **kwargs):
    """Run on another thread, as another request would: Django gives it a cache object of its own."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(function, **kwargs).result()


def test_after_a_cache_failure_the_limiter_leaves_the_cache_alone_for_a_pause(redis_cache, monkeypatch):
    ratelimit.check_rate(action="send", key="before", rate=UNLIMITED)
    assert counted("before") == 1

    redis_cache.stop()
    ratelimit.check_rate(action="send", key="during", rate=UNLIMITED)  # fails open: not limited
    redis_cache.start()

    elsewhere(ratelimit.check_rate, action="send", key="paused", rate=UNLIMITED)
    assert counted("paused") is None, "within the pause no request of the process asks the cache"
    with pytest.raises(ratelimit.RateLimitUnavailable):
        elsewhere(ratelimit.check_rate, action="email_lookup", key="paused", rate=UNLIMITED, fail_open=False)

    monkeypatch.setattr(ratelimit, "CACHE_PAUSE_SECONDS", 0)
    ratelimit.check_rate(action="send", key="after", rate=UNLIMITED)
    assert counted("after") == 1, "after the pause the counts are kept again"


def connected_clients(redis) -> int:
    """Connections open on the test's Redis, besides the one asking."""
    from redis import Redis

    with Redis(port=redis.port) as probe:
        return len(probe.client_list()) - 1


async def open_sockets_each_sending(redis, sockets: int) -> int:
    """Sockets (tasks, as a server runs them) that each sent once and stay open: Redis connections."""
    release = asyncio.Event()
    sent = []

    async def socket(user: int) -> None:
        await sync_to_async(ratelimit.check_rate)(action="send", key=user, rate=UNLIMITED)
        sent.append(user)
        await release.wait()

    tasks = [asyncio.create_task(socket(user)) for user in range(sockets)]
    while len(sent) < sockets:
        await asyncio.sleep(0.01)
    connections = await asyncio.to_thread(connected_clients, redis)
    release.set()
    await asyncio.gather(*tasks)
    return connections


def test_every_socket_of_the_process_counts_through_one_connection_pool(redis_cache):
    connections = asyncio.run(open_sockets_each_sending(redis_cache, 5))
    assert connections == 1, "one pool for the process, not one per socket"
