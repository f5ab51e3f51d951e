"""Two server processes on one Redis and one PostgreSQL behave as one chat.

Bakes a redis + postgresql + custom-user project, migrates a fresh database, starts two
daphne processes on different ports, puts member A on server 1 and member B on server 2,
sends to server 1 over a room socket (as the page does) and over HTTP (as it does while
its socket is down), and watches B's sockets on server 2. A send retried on the other
server with the same client id stores and announces nothing new.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from live_servers import (
    COOKIE_FOR_SCRIPT,
    TIMEOUT,
    Project,
    Server,
    bake_project,
    http_request,
    open_socket,
    post_message,
    require_room_client,
    start_servers,
)

pytestmark = pytest.mark.slow

# Longer than channels_redis's 5 s blocking receive: idle sockets must outlive it.
IDLE_SECONDS = 7

# Run in the baked project (its venv): three members of one group, a session and a CSRF
# secret each; prints what the test needs as JSON.
SEED_SCRIPT = (
    COOKIE_FOR_SCRIPT
    + """
from chat import services

User = get_user_model()
a, b, c = (User.objects.create_user(username=n, email=f"{n}@example.com", password="x-" + n) for n in "abc")
chat = services.create_group_chat(creator=a, name="Across servers", members=[b, c])
print(json.dumps({"chat_id": chat.pk, "a": cookie_for(a), "b": cookie_for(b), "c": cookie_for(c)}))
"""
)


@pytest.fixture(scope="module")
def websocket_client():
    return require_room_client()


@pytest.fixture(scope="module")
def project(cookies_session, redis_url: str, postgres_url: str, request) -> Project:
    """The baked project on Redis and on a PostgreSQL database of its own, migrated."""
    return bake_project(cookies_session, request, postgres_url=postgres_url, redis_url=redis_url, name="scale_out")


@pytest.fixture(scope="module")
def seeded(project: Project) -> dict:
    return project.shell_json(SEED_SCRIPT)


@pytest.fixture(scope="module")
def servers(project: Project, tmp_path_factory, request) -> tuple[Server, Server]:
    one, two = start_servers(project, tmp_path_factory.mktemp("daphne"), 2, request)
    return one, two


async def next_frame(ws, frame_type: str, **expected) -> dict:
    """The next frame of this type with these values; fails with what came instead."""
    seen = []

    async def wait() -> dict:
        while True:
            frame = json.loads(await ws.recv())
            seen.append(frame)
            if frame.get("type") == frame_type and all(frame.get(k) == v for k, v in expected.items()):
                return frame

    try:
        return await asyncio.wait_for(wait(), TIMEOUT)
    except TimeoutError:
        pytest.fail(f"no {frame_type} frame with {expected} within {TIMEOUT}s; got {seen}", pytrace=False)


async def send_frame(ws, client_id: str, body: str) -> int:
    """Send over the room socket as the page's outbox does; the message id of the ack."""
    await ws.send(json.dumps({"type": "send", "client_id": client_id, "body": body}))
    return (await next_frame(ws, "ack", client_id=client_id))["message_id"]


async def across_servers(servers: tuple[Server, Server], seeded: dict) -> None:
    one, two = servers
    chat_id, a, b, c = seeded["chat_id"], seeded["a"], seeded["b"], seeded["c"]
    room = f"/ws/chat/{chat_id}/"
    a_room, a_inbox = await open_socket(one, room, a), await open_socket(one, "/ws/chat/inbox/", a)
    b_room, b_inbox = await open_socket(two, room, b), await open_socket(two, "/ws/chat/inbox/", b)
    c_room = None
    try:
        await next_frame(b_room, "chat.presence", online=2)
        c_room = await open_socket(one, room, c)
        await next_frame(b_room, "chat.presence", online=3)
        # B's room is in a background tab: B is not reading it, so the inbox frames of new
        # messages (sent by server 1) must reach B's inbox on server 2.
        await b_room.send(json.dumps({"type": "visibility", "visible": False}))
        await b_room.send(json.dumps({"type": "ping"}))
        await next_frame(b_room, "pong")
        await asyncio.sleep(IDLE_SECONDS)

        first = await send_frame(c_room, "c-first", "hello from server one")
        await next_frame(b_room, "chat.message", chat_id=chat_id, message_id=first, prev_id=0)
        await next_frame(b_inbox, "inbox.message", chat_id=chat_id, message_id=first, sender_id=c["user_id"])
        second = await asyncio.to_thread(post_message, one, chat_id, a, "and again", "a-second")
        await next_frame(b_room, "chat.message", message_id=second, prev_id=first)
        await next_frame(b_inbox, "inbox.message", message_id=second, sender_id=a["user_id"])
        await next_frame(a_room, "chat.message", message_id=second, prev_id=first)

        # C's page never saw the ack and retries over HTTP, on the other server this time.
        retried = await asyncio.to_thread(post_message, two, chat_id, c, "hello from server one", "c-first")
        assert retried == first, "a client id is stored once, whichever server the retry reaches"
        third = await send_frame(a_room, "a-third", "third")
        frame = await next_frame(b_room, "chat.message")
        assert (frame["message_id"], frame["prev_id"]) == (third, second), "the retry announced nothing"

        await a_room.close()
        await next_frame(b_room, "chat.presence", online=2)
        await c_room.close()
        await next_frame(b_room, "chat.presence", online=1)
    finally:
        for ws in (a_room, a_inbox, b_room, b_inbox, c_room):
            if ws is not None:
                await ws.close()


def test_message_and_presence_cross_server_processes(websocket_client, servers, seeded):
    """After an idle spell, sent to server 1 (socket and HTTP), seen by B on server 2; a retry on server 2
    stores and announces nothing; presence follows A and C."""
    try:
        asyncio.run(across_servers(servers, seeded))
    except BaseException:
        for number, server in enumerate(servers, start=1):
            print(f"--- server {number} log ---\n{server.output()}")
        raise


# A member of the group who logs out (their own, so the other tests keep their sessions).
LOGOUT_SEED_SCRIPT = (
    COOKIE_FOR_SCRIPT
    + """
from chat.models import Chat
from chat import services

User = get_user_model()
chat = Chat.objects.get(pk=CHAT_ID)
leaving = User.objects.create_user(username="leaving", email="leaving@example.com", password="x-leaving")
services.add_members(chat=chat, actor=chat.created_by, users=[leaving])
print(json.dumps(cookie_for(leaving)))
"""
)


async def logout_closes_sockets_on_the_other_server(servers: tuple[Server, Server], seeded: dict, leaving: dict):
    one, two = servers
    room = f"/ws/chat/{seeded['chat_id']}/"
    on_two = [await open_socket(two, room, leaving), await open_socket(two, "/ws/chat/inbox/", leaving)]
    on_one = await open_socket(one, "/ws/chat/inbox/", leaving)
    try:
        await next_frame(on_two[0], "chat.presence")
        # A frame the JSON parser cannot take is an error frame; the socket goes on.
        await on_two[0].send('{"type": "ping", "x": ' + "[" * 3000)
        await next_frame(on_two[0], "error", code="malformed")
        status, _ = await asyncio.to_thread(http_request, one.port, "POST", "/accounts/logout/", leaving, body="")
        assert status == 302
        for ws in [*on_two, on_one]:
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
            assert ws.close_code == 4401
    finally:
        for ws in [*on_two, on_one]:
            await ws.close()


def test_logout_on_one_server_closes_the_sessions_sockets_on_both(websocket_client, project, servers, seeded):
    leaving = project.shell_json(f"CHAT_ID = {seeded['chat_id']}\n" + LOGOUT_SEED_SCRIPT)
    try:
        asyncio.run(logout_closes_sockets_on_the_other_server(servers, seeded, leaving))
    except BaseException:
        for number, server in enumerate(servers, start=1):
            print(f"--- server {number} log ---\n{server.output()}")
        raise
