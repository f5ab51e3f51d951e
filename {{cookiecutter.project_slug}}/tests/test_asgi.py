"""The ASGI stack in config/asgi.py: session auth and origin checks on websockets."""

import json

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model

from config.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def session_cookie_for(client, user) -> bytes:
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


def communicator(path, *, origin=b"http://localhost", cookie=b""):
    headers = [(b"origin", origin), (b"host", b"localhost")]
    if cookie:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, path, headers=headers)


async def test_logged_in_session_reaches_the_inbox(client):
    user = await get_user_model().objects.acreate(username="dora", email="dora@example.com")
    cookie = await _sync(session_cookie_for, client, user)
    socket = communicator("/ws/chat/inbox/", cookie=cookie)
    connected, _ = await socket.connect()
    assert connected
    assert json.loads(await socket.receive_from())["type"] == "inbox.sync"
    await socket.disconnect()


async def test_anonymous_socket_is_closed_with_4401():
    socket = communicator("/ws/chat/inbox/")
    connected, _ = await socket.connect()
    assert connected
    assert (await socket.receive_output())["code"] == 4401


async def test_foreign_origin_is_refused_before_the_consumer():
    socket = communicator("/ws/chat/inbox/", origin=b"https://evil.example")
    connected, _ = await socket.connect()
    assert not connected


async def _sync(function, *args):
    from asgiref.sync import sync_to_async

    return await sync_to_async(function)(*args)
