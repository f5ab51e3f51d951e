"""Settings for the benchmark server and the benchmark's own seeding.

The project's settings, with the channel layer chosen by the benchmark rather than by
the template option: Redis when BENCH_REDIS_URL is set, otherwise the in-memory layer.
"""

import os
import tracemalloc

from config.settings import *  # noqa: F403

# Where the server's memory goes (benchmarks.relay_asgi reports it): the number of frames kept per traceback.
if os.environ.get("BENCH_TRACEMALLOC"):
    tracemalloc.start(int(os.environ["BENCH_TRACEMALLOC"]))

if os.environ.get("BENCH_REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "config.redis_layer.ReconnectingRedisChannelLayer",  # as config/settings.py
            # A prefix per benchmark run keeps its groups apart from anything else on that Redis.
            "CONFIG": {
                # As config/settings.py: longer than channels_redis's 5 s blocking receive.
                "hosts": [{"address": os.environ["BENCH_REDIS_URL"], "socket_timeout": 30}],
                "prefix": os.environ.get("BENCH_LAYER_PREFIX", "bench"),
                "channel_capacity": {"*!chat-hub-*": 10_000},  # as config/settings.py
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# The benchmark offers its own load; per-user rate limits would turn it into 429s.
CHAT_RATE_LIMITS = {"send": None, "email_lookup": None, "new_chat": None, "new_group": None}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}

# The benchmark measures capacity, not the abuse limits: a 500-member room is above the
# product's default group size, and its senders post faster than the default 60 a minute.
# The limiter still runs on every send (its cache round trip is part of the figures).
CHAT_GROUP_MAX_MEMBERS = 1000
CHAT_RATE_LIMITS = {**CHAT_RATE_LIMITS, "send": "1000000/m"}  # noqa: F405
