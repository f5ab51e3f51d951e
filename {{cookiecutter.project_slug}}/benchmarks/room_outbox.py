"""message-outbox.js in Python: a room's messages on their way out, each stored once, in order.

Each message gets a client id when it is typed. It goes over the room socket when that is
open ({"type": "send"}, answered by an "ack" or an "error" with the same id), and over the
send form's HTTP route otherwise, or when no ack comes in time or the socket closes. The
server stores a client id once per sender, so a retry never stores a message twice.
Overload answers (a "rate_limited" or "busy" frame with retry_after; 429 or 5xx with
Retry-After) are waited out and retried; other answers refuse the message.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from .room_client import RoomClient

MESSAGE_ID = re.compile(r'data-message-id="(\d+)"')  # a message's bubble in an HTML answer
ACK_TIMEOUT_SECONDS = 5.0
SEND_RETRY_BASE_SECONDS = 1.0
SEND_RETRY_MAX_SECONDS = 30.0
RETRIED_ERROR_CODES = {"rate_limited", "busy"}


@dataclass(frozen=True)
class Sent:
    """How one message left the outbox: stored (`message_id`) or refused (`refusal`)."""

    client_id: str
    body: str
    message_id: int | None
    via: str | None  # "socket" (acked) or "http" (answered 200); None if refused
    refusal: str | None
    tries: tuple[str, ...]  # "socket" or "http" per attempt, retries included
    last_try_at: float = 0.0  # time.monotonic() of the attempt that was answered


@dataclass
class Outgoing:
    client_id: str
    body: str
    answered: asyncio.Future
    tries: list[str] = field(default_factory=list)
    last_try_at: float = 0.0


def new_client_id() -> str:
    return str(uuid.uuid4())


class Outbox:
    """One room's outbox; `room` is its RoomClient (socket, HTTP client, what it shows)."""

    def __init__(self, room: RoomClient, *, ack_timeout: float, over_socket: bool):
        self.room, self.ack_timeout, self.over_socket = room, ack_timeout, over_socket
        self.queue: list[Outgoing] = []  # the head is the one in flight
        self.in_flight: Outgoing | None = None
        self.ack_timer: asyncio.TimerHandle | None = None
        self.retry_timer: asyncio.TimerHandle | None = None
        self.retries = 0

    def send(self, body: str) -> asyncio.Future[Sent]:
        message = Outgoing(new_client_id(), body, asyncio.get_running_loop().create_future())
        self.queue.append(message)
        if self.in_flight is None and self.retry_timer is None:
            self.next()
        return message.answered

    def stop(self) -> None:
        self.cancel_ack_timer()
        if self.retry_timer is not None:
            self.retry_timer.cancel()
        for message in self.queue:
            message.answered.cancel()
        self.queue = []

    def next(self) -> None:
        self.in_flight = self.queue[0] if self.queue else None
        if self.in_flight is None:
            return
        if self.over_socket and self.room.is_open():
            self.send_over_socket(self.in_flight)
        else:
            self.room.spawn(self.send_over_http(self.in_flight))

    def send_over_socket(self, message: Outgoing) -> None:
        message.tries.append("socket")
        message.last_try_at = time.monotonic()
        self.room.send_frame({"type": "send", "client_id": message.client_id, "body": message.body})
        self.cancel_ack_timer()
        # No answer in time (a socket that died quietly): the same client id over HTTP.
        self.ack_timer = asyncio.get_running_loop().call_later(self.ack_timeout, self.ack_timed_out, message)

    def ack_timed_out(self, message: Outgoing) -> None:
        self.ack_timer = None
        self.room.counts["ack_timeout"] += 1
        self.room.spawn(self.send_over_http(message))

    def on_socket_opened(self) -> None:
        """The socket is back: a message waiting out a failed attempt goes now."""
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None
            self.next()

    def on_socket_closed(self) -> None:
        """A message sent over the socket and not yet acked goes over HTTP now."""
        if self.in_flight is not None and self.ack_timer is not None:
            self.cancel_ack_timer()
            self.room.spawn(self.send_over_http(self.in_flight))

    def on_frame(self, frame: dict) -> bool:
        """Handle a frame that answers a send; True if it was one."""
        message = self.in_flight
        if not frame.get("client_id") or message is None or frame["client_id"] != message.client_id:
            return frame.get("type") == "ack"
        if frame.get("type") == "ack":
            self.done(message, via="socket", message_id=frame["message_id"])
        elif frame.get("type") == "error" and frame.get("code") in RETRIED_ERROR_CODES:
            self.retry_later(message, frame.get("retry_after"), reason=frame["code"])
        elif frame.get("type") == "error":
            self.refuse(message, frame.get("error") or frame.get("code", "error"))
        else:
            return False
        return True

    async def send_over_http(self, message: Outgoing) -> None:
        self.cancel_ack_timer()
        message.tries.append("http")
        message.last_try_at = time.monotonic()
        fields = {"csrfmiddlewaretoken": self.room.member.csrf, "body": message.body, "client_id": message.client_id}
        try:
            response = await self.room.http.post(
                f"{self.room.server}/chat/{self.room.chat_id}/send/", data=fields, headers=self.room.headers()
            )
        except httpx.TransportError:
            return self.retry_later(message, None, reason="unreachable")
        if self.in_flight is not message:
            return  # an ack got there first
        status = response.status_code
        if response.is_success:
            found = MESSAGE_ID.search(response.text)
            return self.done(message, via="http", message_id=int(found.group(1)) if found else None, html=response.text)
        if status == 429 or status >= 500:
            return self.retry_later(message, retry_after_seconds(response), reason=str(status))
        if status in (403, 404):
            return self.refuse(message, "You can no longer send messages here.")
        self.refuse(message, response.text)  # the server's error fragment (400)

    def done(self, message: Outgoing, *, via: str, message_id: int | None, html: str | None = None) -> None:
        if self.in_flight is not message:
            return
        self.cancel_ack_timer()
        self.queue.pop(0)
        self.retries = 0
        self.room.counts[f"sent_{via}"] += 1
        answer = Sent(message.client_id, message.body, message_id, via, None, tuple(message.tries), message.last_try_at)
        if not message.answered.done():
            message.answered.set_result(answer)
        self.room.show_sent(html, message_id if via == "socket" else None)
        self.next()

    def refuse(self, message: Outgoing, reason: str) -> None:
        if self.in_flight is not message:
            return
        self.cancel_ack_timer()
        self.queue.pop(0)
        self.room.counts["refused"] += 1
        if not message.answered.done():
            message.answered.set_result(Sent(message.client_id, message.body, None, None, reason, tuple(message.tries)))
        self.next()

    def retry_later(self, message: Outgoing, retry_after: float | None, *, reason: str) -> None:
        if self.in_flight is not message or self.retry_timer is not None:
            return
        self.cancel_ack_timer()
        self.retries += 1
        self.room.counts[f"retry_{reason}"] += 1
        backoff = min(SEND_RETRY_MAX_SECONDS, SEND_RETRY_BASE_SECONDS * 2 ** (self.retries - 1))
        # Retry-After at least, as message-outbox.js waits: up to half as long again at random.
        jitter = random.random() / 2  # noqa: S311 - not a secret
        delay = retry_after * (1 + jitter) if retry_after else backoff * (0.5 + jitter)
        self.in_flight = None
        self.retry_timer = asyncio.get_running_loop().call_later(delay, self.retry_due)

    def retry_due(self) -> None:
        self.retry_timer = None
        self.next()

    def cancel_ack_timer(self) -> None:
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None


def retry_after_seconds(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", "")) or None
    except ValueError:
        return None
