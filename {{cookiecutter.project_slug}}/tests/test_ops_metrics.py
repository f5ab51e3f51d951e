"""/metrics (ops/metrics.py): Prometheus text behind a bearer token, with the chat's counters."""

import json
{%- if cookiecutter.channel_layer == "redis" %}
import os
import uuid
{%- endif %}

import pytest
from channels.layers import channel_layers{% if cookiecutter.channel_layer == "redis" %}, get_channel_layer{% endif %}
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from prometheus_client.parser import text_string_to_metric_families

from chat import services
from chat.realtime.consumers import FRAME_BUDGET
from config.asgi import application

TOKEN = "metrics-token-for-the-tests-0123456789"


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


@pytest.fixture(autouse=True)
def in_memory_channel_layer(settings):
    """Sockets here are counted, not tested against Redis (see test_asgi.py)."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def scrape(client) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, labels): value}."""
    return samples_of(client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"))


async def ascrape(async_client) -> dict[tuple[str, tuple], float]:
    return samples_of(await async_client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}))


def samples_of(response) -> dict[tuple[str, tuple], float]:
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    families = text_string_to_metric_families(response.content.decode())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}


def test_metrics_is_not_found_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404


@pytest.mark.parametrize(
    ("authorization", "status", "says"),
    [
        (None, 401, b"Authorization: Bearer <METRICS_TOKEN>"),
        ("Basic dXNlcjpwYXNz", 401, b"Authorization: Bearer <METRICS_TOKEN>"),
        ("Bearer ", 401, b"Authorization: Bearer <METRICS_TOKEN>"),
        ("Bearer not-the-token", 403, b"Wrong metrics token."),
        (f"Bearer {TOKEN}x", 403, b"Wrong metrics token."),
    ],
)
def test_metrics_refuses_a_missing_or_wrong_token(client, metrics_token, authorization, status, says):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization is not None else {}
    response = client.get("/metrics", **headers)
    assert response.status_code == status
    assert says in response.content
    assert "no-store" in response["Cache-Control"]
    if status == 401:
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'


def test_metrics_come_from_any_host_over_plain_http_with_process_figures(client, metrics_token, settings):
    settings.SECURE_SSL_REDIRECT = True
    samples = scrape(client)  # Host "testserver", over HTTP: no redirect, no host check
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert ("chat_messages_sent_total", ()) in samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.django_db(transaction=True)  # a message is counted once its transaction commits
def test_sends_and_catch_up_fetches_are_counted(client, metrics_token):
    alice, bob = (get_user_model().objects.create_user(username=n, email=f"{n}@example.com") for n in "ab")
    chat, _ = services.get_or_create_direct_chat(user=alice, other=bob)
    client.force_login(alice)
    before = scrape(client)

    for _ in range(2):  # the second is a retry of the first: stored once, counted once
        assert client.post(f"/chat/{chat.pk}/send/", {"body": "hi", "client_id": "c-1"}).status_code in {200, 302}
    services.send_message(chat=chat, sender=bob, body="and back")
    assert client.get(f"/chat/{chat.pk}/messages/?after=0", HTTP_HX_REQUEST="true").status_code == 200
    assert client.get(f"/chat/{chat.pk}/messages/?before=999999", HTTP_HX_REQUEST="true").status_code == 200

    after = scrape(client)
    assert value(after, "chat_messages_sent_total") - value(before, "chat_messages_sent_total") == 2
    assert value(after, "chat_catch_up_fetches_total") - value(before, "chat_catch_up_fetches_total") == 1


@pytest.mark.django_db(transaction=True)
async def test_open_sockets_and_dropped_frames_are_counted(async_client, metrics_token, settings):
    alice = await get_user_model().objects.acreate(username="alice", email="alice@example.com")
    await async_client.aforce_login(alice)
    cookie = f"{settings.SESSION_COOKIE_NAME}={async_client.cookies[settings.SESSION_COOKIE_NAME].value}"
    before = await ascrape(async_client)

    inbox = WebsocketCommunicator(
        application,
        "/ws/chat/inbox/",
        headers=[(b"host", b"localhost"), (b"origin", b"http://localhost"), (b"cookie", cookie.encode())],
    )
    assert (await inbox.connect())[0]
    assert json.loads(await inbox.receive_from())["type"] == "inbox.sync"
    during = await ascrape(async_client)
    for _ in range(FRAME_BUDGET + 5):
        await inbox.send_to(text_data=json.dumps({"type": "ping"}))
    await inbox.disconnect()  # returns once the consumer has handled every frame and closed
    after = await ascrape(async_client)

    sockets = "chat_open_sockets"
    assert value(during, sockets, consumer="InboxConsumer") == value(before, sockets, consumer="InboxConsumer") + 1
    assert value(after, sockets, consumer="InboxConsumer") == value(before, sockets, consumer="InboxConsumer")
    dropped = value(after, "chat_frames_dropped_total") - value(before, "chat_frames_dropped_total")
    assert dropped == 5, "the frames past the budget"
{%- if cookiecutter.channel_layer == "redis" %}


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="set REDIS_URL to test the Redis channel layer")
async def test_group_messages_dropped_for_a_full_channel_are_counted(async_client, metrics_token, settings):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [os.environ["REDIS_URL"]]}}
    }
    channel_layers.backends.clear()
    layer = get_channel_layer()
    group, channel = f"ops-full-{uuid.uuid4().hex}", await layer.new_channel()
    await layer.group_add(group, channel)
    before = await ascrape(async_client)
    try:
        for number in range(layer.get_capacity(channel) + 3):  # a consumer that reads nothing
            await layer.group_send(group, {"type": "chat.test", "number": number})
    finally:
        await layer.group_discard(group, channel)  # the channel's messages expire with the layer's expiry
    after = await ascrape(async_client)
    dropped = "channel_layer_messages_dropped_total"
    assert value(after, dropped) - value(before, dropped) == 3, "the messages past the channel's capacity"
{%- endif %}
