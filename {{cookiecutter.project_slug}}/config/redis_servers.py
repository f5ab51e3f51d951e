"""Where the channel layer and the cache find Redis: one server, or the primary Sentinel names.

With `REDIS_SENTINELS` (host:port,...) and `REDIS_SENTINEL_MASTER`, both ask the Sentinels
for the current primary on every new connection, so after a failover (the primary dies,
Sentinel promotes a replica) they follow it without a restart. Connections to the old
primary fail once; what was in flight is retried or caught up (see README, "Redis high
availability"). Otherwise both use `REDIS_URL`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.exceptions import ImproperlyConfigured

# Sentinels answer "who is the primary?" at once; a Sentinel that does not is skipped for the next.
SENTINEL_SOCKET_TIMEOUT = 2.0
# The channel layer's reads time out after this long: past channels_redis's 5 s blocking
# receive (BZPOPMIN; redis-py 8's 5 s default would cut it short and close idle sockets with
# 4011). Through Sentinel, sooner: a primary that stops answering (a partition) then holds
# live frames for at most that long before the processes move to the one Sentinel promotes.
LAYER_SOCKET_TIMEOUT = 30.0
SENTINEL_LAYER_SOCKET_TIMEOUT = 10.0
# A cache call waits this long for Redis before failing (its callers fail open or answer 503),
# rather than hang a request, and Django's one sync thread with it, on a host that is gone.
CACHE_SOCKET_TIMEOUT = 2.0


@dataclass(frozen=True)
class RedisServers:
    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    # The primary's and replicas' requirepass (REDIS_URL carries its own), and the Sentinels'.
    # Kept out of repr: Django's debug page shows settings, and cleans only names like PASSWORD.
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)

    @property
    def uses_sentinel(self) -> bool:
        return bool(self.sentinels)

    def channel_layer_host(self) -> dict:
        """One entry of channels_redis's "hosts"."""
        if not self.uses_sentinel:
            return {"address": self.url, "socket_timeout": LAYER_SOCKET_TIMEOUT}
        return {
            "master_name": self.master,
            "sentinels": list(self.sentinels),
            "sentinel_kwargs": self.sentinel_options(),
            **({"password": self.password} if self.password else {}),
            "socket_timeout": SENTINEL_LAYER_SOCKET_TIMEOUT,
        }

    def cache(self) -> dict:
        """Django's RedisCache; through Sentinel it gets redis-py's Sentinel pool as its pool class."""
        timeouts = {"socket_connect_timeout": CACHE_SOCKET_TIMEOUT, "socket_timeout": CACHE_SOCKET_TIMEOUT}
        backend = "django.core.cache.backends.redis.RedisCache"
        if not self.uses_sentinel:
            return {"BACKEND": backend, "LOCATION": self.url, "OPTIONS": timeouts}
        from redis.sentinel import Sentinel

        options = {
            "pool_class": "redis.sentinel.SentinelConnectionPool",
            # The pool's own arguments: whom to ask, and for which primary.
            "service_name": self.master,
            "sentinel_manager": Sentinel(list(self.sentinels), sentinel_kwargs=self.sentinel_options()),
            **({"password": self.password} if self.password else {}),
            **timeouts,
        }
        # The host in LOCATION is never dialled: each connection asks the Sentinels for the primary.
        return {"BACKEND": backend, "LOCATION": f"redis://{self.master}/0", "OPTIONS": options}

    def sentinel_options(self) -> dict:
        options = {"socket_timeout": SENTINEL_SOCKET_TIMEOUT, "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT}
        if self.sentinel_password:
            options["password"] = self.sentinel_password
        return options


def sentinel_address(value: str) -> tuple[str, int]:
    host, _, port = value.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ImproperlyConfigured(f"REDIS_SENTINELS: {value!r} is not host:port (e.g. 10.0.0.5:26379).")
    return host.strip("[]"), int(port)


def redis_servers(
    *, url: str, sentinels: list[str], master: str, password: str = "", sentinel_password: str = ""
) -> RedisServers:
    """The settings' Redis, from REDIS_URL or from REDIS_SENTINELS and REDIS_SENTINEL_MASTER."""
    addresses = tuple(sentinel_address(value) for value in sentinels if value.strip())
    if addresses and not master:
        raise ImproperlyConfigured("REDIS_SENTINELS is set: set REDIS_SENTINEL_MASTER to the name they monitor.")
    return RedisServers(
        url=url,
        sentinels=addresses,
        master=master,
        password=password or None,
        sentinel_password=sentinel_password or None,
    )
