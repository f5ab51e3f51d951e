"""Per-user rate limits for the chat's costly or revealing actions.

Fixed windows counted in Django's cache (`CHAT_RATE_LIMIT_CACHE`, default "default":
Redis when the project uses Redis, so every server process shares the counts). Rates are
"<count>/<period>" with period s, m, h or d, set per action in `CHAT_RATE_LIMITS`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

DEFAULT_RATES = {
    "send": "60/m",  # messages per user
    "check_user": "30/m",  # e-mail lookups reveal who has an account
    "new_chat": "30/m",  # direct chats started
    "new_group": "20/h",  # groups created
}
PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class RateLimited(Exception):
    def __init__(self, action: str, retry_after: int):
        self.action = action
        self.retry_after = retry_after
        super().__init__(f"Too many requests; try again in {retry_after} s.")


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int


def parse_rate(rate: str) -> Rate:
    try:
        count, period = rate.split("/")
        return Rate(count=int(count), seconds=PERIOD_SECONDS[period])
    except (ValueError, KeyError):
        raise ImproperlyConfigured(f"Rate {rate!r} must look like '60/m' (period s, m, h or d).") from None


def rate_for(action: str) -> Rate | None:
    rates = {**DEFAULT_RATES, **getattr(settings, "CHAT_RATE_LIMITS", {})}
    rate = rates.get(action)
    return parse_rate(rate) if rate else None


def count_use(key: str, *, timeout: int) -> int:
    cache = caches[getattr(settings, "CHAT_RATE_LIMIT_CACHE", "default")]
    try:
        return cache.incr(key)  # all but a window's first use skip the add
    except ValueError:  # the window's first use
        if cache.add(key, 1, timeout=timeout):
            return 1
        return cache.incr(key)  # someone else's request started the window meanwhile


def check_rate(*, action: str, user_id: int) -> None:
    """Count one use of `action` by this user; raise RateLimited once over the rate."""
    rate = rate_for(action)
    if rate is None:
        return
    now = int(time.time())
    window = now // rate.seconds
    try:
        used = count_use(f"chat:rate:{action}:{user_id}:{window}", timeout=rate.seconds + 1)
    except Exception:  # the cache (Redis) is down: let people chat rather than fail
        logger.warning("Rate-limit cache unavailable; not limiting %s", action, exc_info=True)
        return
    if used > rate.count:
        raise RateLimited(action, retry_after=(window + 1) * rate.seconds - now)
