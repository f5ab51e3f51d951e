"""Websocket consumers: authorize, join groups, relay events. No business logic here.

Close codes (the socket is accepted first so browsers can read them):
    4001  the session changed (the password did): reconnect, which logs in again or gets 4401
    4401  not logged in, or no longer (logged out, account deactivated or deleted)
    4403  not a member of this chat, or no longer one (removed, left, group deleted)
    4429  this user has CHAT_MAX_SOCKETS_PER_USER sockets open on this server process already

Frames the server sends are JSON objects with a "type": see `chat.events` for the
vocabulary. Frames a client may send to a room:

    {"type": "send", "client_id": "<1-64 characters>", "body": "..."}
        Send a message, as the `send/` route does. Answered with
        {"type": "ack", "client_id": ..., "message_id": N} once it is stored, or with an
        error frame carrying the same client_id. The client id is the client's name for
        this message: sending it again (a retry after a reconnect, or over HTTP) stores
        nothing new and is acked with the first message's id.
    {"type": "read", "message_id": N}
    {"type": "visibility", "visible": bool}
    {"type": "ping"}

Anything else, malformed JSON or a frame over CHAT_WS_MAX_FRAME_BYTES gets
{"type": "error", "code": ..., "error": "<a sentence>"} back; errors about a send also
carry its "client_id", and those worth retrying ("rate_limited", "busy") a "retry_after"
in seconds. A user's sockets on one process share FRAME_BUDGET frames per
FRAME_WINDOW_SECONDS; sends are counted by the per-user send rate instead.

Room events reach a room socket through its process's `RoomHub` (chat/realtime/hub.py), which
is in the room's group once for all of the process's sockets.

Whatever ends a socket (a close, an error in a handler, the server cancelling it on
shutdown) leaves its groups and its presence: `ChatConsumer.__call__` cleans up last.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.core.exceptions import ValidationError
from django.db import OperationalError

from chat import events, selectors, services
from chat.conf import chat_setting
from chat.models import Chat, Membership
from chat.ratelimit import RateLimited, check_rate
from chat.realtime import presence, read_marks
from chat.realtime.hub import RoomHub
from chat.realtime.loop import note_serving_loop

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

# This process's open sockets per user id, and each user's frame window [started, frames].
_open_sockets: Counter[int] = Counter()
_frame_windows: dict[int, list[float]] = {}


class ChatConsumer(AsyncWebsocketConsumer):
    """Admission, clean-up and parsing of client frames; subclasses handle the frame types they accept."""

    groups_joined: tuple[str, ...] = ()
    user_id: int | None = None
    cleaned_up = False
    warned_window = -1.0

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Shielded: a second cancel (daphne's shutdown) must not cut the clean-up short.
            await asyncio.shield(self.clean_up())

    async def dispatch(self, message):
        """Channels' dispatch without its hop to the sync thread before every message.

        Channels closes stale database connections before each handler, on the one thread
        that also serves Django's HTTP views: in a busy room every frame to every socket
        then waits behind the requests being served. These handlers reach the database only
        through `database_sync_to_async`, which closes stale connections itself.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def admit(self) -> bool:
        """Let in a logged-in user under their socket cap (closing the socket otherwise)."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.reject(CLOSE_UNAUTHENTICATED)
            return False
        if _open_sockets[user.pk] >= chat_setting("CHAT_MAX_SOCKETS_PER_USER"):
            await self.reject(CLOSE_TOO_MANY_SOCKETS)
            return False
        self.user, self.user_id = user, user.pk
        _open_sockets[user.pk] += 1
        session = self.scope.get("session")
        self.session_tag = events.session_tag(getattr(session, "session_key", None))
        return True

    async def reject(self, code: int) -> None:
        await self.accept()
        await self.close(code=code)

    async def join(self, *groups: str) -> None:
        note_serving_loop()
        self.groups_joined = (events.sockets_group(self.user_id), *groups)
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)

    async def disconnect(self, code):
        await self.clean_up()

    async def clean_up(self) -> None:
        """Leave every group and give back the socket's slot; once, whatever ended the socket."""
        if self.cleaned_up:
            return
        self.cleaned_up = True
        if self.user_id is not None:
            _open_sockets[self.user_id] -= 1
            if _open_sockets[self.user_id] <= 0:
                del _open_sockets[self.user_id]
        try:
            for group in self.groups_joined:
                await self.channel_layer.group_discard(group, self.channel_name)
        except Exception:  # the layer is down; its groups expire on their own
            logger.exception("Leaving the groups of %s failed", self.channel_name)

    async def end(self, code: int) -> None:
        """Close the socket now, out of its groups before the client has even seen the close."""
        await self.clean_up()
        await self.close(code=code)

    async def session_ended(self, event):
        if event["session"] is None or event["session"] == self.session_tag:
            await self.end(event["close_code"])

    async def send_json(self, content: dict) -> None:
        await self.send(text_data=json.dumps(content))

    async def receive(self, text_data=None, bytes_data=None):
        if self.cleaned_up:  # closing: nothing it sends counts any more
            return
        frame, problem = self.parse_frame(text_data)
        # Sends are limited by the per-user send rate instead: a busy sender needs more
        # than the frame budget, which keeps every other frame (and garbage) cheap.
        if not (frame and frame["type"] == "send"):
            window_started = self.spend_frame()
            if window_started is not None:
                if self.warned_window != window_started:
                    self.warned_window = window_started
                    await self.send_error("rate_limited", "Too many frames; slow down.")
                return
        if problem:
            return await self.send_error(*problem)
        handler = getattr(self, "client_" + frame["type"].replace(".", "_"), None)
        if handler is None:
            return await self.send_error("unknown_type", f"Unknown frame type {frame['type'][:40]!r}.")
        await handler(frame)

    @staticmethod
    def parse_frame(text_data: str | None) -> tuple[dict | None, tuple[str, str] | None]:
        """The frame as a dict with a string "type", or the error code and sentence for it."""
        if text_data is None:
            return None, ("binary_frame", "Send JSON text frames.")
        if len(text_data.encode()) > chat_setting("CHAT_WS_MAX_FRAME_BYTES"):
            return None, ("frame_too_large", "Frame too large.")
        try:
            frame = json.loads(text_data)
        except Exception:  # not only ValueError: 3,000 nested brackets raise RecursionError
            return None, ("malformed", "Frames must be JSON objects.")
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            return None, ("malformed", "Frames must be JSON objects with a type.")
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


class InboxConsumer(ChatConsumer):
    """One per tab of a logged-in user: list changes, unread counts, the total."""

    async def connect(self):
        if not await self.admit():
            return
        await self.join(events.user_group(self.user_id))
        await self.accept()
        total = await database_sync_to_async(selectors.total_unread_for_user_id)(user_id=self.user_id)
        await self.send_json({"type": "inbox.sync", "total_unread": total})

    async def inbox_message(self, event):
        await self.send_json(event)

    async def inbox_unread(self, event):
        await self.send_json(event)

    async def inbox_changed(self, event):
        await self.send_json(event)


class RoomConsumer(ChatConsumer):
    """One per open room (full page or widget): messages, presence, read marking.

    Room events reach it through this process's `RoomHub`, which is in the room's group
    once for all its sockets, and calls the handlers below.
    """

    present = False
    viewing = False

    async def connect(self):
        if not await self.admit():
            return
        self.chat_id = self.scope["url_route"]["kwargs"]["chat_id"]
        self.membership = await database_sync_to_async(self.enter)()
        if self.membership is None:
            return await self.reject(CLOSE_FORBIDDEN)
        self.present = True  # its presence row exists: clean_up removes it, whatever happens next
        self.viewing = True
        await self.join()
        await RoomHub.for_running_loop().join(self)
        self.in_hub = True
        await self.accept()
        await presence.track(self.channel_name)
        presence.recount_soon(self.chat_id)

    def enter(self) -> Membership | None:
        """The user's membership, and for a member this socket's presence row, in one trip
        to the database thread: after a restart every open room reconnects at once, and
        each trip waits its turn on that one thread behind everybody else's."""
        membership = selectors.membership_for(user=self.user, chat_id=self.chat_id)
        if membership is not None:
            presence.join(chat_id=self.chat_id, user_id=self.user_id, channel_name=self.channel_name)
        return membership

    async def clean_up(self) -> None:
        if self.cleaned_up:
            return
        self.viewing = False  # no read marks from a socket on its way out
        if getattr(self, "in_hub", False):
            await RoomHub.for_running_loop().leave(self)
        await super().clean_up()
        if not self.present:
            return
        try:
            await presence.leave(self.channel_name)
        except Exception:  # the database is restarting: the row expires with presence.STALE_AFTER
            logger.exception("Removing the presence of %s failed", self.channel_name)
        presence.recount_soon(self.chat_id)

    # Events from the channel layer

    async def chat_message(self, event):
        if "text" in event:
            await self.send(text_data=event["text"])
        else:  # sent by a process still on a version that did not pre-encode (a rolling deploy)
            await self.send_json({**event, "type": "chat.message"})
        if event["sender_id"] != self.user_id and self.viewing:
            self.schedule_read(event["message_id"])

    async def chat_presence(self, event):
        if "online" in event:  # a process on the previous version only asked for a recount
            await self.send_json(event)

    async def chat_renamed(self, event):
        await self.send_json(event)

    async def chat_revoked(self, event):
        if getattr(self, "revoked", False):
            return  # it comes both through the room and to this socket
        if event["deleted"] or self.user_id in event["user_ids"]:
            self.revoked = True
            await self.send_json({"type": "chat.revoked", "chat_id": self.chat_id, "deleted": event["deleted"]})
            await self.close(code=CLOSE_FORBIDDEN)

    # Frames from the client

    async def client_read(self, frame: dict) -> None:
        message_id = frame.get("message_id")
        if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id < 0:
            return await self.send_error("malformed", "read needs an integer message_id.")
        self.schedule_read(message_id)

    async def client_visibility(self, frame: dict) -> None:
        viewing = bool(frame.get("visible"))
        if viewing != self.viewing:
            self.viewing = viewing
            await database_sync_to_async(presence.set_visible)(channel_name=self.channel_name, visible=viewing)

    async def client_send(self, frame: dict) -> None:
        client_id, body = frame.get("client_id"), frame.get("body")
        if not isinstance(client_id, str) or not 0 < len(client_id) <= services.CLIENT_ID_MAX_LENGTH:
            return await self.send_error("malformed", "send needs a client_id of 1 to 64 characters.")
        if not isinstance(body, str):
            return await self.send_error("malformed", "send needs a text body.", client_id=client_id)
        try:
            message_id = await database_sync_to_async(self.send_message)(body=body, client_id=client_id)
        except ValidationError as exc:
            return await self.send_error("invalid", " ".join(exc.messages), client_id=client_id)
        except RateLimited as exc:
            return await self.send_error("rate_limited", str(exc), client_id=client_id, retry_after=exc.retry_after)
        except OperationalError:  # SQLite's writer lock, a database restarting: nothing was saved
            logger.warning("Database unavailable for a send in chat %s", self.chat_id, exc_info=True)
            busy = "The server is busy; sending again."
            return await self.send_error("busy", busy, client_id=client_id, retry_after=1)
        except Membership.DoesNotExist:
            await self.send_error("forbidden", "You are no longer a member of this chat.", client_id=client_id)
            return await self.end(CLOSE_FORBIDDEN)
        await self.send_json({"type": "ack", "client_id": client_id, "message_id": message_id})

    def send_message(self, *, body: str, client_id: str) -> int:
        """As the `send/` route: within the rate, then the one send service, which stores
        nothing unless the sender is still a member (Membership.DoesNotExist)."""
        check_rate(action="send", key=self.user_id)
        chat = Chat(pk=self.chat_id)
        return services.send_message(chat=chat, sender=self.user, body=body, client_id=client_id).pk

    def schedule_read(self, message_id: int) -> None:
        read_marks.mark(chat_id=self.chat_id, user_id=self.user_id, up_to_id=message_id)
