"""Replies, typing and @mentions across two server processes on one Redis and PostgreSQL.

A types and sends on server 1; B, on server 2, sees the typing, the reply's quote and, in
the inbox, the mention. Uses test_scale_out's baked project, seed and servers (fixtures of
this module's own: a project, a database and two daphne processes of its own).
"""

from __future__ import annotations

import asyncio
import json

import pytest
import test_scale_out
from live_servers import TIMEOUT, open_socket
from test_scale_out import next_frame

pytestmark = pytest.mark.slow

websocket_client, project, seeded, servers = (
    test_scale_out.websocket_client,
    test_scale_out.project,
    test_scale_out.seeded,
    test_scale_out.servers,
)


async def composer_across_servers(servers, seeded: dict) -> None:
    one, two = servers
    chat_id, a, b, c = seeded["chat_id"], seeded["a"], seeded["b"], seeded["c"]
    room = f"/ws/chat/{chat_id}/"
    a_room, c_room = await open_socket(one, room, a), await open_socket(one, room, c)
    b_room, b_inbox = await open_socket(two, room, b), await open_socket(two, "/ws/chat/inbox/", b)
    try:
        await next_frame(b_room, "chat.presence", online=3)
        # B's tab is in the background: not reading, so the mention stays unread for the inbox.
        await b_room.send(json.dumps({"type": "visibility", "visible": False}))

        await a_room.send(json.dumps({"type": "typing"}))
        typing = await next_frame(b_room, "chat.typing")
        assert (typing["user_id"], typing["name"], typing["chat_id"]) == (a["user_id"], "a", chat_id)
        await next_frame(c_room, "chat.typing", user_id=a["user_id"])

        await c_room.send(json.dumps({"type": "send", "client_id": "c-q", "body": "Question\nwith details"}))
        question = (await next_frame(c_room, "ack", client_id="c-q"))["message_id"]
        await a_room.send(json.dumps({"type": "send", "client_id": "a-r", "body": "@b answers", "reply_to": question}))
        reply = await next_frame(b_room, "chat.message", prev_id=question)
        assert f'data-reply-to="{question}"' in reply["html"]
        assert "Question" in reply["html"] and "with details" not in reply["html"]
        assert '<span class="mention" data-mention-user-id="{}">@b</span>'.format(b["user_id"]) in reply["html"]
        inbox = await next_frame(b_inbox, "inbox.message", message_id=reply["message_id"])
        assert inbox["mentioned"] is True
        # The typist never hears their own signal (it was sent before both messages).
        seen = await frames_until(a_room, "chat.message", message_id=reply["message_id"])
        assert [frame for frame in seen if frame["type"] == "chat.typing"] == []
        assert question in [frame.get("message_id") for frame in seen]
    finally:
        for ws in (a_room, c_room, b_room, b_inbox):
            await ws.close()


async def frames_until(ws, frame_type: str, **expected) -> list[dict]:
    """Every frame up to and including the first of this type with these values."""
    seen = []

    async def wait() -> list[dict]:
        while True:
            frame = json.loads(await ws.recv())
            seen.append(frame)
            if frame.get("type") == frame_type and all(frame.get(k) == v for k, v in expected.items()):
                return seen

    try:
        return await asyncio.wait_for(wait(), TIMEOUT)
    except TimeoutError:
        pytest.fail(f"no {frame_type} frame with {expected} within {TIMEOUT}s; got {seen}", pytrace=False)


def test_typing_replies_and_mentions_cross_server_processes(websocket_client, servers, seeded):
    """Typing on server 1 reaches B on server 2; a reply's quote and a mention too, to B's room and inbox."""
    try:
        asyncio.run(composer_across_servers(servers, seeded))
    except BaseException:
        for number, server in enumerate(servers, start=1):
            print(f"--- server {number} log ---\n{server.output()}")
        raise
