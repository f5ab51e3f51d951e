"""In a real browser: the room sends over its socket when that is open, over HTTP when it
is not, a message whose socket dies before the ack is still stored once, and one answered
busy goes again after Retry-After by itself. Messages typed before the first is acked go
out at once, each naming the one before it, and are stored in the order typed even when
the first is answered busy.

Shares the served project and the Chromium of test_browser (its fixtures are imported).
"""

from __future__ import annotations

import json
import re
import time

import pytest
import test_browser
from test_browser import goto_with_socket, room_path, send

pytestmark = pytest.mark.slow

# test_browser's fixtures: one served project and one Chromium per module.
server, browser, open_as = test_browser.server, test_browser.browser, test_browser.open_as

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips or fails
    expect = None

# Runs in `manage.py shell`: the bodies stored in a chat, oldest first.
BODIES_SCRIPT = """
from chat.models import Message
print(json.dumps(list(Message.objects.filter(chat_id=CHAT_ID).order_by("id").values_list("body", flat=True))))
"""


def watch_sends(page):
    """Record the send frames the page's sockets send and its POSTs to send/."""
    seen = {"frames": [], "posts": []}

    def on_socket(ws):
        def on_frame(payload):
            if isinstance(payload, str) and '"send"' in payload:
                frame = json.loads(payload)
                if frame.get("type") == "send":
                    seen["frames"].append(frame)

        ws.on("framesent", on_frame)

    page.on("websocket", on_socket)
    page.on("request", lambda r: r.method == "POST" and r.url.endswith("/send/") and seen["posts"].append(r))
    return seen


def is_send_frame(message) -> bool:
    try:
        return json.loads(message).get("type") == "send"
    except (TypeError, ValueError, AttributeError):
        return False


def relay_room_socket(page, on_send):
    """Route the page's room sockets through the test: `on_send(frame, raw, to_server, to_page)`
    decides what becomes of each send frame; everything else passes through."""

    def relay(ws):
        upstream = ws.connect_to_server()

        def from_page(message):
            if is_send_frame(message):
                return on_send(json.loads(message), message, upstream.send, ws.send)
            upstream.send(message)

        ws.on_message(from_page)

    page.route_web_socket(re.compile(r".*/ws/chat/\d+/(\?|$)"), relay)


def open_direct_chat(server, open_as, first: str, second: str, *, on_send=None):
    """Both people in their direct chat's room; what the first one sends is watched (and
    with `on_send`, relayed through the test: `relay_room_socket`)."""
    chat_id = server.set_up(users=[first, second], chats=[(first, second, [])])["chats"][f"{first}:{second}"]
    pages = open_as(first), open_as(second)
    if on_send is not None:
        relay_room_socket(pages[0], on_send)
    seen = watch_sends(pages[0])
    for page in pages:
        goto_with_socket(page, room_path(chat_id), f"/ws/chat/{chat_id}/")
    return chat_id, pages, seen


def form_field(request, name: str) -> str:
    """A field of a POST the page sent as multipart form data (the outbox's FormData)."""
    found = re.search(rf'name="{name}"\r\n\r\n(.*?)\r\n', request.post_data, re.DOTALL)
    assert found, request.post_data
    return found.group(1)


def stored_bodies(server, chat_id: int) -> list[str]:
    return server.shell(BODIES_SCRIPT, CHAT_ID=chat_id)


def test_with_the_socket_open_a_message_goes_over_it_not_over_http(server, open_as):
    chat_id, (kim, lee), seen = open_direct_chat(server, open_as, "kim", "lee")

    send(kim, "over the socket")

    expect(lee.locator("main .bubble-body")).to_have_text(["over the socket"])
    expect(kim.locator("main .bubble-body")).to_have_text(["over the socket"])
    assert [frame["body"] for frame in seen["frames"]] == ["over the socket"]
    assert seen["posts"] == []
    assert stored_bodies(server, chat_id) == ["over the socket"]


def test_with_the_socket_down_a_message_goes_over_http(server, open_as):
    chat_id, (max_, ned), seen = open_direct_chat(server, open_as, "max", "ned")
    max_.evaluate("document.querySelector('main [data-chat-room]').chatRoom.socket.stop()")

    send(max_, "over http")

    expect(max_.locator("main .bubble-body")).to_have_text(["over http"])
    expect(ned.locator("main .bubble-body")).to_have_text(["over http"])
    assert seen["frames"] == []
    assert len(seen["posts"]) == 1
    assert stored_bodies(server, chat_id) == ["over http"]


def test_a_message_whose_socket_dies_before_the_ack_is_stored_once(server, open_as):
    chat_id = server.set_up(users=["oli", "pia"], chats=[("oli", "pia", [])])["chats"]["oli:pia"]
    oli, pia = open_as("oli"), open_as("pia")
    goto_with_socket(pia, room_path(chat_id), f"/ws/chat/{chat_id}/")
    # Oli's room socket passes everything through, but its first send frame reaches the
    # server just as the connection drops, before any ack: the page must retry (over HTTP,
    # with the same client id) and the server must store the message once.
    dropped = []

    def relay(ws):
        upstream = ws.connect_to_server()

        def from_page(message):
            upstream.send(message)
            if not dropped and is_send_frame(message):
                dropped.append(message)
                ws.close(code=4000, reason="dropped by the test")

        ws.on_message(from_page)

    oli.route_web_socket(re.compile(r".*/ws/chat/\d+/(\?|$)"), relay)
    seen = watch_sends(oli)
    goto_with_socket(oli, room_path(chat_id), f"/ws/chat/{chat_id}/")

    send(oli, "sent once")

    expect(pia.locator("main .bubble-body")).to_have_text(["sent once"])
    expect(oli.locator("main .bubble-body")).to_have_text(["sent once"])
    assert len(dropped) == 1
    assert len(seen["posts"]) == 1  # the retry went over HTTP
    assert stored_bodies(server, chat_id) == ["sent once"]
    oli.reload()
    expect(oli.locator("main .bubble-body")).to_have_text(["sent once"])


def test_a_message_answered_busy_goes_again_after_retry_after_once_and_before_the_next(server, open_as):
    """The server was past its capacity (or its database busy) for the first try: 503 with
    Retry-After. The page says so, waits at least that long, sends it again by itself (the
    next message typed meanwhile waits behind it), and each is stored once, in order."""
    chat_id, (uma, vic), seen = open_direct_chat(server, open_as, "uma", "vic")
    uma.evaluate("document.querySelector('main [data-chat-room]').chatRoom.socket.stop()")
    posted_at = []

    def busy_the_first_time(route):
        posted_at.append(time.monotonic())
        if len(posted_at) > 1:
            return route.continue_()
        busy = '<div class="error-box" role="alert"><p>The server is busy. Try again in a moment.</p></div>'
        return route.fulfill(status=503, headers={"Retry-After": "1", "Content-Type": "text/html"}, body=busy)

    uma.route(re.compile(r".*/send/$"), busy_the_first_time)

    send(uma, "first")
    expect(uma.locator("main .send-status")).to_contain_text("Sending again in")
    send(uma, "second")

    expect(vic.locator("main .bubble-body")).to_have_text(["first", "second"])
    expect(uma.locator("main .bubble-body")).to_have_text(["first", "second"])
    assert stored_bodies(server, chat_id) == ["first", "second"]
    posts = [(form_field(post, "body"), form_field(post, "client_id")) for post in seen["posts"]]
    first_id = posts[0][1]
    # The same client id again: stored once whatever happened to the first try.
    assert posts == [("first", first_id), ("first", first_id), ("second", posts[2][1])] and posts[2][1] != first_id
    assert posted_at[1] - posted_at[0] >= 1.0, posted_at  # Retry-After waited out


def test_messages_typed_before_the_first_is_acked_go_out_at_once_each_after_the_one_before(server, open_as):
    """On a slow network a quick typist's messages do not queue behind each other's round
    trips: the server sees none of them until the third is sent, and all are stored in order."""
    frames, held = [], []

    def hold_until_three(frame, raw, to_server, to_page):
        frames.append(frame)
        held.append(raw)
        if len(held) == 3:  # sent without any ack: the server has seen none of them
            for message in held:
                to_server(message)

    chat_id, (ari, bo), seen = open_direct_chat(server, open_as, "ari", "bo", on_send=hold_until_three)

    for body in ("one", "two", "three"):
        send(ari, body)

    expect(bo.locator("main .bubble-body")).to_have_text(["one", "two", "three"])
    expect(ari.locator("main .bubble-body")).to_have_text(["one", "two", "three"])
    assert [frame["body"] for frame in frames] == ["one", "two", "three"]
    assert "after" not in frames[0]
    assert [frame["after"] for frame in frames[1:]] == [frames[0]["client_id"], frames[1]["client_id"]]
    assert seen["posts"] == []
    assert stored_bodies(server, chat_id) == ["one", "two", "three"]


def test_a_message_answered_busy_holds_the_ones_typed_after_it_which_go_again_after_it(server, open_as):
    """The first message is answered busy while the second is already out: the server
    refuses the second (the one it follows is not stored), and the page sends both again
    after Retry-After, in the order typed, each stored once."""
    frames, first = [], []

    def busy_for_the_first_try(frame, raw, to_server, to_page):
        frames.append(frame)
        if not first:  # held until the second is out, then answered busy, never stored
            first.append(frame)
            return
        if len(frames) == 2:
            busy = {"type": "error", "code": "busy", "error": "The server is busy; sending again."}
            to_page(json.dumps({**busy, "client_id": first[0]["client_id"], "retry_after": 1}))
        to_server(raw)

    chat_id, (cy, di), seen = open_direct_chat(server, open_as, "cy", "di", on_send=busy_for_the_first_try)

    send(cy, "first")
    send(cy, "second")

    expect(cy.locator("main .send-status")).to_contain_text("Sending again in")
    expect(di.locator("main .bubble-body")).to_have_text(["first", "second"])
    expect(cy.locator("main .bubble-body")).to_have_text(["first", "second"])
    expect(cy.locator("main .send-status")).to_be_hidden()
    assert stored_bodies(server, chat_id) == ["first", "second"]
    first_id, second_id = frames[0]["client_id"], frames[1]["client_id"]
    tries = [(frame["body"], frame["client_id"], frame.get("after")) for frame in frames]
    assert tries == [("first", first_id, None), ("second", second_id, first_id)] * 2
    assert seen["posts"] == []


def test_a_message_acked_over_the_socket_while_its_http_try_hangs_does_not_hold_the_next(server, open_as):
    """No ack within 5 s: the message goes over HTTP too, and that request hangs. The ack
    then comes over the socket: the next message goes at once, not after the hanging request."""
    chat_id = server.set_up(users=["eve", "fay"], chats=[("eve", "fay", [])])["chats"]["eve:fay"]
    eve, fay = open_as("eve"), open_as("fay")
    goto_with_socket(fay, room_path(chat_id), f"/ws/chat/{chat_id}/")
    held_acks, hanging_posts, sockets = [], [], []

    def relay(ws):
        upstream = ws.connect_to_server()
        sockets.append(ws)

        def from_server(message):
            if not held_acks and '"ack"' in message:
                held_acks.append(message)  # the first ack: held until its HTTP try is under way
                return
            ws.send(message)

        upstream.on_message(from_server)

    def hang(route):
        hanging_posts.append(route)
        if held_acks and sockets:
            sockets[-1].send(held_acks[0])

    eve.route_web_socket(re.compile(r".*/ws/chat/\d+/(\?|$)"), relay)
    eve.route(re.compile(r".*/send/$"), hang)
    goto_with_socket(eve, room_path(chat_id), f"/ws/chat/{chat_id}/")

    send(eve, "first")
    expect(fay.locator("main .bubble-body")).to_have_text(["first"])
    eve.wait_for_timeout(6000)  # past the 5 s ack timeout: the HTTP try starts, the ack follows it
    assert len(hanging_posts) == 1
    send(eve, "second")

    expect(fay.locator("main .bubble-body")).to_have_text(["first", "second"])
    assert len(hanging_posts) == 1  # still hanging: the second did not wait for it
    for route in hanging_posts:
        route.continue_()
    expect(eve.locator("main .bubble-body")).to_have_text(["first", "second"])
    assert stored_bodies(server, chat_id) == ["first", "second"]
