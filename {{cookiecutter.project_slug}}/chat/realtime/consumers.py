"""Websocket consumers: authorize, join groups, relay events. No business logic here.

Close codes (the socket is accepted first so browsers can read them):
    4001  the session changed (the password did): reconnect, which logs in again or gets 4401
    4401  not logged in, or no longer (logged out, account deactivated or deleted)
    4403  not a member of this chat, or no longer one (removed, left, group deleted)
    4429  this user has CHAT_MAX_SOCKETS_PER_USER sockets open on this server process already
    4008  the client fell too far behind reading a room's frames (a slow or stalled network):
          reconnect and catch up (`chat.realtime.writer`)
    4011  the server process lost its channel layer (Redis restarting or failing over): its
          hubs let their sockets go; reconnect with backoff and catch up (`chat.realtime.hub`)
    1013  try again later: the database was busy or restarting when the socket opened (its
          user, membership and presence row) or when its inbox total was read just after (no
          pooled connection free within DB_POOL_TIMEOUT); reconnect with backoff
    1011  the server failed: its database answered the socket's reads or writes with an error
          that waiting does not mend (a missing table, a wrong password), logged as an error;
          reconnect with backoff
    1012  the server process is restarting (SIGTERM: a deploy; sent by the production server,
          config/gunicorn.py): reconnect at once, with up to a second of jitter, which lands on
          another process behind the proxy, and catch up (`?after=<id>`: the greeting brings it)

Frames the server sends are JSON objects with a "type": see `chat.events` for the
vocabulary. Soon after every open a room socket gets its greeting (live frames may come
before it):

    {"type": "chat.sync", "chat_id": N, "last_message_id": M, "change_seq": S, "html": "..."}
        The room's newest message id (0 for none) and change cursor, read after the socket
        joined the room: anything newer comes as a frame. A socket opened with
        `?after=<id>` (the newest message its page shows with none missing before it)
        also gets the bubbles of the messages after that id in "html", oldest first, as
        `messages/?after=<id>` would answer, when there are 1 to CHAT_PAGE_SIZE of them
        (none: no "html"). A page that then shows messages up to M and has seen changes up
        to S needs no catch-up; one that shows less (it missed more than a page) fetches
        `messages/?after=<id>` (or `?changed_since=<cursor>`). After a restart, thousands
        of rooms reconnect without a request each, even with messages flowing meanwhile.
        An `after` that is not a message id gets an "invalid" error frame and a greeting
        without "html".

Frames a client may send to a room:

    {"type": "send", "client_id": "<1-64 characters>", "body": "...", "reply_to": N, "after": "<client id>"}
        Send a message, as the `send/` route does. Answered with
        {"type": "ack", "client_id": ..., "message_id": N} once it is stored, or with an
        error frame carrying the same client_id. The client id is the client's name for
        this message: sending it again (a retry after a reconnect, or over HTTP) stores
        nothing new, is acked with the first message's id, and does not count against
        the send rate. Sends are stored in groups (`chat.realtime.sends`); past this
        process's capacity they are answered "busy" at once, with nothing stored. The
        socket reads on meanwhile, up to MAX_SENDS_IN_FLIGHT sends unanswered (then it
        reads nothing more until one is), and acks them in the order sent, each once
        the message's own frame has gone to the socket (`own_frame_sent`). An error
        answer waits for no frame, so it may come before the acks of earlier sends.
        "reply_to" (optional) is the id of the message of this chat it answers; any
        other id is an "invalid" error.
        "after" (optional) is the client id of the sender's message this one must follow.
        Unless that message is stored (in this chat), nothing is stored and the answer is
        an "out_of_order" error carrying "after": the message before it was refused,
        answered "busy", or never arrived. A client can so send without waiting for acks
        and still keep its order: the page sends each message with "after" naming the one
        before it that is not acked yet and, once every send out is answered, sends what
        was not stored again from the first. (Sent again with no "after", a send answered
        "busy" may be stored after later ones.)
    {"type": "typing"}
        The person is typing: the room's other sockets get {"type": "chat.typing",
        "chat_id", "user_id", "name"} (their own sockets do not). Pages send at most one
        every 3 seconds while typing and viewers let it expire 5 seconds after the last
        one. Past the "typing" rate of CHAT_RATE_LIMITS frames are dropped silently (a
        lost "is typing" needs no retry); from someone no longer a member, the socket closes
        with 4403.
    {"type": "edit", "message_id": N, "body": "..."}
    {"type": "delete", "message_id": N}
    {"type": "react", "message_id": N, "emoji": "<one of CHAT_REACTIONS>", "on": true|false}
        "on" (optional) says whether the person's reaction should be there afterwards: sent
        again (a retry whose ack was lost, a second tab) it changes nothing more, and a
        reaction already so is acked without a change or frame. Without it, the reaction
        is toggled, as the route's button does.
        Change a message, as the `messages/<id>/edit/`, `delete/` and `react/` routes do
        (same checks, same rate limits: "edit" counts edits and deletes, "react"
        reactions). Answered with {"type": "ack", "action": "edit", "message_id": N,
        "change_seq": S} once stored (the room also gets the change's chat.edited,
        chat.deleted or chat.reacted frame), or with an error frame carrying the same
        "action" and "message_id": "not_found" (not a message of this chat),
        "forbidden" (not yours, not your role, edit window over), "invalid" (bad body,
        unknown emoji, a deleted message), "rate_limited"/"busy" (with "retry_after"),
        "failed" (the server could not store it: a fault of its own, logged).
    {"type": "read", "message_id": N}
    {"type": "visibility", "visible": bool}
    {"type": "ping"}
        Answered with {"type": "pong"}; inbox sockets take it too. The page sends one after
        25 s in which its socket heard nothing, so proxies never see a quiet connection, and
        drops a socket that stays silent 10 s after it (socket-heartbeat.js).

Anything else gets {"type": "error", "code": ..., "error": "<a sentence>"} back:
"unknown_type", "binary_frame", "frame_too_large" (over `max_frame_bytes`, unread), or
"malformed" (not a JSON object with a string "type", a field of the wrong kind, or text
that is not valid Unicode: a lone surrogate spelled "\\ud800"). Errors about a send also
carry its "client_id" (once the frame, or the client id alone, is well formed), and those
worth retrying ("rate_limited", "busy") a "retry_after" in seconds ("out_of_order" is sent
again once the send it follows is answered). A send refused for good says why:
"invalid" (the body), "blocked" (a direct chat where either person blocked the other; the
socket stays open), "forbidden" (no longer a member; the socket closes with 4403), "failed"
(the server could not store it: a fault of its own, logged, as a 500 would be; the socket
stays open). A user's sockets on one process share FRAME_BUDGET frames per
FRAME_WINDOW_SECONDS; past it frames are dropped with one "rate_limited" error per socket
and window, whose "retry_after" is when the window ends. Sends are counted by the per-user
send rate instead.

Room events reach a room socket through its process's `RoomHub` (chat/realtime/hub.py), which
is in the room's group once for all of the process's sockets; a person's own events (their
inbox, a session ended) through its `UserHub`. No socket has a channel of its own on the layer.

Whatever ends a socket (a close, an error in a handler, the server closing it with 1012 or
cancelling it on shutdown) leaves its groups and its presence: `ChatConsumer.__call__`
cleans up last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Generator
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError
from django.http import Http404

from chat import events, metrics, selectors, services
from chat.conf import chat_setting
from chat.models import Membership, whole_number
from chat.ratelimit import RateLimited, check_rate
from chat.realtime import handshakes, presence, read_marks
from chat.realtime.database import changes_trip, database_busy, database_trip, log_database_error, one_line
from chat.realtime.hub import RoomHub, UserHub
from chat.realtime.loop import note_serving_loop, stop_if_cancelled
from chat.realtime.sends import Busy, Send, store_on_this_loop
from chat.realtime.writer import MAX_QUEUED_FRAMES, SocketWriter

logger = logging.getLogger(__name__)

# A user's sockets may send this many frames per window together (on one server process);
# past it frames are dropped with one "rate_limited" error per socket and window. A tab
# needs a handful: read, visibility, ping.
FRAME_BUDGET = 30
FRAME_WINDOW_SECONDS = 10

CLOSE_SESSION_CHANGED = 4001
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY_SOCKETS = 4429
CLOSE_TOO_SLOW = 4008
# The database is busy (no pooled connection free within its timeout) or restarting: the
# socket is let in later; the page reconnects with backoff, as from any other close.
CLOSE_TRY_AGAIN_LATER = 1013
# The database answered the handshake's reads with an error that waiting will not mend (a
# missing table, a wrong password): logged as an error; the page reconnects with backoff.
CLOSE_SERVER_ERROR = 1011

# A room socket's sends stored or waiting to be, at most: past them it reads no more frames
# until one is answered. A page has as many out at most (message-outbox.js, MAX_OUT).
MAX_SENDS_IN_FLIGHT = 16
# How long the ack of a stored message waits for the message's own frame on the sending
# socket, at most (see RoomConsumer.own_frame_sent).
ACK_WAITS_FOR_FRAME_SECONDS = 2.0

# How long a socket's clean-up waits for the trip its handshake's work is in, at most (work
# still queued is withdrawn instead): a trip takes a second or so when thousands of sockets
# open at once.
HANDSHAKE_WORK_WAIT_SECONDS = 30.0

# This process's open sockets per user id, and each user's frame window [started, frames].
_open_sockets: Counter[int] = Counter()


def at_socket_cap(user_id: int) -> bool:
    """Whether the user has CHAT_MAX_SOCKETS_PER_USER sockets open on this process already.
    Only reads (no key added for a user with none), so a handshake's trip may ask it on the
    database thread; admission asks again on the event loop, where the count changes."""
    return _open_sockets.get(user_id, 0) >= chat_setting("CHAT_MAX_SOCKETS_PER_USER")


_frame_windows: dict[int, list[float]] = {}


class ChatConsumer(AsyncWebsocketConsumer):
    """Admission, clean-up and parsing of client frames; subclasses handle the frame types they accept.

    A socket has no channel of its own on the layer (an alias no layer is configured
    under): its person's events (a session ended; their inbox) reach it through this
    process's `UserHub`, which is in that person's groups once for all their sockets, and
    a room's events through the `RoomHub`. An idle socket then costs the layer nothing,
    and the process no receive waiting on a channel.
    """

    channel_layer_alias = "chat.no-channel-of-its-own"
    user_id: int | None = None
    in_user_hub = False
    takes_inbox_events = False  # its person's inbox events: only inbox sockets handle them
    writer: SocketWriter | None = None  # frames go out through a task of their own (see writer.py)
    cleaned_up = False
    accepted = False
    handshake_work: asyncio.Future | None = None  # its handshake's work in a shared trip (`look_up`)
    warned_window = -1.0

    async def __call__(self, scope, receive, send):
        self.scope = scope
        try:
            refusal = await self.admission()
            if refusal is not None:
                # Refused before it joins a hub: a socket closed at once never waits on
                # the layer (nor costs it anything, however many come).
                return await refuse_handshake(receive, send, refusal)
            await self.serve(receive, send)
        finally:
            # Shielded: a second cancel (daphne's shutdown) must not cut the clean-up short.
            await asyncio.shield(self.clean_up())
            if self.writer is not None:
                self.writer.stop()

    async def serve(self, receive, send) -> None:
        """Channels' `AsyncConsumer.__call__` for a consumer with no channel: each message
        from the server straight to `dispatch`. Channels waits on a new task per message so
        that it can listen to a channel at the same time; a restart's thousands of sockets
        paid for that on the one event loop they all open on. A subclass given a channel
        layer (`channel_layer_alias`) is served by Channels as usual."""
        if get_channel_layer(self.channel_layer_alias) is not None:
            return await super().__call__(self.scope, receive, send)
        self.channel_layer = None
        self.base_send = send
        with contextlib.suppress(StopConsumer):
            while True:
                await self.dispatch(await receive())

    async def dispatch(self, message):
        """Channels' dispatch without its hop to the sync thread before every message.

        Channels closes stale database connections before each handler, on asgiref's one
        thread for sync code outside a request, which every socket's database work shares:
        in a busy room every frame to every socket then waits behind that work. These
        handlers reach the database only through `database_trip`, which lets go of spent
        connections itself.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        try:
            await handler(message)
        except DatabaseError as exc:
            await self.database_failed(exc)
        # A cancel (the server stopping) lost inside the handler's layer calls must still
        # end the socket, not leave it waiting for the next message.
        stop_if_cancelled()

    async def admission(self) -> int | None:
        """Let in a logged-in user under their socket cap: None, or the close code refusing them.

        The user (from the session, read with the other sockets' users of its trip, unless
        Channels' AuthMiddleware loaded it already) and whatever the socket type needs before
        it accepts (`look_up`: a room's membership and presence row) are read and written in
        one trip to the database thread, shared with the other sockets opening meanwhile
        (`handshakes`).
        """
        try:
            self.handshake_work = handshakes.shared_trip(self.look_up, scope=self.scope)
            refusal = await asyncio.shield(self.handshake_work)
        except DatabaseError as exc:
            if not database_busy(exc):  # a missing table, a wrong password: the server's fault
                logger.exception("Refusing %s: the database failed", self)
                return CLOSE_SERVER_ERROR
            logger.warning("Refusing %s for now, the database is unavailable: %s", self, one_line(exc))
            return CLOSE_TRY_AGAIN_LATER
        if refusal is not None:
            return refusal
        if at_socket_cap(self.user.pk):
            return CLOSE_TOO_MANY_SOCKETS
        self.user_id = self.user.pk
        _open_sockets[self.user_id] += 1
        metrics.socket_opened(type(self).__name__)
        session = self.scope.get("session")
        self.session_tag = events.session_tag(getattr(session, "session_key", None))
        return None

    async def handshake_work_settled(self) -> None:
        """Should the socket have been cancelled during its handshake (a client that gave up in
        a restart's queue): its work withdrawn if still queued, else its trip waited for, so
        that what the trip wrote for it (a room's presence row) is known and cleaned up with
        the rest. Bounded, for a loop that is stopping and will run no more trips."""
        if self.handshake_work is not None and not handshakes.withdraw(self.handshake_work):
            await asyncio.wait([self.handshake_work], timeout=HANDSHAKE_WORK_WAIT_SECONDS)

    def look_up(self) -> int | None:
        """On the database thread: the user; None if logged in, else the close code refusing them.

        A socket type that needs more before it opens extends it, in the same trip: as a
        generator of its steps if it reads or writes with the other sockets opening
        (`handshakes.Batch`; RoomConsumer's is one, so extend that with
        `refusal = yield from super().look_up()`). It runs on the database thread: of the
        event loop's state it may only read (as `at_socket_cap` does)."""
        user = handshakes.user_for_scope(self.scope)
        if not user.is_authenticated:
            return CLOSE_UNAUTHENTICATED
        self.user = user
        return None

    def hold_frames_until_accepted(self) -> None:
        """Frames the hubs hand the socket wait in a writer of its own until `accept_held`:
        sent before the accept, one would break the handshake (the server refuses anything
        but the accept first). Call it before the socket joins a hub."""
        self.writer = SocketWriter(
            send_text=self.send_text_now, close=self.close_now, too_slow=self.fell_behind, held=True
        )

    async def accept_held(self) -> None:
        await self.accept()  # straight to the server: Channels' accept does not go through `send`
        self.accepted = True
        if self.writer is not None:
            self.writer.release()

    async def database_failed(self, exc: DatabaseError) -> None:
        """A database error that no handler answered (the inbox's total at the open; a
        visibility change that met an error other than a busy database):
        the socket closes, with 1013 if the database is busy or restarting, else 1011, logged
        as such. The page reconnects with backoff and catches up, and what failed is done
        again on the new socket."""
        log_database_error(logger, exc, "Closing %s: the database failed", self)
        if not self.accepted:  # browsers can read a close code, not a refused handshake's reason
            with contextlib.suppress(OSError):  # the client went away meanwhile
                await self.accept_held()
        await self.end(CLOSE_TRY_AGAIN_LATER if database_busy(exc) else CLOSE_SERVER_ERROR)

    def fell_behind(self) -> None:
        """Its writer gave up on it: out of its hubs now, closed once the clean-up is done."""
        logger.info("Closing %s: %d frames behind", self, MAX_QUEUED_FRAMES)
        metrics.count(metrics.SOCKETS_CLOSED_TOO_SLOW)
        self.letting_go = asyncio.get_running_loop().create_task(self.let_go(CLOSE_TOO_SLOW))

    async def let_go(self, code: int) -> None:
        await self.clean_up()
        await self.close_now(code)

    async def join_user_hub(self) -> None:
        """The person's events (a session ending, inbox changes) from now on, through this
        process's `UserHub`: it is in their groups once for all their sockets, so a socket
        opening or closing costs the layer nothing unless it is their first or last here."""
        note_serving_loop()
        # Set first: an inbox socket joins under two keys (its person's, the inboxes'), and
        # one that failed half-way must still leave the first (leaving a key it is not under
        # does nothing).
        self.in_user_hub = True
        await UserHub.for_running_loop().join(self)

    async def websocket_disconnect(self, message):
        """Channels' disconnect without its hop to the sync thread to close stale database
        connections (as `dispatch`): a server stopping closes all its sockets at once, and
        thousands of hops queued behind each other held its exit up by seconds. A socket has
        no groups of its own to leave; `clean_up` does the rest."""
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def disconnect(self, code):
        await self.clean_up()

    async def clean_up(self) -> None:
        """Leave the user hub and give back the socket's slot; once, whatever ended the socket."""
        if self.cleaned_up:
            return
        self.cleaned_up = True
        if self.user_id is not None:
            _open_sockets[self.user_id] -= 1
            metrics.socket_closed(type(self).__name__)
            if _open_sockets[self.user_id] <= 0:
                del _open_sockets[self.user_id]
        if self.in_user_hub:
            await UserHub.for_running_loop().leave(self)  # which logs and survives a layer outage

    async def end(self, code: int) -> None:
        """Close the socket now, out of its groups before the client has even seen the close."""
        await self.clean_up()
        await self.close(code=code)

    async def session_ended(self, event):
        if event["session"] is None or event["session"] == self.session_tag:
            await self.end(event["close_code"])

    def __str__(self) -> str:
        return f"{type(self).__name__} of user {self.user_id}"

    async def send_json(self, content: dict) -> None:
        await self.send(text_data=json.dumps(content))

    async def send(self, text_data=None, bytes_data=None, close=False):
        """Through the socket's writer if it has one (room sockets), else to the server now."""
        if self.writer is None:
            return await self.send_now(text_data=text_data, bytes_data=bytes_data, close=close)
        self.writer.put_text(text_data)
        if close:
            self.writer.put_close(None if close is True else close)

    async def send_text_now(self, text: str) -> None:
        """A text frame straight to the server, as Channels' `send` would hand it: what the
        socket's writer sends (a busy room's frames, thousands a second) without the two
        layers of `send` between, a few microseconds each."""
        try:
            await self.base_send({"type": "websocket.send", "text": text})
        except OSError:
            self.not_sent()

    async def send_now(self, text_data=None, bytes_data=None, close=False):
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except OSError:
            self.not_sent()

    def not_sent(self) -> None:
        # The client is gone or the server is closing the socket (uvicorn raises, daphne drops
        # the frame); the disconnect that follows cleans up.
        logger.debug("A frame to %s was not sent: the socket is closed", self)

    async def close(self, code=None, reason=None):
        """After the frames already queued for the socket, if it has a writer."""
        if self.writer is None:
            return await self.close_now(code)
        self.writer.put_close(code)

    async def close_now(self, code=None):
        try:
            await super().close(code=code)
        except OSError:
            logger.debug("%s was closed already", self)

    async def receive(self, text_data=None, bytes_data=None):
        if self.cleaned_up:  # closing: nothing it sends counts any more
            return
        frame, problem = self.parse_frame(text_data)
        # Sends are limited by the per-user send rate instead: a busy sender needs more
        # than the frame budget, which keeps every other frame (and garbage) cheap.
        if not (frame and frame["type"] == "send"):
            window_started = self.spend_frame()
            if window_started is not None:
                metrics.count(metrics.FRAMES_DROPPED)
                if self.warned_window != window_started:
                    self.warned_window = window_started
                    left = window_started + FRAME_WINDOW_SECONDS - time.monotonic()
                    await self.send_error("rate_limited", "Too many frames; slow down.", retry_after=math.ceil(left))
                return
        if problem:
            code, sentence, details = problem
            return await self.send_error(code, sentence, **details)
        handler = getattr(self, "client_" + frame["type"].replace(".", "_"), None)
        if handler is None:
            return await self.send_error("unknown_type", f"Unknown frame type {frame['type'][:40]!r}.")
        await handler(frame)

    @staticmethod
    def parse_frame(text_data: str | None) -> tuple[dict | None, tuple[str, str, dict] | None]:
        """The frame as a dict with a string "type", or the error code, sentence and details
        for it (a send's client id, when that alone is sound: the page then shows the error
        instead of waiting for an ack that will not come)."""
        if text_data is None:
            return None, ("binary_frame", "Send JSON text frames.", {})
        if len(text_data.encode()) > (limit := max_frame_bytes()):
            return None, ("frame_too_large", f"Frames may be at most {limit:,} bytes.", {})
        try:
            frame = json.loads(text_data)
        except Exception:  # not only ValueError: 3,000 nested brackets raise RecursionError
            return None, ("malformed", "Frames must be JSON objects.", {})
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            return None, ("malformed", "Frames must be JSON objects with a type.", {})
        if "\\u" in text_data and not is_unicode(frame):
            client_id = frame.get("client_id")
            details = {"client_id": client_id} if is_client_id(client_id) and is_unicode(client_id) else {}
            return None, ("malformed", "Frames must be valid Unicode text.", details)
        return frame, None

    def spend_frame(self) -> float | None:
        """Count a frame against the user's budget: None if within it, else the window's start."""
        now = time.monotonic()
        window = _frame_windows.get(self.user_id)
        if window is None or now - window[0] >= FRAME_WINDOW_SECONDS:
            if len(_frame_windows) > 10_000:  # forget the windows of people who went quiet
                for user, (started, _) in list(_frame_windows.items()):
                    if now - started >= FRAME_WINDOW_SECONDS:
                        del _frame_windows[user]
            window = _frame_windows[self.user_id] = [now, 0]
        window[1] += 1
        return None if window[1] <= FRAME_BUDGET else window[0]

    async def send_error(self, code: str, message: str, **details) -> None:
        await self.send_json({"type": "error", "code": code, "error": message, **details})

    async def client_ping(self, frame: dict) -> None:
        await self.send_json({"type": "pong"})


# A send's body in the worst case of JSON: a character outside the Basic Multilingual Plane
# escaped as a surrogate pair ("\ud83d\ude00"), as Python's json.dumps writes it by default.
FRAME_BYTES_PER_CHARACTER = 12
# The rest of the largest frame: its type, a client id and an "after" of 64 characters (as
# escaped), a reply's id.
FRAME_BYTES_BESIDE_THE_BODY = 4096


def max_frame_bytes() -> int:
    """The largest text frame a socket reads (larger ones get "frame_too_large", unread):
    CHAT_WS_MAX_FRAME_BYTES, or room for a send of CHAT_MAX_MESSAGE_LENGTH characters
    however its client escapes them (52,096 bytes for 4,000). Any valid send fits, so a
    frame refused unread was never a message that could be stored."""
    configured = chat_setting("CHAT_WS_MAX_FRAME_BYTES")
    if configured is not None:
        return configured
    return FRAME_BYTES_PER_CHARACTER * chat_setting("CHAT_MAX_MESSAGE_LENGTH") + FRAME_BYTES_BESIDE_THE_BODY


def is_client_id(value) -> bool:
    """Whether a send frame's "client_id" has the shape of one (1 to 64 characters)."""
    return isinstance(value, str) and 0 < len(value) <= services.CLIENT_ID_MAX_LENGTH


def is_unicode(value) -> bool:
    """Whether a frame (or one of its values) holds no lone surrogate: JSON can spell one
    ("\\ud800"), and no database, nor a UTF-8 frame to another client, can carry it."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


INVALID_AFTER = -1


def after_in_query(query_string: bytes) -> int | None:
    """The message id a room socket asks its missed messages after (`?after=<id>`): None
    if it asks none, INVALID_AFTER if the value is not one."""
    values = parse_qs(query_string.decode("latin-1")).get("after")
    if not values:
        return None
    number = whole_number(values[-1])
    return INVALID_AFTER if number is None else number


async def refuse_handshake(receive, send, code: int) -> None:
    """Accept the handshake and close at once with `code`: browsers can read a close code,
    not a refused handshake's reason."""
    if (await receive())["type"] == "websocket.connect":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": code})


class InboxConsumer(ChatConsumer):
    """One per tab of a logged-in user: list changes, unread counts, the total."""

    takes_inbox_events = True  # the user hub is in the inboxes group while one is open

    async def connect(self):
        self.hold_frames_until_accepted()
        await self.join_user_hub()
        await self.accept_held()
        # Counted once in the person's groups, so no change after the count is missed.
        total = await handshakes.in_shared_batch(
            selectors.total_unread_by_user, self.user_id, default=0, socket_open=True
        )
        await self.send_json({"type": "inbox.sync", "total_unread": total})

    async def inbox_message(self, event):
        await self.send_json(event)

    async def inbox_unread(self, event):
        await self.send_json(event)

    async def inbox_changed(self, event):
        await self.send_json(event)

    async def inbox_muted(self, event):
        await self.send_json(event)

    async def inbox_blocked(self, event):
        await self.send_json(event)


class RoomConsumer(ChatConsumer):
    """One per open room (full page or widget): messages, presence, read marking.

    Room events reach it through this process's `RoomHub`, which is in the room's group
    once for all its sockets, and calls the handlers below.
    """

    present = False
    viewing = False
    in_hub = False
    asked_after: int | None = None  # its ?after=<id>: the messages its greeting brings
    cleared_message_id = 0
    send_slots: asyncio.Semaphore | None = None  # MAX_SENDS_IN_FLIGHT, made at its first send
    answering: set[asyncio.Task]  # its sends' tasks, until each is answered
    newest_framed_id = 0  # the newest message this socket has had: by its greeting or a frame
    frame_waiters: dict[int, list[asyncio.Future]]  # its acks waiting for their message's frame, by id

    def look_up(self) -> Generator[handshakes.Batch, Any, int | None]:
        """In one trip with the other sockets opening: the user, the membership (read with
        those of the other rooms opening, in one query; not kept: every later use checks it
        again, as it may have ended since) and the presence row (written with theirs)."""
        refusal = super().look_up()
        if refusal is not None:
            return refusal
        self.chat_id = self.scope["url_route"]["kwargs"]["chat_id"]
        self.asked_after = after_in_query(self.scope.get("query_string", b""))
        membership = yield handshakes.Batch(selectors.memberships_by_pair, (self.user.pk, self.chat_id))
        if membership is None:
            return CLOSE_FORBIDDEN
        self.cleared_message_id = membership.cleared_message_id  # what its greeting leaves out
        if at_socket_cap(self.user.pk):  # no row to write and delete again (admission checks it for good)
            return CLOSE_TOO_MANY_SOCKETS
        # The key of its presence row (`RoomPresence.channel_name`): unique among every
        # process's sockets.
        self.socket_name = f"chat-room-socket.{uuid.uuid4().hex}"
        yield handshakes.Batch(presence.join_many, (self.socket_name, self.chat_id, self.user.pk))
        self.present = True  # its presence row exists: clean_up removes it, whatever happens next
        return None

    async def connect(self):
        self.viewing = True
        self.hold_frames_until_accepted()
        await self.join_user_hub()
        await RoomHub.for_running_loop().join(self)
        self.in_hub = True
        await self.accept_held()
        await presence.track(self.socket_name)
        presence.recount_soon(self.chat_id)
        await self.greet()

    async def greet(self) -> None:
        """Tell the page what is newest in its room, read once it is in the room's hub:
        anything newer reaches it as a frame, so it fetches only if it shows less than this.
        With the greeting come the messages it missed since the id it asked after, if a
        page's worth at most. The greetings of the sockets opening together (a restart) are
        read in a few queries and each encoded once (`events.room_greetings`). A page that
        gets no greeting (the database is busy or restarting) catches up all the same, a
        few seconds later: the socket stays open."""
        after = self.asked_after
        if after == INVALID_AFTER:
            await self.send_error("invalid", "“after” must be the id of a message.")
            after = None
        elif after is not None:
            after = max(after, self.cleared_message_id)
        try:
            greeting = await handshakes.in_shared_batch(events.room_greetings, (self.chat_id, after), socket_open=True)
        except DatabaseError as exc:
            log_database_error(logger, exc, "No greeting for %s: its room could not be read", self)
            return
        if greeting is not None:  # a deleted chat: its revocation closes the socket
            await self.send(text_data=greeting.text)
            self.note_framed(greeting.last_message_id)

    async def clean_up(self) -> None:
        if self.cleaned_up:
            return
        self.viewing = False  # no read marks from a socket on its way out
        if self.in_hub:
            await RoomHub.for_running_loop().leave(self)
        await super().clean_up()
        await self.handshake_work_settled()
        if not self.present:
            return
        try:
            await presence.leave(self.socket_name)
        except Exception:  # the database is restarting: the row expires with presence.STALE_AFTER
            logger.exception("Removing the presence of %s failed", self)
        presence.recount_soon(self.chat_id)

    # Events from the channel layer

    async def chat_message(self, event):
        if "text" in event:
            await self.send(text_data=event["text"])
        else:  # sent by a process still on a version that did not pre-encode (a rolling deploy)
            await self.send_json({**event, "type": "chat.message"})
        self.note_framed(event["message_id"])
        if event["sender_id"] != self.user_id and self.viewing:
            self.schedule_read(event["message_id"])

    async def chat_presence(self, event):
        if "online" in event:  # a process on the previous version only asked for a recount
            await self.send_json(event)

    async def chat_renamed(self, event):
        await self.send_json(event)

    async def chat_typing(self, event):
        if event["user_id"] != self.user_id:  # nobody sees themselves typing, in any tab
            await self.send(text_data=event["text"])

    async def chat_edited(self, event):
        await self.send(text_data=event["text"])  # encoded once for the room (events.send_message_change)

    chat_deleted = chat_reacted = chat_edited

    async def chat_revoked(self, event):
        if event["chat_id"] != self.chat_id or getattr(self, "revoked", False):
            return  # it comes both through the room and through its person's sockets, in any room
        deleted = event.get("chat_deleted", event["deleted"])
        if deleted or self.user_id in event["user_ids"] or event.get("user_id") == self.user_id:
            self.revoked = True
            await self.send_json({"type": "chat.revoked", "chat_id": self.chat_id, "deleted": deleted})
            await self.close(code=CLOSE_FORBIDDEN)

    # Frames from the client

    async def client_read(self, frame: dict) -> None:
        message_id = frame.get("message_id")
        if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id < 0:
            return await self.send_error("malformed", "read needs an integer message_id.")
        self.schedule_read(message_id)

    async def client_visibility(self, frame: dict) -> None:
        viewing = frame.get("visible")
        if not isinstance(viewing, bool):
            return await self.send_error("malformed", "visibility needs visible: true or false.")
        if viewing != self.viewing:
            self.viewing = viewing
            try:
                await database_trip(presence.set_visible)(channel_name=self.socket_name, visible=viewing)
            except DatabaseError as exc:
                if not database_busy(exc):
                    raise  # the server's fault: closed with 1011 (`database_failed`)
                # Busy: the socket stays open, and the page's next report writes it again.
                log_database_error(logger, exc, "What %s views was not written", self)
                self.viewing = not viewing

    async def client_send(self, frame: dict) -> None:
        client_id, body, after = frame.get("client_id"), frame.get("body"), frame.get("after")
        if not is_client_id(client_id):
            return await self.send_error("malformed", "send needs a client_id of 1 to 64 characters.")
        if not isinstance(body, str):
            return await self.send_error("malformed", "send needs a text body.", client_id=client_id)
        if after is not None and not is_client_id(after):
            return await self.send_error(
                "malformed", "after must be a client_id of 1 to 64 characters.", client_id=client_id
            )
        try:
            after = services.clean_client_id(after)
        except ValidationError as exc:
            return await self.send_error("invalid", " ".join(exc.messages), client_id=client_id)
        send = Send(
            chat_id=self.chat_id,
            sender=self.user,
            body=body,
            client_id=client_id,
            reply_to_id=frame.get("reply_to"),
            after=after,
        )
        # Answered by a task of its own, so the socket reads on: a client that sends without
        # waiting for acks has its sends stored together, and the queue sees them all (it
        # answers "busy" past capacity). Past MAX_SENDS_IN_FLIGHT unanswered, the socket reads
        # nothing more until one is answered: the client's network waits.
        if self.send_slots is None:
            self.send_slots, self.answering, self.frame_waiters = asyncio.Semaphore(MAX_SENDS_IN_FLIGHT), set(), {}
        await self.send_slots.acquire()
        answering = asyncio.get_running_loop().create_task(self.store_and_answer(send))
        self.answering.add(answering)
        answering.add_done_callback(self.answered)

    def answered(self, task: asyncio.Task) -> None:
        self.answering.discard(task)
        self.send_slots.release()

    async def store_and_answer(self, send: Send) -> None:
        client_id = send.client_id
        try:
            message_id = (await store_on_this_loop(send)).pk
        except ValidationError as exc:
            return await self.send_error("invalid", " ".join(exc.messages), client_id=client_id)
        except RateLimited as exc:
            return await self.send_error("rate_limited", str(exc), client_id=client_id, retry_after=exc.retry_after)
        except Busy as exc:  # over capacity, SQLite's writer lock, a database restarting: nothing was saved
            metrics.count(metrics.SENDS_BUSY)
            busy = "The server is busy; sending again."
            return await self.send_error("busy", busy, client_id=client_id, retry_after=exc.retry_after)
        except services.Blocked as exc:  # a direct chat with a block either way
            return await self.send_error("blocked", str(exc), client_id=client_id)
        except services.OutOfOrder as exc:  # the message it follows is not stored: sent again after that one
            return await self.send_error("out_of_order", str(exc), client_id=client_id, after=exc.after)
        except Membership.DoesNotExist:
            await self.send_error("forbidden", "You are no longer a member of this chat.", client_id=client_id)
            return await self.end(CLOSE_FORBIDDEN)
        except Exception:  # the server's fault, logged where it failed: as a 500, the socket stays open
            return await self.send_error("failed", "The message could not be stored.", client_id=client_id)
        await self.own_frame_sent(message_id)
        await self.send_json({"type": "ack", "client_id": client_id, "message_id": message_id})

    async def own_frame_sent(self, message_id: int) -> None:
        """Until this socket has had the frame of a message it sent (or its greeting came
        after it), at most ACK_WAITS_FOR_FRAME_SECONDS: the ack follows the message.

        A client that gets an ack before the frame waits a moment for it and then fetches
        it, as for any gap. When frames leave this process late, the ack would come before
        the frame every time: each sending page would add a fetch per message to a server
        already behind."""
        if message_id <= self.newest_framed_id:
            return
        waiter = asyncio.get_running_loop().create_future()
        waiters = self.frame_waiters.setdefault(message_id, [])  # a client id sent twice: two acks
        waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, ACK_WAITS_FOR_FRAME_SECONDS)
        except TimeoutError:
            logger.debug("No frame of message %s for %s within %g s", message_id, self, ACK_WAITS_FOR_FRAME_SECONDS)
            waiters.remove(waiter)
            if not waiters:
                self.frame_waiters.pop(message_id, None)

    def note_framed(self, message_id: int) -> None:
        """The socket has had every message up to this id: the acks waiting for them follow."""
        self.newest_framed_id = max(self.newest_framed_id, message_id)
        if self.send_slots is None:  # it sent nothing: no ack waits
            return
        for waiting_id in sorted(i for i in self.frame_waiters if i <= message_id):
            for waiter in self.frame_waiters.pop(waiting_id):
                if not waiter.done():
                    waiter.set_result(None)

    async def client_typing(self, frame: dict) -> None:
        """Sent with the signals of the other sockets typing meanwhile, in one trip to the
        database thread (`services.signal_typing_many`); waited for, so that this person's
        next message, read after it, never overtakes it."""
        here = RoomHub.for_running_loop().user_ids_by_chat({self.chat_id}).get(self.chat_id)
        signal = services.Typing(self.chat_id, self.user, here)
        try:
            refusal = await handshakes.in_shared_batch(services.signal_typing_many, signal, socket_open=True)
        except DatabaseError as exc:  # busy or restarting: one "is typing" less
            return log_database_error(logger, exc, "No typing signal in chat %s", self.chat_id)
        # Past the rate it is dropped silently: the page signals again while its person types.
        if isinstance(refusal, Membership.DoesNotExist):
            await self.send_error("forbidden", "You are no longer a member of this chat.")
            await self.end(CLOSE_FORBIDDEN)

    # Message changes: edit, delete, react (the same services and limits as their routes)

    async def client_edit(self, frame: dict) -> None:
        await self.change_message("edit", frame)

    async def client_delete(self, frame: dict) -> None:
        await self.change_message("delete", frame)

    async def client_react(self, frame: dict) -> None:
        await self.change_message("react", frame)

    # The field each change needs besides message_id, and the sentence of its error frame.
    CHANGE_TEXT_FIELDS = {"edit": ("body", "edit needs a text body."), "react": ("emoji", "react needs an emoji.")}

    async def change_message(self, action: str, frame: dict) -> None:
        message_id = frame.get("message_id")
        if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id <= 0:
            return await self.send_error("malformed", f"{action} needs an integer message_id.", action=action)
        about = {"action": action, "message_id": message_id}
        field, needs = self.CHANGE_TEXT_FIELDS.get(action, (None, ""))
        if field and not isinstance(frame.get(field), str):
            return await self.send_error("malformed", needs, **about)
        if action == "react" and not isinstance(frame.get("on", False), bool):
            return await self.send_error("malformed", "on must be true or false.", **about)
        try:
            change_seq = await changes_trip(self.apply_change)(action, message_id, frame)
        except Http404:
            return await self.send_error("not_found", "No such message in this chat.", **about)
        except PermissionDenied as exc:
            return await self.send_error("forbidden", str(exc), **about)
        except ValidationError as exc:
            return await self.send_error("invalid", " ".join(exc.messages), **about)
        except RateLimited as exc:
            return await self.send_error("rate_limited", str(exc), retry_after=exc.retry_after, **about)
        except DatabaseError as exc:
            log_database_error(logger, exc, "A message change in chat %s was not saved", self.chat_id)
            if database_busy(exc):
                return await self.send_error("busy", "The server is busy; try again.", retry_after=1, **about)
            return await self.send_error("failed", "The change could not be saved.", **about)
        except Membership.DoesNotExist:
            await self.send_error("forbidden", "You are no longer a member of this chat.", **about)
            return await self.end(CLOSE_FORBIDDEN)
        await self.send_json({"type": "ack", "change_seq": change_seq, **about})

    def apply_change(self, action: str, message_id: int, frame: dict) -> int:
        """As the routes: the member's message of this chat (Http404), within the rate, the one service."""
        message = selectors.message_of_member_or_404(user=self.user, chat_id=self.chat_id, message_id=message_id)
        check_rate(action="react" if action == "react" else "edit", key=self.user_id)
        if action == "edit":
            message = services.edit_message(message=message, user=self.user, body=frame["body"])
        elif action == "delete":
            message = services.delete_message(message=message, actor=self.user)
        else:
            message = services.toggle_reaction(
                message=message, user=self.user, emoji=frame.get("emoji"), on=frame.get("on")
            )
        return message.change_seq

    def schedule_read(self, message_id: int) -> None:
        read_marks.mark(chat_id=self.chat_id, user_id=self.user_id, up_to_id=message_id)
