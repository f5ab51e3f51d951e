"""The fan-out benchmark's offered load, on the reference relay and on our chat.

Open loop: `offer_load` starts each send at its scheduled time whatever the replies, so a
slow server cannot slow the senders down and hide its queueing; latency runs from the
scheduled time to each frame's arrival. The chat's members are `RoomClient`s: they send,
receive and catch up exactly as the room page does.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import suppress

import httpx
import websockets
from websockets.asyncio.client import connect

from .fanout_report import Result, percentile
from .room_client import Member, RoomClient
from .seeding import Room

CONNECT_CONCURRENCY = 25  # handshakes at a time while a run sets up: its clients and the server share the cores


async def offer_load(*, rate: float, duration: float, send) -> float:
    """Call `send(seq, scheduled_at)` `rate` times a second for `duration`, whatever the replies.

    Times are `time.monotonic()`, the clock RoomClient stamps frames with.
    """
    start = time.monotonic() + 0.05
    tasks = []
    for seq in range(int(rate * duration)):
        scheduled_at = start + seq / rate
        delay = scheduled_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(seq, scheduled_at)))
    with suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    return start


async def drain(count, expected: int, *, quiet: float, limit: float) -> None:
    """Wait until `count()` reaches `expected`, stops growing for `quiet` s, or `limit` s pass."""
    deadline = time.monotonic() + limit
    last, last_change = count(), time.monotonic()
    while count() < expected and time.monotonic() < deadline and time.monotonic() - last_change < quiet:
        await asyncio.sleep(0.05)
        if count() != last:
            last, last_change = count(), time.monotonic()


# --- plain sockets: the reference relay and idle inboxes -------------------------------


def spread(servers) -> list:
    """A server (with `ws_base` and `base_url`) or a list of them: socket n goes to the n-th, round robin."""
    return list(servers) if isinstance(servers, list | tuple) else [servers]


async def open_sockets(servers, paths: list[str], cookies: list[str], *, timeout: float) -> list:
    """Open one socket per path, a few at a time, spread over `servers` (see `spread`)."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    servers = spread(servers)

    async def open_one(number: int, path: str, cookie: str):
        server = servers[number % len(servers)]
        async with gate:
            return await connect(
                server.ws_base + path,
                origin=server.base_url,
                additional_headers={"Cookie": cookie},
                compression="deflate",  # offered, as every browser does (the server declines it)
                ping_interval=None,
                max_queue=None,
                open_timeout=timeout,
                proxy=None,  # see room_client.ReconnectingSocket.open_socket
            )

    pairs = enumerate(zip(paths, cookies, strict=True))
    return await asyncio.wait_for(asyncio.gather(*(open_one(n, path, cookie) for n, (path, cookie) in pairs)), timeout)


async def close_sockets(sockets: list) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True), 10)


async def read_frames(ws, on_frame) -> None:
    with suppress(websockets.ConnectionClosed):
        async for raw in ws:
            on_frame(json.loads(raw), time.monotonic())


async def run_relay(server, members: list[Member], result: Result, *, room: str, timeout: float) -> Result:
    """The Channels tutorial relay: senders send frames over their socket, every socket gets them.

    `server` may be a list: members (and so senders) are spread over them round robin.
    """
    members = members[: result.members]
    sockets = await open_sockets(
        server, [f"/ws/bench/relay/{room}/"] * len(members), [m.cookie for m in members], timeout=timeout
    )
    receipts: list[tuple[object, float]] = []

    def on_frame(frame: dict, at: float) -> None:
        receipts.append((frame["message"], at))

    readers = [asyncio.create_task(read_frames(ws, on_frame)) for ws in sockets]
    send_times: dict[str, float] = {}

    async def send(seq: int, scheduled_at: float) -> None:
        key = f"m{seq}"
        send_times[key] = scheduled_at
        try:
            await sockets[seq % result.senders].send(json.dumps({"message": key}))
        except websockets.ConnectionClosed:
            del send_times[key]
            result.send_errors += 1

    first_send = await offer_load(rate=result.rate, duration=result.duration, send=send)
    await drain(lambda: len(receipts), len(send_times) * len(members), quiet=2, limit=15)
    await close_sockets(sockets)
    for reader in readers:
        reader.cancel()
    result.finish(send_times, receipts, first_send)
    return result


IDLE_KINDS = ("inbox", "room")
# Sockets opened and closed before measuring: the first ones pay for what the process then
# keeps whatever the count (lazy imports, database and Redis connections, the hubs, threads).
IDLE_WARM_UP = 20


async def idle_memory(server, rooms: list[Room], *, kind: str, count: int, timeout: float) -> dict:
    """RSS growth of the server while `count` idle sockets of `kind` are open, per socket.

    One socket per person of `rooms`, in turn (their room's socket for "room", their inbox's
    for "inbox"), after IDLE_WARM_UP of them were opened and closed. A socket counts as open
    once the server greeted it: the inbox's sync, a room's first presence frame. With
    BENCH_TRACEMALLOC set for the server, it also returns the server's top allocations
    between the two readings ("tracemalloc"); the RSS then includes tracemalloc's own.
    """
    people = [(room.chat_id, member) for room in rooms for member in room.members]
    if len(people) < count + IDLE_WARM_UP:
        raise ValueError(f"{count} idle sockets need {count + IDLE_WARM_UP} people, not {len(people)}")
    paths = [("/ws/chat/inbox/" if kind == "inbox" else f"/ws/chat/{chat_id}/") for chat_id, _ in people]
    cookies = [member.cookie for _, member in people]

    async def open_greeted(start: int, stop: int) -> list:
        sockets = await open_sockets(server, paths[start:stop], cookies[start:stop], timeout=timeout)
        with suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(ws.recv() for ws in sockets)), timeout)
        return sockets

    await close_sockets(await open_greeted(0, IDLE_WARM_UP))
    await asyncio.sleep(2)
    traced = await memory_snapshot(server)
    before = server.rss_kib()
    sockets = await open_greeted(IDLE_WARM_UP, IDLE_WARM_UP + count)
    await asyncio.sleep(2)
    after = server.rss_kib()
    growth = await memory_snapshot(server) if traced is not None else None
    await close_sockets(sockets)
    figures = {
        "kind": kind,
        "sockets": count,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_socket": round((after - before) / count, 1),
    }
    return figures if growth is None else {**figures, "tracemalloc": growth}


async def memory_snapshot(server) -> str | None:
    """The benchmark server's allocations since its previous snapshot (benchmarks.relay_asgi),
    or None when it is not tracing."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=300) as http:  # a snapshot takes a while
        answer = await http.get("/bench/tracemalloc/")
    return answer.text if answer.status_code == 200 else None


# --- our chat -------------------------------------------------------------------------------


async def run_chat(
    servers,
    http: httpx.AsyncClient,
    members: list[Member],
    result: Result,
    *,
    chat_id: int,
    timeout: float,
    hidden: bool = False,
    reorder_grace: float,
    send_over: str = "socket",
    typing_per_message: float = 0.0,
    reactions_per_message: float = 0.0,
) -> Result:
    """Every member in the room as a RoomClient; the first `result.senders` of them send,
    and the others signal typing, `typing_per_message` signals per message offered.

    With several servers (one Redis behind them) member n uses the n-th, round robin,
    for its socket and its requests, as behind a load balancer.
    """
    members = members[: result.members]
    servers = spread(servers)
    start_id = await warm_up(servers, http, chat_id, members[: result.senders])
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    clients = [
        RoomClient(
            member=member,
            chat_id=chat_id,
            servers=[servers[n % len(servers)].base_url],
            start_id=start_id,
            visible=not hidden,  # a hidden tab: the server then marks nothing read for it
            send_over=send_over,
            reorder_grace=reorder_grace,
            http=http,
            open_timeout=timeout,
            connect_gate=gate,
        )
        for n, member in enumerate(members)
    ]
    for client in clients:
        client.start()
    try:
        await asyncio.wait_for(asyncio.gather(*(client.connected.wait() for client in clients)), timeout)
        await settle_presence(clients, timeout=timeout)
        requests_before = sum(client.counts["catch_up_request"] for client in clients)
        typists = clients[result.senders :] or clients
        typing = asyncio.create_task(typing_load(typists, result, per_message=typing_per_message))
        reacting = asyncio.create_task(reaction_load(typists, result, per_message=reactions_per_message))
        first_send, send_times, response_times = await send_load(clients, result)
        await typing
        await reacting
        expected = len(send_times) * len(clients)
        await drain(lambda: sum(len(client.framed_at) for client in clients), expected, quiet=2, limit=15)
        # The end of a burst has no next frame to reveal a gap: catch up once, like a reconnect.
        with suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(client.caught_up() for client in clients)), timeout)
    finally:
        await asyncio.gather(*(client.stop() for client in clients), return_exceptions=True)
    receipts = [(message_id, at) for client in clients for message_id, at in client.framed_at.items()]
    result.finish(send_times, receipts, first_send)
    have = sum(len((client.shown_at.keys() | client.framed_at.keys()) & send_times.keys()) for client in clients)
    result.recovered = sum(len(recovered(client) & send_times.keys()) for client in clients)
    result.lost_after_catch_up = result.expected - have
    result.catch_up_requests = sum(client.counts["catch_up_request"] for client in clients) - requests_before
    result.busy_retries = sum(client.counts["retry_busy"] + client.counts["retry_503"] for client in clients)
    result.typing_sent = sum(client.counts["typing_sent"] for client in clients)
    result.typing_expected = result.typing_sent * (len(clients) - 1)  # nobody gets their own
    result.typing_received = sum(client.counts["typing"] for client in clients)
    result.reactions_sent = sum(client.counts["react_sent"] for client in clients)
    result.reactions_expected = sum(client.counts["react_acked"] for client in clients) * len(clients)
    result.reactions_received = sum(client.counts["reacted"] for client in clients)
    if response_times:
        response_times.sort()
        result.send_p50_ms, result.send_p99_ms = percentile(response_times, 50), percentile(response_times, 99)
    return result


def recovered(client: RoomClient) -> set[int]:
    """Messages this client showed because a catch-up fetched them (or a greeting brought
    them, after a reconnect), not because a frame came."""
    return {id_ for id_, via in client.shown_via.items() if via in ("catch_up", "greeting")} - client.framed_at.keys()


async def send_load(clients: list[RoomClient], result: Result) -> tuple[float, dict[int, float], list[float]]:
    """The offered load through the senders' outboxes: its start, each stored message's due time, answer times."""
    send_times: dict[int, float] = {}
    accepted_times: dict[int, float] = {}  # from the attempt that was stored (after any "busy")
    response_times: list[float] = []

    async def send(seq: int, scheduled_at: float) -> None:
        sent = await clients[seq % result.senders].send(f"{MESSAGE_PREFIX}{seq}")
        response_times.append((time.monotonic() - scheduled_at) * 1000)
        if sent.message_id is None:
            result.send_errors += 1
        else:
            send_times[sent.message_id] = scheduled_at
            accepted_times[sent.message_id] = sent.last_try_at

    first_send = await offer_load(rate=result.rate, duration=result.duration, send=send)
    result.accepted_times = accepted_times
    return first_send, send_times, response_times


# What the offered messages' bodies start with (then their number: each body is its own).
MESSAGE_PREFIX = "bench "
# The page sends at most one typing signal per person this often.
TYPING_SIGNAL_SECONDS = 3.0


async def typing_load(typists: list[RoomClient], result: Result, *, per_message: float) -> None:
    """Typing signals alongside the messages, open loop like them.

    A realistic mix: a message takes a few seconds to type, so about one signal comes before
    each (more for long ones, plus people who type and never send): `per_message` 1 by
    default. Spread over the typists so none signals more often than a page would; with too
    few typists for that, the rate is what they can offer.
    """
    rate = min(result.rate * per_message, len(typists) / TYPING_SIGNAL_SECONDS)
    result.typing_rate = round(rate, 2)
    if rate <= 0:
        return

    async def signal(seq: int, scheduled_at: float) -> None:
        typists[seq % len(typists)].signal_typing()

    await offer_load(rate=rate, duration=result.duration, send=signal)


# A few emoji, as people pick them: the same ones again and again.
BENCH_REACTIONS = ("👍", "❤️", "😂")


async def reaction_load(reactors: list[RoomClient], result: Result, *, per_message: float) -> None:
    """Reactions alongside the messages, open loop: each toggles one emoji on the newest
    message its person sees. A realistic mix is well under one per message; each is a
    write and a re-rendered bubble to the whole room (`chat.reacted`)."""
    rate = result.rate * per_message
    result.reaction_rate = round(rate, 2)
    if rate <= 0 or not reactors:
        return

    async def react(seq: int, scheduled_at: float) -> None:
        reactors[seq % len(reactors)].react(BENCH_REACTIONS[seq % len(BENCH_REACTIONS)])

    await offer_load(rate=rate, duration=result.duration, send=react)


async def warm_up(servers: list, http: httpx.AsyncClient, chat_id: int, senders: list[Member]) -> int:
    """Start from a running server, as the relay's senders start on open sockets.

    One message per sender (over HTTP: no socket is open yet), before the receivers join,
    runs the send path's first-use costs (lazy imports, a cache client's connection); the
    GETs then leave open the keep-alive connections the run will use, as a loaded page has.
    Returns the newest message id: the page the receivers start from.
    """
    bases = [servers[n % len(servers)].base_url for n in range(len(senders))]
    pairs = zip(senders, bases, strict=True)
    clients = [RoomClient(member=m, chat_id=chat_id, servers=[base], http=http) for m, base in pairs]
    try:
        sent = await asyncio.gather(*(client.send("warm-up") for client in clients))
    finally:
        await asyncio.gather(*(client.stop() for client in clients))
    pages = (
        get_page(http, f"{base}/chat/{chat_id}/messages/", cookie=m.cookie)
        for m, base in zip(senders * 2, bases * 2, strict=True)
    )
    await asyncio.gather(*pages)
    return max((answer.message_id or 0 for answer in sent), default=0)


async def get_page(http: httpx.AsyncClient, url: str, *, cookie: str, attempts: int = 3) -> httpx.Response:
    """A GET, asked again if its keep-alive connection was closed under it (the server closes
    idle ones after a few seconds: a hundred senders' warm-up outlasts that), as a browser
    does."""
    for _ in range(attempts - 1):
        with suppress(httpx.TransportError):
            return await http.get(url, headers={"Cookie": cookie})
    return await http.get(url, headers={"Cookie": cookie})


async def settle_presence(clients: list[RoomClient], *, timeout: float, quiet: float = 0.7) -> None:
    """Start sending once the join burst's presence recounts are over."""
    deadline = time.monotonic() + timeout
    await asyncio.sleep(quiet)
    while time.monotonic() < deadline and time.monotonic() - max(c.last_presence_at for c in clients) < quiet:
        await asyncio.sleep(0.1)
