"""End to end in a real browser: what two people see while they chat.

Playwright drives Debian's Chromium (never a downloaded one) against one baked default
project served by daphne (see served_project.py). Every scenario has its own fresh users,
so the scenarios share the server and not their state.
Assertions wait on conditions (Playwright's `expect`), never on fixed sleeps.
Screenshots land in test-artifacts/browser/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from baking import TEMPLATE_DIR
from conftest import unavailable
from served_project import DEMO_PASSWORD, ServedProject

CHROMIUM = Path(os.environ.get("CHAT_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
ARTIFACTS = TEMPLATE_DIR / "test-artifacts" / "browser"
PAGE_SIZE = 20  # CHAT_PAGE_SIZE for the served project, so seeded chats have older pages
XSS = "<img src=x onerror=alert(1)>"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}

# Runs in `manage.py shell`: a page of inbox rows and EXTRA more for USERNAME, as groups of
# their own (the inbox page size is a project setting, not read from the environment).
# Prints the page size and the new chats' ids, oldest first.
GROUPS_BEYOND_ONE_PAGE_SCRIPT = """
from django.contrib.auth import get_user_model
from chat import services
from chat.conf import chat_setting
owner = get_user_model().objects.get(username=USERNAME)
size = chat_setting("CHAT_INBOX_PAGE_SIZE")
chats = [services.create_group_chat(creator=owner, name=f"Archive {n}", members=[]) for n in range(size + EXTRA)]
print(json.dumps({"page_size": size, "chat_ids": [chat.pk for chat in chats]}))
"""

pytestmark = pytest.mark.slow  # conftest puts all of a module's slow tests on one xdist worker


def require(condition: bool, reason: str) -> None:
    if not condition:
        unavailable(reason)


try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # checked again in the `browser` fixture, which skips or fails
    sync_playwright = None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    project = ServedProject(tmp_path_factory.mktemp("browser"), env={"CHAT_PAGE_SIZE": str(PAGE_SIZE)})
    project.manage("migrate", "--verbosity", "0")
    project.manage("seed_chat_data", "--quiet")
    project.start()
    yield project
    project.stop()


@pytest.fixture(scope="module")
def browser():
    require(sync_playwright is not None, "the playwright package is not installed (requirements-dev.txt)")
    require(CHROMIUM.is_file(), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    expect.set_options(timeout=15_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_as(server, browser):
    """`open_as("ann")` is a logged-in page in a browser context of its own (closed after the test)."""
    contexts = []

    def open_page(username: str, viewport: dict = DESKTOP) -> Page:
        context = browser.new_context(viewport=viewport, base_url=server.base_url)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.dialogs = []
        page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(r"/chat/$"))
        # The inbox's scripts and htmx have run (a field filled before htmx wires it up
        # sends no lookup): a person is never that quick, a test on a busy machine is.
        page.wait_for_load_state("load")
        return page

    yield open_page
    for context in contexts:
        context.close()


def until_socket_speaks(page: Page, socket_path: str, action, timeout: float = 15, room: bool = False) -> None:
    """Do `action()`, then wait until the socket at `socket_path` it opens has delivered a frame
    (with `room`, any room socket: `socket_path` is then "/ws/chat/" and the chat id unknown).

    Listening starts before the action: the server's first frame can beat any later listener.
    """
    heard = []

    def listen(ws):
        path = urlsplit(ws.url).path  # a room socket's URL asks ?after= the newest message shown
        is_room = re.fullmatch(r"/ws/chat/\d+/", path) is not None
        if (room and is_room) or (not room and path == socket_path):
            ws.on("framereceived", lambda payload: heard.append(payload))

    page.on("websocket", listen)
    try:
        action()
        deadline = time.monotonic() + timeout
        while not heard:
            assert time.monotonic() < deadline, f"no frame from {socket_path} within {timeout}s"
            page.wait_for_timeout(50)  # lets Playwright deliver events; a poll, not a fixed wait
    finally:
        page.remove_listener("websocket", listen)


def goto_with_socket(page: Page, path: str, socket_path: str) -> None:
    """Open `path` and wait until the socket at `socket_path` is open and talking."""
    until_socket_speaks(page, socket_path, lambda: page.goto(path))


def send(page: Page, text: str, scope: str = "main") -> None:
    box = page.locator(f"{scope} [data-message-input]")
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def bubble_texts(page: Page, scope: str = "main") -> list[str]:
    return page.locator(f"{scope} [data-message-list] .bubble-body").all_inner_texts()


def shoot(page: Page, name: str) -> None:
    page.screenshot(path=ARTIFACTS / f"{name}.png")


def room_path(chat_id: int) -> str:
    return f"/chat/{chat_id}/"


# --- direct chat ---------------------------------------------------------------------


def test_direct_chat_by_email_live_inbox_badge_and_reply(server, open_as):
    server.set_up(users=["pat", "quinn"])
    pat, quinn = open_as("pat"), open_as("quinn")
    goto_with_socket(quinn, "/chat/", "/ws/chat/inbox/")
    expect(quinn.get_by_text("No chats yet")).to_be_visible()
    shoot(quinn, "inbox-empty")

    pat.get_by_role("button", name="New chat").click()
    dialog = pat.get_by_role("dialog", name="New chat")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Their e-mail")).to_be_focused()
    dialog.get_by_label("Their e-mail").fill("quinn@example.com")
    expect(dialog.get_by_text("Found: Quinn")).to_be_visible()
    shoot(pat, "new-chat-dialog")
    # The room's script is running once its socket talks: only then does Enter send.
    until_socket_speaks(pat, "/ws/chat/", lambda: dialog.get_by_role("button", name="Start chat").click(), room=True)
    expect(pat.get_by_role("heading", name="Quinn")).to_be_visible()
    expect(pat.get_by_text("No messages yet")).to_be_visible()
    send(pat, "Hello Quinn, lunch today?")
    expect(pat.locator("main .bubble--mine .bubble-body")).to_have_text(["Hello Quinn, lunch today?"])

    row = quinn.locator("[data-chat-row]", has_text="Pat")
    expect(row.locator("[data-chat-unread]")).to_have_text("1")
    expect(row.locator("[data-chat-preview]")).to_contain_text("Hello Quinn, lunch today?")
    expect(quinn.locator(".navbar [data-total-unread]")).to_have_text("1")

    chat_id = int(row.get_attribute("data-chat-id"))
    until_socket_speaks(quinn, f"/ws/chat/{chat_id}/", row.click)
    expect(quinn.locator("main .bubble-body")).to_have_text(["Hello Quinn, lunch today?"])
    expect(quinn.locator(".navbar [data-total-unread]")).to_be_hidden()
    send(quinn, "Yes! 12:30?")

    expect(pat.locator("main .bubble-body")).to_have_text(["Hello Quinn, lunch today?", "Yes! 12:30?"])
    expect(pat.locator("main .bubble").last).not_to_have_class(re.compile("bubble--mine"))


# --- groups --------------------------------------------------------------------------


def test_group_create_rename_remove_leave_delete(server, open_as):
    server.set_up(users=["gina", "hank", "ivy", "jack"])
    gina = open_as("gina")
    gina.get_by_role("button", name="New group").click()
    dialog = gina.get_by_role("dialog", name="New group")
    expect(dialog.get_by_label("Group name")).to_be_focused()
    dialog.get_by_label("Group name").fill("Trip planning")
    dialog.get_by_label("Members").fill("hank@example.com, ivy@example.com\njack@example.com")
    dialog.get_by_role("button", name="Create group").click()
    expect(gina.get_by_role("heading", name="Trip planning")).to_be_visible()
    chat_id = int(re.search(r"/chat/(\d+)/", gina.url).group(1))

    hank, ivy, jack = open_as("hank"), open_as("ivy"), open_as("jack")
    for member in (hank, ivy, jack):
        expect(member.locator("[data-chat-row]", has_text="Trip planning")).to_be_visible()
    goto_with_socket(hank, room_path(chat_id), f"/ws/chat/{chat_id}/")
    goto_with_socket(jack, room_path(chat_id), f"/ws/chat/{chat_id}/")

    gina.get_by_role("link", name="Info").click()
    expect(gina.get_by_text("Group · 4 members")).to_be_visible()
    gina.get_by_role("link", name="Edit group").click()
    gina.get_by_label("Group name").fill("Summer trip")
    gina.get_by_role("button", name="Save name").click()
    expect(gina.get_by_text("Group renamed.")).to_be_visible()
    expect(gina.get_by_role("heading", name="Edit “Summer trip”")).to_be_visible()
    gina.wait_for_load_state("load")  # the confirmation dialog's script runs by then

    gina.get_by_role("button", name="Remove Hank").click()
    gina.get_by_role("dialog", name="Remove Hank from the group?").get_by_role("button", name="Remove").click()
    expect(gina.get_by_text("Hank was removed from the group.")).to_be_visible()
    expect(hank.get_by_text("You are no longer a member of this chat.")).to_be_visible()
    expect(hank.locator("main [data-message-input]")).to_be_disabled()

    ivy.goto(room_path(chat_id) + "info/")
    ivy.get_by_role("button", name="Leave group").click()
    ivy.get_by_role("dialog", name="Leave this group?").get_by_role("button", name="Leave group").click()
    expect(ivy.get_by_text("You left “Summer trip”.")).to_be_visible()
    expect(ivy.locator("[data-chat-row]", has_text="Summer trip")).to_have_count(0)

    gina.goto(room_path(chat_id) + "info/")
    expect(gina.get_by_text("Group · 2 members")).to_be_visible()
    gina.get_by_role("button", name="Delete group for everyone").click()
    confirm = gina.get_by_role("dialog", name="Delete this group and all its messages for everyone?")
    confirm.get_by_role("button", name="Delete group for everyone").click()
    expect(gina.get_by_text("Group “Summer trip” deleted for everyone.")).to_be_visible()
    expect(jack.get_by_text("This group was deleted.")).to_be_visible()
    expect(jack.locator("main [data-message-input]")).to_be_disabled()


# --- history -------------------------------------------------------------------------


def test_load_older_keeps_scroll_position_and_order(server, open_as):
    longest = server.longest_chat("alice")
    all_ids = longest["message_ids"]
    assert len(all_ids) > 2 * PAGE_SIZE, "the seeded chat is too short to need two older pages"
    alice = open_as("alice")
    goto_with_socket(alice, room_path(longest["chat_id"]), f"/ws/chat/{longest['chat_id']}/")
    bubbles = alice.locator("main [data-message-list] [data-message-id]")
    expect(bubbles).to_have_count(PAGE_SIZE)

    for pages in (2, 3):
        anchor = bubbles.first
        anchor_id = anchor.get_attribute("data-message-id")
        alice.locator("main [data-message-list]").evaluate("list => { list.scrollTop = 0; }")
        top_before = anchor.evaluate("el => el.getBoundingClientRect().top")
        alice.get_by_role("button", name="Load older messages").click()
        expect(bubbles).to_have_count(min(pages * PAGE_SIZE, len(all_ids)))
        shown = [int(i) for i in bubbles.evaluate_all("els => els.map(el => el.dataset.messageId)")]
        assert shown == all_ids[-len(shown) :], "older messages are not in order (or not the ones just before)"
        anchored = alice.locator(f"#message-{anchor_id}")
        assert abs(anchored.evaluate("el => el.getBoundingClientRect().top") - top_before) < 2, "the view jumped"


# --- inbox paging --------------------------------------------------------------------


def test_live_inbox_refresh_keeps_the_rows_loaded_with_show_more(server, open_as):
    server.set_up(users=["lena", "milo"])
    seeded = server.shell(GROUPS_BEYOND_ONE_PAGE_SCRIPT, USERNAME="lena", EXTRA=3)
    newest_first = [str(chat_id) for chat_id in reversed(seeded["chat_ids"])]
    lena = open_as("lena")
    goto_with_socket(lena, "/chat/", "/ws/chat/inbox/")
    rows = lena.locator("main [data-chat-row]")
    show_more = lena.locator("main").get_by_role("button", name="Show more")

    def shown_ids() -> list[str]:
        return rows.evaluate_all("els => els.map(el => el.dataset.chatId)")

    expect(rows).to_have_count(seeded["page_size"])
    show_more.click()
    expect(rows).to_have_count(len(newest_first))
    expect(show_more).to_have_count(0)
    assert shown_ids() == newest_first

    # Started in Milo's browser, so the server's own channel layer tells Lena's inbox
    # socket (inbox.changed) and her list refreshes itself from the server.
    milo = open_as("milo")
    milo.get_by_role("button", name="New chat").click()
    dialog = milo.get_by_role("dialog", name="New chat")
    dialog.get_by_label("Their e-mail").fill("lena@example.com")
    expect(dialog.get_by_text("Found: Lena")).to_be_visible()
    dialog.get_by_role("button", name="Start chat").click()
    expect(milo.get_by_role("heading", name="Lena")).to_be_visible()

    expect(rows.first).to_contain_text("Milo")
    expect(rows).to_have_count(len(newest_first))  # as many rows as were shown, not one page
    new_id = rows.first.get_attribute("data-chat-id")
    assert shown_ids() == [new_id, *newest_first[:-1]], "the refresh lost or reordered rows loaded with Show more"
    show_more.click()  # the oldest row, pushed past the shown count by the new chat
    expect(rows).to_have_count(len(newest_first) + 1)
    assert shown_ids() == [new_id, *newest_first], "Show more after the refresh lost or repeated a row"
    expect(show_more).to_have_count(0)


# --- widget --------------------------------------------------------------------------


def test_widget_badge_keyboard_list_room_send_and_receive(server, open_as):
    ids = server.set_up(users=["wendy", "walt"], chats=[("walt", "wendy", ["Are you around?", "Ping me back"])])
    chat_id = ids["chats"]["walt:wendy"]
    wendy, walt = open_as("wendy"), open_as("walt")
    goto_with_socket(wendy, "/chat/new/", "/ws/chat/inbox/")  # a page without the inbox or a room
    fab = wendy.locator("[data-chat-widget-toggle]")
    expect(fab.locator("[data-total-unread]")).to_have_text("2")

    goto_with_socket(walt, room_path(chat_id), f"/ws/chat/{chat_id}/")
    send(walt, "Third one, live")
    expect(fab.locator("[data-total-unread]")).to_have_text("3")

    panel = wendy.locator("#chat-widget-panel")
    fab.focus()
    wendy.keyboard.press("Enter")
    expect(panel).to_be_visible()
    expect(fab).to_have_attribute("aria-expanded", "true")
    row = panel.locator("[data-chat-row]", has_text="Walt")
    expect(row.locator("[data-chat-unread]")).to_have_text("3")
    expect(row.locator("[data-chat-preview]")).to_contain_text("Third one, live")
    wendy.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(fab).to_be_focused()
    wendy.keyboard.press(" ")
    expect(panel).to_be_visible()
    shoot(wendy, "widget-list")

    until_socket_speaks(wendy, f"/ws/chat/{chat_id}/", row.click)
    expect(panel.locator(".bubble-body")).to_have_text(["Are you around?", "Ping me back", "Third one, live"])
    expect(fab.locator("[data-total-unread]")).to_be_hidden()
    send(wendy, "Here now!", scope="#chat-widget-panel")
    expect(walt.locator("main .bubble-body").last).to_have_text("Here now!")
    send(walt, "Great, call you in 5")
    expect(panel.locator(".bubble-body").last).to_have_text("Great, call you in 5")
    expect(fab.locator("[data-total-unread]")).to_be_hidden()  # read where it was shown
    shoot(wendy, "widget-room")


# --- reconnect -----------------------------------------------------------------------

# The page retries a socket that would not open with full-jitter backoff capped at 15 s
# (chat-websocket.js): after a long outage its next try may come up to 15 s after the
# server is back. Waiting for the reopen allows that, and the checks after it the usual 15 s.
REOPENED_WITHIN_MS = 15_000 + 15_000


def test_messages_sent_while_the_server_restarts_appear_once_in_order(server, open_as):
    ids = server.set_up(users=["rita", "sam"], chats=[("rita", "sam", ["Before the restart"])])
    chat_id = ids["chats"]["rita:sam"]
    sam = open_as("sam")
    goto_with_socket(sam, room_path(chat_id), f"/ws/chat/{chat_id}/")
    expect(sam.locator("main .bubble-body")).to_have_text(["Before the restart"])

    server.stop()
    hint = sam.locator("main [data-connection-status]")
    expect(hint).to_be_visible()
    expect(hint).to_have_text(re.compile("reconnecting", re.IGNORECASE))
    shoot(sam, "room-reconnecting")
    missed = [f"Sent while you were away {n}" for n in range(1, 4)]
    server.send(sender="rita", receiver="sam", bodies=missed)
    server.start()

    expect(hint).to_be_hidden(timeout=REOPENED_WITHIN_MS)
    expect(sam.locator("main .bubble-body")).to_have_text(["Before the restart", *missed])
    rita = open_as("rita")
    goto_with_socket(rita, room_path(chat_id), f"/ws/chat/{chat_id}/")
    send(rita, "And one after it")
    expect(sam.locator("main .bubble-body")).to_have_text(["Before the restart", *missed, "And one after it"])


def test_message_sent_between_page_load_and_socket_open_appears(server, open_as):
    """The room socket joins after the page rendered: what was sent in between is fetched on open."""
    ids = server.set_up(users=["tess", "umar"], chats=[("tess", "umar", ["Rendered with the page"])])
    chat_id = ids["chats"]["tess:umar"]
    umar = open_as("umar")

    def send_then_connect(ws) -> None:  # the message lands after the render, before the join
        server.send(sender="tess", receiver="umar", bodies=["Sent before the socket opened"])
        ws.connect_to_server()

    umar.route_web_socket(re.compile(rf"/ws/chat/{chat_id}/(\?|$)"), send_then_connect)
    umar.goto(room_path(chat_id))
    expect(umar.locator("main .bubble-body")).to_have_text(["Rendered with the page", "Sent before the socket opened"])


def greeting_after_each(page: Page, chat_id: int, frame_type: str, greeting) -> None:
    """The page's room socket relayed, with a greeting after each frame of this type, still
    behind (`greeting(frame)`: its last_message_id and change_seq), as a reopened socket's
    greeting is when the room missed more than a page."""

    def relay(ws):
        upstream = ws.connect_to_server()

        def from_server(message):
            ws.send(message)
            frame = json.loads(message)
            if frame.get("type") == frame_type:
                ws.send(json.dumps({"type": "chat.sync", "chat_id": chat_id, "change_seq": 0, **greeting(frame)}))

        upstream.on_message(from_server)

    page.route_web_socket(re.compile(rf"/ws/chat/{chat_id}/(\?|$)"), relay)


def slow_catch_ups(page: Page, chat_id: int, parameter: str) -> list[str]:
    """The page's catch-up requests (`messages/?<parameter>=...`) answered a second late, past
    the reorder grace (0.4 s): their queries, in the order asked."""
    queries = []

    def answer_late(route):
        queries.append(urlsplit(route.request.url).query)
        time.sleep(1)
        route.continue_()

    page.route(re.compile(rf"/chat/{chat_id}/messages/\?{parameter}="), answer_late)
    return queries


def test_a_greeting_behind_while_a_frame_waits_out_the_reorder_grace_fetches_the_gap_once(server, open_as):
    """A frame that skips a message waits a moment for the one it skipped, then the page
    fetches the gap. A catch-up that starts meanwhile (here a greeting naming a newer message
    than the page shows) fetches it already: the grace's timer must not ask again."""
    ids = server.set_up(users=["vera", "wim"], chats=[("vera", "wim", ["Shown with the page"])])
    chat_id = ids["chats"]["vera:wim"]
    wim, vera = open_as("wim"), open_as("vera")
    greeting_after_each(wim, chat_id, "chat.message", lambda frame: {"last_message_id": frame["message_id"]})
    queries = slow_catch_ups(wim, chat_id, "after")
    for page in (wim, vera):
        goto_with_socket(page, room_path(chat_id), f"/ws/chat/{chat_id}/")
    server.send(sender="vera", receiver="wim", bodies=["Stored without a frame"])  # outside the server
    send(vera, "Sent live")

    shown_bodies = ["Shown with the page", "Stored without a frame", "Sent live"]
    expect(wim.locator("main .bubble-body")).to_have_text(shown_bodies)
    wim.wait_for_timeout(2500)  # past the grace and one more slow answer, had one been asked for
    shown = wim.locator("main [data-message-id]").evaluate_all("els => els.map(e => e.dataset.messageId)")
    first, _, live = shown
    assert queries == [f"after={first}&before={live}", f"after={live}"]


def test_a_socket_closed_at_once_after_its_open_reconnects_with_growing_waits(server, open_as):
    """Let in and closed before a frame (1013: the database busy), as a server under strain
    does: the waits grow as after a refused connection, instead of starting over at each
    open and trying again every half second for as long as the fault lasts."""
    chat_id = server.set_up(users=["yara", "zeke"], chats=[("yara", "zeke", ["Hello"])])["chats"]["yara:zeke"]
    zeke = open_as("zeke")
    attempts = []

    def busy(ws):
        """Open (the page reports what it views on each open), then closed at its first frame."""
        attempts.append(time.monotonic())
        ws.on_message(lambda _: ws.close(code=1013, reason="Try again later"))

    zeke.route_web_socket(re.compile(rf"/ws/chat/{chat_id}/(\?|$)"), busy)
    zeke.goto(room_path(chat_id))
    zeke.wait_for_timeout(6000)  # half-second waits would make about 24 attempts by now
    assert 2 <= len(attempts) <= 10, [round(at - attempts[0], 2) for at in attempts]


# --- XSS -----------------------------------------------------------------------------


def test_markup_in_a_message_is_shown_as_text_in_room_list_and_widget(server, open_as):
    ids = server.set_up(users=["xena", "yuri"], chats=[("yuri", "xena", ["Hi Xena"])])
    chat_id = ids["chats"]["yuri:xena"]
    xena, yuri = open_as("xena"), open_as("yuri")
    goto_with_socket(yuri, "/chat/", "/ws/chat/inbox/")
    goto_with_socket(xena, room_path(chat_id), f"/ws/chat/{chat_id}/")
    send(xena, XSS)

    expect(xena.locator("main .bubble-body").last).to_have_text(XSS)
    live_row = yuri.locator("[data-chat-row]", has_text="Xena")
    expect(live_row.locator("[data-chat-preview]")).to_have_text(f"Xena: {XSS}")  # updated live
    yuri.reload()
    expect(live_row.locator("[data-chat-preview]")).to_have_text(f"Xena: {XSS}")  # rendered by the server
    yuri.goto("/chat/new/")
    yuri.locator("[data-chat-widget-toggle]").click()
    widget_row = yuri.locator("#chat-widget-panel [data-chat-row]", has_text="Xena")
    expect(widget_row.locator("[data-chat-preview]")).to_have_text(f"Xena: {XSS}")
    widget_row.click()
    expect(yuri.locator("#chat-widget-panel .bubble-body").last).to_have_text(XSS)

    for page in (xena, yuri):
        assert page.locator("[data-message-list] img, [data-chat-list] img").count() == 0
        assert page.dialogs == [], f"a dialog fired: {page.dialogs}"


# --- screenshots ---------------------------------------------------------------------


def test_screenshots_of_inbox_room_and_phone_room(server, open_as):
    """The pictures a person would judge the product by (the README shows two of them)."""
    longest = server.longest_chat("alice")
    room = room_path(longest["chat_id"])
    server.send(
        sender="carol", receiver="alice", bodies=["Are we still on for Friday?", "I booked the table for eight."]
    )
    alice = open_as("alice")
    expect(alice.locator(".navbar [data-total-unread]")).to_have_text("2")
    expect(alice.locator("[data-chat-row]").first).to_be_visible()
    shoot(alice, "inbox")
    goto_with_socket(alice, room, f"/ws/chat/{longest['chat_id']}/")
    shoot(alice, "room")
    phone = open_as("alice", viewport=PHONE)
    goto_with_socket(phone, room, f"/ws/chat/{longest['chat_id']}/")
    send_form = phone.locator("main [data-message-form]")
    expect(send_form).to_be_in_viewport()
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], "the page scrolls sideways"
    shoot(phone, "room-375")
    phone.goto("/chat/")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], "the inbox scrolls sideways"
    shoot(phone, "inbox-375")
