"""The database work of opening sockets, done in shared trips to the database thread.

Opening a socket needs the database: its session and user, its membership of the room
and its presence row, or its inbox total. Each trip to Django's database thread costs a
hand-over and, on a database server, a connection taken from the pool and given back (or
opened and closed, without the pool: `chat.realtime.database`). When a server restarts,
thousands of sockets open at once: here the work of every handshake that arrives while a
trip is under way goes together in the next one (at most TRIP_SIZE), on one connection.

Work of a socket's own runs on its own: one that fails fails alone. Only the sessions and
users of the trip's sockets are read for all of them first, one query each, and each is then
checked as Channels checks it (`load_sessions`, `load_users`). Reads and writes that do for
many sockets what each would do alone (their memberships, their presence rows, their inbox
totals, their rooms' greetings) are batched: one query for all the sockets of the trip that
asked for them.

A socket's own work may go on from what a batch finds, in the same trip: written as a
generator, it yields a `Batch` and gets back that batch's value for it. A room socket reads
its user, then its membership, then writes its presence row, all in one trip. Asked one
after another, each step waited for its turn behind every handshake that had arrived
meanwhile: after a restart, thousands of them, three times over.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import sqlite3
from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

from channels.auth import get_user
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model, load_backend
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, connections
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.functional import LazyObject

from chat.realtime.database import database_trip, log_database_error
from chat.realtime.loop import LoopTask

T = TypeVar("T")

logger = logging.getLogger(__name__)

# Sockets' asks in one trip at most: a trip holds the database thread, which the other
# sockets' work (their sends, greetings and inbox totals) waits for. A trip's time is mostly
# what it costs whatever its size: each of its queries waits for the event loop, busy with
# the handshakes themselves, to let go of the interpreter's lock before it can read its answer.
# After a restart the sessions' query of a trip (1.2 ms in PostgreSQL's EXPLAIN ANALYZE) took
# 40 to 130 ms on average in the server, and trips of 200 took up to 1.3 s, as long as trips of
# 1,000. With 1,000, 5,000 sockets reopen in 5 trips instead of 25: caught up in 6.0 to 9.2 s
# instead of 8.5 to 16.5 (`benchmarks/bench_fanout.py --storm 5000`; docs/performance.md).
TRIP_SIZE = 1000
# The variables a query of a trip's batches takes at most for each item it names (a room's
# membership names a user and a chat, a greeting's missed messages a chat and an id), and
# those it takes whatever the items.
VARIABLES_PER_ITEM = 4
VARIABLES_OF_ITS_OWN = 20

# Channels' own `get_user` without its trip to the database thread: the same checks
# (the session's auth hash, so a password change logs out; the backend's, so inactive
# users are refused), run inside the shared trip instead.
_user_for_scope = inspect.unwrap(get_user)


@dataclass(frozen=True)
class Batch:
    """What a socket's own work, written as a generator, yields to read or write with the other
    sockets of its trip: `read_many(items)` as for `in_shared_batch`. The generator gets back
    this item's value in it, else `default`; or what `read_many` raised, raised in it."""

    read_many: Callable[[list], dict]
    item: Hashable
    default: Any = None


@dataclass
class _Ask:
    done: asyncio.Future
    work: Callable[[], Any] | None = None  # a socket's own work (with the socket's scope, if it reads it), or
    scope: dict | None = None
    read_many: Callable[[list], dict] | None = None  # a batched one, for
    item: Hashable = None  # this socket's item of it,
    default: Any = None  # and its result when the batch has none for the item
    withdrawn: bool = False  # taken back while queued (`withdraw`): left out of the trip


_waiting: list[_Ask] = []
_waiting_first: list[_Ask] = []  # the asks of sockets already open: in the next trip
# The queued asks of `shared_trip`, by future: found at once when withdrawn (thousands queue
# after a restart, and a client that gives up then is one of many).
_withdrawable: dict[asyncio.Future, _Ask] = {}


async def in_shared_trip(work: Callable[[], T], *, scope: dict | None = None) -> T:
    """`work()` run on the database thread together with the work of other handshakes:
    its result, or what it raised. Give the socket's `scope` if the work reads its session
    or its user (`user_for_scope`): the trip loads the sessions, then the users, of all its
    sockets in one query each. A `work` that is a generator function goes on in the same
    trip with each `Batch` it yields; what it returns is the result."""
    return await _enqueue(work=work, scope=scope).done


def shared_trip(work: Callable[[], T], *, scope: dict | None = None) -> asyncio.Future[T]:
    """`in_shared_trip`, as a future to await through `asyncio.shield`: awaited directly, the
    caller's cancellation would cancel it while its work may still run. A socket that goes
    away meanwhile can then `withdraw` the work if it is still queued, or else wait for its
    trip, and clean up what it wrote."""
    ask = _enqueue(work=work, scope=scope)
    _withdrawable[ask.done] = ask
    return ask.done


def withdraw(done: asyncio.Future) -> bool:
    """Take the work of this `shared_trip` future back, if it is still queued (its future is
    cancelled, and its trip will leave it out): whether it did, and so the work will never
    run. False if its trip has taken it (wait for the future) or it is done."""
    ask = _withdrawable.pop(done, None)
    if ask is None:
        return False
    ask.withdrawn = True
    done.cancel()
    return True


async def in_shared_batch(
    read_many: Callable[[list], dict], item: Hashable, default: Any = None, *, socket_open: bool = False
) -> Any:
    """`read_many(items)`, called once per trip with every item asked of it in that trip
    (each once), returns a dict by item: this item's value in it, else `default`; or what
    `read_many` raised. Give it a module-level function (the batches of a trip are told
    apart by it) that does for many items what each would need on its own.

    `socket_open`: asked for a socket already accepted (its greeting, its inbox total),
    whose client now waits for it: it goes in the next trip, ahead of the handshakes still waiting. After a
    restart thousands of those queue up, and a page whose greeting is late fetches instead.
    """
    return await _enqueue(read_many=read_many, item=item, default=default, first=socket_open).done


def _enqueue(*, first: bool = False, **fields) -> _Ask:
    ask = _Ask(done=asyncio.get_running_loop().create_future(), **fields)
    (_waiting_first if first else _waiting).append(ask)
    _trips.ensure_running()
    return ask


def user_for_scope(scope):
    """The socket's user: loaded already (by Channels' AuthMiddleware, or with the other
    users of its trip by `load_users`: its `scope["user"]`), or from the session here, as
    that middleware would. On the database thread."""
    user = scope.get("user")
    if user is None:
        user = scope["user"] = _user_for_scope(scope)
    return user


def _next_trip() -> list[_Ask]:
    """Up to TRIP_SIZE asks, those of open sockets first; the withdrawn ones left out."""
    trip: list[_Ask] = []
    for waiting in (_waiting_first, _waiting):
        while waiting and len(trip) < TRIP_SIZE:
            taken = waiting[: TRIP_SIZE - len(trip)]
            del waiting[: len(taken)]
            for ask in taken:
                _withdrawable.pop(ask.done, None)  # in a trip now: to be waited for
            trip += [ask for ask in taken if not ask.withdrawn]
    return trip


async def _run_trips() -> None:
    while _waiting_first or _waiting:
        trip = _next_trip()
        if not trip:  # every ask left was withdrawn
            continue
        try:
            outcomes = await database_trip(_run_all)(trip)
        except Exception as exc:  # the trip itself failed: each of its handshakes fails with it
            outcomes = [(None, exc)] * len(trip)
        for ask, (result, error) in zip(trip, outcomes, strict=True):
            if ask.done.done() or ask.done.get_loop().is_closed():  # the socket went away meanwhile
                continue
            if error is None:
                ask.done.set_result(result)
            else:
                ask.done.set_exception(error)


def load_sessions(sessions) -> None:
    """Load these sessions, not loaded yet, in one query, each as it would load itself:
    those of Django's database engine that exist and have not expired (any other engine,
    and a session not found, load on their own when read)."""
    stores = {}
    for session in sessions:
        store = session._wrapped if isinstance(session, LazyObject) else session
        if (
            type(store) is DatabaseSessionStore
            and store.session_key is not None
            and not hasattr(store, "_session_cache")
        ):
            stores.setdefault(store.session_key, []).append(store)
    if not stores:
        return
    found = DatabaseSessionStore.get_model_class().objects.filter(
        session_key__in=list(stores), expire_date__gt=timezone.now()
    )
    for row in found:
        for store in stores[row.session_key]:
            store._session_cache = store.decode(row.session_data)  # what SessionBase caches of load()


def load_users(scopes) -> None:
    """Set the user of each scope that has a session and no user yet, as Channels' `get_user`
    (`user_for_scope`) would, reading the users of every session logged in through Django's
    `ModelBackend` (or a backend that keeps its `get_user`) in one query.

    The checks are Channels': the session's backend must still be in AUTHENTICATION_BACKENDS;
    the backend must let the user authenticate (its `user_can_authenticate`: ModelBackend's
    refuses inactive users); the
    session's auth hash must match the user's (a password change logs its other sessions
    out), else the session is flushed and the socket is anonymous. A scope this cannot
    decide (no session key, another backend's `get_user`, a user id the model rejects) is
    left for `user_for_scope`, which reads it alone.
    """
    user_model = get_user_model()
    pending = []
    for scope in scopes:
        session = scope.get("session")
        if session is None or scope.get("user") is not None:
            continue
        try:
            user_id = user_model._meta.pk.to_python(session[SESSION_KEY])
            backend_path = session[BACKEND_SESSION_KEY]
        except (KeyError, ValidationError):
            continue
        if backend_path not in settings.AUTHENTICATION_BACKENDS:
            continue
        backend = load_backend(backend_path)
        if type(backend).get_user is ModelBackend.get_user:
            pending.append((scope, session, user_id, backend))
    if not pending:
        return
    found = user_model._default_manager.in_bulk({user_id for _, _, user_id, _ in pending})
    handed_out = set()
    for scope, session, user_id, backend in pending:
        user = found.get(user_id)
        if user_id in handed_out:  # each socket its own instance, as when each reads its own
            user = copy.copy(user)
        handed_out.add(user_id)
        if user is not None and not backend.user_can_authenticate(user):
            user = None
        if hasattr(user, "get_session_auth_hash"):
            session_hash = session.get(HASH_SESSION_KEY)
            if not (session_hash and constant_time_compare(session_hash, user.get_session_auth_hash())):
                session.flush()
                user = None
        scope["user"] = user or AnonymousUser()


def items_per_query() -> int:
    """How many items one query of a trip may name, on the database thread: all of a trip's,
    but on SQLite as many as the variables it allows a statement leave room for. SQLite
    allows 32,766 since 3.32 and 999 before (Django supports 3.31), where a trip's batch of
    1,000 items would fail with "too many SQL variables": its queries then name fewer each."""
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.vendor != "sqlite":
        return TRIP_SIZE
    connection.ensure_connection()
    variables = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return max(1, (variables - VARIABLES_OF_ITS_OWN) // VARIABLES_PER_ITEM)


def in_chunks(items: list, size: int) -> Generator[list]:
    return (items[start : start + size] for start in range(0, len(items), size))


def read_in_chunks(read_many: Callable[[list], dict], items: list, size: int) -> dict:
    """`read_many(items)`, as queries of at most `size` items each."""
    found = {}
    for chunk in in_chunks(items, size):
        found.update(read_many(chunk))
    return found


def _run_all(trip: list[_Ask]) -> list[tuple[Any, BaseException | None]]:
    """Each ask's (result, error): the sessions and users first, then every ask's own work,
    then the batches asked, in rounds: those asked by work that went on from a batch of the
    round before go together in the next."""
    outcomes: list[tuple[Any, BaseException | None]] = [(None, None)] * len(trip)
    scopes = [ask.scope for ask in trip if ask.scope is not None]
    try:
        per_query = items_per_query()
    except Exception:  # no connection to ask: each query meets that on its own, as it would alone
        per_query = TRIP_SIZE
    try:
        sessions = [scope["session"] for scope in scopes if scope.get("session") is not None]
        for chunk in in_chunks(sessions, per_query):
            load_sessions(chunk)
        load_users(scopes)  # in batches of Django's own (`in_bulk`)
    except Exception as exc:  # each socket's own work then loads its session and user itself, and fails alone
        log_database_error(logger, exc, "Loading the sessions and users of %d handshakes together failed", len(trip))
    steps: dict[int, Generator] = {}  # by ask: own work that is under way
    asked: dict[int, Batch] = {}  # by ask: what it waits for, in the next round

    def go_on(index: int, value: Any = None, error: BaseException | None = None) -> None:
        try:
            step = steps[index].send(value) if error is None else steps[index].throw(error)
            if not isinstance(step, Batch):
                steps[index].close()
                raise TypeError(f"a handshake's steps yield a Batch, not {step!r}")
            asked[index] = step
        except StopIteration as done:
            outcomes[index] = (done.value, None)
        except Exception as exc:
            outcomes[index] = (None, exc)

    def answer(index: int, value: Any = None, error: BaseException | None = None) -> None:
        if index in steps:
            go_on(index, value, error)
        else:
            outcomes[index] = (value, error)

    for index, ask in enumerate(trip):
        if ask.read_many is not None:
            asked[index] = Batch(ask.read_many, ask.item, ask.default)
            continue
        try:
            result = ask.work()
        except Exception as exc:
            outcomes[index] = (None, exc)
            continue
        if inspect.isgenerator(result):
            steps[index] = result
            go_on(index)
        else:
            outcomes[index] = (result, None)
    while asked:
        this_round, asked = asked, {}
        batches: dict[Callable, list[int]] = {}
        for index, batch in this_round.items():
            batches.setdefault(batch.read_many, []).append(index)
        for read_many, indexes in batches.items():
            try:
                items = list(dict.fromkeys(this_round[index].item for index in indexes))
                found = read_in_chunks(read_many, items, per_query)
            except Exception as exc:
                trace = exc.__traceback__
                for index in indexes:
                    # Raised in each generator with the traceback it came with, not one grown
                    # by every generator it passed through (logged for each socket).
                    answer(index, error=exc.with_traceback(trace))
                continue
            for index in indexes:
                answer(index, found.get(this_round[index].item, this_round[index].default))
    return outcomes


_trips = LoopTask(_run_trips)
