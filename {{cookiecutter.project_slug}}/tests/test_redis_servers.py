"""Redis settings: REDIS_URL, or Sentinel (REDIS_SENTINELS, REDIS_SENTINEL_MASTER) for the
channel layer and the cache alike."""

import json
import secrets

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.redis_servers import redis_servers
from tests.test_settings import run_manage

SENTINELS = "10.0.0.5:26379, 10.0.0.6:26379,[::1]:26380"

# The channel layer's config and the cache as the project configures them, as JSON; the
# cache's Sentinel client as the addresses and password it asks them with.
SHOW_REDIS = """
import json
from django.conf import settings
cache = dict(settings.CACHES["default"])
cache["OPTIONS"] = dict(cache["OPTIONS"])
manager = cache["OPTIONS"].pop("sentinel_manager", None)
asked = [sentinel.connection_pool.connection_kwargs for sentinel in (manager.sentinels if manager else [])]
cache["sentinels"] = [[kwargs["host"], kwargs["port"]] for kwargs in asked]
cache["sentinel_passwords"] = {kwargs.get("password") for kwargs in asked}
cache["sentinel_passwords"] = sorted(cache["sentinel_passwords"], key=str)
print(json.dumps({"layer": settings.CHANNEL_LAYERS["default"]["CONFIG"], "cache": cache}))
"""


def configured(**env) -> dict:
    result = run_manage("shell", "-c", SHOW_REDIS, SECRET_KEY=secrets.token_urlsafe(50), **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_sentinels_the_layer_and_the_cache_use_redis_url():
    shown = configured(REDIS_URL="redis://10.0.0.9:6380/2", REDIS_SENTINELS="")
    assert shown["layer"]["hosts"] == [{"address": "redis://10.0.0.9:6380/2", "socket_timeout": 30}]
    assert shown["layer"]["channel_capacity"] == {"*!chat-hub-*": 10_000}
    assert shown["cache"]["LOCATION"] == "redis://10.0.0.9:6380/2"
    # A Redis host that vanished fails a cache call in seconds, not after the OS's TCP timeout.
    assert shown["cache"]["OPTIONS"] == {"socket_connect_timeout": 2, "socket_timeout": 2}


def test_with_sentinels_the_layer_and_the_cache_ask_them_for_the_primary():
    shown = configured(
        REDIS_SENTINELS=SENTINELS,
        REDIS_SENTINEL_MASTER="chat",
        REDIS_PASSWORD="data-secret",
        REDIS_SENTINEL_PASSWORD="sentinel-secret",
    )
    sentinels = [["10.0.0.5", 26379], ["10.0.0.6", 26379], ["::1", 26380]]
    (host,) = shown["layer"]["hosts"]
    assert host["master_name"] == "chat"
    assert host["sentinels"] == sentinels
    assert host["password"] == "data-secret"
    assert host["sentinel_kwargs"]["password"] == "sentinel-secret"
    assert host["socket_timeout"] == 10
    assert shown["layer"]["channel_capacity"] == {"*!chat-hub-*": 10_000}, "the room hubs keep their capacity"

    cache = shown["cache"]
    assert cache["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert cache["OPTIONS"]["pool_class"] == "redis.sentinel.SentinelConnectionPool"
    assert cache["OPTIONS"]["service_name"] == "chat"
    assert cache["OPTIONS"]["password"] == "data-secret"
    assert (cache["OPTIONS"]["socket_connect_timeout"], cache["OPTIONS"]["socket_timeout"]) == (2, 2)
    assert cache["sentinels"] == sentinels
    assert cache["sentinel_passwords"] == ["sentinel-secret"]


def test_sentinels_without_a_master_name_are_refused_with_what_to_set():
    result = run_manage("check", SECRET_KEY=secrets.token_urlsafe(50), REDIS_SENTINELS=SENTINELS)
    assert result.returncode != 0
    assert "set REDIS_SENTINEL_MASTER" in result.stderr


@pytest.mark.parametrize("address", ["10.0.0.5", "10.0.0.5:port", ":26379"])
def test_a_sentinel_address_without_host_and_port_is_refused(address):
    with pytest.raises(ImproperlyConfigured, match="is not host:port"):
        redis_servers(url="redis://127.0.0.1:6379/0", sentinels=[address], master="chat")


def test_passwords_stay_out_of_the_settings_repr():
    sentinels = SENTINELS.split(",")
    servers = redis_servers(url="", sentinels=sentinels, master="chat", password="p1", sentinel_password="p2")
    assert "p1" not in repr(servers) and "p2" not in repr(servers)
