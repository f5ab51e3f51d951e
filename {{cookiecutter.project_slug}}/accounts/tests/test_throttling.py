"""Log-in throttling on the log-in page and the admin's, and sign-up limits."""

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-Unusual-passphrase-42"


@pytest.fixture
def erin():
    return get_user_model().objects.create_user(
        username="erin", email="erin@example.com", password=PASSWORD, is_staff=True, is_superuser=True
    )


@pytest.fixture(params=["login", "admin:login"])
def login_url(request):
    return reverse(request.param)


@pytest.fixture
def tight_limits(settings):
    settings.ACCOUNT_RATE_LIMITS = {
        "login_username": "3/15m",
        "login_ip": "5/15m",
        "signup_ip": "2/h",
        "signup_email": "1/h",
    }


def attempt(client, url, username="erin", password=None, ip="10.0.0.1"):
    """A log-in; a wrong password unless one is given."""
    return client.post(url, {"username": username, "password": password or "wrong"}, REMOTE_ADDR=ip)


def test_wrong_passwords_for_one_account_are_429_past_the_limit(client, erin, login_url, tight_limits):
    statuses = [attempt(client, login_url, ip=f"10.0.0.{n}").status_code for n in range(5)]
    refused = attempt(client, login_url, password=PASSWORD, ip="10.0.0.99")

    assert statuses == [200, 200, 200, 429, 429]
    assert refused.status_code == 429  # even the right password waits
    assert 0 < int(refused["Retry-After"]) <= 2 * 15 * 60  # the sliding window reaches into the next one
    assert "Too many failed log-ins. Try again in" in refused.content.decode()
    assert 'name="password"' in refused.content.decode()  # the form page, with the message


def test_guesses_from_one_ip_are_429_whatever_the_username(client, erin, login_url, tight_limits):
    statuses = [attempt(client, login_url, username=f"user{n}").status_code for n in range(7)]

    assert statuses == [200] * 5 + [429] * 2
    assert attempt(client, login_url, ip="10.0.0.2").status_code == 200  # another IP may still try


def test_successful_log_ins_do_not_count(client, erin, login_url, tight_limits):
    for _ in range(5):
        assert attempt(client, login_url, password=PASSWORD).status_code == 302
        client.post(reverse("logout"))

    assert attempt(client, login_url).status_code == 200


def test_hundred_wrong_passwords_mostly_answer_429(client, erin):
    statuses = [attempt(client, reverse("login")).status_code for _ in range(100)]

    assert statuses.count(200) == 10
    assert statuses.count(429) == 90


def signup(client, number, *, ip="10.0.0.1", email=None):
    data = {
        "username": f"user{number}",
        "email": email or f"user{number}@example.com",
        "password1": PASSWORD,
        "password2": PASSWORD,
    }
    return client.post(reverse("signup"), data, REMOTE_ADDR=ip)


def test_sign_ups_from_one_ip_are_limited(client, tight_limits):
    statuses = [signup(client, n).status_code for n in range(3)]

    assert statuses == [302, 302, 429]
    assert len(mail.outbox) == 2


def test_sign_up_mails_to_one_address_from_one_ip_are_limited(client, tight_limits):
    first = signup(client, 1, email="erin@example.com")
    second = signup(client, 2, email="ERIN@example.com")

    assert first.status_code == 302
    assert second.status_code == 429
    assert "Too many requests" in second.content.decode()
    assert len(mail.outbox) == 1


def test_a_squatter_cannot_use_up_the_owners_sign_ups(client):
    squatting = [signup(client, n, ip="10.0.0.66", email="victim@example.com").status_code for n in range(4)]
    owners = signup(client, 9, ip="10.0.0.1", email="Victim@Example.com")

    assert squatting == [302, 302, 302, 429]
    assert owners.status_code == 302
    assert mail.outbox[-1].to == ["Victim@Example.com"]


def test_a_refused_sign_up_does_not_count_against_the_ip(client, tight_limits):
    statuses = [signup(client, n, email=email).status_code for n, email in enumerate(["a@x.org", "a@x.org", "b@x.org"])]

    assert statuses == [302, 429, 302]
    assert len(mail.outbox) == 2


def test_log_ins_refused_for_the_ip_do_not_count_against_the_username(client, erin, tight_limits):
    ip_spent = [attempt(client, reverse("login"), username=f"user{n}", ip="10.0.0.66").status_code for n in range(5)]
    refused = [attempt(client, reverse("login"), ip="10.0.0.66").status_code for _ in range(3)]

    assert ip_spent == [200] * 5
    assert refused == [429] * 3
    assert attempt(client, reverse("login"), password=PASSWORD, ip="10.0.0.1").status_code == 302


def test_sign_up_is_503_while_the_limits_cannot_be_counted(client, settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    pytest.importorskip("redis", reason="the redis package comes with the Redis channel layer")

    response = signup(client, 1)

    assert response.status_code == 503
    assert "try again" in response.content.decode()
    assert not mail.outbox
