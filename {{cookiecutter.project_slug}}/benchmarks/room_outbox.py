"""message-outbox.js in Python: a room's messages on their way out, each stored once, in order.

Each message gets a client id when it is typed. While the room socket is open, messages go
over it as they are sent, without waiting for the acks of those before them ({"type":
"send"}, answered by an "ack" or an "error" with the same id), each naming the message
before it that is not acked yet ("after"): the server stores none before the one it
follows ("out_of_order" otherwise). Any answer but an ack holds the outbox until every send
out is answered; then what was not stored goes again, from the first. With the socket
closed, or no answer in time, the first message goes over the send form's HTTP route, one
at a time. The server stores a client id once per sender, so a retry never stores a
message twice. Overload answers (a "rate_limited" or "busy" frame with retry_after; 429 or
5xx with Retry-After) are waited out and retried; other answers refuse the message.
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
MAX_OUT = 16  # sends out over the socket at once (the server reads that many unanswered)


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
    out: bool = False  # sent over the socket, unanswered


def new_client_id() -> str:
    return str(uuid.uuid4())


class Outbox:
    """One room's outbox; `room` is its RoomClient (socket, HTTP client, what it shows)."""

    def __init__(self, room: RoomClient, *, ack_timeout: float, over_socket: bool):
        self.room, self.ack_timeout, self.over_socket = room, ack_timeout, over_socket
        self.queue: list[Outgoing] = []  # in the order sent; those `out` are the first ones, unless `held`
        self.held = False  # an answer other than an ack came: nothing goes until every send out is answered
        self.over_http: Outgoing | None = None  # the first message, while it is being sent over HTTP
        self.ack_timer: asyncio.TimerHandle | None = None
        self.retry_timer: asyncio.TimerHandle | None = None
        self.retry_for: Outgoing | None = None  # the message whose answer set `retry_timer`
        self.retries = 0

    def send(self, body: str) -> asyncio.Future[Sent]:
        message = Outgoing(new_client_id(), body, asyncio.get_running_loop().create_future())
        self.queue.append(message)
        self.pump()
        return message.answered

    def stop(self) -> None:
        self.cancel_ack_timer()
        self.stop_waiting_to_retry()
        for message in self.queue:
            message.answered.cancel()
        self.queue = []

    def pump(self) -> None:
        """Send what may go now: over the socket, every message not out yet (up to
        MAX_OUT out); over HTTP, the first message, once nothing is out."""
        if self.retry_timer is not None or self.over_http is not None:
            return
        out = sum(message.out for message in self.queue)
        if self.held:
            if out:
                return
            self.held = False
        if out == len(self.queue):
            return
        if not (self.over_socket and self.room.is_open()):
            if not out:
                self.start_http(self.queue[0])
            return
        for index in range(out, min(len(self.queue), MAX_OUT)):
            self.send_over_socket(index)

    def send_over_socket(self, index: int) -> None:
        message = self.queue[index]
        message.tries.append("socket")
        message.last_try_at = time.monotonic()
        frame = {"type": "send", "client_id": message.client_id, "body": message.body}
        if index > 0:
            frame["after"] = self.queue[index - 1].client_id  # not acked yet
        self.room.send_frame(frame)
        message.out = True
        if index == 0:
            self.wait_for_ack()

    def wait_for_ack(self) -> None:
        """The first message is out over the socket: no answer in time (a socket that died
        quietly), it goes over HTTP with the same client id."""
        self.cancel_ack_timer()
        if self.queue and self.queue[0].out:
            self.ack_timer = asyncio.get_running_loop().call_later(self.ack_timeout, self.ack_timed_out, self.queue[0])

    def ack_timed_out(self, message: Outgoing) -> None:
        self.ack_timer = None
        if not (self.queue and self.queue[0] is message and message.out):
            return
        if self.over_http is not None or self.retry_timer is not None:
            self.wait_for_ack()  # another attempt first: look again later
            return
        self.room.counts["ack_timeout"] += 1
        self.start_http(message)

    def start_http(self, message: Outgoing) -> None:
        self.over_http = message  # at once, as the page's fetch starts: no second one meanwhile
        self.room.spawn(self.send_over_http(message))

    def on_socket_opened(self) -> None:
        """The socket is back: what waits goes now, a message waiting out a failed attempt too."""
        self.stop_waiting_to_retry()
        self.pump()

    def on_socket_closed(self) -> None:
        """Its answers will not come: what was out over it goes again, the first over HTTP now."""
        self.cancel_ack_timer()
        for message in self.queue:
            message.out = False
        self.held = False
        self.pump()

    def on_frame(self, frame: dict) -> bool:
        """Handle a frame that answers a send; True if it was one."""
        if not frame.get("client_id") or frame.get("type") not in ("ack", "error"):
            return frame.get("type") == "ack"
        message = next((queued for queued in self.queue if queued.client_id == frame["client_id"]), None)
        if message is None:
            return True  # a message already dealt with
        if frame["type"] == "ack":
            self.done(message, via="socket", message_id=frame["message_id"])
        elif not message.out:
            pass  # a late answer to a send already tried again (over HTTP): that try decides
        elif frame.get("code") in RETRIED_ERROR_CODES:
            self.retry_later(message, frame.get("retry_after"), reason=frame["code"])
        elif frame.get("code") == "out_of_order":
            self.room.counts["out_of_order"] += 1
            self.answered(message)  # the one before it was not stored: it goes again after that one
            self.pump()
        elif self.over_http is message:
            self.answered(message)  # refused here, perhaps stored over HTTP meanwhile: that answer decides
        else:
            self.refuse(message, frame.get("error") or frame.get("code", "error"))
        return True

    async def send_over_http(self, message: Outgoing) -> None:
        message.tries.append("http")
        message.last_try_at = time.monotonic()
        fields = {"csrfmiddlewaretoken": self.room.member.csrf, "body": message.body, "client_id": message.client_id}
        try:
            response = await self.room.http.post(
                f"{self.room.server}/chat/{self.room.chat_id}/send/", data=fields, headers=self.room.headers()
            )
        except httpx.TransportError:
            response = None
        if self.over_http is message:
            self.over_http = None
        if message not in self.queue:
            return self.pump()  # an ack got there first
        if response is None:
            return self.retry_later(message, None, reason="unreachable")
        status = response.status_code
        if response.is_success:
            found = MESSAGE_ID.search(response.text)
            return self.done(message, via="http", message_id=int(found.group(1)) if found else None, html=response.text)
        if message.out and status != 429 and status < 500:
            return  # refused here while its socket try is unanswered, which may have stored it: that answer decides
        if status == 429 or status >= 500:
            return self.retry_later(message, retry_after_seconds(response), reason=str(status))
        if status in (403, 404):
            return self.refuse(message, "You can no longer send messages here.")
        self.refuse(message, response.text)  # the server's error fragment (400)

    def answered(self, message: Outgoing) -> None:
        """An answer other than an ack: the message is no longer out, and nothing more goes
        until every send out is answered (they name it, or one before it, as the one they follow)."""
        message.out = False
        self.held = True
        if self.queue and message is self.queue[0]:
            self.wait_for_ack()

    def remove(self, message: Outgoing) -> bool:
        if message not in self.queue:
            return False
        first = message is self.queue[0]
        self.queue.remove(message)
        if first:
            self.wait_for_ack()
        return True

    def done(self, message: Outgoing, *, via: str, message_id: int | None, html: str | None = None) -> None:
        if not self.remove(message):
            return
        if self.over_http is message:
            self.over_http = None  # acked over the socket: its HTTP answer no longer matters
        if self.retry_for is message:
            self.stop_waiting_to_retry()  # stored after all (its other try)
        self.retries = 0
        self.room.counts[f"sent_{via}"] += 1
        answer = Sent(message.client_id, message.body, message_id, via, None, tuple(message.tries), message.last_try_at)
        if not message.answered.done():
            message.answered.set_result(answer)
        self.room.show_sent(html, message_id if via == "socket" else None)
        self.pump()

    def refuse(self, message: Outgoing, reason: str) -> None:
        if message not in self.queue:
            return
        self.answered(message)
        self.remove(message)
        self.room.counts["refused"] += 1
        if not message.answered.done():
            message.answered.set_result(Sent(message.client_id, message.body, None, None, reason, tuple(message.tries)))
        self.pump()

    def retry_later(self, message: Outgoing, retry_after: float | None, *, reason: str) -> None:
        if message not in self.queue:
            return
        self.answered(message)
        if self.retry_timer is not None:
            return
        self.retry_for = message
        self.retries += 1
        self.room.counts[f"retry_{reason}"] += 1
        backoff = min(SEND_RETRY_MAX_SECONDS, SEND_RETRY_BASE_SECONDS * 2 ** (self.retries - 1))
        # Retry-After at least, as message-outbox.js waits: up to half as long again at random.
        jitter = random.random() / 2  # noqa: S311 - not a secret
        delay = retry_after * (1 + jitter) if retry_after else backoff * (0.5 + jitter)
        self.retry_timer = asyncio.get_running_loop().call_later(delay, self.retry_due)

    def retry_due(self) -> None:
        self.retry_timer = self.retry_for = None
        self.pump()

    def stop_waiting_to_retry(self) -> None:
        if self.retry_timer is not None:
            self.retry_timer.cancel()
        self.retry_timer = self.retry_for = None

    def cancel_ack_timer(self) -> None:
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None


def retry_after_seconds(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", "")) or None
    except ValueError:
        return None
