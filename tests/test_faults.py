"""Faults and load on real services: Redis stops and comes back, a server is killed, one freezes, 50 users chat.

One redis + postgresql project (module scope) on a PostgreSQL database and a Redis of its
own (started here, so stopping it disturbs no other test), served by two daphne processes
per scenario. Room clients (the generated project's benchmarks/room_client.py) follow the
page's protocol: they send over their room socket and wait for the ack, fall back to HTTP
when the socket is closed or the ack is late, and wait out rate limits, always with the
message's client id. At the end every client must have shown every saved message of its
chat exactly once, every message sent must be exactly one row (none lost, none stored
twice by a retry), and every unread count must equal a recount. Figures are printed
(`pytest -s`) and written to test-artifacts/faults.json.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from baking import TEMPLATE_DIR, exclusive_lock
from conftest import unavailable
from live_servers import (
    COOKIE_FOR_SCRIPT,
    HOST,
    Project,
    Server,
    bake_project,
    free_port,
    require_room_client,
    start_servers,
)

pytestmark = pytest.mark.slow

ARTIFACT = TEMPLATE_DIR / "test-artifacts" / "faults.json"
SERVER_LOGS = TEMPLATE_DIR / "test-artifacts" / "faults"  # one folder per scenario, kept after the run
LOAD_USERS = 50
LOAD_SECONDS = 30  # the figure
THINK_SECONDS = (2, 6)  # between one send of a user and the next
GROUP_EVERY = 3  # every third message goes to the 50-member group, the others to a direct chat
SETTLE_TIMEOUT = 60  # at most, for every client to show the last message once sending stops
REQUEST_TIMEOUT = 60  # a browser waits: a send that times out may still be saved, without its 200
SEND_TIMEOUT = 120  # at most, for a message to leave its outbox (retries included)
# chat-websocket.js waits 0.5 s doubling up to 15 s; shorter here so tests take seconds.
RECONNECT_DELAYS = (0.1, 1.0)

# Users (no password: they get session cookies), one group of all of them and, with
# "directs", a direct chat per pair; prints chat ids and each member's cookie as JSON.
SEED_SCRIPT = (
    COOKIE_FOR_SCRIPT
    + """
from chat import services

spec = json.loads(SPEC)
User = get_user_model()
users = [User.objects.create_user(username=name, email=f"{name}@example.com") for name in spec["users"]]
group = services.create_group_chat(creator=users[0], name=f"{spec['users'][0]}'s group", members=users[1:])
pairs = [(users[i], users[i + 1]) for i in range(0, len(users) - 1, 2)] if spec["directs"] else []
directs = [services.get_or_create_direct_chat(user=a, other=b)[0].pk for a, b in pairs]
print(json.dumps({"group_id": group.pk, "direct_ids": directs, "members": [cookie_for(user) for user in users]}))
"""
)

# The database's side: each chat's message ids, and every membership whose unread count
# differs from a recount of the messages after its read marker that others sent.
CHECK_SCRIPT = """
import json
from chat.models import Membership, Message

chat_ids = json.loads(CHAT_IDS)
messages = {c: list(Message.objects.filter(chat_id=c).order_by("pk").values_list("pk", flat=True)) for c in chat_ids}
wrong, unread_total = [], 0
memberships = list(Membership.objects.filter(chat_id__in=chat_ids))
for m in memberships:
    recount = Message.objects.filter(chat_id=m.chat_id, pk__gt=m.last_read_message_id).exclude(sender_id=m.user_id)
    recount = recount.count()
    unread_total += m.unread_count
    if recount != m.unread_count:
        wrong.append({"chat": m.chat_id, "user": m.user_id, "unread_count": m.unread_count, "recount": recount})
print(json.dumps({"messages": messages, "memberships": len(memberships), "unread_wrong": wrong,
                  "unread_total": unread_total}))
"""


class RedisProcess:
    """A redis-server of this module's own, stopped and restarted on the same port."""

    def __init__(self, workdir: Path):
        self.workdir, self.port = workdir, free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = ["redis-server", "--bind", HOST, "--port", str(self.port), "--save", "", "--appendonly", "no"]
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen([*command, "--dir", str(self.workdir)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"redis-server did not answer on port {self.port}", pytrace=False)

    def ensure_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.start()

    def stop(self) -> None:
        """SIGTERM without persistence configured: like `redis-cli shutdown nosave`, the data is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed (the fault tests start their own)", "; .ci/run installs it")
    redis = RedisProcess(tmp_path_factory.mktemp("redis"))
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def project(cookies_session, postgres_url: str, redis_server: RedisProcess, request) -> Project:
    require_room_client()
    return bake_project(cookies_session, request, postgres_url=postgres_url, redis_url=redis_server.url, name="faults")


def seed(project: Project, *, prefix: str, users: int, directs: bool = False) -> dict:
    spec = {"users": [f"{prefix}{number:02d}" for number in range(users)], "directs": directs}
    return project.shell_json(f"SPEC = {json.dumps(json.dumps(spec))}\n" + SEED_SCRIPT)


def database_state(project: Project, chat_ids: list[int]) -> dict:
    state = project.shell_json(f"CHAT_IDS = {json.dumps(json.dumps(chat_ids))}\n" + CHECK_SCRIPT)
    state["messages"] = {int(chat_id): ids for chat_id, ids in state["messages"].items()}
    return state


class Sends:
    """Messages sent through the room clients' outboxes, with how each one left."""

    def __init__(self):
        self.answers: list = []  # room_client.Sent, in the order answered
        self.ids: dict[int, list[int]] = defaultdict(list)  # chat -> ids of the messages stored
        self.sent_at: dict[int, float] = {}
        self.seconds: list[float] = []

    async def send(self, client, body: str):
        """Type a message into this client's room and wait until it is stored (or refused)."""
        started = time.monotonic()
        answer = await asyncio.wait_for(client.send(body), SEND_TIMEOUT)
        self.seconds.append(time.monotonic() - started)
        self.record(client.chat_id, answer, started=started)
        return answer

    def record(self, chat_id: int, answer, *, started: float) -> None:
        self.answers.append(answer)
        if answer.message_id is not None:
            self.ids[chat_id].append(answer.message_id)
            self.sent_at[answer.message_id] = started

    @property
    def outcomes(self) -> Counter[str]:
        """ "socket" (acked), "http" (answered 200) or "refused", per message."""
        return Counter(answer.via or "refused" for answer in self.answers)

    @property
    def retried(self) -> int:
        return sum(len(answer.tries) > 1 for answer in self.answers)

    def last_id(self, chat_id: int) -> int:
        return max(self.ids[chat_id], default=0)


def new_client(member: dict, chat_id: int, servers: list[Server], **options):
    """A room page for this member, on these servers (the first one unless started elsewhere)."""
    room_client = require_room_client()
    return room_client.RoomClient(
        member=room_client.Member(**member),
        chat_id=chat_id,
        servers=[server.base_url for server in servers],
        reconnect_delays=RECONNECT_DELAYS,
        http_timeout=REQUEST_TIMEOUT,
        **options,
    )


async def all_connected(clients: list, timeout: float = 20) -> None:
    await asyncio.wait_for(asyncio.gather(*(client.connected.wait() for client in clients)), timeout)


async def settle(clients: list, sends: Sends) -> None:
    """Give every client the time to show the last message of its chat (no gap before it)."""
    await asyncio.gather(*(client.wait_for(sends.last_id(client.chat_id), SETTLE_TIMEOUT) for client in clients))


async def stop_all(clients: list) -> None:
    await asyncio.gather(*(client.stop() for client in clients))


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 1)


def tally(name: str, clients: list, sends: Sends, state: dict, **extra) -> dict:
    """The scenario's figures, printed and written to test-artifacts/faults.json."""
    expected = sum(len(state["messages"][client.chat_id]) for client in clients)
    lost = sum(len(set(state["messages"][client.chat_id]) - set(client.shown)) for client in clients)
    counts = sum((client.counts for client in clients), Counter())
    latencies = [
        shown_at - sends.sent_at[message_id]
        for client in clients
        for message_id, shown_at in client.shown_at.items()
        if message_id in sends.sent_at
    ]
    figures = {
        "sends": dict(sends.outcomes),
        "sends_retried": sends.retried,
        "retries": {key: value for key, value in counts.items() if key.startswith("retry_") or key == "ack_timeout"},
        "saved": sum(len(ids) for ids in state["messages"].values()),
        "clients": len(clients),
        "deliveries_expected": expected,
        "delivered": sum(len(client.shown) for client in clients),
        "by_frame": counts["frame"],
        "by_catch_up": counts["catch_up"],
        "by_send_answer": counts["send_answer"],
        "lost": lost,
        "duplicates_shown": sum(len(client.shown) - len(set(client.shown)) for client in clients),
        "gaps_noticed": counts["gap"],
        "reconnects": counts["open"] - len(clients),
        "catch_up_requests": counts["catch_up_request"],
        "latency_ms": {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99)},
        "send_ms": {"p50": percentile(sends.seconds, 0.5), "p99": percentile(sends.seconds, 0.99)},
        "memberships_checked": state["memberships"],
        "unread_wrong": len(state["unread_wrong"]),
        **extra,
    }
    print(f"\n[faults] {name}: {json.dumps(figures)}")
    with exclusive_lock(ARTIFACT.with_suffix(".lock")):
        previous = json.loads(ARTIFACT.read_text()) if ARTIFACT.is_file() else {}
        ARTIFACT.write_text(json.dumps({**previous, name: figures}, indent=2) + "\n")
    return figures


def assert_exactly_once(clients: list, sends: Sends, state: dict) -> None:
    """Every message typed is one row (a retry stores nothing twice), shown once by every client."""
    assert sends.outcomes["refused"] == 0, [answer for answer in sends.answers if answer.refusal][:5]
    for chat_id, ids in state["messages"].items():
        assert sorted(sends.ids[chat_id]) == ids, f"chat {chat_id}: rows differ from the messages sent"
    for client in clients:
        expected = state["messages"][client.chat_id]
        assert sorted(client.shown) == expected, (
            f"user {client.member.user_id} in chat {client.chat_id} showed {len(client.shown)} of "
            f"{len(expected)}; missing {sorted(set(expected) - set(client.shown))[:20]}; {dict(client.counts)}; "
            f"errors {client.errors}; server logs in {SERVER_LOGS}"
        )
        assert client.final_close_code is None and not client.revoked
        assert not client.errors, client.errors
    assert not state["unread_wrong"], state["unread_wrong"][:10]


def serve(project: Project, scenario: str, request) -> list[Server]:
    """Two daphne processes; their logs stay in test-artifacts/faults/<scenario>/."""
    logs = SERVER_LOGS / scenario
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    return start_servers(project, logs, 2, request)


# 1. Redis stops while clients are connected, and comes back


async def redis_outage(servers: list[Server], seeded: dict, redis: RedisProcess) -> dict:
    chat_id, members = seeded["group_id"], seeded["members"]
    clients = [new_client(member, chat_id, servers) for member in members]
    for number, client in enumerate(clients):
        client.start(server_index=number % 2)
    sends = Sends()
    try:
        await all_connected(clients)
        for number in range(3):
            await sends.send(clients[number], f"before {number}")
        await settle(clients, sends)

        redis.stop()
        down_at = time.monotonic()
        drops_deadline = time.monotonic() + 10
        while any(client.counts["drop"] == 0 for client in clients) and time.monotonic() < drops_deadline:
            await asyncio.sleep(0.1)
        dropped = sum(client.counts["drop"] > 0 for client in clients)
        for number in range(6):  # both servers, while their channel layer is gone and the sockets with it
            await sends.send(clients[number % len(clients)], f"during {number}")
            await asyncio.sleep(0.2)
        during = sends.answers[3:]
        redis.start()
        outage_seconds = time.monotonic() - down_at

        await all_connected(clients)
        for number in range(3):
            await sends.send(clients[-1 - number], f"after {number}")
        await settle(clients, sends)
    finally:
        await stop_all(clients)
    extra = {
        "outage_seconds": round(outage_seconds, 1),
        "sent_during_outage_over_http": sum(answer.via == "http" for answer in during),
    }
    return {"clients": clients, "sends": sends, "dropped": dropped, "during": during, "extra": extra}


def test_redis_outage_keeps_sends_saving_and_clients_catch_up(project, redis_server, request):
    """Sends are stored while Redis is down (over HTTP: the sockets are gone); sockets reconnect and catch up."""
    redis_server.ensure_running()
    servers = serve(project, "redis_outage", request)
    request.addfinalizer(redis_server.ensure_running)
    seeded = seed(project, prefix="outage", users=4)
    result = asyncio.run(redis_outage(servers, seeded, redis_server))
    clients, sends = result["clients"], result["sends"]
    state = database_state(project, [seeded["group_id"]])
    tally("redis_outage", clients, sends, state, **result["extra"])
    assert_exactly_once(clients, sends, state)
    assert all(answer.via == "http" for answer in result["during"]), "HTTP answers 200 with Redis down"
    assert result["dropped"] == len(clients), "every socket notices that its channel layer is gone"
    assert all(client.counts["open"] >= 2 for client in clients), "every socket reconnects once Redis is back"


# 2. A server process is killed mid-conversation


def failover_clients(servers: list[Server], seeded: dict, **options) -> list:
    """The group's members, the even ones on the first server and the odd ones on the second,
    each moving to the other server when its own refuses them or restarts."""
    first, second = servers
    clients = []
    for number, member in enumerate(seeded["members"]):
        own = [first, second] if number % 2 == 0 else [second, first]
        clients.append(new_client(member, seeded["group_id"], own, failover=True, **options))
        clients[-1].start()
    return clients


def play_on_two_servers(project: Project, redis_server, request, scenario, *, prefix: str):
    """`scenario` played by six members of a group on two servers of their own: what it
    returned, the database's state after it, and the servers."""
    redis_server.ensure_running()
    servers = serve(project, scenario.__name__, request)
    seeded = seed(project, prefix=prefix, users=6)
    result = asyncio.run(scenario(servers, seeded))
    return result, database_state(project, [seeded["group_id"]]), servers


async def server_killed(servers: list[Server], seeded: dict) -> dict:
    victim, survivor = servers
    clients = failover_clients(servers, seeded)
    sends = Sends()

    async def converse(stop: asyncio.Event) -> None:
        number = 0
        while not stop.is_set():
            await sends.send(random.choice(clients[1:]), f"message {number}")
            number += 1
            await asyncio.sleep(0.05)

    stop = asyncio.Event()
    try:
        await all_connected(clients)
        conversation = asyncio.get_running_loop().create_task(converse(stop))
        await asyncio.sleep(1.5)
        # Frozen first, so a message is surely on its way over a socket of the victim when it
        # dies: sent by a client the conversation leaves idle, so nothing queues before it.
        assert clients[0].server == victim.base_url and clients[0].is_open()
        victim.process.send_signal(signal.SIGSTOP)
        unanswered = asyncio.ensure_future(sends.send(clients[0], "sent to a frozen server"))
        await asyncio.sleep(0.5)
        victim.kill()
        await asyncio.sleep(2)
        stop.set()
        await conversation
        unanswered = await unanswered
        await settle(clients, sends)
    finally:
        await stop_all(clients)
    moved = sum(client.server == survivor.base_url and client.counts["open"] > 1 for client in clients[::2])
    return {"clients": clients, "sends": sends, "moved": moved, "unanswered": unanswered}


def test_killed_server_clients_move_to_the_other_and_miss_nothing(project, redis_server, request):
    """SIGKILL one of two servers mid-conversation: its clients reconnect to the other, resend what was
    not acknowledged, and catch up; nothing is lost or stored twice."""
    result, state, _ = play_on_two_servers(project, redis_server, request, server_killed, prefix="killed")
    clients, sends = result["clients"], result["sends"]
    tally("server_killed", clients, sends, state, moved_to_survivor=result["moved"])
    unanswered = result["unanswered"]
    assert unanswered.tries[0] == "socket" and len(unanswered.tries) > 1, unanswered
    assert unanswered.message_id is not None, "the message the dead server never acknowledged is resent"
    assert result["moved"] == len(clients[::2]), "every client of the killed server reconnects to the other"
    assert_exactly_once(clients, sends, state)


# 3. A server process freezes: no close, no refusal, only silence (a VM paused, a network cut)

# socket-heartbeat.js pings after 25 s of quiet and gives up 10 s after; shorter here (and
# time enough for a busy machine's pong).
HEARTBEAT = (1.0, 3.0)
FROZEN_OPEN_TIMEOUT = 2.0  # a handshake the frozen server never answers


async def server_frozen(servers: list[Server], seeded: dict) -> dict:
    victim, survivor = servers
    clients = failover_clients(servers, seeded, heartbeat=HEARTBEAT, open_timeout=FROZEN_OPEN_TIMEOUT)
    on_victim, on_survivor = clients[::2], clients[1::2]
    sends = Sends()
    try:
        await all_connected(clients)
        await asyncio.sleep(3 * HEARTBEAT[0])  # a quiet room: every socket pings and is answered
        quiet = [Counter(client.counts) for client in clients]
        victim.process.send_signal(signal.SIGSTOP)
        for number in range(8):
            await sends.send(on_survivor[number % len(on_survivor)], f"while one server is frozen {number}")
            await asyncio.sleep(0.5)
        await settle(clients, sends)
    finally:
        await stop_all(clients)
        victim.kill()
    return {"clients": clients, "sends": sends, "quiet": quiet, "on_victim": on_victim, "on_survivor": on_survivor}


def test_a_frozen_servers_clients_notice_its_silence_move_to_the_other_and_miss_nothing(project, redis_server, request):
    """SIGSTOP one of two servers: its sockets get no close and no error, only silence. The
    heartbeat's unanswered ping drops each of them, their reconnects to the frozen server time
    out, and they move to the other server and catch up. In a quiet room before that, every
    socket pinged, was answered, and stayed open."""
    result, state, servers = play_on_two_servers(project, redis_server, request, server_frozen, prefix="frozen")
    clients, sends = result["clients"], result["sends"]
    tally("server_frozen", clients, sends, state)
    for counts in result["quiet"]:
        assert counts["ping_sent"] >= 1 and counts["silent_drop"] == 0 and counts["open"] == 1, dict(counts)
    for client in result["on_victim"]:
        assert client.counts["silent_drop"] == 1 and client.server == servers[1].base_url, dict(client.counts)
    assert all(client.counts["silent_drop"] == 0 for client in result["on_survivor"])
    assert_exactly_once(clients, sends, state)


# 4. Sends whose answer is lost or refused for now are retried, and stored once


BURST = 6  # messages typed at once by each of two senders
RATE_LIMITS = "send=3/2s,email_lookup=,new_chat=,new_group="


class AckLosingClient:
    """Mixin for a room client whose acks never arrive (a proxy that ate them)."""

    def on_text(self, text: str) -> None:
        if json.loads(text).get("type") == "ack":
            self.counts["ack_lost"] += 1
            return
        super().on_text(text)


async def retried_sends(servers: list[Server], seeded: dict) -> dict:
    chat_id, (lossy_member, socket_member, http_member, *_) = seeded["group_id"], seeded["members"]
    lossy_class = type("LossyRoomClient", (AckLosingClient, require_room_client().RoomClient), {})
    lossy = lossy_class(
        member=require_room_client().Member(**lossy_member),
        chat_id=chat_id,
        servers=[servers[0].base_url],
        reconnect_delays=RECONNECT_DELAYS,
        ack_timeout=1.0,  # the page waits 5 s
    )
    over_socket = new_client(socket_member, chat_id, servers)
    over_http = new_client(http_member, chat_id, servers[1:], send_over="http")
    clients = [lossy, over_socket, over_http]
    for client in clients:
        client.start()
    sends = Sends()
    try:
        await all_connected(clients)
        await sends.send(lossy, "my ack is lost")
        # Typed faster than the rate limit allows: waited out (retry_after / Retry-After), in order.
        typed_at = time.monotonic()
        typed = [[client.send(f"burst {n}") for n in range(BURST)] for client in (over_socket, over_http)]
        bursts = []
        for burst in typed:
            bursts.append(await asyncio.wait_for(asyncio.gather(*burst), SEND_TIMEOUT))
            for answer in bursts[-1]:
                sends.record(chat_id, answer, started=typed_at)
        await settle(clients, sends)
    finally:
        await stop_all(clients)
    return {"clients": clients, "sends": sends, "bursts": bursts}


def test_lost_acks_and_rate_limits_are_retried_and_stored_once(project, redis_server, request):
    """A send whose ack never comes goes again over HTTP with its client id; sends over the rate
    wait out the server's retry_after (socket) or Retry-After (HTTP); each is one row, in order typed."""
    redis_server.ensure_running()
    servers = serve(project.with_env(CHAT_RATE_LIMITS=RATE_LIMITS), "retried_sends", request)
    seeded = seed(project, prefix="retried", users=3)
    result = asyncio.run(retried_sends(servers, seeded))
    clients, sends = result["clients"], result["sends"]
    state = database_state(project, [seeded["group_id"]])
    tally("retried_sends", clients, sends, state)
    lossy, over_socket, over_http = clients
    assert sends.answers[0].tries == ("socket", "http") and sends.answers[0].via == "http", sends.answers[0]
    assert lossy.counts["ack_lost"] == 1 and lossy.counts["ack_timeout"] == 1
    assert over_socket.counts["retry_rate_limited"] > 0, dict(over_socket.counts)
    assert over_http.counts["retry_429"] > 0, dict(over_http.counts)
    for burst in result["bursts"]:
        ids = [answer.message_id for answer in burst]
        assert ids == sorted(ids), "an outbox sends one message at a time, in the order typed"
    assert_exactly_once(clients, sends, state)


# 5. Fifty users send to one group and to direct chats for 30 s, over two servers


async def load(servers: list[Server], seeded: dict) -> dict:
    group_id, direct_ids, members = seeded["group_id"], seeded["direct_ids"], seeded["members"]
    clients = []
    rooms = []  # per member: its (group client, direct client)
    for number, member in enumerate(members):
        pair = [new_client(member, chat_id, servers) for chat_id in (group_id, direct_ids[number // 2])]
        for client in pair:
            clients.append(client)
            client.start(server_index=len(clients) % 2)
        rooms.append(pair)
    sends = Sends()

    async def user(number: int, until: float) -> None:
        group_room, direct_room = rooms[number]
        sent = 0
        await asyncio.sleep(random.uniform(0, 1))
        while time.monotonic() < until:
            await sends.send(group_room if sent % GROUP_EVERY == 0 else direct_room, f"from {number} no {sent}")
            sent += 1
            await asyncio.sleep(random.uniform(*THINK_SECONDS))

    try:
        await all_connected(clients, timeout=60)
        started = time.monotonic()
        await asyncio.gather(*(user(number, started + LOAD_SECONDS) for number in range(len(members))))
        sending_seconds = time.monotonic() - started
        await settle(clients, sends)
    finally:
        await stop_all(clients)
    return {"clients": clients, "sends": sends, "sending_seconds": sending_seconds}


def test_fifty_users_for_thirty_seconds_lose_nothing_and_count_unread_exactly(project, redis_server, request):
    """50 users, 100 open rooms on two servers, no rate limits: every message once, unread counts exact."""
    redis_server.ensure_running()
    unlimited = project.with_env(CHAT_RATE_LIMITS="send=,email_lookup=,new_chat=,new_group=")
    servers = serve(unlimited, "load", request)
    seeded = seed(project, prefix="load", users=LOAD_USERS, directs=True)
    result = asyncio.run(load(servers, seeded))
    clients, sends = result["clients"], result["sends"]
    state = database_state(project, [seeded["group_id"], *seeded["direct_ids"]])
    seconds = result["sending_seconds"]
    tally(
        "load",
        clients,
        sends,
        state,
        users=LOAD_USERS,
        seconds=round(seconds, 1),
        sends_per_second=round(len(sends.answers) / seconds, 1),
        unread_total=state["unread_total"],
    )
    assert_exactly_once(clients, sends, state)
