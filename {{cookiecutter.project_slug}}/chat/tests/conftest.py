"""Fixtures for the chat tests; kept inside chat/ so the app's tests travel with it."""

import itertools

import pytest
from channels.layers import channel_layers
from django.contrib.auth import get_user_model
from django.core.cache import cache

from chat import services

_emails = itertools.count(1)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Users are made with a password in many tests; the host's slow hasher is not under test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_channel_layers():
    """A channel layer per test. Each async test has an event loop of its own, and a Redis
    layer keeps receive state that belongs to the loop that first used it."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """Each test starts with no rate-limit counts from earlier tests."""
    cache.clear()


@pytest.fixture
def make_user(db):
    """Create a user with a unique username and e-mail; password is 'password'."""

    def make(username=None, email=None, **extra):
        number = next(_emails)
        username = username or f"user{number}"
        email = email or f"{username}@example.com"
        return get_user_model().objects.create_user(username=username, email=email, password="password", **extra)

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice", first_name="Alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob", first_name="Bob")


@pytest.fixture
def carol(make_user):
    return make_user("carol", first_name="Carol")


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def dave(make_user):
    return make_user("dave", first_name="Dave")


@pytest.fixture
def direct_chat(alice, bob):
    """The direct chat between alice and bob."""
    return services.get_or_create_direct_chat(user=alice, other=bob)[0]


@pytest.fixture
def group_chat(alice, bob, carol):
    """The group "Book club": alice (its creator and admin), then bob, then carol."""
    return services.create_group_chat(creator=alice, name="Book club", members=[bob, carol])
