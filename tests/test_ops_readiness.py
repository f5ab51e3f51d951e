"""/readyz follows the services: 503 within 5 s of Redis or PostgreSQL stopping, 200 once they return.

A redis + postgresql bake served by one daphne process, on a Redis and a PostgreSQL of
this module's own (private_services.py), so stopping them disturbs no other test. The
probe polls as a load balancer would; the body must name the part that failed, and the
server must log each change of readiness rather than every failing probe.
"""

from __future__ import annotations

import http.client
import json
import shutil
import time

import pytest
from conftest import unavailable
from live_servers import HOST, Project, Server, bake_project, start_servers
from private_services import PostgresProcess, RedisProcess

pytestmark = pytest.mark.slow

NOT_READY_WITHIN = 5  # seconds after a service stops (the figure)
READY_AGAIN_WITHIN = 30  # seconds after it returns: PostgreSQL's pool retries with a backoff
POLL_SECONDS = 0.2


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed (this test starts its own)", "; .ci/run installs it")
    redis = RedisProcess(tmp_path_factory.mktemp("redis"))
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def postgres_server():
    postgres = PostgresProcess()
    yield postgres
    postgres.remove()


@pytest.fixture(scope="module")
def project(cookies_session, postgres_server, redis_server, request) -> Project:
    return bake_project(
        cookies_session, request, postgres_url=postgres_server.url, redis_url=redis_server.url, name="readiness"
    )


@pytest.fixture(scope="module")
def server(project: Project, tmp_path_factory, request) -> Server:
    [server] = start_servers(project, tmp_path_factory.mktemp("daphne"), 1, request)
    return server


def probe(server: Server, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, server.port, timeout=10)
    try:
        # A load balancer's probe: the machine's address as Host, no cookies.
        connection.request("GET", path, headers={"Host": f"10.0.0.7:{server.port}"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def readyz(server: Server) -> tuple[int, dict]:
    status, body = probe(server, "/readyz")
    return status, json.loads(body)


def wait_for_readiness(server: Server, *, ready: bool, within: float) -> tuple[float, dict]:
    """Poll /readyz until it is (not) ready; the seconds it took and the last body."""
    started = time.monotonic()
    while True:
        status, body = readyz(server)
        if (status == 200) == ready:
            assert status in {200, 503}, body
            return time.monotonic() - started, body
        if time.monotonic() - started > within:
            state = "ready" if ready else "not ready"
            pytest.fail(f"/readyz not {state} within {within} s: {status} {body}\n{server.output()}", pytrace=False)
        time.sleep(POLL_SECONDS)


def test_readyz_names_redis_then_postgresql_while_each_is_down_healthz_stays_200(server, redis_server, postgres_server):
    assert readyz(server) == (
        200,
        {"status": "ok", "failing": [], "checks": {"database": "ok", "cache": "ok", "channel_layer": "ok"}},
    )

    redis_server.stop()
    seconds, body = wait_for_readiness(server, ready=False, within=NOT_READY_WITHIN)
    print(f"\n[readiness] Redis stopped: 503 after {seconds:.1f} s: {body}")
    assert body["status"] == "unavailable"
    assert set(body["failing"]) == {"cache", "channel_layer"}, "both live on Redis"
    assert body["checks"]["database"] == "ok"
    assert probe(server, "/healthz") == (200, b"ok\n"), "alive, only not ready"
    redis_server.start()
    seconds, _ = wait_for_readiness(server, ready=True, within=READY_AGAIN_WITHIN)
    print(f"[readiness] Redis back: 200 after {seconds:.1f} s")

    postgres_server.stop()
    seconds, body = wait_for_readiness(server, ready=False, within=NOT_READY_WITHIN)
    print(f"[readiness] PostgreSQL stopped: 503 after {seconds:.1f} s: {body}")
    assert body["failing"] == ["database"]
    assert probe(server, "/healthz") == (200, b"ok\n"), "alive, only not ready"
    postgres_server.start()
    seconds, _ = wait_for_readiness(server, ready=True, within=READY_AGAIN_WITHIN)
    print(f"[readiness] PostgreSQL back: 200 after {seconds:.1f} s")

    log = server.output(lines=10_000)
    assert "Not ready: cache, channel_layer" in log
    assert "Not ready: database" in log
    assert log.count("Ready again") >= 2
    assert "Service Unavailable: /readyz" not in log, "a failing probe is not logged as a server error"
