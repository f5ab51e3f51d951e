"""Messages the Redis channel layer dropped because a receiving channel was full.

channels_redis drops a group message for any channel already holding its capacity (a
consumer reading too slowly: a stalled socket, a process too busy to keep up) and only
says so in an INFO log record. This filter counts those records for /metrics, whatever
the log level, and lets through only the records the configured level would have let
through. Per process. The in-memory layer drops silently, so nothing is counted there.
"""

from __future__ import annotations

import logging

LAYER_LOGGER = "channels_redis.core"
OVER_CAPACITY = "%s of %s channels over capacity in group %s"  # channels_redis's message


class OverCapacityCounter(logging.Filter):
    def __init__(self, passes_from: int):
        super().__init__()
        self.passes_from = passes_from  # the level the logger had before: what it let through
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == OVER_CAPACITY and record.args:
            self.dropped += int(record.args[0])
        return record.levelno >= self.passes_from


def count_layer_drops() -> OverCapacityCounter:
    """The counter on the layer's logger (installed once), which is made to create INFO records."""
    layer_logger = logging.getLogger(LAYER_LOGGER)
    for existing in layer_logger.filters:
        if isinstance(existing, OverCapacityCounter):
            return existing
    counter = OverCapacityCounter(passes_from=layer_logger.getEffectiveLevel())
    layer_logger.addFilter(counter)
    if layer_logger.getEffectiveLevel() > logging.INFO:
        layer_logger.setLevel(logging.INFO)
    return counter
