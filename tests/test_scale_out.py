"""Two server processes on one Redis and one PostgreSQL behave as one chat.

Bakes a redis + postgresql + custom-user project, migrates a fresh database, starts two
daphne processes on different ports, puts member A on server 1 and member B on server 2,
sends over HTTP to server 1, and watches B's sockets on server 2.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import secrets
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from baking import clean_env, tail
from conftest import in_ci
from project_venvs import venv_for

try:
    from websockets.asyncio.client import connect as ws_connect
except ImportError:  # the template suite's requirements-dev.txt has it
    ws_connect = None

pytestmark = pytest.mark.slow

ANSWERS = {"channel_layer": "redis", "database": "postgresql", "use_custom_user_model": True}
HOST = "127.0.0.1"
TIMEOUT = 15
# Longer than channels_redis's 5 s blocking receive: idle sockets must outlive it.
IDLE_SECONDS = 7
MESSAGE_ID = re.compile(r'data-message-id="(\d+)"')

# Run in the baked project (its venv): three members of one group, a session and a CSRF
# secret each, as `login()` would leave them; prints what the test needs as JSON.
SEED_SCRIPT = """
import json
from importlib import import_module
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils.crypto import get_random_string
from chat import services

def cookie_for(user):
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    csrf = get_random_string(32)
    cookie = f"{settings.SESSION_COOKIE_NAME}={store.session_key}; {settings.CSRF_COOKIE_NAME}={csrf}"
    return {"cookie": cookie, "csrf": csrf, "user_id": user.pk}

User = get_user_model()
a, b, c = (User.objects.create_user(username=n, email=f"{n}@example.com", password="x-" + n) for n in "abc")
chat = services.create_group_chat(creator=a, name="Across servers", members=[b, c])
print(json.dumps({"chat_id": chat.pk, "a": cookie_for(a), "b": cookie_for(b), "c": cookie_for(c)}))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


class Project:
    """The baked project, run with its shared venv and this test's environment."""

    def __init__(self, path: Path, venv: Path, env: dict[str, str]):
        self.path, self.python, self.env = path, str(venv / "bin" / "python"), env

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.python, *args], cwd=self.path, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, tail(result.stdout + result.stderr)
        return result


class Server:
    """One daphne process; its output goes to a log file shown when a test fails."""

    def __init__(self, project: Project, log_path: Path):
        self.port, self.log_path = free_port(), log_path
        self.log = log_path.open("wb")
        command = [project.python, "-m", "daphne", "-b", HOST, "-p", str(self.port), "config.asgi:application"]
        self.process = subprocess.Popen(
            command, cwd=project.path, env=project.env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"daphne on port {self.port} did not start:\n{self.output()}", pytrace=False)

    def output(self) -> str:
        self.log.flush()
        return tail(self.log_path.read_text(errors="replace"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def websocket_client():
    if ws_connect is None:
        reason = "websockets is not installed (pip install -r requirements-dev.txt)"
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    return ws_connect


@pytest.fixture(scope="module")
def project(cookies_session, redis_url: str, postgres_url: str, request) -> Project:
    """The baked project on Redis and on a PostgreSQL database of its own, migrated."""
    result = cookies_session.bake(extra_context={"setup_environment": False, **ANSWERS})
    assert result.exit_code == 0, result.exception
    path = Path(result.project_path)
    name = f"chat_scale_out_{secrets.token_hex(4)}"
    env = clean_env(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=with_database(postgres_url, name),
        REDIS_URL=redis_url,
        SECRET_KEY=secrets.token_urlsafe(50),
        DEBUG="false",
        ALLOWED_HOSTS=HOST,
        SECURE_SSL_REDIRECT="false",
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
        LOG_LEVEL="WARNING",
    )
    baked = Project(path, venv_for(path), env)
    # The test suite's venv has no PostgreSQL driver; the project's has psycopg.
    admin = ["-c", "import psycopg, sys; psycopg.connect(sys.argv[1], autocommit=True).execute(sys.argv[2])"]
    baked.run(*admin, postgres_url, f'CREATE DATABASE "{name}"')
    request.addfinalizer(lambda: baked.run(*admin, postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    baked.run("manage.py", "migrate", "--no-input")
    return baked


@pytest.fixture(scope="module")
def seeded(project: Project) -> dict:
    return json.loads(project.run("manage.py", "shell", "-c", SEED_SCRIPT).stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def servers(project: Project, tmp_path_factory, request) -> tuple[Server, Server]:
    logs = tmp_path_factory.mktemp("daphne")
    started: list[Server] = []
    request.addfinalizer(lambda: [server.stop() for server in started])
    for number in (1, 2):
        started.append(Server(project, logs / f"server{number}.log"))
    for server in started:
        server.wait_ready()
    return started[0], started[1]


def post_message(server: Server, chat_id: int, member: dict, body: str) -> int:
    """Send like the page does (HTMX POST with the CSRF header); returns the new message's id."""
    connection = http.client.HTTPConnection(HOST, server.port, timeout=TIMEOUT)
    headers = {
        "Cookie": member["cookie"],
        "X-CSRFToken": member["csrf"],
        "HX-Request": "true",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    try:
        connection.request("POST", f"/chat/{chat_id}/send/", body=f"body={body}", headers=headers)
        response = connection.getresponse()
        text = response.read().decode()
    finally:
        connection.close()
    assert response.status == 200, f"send answered {response.status}:\n{text[:2000]}\n{server.output()}"
    return int(MESSAGE_ID.search(text).group(1))


async def open_socket(server: Server, path: str, member: dict):
    return await ws_connect(
        f"ws://{HOST}:{server.port}{path}",
        origin=f"http://{HOST}:{server.port}",
        additional_headers={"Cookie": member["cookie"]},
        open_timeout=TIMEOUT,
    )


async def next_frame(ws, frame_type: str, **expected) -> dict:
    """The next frame of this type with these values; fails with what came instead."""
    seen = []

    async def wait() -> dict:
        while True:
            frame = json.loads(await ws.recv())
            seen.append(frame)
            if frame.get("type") == frame_type and all(frame.get(k) == v for k, v in expected.items()):
                return frame

    try:
        return await asyncio.wait_for(wait(), TIMEOUT)
    except TimeoutError:
        pytest.fail(f"no {frame_type} frame with {expected} within {TIMEOUT}s; got {seen}", pytrace=False)


async def across_servers(servers: tuple[Server, Server], seeded: dict) -> None:
    one, two = servers
    chat_id, a, b, c = seeded["chat_id"], seeded["a"], seeded["b"], seeded["c"]
    room = f"/ws/chat/{chat_id}/"
    a_room, a_inbox = await open_socket(one, room, a), await open_socket(one, "/ws/chat/inbox/", a)
    b_room, b_inbox = await open_socket(two, room, b), await open_socket(two, "/ws/chat/inbox/", b)
    try:
        await next_frame(b_room, "chat.presence", online=2)
        await asyncio.sleep(IDLE_SECONDS)

        first = await asyncio.to_thread(post_message, one, chat_id, c, "hello+from+server+one")
        await next_frame(b_room, "chat.message", chat_id=chat_id, message_id=first, prev_id=0)
        await next_frame(b_inbox, "inbox.message", chat_id=chat_id, message_id=first, sender_id=c["user_id"])
        second = await asyncio.to_thread(post_message, one, chat_id, a, "and+again")
        await next_frame(b_room, "chat.message", message_id=second, prev_id=first)
        await next_frame(b_inbox, "inbox.message", message_id=second, sender_id=a["user_id"])
        await next_frame(a_room, "chat.message", message_id=second, prev_id=first)

        await a_room.close()
        await next_frame(b_room, "chat.presence", online=1)
    finally:
        for ws in (a_room, a_inbox, b_room, b_inbox):
            await ws.close()


def test_message_and_presence_cross_server_processes(websocket_client, servers, seeded):
    """After an idle spell, sent to server 1, seen by B's room and inbox on server 2; presence follows A."""
    try:
        asyncio.run(across_servers(servers, seeded))
    except BaseException:
        for number, server in enumerate(servers, start=1):
            print(f"--- server {number} log ---\n{server.output()}")
        raise
