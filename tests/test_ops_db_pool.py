"""500 open sockets and a burst of 200 requests stay within the database pool.

One daphne process of a redis + postgresql bake, on a PostgreSQL of this module's own
with few connection slots (MAX_CONNECTIONS, SUPERUSER_RESERVED of them for the
superuser): the app's role may open MAX_CONNECTIONS - SUPERUSER_RESERVED at most, more
than the pool's POOL_MAX_SIZE and far fewer than the sockets and requests. 100 members
open 500 sockets (three rooms and two inboxes each), then 200 requests arrive at once
(sends, room pages and inbox pages). Meanwhile pg_stat_activity is sampled: the app's
connections never exceed the pool's size, every request is answered 200 (a send answered
busy, 503 with Retry-After, as past capacity, is sent again with its client id after it,
as the page does), every socket stays open, and neither the app nor PostgreSQL logs "too
many connections".
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from urllib.parse import urlencode, urlsplit

import pytest
from baking import TEMPLATE_DIR
from live_servers import COOKIE_FOR_SCRIPT, Project, Server, bake_project, open_socket, require_room_client
from live_servers import tooling as project_tooling
from private_services import PostgresProcess

pytestmark = pytest.mark.slow

MAX_CONNECTIONS = 12
SUPERUSER_RESERVED = 3
POOL_MIN_SIZE, POOL_MAX_SIZE = 2, 4
MEMBERS = 100  # 50 direct chats
ROOMS_PER_MEMBER, INBOXES_PER_MEMBER = 3, 2  # 500 sockets
SENDS, ROOM_PAGES, INBOX_PAGES = 100, 50, 50  # 200 requests at once
CONNECTS_AT_ONCE = 10  # handshakes in flight: daphne drops one its app has not accepted within 5 s
# Each request runs on a thread of its own and waits its turn for one of the pool's
# connections; on a loaded CI machine 200 of them may take a minute to drain.
POOL_TIMEOUT = 90
REQUEST_TIMEOUT = 180
BUSY_RETRIES = 60  # a send answered busy is sent again after its Retry-After, this many times at most
SAMPLE_SECONDS = 0.05
SERVER_LOG = TEMPLATE_DIR / "test-artifacts" / "ops-db-pool" / "server.log"  # kept after the run

SEED_SCRIPT = (
    COOKIE_FOR_SCRIPT
    + """
from chat import services

User = get_user_model()
users = [User.objects.create_user(username=f"pool{n:03d}", email=f"pool{n:03d}@example.com") for n in range(N)]
chats = [services.get_or_create_direct_chat(user=users[i], other=users[i + 1])[0].pk for i in range(0, N, 2)]
print(json.dumps([dict(cookie_for(user), chat_id=chats[i // 2]) for i, user in enumerate(users)]))
"""
)


@pytest.fixture(scope="module")
def postgres_server():
    postgres = PostgresProcess(max_connections=MAX_CONNECTIONS, superuser_reserved_connections=SUPERUSER_RESERVED)
    yield postgres
    postgres.remove()


@pytest.fixture(scope="module")
def project(cookies_session, postgres_server, redis_url, request) -> Project:
    require_room_client()
    baked = bake_project(cookies_session, request, postgres_url=postgres_server.url, redis_url=redis_url, name="pool")
    return baked.with_env(
        DB_POOL_MIN_SIZE=str(POOL_MIN_SIZE), DB_POOL_MAX_SIZE=str(POOL_MAX_SIZE), DB_POOL_TIMEOUT=str(POOL_TIMEOUT)
    )


@pytest.fixture(scope="module")
def members(project: Project) -> list[dict]:
    return project.shell_json(f"N = {MEMBERS}\n" + SEED_SCRIPT)


@pytest.fixture(scope="module")
def server(project: Project, request) -> Server:
    project.run("manage.py", "collectstatic", "--no-input", "--verbosity", "0")  # pages link their static files
    shutil.rmtree(SERVER_LOG.parent, ignore_errors=True)
    SERVER_LOG.parent.mkdir(parents=True)
    server = Server(
        log_path=SERVER_LOG,
        env=project.env,
        project_dir=project.path,
        python=project.python,
    )
    request.addfinalizer(server.stop)
    server.wait_ready()
    return server


class ConnectionSampler(threading.Thread):
    """The app's connections to its database in pg_stat_activity, sampled until stopped."""

    def __init__(self, postgres: PostgresProcess, database: str):
        super().__init__(daemon=True)
        self.postgres, self.database = postgres, database
        self.samples: list[int] = []
        self.done = threading.Event()

    def connections(self) -> list[str]:
        """One line per connection: its state and its current or last query."""
        query = (
            "SELECT state || ' ' || left(query, 80) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            f"AND datname = '{self.database}' AND usename = 'chat'"
        )
        return self.postgres.psql(query).splitlines()

    def run(self) -> None:
        self.busiest: list[str] = []
        while not self.done.is_set():
            connections = self.connections()
            self.samples.append(len(connections))
            if len(connections) >= len(self.busiest):
                self.busiest = connections
            time.sleep(SAMPLE_SECONDS)

    def stop(self) -> list[int]:
        self.done.set()
        self.join(timeout=30)
        return self.samples


async def open_sockets(server: Server, members: list[dict]) -> list:
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)

    async def open_one(path: str, member: dict):
        async with gate:
            return await open_socket(server, path, member)

    rooms = [(f"/ws/chat/{m['chat_id']}/", m) for m in members for _ in range(ROOMS_PER_MEMBER)]
    inboxes = [("/ws/chat/inbox/", m) for m in members for _ in range(INBOXES_PER_MEMBER)]
    paths = rooms + inboxes
    return await asyncio.gather(*(open_one(path, member) for path, member in paths))


def burst(members: list[dict]) -> list[tuple[str, str, dict, str | None]]:
    """(method, path, member, form body) for every request of the burst."""
    sends = [
        ("POST", f"/chat/{m['chat_id']}/send/", m, urlencode({"body": f"burst {n}", "client_id": f"burst-{n}"}))
        for n, m in enumerate(members[:SENDS])
    ]
    rooms = [("GET", f"/chat/{m['chat_id']}/", m, None) for m in members[:ROOM_PAGES]]
    inboxes = [("GET", "/chat/", m, None) for m in members[-INBOX_PAGES:]]
    return sends + rooms + inboxes


async def fire(server: Server, requests: list) -> list[tuple[int, str]]:
    import httpx

    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=REQUEST_TIMEOUT, limits=limits) as client:

        async def one(method: str, path: str, member: dict, body: str | None) -> tuple[int, str]:
            headers = {"Cookie": member["cookie"], "X-CSRFToken": member["csrf"]}
            if body is not None:
                headers |= {"Content-Type": "application/x-www-form-urlencoded", "HX-Request": "true"}
            for _ in range(BUSY_RETRIES):
                try:
                    response = await client.request(method, path, content=body, headers=headers)
                except httpx.TransportError as exc:  # counted with the failed answers, beside the server's log
                    return 0, f"{method} {path}: {exc!r}"
                if not (body is not None and response.status_code == 503 and "Retry-After" in response.headers):
                    break
                await asyncio.sleep(float(response.headers["Retry-After"]))  # busy: sent again, as the page does
            return response.status_code, f"{method} {path}: {response.text[:300]}"

        return await asyncio.gather(*(one(*request) for request in requests))


async def sockets_and_burst(server: Server, members: list[dict]) -> tuple[list, list[tuple[int, str]], int]:
    sockets = await open_sockets(server, members)
    try:
        answers = await fire(server, burst(members))
        await asyncio.sleep(1)  # the sends' fan-out reaches the sockets
        still_open = [ws for ws in sockets if ws.close_code is None]
        return still_open, answers, len(sockets)
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


def test_sockets_and_a_request_burst_stay_within_the_pool(server, project, postgres_server, members):
    project_tooling.raise_open_files_limit()  # 500 sockets and 200 connections in this process
    database = urlsplit(project.env["DATABASE_URL"]).path.lstrip("/")
    sampler = ConnectionSampler(postgres_server, database)
    sampler.start()
    started = time.monotonic()
    try:
        still_open, answers, opened = asyncio.run(sockets_and_burst(server, members))
    finally:
        samples = sampler.stop()
    seconds = time.monotonic() - started
    print(
        f"\n[pool] {opened} sockets, {len(answers)} requests in {seconds:.1f} s; "
        f"app connections: max {max(samples)}, {len(samples)} samples (pool max {POOL_MAX_SIZE}); "
        f"at the busiest: {sampler.busiest}"
    )

    failed = [text for status, text in answers if status != 200]
    assert not failed, f"{len(failed)} requests failed, e.g. {failed[:3]}\n{server.output()}"
    assert opened == MEMBERS * (ROOMS_PER_MEMBER + INBOXES_PER_MEMBER)
    assert len(still_open) == opened, f"{opened - len(still_open)} sockets closed\n{server.output()}"
    assert max(samples) >= POOL_MIN_SIZE, "the sampler saw the app's connections"
    # Every connection of the process is the pool's: nothing to add to its size.
    assert max(samples) <= POOL_MAX_SIZE, samples
    app_log = server.output(lines=100_000)
    postgres_log = postgres_server.log.read_text()
    for log in (app_log, postgres_log):
        assert "too many connections" not in log
        assert "remaining connection slots are reserved" not in log
