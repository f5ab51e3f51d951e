"""The ASGI stack in config/asgi.py: session auth and origin checks on websockets."""

import asyncio
import json
import threading
{%- if cookiecutter.channel_layer == "redis" %}
import uuid
{%- endif %}

import pytest
from channels.auth import AuthMiddleware
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model

from chat import events, services
from chat.realtime import mailbox
from chat.realtime.database import database_trip
from chat.realtime.loop import note_serving_loop
from chat.realtime.sessions import SocketSessionMiddlewareStack
from config.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


{%- if cookiecutter.channel_layer == "redis" %}


@pytest.fixture(autouse=True, params=["redis", "memory"])
def channel_layer(request, settings):
    """The project's own layer on Redis, new for each test's event loop, its keys its own (tests
    run side by side on one Redis, and a group such as the inboxes' would reach every test's
    channels in it); then the in-memory one."""
    if request.param == "memory":
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    else:
        layer = settings.CHANNEL_LAYERS["default"]
        config = {**layer["CONFIG"], "prefix": f"test-{uuid.uuid4().hex[:8]}"}
        settings.CHANNEL_LAYERS = {"default": {**layer, "CONFIG": config}}
    channel_layers.backends.clear()
    yield request.param
    channel_layers.backends.clear()
{%- else %}


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """The project's own layer, new for each test's event loop."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()
{%- endif %}


def session_cookie_for(client, user) -> bytes:
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


def communicator(path, *, origin=b"http://localhost", cookie=b"", host=b"localhost", secure=False, extra=()):
    headers = [(b"host", host), *extra]
    if origin is not None:
        headers.append((b"origin", origin))
    if cookie:
        headers.append((b"cookie", cookie))
    socket = WebsocketCommunicator(application, path, headers=headers)
    socket.scope["scheme"] = "wss" if secure else "ws"
    return socket


async def test_logged_in_session_reaches_the_inbox(client):
    user = await get_user_model().objects.acreate(username="dora", email="dora@example.com")
    cookie = await _sync(session_cookie_for, client, user)
    socket = communicator("/ws/chat/inbox/", cookie=cookie)
    connected, _ = await socket.connect()
    assert connected
    assert json.loads(await socket.receive_from())["type"] == "inbox.sync"
    await socket.disconnect()


class WhoAmI(AsyncWebsocketConsumer):
    """A consumer of your own that reads `scope["user"]`."""

    async def connect(self):
        await self.accept()
        await self.send(text_data=self.scope["user"].get_username() or "anonymous")


async def test_a_consumer_of_your_own_behind_auth_middleware_gets_the_user_of_the_sockets_session(client):
    """The project's stack for sockets gives the session (chat.realtime.sessions); Channels'
    AuthMiddleware on a route of yours loads its user from it, as under Channels' own stack."""
    user = await get_user_model().objects.acreate(username="enzo", email="enzo@example.com")
    cookie = await _sync(session_cookie_for, client, user)
    app = SocketSessionMiddlewareStack(AuthMiddleware(WhoAmI.as_asgi()))
    for headers, expected in (([(b"cookie", cookie)], "enzo"), ([], "anonymous")):
        socket = WebsocketCommunicator(app, "/ws/whoami/", headers=headers)
        connected, _ = await socket.connect()
        assert connected
        assert await socket.receive_from() == expected
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


async def handshake_passes(**kwargs) -> bool:
    """Whether the origin check lets the handshake through (the consumer then says 4401)."""
    socket = communicator("/ws/chat/inbox/", **kwargs)
    connected, _ = await socket.connect()
    if connected:
        await socket.disconnect()
    return connected


@pytest.mark.parametrize(
    ("origin", "host", "secure"),
    [
        (b"http://localhost:8000", b"localhost:8000", False),
        (b"https://localhost", b"localhost", True),
        (b"http://127.0.0.1:8000", b"127.0.0.1:8000", False),
    ],
)
async def test_the_servers_own_origin_is_accepted(origin, host, secure):
    assert await handshake_passes(origin=origin, host=host, secure=secure)


@pytest.mark.parametrize(
    ("origin", "host", "secure"),
    [
        pytest.param(b"http://127.0.0.1:9999", b"127.0.0.1:8000", False, id="another-port"),
        pytest.param(b"https://127.0.0.1", b"127.0.0.1", False, id="https-page-to-a-plain-server"),
        pytest.param(b"http://localhost", b"localhost", True, id="plain-page-to-a-tls-server"),
        pytest.param(b"http://127.0.0.1", b"127.0.0.1:8000", False, id="default-port"),
        pytest.param(b"http://evil.example", b"evil.example", False, id="host-not-allowed"),
        pytest.param(b"null", b"localhost", False, id="opaque-origin"),
        pytest.param(None, b"localhost", False, id="no-origin"),
    ],
)
async def test_other_origins_are_refused(origin, host, secure):
    assert not await handshake_passes(origin=origin, host=host, secure=secure)


async def test_csrf_trusted_origins_are_accepted_with_their_scheme(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com", "https://*.example.org"]
    assert await handshake_passes(origin=b"https://chat.example.com")
    assert await handshake_passes(origin=b"https://eu.example.org")
    assert not await handshake_passes(origin=b"http://chat.example.com")
    assert not await handshake_passes(origin=b"http://eu.example.org")
    assert not await handshake_passes(origin=b"https://chat.example.com:8443")


async def test_behind_a_tls_proxy_the_forwarded_scheme_counts(settings):
    forwarded_https = [(b"x-forwarded-proto", b"https")]
    assert not await handshake_passes(origin=b"https://localhost", extra=forwarded_https)

    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert await handshake_passes(origin=b"https://localhost", extra=forwarded_https)
    assert not await handshake_passes(origin=b"http://localhost", extra=forwarded_https)
    assert not await handshake_passes(origin=b"https://localhost", extra=[(b"x-forwarded-proto", b"http")])


@pytest.mark.parametrize("path", ["/ws/nope/", "/ws/chat/abc/", "/ws/chat/1/extra/", "/"])
async def test_unknown_paths_are_refused_at_the_handshake_without_an_error(path, caplog):
    socket = communicator(path)
    connected, _ = await socket.connect()
    assert not connected
    assert not [record for record in caplog.records if record.levelname in {"ERROR", "CRITICAL"}]


async def test_chat_ids_beyond_any_database_integer_are_refused_as_not_a_member(client):
    user = await get_user_model().objects.acreate(username="eve", email="eve@example.com")
    cookie = await _sync(session_cookie_for, client, user)
    socket = communicator(f"/ws/chat/{10**30}/", cookie=cookie)
    connected, _ = await socket.connect()
    assert connected
    assert (await socket.receive_output())["code"] == 4403


async def test_a_stopping_server_sends_the_inbox_counts_its_last_messages_left_waiting(monkeypatch):
    """A busy chat's inbox counts wait out an interval (chat/realtime/mailbox.py). uvicorn sends
    the lifespan's shutdown once every socket has closed, before it cancels what still runs
    and closes the loop: they go out then, not an interval later or never."""
    monkeypatch.setattr(mailbox, "INBOX_UPDATE_INTERVAL", 60.0)
    alice = await get_user_model().objects.acreate(username="alice", email="alice@example.com")
    bob = await get_user_model().objects.acreate(username="bob", email="bob@example.com")
    create = database_sync_to_async(services.create_group_chat)
    chats = [await create(creator=alice, name=name, members=[bob]) for name in ("Team", "Lunch")]
    note_serving_loop()  # as the first socket of a server does
    layer = get_channel_layer()
    inboxes = await layer.new_channel()
    await layer.group_add(events.INBOXES_GROUP, inboxes)
    last = {}
    for chat in chats:
        for body in ("first", "second"):  # the second's counts are held back
            last[chat.pk] = await database_sync_to_async(services.send_message)(chat=chat, sender=alice, body=body)
        await asyncio.wait_for(layer.receive(inboxes), 5)  # the first message's, at once

    lifespan = asyncio.Queue()
    for stage in ("startup", "shutdown"):
        lifespan.put_nowait({"type": f"lifespan.{stage}"})
    answers = []

    async def answer(message):
        answers.append(message)

    await application({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan.get, answer)
    held = await asyncio.wait_for(layer.receive(inboxes), 5)

    assert answers == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    bobs = {update["chat_id"]: update for update in held["events"] if update["user_id"] == bob.pk}
    assert {chat_id: (update["message_id"], update["unread"]) for chat_id, update in bobs.items()} == {
        chat.pk: (last[chat.pk].pk, 2) for chat in chats
    }


def test_an_event_loop_closes_with_sockets_still_connecting(client):
    """A server stopping, or a test ending, closes its event loop whatever its sockets are doing:
    every socket's task and receive, and the hubs' readers, are cancelled then and must stop.

    On Python 3.11 a cancel that comes just as a Redis command completes is lost, and a receive
    that lost it blocks again and again: the loop never closed. Closed after more and more turns
    of the loop, the sockets below are cancelled at each step of connecting (the inbox socket's
    hub reader starting, the refused socket's receive starting) in one loop or another.
    """
    user = get_user_model().objects.create(username="fay", email="fay@example.com")
    cookie = session_cookie_for(client, user)

    async def sockets_connecting(turns_before_closing: int) -> None:
        inbox = communicator("/ws/chat/inbox/", cookie=cookie)
        refused = communicator("/ws/chat/inbox/", origin=b"https://evil.example")
        for socket in (inbox, refused):
            asyncio.ensure_future(socket.connect())  # left connecting as the loop closes
        for _ in range(turns_before_closing):
            await asyncio.sleep(0)

    for turns in range(TURNS_BEFORE_CLOSING):
        run_in_a_loop_of_its_own(sockets_connecting, turns)
    run_in_a_loop_of_its_own(trips_left_running_done)


async def trips_left_running_done() -> None:
    """A closed loop's sockets may have left their handshake's trip running on the database
    thread (it runs to its end, whoever waited for it): one more trip, behind them on that
    one thread, returns once they are done. Else the test's flush could find the users'
    table still read (SQLite's in-memory database: "database table is locked")."""
    await database_trip(lambda: None)()


TURNS_BEFORE_CLOSING = 60
# Far beyond the fraction of a second a loop's closing takes: only a loop that never closes fails.
HANG_GUARD_SECONDS = 30


def run_in_a_loop_of_its_own(coroutine_function, *args) -> None:
    """`asyncio.run` it, as a server does: a new event loop, closed at the end."""
    outcome = []

    def run():
        channel_layers.backends.clear()
        try:
            outcome.append(asyncio.run(coroutine_function(*args)))
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_SECONDS)
    assert not thread.is_alive(), f"the event loop did not close within {HANG_GUARD_SECONDS} s"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]


async def test_a_session_from_before_a_password_change_is_refused_with_4401(client):
    """The session's auth hash is checked as Channels' AuthMiddleware checks it."""
    user = await get_user_model().objects.acreate(username="fay", email="fay@example.com")
    cookie = await _sync(session_cookie_for, client, user)
    user.set_password("a new password")
    await user.asave()
    socket = communicator("/ws/chat/inbox/", cookie=cookie)
    connected, _ = await socket.connect()
    assert connected
    assert (await socket.receive_output())["code"] == 4401


async def test_a_deactivated_users_session_is_refused_with_4401(client):
    user = await get_user_model().objects.acreate(username="gus", email="gus@example.com")
    cookie = await _sync(session_cookie_for, client, user)
    user.is_active = False
    await user.asave()
    socket = communicator("/ws/chat/inbox/", cookie=cookie)
    connected, _ = await socket.connect()
    assert connected
    assert (await socket.receive_output())["code"] == 4401


async def test_a_members_room_socket_opens_with_the_session_alone(client):
    from chat import services

    user = await get_user_model().objects.acreate(username="hal", email="hal@example.com")
    other = await get_user_model().objects.acreate(username="ida", email="ida@example.com")
    chat, _ = await _sync(lambda: services.get_or_create_direct_chat(user=user, other=other))
    cookie = await _sync(session_cookie_for, client, user)
    socket = communicator(f"/ws/chat/{chat.pk}/", cookie=cookie)
    connected, _ = await socket.connect()
    assert connected
    greeting = json.loads(await socket.receive_from())
    assert (greeting["type"], greeting["chat_id"]) == ("chat.sync", chat.pk)
    await socket.disconnect()


async def _sync(function, *args):
    from asgiref.sync import sync_to_async

    return await sync_to_async(function)(*args)
