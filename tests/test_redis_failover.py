"""Redis failover under load: Sentinel promotes the replica, and the app follows without a restart.

A primary, a replica and three Sentinels (`redis-server --sentinel`), each on a free port
with its config in a temporary folder, watch over the Redis of a redis + postgresql bake
served by two daphne processes configured with REDIS_SENTINELS (and a REDIS_URL that
points nowhere, so nothing reaches Redis but through them). Members of one group sit on
both processes; most send over their room sockets with the page's retries (the generated
benchmarks/room_client.py), two only read. A second, quiet group gets one message, sent
right after the fault, and none after it. Mid-conversation the primary is SIGKILLed, or
SIGSTOPped (it keeps its connections and answers nothing, as behind a partition). Every
send must be answered (acked, 200, or a retryable answer the client waits out: never a 500
or a refusal), every member of both rooms must end with every message exactly once
(catch-up allowed), and every message typed must be one row. Figures go to stdout
(`pytest -s`) and test-artifacts/redis_failover.json.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from baking import TEMPLATE_DIR
from conftest import unavailable
from live_servers import HOST, Project, bake_project, free_port, start_servers
from test_faults import Sends, all_connected, assert_exactly_once, database_state, new_client, seed, settle, stop_all

pytestmark = pytest.mark.slow

ARTIFACT = TEMPLATE_DIR / "test-artifacts" / "redis_failover.json"
SERVER_LOGS = TEMPLATE_DIR / "test-artifacts" / "redis_failover"
MASTER_NAME = "chat-primary"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
MEMBERS = 8
READERS = 2  # of them, one per server, never send: only frames or a reconnect's catch-up reach them
# A second room, quiet: one message sent while the primary is gone, and none after it.
QUIET_MEMBERS = 3
BEFORE_KILL_SECONDS = 3  # conversation before the primary dies
AFTER_PROMOTION_SECONDS = 6  # and after the replica took over
PROMOTION_TIMEOUT = 30
THINK_SECONDS = (0.2, 0.6)  # between one member's sends
# The send rate is far above what the members send, but on: every send counts in the cache.
RATE_LIMITS = "send=1000/m,email_lookup=,new_chat=,new_group="


# A send answered later than this, or only on a retry, was troubled by the failover (on a
# loaded CI machine sends take up to about a second anyway).
TROUBLED_SEND_SECONDS = 2.0


class TimedSends(Sends):
    """Sends, each with when it was typed and when it was answered."""

    def __init__(self):
        super().__init__()
        self.spans: list[tuple[float, float, object]] = []  # (typed, answered, room_client.Sent)

    async def send(self, client, body: str):
        typed = time.monotonic()
        answer = await super().send(client, body)
        self.spans.append((typed, time.monotonic(), answer))
        return answer

    def troubled_after(self, moment: float) -> list[tuple[float, float, object]]:
        return [
            (typed, answered, answer)
            for typed, answered, answer in self.spans
            if answered >= moment and (len(answer.tries) > 1 or answered - typed > TROUBLED_SEND_SECONDS)
        ]


class RedisNode:
    """One redis-server (a data node or a Sentinel) of the test's own."""

    def __init__(self, workdir: Path, name: str, config: str):
        self.name, self.port = name, free_port()
        self.workdir = workdir / name
        self.workdir.mkdir()
        self.config = self.workdir / "redis.conf"  # Sentinels rewrite theirs as they learn
        self.config.write_text(f'bind {HOST}\nport {self.port}\ndir {self.workdir}\nsave ""\n{config}')
        self.process: subprocess.Popen | None = None

    def start(self, *arguments: str) -> None:
        with (self.workdir / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", str(self.config), *arguments], stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(lambda: self.ask("PING") == "PONG", f"{self.name} did not answer PING", timeout=10)

    def ask(self, *command: str) -> str:
        """One command through redis-cli; its raw answer ("" if the node is unreachable)."""
        result = subprocess.run(
            ["redis-cli", "-h", HOST, "-p", str(self.port), "--raw", *command],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as behind a network partition."""
        self.process.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL: no goodbye to replicas or clients, as when the machine dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_until(condition, failure: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(failure, pytrace=False)


class SentinelCluster:
    """A primary, its replica and three Sentinels with a quorum of two."""

    def __init__(self, workdir: Path):
        self.primary = RedisNode(workdir, "primary", "appendonly no\n")
        self.replica = RedisNode(workdir, "replica", f"appendonly no\nreplicaof {HOST} {self.primary.port}\n")
        monitor = (
            f"sentinel monitor {MASTER_NAME} {HOST} {self.primary.port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self.sentinels = [RedisNode(workdir, f"sentinel{number}", monitor) for number in range(3)]

    @property
    def nodes(self) -> list[RedisNode]:
        return [self.primary, self.replica, *self.sentinels]

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start("--sentinel")
        wait_until(self.ready, "the Sentinels never saw the replica and each other", timeout=60)

    def ready(self) -> bool:
        """The replica is in sync, and every Sentinel knows it and the two other Sentinels
        (a failover needs a majority of them to agree on a leader)."""
        if "master_link_status:up" not in self.replica.ask("INFO", "replication"):
            return False
        for sentinel in self.sentinels:
            fields = sentinel.ask("SENTINEL", "MASTER", MASTER_NAME).splitlines()
            known = dict(zip(fields[::2], fields[1::2], strict=False))
            if known.get("num-slaves") != "1" or known.get("num-other-sentinels") != "2":
                return False
        return True

    def master_port(self) -> int | None:
        """The primary's port as the Sentinels now name it (None while none answers)."""
        for sentinel in self.sentinels:
            answer = sentinel.ask("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME).splitlines()
            if len(answer) == 2:
                return int(answer[1])
        return None

    def environment(self) -> dict[str, str]:
        return {
            "REDIS_SENTINELS": ",".join(f"{HOST}:{sentinel.port}" for sentinel in self.sentinels),
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
        }

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def cluster(tmp_path_factory):
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        unavailable("redis-server and redis-cli are not installed (the failover test starts its own)")
    cluster = SentinelCluster(tmp_path_factory.mktemp("sentinel"))
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def project(cookies_session, postgres_url: str, request) -> Project:
    nowhere = f"redis://{HOST}:{free_port()}/0"  # REDIS_URL leads nowhere: only the Sentinels lead to Redis
    return bake_project(cookies_session, request, postgres_url=postgres_url, redis_url=nowhere, name="failover")


async def watch_promotion(cluster: SentinelCluster, killed_at: float) -> float:
    """Seconds from the kill until the Sentinels name the replica as the primary."""
    deadline = killed_at + PROMOTION_TIMEOUT
    while time.monotonic() < deadline:
        if await asyncio.to_thread(cluster.master_port) == cluster.replica.port:
            return time.monotonic() - killed_at
        await asyncio.sleep(0.1)
    pytest.fail(f"the Sentinels did not promote the replica within {PROMOTION_TIMEOUT} s", pytrace=False)


def room_clients(servers, seeded: dict) -> list:
    """A room page per member, alternately on the two servers."""
    clients = [new_client(member, seeded["group_id"], servers) for member in seeded["members"]]
    for number, client in enumerate(clients):
        client.start(server_index=number % 2)
    return clients


async def failover_under_load(servers, seeded: dict, quiet_seeded: dict, cluster: SentinelCluster, fault: str) -> dict:
    clients, quiet = room_clients(servers, seeded), room_clients(servers, quiet_seeded)
    sends = TimedSends()
    stop = asyncio.Event()

    async def member(client) -> None:
        sent = 0
        while not stop.is_set():
            await sends.send(client, f"from {client.member.user_id} no {sent}")
            sent += 1
            await asyncio.sleep(random.uniform(*THINK_SECONDS))  # noqa: S311 - not security

    try:
        await all_connected([*clients, *quiet])
        conversation = asyncio.gather(*(member(client) for client in clients[READERS:]))
        await asyncio.sleep(BEFORE_KILL_SECONDS)
        await asyncio.to_thread(getattr(cluster.primary, fault))
        killed_at = time.monotonic()
        # The quiet room's one message: no later one will show its readers a gap.
        last_word = asyncio.ensure_future(sends.send(quiet[0], "sent while the primary is gone"))
        promoted_after = await watch_promotion(cluster, killed_at)
        await asyncio.sleep(AFTER_PROMOTION_SECONDS)
        stop.set()
        await asyncio.gather(conversation, last_word)
        await all_connected([*clients, *quiet])
        await settle([*clients, *quiet], sends)
    finally:
        stop.set()
        await stop_all([*clients, *quiet])
    return {
        "clients": clients,
        "quiet": quiet,
        "sends": sends,
        "killed_at": killed_at,
        "promoted_after": promoted_after,
    }


def slowest_delivery(clients: list, sends: Sends) -> float:
    """The longest any of these clients waited to show a message after it was typed."""
    waits = [
        shown_at - sends.sent_at[message_id]
        for client in clients
        for message_id, shown_at in client.shown_at.items()
        if message_id in sends.sent_at
    ]
    return round(max(waits), 1)


def figures(name: str, result: dict, state: dict) -> dict:
    """Sends answered and how, time to recover, deliveries; printed and kept as an artifact."""
    clients, sends, killed_at = result["clients"], result["sends"], result["killed_at"]
    everyone = [*clients, *result["quiet"]]
    quiet_id = max(state["messages"][result["quiet"][0].chat_id], default=None)
    counts = sum((client.counts for client in everyone), Counter())
    # Recovered: from then on every send was answered at once, on its first try.
    troubled = sends.troubled_after(killed_at)
    recovered_at = max((answered for _, answered, _ in troubled), default=killed_at)
    expected = sum(len(state["messages"][client.chat_id]) for client in everyone)
    lost = sum(len(set(state["messages"][client.chat_id]) - set(client.shown)) for client in everyone)
    report = {
        "sends_answered": len(sends.answers),
        "sends": dict(sends.outcomes),
        "sends_retried": sends.retried,
        "sends_troubled_by_failover": len(troubled),
        "retries": {key: value for key, value in counts.items() if key.startswith("retry_") or key == "ack_timeout"},
        "promoted_after_seconds": round(result["promoted_after"], 1),
        "recovered_after_seconds": round(recovered_at - killed_at, 1),
        "longest_send_seconds": round(max(sends.seconds), 1),
        "sockets_dropped": counts["drop"],
        "deliveries_expected": expected,
        "by_frame": counts["frame"],
        "by_catch_up": counts["catch_up"],
        "readers_slowest_delivery_seconds": slowest_delivery(clients[:READERS], sends),
        # How the quiet room's readers came to show its one message: by frame, or by catch-up.
        "quiet_room_readers_by": dict(
            Counter(reader.shown_via.get(quiet_id, "missing") for reader in result["quiet"][1:])
        ),
        "lost": lost,
        "duplicates_shown": sum(len(client.shown) - len(set(client.shown)) for client in everyone),
    }
    print(f"\n[redis failover] {name}: {json.dumps(report)}")
    ARTIFACT.parent.mkdir(exist_ok=True)
    previous = json.loads(ARTIFACT.read_text()) if ARTIFACT.is_file() else {}
    ARTIFACT.write_text(json.dumps({**previous, name: report}, indent=2) + "\n")
    return report


@pytest.mark.parametrize("fault", ["kill", "freeze"])
def test_primary_lost_under_load_sentinel_promotes_and_every_message_arrives_once(project, cluster, fault, request):
    """The Redis primary dies (SIGKILL) or stops answering (SIGSTOP, a partition) mid-conversation:
    the servers follow Sentinel to the promoted replica without a restart; every send is answered
    (retries allowed, never a 500); nothing is lost or shown twice."""
    logs = SERVER_LOGS / fault
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    served = project.with_env(**cluster.environment(), CHAT_RATE_LIMITS=RATE_LIMITS)
    servers = start_servers(served, logs, 2, request)
    seeded = seed(served, prefix=f"{fault}-", users=MEMBERS)
    quiet_seeded = seed(served, prefix=f"{fault}-quiet-", users=QUIET_MEMBERS)
    result = asyncio.run(failover_under_load(servers, seeded, quiet_seeded, cluster, fault))
    state = database_state(served, [seeded["group_id"], quiet_seeded["group_id"]])
    report = figures(fault, result, state)
    assert all(server.process.poll() is None for server in servers), "no server restarted or died"
    assert "retry_500" not in report["retries"], f"a send was answered 500 (see {logs})"
    assert_exactly_once([*result["clients"], *result["quiet"]], result["sends"], state)
    assert report["lost"] == 0 and report["duplicates_shown"] == 0
