"""Liveness and readiness, for load balancers and orchestrators.

- `/healthz`: the process answers. No I/O: a database outage must not get every process
  restarted, only taken out of rotation.
- `/readyz`: the process can serve. A database query, a cache round trip and a
  channel-layer round trip (a message sent to a new channel and received back) run at
  once, each within READYZ_TIMEOUT_SECONDS; 200 if all pass, else 503 naming the failing
  parts. The body says only which part failed (it is public); why goes to the log, once
  per change of readiness, so a probe every few seconds does not flood it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import caches
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers

logger = logging.getLogger(__name__)


def query_database() -> None:
    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()  # back to the pool (or closed): this thread keeps nothing


def cache_round_trip() -> None:
    cache = caches["default"]
    key = f"ops:readyz:{uuid.uuid4().hex}"
    cache.set(key, "ready", timeout=60)
    try:
        if cache.get(key) != "ready":
            raise RuntimeError("the cache did not return the value just stored")
    finally:
        cache.delete(key)


async def channel_layer_round_trip() -> None:
    layer = get_channel_layer()
    channel = f"ops-readyz.{uuid.uuid4().hex}"  # left unread after a timeout, it expires with the layer's expiry
    await layer.send(channel, {"type": "ops.readyz"})
    if (await layer.receive(channel)).get("type") != "ops.readyz":
        raise RuntimeError("the channel layer returned another message")


class OnThreadsOfItsOwn:
    """A blocking check run on daemon threads of its own, never on the thread Django's sync
    views share: a database or cache that hangs holds up neither the pages nor the other
    checks, nor the process's exit (an executor's threads would be waited for). While two
    runs still hang, the next probe fails at once instead of starting another thread."""

    def __init__(self, check: Callable[[], None], *, at_once: int = 2):
        self.check = check
        self.slots = threading.BoundedSemaphore(at_once)

    async def __call__(self) -> None:
        if not self.slots.acquire(blocking=False):
            raise RuntimeError("the previous checks have not returned yet")
        loop = asyncio.get_running_loop()
        answered = loop.create_future()

        def answer(error: BaseException | None) -> None:
            if answered.done():  # timed out and cancelled meanwhile
                return
            if error is None:
                answered.set_result(None)
            else:
                answered.set_exception(error)

        def run() -> None:
            error = None
            try:
                self.check()
            except BaseException as exc:
                error = exc
            finally:
                self.slots.release()
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(answer, error)

        threading.Thread(target=run, name=f"readyz-{self.check.__name__}", daemon=True).start()
        await answered


CHECKS: dict[str, Callable[[], Awaitable[None]]] = {
    "database": OnThreadsOfItsOwn(query_database),
    "cache": OnThreadsOfItsOwn(cache_round_trip),
    "channel_layer": channel_layer_round_trip,
}


async def failure_of(check: Callable[[], Awaitable[None]], timeout: float) -> str | None:
    """None if the check passed in time, else what went wrong (for the log)."""
    try:
        await asyncio.wait_for(check(), timeout)
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


class ReadinessLog:
    """Logs readiness when it changes, not on every probe (per process)."""

    def __init__(self):
        self.failing: dict[str, str] | None = None

    def note(self, failing: dict[str, str]) -> None:
        previous, self.failing = self.failing, failing
        if previous is not None and failing.keys() == previous.keys():
            return
        if failing:
            reasons = "; ".join(f"{name}: {reason}" for name, reason in failing.items())
            logger.warning("Not ready: %s (%s)", ", ".join(failing), reasons)
        elif previous:
            logger.warning("Ready again: %s answer", ", ".join(previous))


readiness_log = ReadinessLog()


def never_cached(response: HttpResponse) -> HttpResponse:
    add_never_cache_headers(response)
    return response


async def healthz(request: HttpRequest) -> HttpResponse:
    return never_cached(HttpResponse("ok\n", content_type="text/plain; charset=utf-8"))


async def readyz(request: HttpRequest) -> HttpResponse:
    timeout = settings.READYZ_TIMEOUT_SECONDS
    results = await asyncio.gather(*(failure_of(check, timeout) for check in CHECKS.values()))
    failing = {name: reason for name, reason in zip(CHECKS, results, strict=True) if reason}
    readiness_log.note(failing)
    body = {
        "status": "unavailable" if failing else "ok",
        "failing": list(failing),
        "checks": {name: "failing" if name in failing else "ok" for name in CHECKS},
    }
    response = JsonResponse(body, status=503 if failing else 200)
    # A 503 is this endpoint's answer, not a server error: Django's request logger would
    # log it at ERROR on every probe (and send it to Sentry); ReadinessLog logs it once.
    response._has_been_logged = True
    return never_cached(response)
