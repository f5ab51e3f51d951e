"""Settings for the benchmark server and the benchmark's own seeding.

The project's settings, with the channel layer chosen by the benchmark rather than by
the template option: Redis when BENCH_REDIS_URL is set, otherwise the in-memory layer.
"""

import os

from config.settings import *  # noqa: F403

if os.environ.get("BENCH_REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # A prefix per benchmark run keeps its groups apart from anything else on that Redis.
            "CONFIG": {
                # As config/settings.py: longer than channels_redis's 5 s blocking receive.
                "hosts": [{"address": os.environ["BENCH_REDIS_URL"], "socket_timeout": 30}],
                "prefix": os.environ.get("BENCH_LAYER_PREFIX", "bench"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
