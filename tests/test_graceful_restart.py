"""A rolling restart under load: SIGTERM one production process, start it again, then the other.

The redis + postgresql project is served by two processes of its production server
(gunicorn with the uvicorn worker, config/gunicorn.py, as `make serve-prod` and
deploy/start.sh run it) on two ports. Fifty users chat as in test_faults.py's load: a
group of all of them and a direct chat per pair, each member a room client (the generated
project's benchmarks/room_client.py) per chat, half of them on each port; clients may
connect to either port, moving to the other when theirs restarts (1012) or refuses them,
as a proxy's upstream list would send them.

While they send, each process in turn gets SIGTERM, exits, and is started again on its
port. Every send must be answered (acked, or a retryable answer the client retried until
stored), every message stored once and shown once by every member after catch-up, the
sockets of each stopped process must have seen 1012 and be open again within
RECONNECT_BOUND_SECONDS of it going down, and the stopped process must exit on its own (no
kill) with no error in its log. Figures are printed (`pytest -s`) and written to test-artifacts/faults.json
("rolling_restart").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from types import SimpleNamespace

import pytest
from baking import TEMPLATE_DIR
from live_servers import (
    Project,
    Server,
    bake_project,
    free_port,
    http_request,
    open_socket,
    require_room_client,
    start_servers,
    tooling,
)
from test_faults import (
    GROUP_EVERY,
    LOAD_USERS,
    THINK_SECONDS,
    RedisProcess,
    Sends,
    all_connected,
    assert_exactly_once,
    database_state,
    new_client,
    redis_server,  # noqa: F401 - a Redis of this module's own: no other test's events reach its rooms
    seed,
    settle,
    stop_all,
    tally,
)

pytestmark = pytest.mark.slow

SERVER_LOGS = TEMPLATE_DIR / "test-artifacts" / "graceful_restart"
SERVICE_RESTART = 1012
RECONNECT_BOUND_SECONDS = 10  # every socket of a stopped process is open again within this
EXIT_BOUND_SECONDS = 30  # config/gunicorn.py: GRACEFUL_TIMEOUT (10 s) + 10 s before gunicorn kills its worker
SECONDS_BETWEEN_RESTARTS = 5  # sending on both processes before the next one stops
UNLIMITED = "send=,email_lookup=,new_chat=,new_group="


@pytest.fixture(scope="module")
def project(cookies_session, redis_server: RedisProcess, postgres_url: str, request) -> Project:  # noqa: F811
    require_room_client()
    redis_url = redis_server.url
    baked = bake_project(cookies_session, request, postgres_url=postgres_url, redis_url=redis_url, name="restart")
    return baked.with_env(CHAT_RATE_LIMITS=UNLIMITED)


class RollingRestart:
    """The two processes, restarted one after the other; what each restart did to its clients."""

    def __init__(self, project: Project, servers: list[Server], request):
        self.project, self.servers, self.request = project, servers, request
        self.restarts: list[dict] = []

    async def restart(self, number: int, clients: list) -> None:
        old = self.servers[number]
        on_it = [client for client in clients if client.server == old.base_url and client.is_open()]
        down_at = time.monotonic()
        old.terminate()
        exit_code = await asyncio.to_thread(old.process.wait, EXIT_BOUND_SECONDS)
        exited_s = time.monotonic() - down_at
        old.stop()  # closes its log
        tracebacks = old.log_path.read_text(errors="replace").count("Traceback")
        new = Server(
            log_path=SERVER_LOGS / f"server{number + 1}-restarted.log",
            env=self.project.env,
            project_dir=self.project.path,
            python=self.project.python,
            port=old.port,
            server="gunicorn",
        )
        self.request.addfinalizer(new.stop)
        await asyncio.to_thread(new.wait_ready)
        self.servers[number] = new
        back = await asyncio.gather(*(reopened_after(client, down_at) for client in on_it))
        closed = [seconds_after(client.closed_at, down_at) for client in on_it]
        self.restarts.append(
            {
                "server": number + 1,
                "clients": on_it,
                "exit_code": exit_code,
                "exited_s": round(exited_s, 2),
                "tracebacks": tracebacks,
                "back_s": back,  # per client: seconds from SIGTERM to its socket's next open (None: never)
                "closed_s": closed,  # per client: seconds from SIGTERM to its socket's close
                "saw_1012": sum(client.close_codes[SERVICE_RESTART] > 0 for client in on_it),
            }
        )


def seconds_after(times: list[float], start: float) -> float | None:
    later = [at for at in times if at > start]
    return round(min(later) - start, 2) if later else None


async def reopened_after(client, down_at: float) -> float | None:
    """Seconds from `down_at` until the client's socket opened again (waits up to twice the bound)."""
    deadline = down_at + 2 * RECONNECT_BOUND_SECONDS
    while time.monotonic() < deadline:
        reopened = seconds_after(client.opened_at, down_at)
        if reopened is not None:
            return reopened
        await asyncio.sleep(0.05)
    return None


async def rolling_restart(restarts: RollingRestart, seeded: dict) -> dict:
    servers = restarts.servers
    group_id, direct_ids, members = seeded["group_id"], seeded["direct_ids"], seeded["members"]
    clients, rooms = [], []
    for number, member in enumerate(members):
        pair = [new_client(member, chat_id, servers, failover=True) for chat_id in (group_id, direct_ids[number // 2])]
        for client in pair:
            clients.append(client)
            client.start(server_index=len(clients) % 2)
        rooms.append(pair)
    sends = Sends()
    stop = asyncio.Event()

    async def user(number: int) -> None:
        group_room, direct_room = rooms[number]
        sent = 0
        await asyncio.sleep(random.uniform(0, 1))
        while not stop.is_set():
            await sends.send(group_room if sent % GROUP_EVERY == 0 else direct_room, f"from {number} no {sent}")
            sent += 1
            await asyncio.sleep(random.uniform(*THINK_SECONDS))

    try:
        await all_connected(clients, timeout=60)
        started = time.monotonic()
        users = asyncio.gather(*(user(number) for number in range(len(members))))
        for number in range(len(servers)):
            await asyncio.sleep(SECONDS_BETWEEN_RESTARTS)
            await restarts.restart(number, clients)
        await asyncio.sleep(SECONDS_BETWEEN_RESTARTS)
        stop.set()
        await users
        sending_seconds = time.monotonic() - started
        await settle(clients, sends)
    finally:
        stop.set()
        await stop_all(clients)
    return {"clients": clients, "sends": sends, "sending_seconds": sending_seconds}


def test_rolling_restart_under_load_answers_every_send_and_loses_nothing(project, request):
    """SIGTERM each of two production processes in turn under 50 users' load: 1012 to its sockets,
    which are back within 10 s on the other process; every send answered, nothing lost or doubled."""
    shutil.rmtree(SERVER_LOGS, ignore_errors=True)
    SERVER_LOGS.mkdir(parents=True)
    servers = start_servers(project, SERVER_LOGS, 2, request, server="gunicorn")
    restarts = RollingRestart(project, servers, request)
    seeded = seed(project, prefix="restart", users=LOAD_USERS, directs=True)
    result = asyncio.run(rolling_restart(restarts, seeded))
    clients, sends = result["clients"], result["sends"]
    state = database_state(project, [seeded["group_id"], *seeded["direct_ids"]])
    back = [seconds for restart in restarts.restarts for seconds in restart["back_s"]]
    tally(
        "rolling_restart",
        clients,
        sends,
        state,
        users=LOAD_USERS,
        seconds=round(result["sending_seconds"], 1),
        sends_answered=len(sends.answers),
        restarts=[
            {
                "server": restart["server"],
                "sockets": len(restart["clients"]),
                "saw_1012": restart["saw_1012"],
                "exit_code": restart["exit_code"],
                "exited_s": restart["exited_s"],
                "tracebacks": restart["tracebacks"],
                "closed_max_s": max((s for s in restart["closed_s"] if s is not None), default=None),
                "back_max_s": max((s for s in restart["back_s"] if s is not None), default=None),
            }
            for restart in restarts.restarts
        ],
        back_s={"p50": median(back), "max": max((s for s in back if s is not None), default=None)},
        load_average=os.getloadavg()[1],  # of the machine over the last 5 minutes: the figures' context
    )
    assert_exactly_once(clients, sends, state)
    for restart in restarts.restarts:
        assert restart["clients"], f"server {restart['server']} had no sockets when it was stopped"
        assert restart["exit_code"] == 0, f"server {restart['server']} exited with {restart['exit_code']}"
        assert restart["tracebacks"] == 0, f"errors in {SERVER_LOGS}/server{restart['server']}.log"
        assert restart["saw_1012"] == len(restart["clients"]), "every socket of a stopping process is closed with 1012"
        late = [s for s in restart["back_s"] if s is None or s > RECONNECT_BOUND_SECONDS]
        assert not late, f"server {restart['server']}: sockets back after {late} s (bound {RECONNECT_BOUND_SECONDS} s)"


async def close_code(socket) -> int | None:
    """The socket's close code once the server closes it (None: still open after 10 s)."""

    async def until_closed() -> None:
        with contextlib.suppress(Exception):  # closed with an error code: the code is what this is about
            async for _ in socket:
                pass

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(until_closed(), 10)
    return socket.close_code


def kill_group(process: subprocess.Popen) -> None:
    """gunicorn and its worker, whatever state the test left them in (a killed arbiter orphans its worker)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def median(values: list[float | None]) -> float | None:
    known = sorted(value for value in values if value is not None)
    return known[len(known) // 2] if known else None


def test_start_script_serves_and_on_sigterm_closes_sockets_with_1012_and_exits(project, request, tmp_path):
    """deploy/start.sh (the command of `make serve-prod` and the deployment) serves pages and
    sockets on $PORT, without a log line for each; SIGTERM closes its sockets with 1012 and it
    exits by itself with status 0."""
    seeded = seed(project, prefix="script", users=2)
    member, room = seeded["members"][0], f"/chat/{seeded['group_id']}/"
    port = free_port()
    with (tmp_path / "start.log").open("wb") as log:
        process = subprocess.Popen(
            [str(project.path / "deploy" / "start.sh")],
            env={**project.env, "PORT": str(port), "VENV": str(project.venv), "LOG_LEVEL": "INFO"},
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    request.addfinalizer(lambda: kill_group(process))
    tooling.wait_for_port(port, 60, process=process)
    assert http_request(port, "GET", f"{room}messages/", member)[0] == 200  # a page fragment (no static files)

    async def frames_over_the_limits() -> tuple[str, int | None]:
        """Over CHAT_WS_MAX_FRAME_BYTES: an error frame; over 1 MiB (ws_max_size): not read, 1009."""
        socket = await open_socket(SimpleNamespace(port=port), f"/ws{room}", member)
        await socket.send(json.dumps({"type": "ping", "pad": "x" * 60_000}))
        while (frame := json.loads(await asyncio.wait_for(socket.recv(), 10)))["type"] != "error":
            pass
        await socket.send("x" * (1024 * 1024 + 1))
        return frame["code"], await close_code(socket)

    async def text_that_is_not_utf8() -> int | None:
        """Closed with 1007; logged as one line, without a traceback (checked below)."""
        socket = await open_socket(SimpleNamespace(port=port), f"/ws{room}", member)
        await socket.send(b"\xed\xa0\x80", text=True)
        return await close_code(socket)

    async def extensions_offered_and_agreed() -> tuple[str, str | None]:
        """Browsers offer permessage-deflate, as the websockets client does: it is declined."""
        socket = await open_socket(SimpleNamespace(port=port), f"/ws{room}", member)
        await socket.close()
        header = "Sec-WebSocket-Extensions"
        return socket.request.headers[header], socket.response.headers.get(header)

    offered, agreed = asyncio.run(extensions_offered_and_agreed())
    assert "permessage-deflate" in offered and agreed is None
    assert asyncio.run(frames_over_the_limits()) == ("frame_too_large", 1009)
    assert asyncio.run(text_that_is_not_utf8()) == 1007

    async def close_code_on_sigterm() -> int | None:
        socket = await open_socket(SimpleNamespace(port=port), f"/ws{room}", member)
        process.send_signal(signal.SIGTERM)
        return await close_code(socket)

    assert asyncio.run(close_code_on_sigterm()) == SERVICE_RESTART
    assert process.wait(timeout=EXIT_BOUND_SECONDS) == 0, (tmp_path / "start.log").read_text()[-3000:]
    # Without ACCESS_LOG, neither the request nor the socket got a line of its own (a restart
    # reopens thousands at once); the server's own messages are there.
    log = (tmp_path / "start.log").read_text()
    assert "Booting worker" in log and "Shutting down" in log
    assert "Invalid UTF-8 sequence" in log and "Traceback" not in log
    assert f'"WebSocket /ws{room}' not in log and "connection open" not in log and f'"GET {room}' not in log
