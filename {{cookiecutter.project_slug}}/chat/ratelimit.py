"""Rate limits for the chat's costly or revealing actions.

Sliding windows: a use counts in the current fixed window, and the previous window's count
weighs in for the share of it still inside the last period, so a burst across a window
boundary cannot double the rate (60/m lets 60 through in any minute, not 120 in two
seconds). Counts live in Django's cache (`CHAT_RATE_LIMIT_CACHE`, default "default": Redis
when the project uses Redis, so every server process shares them). Rates are
"<count>/<period>", period s, m, h or d with an optional multiple ("5/15m"), set per action
in `CHAT_RATE_LIMITS`; None turns a limit off.

A refused use is taken back, so someone who keeps trying while limited does not push
their own wait further. When the cache cannot be reached, `fail_open=False` raises
RateLimitUnavailable (answered with a 503): e-mail lookups reveal who has an account, so
they stay shut rather than unlimited. Other actions go through, and the outage is logged.
After a failure the limiter leaves the cache alone for CACHE_PAUSE_SECONDS: a cache that
stopped answering (a Redis failover, a partition) would otherwise cost every request its
timeout, on the one thread that serves every view and socket of the process.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

DEFAULT_RATES = {
    "send": "60/m",  # messages per user
    # Every address a user looks up (check-user, new chat, new group, add member) counts
    # here, before the lookup: the answers reveal who has an account.
    "email_lookup": "120/h",
    "new_chat": "30/m",  # direct chats started
    "new_group": "20/h",  # groups created
    # "is typing" signals per user: a page sends one per 3 s while its person types, so
    # two tabs typing at once fit; past it they are dropped.
    "typing": "40/m",
    "edit": "30/m",  # message edits and deletes for everyone
    "react": "60/m",  # reactions added or taken back
    "report": "10/h",  # messages reported to the staff
}
PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
RATE_PATTERN = re.compile(r"(\d+)/(\d*)([smhd])")
UNAVAILABLE_RETRY_AFTER = 30
# How long the counts go unread after the cache failed: about a Sentinel failover.
CACHE_PAUSE_SECONDS = 5.0


class CachePaused(Exception):
    """The cache failed a moment ago; it is not asked again until the pause is over."""


class RateLimited(Exception):
    def __init__(self, action: str, retry_after: int):
        self.action = action
        self.retry_after = retry_after
        super().__init__(f"Too many requests; try again in {wait_text(retry_after)}.")


def wait_text(seconds: int) -> str:
    """A wait as people say it: seconds under a minute, whole minutes (rounded up) past it."""
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = -(-seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


class RateLimitUnavailable(Exception):
    """The counts cannot be read, and this action may not go unlimited."""

    retry_after = UNAVAILABLE_RETRY_AFTER

    def __init__(self, action: str):
        self.action = action
        super().__init__("This cannot be checked right now; try again in a minute.")


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int


def parse_rate(rate: str) -> Rate:
    match = RATE_PATTERN.fullmatch(str(rate))
    if match is None or match.group(2) == "0":
        raise ImproperlyConfigured(f"Rate {rate!r} must look like '60/m' or '5/15m' (period s, m, h or d).")
    count, multiple, period = match.groups()
    return Rate(count=int(count), seconds=int(multiple or 1) * PERIOD_SECONDS[period])


def rate_for(action: str) -> Rate | None:
    rates = {**DEFAULT_RATES, **getattr(settings, "CHAT_RATE_LIMITS", {})}
    rate = rates.get(action)
    return parse_rate(rate) if rate else None


@dataclass
class CountsCache:
    """The counts' cache object, one for every request and socket of the process, and when
    it last failed.

    Django gives each request and socket a cache object of its own, each with a Redis
    connection pool of its own: a connection per open socket, and after a failover each
    socket's first check would wait out its own dead connection to the old primary.
    """

    configured: tuple  # (alias, its CACHES entry): tests that swap the settings get a new one
    cache: object
    failed_at: float | None = None


_counts_cache: CountsCache | None = None


def counts_cache() -> CountsCache:
    global _counts_cache
    alias = getattr(settings, "CHAT_RATE_LIMIT_CACHE", "default")
    configured = (alias, settings.CACHES.get(alias))
    if _counts_cache is None or _counts_cache.configured != configured:
        _counts_cache = None  # a cache that cannot even be made is not paused: each use tries again
        _counts_cache = CountsCache(configured, caches.create_connection(alias))
    return _counts_cache


def usable_cache():
    """The counts' cache, unless it failed within the last CACHE_PAUSE_SECONDS (CachePaused)."""
    counts = counts_cache()
    if counts.failed_at is not None and time.monotonic() - counts.failed_at < CACHE_PAUSE_SECONDS:
        raise CachePaused
    return counts.cache


def note_failure(exc: Exception) -> None:
    if _counts_cache is not None and not isinstance(exc, CachePaused):
        _counts_cache.failed_at = time.monotonic()


def window_key(action: str, key: object, window: int) -> str:
    # Hashed: keys may be e-mails or usernames (any length, any characters, personal data).
    digest = hashlib.sha256(str(key).encode()).hexdigest()[:32]
    return f"chat:rate:{action}:{digest}:{window}"


def count_uses(cache, uses: list[tuple[str, str]], cost: int, *, timeout: int) -> list[tuple[int, int]]:
    """Add `cost` to each use's current window (`uses`: its current and previous window's
    keys, a key perhaps more than once); for each, both windows' counts right after it.

    On Django's Redis cache this is one round trip (a pipeline) for all of them, instead
    of three each: the checks run on the thread that serves every view and socket of the
    process, before every message, reaction and typing signal. The counts stay plain
    integers under the cache's own keys, so `cache.get` and `cache.decr` read and take
    back what this wrote (with Django's own serializer, which stores integers as they are).
    """
    if isinstance(cache, RedisCache):
        pipeline = cache._cache.get_client(write=True).pipeline(transaction=False)
        for current_key, previous_key in uses:
            current = cache.make_and_validate_key(current_key)
            pipeline.set(current, 0, ex=timeout, nx=True)  # the window's first use starts it, with its expiry
            pipeline.incrby(current, cost)
            pipeline.get(cache.make_and_validate_key(previous_key))
        replies = pipeline.execute()
        return [(replies[i + 1], int(replies[i + 2] or 0)) for i in range(0, len(replies), 3)]
    return [
        (add_uses(cache, current_key, cost, timeout=timeout), cache.get(previous_key, 0))
        for current_key, previous_key in uses
    ]


def add_uses(cache, key: str, cost: int, *, timeout: int) -> int:
    try:
        return cache.incr(key, cost)  # all but a window's first use skip the add
    except ValueError:  # the window's first use
        if cache.add(key, cost, timeout=timeout):
            return cost
        return cache.incr(key, cost)  # someone else's request started the window meanwhile


def check_rate(*, action: str, key: object, cost: int = 1, rate: str | None = None, fail_open: bool = True) -> None:
    """Count `cost` uses of `action` by `key` (a user id, an IP, an address); raise
    RateLimited once over the rate. `rate` overrides the action's configured rate."""
    limit = parse_rate(rate) if rate else rate_for(action)
    if limit is None or cost <= 0:
        return
    refusal = count_and_judge(action, limit, [key], cost=cost, fail_open=fail_open)[0]
    if refusal is not None:
        raise refusal


def check_rates(*, action: str, keys: list) -> list[RateLimited | None]:
    """One use of `action` by each of `keys` (a key may come more than once), counted in one
    round trip on Redis: for each, the RateLimited that `check_rate` would have raised,
    called for them one after the other, or None."""
    limit = rate_for(action)
    if limit is None or not keys:
        return [None] * len(keys)
    return count_and_judge(action, limit, keys, cost=1, fail_open=True)


def count_and_judge(action: str, limit: Rate, keys: list, *, cost: int, fail_open: bool) -> list[RateLimited | None]:
    window, elapsed = divmod(time.time(), limit.seconds)
    window = int(window)
    uses = [(window_key(action, key, window), window_key(action, key, window - 1)) for key in keys]
    try:
        cache = usable_cache()  # inside: a cache that cannot even be opened is an outage too
        counts = count_uses(cache, uses, cost, timeout=2 * limit.seconds + 1)
    except Exception as exc:
        note_failure(exc)
        # The failure itself with its traceback; uses during the pause after it in a line.
        failed = not isinstance(exc, CachePaused)
        if not fail_open:
            logger.error("Rate-limit cache unavailable; refusing %s", action, exc_info=failed)
            raise RateLimitUnavailable(action) from exc
        logger.warning("Rate-limit cache unavailable; not limiting %s", action, exc_info=failed)
        return [None] * len(keys)
    share_of_previous = 1 - elapsed / limit.seconds
    refusals: list[RateLimited | None] = []
    taken_back: dict[str, int] = {}  # a refused use no longer counts for the uses after it
    for (current_key, _), (current, previous) in zip(uses, counts, strict=True):
        current -= taken_back.get(current_key, 0)
        if previous * share_of_previous + current <= limit.count:
            refusals.append(None)
            continue
        take_back(cache, current_key, cost)
        taken_back[current_key] = taken_back.get(current_key, 0) + cost
        counted = current - cost
        retry_after = seconds_until_room(limit, previous=previous, current=counted, elapsed=elapsed, cost=cost)
        refusals.append(RateLimited(action, retry_after=retry_after))
    return refusals


def take_back(cache, key: str, cost: int) -> None:
    try:
        cache.decr(key, cost)
    except Exception:  # the key expired or the cache went down meanwhile: nothing to take back
        logger.debug("Could not take back a refused use", exc_info=True)


def seconds_until_room(limit: Rate, *, previous: int, current: int, elapsed: float, cost: int = 1) -> int:
    """How long until `cost` more uses fit under the sliding count, if nothing else comes.

    A cost over the whole rate never fits; the answer is then when both windows are empty.
    """
    room = limit.count - cost  # what the counts must fall to for these uses
    if 0 <= current <= room and previous:  # the previous window has to fade out far enough
        wait = limit.seconds * (1 - (room - current) / previous) - elapsed
    elif 0 < room < current:  # this window alone is over: wait into the next one until it has faded enough
        wait = (limit.seconds - elapsed) + limit.seconds * (1 - room / current)
    else:
        wait = 2 * limit.seconds - elapsed
    return max(1, math.ceil(wait))


def refund(*, action: str, key: object, cost: int = 1, rate: str | None = None) -> None:
    """Take back uses counted by check_rate (a log-in that succeeded was no guess)."""
    limit = parse_rate(rate) if rate else rate_for(action)
    if limit is None:
        return
    window = int(time.time() // limit.seconds)
    try:
        usable_cache().decr(window_key(action, key, window), cost)
    except Exception:  # the window rolled over or the cache is down: nothing to take back
        logger.debug("Could not refund %s", action, exc_info=True)
