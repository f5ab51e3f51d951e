"""Rate limits: clear 429s with Retry-After, configurable rates, nothing saved past the limit,
one shared limit for every e-mail lookup, sliding windows, and a cache outage that shuts
lookups (503) but lets messages through."""

import logging
import re
import shutil
import socket
import subprocess
import time

import pytest
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from chat import ratelimit, services
from chat.models import Chat, Message

HTMX = {"HX-Request": "true"}


@pytest.fixture
def direct(alice, bob):
    chat, _ = services.get_or_create_direct_chat(user=alice, other=bob)
    return chat


@pytest.fixture
def tight_limits(settings):
    settings.CHAT_RATE_LIMITS = {"send": "3/m", "email_lookup": "2/m", "new_chat": "1/m", "new_group": "1/h"}


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
    assert 0 < int(response["Retry-After"]) <= 120  # the sliding window: into the next minute


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


@pytest.fixture(params=["test-cache", "redis"])
def counts_in(request):
    """The sliding-window tests run on the tests' cache and on a real Redis, where a check
    is one pipeline of its own commands (`ratelimit.count_uses`)."""
    if request.param == "redis":
        request.getfixturevalue("redis_cache")


@pytest.mark.usefixtures("counts_in")
def test_a_burst_across_a_window_boundary_gets_no_more_than_the_rate(alice_client, direct, tight_limits, monkeypatch):
    url = reverse("chat:send", args=[direct.pk])
    monkeypatch.setattr(ratelimit.time, "time", lambda: 6_059.5)
    before = [alice_client.post(url, {"body": "a"}, headers=HTMX).status_code for _ in range(3)]
    monkeypatch.setattr(ratelimit.time, "time", lambda: 6_060.5)
    after = [alice_client.post(url, {"body": "b"}, headers=HTMX).status_code for _ in range(3)]

    assert before == [200, 200, 200]
    assert after == [429, 429, 429]
    assert Message.objects.filter(chat=direct).count() == 3


@pytest.mark.usefixtures("counts_in")
@pytest.mark.parametrize("start", [6_000, 6_030, 6_059])
def test_retry_after_is_when_the_sliding_count_has_room_again(alice_client, direct, tight_limits, monkeypatch, start):
    url = reverse("chat:send", args=[direct.pk])
    monkeypatch.setattr(ratelimit.time, "time", lambda: start)
    for _ in range(3):
        alice_client.post(url, {"body": "hi"})
    retry_after = int(alice_client.post(url, {"body": "over"}, headers=HTMX)["Retry-After"])

    monkeypatch.setattr(ratelimit.time, "time", lambda: start + retry_after - 2)
    too_early = alice_client.post(url, {"body": "early"}, headers=HTMX).status_code
    cache.clear()  # forget the early try; then replay the first four at `start`
    monkeypatch.setattr(ratelimit.time, "time", lambda: start)
    for _ in range(4):
        alice_client.post(url, {"body": "again"}, headers=HTMX)
    monkeypatch.setattr(ratelimit.time, "time", lambda: start + retry_after)
    on_time = alice_client.post(url, {"body": "on time"}, headers=HTMX).status_code

    assert 0 < retry_after <= 120
    assert (too_early, on_time) == (429, 200)


@pytest.mark.usefixtures("counts_in")
def test_uses_counted_together_get_the_answers_of_checks_made_one_after_the_other(settings, monkeypatch):
    settings.CHAT_RATE_LIMITS = {"send": "3/m"}
    monkeypatch.setattr(ratelimit.time, "time", lambda: 6_030.0)
    people = [1, 2, 1, 1, 1, 2]  # person 1 past the rate in the middle of the batch

    def one_after_the_other(first, second):
        answers = []
        for key in [first if person == 1 else second for person in people]:
            try:
                ratelimit.check_rate(action="send", key=key)
            except ratelimit.RateLimited as refused:
                answers.append(refused.retry_after)
            else:
                answers.append(None)
        return answers

    ratelimit.check_rate(action="send", key=11)  # each person 1 has used one already
    ratelimit.check_rate(action="send", key=21)
    expected = one_after_the_other(11, 12)
    together = ratelimit.check_rates(action="send", keys=[21 if person == 1 else 22 for person in people])

    assert expected == [None, None, None, expected[3], expected[3], None]
    assert expected[3] > 0
    assert [None if answer is None else answer.retry_after for answer in together] == expected
    assert cache.get(ratelimit.window_key("send", 21, 100)) == 3  # the refused uses were taken back


def test_a_rate_of_none_disables_the_limit(alice_client, direct, settings):
    settings.CHAT_RATE_LIMITS = {"send": None}
    url = reverse("chat:send", args=[direct.pk])
    statuses = {alice_client.post(url, {"body": "x"}, headers={"HX-Request": "true"}).status_code for _ in range(70)}
    assert statuses == {200}


@pytest.mark.parametrize("rate", ["60", "sixty/m", "60/w", "60/m/s"])
def test_malformed_rates_are_a_configuration_error(rate):
    with pytest.raises(ImproperlyConfigured):
        ratelimit.parse_rate(rate)


@pytest.mark.parametrize("rate", ["5/15m", "1/s", "100/2h"])
def test_rates_may_have_a_period_multiple(rate):
    count, period = rate.split("/")
    seconds = int(period[:-1] or 1) * ratelimit.PERIOD_SECONDS[period[-1]]
    assert ratelimit.parse_rate(rate) == ratelimit.Rate(count=int(count), seconds=seconds)


# --- one limit for every e-mail lookup --------------------------------------------------


def lookup(client, path: str, email: str, chat=None):
    """Ask about `email` the way each page does; the response."""
    if path == "check_user":
        return client.get(reverse("chat:check_user"), {"email": email}, headers=HTMX)
    if path == "new_chat":
        return client.post(reverse("chat:new"), {"email": email}, headers=HTMX)
    if path == "new_group":
        return client.post(reverse("chat:new_group"), {"name": "Team", "members": email}, headers=HTMX)
    return client.post(reverse("chat:edit", args=[chat.pk]), {"action": "add", "email": email})


LOOKUP_PATHS = ["check_user", "new_chat", "new_group", "add_member"]


@pytest.fixture
def lookup_limit(settings):
    settings.CHAT_RATE_LIMITS = {"email_lookup": "3/m", "new_chat": None, "new_group": None}


@pytest.mark.parametrize("spent_on", LOOKUP_PATHS)
@pytest.mark.parametrize("path", LOOKUP_PATHS)
def test_every_email_lookup_counts_against_one_limit(alice_client, group_chat, lookup_limit, spent_on, path):
    for number in range(3):
        lookup(alice_client, spent_on, f"nobody{number}@example.com", chat=group_chat)

    response = lookup(alice_client, path, "unknown@example.com", chat=group_chat)

    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert "Nobody" not in response.content.decode()


def test_refused_lookups_do_not_push_the_wait_further(alice_client, lookup_limit, monkeypatch):
    monkeypatch.setattr(ratelimit.time, "time", lambda: 6_000)
    for number in range(3):
        lookup(alice_client, "check_user", f"nobody{number}@example.com")
    waits = [int(lookup(alice_client, "check_user", "bob@example.com")["Retry-After"]) for _ in range(5)]

    monkeypatch.setattr(ratelimit.time, "time", lambda: 6_000 + waits[0])
    on_time = lookup(alice_client, "check_user", "bob@example.com")

    assert len(set(waits)) == 1
    assert on_time.status_code == 200


def test_a_long_wait_is_said_in_minutes(alice_client, settings):
    settings.CHAT_RATE_LIMITS = {"email_lookup": "2/h"}
    for number in range(2):
        lookup(alice_client, "check_user", f"nobody{number}@example.com")

    response = lookup(alice_client, "check_user", "bob@example.com")

    minutes = -(-int(response["Retry-After"]) // 60)
    assert response.status_code == 429
    assert f"Too many requests; try again in {minutes} minutes." in response.content.decode()


@pytest.fixture
def unwritable_cache(settings, tmp_path):
    """The counts in a file cache whose directory cannot be made: every count fails."""
    (tmp_path / "a-file").touch()
    location = str(tmp_path / "a-file" / "cache")
    backend = "django.core.cache.backends.filebased.FileBasedCache"
    settings.CACHES = {"default": {"BACKEND": backend, "LOCATION": location}}


@pytest.mark.parametrize(
    ("status", "title"), [(429, "Too many requests"), (503, "Temporarily unavailable")], ids=["429", "503"]
)
def test_the_error_page_is_titled_for_its_status(alice_client, bob, settings, request, status, title):
    settings.CHAT_RATE_LIMITS = {"email_lookup": "1/h"}
    if status == 503:
        request.getfixturevalue("unwritable_cache")
    alice_client.post(reverse("chat:new"), {"email": "nobody@example.com"})

    response = alice_client.post(reverse("chat:new"), {"email": "bob@example.com"})

    assert response.status_code == status
    assert re.search(rf"<title>\s*{title}\s*</title>", response.content.decode())
    assert "Bad request" not in response.content.decode()


def test_a_group_counts_every_address_it_looks_up(alice_client, bob, lookup_limit):
    form = {"name": "Team", "members": "bob@example.com, x1@example.com, x2@example.com, x3@example.com"}
    response = alice_client.post(reverse("chat:new_group"), form, headers=HTMX)

    assert response.status_code == 429
    assert "x1@example.com" not in response.content.decode()
    assert not Chat.objects.filter(kind=Chat.Kind.GROUP).exists()


def unknown_addresses(count: int) -> str:
    return ", ".join(f"unknown{number}@example.com" for number in range(count))


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"name": "", "members": unknown_addresses(50)}, "This field is required."),
        ({"name": "Team", "members": unknown_addresses(51)}, "Add at most 50 people at a time."),
        ({"name": "Team", "members": unknown_addresses(10) + ", not-an-address"}, "Not e-mail addresses"),
    ],
)
def test_a_group_form_with_cheap_errors_looks_nobody_up(alice_client, lookup_limit, form, error):
    response = alice_client.post(reverse("chat:new_group"), form, headers=HTMX)
    after = lookup(alice_client, "check_user", "bob@example.com")

    assert response.status_code == 400
    assert error in response.content.decode()
    assert "Nobody has an account" not in response.content.decode()
    assert after.status_code == 200  # no lookups were charged


def test_a_long_member_list_is_refused_before_it_is_split_and_not_echoed(alice_client, lookup_limit):
    pasted = "x" * 60_000
    response = alice_client.post(reverse("chat:new_group"), {"name": "Team", "members": pasted}, headers=HTMX)

    assert response.status_code == 400
    assert "too long" in response.content.decode()
    assert len(response.content) < 20_000


def test_a_body_bigger_than_any_chat_form_is_413(alice_client, lookup_limit):
    members = unknown_addresses(40_000)  # about 1 MB
    response = alice_client.post(reverse("chat:new_group"), {"name": "Team", "members": members}, headers=HTMX)

    assert response.status_code == 413
    assert len(response.content) < 5_000


# --- the cache (Redis) going down ------------------------------------------------------


class RedisProcess:
    """A redis-server of the test's own, on a free port, stopped when the test says."""

    def __init__(self, workdir):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.workdir = workdir
        self.start()

    def start(self) -> None:
        """Start (again, on the same port: empty, as Redis without persistence restarts)."""
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--dir", self.workdir]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail("redis-server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def redis_cache(settings, tmp_path):
    """The rate-limit counts in a real Redis of this test's own; yields the running server."""
    pytest.importorskip("redis", reason="the redis package comes with the Redis channel layer")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    redis = RedisProcess(str(tmp_path))
    location = f"redis://127.0.0.1:{redis.port}/0"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": location}}
    yield redis
    redis.stop()


def test_with_redis_down_lookups_are_503_and_messages_still_send(alice_client, direct, group_chat, redis_cache, caplog):
    send_url = reverse("chat:send", args=[direct.pk])
    assert lookup(alice_client, "check_user", "bob@example.com").status_code == 200
    assert alice_client.post(send_url, {"body": "before"}, headers=HTMX).status_code == 200

    redis_cache.stop()
    with caplog.at_level(logging.WARNING, logger="chat.ratelimit"):
        lookups = {path: lookup(alice_client, path, "bob@example.com", chat=group_chat) for path in LOOKUP_PATHS}
        sends = [alice_client.post(send_url, {"body": f"during {n}"}, headers=HTMX).status_code for n in range(5)]

    assert {path: response.status_code for path, response in lookups.items()} == dict.fromkeys(LOOKUP_PATHS, 503)
    assert all("try again" in response.content.decode() for response in lookups.values())
    assert sends == [200] * 5
    assert "not limiting send" in caplog.text
    assert Message.objects.filter(chat=direct).count() == 6


def test_on_redis_a_check_is_one_pipeline_whose_counts_the_cache_reads_and_takes_back(redis_cache, monkeypatch):
    monkeypatch.setattr(ratelimit.time, "time", lambda: 6_030.0)
    client = cache._cache.get_client(write=True)
    client.config_resetstat()

    ratelimit.check_rate(action="send", key=7, rate="3/m", cost=2)
    ratelimit.check_rate(action="send", key=7, rate="3/m")
    with pytest.raises(ratelimit.RateLimited):
        ratelimit.check_rate(action="send", key=7, rate="3/m")  # counted, then taken back
    ratelimit.refund(action="send", key=7, rate="3/m")
    calls = {name: stats["calls"] for name, stats in client.info("commandstats").items()}

    current = ratelimit.window_key("send", 7, 100)
    assert cache.get(current) == 2  # 2 + 1 + 1, one taken back as refused and one refunded
    assert 60 < client.ttl(cache.make_and_validate_key(current)) <= 121  # the window expires on its own
    # Three checks, one pipeline of SET, INCRBY and GET each (no EXISTS of Django's incr);
    # the refusal's and the refund's take-backs are Django's decr (EXISTS, INCRBY).
    counted = ("cmdstat_set", "cmdstat_incrby", "cmdstat_get", "cmdstat_exists", "cmdstat_incr", "cmdstat_decrby")
    assert {name: calls.get(name, 0) for name in counted} == {
        "cmdstat_set": 3,
        "cmdstat_incrby": 3 + 2,
        "cmdstat_get": 3,
        "cmdstat_exists": 2,
        "cmdstat_incr": 0,
        "cmdstat_decrby": 0,
    }
