"""The sockets' trips to the database thread, keeping an SQLite connection between them.

Channels' `database_sync_to_async` closes the thread's connections before and after each
trip unless CONN_MAX_AGE keeps them. With 0, the default, every trip on SQLite opened the
file again and read its schema before its first statement: 0.35 ms alone, 0.6 on a busy
server, of the 5 a socket's send takes on the one thread every socket of the process waits
for. Persistent connections are no answer under ASGI, as Django's docs say: each page is
served on a thread of its own, and each such thread would leave its connection open (with
CONN_MAX_AGE=60, 300 pages left a server process 330 more descriptors of SQLite's files).

So `database_trip` keeps an SQLite connection open on the thread the sockets' trips run
on: asgiref's one thread for sync code outside a request. A file has no server that could
drop the connection, so it stays open for the process's lifetime: one per process (Django
still closes it should a trip leave it outside autocommit). Where async code is driven
from a sync thread (a management command, a test), the trips run on that thread and keep
its connection, which the thread keeps anyway. Inside a request's thread, and for a
database server, connections are let go as Channels lets them go: PostgreSQL's pool checks
a connection when it is taken again, which is how a restarted server is noticed.

The open file is the one the server started with: replacing `db.sqlite3` under a running
server (`rm db.sqlite3 && manage.py migrate`) needs a restart, or its sockets keep the old one.

Message changes from room sockets (edits, deletes, reactions) take `changes_trip`: on a
database server, a thread of their own, so that one waiting for its chat's row lock does
not hold up every other socket's trip (see there). The process's own batches (read marks,
presence rows and counts) take `background_trip`, a thread of theirs, for the same reason.
New messages' inbox counts take `fan_out_trip`, one more, for their volume (see there).

`database_busy` tells a database that cannot answer for now (worth a 503 and a retry) from
one that answered with an error: for the chat's views, the project's error handler and the
sockets (a busy database is answered "busy" or 1013, and retried; any other error is the
server's fault, answered "failed" or 1011, and logged as an error).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import SyncToAsync, sync_to_async
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections

P = ParamSpec("P")
R = TypeVar("R")


def database_trip(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`func` on Django's database thread, as Channels' `database_sync_to_async` runs it."""
    return sync_to_async(spent_connections_let_go(func), thread_sensitive=True)


def spent_connections_let_go(func: Callable[P, R]) -> Callable[P, R]:
    """`func`, with the thread's spent connections let go before and after it, as Channels does."""

    @functools.wraps(func)
    def trip(*args: P.args, **kwargs: P.kwargs) -> R:
        let_go_of_spent_connections()
        try:
            return func(*args, **kwargs)
        finally:
            let_go_of_spent_connections()

    return trip


# The one thread of `changes_trip`: a socket's changes keep their order, and take one more
# connection at most.
CHANGES_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-changes")
# The one thread of `background_trip`: the process's own batches keep their order (a
# socket's presence row is deleted before its room is recounted), one more connection.
BACKGROUND_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-background")
# The one thread of `fan_out_trip`: new messages' inbox counts, one more connection.
FAN_OUT_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-fan-out")


def changes_trip(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`func` for a message change (an edit, a delete, a reaction): on a database server, on
    a thread of its own with a connection of its own, not on the thread that every socket's
    sends, handshakes and greetings wait for.

    A change locks its chat's row, as every send to the chat does on every server process,
    and makes a few statements under it. A reaction waiting for that lock behind another
    process's group of sends held the sockets' thread for 50 to 70 ms, and the sends of this
    process queued behind it: at 100 messages and 20 reactions a second into a room of 100
    on two processes, the reactions took three quarters of that thread. On a thread of their
    own they wait for the lock while the sends go on (`benchmarks/bench_fanout.py
    --processes 2`: p99 0.7 to 3.9 s, from 1.6 to 9.5 s in runs alternating with it). On
    SQLite they stay on the sockets' thread: its one writer takes one transaction at a time
    anyway, and a second connection would wait for it in SQLite's busy handler, polling,
    instead of in line. It is one thread for the process: a change waiting for one chat's
    lock holds up the changes to others (not their sends), and a stopping process waits
    for the change under way.
    """
    return on_a_thread_of_its_own(func, CHANGES_THREAD)


def background_trip(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`func` for what the process does for all its sockets at once, with no socket waiting
    for it: the read marks it collected (`read_marks`), its presence rows and room counts
    (`presence`). On a database server, on a thread of its own, as `changes_trip`.

    A batch of read marks locks its chats' rows and the memberships it moves, as a send to
    the chat does: while messages flow, the batch waits for the sends' transactions. On the
    sockets' thread, 5,000 sockets reopening after a restart (each marking its room read)
    waited behind those batches and the rooms' recounts, up to the whole second of the thread
    in the second (`benchmarks/bench_fanout.py --storm 5000`), and the handshakes queued
    behind them. On SQLite, the sockets' thread, for the reason `changes_trip` gives.
    """
    return on_a_thread_of_its_own(func, BACKGROUND_THREAD)


def fan_out_trip(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`func` for a new message's inbox counts (`events.inbox_message_events`, a few queries
    over its whole room): on a database server, on a thread of its own, as `changes_trip`.

    They take no lock; they moved for their volume. On the sockets' thread, after a restart
    under 10 messages a second, they took most of that thread's time while thousands of
    handshakes queued behind them (`benchmarks/bench_fanout.py --storm 5000`). On the
    background thread they would wait behind read marks waiting for their chats' locks, and
    the presence rows of closing sockets behind them. On SQLite, the sockets' thread, for
    the reason `changes_trip` gives.
    """
    return on_a_thread_of_its_own(func, FAN_OUT_THREAD)


def on_a_thread_of_its_own(func: Callable[P, R], executor: ThreadPoolExecutor) -> Callable[P, Awaitable[R]]:
    if connections[DEFAULT_DB_ALIAS].vendor == "sqlite":
        return database_trip(func)
    return sync_to_async(spent_connections_let_go(func), thread_sensitive=False, executor=executor)


def let_go_of_spent_connections() -> None:
    """Django's `close_old_connections`, but an SQLite connection outside a request's thread
    has no age limit (see the module's docstring)."""
    keep_sqlite = not in_a_requests_thread(if_unknown=True)  # unknown: nothing is kept
    for connection in connections.all(initialized_only=True):
        if keep_sqlite and connection.vendor == "sqlite" and connection.connection is not None:
            connection.close_at = None
        connection.close_if_unusable_or_obsolete()


def in_a_requests_thread(*, if_unknown: bool) -> bool:
    """Whether this runs on the thread of one request (Django's ASGI handler serves each
    request under asgiref's `ThreadSensitiveContext`, on a thread of its own), not on the
    thread the sockets' trips take. `if_unknown`, should asgiref stop keeping that context
    where it does now: the caller's safe answer."""
    context = getattr(SyncToAsync, "thread_sensitive_context", None)
    if context is None:
        return if_unknown
    return context.get(None) is not None


def log_database_error(log: logging.Logger, exc: BaseException, what: str, *args) -> None:
    """A database error met on a socket's path, logged as the chat's views log theirs: a busy
    database as a warning on one line (expected under overload, when a traceback for each
    socket would cost the busy process more), any other as an error with its traceback,
    which monitoring sees."""
    if not database_busy(exc):
        log.error(what, *args, exc_info=exc)
    elif getattr(exc.__cause__, "sqlstate", None) == DEADLOCK:  # a lock order to mend: its statements
        log.warning(what, *args, exc_info=exc)
    else:
        log.warning(what + ": %s", *args, one_line(exc))


def one_line(exc: Exception) -> str:
    """A database error's text for one log line (libpq's messages run to several): what a
    busy server logs for each request or socket it turns away, instead of a traceback each."""
    return " ".join(str(exc).split())


# PostgreSQL's codes for a server that is shutting down, starting up or out of connections
# (57P01, 57P02, 57P03, 53300), for a transaction rolled back by a deadlock or a
# serialization failure (40P01, 40001: running it again is the prescribed remedy), for a
# lock wait that ran out of time (55P03, lock_timeout), and the class of lost or refused
# connections (08). Not a statement that ran out of time (57014, statement_timeout): a slow
# query is slow again, and would be "busy" for ever.
POSTGRESQL_UNAVAILABLE = {"57P01", "57P02", "57P03", "53300", "40P01", "40001", "55P03"}
DEADLOCK = "40P01"
SQLITE_BUSY = ("database is locked", "database table is locked")
# What PostgreSQL says when it refuses a connection for a while ("the database system is
# starting up", "... shutting down", "... in recovery mode"; too many clients), as against
# a wrong password or a database that does not exist.
POSTGRESQL_REFUSING_FOR_NOW = ("the database system is", "too many clients", "remaining connection slots")


def database_busy(exc: BaseException | None) -> bool:
    """Whether a database error means "try again in a moment": no pooled connection free in
    time, SQLite's writer lock held past its timeout, PostgreSQL restarting or out of
    connections, a deadlock or a lock wait that ran out. Not a missing table, a wrong
    password or a database that does not exist: those stay 500s (and the sockets' "failed"
    and 1011), which monitoring sees, rather than a "busy" that never ends."""
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    if type(cause).__name__ == "PoolTimeout":  # psycopg_pool's, when the pool is on
        return True
    if any(text in str(exc) for text in SQLITE_BUSY):
        return True
    sqlstate = getattr(cause, "sqlstate", "")
    if sqlstate is None:  # psycopg could not connect: nobody answered, or the server said why
        text = str(cause)
        return "FATAL" not in text or any(reason in text for reason in POSTGRESQL_REFUSING_FOR_NOW)
    return sqlstate in POSTGRESQL_UNAVAILABLE or sqlstate.startswith("08")
