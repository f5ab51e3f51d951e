"""Sends from room sockets, stored in groups: group commit, and back-pressure past capacity.

Every socket's database work runs on Django's one sync thread. Stored one by one, each
send is a trip to that thread and a transaction of its own, and a busy room queues
sends behind each other for seconds. So a process's room sockets hand their sends to
one `SendQueue`, which stores everything that arrived while the previous group was
being stored in one trip and one transaction: the busier the room, the larger the
groups, the cheaper each message. Each chat's sends in a group are stored together, in a
few statements however many they are (`services.store_sends_together`); one refused send
(not a member, a bad body) refuses only itself, and each chat's row and unread counts are
updated once per group. Should a client id be taken meanwhile (a retry racing its first
send), the group is stored again one send per savepoint (`services.SendGroup`).

Past capacity the queue says so instead of letting sends wait without bound: when its
oldest send has waited MAX_WAIT_SECONDS, the group on the database thread has been there
that long, or this process's room hub delivers frames more than MAX_DELIVERY_LAG_SECONDS
late, new sends are answered `busy` with a `retry_after` at once (nothing stored), and the
client sends again; so are sends that have waited MAX_WAIT_SECONDS (`SendQueue.shed`), and
the HTTP route answers 503 by the same measure (`refusing_sends`). A message is then either
stored once and delivered promptly, or not stored and still in the client's outbox.

On a server, HTTP sends join the same queue (`store_from_a_request`): the request's thread
waits for the send's group on the serving loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import logging
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import IntegrityError, OperationalError, connection, transaction

from chat import services
from chat.models import Chat, Membership, Message
from chat.ratelimit import RateLimited
from chat.realtime.database import database_busy, database_trip, in_a_requests_thread, log_database_error
from chat.realtime.hub import RoomHub
from chat.realtime.loop import PerLoop, serving_loop_elsewhere

logger = logging.getLogger(__name__)

# Sends stored in one transaction at most: a group's commit stays short.
MAX_GROUP = 100
# Past these the process is over capacity: new sends are answered "busy".
MAX_WAIT_SECONDS = 1.0
MAX_DELIVERY_LAG_SECONDS = 1.0
BUSY_RETRY_AFTER = 1


class Busy(Exception):
    """Over capacity: nothing was stored; send again after `retry_after` seconds."""

    retry_after = BUSY_RETRY_AFTER


@dataclass
class Send:
    chat_id: int
    sender: object
    body: str
    client_id: str
    reply_to_id: int | None = None
    after: str = ""  # the client id of the sender's message this one must follow (services.OutOfOrder)


class SendQueue(PerLoop):
    """This event loop's sends on their way to the database, in arrival order."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__(loop)
        self.waiting: collections.deque[tuple[Send, asyncio.Future, float]] = collections.deque()
        self.runner: asyncio.Task | None = None
        self.trip_started: float | None = None  # loop time the group on the database thread left
        self.shedding: asyncio.TimerHandle | None = None

    async def store(self, send: Send, *, delivery_lag: float = 0.0) -> Message:
        """The stored message, once its group has committed. Raises what the send
        service raises for it, RateLimited, or Busy (over capacity, or the database is)."""
        if self.over_capacity(delivery_lag):
            raise Busy
        stored = self.loop.create_future()
        self.waiting.append((send, stored, self.loop.time()))
        self.shed_later()
        if self.runner is None or self.runner.done():
            self.runner = self.loop.create_task(self.run())
        result = await stored
        if isinstance(result, Exception):
            raise result
        return result

    def over_capacity(self, delivery_lag: float) -> bool:
        """Whether a send would wait over MAX_WAIT_SECONDS: the oldest waiting has, or the
        group on the database thread has been there that long (SQLite's writer lock held
        elsewhere, a database restarting); or the room hub delivers frames late. Also read
        from Django's thread, for the HTTP route (`refusing_sends`): plain reads only."""
        if delivery_lag > MAX_DELIVERY_LAG_SECONDS:
            return True
        now, trip_started = self.loop.time(), self.trip_started
        if trip_started is not None and now - trip_started > MAX_WAIT_SECONDS:
            return True
        try:
            return now - self.waiting[0][2] > MAX_WAIT_SECONDS
        except IndexError:  # nothing waits (or the last was taken meanwhile)
            return False

    def shed_later(self) -> None:
        """`shed` when the oldest waiting send will have waited MAX_WAIT_SECONDS."""
        if self.shedding is None and self.waiting:
            self.shedding = self.loop.call_at(self.waiting[0][2] + MAX_WAIT_SECONDS, self.shed)

    def shed(self) -> None:
        """Answer Busy to the sends that waited MAX_WAIT_SECONDS and are still waiting,
        nothing stored: behind a group stuck on the database thread they would wait for
        as long as it does (SQLite gives up on its writer lock after 20 s), where their
        clients can send again in a second, or over HTTP."""
        self.shedding = None
        now = self.loop.time()
        while self.waiting and now - self.waiting[0][2] >= MAX_WAIT_SECONDS:
            _, stored, _ = self.waiting.popleft()
            if not stored.done():
                stored.set_result(Busy())
        self.shed_later()

    async def run(self) -> None:
        while self.waiting:
            group = [self.waiting.popleft() for _ in range(min(MAX_GROUP, len(self.waiting)))]
            group = [waiting for waiting in group if not waiting[1].done()]  # given up by their sender
            if not group:
                continue
            sends = [send for send, _, _ in group]
            here = RoomHub.for_running_loop().user_ids_by_chat({send.chat_id for send in sends})
            self.trip_started = self.loop.time()
            try:
                results = await store_group(sends, here)
            finally:
                self.trip_started = None
            for (_, stored, _), result in zip(group, results, strict=True):
                if not stored.done():  # its socket may have gone meanwhile
                    stored.set_result(result)


# How long a request's send waits for its group at most (`store_from_a_request`); past it
# the request is answered busy, and the page sends again with the same client id. Within
# the 10 s a stopping server gives its requests.
REQUEST_WAITS_SECONDS = 9.0


async def store_on_this_loop(send: Send) -> Message:
    """`SendQueue.store` on the running loop, against its room hub's delivery lag."""
    return await SendQueue.for_running_loop().store(send, delivery_lag=RoomHub.for_running_loop().lag())


def store_from_a_request(send: Send) -> Message | None:
    """The stored message, for a send that came over HTTP: on this process's serving
    loop, in its `SendQueue` with the sockets' sends. None where no server loop runs (a
    management command, a test without sockets): the caller stores it itself. Raises what
    `SendQueue.store` raises; Busy also when the loop stops meanwhile (the server is stopping),
    and after REQUEST_WAITS_SECONDS: then the group on its way may still store it, which
    the client id makes safe to send again. Also None inside a transaction (ATOMIC_REQUESTS:
    the queue would wait for its locks, or store outside it), and for a request served on the
    thread the queue's trips take (Django's test AsyncClient serves them there; its ASGI
    handler gives each request a thread of its own), which would wait for itself.

    Stored one by one, each in a transaction of its own on a thread of its request, HTTP sends
    to a busy chat waited for its row lock in turn, and on SQLite for its one writer: at 200
    messages a second over HTTP, requests waited up to 39 s, and SQLite's 20 s timeout
    answered some with 503. In the queue they are stored in groups, one writer at a time,
    and past capacity answered busy within a second, as the sockets are. A pooled connection
    goes back to the pool meanwhile (a process has DB_POOL_MAX_SIZE of them)."""
    loop = serving_loop_elsewhere()
    if loop is None or connection.in_atomic_block or not in_a_requests_thread(if_unknown=False):
        return None
    if connection.settings_dict.get("OPTIONS", {}).get("pool"):
        connection.close()
    # A fresh context: the request's would have the queue's trips run on its own thread (asgiref's
    # thread-sensitive context), which waits here for them.
    coroutine = store_on_this_loop(send)
    try:
        stored = contextvars.Context().run(asyncio.run_coroutine_threadsafe, coroutine, loop)
    except RuntimeError:  # the loop closed meanwhile: the server is stopping
        coroutine.close()
        raise Busy from None
    try:
        return stored.result(timeout=REQUEST_WAITS_SECONDS)
    except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):  # slow, or stopping
        stored.cancel()
        raise Busy from None


def refusing_sends() -> bool:
    """Whether this process refuses new socket sends as over capacity: asked on Django's
    thread by the HTTP route, so that past capacity it answers 503 at once, as the sockets
    answer "busy", before the send waits in the queue or (where no server loop takes it)
    stores itself past it."""
    queue, hub = SendQueue.of_serving_loop(), RoomHub.of_serving_loop()
    lag = hub.lag() if hub is not None else 0.0
    if queue is None:  # no socket sent anything yet
        return lag > MAX_DELIVERY_LAG_SECONDS
    return queue.over_capacity(lag)


async def store_group(sends: list[Send], here: dict[int, frozenset[int]]) -> list[Message | Exception]:
    """`store_together` on the database thread. The database busy or restarting: every
    send is answered Busy (by `store_together`). Should it fail on something it did not
    expect (a bug, or a database error that waiting does not mend), each send is stored
    again in a trip of its own: one send's fault is then only its own, and the sockets of
    the others get their acks."""
    try:
        return await database_trip(store_together)(sends, here)
    except Exception as exc:
        if database_busy(exc):  # met outside the transaction (the rate's count, a connection)
            log_database_error(logger, exc, "Database unavailable for %d sends", len(sends))
            return [Busy() for _ in sends]
        logger.exception("Storing %d sends failed", len(sends))
        if len(sends) == 1:
            return [exc]
    return [(await store_group([send], here))[0] for send in sends]


def store_together(sends: list[Send], here: dict[int, frozenset[int]] | None = None) -> list[Message | Exception]:
    """Store the sends in one transaction: the message, or the exception that refused that
    send. Chats are locked in id order (a send locks its chat's row until the commit), so
    two processes' groups never wait on each other in a circle; each chat's sends keep
    their arrival order, and are stored together (`services.store_sends_together`, which
    `here`, the people with a socket of each chat in this process, is handed to).

    The sends are counted against the rate before the transaction, in one round trip, and
    the counts of those not stored now are taken back after it: refused, answered with an
    earlier message, or lost with a group that failed (a client resending through a
    database outage is not pushed into the limit by it)."""
    counted = count_against_rate(sends)
    results: list[Message | Exception] = [Busy() for _ in sends]
    stored_now = [False] * len(sends)
    committed = False
    try:
        try:
            results, stored_now = store_in_bulk(sends, counted, here or {})
        except IntegrityError:  # a client id taken meanwhile: each send in a savepoint of its own
            results, stored_now = store_one_by_one(sends, counted)
        committed = True
    except OperationalError as exc:
        if not database_busy(exc):  # a missing table, a wrong password: the server's fault, not "busy"
            raise
        # SQLite's writer lock, a deadlock, a database restarting: logged as the sockets log it
        log_database_error(logger, exc, "Database unavailable for %d sends", len(sends))
        results = [Busy() for _ in sends]
    finally:
        services.refund_sends(
            [
                send.sender
                for send, count, now in zip(sends, counted, stored_now, strict=True)
                if counted_now(count) and not (committed and now)
            ]
        )
    return results


def store_in_bulk(
    sends: list[Send], counted: list, here: dict[int, frozenset[int]]
) -> tuple[list[Message | Exception], list[bool]]:
    """Each chat's sends together (`services.store_sends_together`), chats in id order; each
    send's result and whether it was stored now. IntegrityError: see `store_together`."""
    results: list[Message | Exception] = [Busy() for _ in sends]
    stored_now = [False] * len(sends)
    by_chat: dict[int, list[int]] = collections.defaultdict(list)
    for index, send in enumerate(sends):
        if counted_now(counted[index]):
            by_chat[send.chat_id].append(index)
        else:  # refused before the transaction, or over the rate (only a retry is answered)
            results[index], stored_now[index] = store_one(send, counted[index], group=None)
    with transaction.atomic():
        for chat_id in sorted(by_chat):
            indexes = by_chat[chat_id]
            chat_sends = [
                (sends[i].sender, sends[i].body, counted[i][0], sends[i].reply_to_id, sends[i].after) for i in indexes
            ]
            for index, (outcome, now) in zip(
                indexes,
                services.store_sends_together(chat_id=chat_id, sends=chat_sends, here=here.get(chat_id)),
                strict=True,
            ):
                results[index] = outcome
                stored_now[index] = now
    return results, stored_now


def store_one_by_one(sends: list[Send], counted: list) -> tuple[list[Message | Exception], list[bool]]:
    """Each send in a savepoint of its own, so one refused send refuses only itself (`services.SendGroup`)."""
    results: list[Message | Exception] = [Busy() for _ in sends]
    stored_now = [False] * len(sends)
    group = services.SendGroup()
    with transaction.atomic():
        for index in sorted(range(len(sends)), key=lambda i: sends[i].chat_id):
            results[index], stored_now[index] = store_one(sends[index], counted[index], group=group)
        group.finish()
    return results, stored_now


def count_against_rate(sends: list[Send]) -> list[tuple[str, RateLimited | None] | ValidationError]:
    """Each send's clean client id and its count against the rate (`services.count_sends`:
    one round trip for all), or why its client id is refused."""
    client_ids: list[str | ValidationError] = []
    for send in sends:
        try:
            client_ids.append(services.clean_client_id(send.client_id))
        except ValidationError as refused:
            client_ids.append(refused)
    valid = [send for send, client_id in zip(sends, client_ids, strict=True) if isinstance(client_id, str)]
    over_rate = iter(services.count_sends([send.sender for send in valid]))
    return [
        client_id if isinstance(client_id, ValidationError) else (client_id, next(over_rate))
        for client_id in client_ids
    ]


def counted_now(count: tuple[str, RateLimited | None] | ValidationError) -> bool:
    """Whether `count_against_rate` counted this send (not refused, and within the rate)."""
    return isinstance(count, tuple) and count[1] is None


def store_one(
    send: Send, counted: tuple[str, RateLimited | None] | ValidationError, *, group: services.SendGroup | None
) -> tuple[Message | Exception, bool]:
    """One send, as `count_against_rate` left it: its message and whether it was stored
    now, or the exception that refused it (its savepoint rolled back)."""
    if isinstance(counted, ValidationError):
        return counted, False
    client_id, over_rate = counted
    try:
        message, stored_now = services.send_counted_message(
            chat=Chat(pk=send.chat_id),
            sender=send.sender,
            body=send.body,
            client_id=client_id,
            reply_to_id=send.reply_to_id,
            over_rate=over_rate,
            group=group,
            after=send.after,
        )
    except (ValidationError, Membership.DoesNotExist, RateLimited, services.Blocked, services.OutOfOrder) as refused:
        return refused, False
    return message, stored_now
