"""A logout or a password change happens even when the channel layer cannot be reached."""

import pytest
from channels.layers import channel_layers
from django.contrib.auth import SESSION_KEY
from django.urls import reverse

pytestmark = pytest.mark.django_db(transaction=True)  # on_commit runs, as in production


@pytest.fixture
def unreachable_layer(settings):
    pytest.importorskip("channels_redis", reason="the Redis channel layer comes with the redis option")
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def test_logout_ends_the_session_while_the_layer_is_down(client, alice, unreachable_layer):
    client.force_login(alice)

    response = client.post(reverse("logout"))

    assert response.status_code == 302
    assert SESSION_KEY not in client.session
    assert client.get(reverse("chat:list")).status_code == 302  # to the login page


def test_a_password_change_is_saved_while_the_layer_is_down(alice, unreachable_layer):
    alice.set_password("a-new-long-passphrase")
    alice.save()

    alice.refresh_from_db()
    assert alice.check_password("a-new-long-passphrase")
