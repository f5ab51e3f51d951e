"""Faults and load on real services: Redis stops and comes back, a server is killed, 50 users chat.

One redis + postgresql project (module scope) on a PostgreSQL database and a Redis of its
own (started here, so stopping it disturbs no other test), served by two daphne processes
per scenario. Room clients (room_client.py) follow the page's protocol; at the end every
client must have shown every saved message of its chat exactly once, every send that got
a 200 must be one row, and every unread count must equal a recount. Figures are printed
(`pytest -s`) and written to test-artifacts/faults.json.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
import subprocess
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from baking import TEMPLATE_DIR, exclusive_lock
from conftest import unavailable
from live_servers import (
    COOKIE_FOR_SCRIPT,
    HOST,
    MESSAGE_ID,
    Project,
    Server,
    bake_project,
    free_port,
    http_request,
    require_websockets,
    start_servers,
)
from room_client import RoomClient

pytestmark = pytest.mark.slow

ARTIFACT = TEMPLATE_DIR / "test-artifacts" / "faults.json"
SERVER_LOGS = TEMPLATE_DIR / "test-artifacts" / "faults"  # one folder per scenario, kept after the run
LOAD_USERS = 50
LOAD_SECONDS = 30  # the figure
THINK_SECONDS = (2, 6)  # between one send of a user and the next
GROUP_EVERY = 3  # every third message goes to the 50-member group, the others to a direct chat
SETTLE_TIMEOUT = 60  # at most, for every client to show the last message once sending stops
REQUEST_TIMEOUT = 60  # a browser waits: a send that times out may still be saved, without its 200

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
    require_websockets()
    return bake_project(cookies_session, request, postgres_url=postgres_url, redis_url=redis_server.url, name="faults")


def seed(project: Project, *, prefix: str, users: int, directs: bool = False) -> dict:
    spec = {"users": [f"{prefix}{number:02d}" for number in range(users)], "directs": directs}
    return project.shell_json(f"SPEC = {json.dumps(json.dumps(spec))}\n" + SEED_SCRIPT)


def database_state(project: Project, chat_ids: list[int]) -> dict:
    state = project.shell_json(f"CHAT_IDS = {json.dumps(json.dumps(chat_ids))}\n" + CHECK_SCRIPT)
    state["messages"] = {int(chat_id): ids for chat_id, ids in state["messages"].items()}
    return state


class Sends:
    """Messages sent over HTTP as the page sends them, with what each answer was."""

    def __init__(self):
        self.statuses: Counter[str] = Counter()
        self.ids: dict[int, list[int]] = defaultdict(list)  # chat -> ids answered with 200
        self.sent_at: dict[int, float] = {}
        self.seconds: list[float] = []

    async def send(self, server: Server, chat_id: int, member: dict, body: str) -> int | None:
        started = time.monotonic()
        try:
            status, text = await asyncio.to_thread(
                http_request, server.port, "POST", f"/chat/{chat_id}/send/", member, f"body={body}", REQUEST_TIMEOUT
            )
        except OSError as exc:
            self.statuses[type(exc).__name__] += 1
            return None
        self.seconds.append(time.monotonic() - started)
        self.statuses[str(status)] += 1
        if status != 200:
            return None
        message_id = int(MESSAGE_ID.search(text).group(1))
        self.ids[chat_id].append(message_id)
        self.sent_at[message_id] = started
        return message_id

    @property
    def ok(self) -> int:
        return self.statuses["200"]

    def last_id(self, chat_id: int) -> int:
        return max(self.ids[chat_id], default=0)


async def with_threads(scenario) -> dict:
    """Run a scenario with enough threads for every blocking HTTP request at once."""
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=200))
    return await scenario


async def all_connected(clients: list[RoomClient], timeout: float = 20) -> None:
    await asyncio.wait_for(asyncio.gather(*(client.connected.wait() for client in clients)), timeout)


async def settle(clients: list[RoomClient], sends: Sends) -> None:
    """Give every client the time to show the last message of its chat (no gap before it)."""
    await asyncio.gather(*(client.wait_for(sends.last_id(client.chat_id), SETTLE_TIMEOUT) for client in clients))


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 1)


def tally(name: str, clients: list[RoomClient], sends: Sends, state: dict, **extra) -> dict:
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
        "sends": dict(sends.statuses),
        "saved": sum(len(ids) for ids in state["messages"].values()),
        "clients": len(clients),
        "deliveries_expected": expected,
        "delivered": sum(len(client.shown) for client in clients),
        "by_frame": counts["frame"],
        "by_catch_up": counts["catch_up"],
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


def assert_exactly_once(clients: list[RoomClient], sends: Sends, state: dict) -> None:
    for chat_id, ids in state["messages"].items():
        assert sorted(sends.ids[chat_id]) == ids, f"chat {chat_id}: rows differ from the sends answered 200"
    for client in clients:
        expected = state["messages"][client.chat_id]
        assert sorted(client.shown) == expected, (
            f"user {client.member['user_id']} in chat {client.chat_id} showed {len(client.shown)} of "
            f"{len(expected)}; missing {sorted(set(expected) - set(client.shown))[:20]}; {dict(client.counts)}; "
            f"server logs in {SERVER_LOGS}"
        )
        assert client.final_close_code is None
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
    clients = [RoomClient(member=member, chat_id=chat_id, servers=servers) for member in members]
    for number, client in enumerate(clients):
        client.start(server_index=number % 2)
    sends = Sends()
    try:
        await all_connected(clients)
        for number in range(3):
            await sends.send(servers[number % 2], chat_id, members[number], f"before+{number}")
        await settle(clients, sends)

        redis.stop()
        down_at = time.monotonic()
        for number in range(6):  # both servers, while their channel layer is gone
            await sends.send(servers[number % 2], chat_id, members[number % len(members)], f"during+{number}")
            await asyncio.sleep(0.2)
        outage_ok = sends.ok - 3
        drops_deadline = time.monotonic() + 10
        while any(client.counts["drop"] == 0 for client in clients) and time.monotonic() < drops_deadline:
            await asyncio.sleep(0.1)
        dropped = sum(client.counts["drop"] > 0 for client in clients)
        redis.start()
        outage_seconds = time.monotonic() - down_at

        await all_connected(clients)
        for number in range(3):
            await sends.send(servers[number % 2], chat_id, members[-1 - number], f"after+{number}")
        await settle(clients, sends)
    finally:
        for client in clients:
            await client.stop()
    extra = {"outage_seconds": round(outage_seconds, 1), "sent_during_outage_200": outage_ok}
    return {"clients": clients, "sends": sends, "dropped": dropped, "extra": extra}


def test_redis_outage_keeps_sends_saving_and_clients_catch_up(project, redis_server, request):
    """Sends answer 200 while Redis is down; sockets drop, reconnect when it is back, and catch up."""
    redis_server.ensure_running()
    servers = serve(project, "redis_outage", request)
    request.addfinalizer(redis_server.ensure_running)
    seeded = seed(project, prefix="outage", users=4)
    result = asyncio.run(with_threads(redis_outage(servers, seeded, redis_server)))
    clients, sends = result["clients"], result["sends"]
    state = database_state(project, [seeded["group_id"]])
    tally("redis_outage", clients, sends, state, **result["extra"])
    assert dict(sends.statuses) == {"200": 12}, "every send answers 200 with Redis down or up"
    assert result["dropped"] == len(clients), "every socket notices that its channel layer is gone"
    assert all(client.counts["open"] >= 2 for client in clients), "every socket reconnects once Redis is back"
    assert_exactly_once(clients, sends, state)


# 2. A server process is killed mid-conversation


async def server_killed(servers: list[Server], seeded: dict) -> dict:
    chat_id, members = seeded["group_id"], seeded["members"]
    victim, survivor = servers
    clients = []
    for number, member in enumerate(members):
        own = [victim, survivor] if number % 2 == 0 else [survivor, victim]
        clients.append(RoomClient(member=member, chat_id=chat_id, servers=own, failover=True))
        clients[-1].start()
    sends = Sends()
    targets = [victim, survivor]

    async def converse(stop: asyncio.Event) -> None:
        number = 0
        while not stop.is_set():
            await sends.send(random.choice(targets), chat_id, members[number % len(members)], f"message+{number}")
            number += 1
            await asyncio.sleep(0.05)

    stop = asyncio.Event()
    try:
        await all_connected(clients)
        conversation = asyncio.get_running_loop().create_task(converse(stop))
        await asyncio.sleep(1.5)
        targets.remove(victim)  # the load balancer stops sending there; then it dies
        await asyncio.sleep(0.3)
        victim.kill()
        await asyncio.sleep(2)
        stop.set()
        await conversation
        await settle(clients, sends)
    finally:
        for client in clients:
            await client.stop()
    moved = sum(client.server is survivor and client.counts["open"] > 1 for client in clients[::2])
    return {"clients": clients, "sends": sends, "moved": moved}


def test_killed_server_clients_move_to_the_other_and_miss_nothing(project, redis_server, request):
    """SIGKILL one of two servers mid-conversation: its clients reconnect to the other and catch up."""
    redis_server.ensure_running()
    servers = serve(project, "server_killed", request)
    seeded = seed(project, prefix="killed", users=6)
    result = asyncio.run(with_threads(server_killed(servers, seeded)))
    clients, sends = result["clients"], result["sends"]
    state = database_state(project, [seeded["group_id"]])
    tally("server_killed", clients, sends, state, moved_to_survivor=result["moved"])
    assert set(sends.statuses) == {"200"}, sends.statuses
    assert result["moved"] == len(clients[::2]), "every client of the killed server reconnects to the other"
    assert_exactly_once(clients, sends, state)


# 3. Fifty users send to one group and to direct chats for 30 s, over two servers


async def load(servers: list[Server], seeded: dict) -> dict:
    group_id, direct_ids, members = seeded["group_id"], seeded["direct_ids"], seeded["members"]
    clients = []
    for number, member in enumerate(members):
        for chat_id in (group_id, direct_ids[number // 2]):
            clients.append(RoomClient(member=member, chat_id=chat_id, servers=servers))
            clients[-1].start(server_index=len(clients) % 2)
    sends = Sends()

    async def user(number: int, until: float) -> None:
        member, direct_id = members[number], direct_ids[number // 2]
        sent = 0
        await asyncio.sleep(random.uniform(0, 1))
        while time.monotonic() < until:
            chat_id = group_id if sent % GROUP_EVERY == 0 else direct_id
            await sends.send(servers[(number + sent) % 2], chat_id, member, f"from+{number}+no+{sent}")
            sent += 1
            await asyncio.sleep(random.uniform(*THINK_SECONDS))

    try:
        await all_connected(clients, timeout=60)
        started = time.monotonic()
        await asyncio.gather(*(user(number, started + LOAD_SECONDS) for number in range(len(members))))
        sending_seconds = time.monotonic() - started
        await settle(clients, sends)
    finally:
        for client in clients:
            await client.stop()
    return {"clients": clients, "sends": sends, "sending_seconds": sending_seconds}


def test_fifty_users_for_thirty_seconds_lose_nothing_and_count_unread_exactly(project, redis_server, request):
    """50 users, 100 open rooms on two servers, no rate limits: every message once, unread counts exact."""
    redis_server.ensure_running()
    unlimited = project.with_env(CHAT_RATE_LIMITS="send=,email_lookup=,new_chat=,new_group=")
    servers = serve(unlimited, "load", request)
    seeded = seed(project, prefix="load", users=LOAD_USERS, directs=True)
    result = asyncio.run(with_threads(load(servers, seeded)))
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
        sends_per_second=round(sends.ok / seconds, 1),
        unread_total=state["unread_total"],
    )
    assert set(sends.statuses) == {"200"}, sends.statuses
    assert_exactly_once(clients, sends, state)
