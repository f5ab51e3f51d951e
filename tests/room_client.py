"""A room page without the browser: the protocol of static/js/components/chat/message-send.js.

Frames are hints: each names the message before it (`prev_id`). While frames chain onto
the newest message shown (`contiguous_id`) they are shown; on a gap, or when the socket
(re)opens, the client fetches `messages/?after=<contiguous_id>` (HTMX headers) and shows
the `[data-message-id]` bubbles it gets, never one twice. The socket reconnects with
exponential backoff and full jitter (chat-websocket.js), to the same server or, with
`failover`, to the next one when a connection is refused. Everything shown is recorded,
for tests to compare with the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter

from live_servers import MESSAGE_ID, Server, http_request, open_socket

FINAL_CLOSE_CODES = {4401, 4403}
MAX_CATCH_UP_PAGES = 40  # message-send.js's MAX_CATCH_UP_PAGES
# chat-websocket.js waits 0.5 s doubling up to 15 s; shorter here so tests take seconds.
BASE_DELAY = 0.1
MAX_DELAY = 1.0


class RoomClient:
    def __init__(self, *, member: dict, chat_id: int, servers: list[Server], failover: bool = False):
        self.member, self.chat_id = member, chat_id
        self.servers, self.server_index, self.failover = servers, 0, failover
        self.contiguous_id = 0
        self.shown: list[int] = []  # in the order they appeared
        self.shown_at: dict[int, float] = {}  # time.monotonic() of each message's first showing
        self.counts: Counter[str] = Counter()  # frame, catch_up, gap, open, drop, ...
        self.connected = asyncio.Event()
        self.final_close_code: int | None = None
        self.stopped = False
        self.ws = None
        self.task: asyncio.Task | None = None
        self.catching_up: asyncio.Task | None = None
        self.catch_up_again = False

    @property
    def server(self) -> Server:
        return self.servers[self.server_index]

    def start(self, server_index: int = 0) -> None:
        self.server_index = server_index
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        self.stopped = True
        if self.ws is not None:
            await self.ws.close()
        for task in (self.task, self.catching_up):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    # The socket (chat-websocket.js)

    async def run(self) -> None:
        from websockets.exceptions import WebSocketException

        attempts = 0
        while not self.stopped:
            try:
                ws = await open_socket(self.server, f"/ws/chat/{self.chat_id}/", self.member)
            except (OSError, TimeoutError, WebSocketException):
                self.counts["failed_connect"] += 1
                if self.failover:
                    self.server_index = (self.server_index + 1) % len(self.servers)
                attempts += 1
                await self.backoff(attempts)
                continue
            attempts = 0
            self.ws = ws
            self.counts["open"] += 1
            self.connected.set()
            self.report_visibility()
            self.catch_up()  # every open, the first too: the page rendered before the socket joined
            try:
                async for text in ws:
                    self.on_frame(json.loads(text))
            except WebSocketException:
                pass
            self.ws = None
            self.connected.clear()
            if ws.close_code in FINAL_CLOSE_CODES:
                self.final_close_code = ws.close_code
                return
            if not self.stopped:
                self.counts["drop"] += 1
                await self.backoff(attempts)
                attempts += 1

    async def backoff(self, attempts: int) -> None:
        await asyncio.sleep(random.uniform(0, min(MAX_DELAY, BASE_DELAY * 2**attempts)))

    def send_frame(self, frame: dict) -> None:
        if self.ws is not None:
            asyncio.get_running_loop().create_task(self.send_quietly(self.ws, json.dumps(frame)))

    @staticmethod
    async def send_quietly(ws, text: str) -> None:
        from websockets.exceptions import WebSocketException

        with contextlib.suppress(WebSocketException):  # closing: the reconnect reports again
            await ws.send(text)

    def report_visibility(self) -> None:
        self.send_frame({"type": "visibility", "visible": True})
        self.send_frame({"type": "read", "message_id": max(self.shown, default=0)})

    # Frames and catch-up (message-send.js)

    def on_frame(self, frame: dict) -> None:
        if frame.get("type") != "chat.message":
            return
        if frame["message_id"] <= self.contiguous_id:
            self.counts["stale_frame"] += 1
        elif frame["prev_id"] == self.contiguous_id:
            self.show([frame["message_id"]], via="frame")
            self.contiguous_id = frame["message_id"]
        else:
            self.counts["gap"] += 1
            self.catch_up()

    def catch_up(self) -> None:
        if self.catching_up is not None and not self.catching_up.done():
            self.catch_up_again = True
            return
        self.catching_up = asyncio.get_running_loop().create_task(self.fetch_missing())

    async def fetch_missing(self) -> None:
        while True:
            before = self.contiguous_id
            try:
                await self.fetch_pages()
            except OSError:
                self.counts["failed_catch_up"] += 1  # the next frame or reconnect tries again
            if self.contiguous_id > before:
                self.report_visibility()  # marks what we caught up on read
            if not self.catch_up_again:
                return
            self.catch_up_again = False

    async def fetch_pages(self) -> None:
        path = f"/chat/{self.chat_id}/messages/"
        for _ in range(MAX_CATCH_UP_PAGES):
            status, text = await asyncio.to_thread(
                http_request, self.server.port, "GET", f"{path}?after={self.contiguous_id}", self.member, None, 60
            )
            self.counts["catch_up_request"] += 1
            if status != 200:
                self.counts[f"catch_up_{status}"] += 1
                return
            ids = [int(found) for found in MESSAGE_ID.findall(text)]
            if not ids:
                return
            self.show(ids, via="catch_up")
            self.contiguous_id = max(self.contiguous_id, *ids)

    def show(self, ids: list[int], *, via: str) -> None:
        now = time.monotonic()
        for message_id in ids:
            if message_id in self.shown_at:
                self.counts["duplicate_offered"] += 1  # the page inserts a bubble once
                continue
            self.shown.append(message_id)
            self.shown_at[message_id] = now
            self.counts[via] += 1

    async def wait_for(self, message_id: int, timeout: float) -> bool:
        """Wait until every message up to this id is shown (no gap before it)."""
        deadline = time.monotonic() + timeout
        while self.contiguous_id < message_id and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.contiguous_id >= message_id
