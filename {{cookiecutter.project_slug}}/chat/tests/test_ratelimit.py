"""Rate limits: clear 429s with Retry-After, configurable rates, nothing saved past the limit."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from chat import ratelimit, services
from chat.models import Chat, Message


@pytest.fixture
def direct(alice, bob):
    chat, _ = services.get_or_create_direct_chat(user=alice, other=bob)
    return chat


@pytest.fixture
def tight_limits(settings):
    settings.CHAT_RATE_LIMITS = {"send": "3/m", "check_user": "2/m", "new_chat": "1/m", "new_group": "1/h"}


def test_sending_past_the_limit_is_429_and_saves_nothing(alice_client, direct, tight_limits):
    url = reverse("chat:send", args=[direct.pk])
    statuses = [alice_client.post(url, {"body": f"m{i}"}, headers={"HX-Request": "true"}).status_code for i in range(5)]

    assert statuses == [200, 200, 200, 429, 429]
    assert Message.objects.filter(chat=direct).count() == 3


def test_429_says_when_to_retry(alice_client, direct, tight_limits):
    url = reverse("chat:send", args=[direct.pk])
    for _ in range(3):
        alice_client.post(url, {"body": "hi"}, headers={"HX-Request": "true"})

    response = alice_client.post(url, {"body": "one more"}, headers={"HX-Request": "true"})

    assert response.status_code == 429
    assert "Too many requests" in response.content.decode()
    assert response["HX-Retarget"] == f"#send-error-{direct.pk}"
    assert 0 < int(response["Retry-After"]) <= 60


def test_limits_are_per_user(client, alice, bob, direct, tight_limits):
    url = reverse("chat:send", args=[direct.pk])
    client.force_login(alice)
    for _ in range(3):
        client.post(url, {"body": "alice"})
    client.force_login(bob)
    assert client.post(url, {"body": "bob"}, headers={"HX-Request": "true"}).status_code == 200


def test_check_user_lookups_are_limited(alice_client, bob, tight_limits):
    url = reverse("chat:check_user")
    statuses = [alice_client.get(url, {"email": "bob@example.com"}).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_group_creation_is_limited(alice_client, bob, carol, tight_limits):
    url = reverse("chat:new_group")
    form = {"name": "Team", "members": "bob@example.com, carol@example.com"}
    first = alice_client.post(url, form, headers={"HX-Request": "true"})
    second = alice_client.post(url, {**form, "name": "Team 2"}, headers={"HX-Request": "true"})

    assert first.status_code == 200
    assert second.status_code == 429
    assert Chat.objects.filter(kind=Chat.Kind.GROUP).count() == 1


def test_new_direct_chats_are_limited(alice_client, bob, carol, tight_limits):
    url = reverse("chat:new")
    assert alice_client.post(url, {"email": "bob@example.com"}, headers={"HX-Request": "true"}).status_code == 200
    assert alice_client.post(url, {"email": "carol@example.com"}, headers={"HX-Request": "true"}).status_code == 429


def test_counts_reset_in_the_next_window(alice_client, direct, tight_limits, monkeypatch):
    url = reverse("chat:send", args=[direct.pk])
    monkeypatch.setattr(ratelimit.time, "time", lambda: 6_000)
    for _ in range(3):
        alice_client.post(url, {"body": "hi"})
    assert alice_client.post(url, {"body": "over"}, headers={"HX-Request": "true"}).status_code == 429

    monkeypatch.setattr(ratelimit.time, "time", lambda: 6_060)
    assert alice_client.post(url, {"body": "next minute"}, headers={"HX-Request": "true"}).status_code == 200


def test_a_rate_of_none_disables_the_limit(alice_client, direct, settings):
    settings.CHAT_RATE_LIMITS = {"send": None}
    url = reverse("chat:send", args=[direct.pk])
    statuses = {alice_client.post(url, {"body": "x"}, headers={"HX-Request": "true"}).status_code for _ in range(70)}
    assert statuses == {200}


@pytest.mark.parametrize("rate", ["60", "sixty/m", "60/w", "60/m/s"])
def test_malformed_rates_are_a_configuration_error(rate):
    with pytest.raises(ImproperlyConfigured):
        ratelimit.parse_rate(rate)


def test_a_broken_cache_lets_people_chat(alice_client, direct, tight_limits, monkeypatch):
    def down(*args, **kwargs):
        raise ConnectionError("cache is down")

    monkeypatch.setattr(ratelimit, "count_use", down)
    url = reverse("chat:send", args=[direct.pk])
    statuses = {alice_client.post(url, {"body": "x"}, headers={"HX-Request": "true"}).status_code for _ in range(5)}
    assert statuses == {200}
