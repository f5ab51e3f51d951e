"""Room fan-out: our chat against the Channels tutorial relay, on one daphne process.

Run from the project directory with the project's venv (`pip install -e ".[dev]"` brings
websockets and httpx):

    python benchmarks/bench_fanout.py                            # in-memory layer
    python benchmarks/bench_fanout.py --redis redis://127.0.0.1:6379/0 --json bench.json

For each layer it seeds 100 members (10 of them senders) in a throwaway database, starts
one daphne on a free port of 127.0.0.1 serving `benchmarks.relay_asgi`, and offers the
same load to both targets:

- relay: 100 sockets on ws/bench/relay/<room>/, the senders send frames over their socket;
- chat:  100 members on ws/chat/<id>/, the senders POST to /chat/<id>/send/ (what the page
  does), receivers follow the prev_id chain and catch up with GET messages/?after=<id>
  on a gap and once at the end, as the browser does after a reconnect.

Latency runs from the scheduled send time (open loop: a slow server cannot slow the
senders down and hide its queueing) to the frame's arrival. "lost" counts deliveries
that never arrived as frames; "recovered" those the catch-up GETs then fetched. Also
reported: the server's RSS per idle inbox socket. Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

try:
    import httpx
    import websockets
    from websockets.asyncio.client import connect as ws_connect
except ImportError as exc:  # pragma: no cover - a hint, not a feature
    sys.exit(f"{exc.name} is missing: pip install -e '.[dev]' (the dev extra has websockets and httpx)")

HOST = "127.0.0.1"
MESSAGE_ID = re.compile(r'data-message-id="(\d+)"')
CONNECT_CONCURRENCY = 25
ASGI_APPLICATION = "benchmarks.relay_asgi:application"
# Frames can overtake each other (two sends commit in order, their events go out in the
# other order). The room JS (message-send.js) holds an early frame for 0.4 s before it
# catches up over HTTP; the benchmark's receivers do the same.
REORDER_GRACE_SECONDS = 0.4


# --- the throwaway project state ----------------------------------------------------


@dataclass(frozen=True)
class Member:
    user_id: int
    cookie: str  # the Cookie header: session and CSRF cookies
    csrf_token: str


@dataclass(frozen=True)
class Seed:
    members: list[Member]
    chat_ids: list[int]


def server_env(args, workdir: Path, *, redis_url: str | None, prefix: str) -> dict[str, str]:
    """A DEBUG-off environment that serves plain HTTP on 127.0.0.1 only."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
        "DEBUG": "false",
        "ALLOWED_HOSTS": HOST,
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "SECURE_HSTS_SECONDS": "0",
        "DATABASE_URL": args.database_url or f"sqlite:///{workdir / 'bench.sqlite3'}",
        "BENCH_LAYER_PREFIX": prefix,
        "PYTHONPATH": str(PROJECT_DIR),
    }
    env.pop("BENCH_REDIS_URL", None)
    if redis_url:
        env["BENCH_REDIS_URL"] = redis_url
    return env


def setup_django(env: dict[str, str]) -> None:
    """Django in this process, on the same database as the server, for seeding."""
    os.environ.update({name: value for name, value in env.items() if name != "BENCH_REDIS_URL"})
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def seed(*, run_id: str, members: int, rooms: int) -> Seed:
    """`members` users in `rooms` group chats, each with a logged-in session."""
    from django.contrib.auth import get_user_model

    from chat import services

    User = get_user_model()
    names = [f"bench-{run_id}-{number:03d}" for number in range(members)]
    users = [User(username=name, email=f"{name}@example.com", first_name=f"Member {n}") for n, name in enumerate(names)]
    for user in users:
        user.set_unusable_password()  # no hashing: sessions are made directly below
    User.objects.bulk_create(users)
    users = list(User.objects.filter(username__in=names).order_by("pk"))
    chat_ids = [
        services.create_group_chat(creator=users[0], name=f"Bench {run_id} {n}", members=users[1:]).pk
        for n in range(rooms)
    ]
    return Seed(members=[logged_in(user) for user in users], chat_ids=chat_ids)


def logged_in(user) -> Member:
    """What `login()` would leave in the session, without an HTTP round trip."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.utils.crypto import get_random_string

    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = user._meta.pk.value_to_string(user)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    csrf_token = get_random_string(32)  # a CSRF secret: the cookie and the header carry the same value
    cookie = f"{settings.SESSION_COOKIE_NAME}={store.session_key}; {settings.CSRF_COOKIE_NAME}={csrf_token}"
    return Member(user_id=user.pk, cookie=cookie, csrf_token=csrf_token)


# --- the server ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class Server:
    """One daphne process serving benchmarks.relay_asgi; its output goes to a log file."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.log_path = log_path
        self.log = log_path.open("wb")
        command = [sys.executable, "-m", "daphne", "-b", HOST, "-p", str(self.port), ASGI_APPLICATION]
        self.process = subprocess.Popen(  # noqa: S603
            command, cwd=PROJECT_DIR, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with suppress(OSError), socket.create_connection((HOST, self.port), timeout=0.5):
                return
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"daphne did not start; its log:\n{self.log_path.read_text()[-3000:]}")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS in /proc")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()

    @property
    def ws_base(self) -> str:
        return f"ws://{HOST}:{self.port}"

    @property
    def http_base(self) -> str:
        return f"http://{HOST}:{self.port}"


async def open_sockets(server: Server, paths: list[str], cookies: list[str], *, timeout: float) -> list:
    """Open one socket per path, a few at a time (the listen backlog is small)."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one(path: str, cookie: str):
        async with gate:
            return await ws_connect(
                server.ws_base + path,
                origin=server.http_base,
                additional_headers={"Cookie": cookie},
                compression=None,
                ping_interval=None,
                max_queue=None,
                open_timeout=timeout,
            )

    return await asyncio.wait_for(
        asyncio.gather(*(open_one(path, cookie) for path, cookie in zip(paths, cookies, strict=True))), timeout
    )


async def close_sockets(sockets: list) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True), 10)


# --- offered load and results ----------------------------------------------------------


@dataclass
class Result:
    layer: str
    target: str  # "relay" or "chat"
    rate: float
    duration: float
    members: int
    senders: int
    sent: int = 0
    send_errors: int = 0
    expected: int = 0
    received: int = 0
    lost: int = 0
    recovered: int = 0
    lost_after_catch_up: int | None = None
    catch_up_requests: int = 0
    send_p50_ms: float | None = None  # chat: the POST's response time
    send_p99_ms: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    delivered_per_s: float = 0.0
    window_s: float = 0.0
    error: str | None = None  # a run the server broke off (e.g. a handshake answered 500)
    latencies: list[float] = field(default_factory=list, repr=False)

    def finish(self, send_times: dict, receipts: list[tuple[object, float]], first_send: float) -> None:
        self.sent = len(send_times)
        self.expected = self.sent * self.members
        delivered = [(key, at) for key, at in receipts if key in send_times]
        self.received = len(delivered)
        self.lost = self.expected - self.received
        self.latencies = sorted((at - send_times[key]) * 1000 for key, at in delivered)
        if self.latencies:
            self.p50_ms = percentile(self.latencies, 50)
            self.p99_ms = percentile(self.latencies, 99)
            self.max_ms = round(self.latencies[-1], 1)
            self.window_s = max(at for _, at in delivered) - first_send
            self.delivered_per_s = round(self.received / self.window_s, 1) if self.window_s > 0 else 0.0


def percentile(ordered: list[float], pct: float) -> float:
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return round(ordered[index], 1)


async def offer_load(*, rate: float, duration: float, send) -> float:
    """Call `send(seq, scheduled_at)` `rate` times a second for `duration`, whatever the replies."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks = []
    for seq in range(int(rate * duration)):
        scheduled_at = start + seq / rate
        delay = scheduled_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(seq, scheduled_at)))
    with suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    return start


async def drain(count, expected: int, *, quiet: float, limit: float) -> None:
    """Wait until `count()` reaches `expected`, stops growing for `quiet` s, or `limit` s pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    last, last_change = count(), loop.time()
    while count() < expected and loop.time() < deadline and loop.time() - last_change < quiet:
        await asyncio.sleep(0.05)
        if count() != last:
            last, last_change = count(), loop.time()


async def read_frames(ws, on_frame) -> None:
    with suppress(websockets.ConnectionClosed):
        async for raw in ws:
            on_frame(json.loads(raw), asyncio.get_running_loop().time())


# --- the reference relay -------------------------------------------------------------


async def run_relay(server: Server, seed: Seed, result: Result, *, room: str, timeout: float) -> Result:
    members = seed.members[: result.members]
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


# --- our chat -------------------------------------------------------------------------


class Receiver:
    """One member's room socket, following the prev_id chain like chat's room JS does."""

    def __init__(self, member: Member, run: ChatRun):
        self.member, self.run = member, run
        self.contiguous_id = run.start_id
        self.framed: set[int] = set()
        self.recovered: set[int] = set()
        self.ahead: dict[int, int] = {}  # prev_id -> message_id of frames that came early
        self.gap_timer: asyncio.TimerHandle | None = None
        self.catching_up: asyncio.Task | None = None
        self.again = False
        self.last_presence = 0.0

    def on_frame(self, frame: dict, at: float) -> None:
        if frame.get("type") == "chat.presence":
            self.last_presence = at
        if frame.get("client_id") and frame.get("type") in ("ack", "error"):
            return self.run.answered(frame)
        if frame.get("type") != "chat.message":
            return
        message_id = frame["message_id"]
        self.framed.add(message_id)
        self.run.receipts.append((message_id, at))
        if message_id <= self.contiguous_id:
            return
        if frame["prev_id"] != self.contiguous_id:
            self.ahead[frame["prev_id"]] = message_id
            return self.gap_seen()
        self.contiguous_id = message_id
        while self.contiguous_id in self.ahead:  # the late frame closed the gap
            self.contiguous_id = self.ahead.pop(self.contiguous_id)
        if not self.ahead and self.gap_timer:
            self.gap_timer.cancel()
            self.gap_timer = None

    def gap_seen(self) -> None:
        """Catch up at once, or after the grace period if the missing frame is just late."""
        if self.run.reorder_grace <= 0:
            return self.catch_up()
        if self.gap_timer is None:
            self.gap_timer = asyncio.get_running_loop().call_later(self.run.reorder_grace, self.grace_over)

    def grace_over(self) -> None:
        self.gap_timer = None
        if self.ahead:
            self.catch_up()

    def catch_up(self) -> None:
        if self.catching_up and not self.catching_up.done():
            self.again = True
            return
        self.catching_up = asyncio.create_task(self.fetch_missing())

    async def fetch_missing(self) -> None:
        while True:
            self.again = False
            for _ in range(40):  # the JS's page limit
                # As the room JS: with frames past the gap in hand, fetch only the gap.
                before = min(self.ahead.values()) if self.ahead else None
                ids = await self.run.fetch_after(self.member, self.contiguous_id, before=before)
                if not ids and before is not None:
                    self.ahead.clear()
                    continue
                if not ids:
                    break
                self.recovered.update(ids)
                self.contiguous_id = max(self.contiguous_id, *ids)
                while self.contiguous_id in self.ahead:  # the frames held past the gap chain on
                    self.contiguous_id = self.ahead.pop(self.contiguous_id)
            self.ahead = {prev: later for prev, later in self.ahead.items() if later > self.contiguous_id}
            if not self.again:
                return


class ChatRun:
    def __init__(self, server: Server, http: httpx.AsyncClient, chat_id: int, *, reorder_grace: float):
        self.server, self.http, self.chat_id = server, http, chat_id
        self.start_id = 0  # the last message before the receivers join (see warm_up)
        self.reorder_grace = reorder_grace
        self.receipts: list[tuple[int, float]] = []
        self.catch_up_requests = 0
        self.awaiting_ack: dict[str, asyncio.Future] = {}

    async def send_frame(self, ws, body: str, *, timeout: float = 30) -> int | None:
        """Send over the room socket as the page does; the message id from the ack, or None."""
        client_id = secrets.token_hex(8)
        answer = self.awaiting_ack[client_id] = asyncio.get_running_loop().create_future()
        try:
            await ws.send(json.dumps({"type": "send", "client_id": client_id, "body": body}))
            return await asyncio.wait_for(answer, timeout)
        finally:
            self.awaiting_ack.pop(client_id, None)

    def answered(self, frame: dict) -> None:
        answer = self.awaiting_ack.get(frame["client_id"])
        if answer is not None and not answer.done():
            answer.set_result(frame.get("message_id") if frame["type"] == "ack" else None)

    async def post(self, member: Member, body: str) -> int | None:
        response = await self.http.post(
            f"/chat/{self.chat_id}/send/",
            data={"body": body},
            headers={"Cookie": member.cookie, "X-CSRFToken": member.csrf_token, "HX-Request": "true"},
        )
        match = MESSAGE_ID.search(response.text) if response.status_code == 200 else None
        return int(match.group(1)) if match else None

    async def fetch_after(self, member: Member, after: int, *, before: int | None = None) -> list[int]:
        self.catch_up_requests += 1
        params = {"after": after} if before is None else {"after": after, "before": before}
        response = await self.http.get(
            f"/chat/{self.chat_id}/messages/", params=params, headers={"Cookie": member.cookie}
        )
        if response.status_code != 200:
            return []
        return [int(found) for found in MESSAGE_ID.findall(response.text)]


async def run_chat(
    server: Server,
    http: httpx.AsyncClient,
    seed: Seed,
    result: Result,
    *,
    chat_id: int,
    timeout: float,
    hidden: bool = False,
    reorder_grace: float = 0.0,
    send_over: str = "socket",
) -> Result:
    members = seed.members[: result.members]
    run = ChatRun(server, http, chat_id, reorder_grace=reorder_grace)
    await warm_up(run, members[: result.senders])
    receivers = [Receiver(member, run) for member in members]
    sockets = await open_sockets(
        server, [f"/ws/chat/{chat_id}/"] * len(members), [m.cookie for m in members], timeout=timeout
    )
    readers = [asyncio.create_task(read_frames(ws, r.on_frame)) for ws, r in zip(sockets, receivers, strict=True)]
    if hidden:  # as a background tab says: the server then marks nothing read for it
        await asyncio.gather(*(ws.send(json.dumps({"type": "visibility", "visible": False})) for ws in sockets))
    await settle_presence(receivers, timeout=timeout)
    send_times: dict[int, float] = {}
    response_times: list[float] = []

    async def send(seq: int, scheduled_at: float) -> None:
        try:
            if send_over == "socket":
                message_id = await run.send_frame(sockets[seq % result.senders], f"bench {seq}")
            else:
                message_id = await run.post(members[seq % result.senders], f"bench {seq}")
        except (httpx.HTTPError, websockets.ConnectionClosed, TimeoutError):
            message_id = None
        response_times.append((asyncio.get_running_loop().time() - scheduled_at) * 1000)
        if message_id is None:
            result.send_errors += 1
        else:
            send_times[message_id] = scheduled_at

    first_send = await offer_load(rate=result.rate, duration=result.duration, send=send)
    await drain(lambda: len(run.receipts), len(send_times) * len(members), quiet=2, limit=15)
    # The end of a burst has no next frame to reveal a gap: catch up once, like a reconnect.
    with suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(final_catch_up(r) for r in receivers), return_exceptions=True), timeout)
    await close_sockets(sockets)
    for reader in readers:
        reader.cancel()
    result.finish(send_times, run.receipts, first_send)
    have = sum(len((r.framed | r.recovered) & send_times.keys()) for r in receivers)
    result.recovered = sum(len((r.recovered - r.framed) & send_times.keys()) for r in receivers)
    result.lost_after_catch_up = result.expected - have
    result.catch_up_requests = run.catch_up_requests
    if response_times:
        response_times.sort()
        result.send_p50_ms, result.send_p99_ms = percentile(response_times, 50), percentile(response_times, 99)
    return result


async def final_catch_up(receiver: Receiver) -> None:
    if receiver.catching_up and not receiver.catching_up.done():
        await receiver.catching_up
    await receiver.fetch_missing()


async def warm_up(run: ChatRun, senders: list[Member]) -> None:
    """Start from a running server, as the relay's senders start on open sockets.

    One message per sender, before the receivers join, runs the send path's first-use
    costs (lazy imports, a cache client's connection); the GETs then leave open the
    keep-alive connections the sends will use, as a loaded page has.
    """
    posted = await asyncio.gather(*(run.post(member, "warm-up") for member in senders))
    run.start_id = max((message_id for message_id in posted if message_id), default=0)
    pages = (run.http.get(f"/chat/{run.chat_id}/messages/", headers={"Cookie": m.cookie}) for m in senders * 2)
    await asyncio.gather(*pages)


async def settle_presence(receivers: list[Receiver], *, timeout: float, quiet: float = 0.7) -> None:
    """Start sending once the join burst's presence recounts are over."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await asyncio.sleep(quiet)
    while loop.time() < deadline and loop.time() - max(r.last_presence for r in receivers) < quiet:
        await asyncio.sleep(0.1)


# --- memory per idle socket -------------------------------------------------------------


async def idle_memory(server: Server, seed: Seed, *, count: int, timeout: float) -> dict:
    """RSS growth of the server while `count` inbox sockets sit idle, per socket."""
    await asyncio.sleep(1)
    before = server.rss_kib()
    cookies = [seed.members[n % len(seed.members)].cookie for n in range(count)]
    sockets = await open_sockets(server, ["/ws/chat/inbox/"] * count, cookies, timeout=timeout)
    with suppress(TimeoutError):  # every inbox is set up once it has sent its greeting
        await asyncio.wait_for(asyncio.gather(*(ws.recv() for ws in sockets)), timeout)
    await asyncio.sleep(2)
    after = server.rss_kib()
    await close_sockets(sockets)
    return {
        "sockets": count,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_socket": round((after - before) / count, 1),
    }


# --- one layer: one server, every rate, both targets -----------------------------------


async def bench_layer(args, layer: str, redis_url: str | None, seed_state: Seed, workdir: Path):
    env = server_env(args, workdir, redis_url=redis_url, prefix=f"bench-{secrets.token_hex(3)}")
    server = Server(env, workdir / f"daphne-{layer}.log")
    results: list[Result] = []
    try:
        server.wait_ready(timeout=30)
        memory = await idle_memory(server, seed_state, count=args.idle_sockets, timeout=args.phase_timeout)
        await asyncio.sleep(2)
        limits = httpx.Limits(max_connections=args.senders * 4, max_keepalive_connections=args.senders * 4)
        no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))  # identities go in headers
        async with httpx.AsyncClient(
            base_url=server.http_base, limits=limits, timeout=args.phase_timeout, cookies=no_cookies
        ) as http:
            for rate, chat_id in zip(args.rates, seed_state.chat_ids, strict=True):
                for target in ("relay", "chat"):
                    result = Result(layer, target, rate, args.duration, args.members, args.senders)
                    # The client's own full collections (about 40 ms with the previous runs'
                    # results on its heap) would show up as the server's latency.
                    gc.collect()
                    gc.freeze()
                    print(f"  {layer}: {target} at {rate:g} msg/s for {args.duration:g} s ...", flush=True)
                    timeout = args.phase_timeout
                    if target == "relay":
                        run = run_relay(server, seed_state, result, room=f"r{chat_id}", timeout=timeout)
                    else:
                        run = run_chat(
                            server,
                            http,
                            seed_state,
                            result,
                            chat_id=chat_id,
                            timeout=timeout,
                            hidden=args.hidden,
                            reorder_grace=args.reorder_grace,
                            send_over=args.send_over,
                        )
                    try:
                        await asyncio.wait_for(run, args.duration + 4 * args.phase_timeout)
                    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                        result.error = f"{type(exc).__name__}: {exc}"[:300]
                        print(f"    failed: {result.error} (server log: {server.log_path})", flush=True)
                    results.append(result)
                    await asyncio.sleep(2)  # let the server finish closing the run's sockets
    finally:
        server.stop()
    return results, {"layer": layer, **memory}


# --- output ---------------------------------------------------------------------------------


def fmt(value, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def print_table(results: list[Result], memory: list[dict]) -> None:
    header = (
        "layer",
        "rate/s",
        "target",
        "sent",
        "p50 ms",
        "p99 ms",
        "max ms",
        "deliv/s",
        "lost",
        "recov",
        "lost*",
        "GETs",
        "POST p50/p99",
        "",
    )
    rows = [
        (
            r.layer,
            fmt(r.rate),
            r.target,
            str(r.sent),
            fmt(r.p50_ms),
            fmt(r.p99_ms),
            fmt(r.max_ms),
            fmt(r.delivered_per_s),
            str(r.lost),
            str(r.recovered) if r.target == "chat" else "-",
            fmt(r.lost_after_catch_up),
            str(r.catch_up_requests) if r.target == "chat" else "-",
            f"{fmt(r.send_p50_ms)}/{fmt(r.send_p99_ms)}" if r.target == "chat" else "-",
            "FAILED" if r.error else "",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    print("lost: deliveries that never arrived as frames; recov: fetched by catch-up GETs; lost*: after catch-up;")
    print("GETs: catch-up requests (gaps seen, plus one per receiver at the end); POST: the send's response time")
    print()
    for relay, ours in pairs(results):
        throughput = ours.delivered_per_s / relay.delivered_per_s if relay.delivered_per_s else 0
        p99 = (ours.p99_ms or 0) / relay.p99_ms if relay.p99_ms else float("inf")
        print(
            f"{ours.layer} at {ours.rate:g} msg/s: chat delivers {throughput:.0%} of the relay's frames/s "
            f"(target >= 80%), p99 {p99:.1f}x the relay's (target <= 2x)"
        )
    for entry in memory:
        print(
            f"{entry['layer']}: {entry['kib_per_socket']:g} KiB RSS per idle inbox socket "
            f"({entry['sockets']} sockets, {entry['rss_before_kib']} -> {entry['rss_after_kib']} KiB)"
        )


def pairs(results: list[Result]):
    by_key = {(r.layer, r.rate, r.target): r for r in results}
    for (layer, rate, target), relay in by_key.items():
        if target == "relay" and (layer, rate, "chat") in by_key:
            yield relay, by_key[(layer, rate, "chat")]


def report(args, results: list[Result], memory: list[dict]) -> dict:
    import channels
    import django

    return {
        "settings": {
            "rates": args.rates,
            "duration_s": args.duration,
            "members": args.members,
            "senders": args.senders,
            "idle_sockets": args.idle_sockets,
            "reorder_grace_s": args.reorder_grace,
            "chat_receivers": "hidden tabs (no read marking)" if args.hidden else "viewing (read marking on)",
            "database": "DATABASE_URL" if args.database_url else "sqlite (throwaway)",
        },
        "environment": {
            "python": platform.python_version(),
            "django": django.get_version(),
            "channels": channels.__version__,
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
        },
        "runs": [{k: v for k, v in asdict(r).items() if k != "latencies"} for r in results],
        "idle_memory": memory,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[20.0, 50.0], help="total msg/s offered (each)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending per run")
    parser.add_argument("--members", type=int, default=100, help="room sockets (members), senders included")
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--idle-sockets", type=int, default=1000, help="inbox sockets for the memory figure")
    parser.add_argument("--redis", default=None, help="also run on Redis (default: REDIS_URL, if channels_redis)")
    parser.add_argument("--no-memory-layer", action="store_true", help="skip the in-memory layer")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), help="default: throwaway SQLite")
    parser.add_argument("--phase-timeout", type=float, default=60.0, help="bound on connecting, draining, catch-up")
    parser.add_argument("--hidden", action="store_true", help="chat receivers report a hidden tab (no read marking)")
    parser.add_argument(
        "--reorder-grace",
        type=float,
        default=REORDER_GRACE_SECONDS,
        help="seconds a chat receiver waits for a late frame before catching up (default: the room JS's 0.4)",
    )
    parser.add_argument(
        "--send-over",
        choices=["socket", "http"],
        default="socket",
        help="chat senders send over their room socket (as the page does when it is open) or POST send/",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.redis is None and os.environ.get("REDIS_URL"):
        with suppress(ImportError):
            import channels_redis  # noqa: F401

            args.redis = os.environ["REDIS_URL"]
    if not 0 < args.senders <= args.members:
        parser.error("--senders must be between 1 and --members")
    return args


def layers(args) -> list[tuple[str, str | None]]:
    chosen = [] if args.no_memory_layer else [("memory", None)]
    return chosen + ([("redis", args.redis)] if args.redis else [])


async def bench(args, seed_state: Seed, workdir: Path) -> tuple[list[Result], list[dict]]:
    """Each layer gets its own server and its own rooms (one per rate)."""
    results, memory = [], []
    rooms = iter(seed_state.chat_ids)
    for layer, redis_url in layers(args):
        layer_seed = Seed(members=seed_state.members, chat_ids=[next(rooms) for _ in args.rates])
        layer_results, layer_memory = await bench_layer(args, layer, redis_url, layer_seed, workdir)
        results += layer_results
        memory.append(layer_memory)
    return results, memory


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        workdir = Path(tmp)
        setup_django(server_env(args, workdir, redis_url=None, prefix="bench"))
        rooms = len(args.rates) * len(layers(args))
        seed_state = seed(run_id=secrets.token_hex(3), members=args.members, rooms=rooms)
        print(f"{args.members} members, {args.senders} senders, {args.duration:g} s per run", flush=True)
        results, memory = asyncio.run(bench(args, seed_state, workdir))
    if args.json:
        args.json.write_text(json.dumps(report(args, results, memory), indent=2) + "\n")
    print_table(results, memory)
    if args.json:
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
