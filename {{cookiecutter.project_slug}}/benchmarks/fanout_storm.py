"""The reconnect storm: a deploy restarts the server under thousands of open sockets.

Every seeded person has a room page open: its room socket (a `RoomClient`) and its inbox
socket (an `InboxClient`), both reconnecting as chat-websocket.js does. Once every socket
is open, one sender per room posts messages at a modest total rate (over HTTP, through the
page's outbox, which waits out refusals and retries with the same client id); then the
server process is stopped and started again on the same port. The figures:

- open: how long the first opening of every socket took (and sockets per second);
- back: from the stop until every socket is open again; caught up: until, besides, every
  room socket shows every message its room had stored when it reopened (its catch-up GET
  `messages/?after=` is done) and every inbox socket got its `inbox.sync` greeting;
- lost: messages stored in a room that a member still does not show at the end.

The reference, in the same run on a server process of its own: the same people, each with
two sockets on the Channels tutorial relay (benchmarks/relay_asgi.py), one in their room's
group and one in a group of their own (as the inbox's), reconnecting the same way after the
same restart (without the heartbeat, which the tutorial's page does not have). The relay
stores nothing, so it has nothing to catch up and takes no messages:
it is back, and so done, once every socket is open again. Its figures are what the
restart, the clients and the machine cost a plain Channels app; the chat's, beside them,
what its handshakes, greetings and catch-up add.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from .fanout_load import CONNECT_CONCURRENCY, drain
from .fanout_report import Verdict
from .room_client import InboxClient, ReconnectingSocket, RoomClient, new_http_client
from .seeding import Room

# The storm's target: every socket of one process back and caught up this soon after the stop.
CAUGHT_UP_TARGET_S = 15.0
RECONNECT_COUNTS = ("greeting", "catch_up", "catch_up_request", "no_greeting", "greeting_behind", "grace_over")


@dataclass
class StormResult:
    layer: str
    target: str  # "chat", or "relay": the reference
    sockets: int
    rooms: int
    rate: float
    open_s: float | None = None
    opened_per_s: float | None = None
    stop_s: float | None = None  # the old process's exit after SIGTERM
    restart_s: float | None = None  # from the stop until the new process listens
    back_s: float | None = None  # from the stop until every socket is open again
    caught_up_s: float | None = None  # ... and every room caught up, every inbox greeted
    reopened_per_s: float | None = None  # sockets reopened per second, from the new process's start
    reopened_quantiles_s: dict | None = None  # seconds from the stop until half, 90% and 99% had reopened
    server_cpu_s: float | None = None  # CPU the restarted process used until every socket caught up (or the bound)
    client_cpu_s: float | None = None  # ... and this process, the clients of every socket, meanwhile
    down_at_end: int = 0
    sent: int = 0
    refused: int = 0
    unsent: int = 0  # still in a sender's outbox at the end
    lost: int = 0  # stored messages some member does not show after the final catch-up
    failed_connects: int = 0
    failures: dict | None = None  # failed connects by exception, the closes seen and their codes, heartbeat drops
    catch_up_requests: int = 0
    # What the room sockets did from the restart until all caught up (or the bound): messages
    # shown from greetings, catch-up GETs, and what set those off (no greeting within the
    # page's wait, a greeting still naming a newer message, a gap past the reorder grace).
    reconnect_counts: dict | None = None
    error: str | None = None

    def figures(self) -> dict:
        return asdict(self)

    def verdict(self, relay: StormResult | None = None) -> Verdict:
        """The chat's storm against its target; `relay`, the reference storm of the same run."""
        caught_up = self.caught_up_s is not None and self.caught_up_s <= CAUGHT_UP_TARGET_S
        met = caught_up and not (self.error or self.lost or self.down_at_end or self.unsent)
        figures = f"caught up in {seconds(self.caught_up_s)} s; lost {self.lost}; down at the end {self.down_at_end}"
        figures += f"; unsent {self.unsent}; failed connects {self.failed_connects}"
        if relay is not None:
            figures += f"; the relay back in {seconds(relay.back_s)} s" + (" (failed)" if relay.error else "")
        return Verdict(
            load=f"reconnect storm of {self.sockets}",
            layer=self.layer,
            target=f"caught up <= {CAUGHT_UP_TARGET_S:g} s, none lost",
            met=met,
            figures=figures + (f"; {self.error}" if self.error else ""),
        )


class RelaySocket(ReconnectingSocket):
    """A socket on the tutorial relay in `group`, reconnecting as the chat's sockets do. No
    heartbeat: the tutorial's page has none, and its consumer takes every frame for a message."""

    def __init__(self, *, group: str, **socket_options):
        super().__init__(**socket_options)
        self.path = f"/ws/bench/relay/{group}/"

    async def keep_heartbeat(self, ws) -> None:
        return


class Storm:
    """The clients of every room, a sender per room, and the server they reconnect to; with
    `relay`, the same people's two sockets each on the tutorial relay instead, and no load."""

    def __init__(self, rooms: list[Room], *, server, stop, start, rate: float, timeout: float, relay: bool = False):
        self.rooms, self.server, self.stop_server, self.start_server = rooms, server, stop, start
        self.rate, self.timeout = (0.0 if relay else rate), timeout
        self.http = new_http_client(timeout=timeout, connections=100)
        # The first opening a few handshakes at a time (as a run sets up its sockets); the
        # reconnect without a gate, as browsers do: only their backoff spreads them out.
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        shared = {"servers": [server.base_url], "open_timeout": timeout}
        options = {**shared, "connect_gate": gate}
        people = [(room, member) for room in rooms for member in room.members]
        self.room_clients, self.inbox_clients, self.relay_clients = [], [], []
        if relay:
            self.relay_clients = [
                RelaySocket(member=member, group=group, **options)
                for room, member in people
                for group in (f"storm-{room.chat_id}", f"storm-person-{member.user_id}")
            ]
        else:
            self.room_clients = [
                RoomClient(member=member, chat_id=room.chat_id, http=self.http, **options) for room, member in people
            ]
            self.inbox_clients = [InboxClient(member=member, **options) for _, member in people]
        # The members take turns to send, each from an outbox of their own beside their sockets
        # (as from a second tab with its socket down): its posts wait out the restart as the
        # page's outbox does, one message in flight at a time per sender.
        self.senders = {
            (room.chat_id, member.user_id): RoomClient(
                member=member, chat_id=room.chat_id, send_over="http", http=self.http, **shared
            )
            for room, member in people
            if not relay
        }
        self.stored: dict[int, dict[int, float]] = {room.chat_id: {} for room in rooms}  # chat -> id -> acked at
        # Per chat, when each ack came (in order) and the newest id acked by then: what a socket
        # opened at some time is due is one bisection, not a scan of the chat's messages. The
        # storm checks every socket 20 times a second, on the server's cores.
        self.acked_at: dict[int, list[float]] = {room.chat_id: [] for room in rooms}
        self.newest_acked: dict[int, list[int]] = {room.chat_id: [] for room in rooms}
        self.refused = 0
        self.back_at: float | None = None

    @property
    def clients(self) -> list:
        return [*self.room_clients, *self.inbox_clients, *self.relay_clients]

    async def run(self, result: StormResult, *, profile: Path | None = None) -> None:
        started = time.monotonic()
        for client in self.clients:
            client.start()
        try:
            await asyncio.wait_for(self.all_back(since=0), self.timeout)
        except TimeoutError:
            closed = sum(1 for c in self.clients if not c.opened_at)
            raise TimeoutError(f"{closed} of {len(self.clients)} sockets not open after {self.timeout:g} s") from None
        result.open_s = round(time.monotonic() - started, 2)
        result.opened_per_s = round(len(self.clients) / result.open_s)
        print(f"    {len(self.clients)} sockets open in {result.open_s:g} s; restarting the server ...", flush=True)
        for client in self.clients:
            client.connect_gate = None
        load = asyncio.create_task(self.offer_load())
        try:
            await asyncio.sleep(2)
            await self.restart_server(result, profile=profile)
            await asyncio.sleep(1)
        finally:
            load.cancel()
            await asyncio.gather(load, return_exceptions=True)
        # What the senders still hold goes out; then every room catches up once, as after a reconnect.
        with suppress(TimeoutError):
            await asyncio.wait_for(self.senders_done(), self.timeout)
        for client in self.room_clients:
            client.catch_up()
        newest = {chat_id: max(ids, default=0) for chat_id, ids in self.stored.items()}

        def shown() -> int:
            return sum(1 for c in self.room_clients if c.contiguous_id >= newest[c.chat_id])

        await drain(shown, len(self.room_clients), quiet=5, limit=self.timeout)
        # A room still behind may only be waiting for its catch-up's answer: not lost yet.
        behind = [c.catching_up for c in self.room_clients if c.contiguous_id < newest[c.chat_id] and c.catching_up]
        with suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*behind, return_exceptions=True), self.timeout)
        self.count(result)

    async def restart_server(self, result: StormResult, *, profile: Path | None) -> None:
        stopped_at = time.monotonic()
        self.server, result.stop_s, result.restart_s = await asyncio.to_thread(self.restart, self.server)
        print(f"    stopped in {result.stop_s:g} s, listening again after {result.restart_s:g} s", flush=True)
        spy = start_profiler(self.server.process.pid, profile) if profile else None
        cpu_at_start, client_cpu_at_start = self.server.cpu_seconds(), time.process_time()
        counts_at_restart = self.room_counts(RECONNECT_COUNTS)
        try:
            back = asyncio.create_task(self.all_back(since=stopped_at))
            with suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(back), self.timeout)
            result.server_cpu_s = round(self.server.cpu_seconds() - cpu_at_start, 1)
            result.reconnect_counts = self.room_counts(RECONNECT_COUNTS, minus=counts_at_restart)
            result.client_cpu_s = round(time.process_time() - client_cpu_at_start, 1)
            result.reopened_quantiles_s = self.reopened_quantiles(since=stopped_at)
            if self.back_at is not None:
                result.back_s = round(self.back_at - stopped_at, 2)
                result.reopened_per_s = round(len(self.clients) / max(0.01, result.back_s - result.restart_s))
            if back.done():
                result.caught_up_s = round(back.result() - stopped_at, 2)
            else:
                closed = sum(1 for c in self.clients if not (c.opened_at and c.opened_at[-1] > stopped_at))
                behind = [c for c in self.room_clients if not self.caught_up(c)]
                why = Counter()
                for client in behind:
                    why.update({k: v for k, v in client.counts.items() if k.startswith(("catch_up_", "failed_catch"))})
                    why["catching_up"] += client.catching_up is not None
                    why["holding_frames"] += bool(client.held_frames)
                result.error = (
                    f"{self.timeout:g} s after the restart: {closed} sockets not back, {len(behind)} rooms behind"
                    + (f" ({dict(why)})" if behind else "")
                )
                print(f"    {result.error}", flush=True)
            back.cancel()
        finally:
            if spy is not None:
                stop_profiler(spy, profile)

    def restart(self, server) -> tuple:
        """Stop the server and start its successor at once, as a deploy does (timed here, in
        one thread: the clients' busy event loop must not stand between the two): the new
        server, and seconds from the SIGTERM until the old exited and the new one listens."""
        stopped_at = time.monotonic()
        self.stop_server(server)
        stopped_in = round(time.monotonic() - stopped_at, 2)
        successor = self.start_server(server.port)
        return successor, stopped_in, round(time.monotonic() - stopped_at, 2)

    async def all_back(self, *, since: float) -> float:
        """When every socket has opened after `since` and caught up (`back_at`: when all had opened)."""
        self.back_at = None
        while True:
            now = time.monotonic()
            reopened = all(c.opened_at and c.opened_at[-1] > since for c in self.clients)
            if reopened and self.back_at is None:
                self.back_at = now
            if reopened and self.everyone_caught_up(since):
                return now
            await asyncio.sleep(0.05)

    def room_counts(self, keys: tuple[str, ...], minus: dict | None = None) -> dict:
        total = Counter()
        for client in self.room_clients:
            total.update({key: client.counts[key] for key in keys})
        return {key: total[key] - (minus or {}).get(key, 0) for key in keys}

    def reopened_quantiles(self, *, since: float) -> dict:
        """When half, 90% and 99% of the sockets had reopened: a long tail is backoff, a late middle the server."""
        reopened = sorted(c.opened_at[-1] - since for c in self.clients if c.opened_at and c.opened_at[-1] > since)
        return {
            f"p{q}": round(reopened[min(len(reopened), -(-len(self.clients) * q // 100)) - 1], 2)
            for q in (50, 90, 99)
            if len(reopened) * 100 >= len(self.clients) * q
        }

    def everyone_caught_up(self, since: float) -> bool:
        greeted = all(inbox.synced_at and inbox.synced_at[-1] > since for inbox in self.inbox_clients)
        return greeted and all(self.caught_up(client) for client in self.room_clients)

    def caught_up(self, client: RoomClient) -> bool:
        """It shows every message its room had stored when it last opened."""
        if not client.opened_at:
            return False
        opened = client.opened_at[-1]
        acked = bisect.bisect_right(self.acked_at[client.chat_id], opened)
        due = self.newest_acked[client.chat_id][acked - 1] if acked else 0
        return client.contiguous_id >= due

    async def offer_load(self) -> None:
        """`rate` messages a second in all, whatever the answers (open loop); none at 0."""
        if not self.rate:
            return
        start = time.monotonic()
        pending = []
        for seq in itertools.count():
            delay = start + seq / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            room = self.rooms[seq % len(self.rooms)]  # the rooms in turn, and their members in turn
            member = room.members[seq // len(self.rooms) % len(room.members)]
            pending.append(asyncio.ensure_future(self.send(room.chat_id, member.user_id, seq)))

    async def send(self, chat_id: int, user_id: int, seq: int) -> None:
        sent = await self.senders[(chat_id, user_id)].send(f"storm {seq}")
        if sent.message_id is None:
            self.refused += 1
        else:
            now = time.monotonic()
            self.stored[chat_id][sent.message_id] = now
            newest = self.newest_acked[chat_id]
            self.acked_at[chat_id].append(now)
            newest.append(max(sent.message_id, newest[-1] if newest else 0))

    async def senders_done(self) -> None:
        while any(sender.outbox.queue for sender in self.senders.values()):
            await asyncio.sleep(0.1)

    def count(self, result: StormResult) -> None:
        result.sent = sum(len(ids) for ids in self.stored.values())
        result.refused = self.refused
        result.unsent = sum(len(sender.outbox.queue) for sender in self.senders.values())
        result.lost = sum(len(self.stored[c.chat_id].keys() - c.shown_at.keys()) for c in self.room_clients)
        result.down_at_end = sum(1 for c in self.clients if not c.is_open())
        result.failed_connects = sum(c.counts["failed_connect"] for c in self.clients)
        kinds = Counter()
        for client in self.clients:
            kinds.update({k: v for k, v in client.counts.items() if k.startswith(("failed_connect_", "closed_"))})
            kinds.update({f"close_code_{code}": n for code, n in client.close_codes.items()})
            kinds["silent_drop"] += client.counts["silent_drop"]
        kinds.update(f"final_close_{c.final_close_code}" for c in self.clients if c.final_close_code)
        result.failures = dict(kinds)
        result.catch_up_requests = sum(c.counts["catch_up_request"] for c in self.room_clients)

    async def stop(self) -> None:
        clients = [*self.clients, *self.senders.values()]
        with suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.stop() for c in clients), return_exceptions=True), 30)
        await self.http.aclose()


async def run_storm(
    rooms: list[Room], *, layer: str, server, stop, start, rate: float, timeout: float, relay=False, profile=None
):
    """One storm on `server`: `stop(server)` ends it as a deploy does, `start(port)` returns its
    successor. With `relay`, the reference storm on the tutorial relay."""
    storm = Storm(rooms, server=server, stop=stop, start=start, rate=rate, timeout=timeout, relay=relay)
    target = "relay" if relay else "chat"
    result = StormResult(layer=layer, target=target, sockets=len(storm.clients), rooms=len(rooms), rate=storm.rate)
    try:
        await storm.run(result, profile=profile)
    except (OSError, TimeoutError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:300]
        storm.count(result)
    finally:
        await storm.stop()
    return result, storm.server


def start_profiler(pid: int, output: Path) -> subprocess.Popen:
    """py-spy (from this interpreter's environment, else from PATH) sampling the server and its
    children (gunicorn's worker is one) until stopped."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        py_spy = shutil.which("py-spy") or py_spy
    command = [str(py_spy), "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--output", str(output)]
    command.append("--nonblocking")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # noqa: S603


def stop_profiler(spy: subprocess.Popen, output: Path) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its samples on Ctrl-C
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
    print(f"    py-spy samples of the reconnect: {output}", flush=True)


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def print_storm(results: list[StormResult]) -> None:
    header = ("layer", "target", "sockets", "rooms", "msg/s", "open s", "open/s", "stop s", "restart s", "back s")
    header += ("caught up s",)
    header += ("reopen/s", "server CPU s", "client CPU s", "sent", "lost", "failed connects", "GETs", "")
    rows = [
        (
            r.layer,
            r.target,
            str(r.sockets),
            str(r.rooms),
            f"{r.rate:g}",
            *(seconds(value) for value in (r.open_s, r.opened_per_s, r.stop_s, r.restart_s)),
            *(seconds(value) for value in (r.back_s, r.caught_up_s, r.reopened_per_s, r.server_cpu_s, r.client_cpu_s)),
            str(r.sent),
            str(r.lost),
            str(r.failed_connects),
            str(r.catch_up_requests),
            "; ".join(
                note
                for note in (
                    r.error,
                    f"{r.down_at_end} down at the end" if r.down_at_end else "",
                    f"{r.unsent} unsent" if r.unsent else "",
                )
                if note
            ),
        )
        for r in results
    ]
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header))]
    print()
    for cells in [header, *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True)))
    print("stop: SIGTERM until the old process exits; restart: until the new one listens on the same port")
    print("back / caught up: seconds from the stop until every socket is open again / and caught up")
    print("(room sockets: every message stored before they reopened is shown; inbox sockets: greeted;")
    print("the relay, the reference: two sockets a person, nothing to catch up, no load);")
    print("reopen/s: sockets over (back - restart); lost: stored messages a member lacks after catch-up")
    print("server CPU s: what the restarted process used (user + system) from its start until every socket caught up;")
    print("client CPU s: what the benchmark's own clients used meanwhile (on the same cores)")
    for r in results:
        if r.reopened_quantiles_s:
            reopened = ", ".join(f"{q} {s:g} s" for q, s in r.reopened_quantiles_s.items())
            print(f"{r.layer}, {r.target}: sockets reopened after the stop by {reopened}")
        if r.failures:
            print(f"{r.layer}, {r.target}: failed connects and closes by kind: {r.failures}")
        if r.reconnect_counts and r.target == "chat":
            print(f"{r.layer}, {r.target}: room sockets from the restart until caught up: {r.reconnect_counts}")
    for verdict in storm_verdicts(results):
        print(verdict.line())


def storm_verdicts(results: list[StormResult]) -> list[Verdict]:
    """The chat's storms against their target, each beside the relay's of its layer."""
    relays = {r.layer: r for r in results if r.target == "relay"}
    return [r.verdict(relays.get(r.layer)) for r in results if r.target == "chat"]
