"""In a real browser: what people see as they type, go Back, confirm, use the keyboard, go offline.

The e-mail lookup answering every change, pages current after the Back button (from the HTTP
cache and from the back/forward cache), a confirmation dialog before every destructive
action, keyboard focus in the widget, the widget's open state across page loads, and the
"Connection lost" hint while the browser is offline. Fixtures and helpers come from
test_browser.py; assertions wait on conditions, never on fixed sleeps.
"""

from __future__ import annotations

import re

import pytest
import test_browser
from served_project import DEMO_PASSWORD
from test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    PHONE,
    goto_with_socket,
    room_path,
)

pytestmark = pytest.mark.slow

# test_browser.py's fixtures: a served project of this module's own, Chromium, logged-in pages.
server, browser, open_as = test_browser.server, test_browser.browser, test_browser.open_as

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips or fails
    expect = None

# Runs in `manage.py shell`: a group NAME of OWNER (its admin) and MEMBERS. Prints its id.
GROUP_SCRIPT = """
from django.contrib.auth import get_user_model
from chat import services
User = get_user_model()
owner = User.objects.get(username=OWNER)
members = list(User.objects.filter(username__in=MEMBERS))
chat = services.create_group_chat(creator=owner, name=NAME, members=members)
print(json.dumps({"chat_id": chat.pk}))
"""


def create_group(server, *, owner: str, members: list[str], name: str) -> int:
    server.set_up(users=[owner, *members])
    return server.shell(GROUP_SCRIPT, OWNER=owner, MEMBERS=members, NAME=name)["chat_id"]


# --- the live e-mail lookup ----------------------------------------------------------


@pytest.mark.parametrize("where", ["dialog", "page"])
def test_email_lookup_answers_every_change_and_replaces_a_stale_error(server, open_as, where):
    server.set_up(users=["nell", "omar"])
    nell = open_as("nell")
    if where == "dialog":
        nell.get_by_role("button", name="New chat").click()
        scope = nell.get_by_role("dialog", name="New chat")
    else:
        nell.goto("/chat/new/")
        scope = nell.locator("main")
    email = scope.get_by_label("Their e-mail")
    found = scope.get_by_text("Found: Omar")
    not_found = scope.get_by_text("Not found: nobody has an account with this e-mail.")
    incomplete = scope.get_by_text("Type a full e-mail address.")

    email.fill("nobody@example.com")
    expect(not_found).to_be_visible()
    email.fill("omar@example.com")
    expect(found).to_be_visible()
    expect(not_found).to_have_count(0)

    email.fill("")
    expect(found).to_have_count(0)
    email.press_sequentially("omar@")
    expect(incomplete).to_be_visible()
    email.press_sequentially("example.com")
    expect(found).to_be_visible()
    expect(incomplete).to_have_count(0)

    email.fill("nobody@example.com")
    scope.get_by_role("button", name="Start chat").click()
    server_error = scope.get_by_text("Nobody with this e-mail has an account.")
    expect(server_error).to_be_visible()
    email.clear()
    email.press_sequentially("omar@example.com", delay=20)  # htmx wires the new form up as it settles
    expect(found).to_be_visible()
    expect(server_error).to_have_count(0)  # the answer to what was typed before is gone
    expect(email).not_to_have_attribute("aria-invalid", "true")
    scope.get_by_role("button", name="Start chat").click()
    expect(nell.get_by_role("heading", name="Omar")).to_be_visible()


def test_add_member_error_goes_once_the_email_is_changed(server, open_as):
    chat_id = create_group(server, owner="pia", members=["quin"], name="Book club")
    server.set_up(users=["rosa"])
    pia = open_as("pia")
    pia.goto(room_path(chat_id) + "edit/")
    email = pia.get_by_label("Add someone by e-mail")
    email.fill("nobody@example.com")
    pia.get_by_role("button", name="Add", exact=True).click()
    server_error = pia.get_by_text("Nobody with this e-mail has an account.")
    expect(server_error).to_be_visible()
    pia.wait_for_load_state()  # the page came back from the POST; htmx wires it up on load
    pia.get_by_label("Add someone by e-mail").fill("rosa@example.com")
    expect(pia.get_by_text("Found: Rosa")).to_be_visible()
    expect(server_error).to_have_count(0)


# --- the Back button -----------------------------------------------------------------


# A websocket that never opens, as behind a proxy that holds the upgrade.
STUCK_SOCKETS_SCRIPT = "window.WebSocket = class { addEventListener() {} close() {} send() {} }"


def chats_of_three(server, *, reader: str, quiet: str, busy: str) -> dict:
    return server.set_up(users=[reader, quiet, busy], chats=[(quiet, reader, ["Hi"]), (busy, reader, ["First"])])


def open_a_room_while_others_write(server, page, ids, *, reader: str, quiet: str, busy: str, script: str = "") -> None:
    """From the inbox (after running `script` there) into the quiet chat; meanwhile `busy`
    writes three more, sent from outside the server so that no socket hears of them."""
    goto_with_socket(page, "/chat/", "/ws/chat/inbox/")
    expect(page.locator("main [data-chat-row]", has_text=busy.title()).locator("[data-chat-unread]")).to_have_text("1")
    page.evaluate(f"() => {{ window.inboxNotLoadedAgain = true; {script} }}")
    quiet_chat = ids["chats"][f"{quiet}:{reader}"]
    page.locator("main [data-chat-row]", has_text=quiet.title()).click()
    expect(page).to_have_url(re.compile(rf"/chat/{quiet_chat}/$"))
    server.send(sender=busy, receiver=reader, bodies=["One", "Two", "Three"])


def expect_inbox_rows_current(page, *, busy: str) -> None:
    busy_row = page.locator("main [data-chat-row]", has_text=busy.title())
    expect(busy_row.locator("[data-chat-preview]")).to_have_text(f"{busy.title()}: Three")
    expect(busy_row.locator("[data-chat-unread]")).to_have_text("4")


def test_inbox_is_current_after_the_back_button(server, open_as):
    """Chromium here keeps no back/forward cache (Playwright's default): Back loads the page
    again, from the HTTP cache unless the page said no-store."""
    names = {"reader": "bea", "quiet": "cal", "busy": "dan"}
    ids = chats_of_three(server, **names)
    bea = open_as("bea")
    open_a_room_while_others_write(server, bea, ids, **names)
    bea.go_back()
    expect_inbox_rows_current(bea, busy="dan")
    expect(bea.locator(".navbar [data-total-unread]")).to_have_text("4")


@pytest.fixture(scope="module")
def bfcache_browser(browser):
    """Chromium with its back/forward cache on (Playwright turns it off), and without the
    local-network checks that would keep a page fulfilled by Playwright off 127.0.0.1's sockets."""
    chromium = browser.browser_type.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=[*CHROMIUM_ARGS, "--disable-features=LocalNetworkAccessChecks"],
        ignore_default_args=["--disable-back-forward-cache"],
    )
    yield chromium
    chromium.close()


def without_no_store(route) -> None:
    """The page as a cache that ignores no-store would keep it (Chromium never keeps a no-store
    page that opened a websocket, other browsers and proxies may)."""
    response = route.fetch()
    headers = {name: value for name, value in response.headers.items() if name.lower() != "cache-control"}
    route.fulfill(response=response, headers=headers)


def test_inbox_restored_from_the_back_forward_cache_refreshes_itself(server, bfcache_browser):
    """Restored, the inbox asks the server for its rows at once, not only once its socket is back."""
    names = {"reader": "eve", "quiet": "fay", "busy": "gil"}
    ids = chats_of_three(server, **names)
    context = bfcache_browser.new_context(viewport=DESKTOP, base_url=server.base_url)
    try:
        eve = log_in(context, "eve")
        eve.route(re.compile(r"/chat/$"), without_no_store)
        open_a_room_while_others_write(server, eve, ids, **names, script=STUCK_SOCKETS_SCRIPT)
        eve.go_back(wait_until="commit")  # a restored page fires no load event
        expect_inbox_rows_current(eve, busy="gil")
        assert eve.evaluate("window.inboxNotLoadedAgain === true"), "the page was loaded again, not restored"
    finally:
        context.close()


def log_in(context, username: str):
    """Like open_as, in a browser context of the test's own."""
    page = context.new_page()
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/chat/$"))
    return page


# --- confirmations -------------------------------------------------------------------

# (page under the chat's URL, who clicks, button, the dialog's question and button, what the page says after)
DESTRUCTIVE_ACTIONS = [
    ("info/", "member", "Leave group", "Leave this group?", "Leave group", "You left “Choir”."),
    ("info/", "member", "Delete for me", "Delete this chat from your list?", "Delete for me", "Chat deleted"),
    (
        "info/",
        "admin",
        "Delete group for everyone",
        "Delete this group and all its messages for everyone?",
        "Delete group for everyone",
        "Group “Choir” deleted for everyone.",
    ),
    ("edit/", "admin", "Remove Tom", "Remove Tom from the group?", "Remove", "Tom was removed from the group."),
]


@pytest.mark.parametrize(
    "path, who, button, question, confirm, done", DESTRUCTIVE_ACTIONS, ids=[action[2] for action in DESTRUCTIVE_ACTIONS]
)
def test_destructive_action_asks_in_a_dialog_first(server, open_as, path, who, button, question, confirm, done):
    chat_id = create_group(server, owner="sue", members=["tom"], name="Choir")
    page = open_as("sue" if who == "admin" else "tom")
    page.goto(room_path(chat_id) + path)
    trigger = page.get_by_role("button", name=button)
    trigger.click()
    dialog = page.get_by_role("dialog", name=question)
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()  # the safe choice
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(trigger).to_be_focused()

    trigger.press("Enter")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(trigger).to_be_focused()
    page.reload()  # nothing was done
    expect(trigger).to_be_visible()

    trigger.click()
    dialog.get_by_role("button", name=confirm, exact=True).click()
    expect(page.get_by_text(done)).to_be_visible()


def test_destructive_action_works_without_javascript(server, browser):
    chat_id = create_group(server, owner="sue", members=["uma"], name="Choir")
    context = browser.new_context(viewport=DESKTOP, base_url=server.base_url, java_script_enabled=False)
    try:
        uma = log_in(context, "uma")
        uma.goto(room_path(chat_id) + "info/")
        uma.get_by_role("button", name="Leave group").click()
        expect(uma.get_by_text("You left “Choir”.")).to_be_visible()
    finally:
        context.close()


# --- the widget ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["Enter", "click"])
def test_widget_moves_focus_into_the_room_and_back_to_its_button(server, open_as, how):
    server.set_up(users=["flo", "gus"], chats=[("gus", "flo", ["Got a minute?"])])
    flo = open_as("flo")
    goto_with_socket(flo, "/chat/new/", "/ws/chat/inbox/")  # a page without the inbox or a room
    fab = flo.locator("[data-chat-widget-toggle]")
    panel = flo.locator("#chat-widget-panel")
    fab.click()
    row = panel.locator("[data-chat-row]", has_text="Gus")
    expect(row).to_be_focused()  # the list's first chat, once htmx has wired it up
    if how == "Enter":
        row.press("Enter")
    else:
        row.click()
    box = panel.locator("[data-message-input]")
    expect(box).to_be_focused()
    flo.keyboard.type("Typed straight away")
    expect(box).to_have_value("Typed straight away")

    flo.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(fab).to_be_focused()
    flo.keyboard.press("Enter")  # opens again on the room it showed
    expect(box).to_be_focused()

    panel.get_by_role("button", name="Back to chats").press("Enter")
    expect(row).to_be_visible()
    assert panel.evaluate("panel => panel.contains(document.activeElement)"), "focus left the panel"
    flo.keyboard.press("Escape")
    expect(fab).to_be_focused()


@pytest.mark.parametrize("viewport, reopens", [(DESKTOP, True), (PHONE, False)], ids=["desktop", "phone"])
def test_open_widget_reopens_on_the_next_page_only_on_a_wide_screen(server, open_as, viewport, reopens):
    server.set_up(users=["hal"])
    hal = open_as("hal", viewport=viewport)
    hal.goto("/chat/new/")
    fab = hal.locator("[data-chat-widget-toggle]")
    panel = hal.locator("#chat-widget-panel")
    fab.click()
    expect(panel).to_be_visible()
    hal.goto("/chat/new/")
    expect(fab).to_have_attribute("aria-expanded", "true" if reopens else "false")
    if reopens:
        expect(panel).to_be_visible()
    else:
        expect(panel).to_be_hidden()
        expect(hal.get_by_role("heading", name="New chat")).to_be_in_viewport()


def test_the_next_person_on_a_shared_browser_does_not_get_the_widget_of_the_last(server, open_as):
    server.set_up(users=["kai", "lou"], chats=[("kai", "lou", ["Only for Lou"])])
    kai = open_as("kai")
    kai.goto("/chat/new/")
    kai.locator("[data-chat-widget-toggle]").click()
    kai.locator("#chat-widget-panel").get_by_role("link", name="Lou").click()
    expect(kai.locator("#chat-widget-panel [data-message-input]")).to_be_visible()

    kai.get_by_role("button", name="Log out").click()
    kai.get_by_label("Username").fill("lou")
    kai.get_by_label("Password").fill(DEMO_PASSWORD)
    kai.get_by_role("button", name="Log in").click()
    expect(kai).to_have_url(re.compile(r"/chat/$"))
    kai.goto("/chat/new/")  # a page with the widget, which reopens there on a wide screen

    fab = kai.locator("[data-chat-widget-toggle]")
    expect(fab).to_have_attribute("aria-expanded", "false")
    expect(kai.locator("#chat-widget-panel")).to_be_hidden()


# --- offline -------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["room", "inbox"])
def test_connection_lost_hint_shows_offline_and_the_page_catches_up_online(server, open_as, where):
    ids = server.set_up(users=["ida", "jon"], chats=[("jon", "ida", ["Before going offline"])])
    chat_id = ids["chats"]["jon:ida"]
    ida = open_as("ida")
    if where == "room":
        goto_with_socket(ida, room_path(chat_id), f"/ws/chat/{chat_id}/")
    else:
        goto_with_socket(ida, "/chat/", "/ws/chat/inbox/")
    hint = ida.locator("main [data-connection-status]")
    expect(hint).to_be_hidden()

    ida.context.set_offline(True)
    expect(hint).to_be_visible()
    server.send(sender="jon", receiver="ida", bodies=["Sent while you were offline"])
    ida.context.set_offline(False)

    expect(hint).to_be_hidden()
    if where == "room":
        expect(ida.locator("main .bubble-body")).to_have_text(["Before going offline", "Sent while you were offline"])
    else:
        row = ida.locator("main [data-chat-row]", has_text="Jon")
        expect(row.locator("[data-chat-preview]")).to_have_text("Jon: Sent while you were offline")
