"""A chat room as the page runs it, without the browser: for benchmarks and tests.

It follows the room's JavaScript (static/js/components/chat/): `chat-websocket.js` (reconnect
with full jitter, stop on 4401/4403), `message-send.js` (frames chained by `prev_id`, an early
frame held for the reorder grace, catch-up over HTTP with `messages/?after=<id>`, and
`&before=<id>` while frames past a gap are held) and `message-outbox.js` (each message gets a
client id and goes over the socket when it is open, answered by an ack; over HTTP when it is
not, when no ack comes in time or the socket closes; overload answers are waited out and
retried with the same client id, which the server stores once). The protocol itself is
documented in `chat/consumers.py`.

Everything shown is recorded (`shown`, `shown_at`, `framed_at`, `counts`) for a benchmark
to time and a test to compare with the database. Needs `websockets` and `httpx` (the dev extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

MESSAGE_ID = re.compile(r'data-message-id="(\d+)"')
FINAL_CLOSE_CODES = {4401, 4403}
# chat-websocket.js
RECONNECT_BASE_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 15.0
# message-send.js
REORDER_GRACE_SECONDS = 0.4
MAX_CATCH_UP_PAGES = 40
CATCH_UP_RETRY_MAX_SECONDS = 30.0
# message-outbox.js
ACK_TIMEOUT_SECONDS = 5.0
SEND_RETRY_BASE_SECONDS = 1.0
SEND_RETRY_MAX_SECONDS = 30.0
RETRIED_ERROR_CODES = {"rate_limited", "busy"}


@dataclass(frozen=True)
class Member:
    """Who the client is: a logged-in session (see tooling.forge_session)."""

    user_id: int
    cookie: str  # the Cookie header: session and CSRF cookies
    csrf: str  # the CSRF secret the cookie carries, sent as the form's token


@dataclass(frozen=True)
class Sent:
    """How one message left the outbox: stored (`message_id`) or refused (`refusal`)."""

    client_id: str
    body: str
    message_id: int | None
    via: str | None  # "socket" (acked) or "http" (answered 200); None if refused
    refusal: str | None
    tries: tuple[str, ...]  # "socket" or "http" per attempt, retries included


@dataclass
class Outgoing:
    client_id: str
    body: str
    answered: asyncio.Future
    tries: list[str] = field(default_factory=list)


def new_client_id() -> str:
    return str(uuid.uuid4())


class Outbox:
    """message-outbox.js: one room's messages on their way out, each stored once, in order typed."""

    def __init__(self, room: RoomClient, *, ack_timeout: float, over_socket: bool):
        self.room, self.ack_timeout, self.over_socket = room, ack_timeout, over_socket
        self.queue: list[Outgoing] = []  # the head is the one in flight
        self.in_flight: Outgoing | None = None
        self.ack_timer: asyncio.TimerHandle | None = None
        self.retry_timer: asyncio.TimerHandle | None = None
        self.retries = 0

    def send(self, body: str) -> asyncio.Future:
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
        answer = Sent(message.client_id, message.body, message_id, via, None, tuple(message.tries))
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
        delay = retry_after if retry_after else backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter
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


class RoomClient:
    """One member's room: its socket, what it shows, and its outbox.

    `servers` are base URLs ("http://127.0.0.1:8000"); with `failover` a refused connection
    moves the socket (and the HTTP requests) to the next one, as a load balancer would.
    `start_id` is the newest message the page rendered. `send_over="http"` posts every
    message, as the page does while its socket is closed.
    """

    def __init__(
        self,
        *,
        member: Member,
        chat_id: int,
        servers: list[str],
        failover: bool = False,
        start_id: int = 0,
        visible: bool = True,
        send_over: str = "socket",
        reorder_grace: float = REORDER_GRACE_SECONDS,
        ack_timeout: float = ACK_TIMEOUT_SECONDS,
        reconnect_delays: tuple[float, float] = (RECONNECT_BASE_SECONDS, RECONNECT_MAX_SECONDS),
        http: httpx.AsyncClient | None = None,
        http_timeout: float = 60,
        open_timeout: float = 15,
        connect_gate: asyncio.Semaphore | None = None,
    ):
        self.member, self.chat_id = member, chat_id
        self.servers, self.server_index, self.failover = servers, 0, failover
        self.visible, self.reorder_grace, self.reconnect_delays = visible, reorder_grace, reconnect_delays
        self.open_timeout, self.connect_gate = open_timeout, connect_gate
        self.own_http = http is None
        self.http = http or new_http_client(timeout=http_timeout)
        self.outbox = Outbox(self, ack_timeout=ack_timeout, over_socket=send_over == "socket")
        self.contiguous_id = self.newest_shown_id = start_id
        self.held_frames: dict[int, dict] = {}  # prev_id -> frame, for frames that came early
        self.grace_timer: asyncio.TimerHandle | None = None
        self.catching_up: asyncio.Task | None = None
        self.catch_up_again = False
        self.catch_up_retry_delay = 0.0
        self.catch_up_retry_timer: asyncio.TimerHandle | None = None
        self.shown: list[int] = []  # in the order they appeared
        self.shown_at: dict[int, float] = {}  # time.monotonic() of each message's first showing
        self.shown_via: dict[int, str] = {}  # "frame", "catch_up" or "send_answer"
        self.framed_at: dict[int, float] = {}  # time.monotonic() of each message's first frame
        self.counts: Counter[str] = Counter()  # open, drop, frame, catch_up, gap, retry_*, sent_*, ...
        self.last_presence_at = 0.0
        self.connected = asyncio.Event()
        self.final_close_code: int | None = None
        self.revoked = False
        self.stopped = False
        self.ws: ClientConnection | None = None
        self.tasks: set[asyncio.Task] = set()
        self.errors: list[BaseException] = []  # what broke one of the client's own tasks: a bug here

    @property
    def server(self) -> str:
        return self.servers[self.server_index]

    def headers(self) -> dict[str, str]:
        return {"Cookie": self.member.cookie, "HX-Request": "true"}

    def start(self, server_index: int = 0) -> None:
        self.server_index = server_index
        self.spawn(self.keep_connected())

    def send(self, body: str) -> asyncio.Future:
        """Queue a message; the future gives its `Sent` once stored or refused."""
        return self.outbox.send(body)

    async def stop(self) -> None:
        self.stopped = True
        self.outbox.stop()
        for timer in (self.grace_timer, self.catch_up_retry_timer):
            if timer is not None:
                timer.cancel()
        if self.ws is not None:
            await self.ws.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.own_http:
            await self.http.aclose()

    def spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.task_done)
        return task

    def task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(task.exception())

    # The socket (chat-websocket.js)

    async def keep_connected(self) -> None:
        attempts = 0
        while not self.stopped:
            try:
                ws = await self.open_socket()
            except Exception as exc:  # a browser's socket just closes, whatever went wrong
                self.counts["failed_connect"] += 1
                self.counts[f"failed_connect_{type(exc).__name__}"] += 1
                if self.failover:
                    self.server_index = (self.server_index + 1) % len(self.servers)
                await self.reconnect_pause(attempts)
                attempts += 1
                continue
            attempts = 0
            self.ws = ws
            self.on_open()
            try:
                async for text in ws:
                    self.on_text(text)
            except (OSError, WebSocketException) as exc:
                self.counts[f"closed_{type(exc).__name__}"] += 1
            self.ws = None
            self.connected.clear()
            self.outbox.on_socket_closed()
            if ws.close_code in FINAL_CLOSE_CODES:
                self.final_close_code = ws.close_code
                self.stopped = True
                return
            if not self.stopped:
                self.counts["drop"] += 1
                await self.reconnect_pause(attempts)
                attempts += 1

    async def open_socket(self) -> ClientConnection:
        url = "ws" + self.server.removeprefix("http") + f"/ws/chat/{self.chat_id}/"
        async with self.connect_gate or contextlib.nullcontext():
            return await connect(
                url,
                origin=self.server,
                additional_headers={"Cookie": self.member.cookie},
                compression=None,
                ping_interval=None,
                max_queue=None,
                open_timeout=self.open_timeout,
            )

    async def reconnect_pause(self, attempts: int) -> None:
        base, ceiling = self.reconnect_delays
        await asyncio.sleep(random.uniform(0, min(ceiling, base * 2**attempts)))  # noqa: S311 - jitter

    def is_open(self) -> bool:
        return self.ws is not None

    def send_frame(self, frame: dict) -> None:
        if self.ws is not None:
            self.spawn(send_quietly(self.ws, json.dumps(frame)))

    def on_open(self) -> None:
        # Every open catches up, the first one too: a message sent after the page rendered
        # and before the socket joined the room has no frame for this socket.
        self.counts["open"] += 1
        self.connected.set()
        self.report_visibility()
        self.catch_up()
        self.outbox.on_socket_opened()

    def report_visibility(self) -> None:
        self.send_frame({"type": "visibility", "visible": self.visible})
        if self.visible:
            self.send_frame({"type": "read", "message_id": self.newest_shown_id})

    # Frames and catch-up (message-send.js)

    def on_text(self, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            return
        if self.outbox.on_frame(frame):
            return
        if frame.get("type") == "chat.message":
            self.on_message_frame(frame)
        elif frame.get("type") == "chat.presence":
            self.last_presence_at = time.monotonic()
        elif frame.get("type") == "chat.revoked":
            self.show_revoked()

    def on_message_frame(self, frame: dict) -> None:
        """Hold a frame that does not chain for the reorder grace before fetching the gap."""
        self.framed_at.setdefault(frame["message_id"], time.monotonic())
        if frame["message_id"] <= self.contiguous_id:
            self.counts["stale_frame"] += 1
            return
        if frame["prev_id"] != self.contiguous_id:
            self.counts["gap"] += 1
        self.held_frames[frame["prev_id"]] = frame
        self.apply_chained_frames()
        if self.held_frames and self.grace_timer is None:
            self.grace_timer = asyncio.get_running_loop().call_later(self.reorder_grace, self.grace_over)

    def grace_over(self) -> None:
        self.grace_timer = None
        if self.held_frames:
            self.counts["grace_over"] += 1
            self.catch_up()

    def apply_chained_frames(self) -> None:
        while (frame := self.held_frames.pop(self.contiguous_id, None)) is not None:
            self.insert([frame["message_id"]], via="frame")
            self.contiguous_id = frame["message_id"]
        for prev_id, held in list(self.held_frames.items()):
            if held["message_id"] <= self.contiguous_id:
                del self.held_frames[prev_id]
        if not self.held_frames and self.grace_timer is not None:
            self.grace_timer.cancel()
            self.grace_timer = None

    def catch_up(self) -> asyncio.Task:
        """Fetch what is missing; while a fetch runs, one more follows it."""
        if self.catching_up is not None:
            self.catch_up_again = True
            return self.catching_up
        self.catching_up = self.spawn(self.run_catch_up())
        return self.catching_up

    async def run_catch_up(self) -> None:
        try:
            before = self.contiguous_id
            await self.fetch_pages()
            if self.contiguous_id > before:
                self.report_visibility()  # marks what we caught up on read
        finally:
            self.catching_up = None
            if self.catch_up_again and not self.stopped:
                self.catch_up_again = False
                self.catch_up()

    async def caught_up(self) -> None:
        """Catch up now and wait until no catch-up runs (as after a reconnect)."""
        self.catch_up()
        while self.catching_up is not None:
            await asyncio.gather(self.catching_up, return_exceptions=True)

    def gap_query(self) -> dict[str, int]:
        """While frames past the gap are held, only the gap (`before` the first held one)."""
        query = {"after": self.contiguous_id}
        if self.held_frames:
            query["before"] = min(frame["message_id"] for frame in self.held_frames.values())
        return query

    async def fetch_pages(self) -> None:
        for _ in range(MAX_CATCH_UP_PAGES):
            query = self.gap_query()
            self.counts["catch_up_request"] += 1
            try:
                response = await self.http.get(
                    f"{self.server}/chat/{self.chat_id}/messages/", params=query, headers=self.headers()
                )
            except httpx.TransportError:
                return self.retry_catch_up_later()  # offline: the socket's reconnect also catches up
            if response.status_code == 404:
                return self.show_revoked()
            if not response.is_success:
                self.counts[f"catch_up_{response.status_code}"] += 1
                return self.retry_catch_up_later()
            self.catch_up_retry_delay = 0.0
            ids = [int(found) for found in MESSAGE_ID.findall(response.text)]
            if not ids:
                if "before" in query:
                    self.held_frames.clear()  # nothing in the gap after all: fetch everything after
                    continue
                return
            self.insert(ids, via="catch_up")
            self.contiguous_id = max(self.contiguous_id, *ids)
            self.apply_chained_frames()

    def retry_catch_up_later(self) -> None:
        """A failed catch-up is retried with backoff, so a gap is filled even in a quiet room."""
        self.counts["failed_catch_up"] += 1
        if self.catch_up_retry_timer is not None or self.stopped:
            return
        self.catch_up_retry_delay = min(CATCH_UP_RETRY_MAX_SECONDS, (self.catch_up_retry_delay or 0.5) * 2)
        self.catch_up_retry_timer = asyncio.get_running_loop().call_later(
            self.catch_up_retry_delay, self.catch_up_retry_due
        )

    def catch_up_retry_due(self) -> None:
        self.catch_up_retry_timer = None
        if not self.stopped:
            self.catch_up()

    # Showing messages

    def insert(self, ids: list[int], *, via: str) -> None:
        now = time.monotonic()
        for message_id in ids:
            if message_id in self.shown_at:
                self.counts["duplicate_offered"] += 1  # the page inserts a bubble once
                continue
            self.shown.append(message_id)
            self.shown_at[message_id] = now
            self.shown_via[message_id] = via
            self.newest_shown_id = max(self.newest_shown_id, message_id)
            self.counts[via] += 1

    def show_sent(self, html: str | None, message_id: int | None) -> None:
        """A sent message: its bubble came with an HTTP answer, or comes as the frame after an ack."""
        if html:
            self.insert([int(found) for found in MESSAGE_ID.findall(html)], via="send_answer")
        if message_id and message_id > self.contiguous_id:
            asyncio.get_running_loop().call_later(self.reorder_grace, self.catch_up_if_behind, message_id)

    def catch_up_if_behind(self, message_id: int) -> None:
        if not self.stopped and message_id > self.contiguous_id:
            self.catch_up()

    def show_revoked(self) -> None:
        self.revoked = self.stopped = True
        if self.ws is not None:
            self.spawn(self.ws.close())

    async def wait_for(self, message_id: int, timeout: float) -> bool:
        """Wait until every message up to this id is shown (no gap before it)."""
        deadline = time.monotonic() + timeout
        while self.contiguous_id < message_id and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.contiguous_id >= message_id


async def send_quietly(ws: ClientConnection, text: str) -> None:
    with contextlib.suppress(WebSocketException):  # closing: the reconnect reports again
        await ws.send(text)


def new_http_client(*, timeout: float, connections: int = 4) -> httpx.AsyncClient:
    """A client for room requests; identities go in each request's Cookie header, not a jar."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(timeout=timeout, limits=limits, cookies=no_cookies)
