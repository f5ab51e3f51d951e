"""A chat room as the page runs it, without the browser: for benchmarks and tests.

It follows the room's JavaScript (static/js/components/chat/): `chat-websocket.js`
(`ReconnectingSocket`: reconnect with full jitter, within a second when the server restarts
(1012) and at most RESTART_RETRY_SECONDS apart for 30 s while it is down, stop on 4401/4403;
and `socket-heartbeat.js`: a ping when quiet, a silent socket dropped and reconnected),
`chat-inbox.js` (`InboxClient`: the inbox socket every page opens), `message-send.js`
(frames chained by `prev_id`, an early frame held for the reorder grace, each open asking
after the newest message shown (`?after=<id>`, answered with the missed bubbles in the
greeting), catch-up over HTTP with `messages/?after=<id>`, and `&before=<id>` while frames
past a gap are held, when a frame skips one or the greeting still names a newer message)
and, in room_outbox.py, `message-outbox.js` (sends over the socket with an ack, over HTTP
when the socket is down or the ack is late, overload answers waited out, always with the
message's client id). The protocol itself is documented in `chat/realtime/consumers.py`.

Everything shown is recorded (`shown`, `shown_at`, `framed_at`, `counts`) for a benchmark
to time and a test to compare with the database. Needs `websockets` and `httpx` (the dev extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from .room_outbox import ACK_TIMEOUT_SECONDS, MESSAGE_ID, Outbox, Sent

FINAL_CLOSE_CODES = {4401, 4403}
SERVICE_RESTART = 1012  # the server process is stopping (a deploy): another one takes the socket
# chat-websocket.js
RECONNECT_BASE_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 15.0
RESTART_JITTER_SECONDS = 1.0
RESTART_WINDOW_SECONDS = 30.0  # after a 1012, a socket that cannot connect retries
RESTART_RETRY_SECONDS = 2.0  # at most this far apart for this long
# socket-heartbeat.js
HEARTBEAT_SECONDS = 25.0  # a ping after this long without a frame
PONG_TIMEOUT_SECONDS = 10.0  # nothing heard this long after the ping: the socket is dead
# message-send.js
REORDER_GRACE_SECONDS = 0.4
SYNC_WAIT_SECONDS = 5.0  # no greeting this long after an open (an older server): catch up anyway
MAX_CATCH_UP_PAGES = 40
CATCH_UP_RETRY_MAX_SECONDS = 30.0


@dataclass(frozen=True)
class Member:
    """Who the client is: a logged-in session (see tooling.forge_session)."""

    user_id: int
    cookie: str  # the Cookie header: session and CSRF cookies
    csrf: str  # the CSRF secret the cookie carries, sent as the form's token


class ReconnectingSocket:
    """chat-websocket.js: one socket kept open, reconnecting with full jitter backoff.

    A failed attempt and a dropped socket both wait `random.uniform(0, min(max, base * 2**attempts))`
    before the next attempt; the first frame a socket hears resets `attempts` (not its open: a
    server that accepts only to close at once, busy, must see the waits grow); 4401/4403 end
    it for good. A restart (1012) is reconnected within RESTART_JITTER_SECONDS, and for
    RESTART_WINDOW_SECONDS after it an attempt that cannot connect waits at most
    RESTART_RETRY_SECONDS: the process is expected back within seconds.
    While open, it keeps a heartbeat (`heartbeat`: the quiet and the silence it allows,
    in seconds, as socket-heartbeat.js).
    Subclasses give the `path` and react in `on_open`, `on_text` and `on_closed`.
    """

    path = "/"

    def __init__(
        self,
        *,
        member: Member,
        servers: list[str],
        failover: bool = False,
        reconnect_delays: tuple[float, float] = (RECONNECT_BASE_SECONDS, RECONNECT_MAX_SECONDS),
        open_timeout: float = 15,
        connect_gate: asyncio.Semaphore | None = None,
        heartbeat: tuple[float, float] = (HEARTBEAT_SECONDS, PONG_TIMEOUT_SECONDS),
    ):
        self.member = member
        self.heartbeat_delays = heartbeat
        self.last_heard = 0.0  # time.monotonic() of the last frame heard
        self.servers, self.server_index, self.failover = servers, 0, failover
        self.reconnect_delays, self.open_timeout, self.connect_gate = reconnect_delays, open_timeout, connect_gate
        self.counts: Counter[str] = Counter()  # open, drop, failed_connect, frame, catch_up, gap, sent_*, ...
        self.opened_at: list[float] = []  # time.monotonic() of each open
        self.closed_at: list[float] = []  # time.monotonic() of each close, for a test to time the reconnects
        self.close_codes: Counter[int] = Counter()  # how the server closed the socket, each time
        self.connected = asyncio.Event()
        self.restarted_at: float | None = None  # time.monotonic() of the last 1012, until a frame is heard
        self.final_close_code: int | None = None
        self.stopped = False
        self.ws: ClientConnection | None = None
        self.tasks: set[asyncio.Task] = set()
        self.errors: list[BaseException] = []  # what broke one of the client's own tasks: a bug here

    @property
    def server(self) -> str:
        return self.servers[self.server_index]

    def start(self, server_index: int = 0) -> None:
        self.server_index = server_index
        self.spawn(self.keep_connected())

    def spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.task_done)
        return task

    def task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(task.exception())

    async def stop(self) -> None:
        self.stopped = True
        if self.ws is not None:
            await self.ws.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def keep_connected(self) -> None:
        attempts = 0
        while not self.stopped:
            try:
                ws = await self.open_socket()
            except Exception as exc:  # a browser's socket just closes, whatever went wrong
                self.counts["failed_connect"] += 1
                self.counts[f"failed_connect_{failure_kind(exc)}"] += 1
                if self.failover:
                    self.server_index = (self.server_index + 1) % len(self.servers)
                # A handshake that timed out found the server up (a browser would still be
                # waiting for it): it backs off, where a refused one tries again soon.
                down = self.server_restarting() and not isinstance(exc, TimeoutError)
                await self.reconnect_pause(attempts, server_restarting=down)
                attempts += 1
                continue
            self.ws = ws
            self.counts["open"] += 1
            self.opened_at.append(time.monotonic())
            self.connected.set()
            self.last_heard = time.monotonic()
            heartbeat = self.spawn(self.keep_heartbeat(ws))
            try:
                self.on_open()
                async for text in ws:
                    self.last_heard = time.monotonic()
                    attempts = 0  # let in: the backoff starts over at the next drop
                    self.restarted_at = None
                    self.on_text(text)
            except (OSError, WebSocketException) as exc:
                self.counts[f"closed_{type(exc).__name__}"] += 1
            finally:
                heartbeat.cancel()  # whatever ended the read loop: no ping to a socket nobody reads
            self.ws = None
            self.connected.clear()
            self.closed_at.append(time.monotonic())
            self.close_codes[ws.close_code] += 1
            restarting = ws.close_code == SERVICE_RESTART
            if restarting:
                self.restarted_at = time.monotonic()
            if restarting and self.failover:
                self.server_index = (self.server_index + 1) % len(self.servers)
            self.on_closed()
            if ws.close_code in FINAL_CLOSE_CODES:
                self.final_close_code = ws.close_code
                self.stopped = True
                return
            if not self.stopped:
                self.counts["drop"] += 1
                await self.reconnect_pause(attempts, restarting=restarting)
                attempts += 1

    async def open_socket(self) -> ClientConnection:
        url = "ws" + self.server.removeprefix("http") + self.socket_path()
        async with self.connect_gate or contextlib.nullcontext():
            return await connect(
                url,
                origin=self.server,
                additional_headers={"Cookie": self.member.cookie},
                compression="deflate",  # offered, as every browser does (the server declines it)
                ping_interval=None,
                max_queue=None,
                open_timeout=self.open_timeout,
                # Straight to the server: websockets otherwise looks for a proxy in the
                # environment on every connect, an eighth of the clients' CPU in a reconnect
                # storm (on the cores the server uses too).
                proxy=None,
            )

    async def keep_heartbeat(self, ws: ClientConnection) -> None:
        """socket-heartbeat.js: after `quiet` seconds without a frame, {"type": "ping"} (the
        server answers "pong"; any frame counts as heard). A socket still silent `silent`
        seconds after its ping is dead (a network gone, a server frozen or cut off without a
        close): dropped at once, without waiting for a close that may take minutes, and
        reconnected as from any other drop."""
        quiet, silent = self.heartbeat_delays
        while True:
            wait = self.last_heard + quiet - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            pinged_at = time.monotonic()
            self.counts["ping_sent"] += 1
            self.spawn(send_quietly(ws, '{"type": "ping"}'))
            await asyncio.sleep(silent)
            if self.last_heard < pinged_at:
                self.counts["silent_drop"] += 1
                ws.transport.abort()  # the read loop ends now, with no close frame (1006)
                return

    async def reconnect_pause(
        self, attempts: int, *, restarting: bool = False, server_restarting: bool = False
    ) -> None:
        """Full jitter: exponential backoff, or at most a second when the server restarts
        (its sockets all reconnect at once, spread over that second), and at most
        RESTART_RETRY_SECONDS while a restarted server does not take connections yet."""
        base, ceiling = self.reconnect_delays
        longest = min(ceiling, base * 2**attempts)
        if restarting:
            longest = RESTART_JITTER_SECONDS
        elif server_restarting:
            longest = min(longest, RESTART_RETRY_SECONDS)
        await asyncio.sleep(random.uniform(0, longest))  # noqa: S311 - jitter

    def server_restarting(self) -> bool:
        """Whether the last close was a restart (1012) under RESTART_WINDOW_SECONDS ago, with no frame heard since."""
        return self.restarted_at is not None and time.monotonic() - self.restarted_at < RESTART_WINDOW_SECONDS

    def socket_path(self) -> str:
        """The path to open, asked on every (re)connect."""
        return self.path

    def is_open(self) -> bool:
        return self.ws is not None

    def on_open(self) -> None:
        pass

    def on_text(self, text: str) -> None:
        pass

    def on_closed(self) -> None:
        pass


def failure_kind(exc: BaseException) -> str:
    """A failed connect's kind: its exception, with the status of a handshake answered without the upgrade."""
    if isinstance(exc, InvalidStatus):
        return f"{type(exc).__name__}_{exc.response.status_code}"
    return type(exc).__name__


class InboxClient(ReconnectingSocket):
    """chat-inbox.js's socket, as every page of a logged-in user opens it.

    The server greets each open with {"type": "inbox.sync", "total_unread": N}: `synced_at`
    records when each greeting came. (A page that shows chat lists also re-fetches them on a
    reconnect; the room page shows none.)
    """

    path = "/ws/chat/inbox/"

    def __init__(self, **socket_options):
        super().__init__(**socket_options)
        self.synced_at: list[float] = []
        self.total_unread: int | None = None

    def on_text(self, text: str) -> None:
        with contextlib.suppress(ValueError):
            frame = json.loads(text)
            if frame.get("type") == "inbox.sync":
                self.total_unread = frame["total_unread"]
                self.synced_at.append(time.monotonic())


class RoomClient(ReconnectingSocket):
    """One member's room: its socket, what it shows, and its outbox.

    `servers` are base URLs ("http://127.0.0.1:8000"); with `failover` a refused connection,
    or a server saying it restarts (1012), moves the socket (and the HTTP requests) to the
    next one, as a load balancer would.
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
        heartbeat: tuple[float, float] = (HEARTBEAT_SECONDS, PONG_TIMEOUT_SECONDS),
    ):
        super().__init__(
            member=member,
            servers=servers,
            failover=failover,
            reconnect_delays=reconnect_delays,
            open_timeout=open_timeout,
            connect_gate=connect_gate,
            heartbeat=heartbeat,
        )
        self.chat_id = chat_id
        self.path = f"/ws/chat/{chat_id}/"
        self.visible, self.reorder_grace = visible, reorder_grace
        self.own_http = http is None
        self.http = http or new_http_client(timeout=http_timeout)
        self.outbox = Outbox(self, ack_timeout=ack_timeout, over_socket=send_over == "socket")
        self.contiguous_id = self.newest_shown_id = start_id
        self.held_frames: dict[int, dict] = {}  # prev_id -> frame, for frames that came early
        self.awaiting_greeting = False
        self.grace_timer: asyncio.TimerHandle | None = None
        self.sync_timer: asyncio.TimerHandle | None = None
        self.synced_at: list[float] = []  # time.monotonic() of each greeting
        self.catching_up: asyncio.Task | None = None
        self.catch_up_again = False
        self.catch_up_retry_delay = 0.0
        self.catch_up_retry_timer: asyncio.TimerHandle | None = None
        self.shown: list[int] = []  # in the order they appeared
        self.shown_at: dict[int, float] = {}  # time.monotonic() of each message's first showing
        self.shown_via: dict[int, str] = {}  # "frame", "catch_up", "greeting" or "send_answer"
        self.framed_at: dict[int, float] = {}  # time.monotonic() of each message's first frame
        self.last_presence_at = 0.0
        self.revoked = False

    def headers(self) -> dict[str, str]:
        return {"Cookie": self.member.cookie, "HX-Request": "true"}

    def socket_path(self) -> str:
        # The greeting brings the messages after this (up to a page): no fetch after a reopen.
        return f"{self.path}?after={self.contiguous_id}"

    def send(self, body: str) -> asyncio.Future[Sent]:
        """Queue a message; the future gives how it left once stored or refused."""
        return self.outbox.send(body)

    async def stop(self) -> None:
        self.stopped = True
        self.outbox.stop()
        for timer in (self.grace_timer, self.sync_timer, self.catch_up_retry_timer):
            if timer is not None:
                timer.cancel()
        await super().stop()
        if self.own_http:
            await self.http.aclose()

    # The socket (chat-websocket.js, in ReconnectingSocket)

    def send_frame(self, frame: dict) -> None:
        if self.ws is not None:
            self.spawn(send_quietly(self.ws, json.dumps(frame)))

    def signal_typing(self) -> None:
        """What the page sends while its person types (at most once every 3 s: the caller paces it)."""
        self.counts["typing_sent"] += 1
        self.send_frame({"type": "typing"})

    def react(self, emoji: str) -> None:
        """Toggle a reaction on the newest message shown, as the message menu's buttons do."""
        if self.newest_shown_id:
            self.counts["react_sent"] += 1
            self.send_frame({"type": "react", "message_id": self.newest_shown_id, "emoji": emoji})

    def on_open(self) -> None:
        # Every open is followed by the server's greeting, the first one too: a message sent
        # after the page rendered and before the socket joined the room has no frame for it.
        self.report_visibility()
        self.cancel_sync_timer()
        self.awaiting_greeting = True
        self.sync_timer = asyncio.get_running_loop().call_later(SYNC_WAIT_SECONDS, self.no_greeting)
        self.outbox.on_socket_opened()

    def on_closed(self) -> None:
        self.cancel_sync_timer()
        self.awaiting_greeting = False
        self.outbox.on_socket_closed()

    def cancel_sync_timer(self) -> None:
        if self.sync_timer is not None:
            self.sync_timer.cancel()
            self.sync_timer = None

    def no_greeting(self) -> None:
        self.sync_timer = None
        self.awaiting_greeting = False
        self.counts["no_greeting"] += 1
        self.catch_up()

    def on_greeting(self, frame: dict) -> None:
        """The room's newest message when the socket joined, and the messages missed since
        the id the socket asked after (up to a page): fetch only if this still shows less."""
        self.cancel_sync_timer()
        self.awaiting_greeting = False
        self.synced_at.append(time.monotonic())
        before = self.contiguous_id
        if frame.get("html"):
            self.show_caught_up([int(found) for found in MESSAGE_ID.findall(frame["html"])], via="greeting")
        if self.contiguous_id > before and self.catching_up is None:
            self.report_visibility()  # marks them read
        if frame["last_message_id"] > self.contiguous_id or self.held_frames:
            self.counts["greeting_behind"] += 1
            self.catch_up()

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
        if frame.get("action") == "react":  # the answer to a reaction: an ack or an error
            self.counts["react_acked" if frame.get("type") == "ack" else "react_refused"] += 1
            return
        if self.outbox.on_frame(frame):
            return
        if frame.get("type") == "chat.message":
            self.on_message_frame(frame)
        elif frame.get("type") == "chat.sync":
            self.on_greeting(frame)
        elif frame.get("type") == "chat.presence":
            self.last_presence_at = time.monotonic()
        elif frame.get("type") == "chat.typing":
            self.counts["typing"] += 1  # the page shows it for a few seconds; nothing to keep
        elif frame.get("type") == "chat.reacted":
            self.counts["reacted"] += 1  # the page swaps the bubble; the benchmark only counts it
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
        # Between an open and its greeting, a gap may be one the greeting fills.
        if self.held_frames and self.grace_timer is None and not self.awaiting_greeting:
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
        """Fetch what is missing; while a fetch runs, one more follows it. A fetch now fills
        every gap the reorder grace waits on: its timer, were it left, would only ask again."""
        if self.grace_timer is not None:
            self.grace_timer.cancel()
            self.grace_timer = None
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
            self.show_caught_up(ids, via="catch_up")

    def show_caught_up(self, ids: list[int], *, via: str) -> None:
        """Every message after contiguous_id: a catch-up's answer, or a greeting's."""
        if ids:
            self.insert(ids, via=via)
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
    return GatedClient(timeout=timeout, limits=limits, cookies=no_cookies)


class GatedClient(httpx.AsyncClient):
    """Requests wait at a gate as wide as the pool, not in the pool. httpcore's pool looks
    through every waiting request each time it hands out a connection: thousands of
    clients' catch-ups waiting in one pool (a reconnect storm on a slow machine) made the
    benchmark's own process spend minutes of CPU there, on the cores the server uses. Each
    browser has a pool of its own. The wait is bounded by the pool timeout, as in the pool."""

    def __init__(self, *, limits: httpx.Limits, **options):
        super().__init__(limits=limits, **options)
        self.gate = asyncio.Semaphore(limits.max_connections or 100)

    async def send(self, request: httpx.Request, **options) -> httpx.Response:
        try:
            async with asyncio.timeout(self.timeout.pool):
                await self.gate.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("No connection of the pool came free in time", request=request) from None
        try:
            return await super().send(request, **options)
        finally:
            self.gate.release()
