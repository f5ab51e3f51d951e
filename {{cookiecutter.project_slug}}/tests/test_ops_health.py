"""/healthz and /readyz (ops/health.py): answered to any probe, never cached, 503 naming what fails."""

import logging
{%- if cookiecutter.channel_layer == "redis" %}
import socket
{%- endif %}

import pytest
{%- if cookiecutter.channel_layer == "redis" %}
from channels.layers import channel_layers
{%- endif %}
from django.test import Client

PROBE_HOST = "10.0.0.7:8000"  # a load balancer probes the machine's own address


def test_healthz_answers_without_the_database():
    # No django_db mark: any database access here would fail the test.
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok\n"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_skip_the_https_redirect_the_host_check_and_the_session(client, settings, path):
    settings.SECURE_SSL_REDIRECT = True
    response = client.get(path, HTTP_HOST=PROBE_HOST)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert not response.cookies
    # The same request to a page is still redirected, and refused for its host.
    assert client.get("/accounts/login/", HTTP_HOST="127.0.0.1").status_code == 301
    assert client.get("/accounts/login/", HTTP_HOST=PROBE_HOST, secure=True).status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_operations_endpoints_only_answer_get_and_head(client, path):
    response = client.post(path)
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


@pytest.mark.django_db(transaction=True)
async def test_readyz_checks_the_database_the_cache_and_the_channel_layer(async_client):
    response = await async_client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "failing": [],
        "checks": {"database": "ok", "cache": "ok", "channel_layer": "ok"},
    }
    assert "no-store" in response["Cache-Control"]


def unwritable_file_cache(tmp_path) -> dict:
    """A file cache whose directory cannot be made (its parent is a file): every write fails."""
    (tmp_path / "not-a-directory").write_text("")
    location = tmp_path / "not-a-directory" / "cache"
    return {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(location)}


@pytest.mark.django_db(transaction=True)
async def test_readyz_is_503_naming_a_failing_cache_and_logs_changes_once(async_client, settings, tmp_path, caplog):
    working = settings.CACHES
    settings.CACHES = {**working, "default": unwritable_file_cache(tmp_path)}
    with caplog.at_level(logging.INFO):
        failing = [await async_client.get("/readyz") for _ in range(3)]
        settings.CACHES = working
        recovered = await async_client.get("/readyz")

    for response in failing:
        assert response.status_code == 503
        assert response.json()["failing"] == ["cache"]
        assert response.json()["checks"] == {"database": "ok", "cache": "failing", "channel_layer": "ok"}
        assert "no-store" in response["Cache-Control"]
    assert recovered.status_code == 200
    readiness = [record for record in caplog.records if record.name == "ops.health"]
    assert [(record.levelname, record.getMessage().split(":")[0]) for record in readiness] == [
        ("WARNING", "Not ready"),
        ("WARNING", "Ready again"),
    ], "readiness is logged when it changes, not on every probe"
    assert "cache: NotADirectoryError" in readiness[0].getMessage()
    assert not [record for record in caplog.records if record.name == "django.request"], "a 503 is not a server error"
{%- if cookiecutter.channel_layer == "redis" %}


@pytest.fixture
def unreachable_channel_layer(settings):
    """The Redis layer pointed at a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    layer = settings.CHANNEL_LAYERS["default"]
    hosts = [{"address": f"redis://127.0.0.1:{port}/0", "socket_timeout": 1}]
    settings.CHANNEL_LAYERS = {"default": {**layer, "CONFIG": {**layer["CONFIG"], "hosts": hosts}}}
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.mark.django_db(transaction=True)
async def test_readyz_is_503_naming_a_channel_layer_it_cannot_reach(async_client, unreachable_channel_layer):
    response = await async_client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["channel_layer"]
{%- endif %}
{%- if cookiecutter.channel_layer == "redis" %}


@pytest.fixture
def black_hole_port():
    """A port that takes connections and never answers, like a Redis cut off by the network."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # never accepted: the kernel completes the handshakes, nothing replies
        yield listener.getsockname()[1]


@pytest.mark.django_db(transaction=True)
async def test_a_hanging_cache_is_named_within_the_timeout_and_holds_up_nothing_else(
    async_client, settings, black_hole_port
):
    settings.READYZ_TIMEOUT_SECONDS = 0.5
    settings.CACHES = {
        **settings.CACHES,
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{black_hole_port}/0",
        },
    }
    # Two probes leave two checks hanging; the third fails at once rather than start a third.
    for _ in range(3):
        response = await async_client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"] == {"database": "ok", "cache": "failing", "channel_layer": "ok"}
{%- endif %}
