"""The database work of opening sockets, done in shared trips to the database thread.

Opening a socket needs the database: its session and user, its membership of the room
and its presence row, or its inbox total. Each trip to Django's database thread costs a
hand-over and, with CONN_MAX_AGE=0, a connection of its own (on SQLite a file opened and
its PRAGMAs run each time). When a server restarts, thousands of sockets open at once:
here the work of every handshake that arrives while a trip is under way goes together in
the next one (at most TRIP_SIZE), on one connection. Each piece of work still runs on its
own: one that fails fails alone, and the others are unaffected; work given the same `key`
(what a room looks like now, asked by each of its reopening sockets) runs once per trip.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import TypeVar

from channels.auth import get_user
from channels.db import database_sync_to_async

from chat.realtime.loop import LoopTask

T = TypeVar("T")

# Work items of one trip at most: a trip holds the database thread, which HTTP requests
# and the other sockets' work wait for.
TRIP_SIZE = 200

_waiting: list[tuple[Callable, object, asyncio.Future]] = []

# Channels' own `get_user` without its trip to the database thread: the same checks
# (the session's auth hash, so a password change logs out; the backend's, so inactive
# users are refused), run inside the shared trip instead.
_user_for_scope = inspect.unwrap(get_user)


async def in_shared_trip(work: Callable[[], T], *, key: object = None) -> T:
    """`work()` run on the database thread together with the work of other handshakes:
    its result, or what it raised. Work with the same (not None) `key` in one trip runs
    once, and each of its askers gets that result: give a key only to reads whose answer
    is the same for every asker."""
    done = asyncio.get_running_loop().create_future()
    _waiting.append((work, key, done))
    _trips.ensure_running()
    return await done


def user_for_scope(scope):
    """The socket's user: loaded by Channels' AuthMiddleware already (its `scope["user"]`),
    or from the session here, as that middleware would. On the database thread."""
    user = scope.get("user")
    if user is None:
        user = scope["user"] = _user_for_scope(scope)
    return user


async def _run_trips() -> None:
    while _waiting:
        trip = _waiting[:TRIP_SIZE]
        del _waiting[:TRIP_SIZE]
        try:
            outcomes = await database_sync_to_async(_run_all)([(work, key) for work, key, _ in trip])
        except Exception as exc:  # the trip itself failed: each of its handshakes fails with it
            outcomes = [(None, exc)] * len(trip)
        for (_, _, done), (result, error) in zip(trip, outcomes, strict=True):
            if done.done() or done.get_loop().is_closed():  # the socket went away meanwhile
                continue
            if error is None:
                done.set_result(result)
            else:
                done.set_exception(error)


def _run_all(works: list[tuple[Callable, object]]) -> list[tuple[object, BaseException | None]]:
    outcomes, by_key = [], {}
    for work, key in works:
        if key is not None and key in by_key:
            outcomes.append(by_key[key])
            continue
        try:
            outcome = (work(), None)
        except Exception as exc:
            outcome = (None, exc)
        outcomes.append(outcome)
        if key is not None:
            by_key[key] = outcome
    return outcomes


_trips = LoopTask(_run_trips)
