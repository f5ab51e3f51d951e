"""A baked redis + postgresql project served by daphne processes, for tests over real sockets.

Shared by test_scale_out.py and test_faults.py: bake, migrate a fresh database of its own,
log members in (session cookies written in the project's shell), start and stop servers,
and send or read like the room page does.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from baking import served_env, stop_process, tail
from conftest import unavailable
from project_venvs import venv_for

ANSWERS = {"channel_layer": "redis", "database": "postgresql", "use_custom_user_model": True}
HOST = "127.0.0.1"
TIMEOUT = 15
MESSAGE_ID = re.compile(r'data-message-id="(\d+)"')

# Defines cookie_for(user) in the project's shell: a session and a CSRF secret, as
# `login()` would leave them, for a test to use as that user.
COOKIE_FOR_SCRIPT = """
import json
from importlib import import_module
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils.crypto import get_random_string

def cookie_for(user):
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    csrf = get_random_string(32)
    cookie = f"{settings.SESSION_COOKIE_NAME}={store.session_key}; {settings.CSRF_COOKIE_NAME}={csrf}"
    return {"cookie": cookie, "csrf": csrf, "user_id": user.pk}
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
        self.path, self.venv, self.python, self.env = path, venv, str(venv / "bin" / "python"), env

    def with_env(self, **overrides: str) -> Project:
        """The same project with some settings changed (another Redis, other rate limits)."""
        return Project(self.path, self.venv, {**self.env, **overrides})

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.python, *args], cwd=self.path, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, tail(result.stdout + result.stderr)
        return result

    def shell_json(self, code: str) -> dict:
        """Run Python in `manage.py shell`; its last line of output is JSON."""
        return json.loads(self.run("manage.py", "shell", "-c", code).stdout.strip().splitlines()[-1])


def bake_project(cookies_session, request, *, postgres_url: str, redis_url: str, name: str) -> Project:
    """Bake the redis + postgresql project and migrate a fresh database, dropped at teardown."""
    result = cookies_session.bake(extra_context={"setup_environment": False, **ANSWERS})
    assert result.exit_code == 0, result.exception
    path = Path(result.project_path)
    name = f"chat_{name}_{secrets.token_hex(4)}"
    env = served_env(DATABASE_URL=with_database(postgres_url, name), REDIS_URL=redis_url)
    baked = Project(path, venv_for(path), env)
    # The test suite's venv has no PostgreSQL driver; the project's has psycopg.
    admin = ["-c", "import psycopg, sys; psycopg.connect(sys.argv[1], autocommit=True).execute(sys.argv[2])"]
    baked.run(*admin, postgres_url, f'CREATE DATABASE "{name}"')
    request.addfinalizer(lambda: baked.run(*admin, postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    baked.run("manage.py", "migrate", "--no-input")
    return baked


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

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to close its sockets or clean up."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


def start_servers(project: Project, logs: Path, count: int, request) -> list[Server]:
    """`count` daphne processes on free ports, stopped at teardown."""
    started: list[Server] = []
    request.addfinalizer(lambda: [server.stop() for server in started])
    for number in range(1, count + 1):
        started.append(Server(project, logs / f"server{number}.log"))
    for server in started:
        server.wait_ready()
    return started


def http_request(
    port: int, method: str, path: str, member: dict, body: str | None = None, timeout: float = TIMEOUT
) -> tuple[int, str]:
    """One request as the page's HTMX makes it (session cookie, CSRF header); (status, text)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    headers = {"Cookie": member["cookie"], "X-CSRFToken": member["csrf"], "HX-Request": "true"}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def post_message(server: Server, chat_id: int, member: dict, body: str) -> int:
    """Send like the page does (HTMX POST with the CSRF header); returns the new message's id."""
    status, text = http_request(server.port, "POST", f"/chat/{chat_id}/send/", member, body=f"body={body}")
    assert status == 200, f"send answered {status}:\n{text[:2000]}\n{server.output()}"
    return int(MESSAGE_ID.search(text).group(1))


def require_websockets():
    """The `websockets` client's connect, or a skip (a failure with CI=true) without it."""
    try:
        from websockets.asyncio.client import connect
    except ImportError:  # the template suite's requirements-dev.txt has it
        unavailable("websockets is not installed (pip install -r requirements-dev.txt)")
    return connect


async def open_socket(server: Server, path: str, member: dict):
    """A websocket as the member's browser opens it (session cookie, same origin)."""
    return await require_websockets()(
        f"ws://{HOST}:{server.port}{path}",
        origin=f"http://{HOST}:{server.port}",
        additional_headers={"Cookie": member["cookie"]},
        open_timeout=TIMEOUT,
    )
