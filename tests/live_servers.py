"""A baked redis + postgresql project served by daphne processes, for tests over real sockets.

Shared by test_scale_out.py and test_faults.py: bake, migrate a fresh database of its own,
log members in (session cookies written in the project's shell), start and stop servers,
and send or read like the room page does.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest
from baking import load_project_module, served_env, tail
from conftest import unavailable
from project_venvs import venv_for

ANSWERS = {"channel_layer": "redis", "database": "postgresql", "use_custom_user_model": True}
TIMEOUT = 15

# The generated project's own tooling (ports, server processes), shared with its benchmarks.
tooling = load_project_module("tooling")
HOST, free_port, Server = tooling.HOST, tooling.free_port, tooling.ServerProcess

# Defines cookie_for(user) in the project's shell: a session and a CSRF secret, as
# `login()` would leave them, for a test to use as that user ({"user_id", "cookie", "csrf"}).
COOKIE_FOR_SCRIPT = """
import json
from django.contrib.auth import get_user_model
from benchmarks.tooling import forge_session as cookie_for
"""


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def redis_database_of_this_worker(url: str) -> str:
    """The Redis URL with a database of this xdist worker's own (1-15): chat ids start at 1 in
    every test database, so two projects on one Redis database would hear each other's rooms."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    return urlunsplit(urlsplit(url)._replace(path=f"/{1 + worker % 15}"))


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


# Run by the project's Python (the template suite's venv has no PostgreSQL driver). DROP
# DATABASE ... WITH (FORCE) is refused while an autovacuum worker is on the database (it
# belongs to no role the test's may signal), so the drop is tried again for a few seconds.
DROP_DATABASE = """
import sys, time
import psycopg
for attempt in range(20):
    try:
        with psycopg.connect(sys.argv[1], autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{sys.argv[2]}" WITH (FORCE)')
        break
    except psycopg.errors.InsufficientPrivilege:
        if attempt == 19:
            raise
        time.sleep(0.5)
"""


def drop_database_at_teardown(project: Project, request, postgres_url: str, name: str) -> None:
    request.addfinalizer(lambda: project.run("-c", DROP_DATABASE, postgres_url, name))


def bake_project(cookies_session, request, *, postgres_url: str, redis_url: str, name: str) -> Project:
    """Bake the redis + postgresql project and migrate a fresh database, dropped at teardown."""
    result = cookies_session.bake(extra_context={"setup_environment": False, **ANSWERS})
    assert result.exit_code == 0, result.exception
    path = Path(result.project_path)
    name = f"chat_{name}_{secrets.token_hex(4)}"
    env = served_env(DATABASE_URL=with_database(postgres_url, name), REDIS_URL=redis_database_of_this_worker(redis_url))
    baked = Project(path, venv_for(path), env)
    # The test suite's venv has no PostgreSQL driver; the project's has psycopg.
    admin = ["-c", "import psycopg, sys; psycopg.connect(sys.argv[1], autocommit=True).execute(sys.argv[2])"]
    baked.run(*admin, postgres_url, f'CREATE DATABASE "{name}"')
    drop_database_at_teardown(baked, request, postgres_url, name)
    baked.run("manage.py", "migrate", "--no-input")
    return baked


def start_servers(project: Project, logs: Path, count: int, request, *, server: str = "daphne") -> list[Server]:
    """`count` server processes (daphne, or gunicorn as in production) on free ports, stopped at teardown."""
    started: list[Server] = []
    request.addfinalizer(lambda: [process.stop() for process in started])
    for number in range(1, count + 1):
        log_path = logs / f"server{number}.log"
        started.append(
            Server(log_path=log_path, env=project.env, project_dir=project.path, python=project.python, server=server)
        )
    for server in started:
        try:
            server.wait_ready()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
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


def post_message(server: Server, chat_id: int, member: dict, body: str, client_id: str = "") -> int:
    """Send like the page does (HTMX POST with the CSRF header); returns the stored message's id."""
    fields = urlencode({"body": body, "client_id": client_id})
    status, text = http_request(server.port, "POST", f"/chat/{chat_id}/send/", member, body=fields)
    assert status == 200, f"send answered {status}:\n{text[:2000]}\n{server.output()}"
    return int(require_room_client().MESSAGE_ID.search(text).group(1))


def require_room_client():
    """The generated project's room client (benchmarks/room_client.py), or a skip (a failure
    with CI=true) without the websockets and httpx it is built on."""
    try:
        import httpx  # noqa: F401
        import websockets  # noqa: F401
    except ImportError as exc:  # the template suite's requirements-dev.txt has both
        unavailable(f"{exc.name} is not installed (pip install -r requirements-dev.txt)")
    return load_project_module("room_client")


async def open_socket(server: Server, path: str, member: dict):
    """A websocket as the member's browser opens it (session cookie, same origin)."""
    require_room_client()
    from websockets.asyncio.client import connect

    return await connect(
        f"ws://{HOST}:{server.port}{path}",
        origin=f"http://{HOST}:{server.port}",
        additional_headers={"Cookie": member["cookie"]},
        open_timeout=TIMEOUT,
        proxy=None,  # the test's own server on 127.0.0.1, whatever proxy the environment names
    )
