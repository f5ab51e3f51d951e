"""In a real browser, with two or three people, live: the unread divider and "Jump to
latest", a muted chat that leaves the badge alone, and a blocked person refused.

Shares the served project and the Chromium of test_browser (its fixtures are imported).
"""

from __future__ import annotations

import re

import pytest
import test_browser
from test_browser import PHONE, goto_with_socket, room_path, send, shoot, until_socket_speaks

pytestmark = pytest.mark.slow

# test_browser's fixtures: one served project and one Chromium per module.
server, browser, open_as = test_browser.server, test_browser.browser, test_browser.open_as

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips or fails
    expect = None

# Runs in `manage.py shell`: a group of OWNER with MEMBERS; prints its id.
GROUP_SCRIPT = """
from django.contrib.auth import get_user_model
from chat import services
User = get_user_model()
members = [User.objects.get(username=name) for name in MEMBERS]
chat = services.create_group_chat(creator=User.objects.get(username=OWNER), name=NAME, members=members)
print(json.dumps({"chat_id": chat.pk}))
"""


def direct_chat(server, a: str, b: str, bodies: list[str]) -> int:
    return server.set_up(users=[a, b], chats=[(a, b, bodies)])["chats"][f"{a}:{b}"]


def open_widget_room(page, chat_id: int) -> None:
    page.goto("/chat/new/")  # a page with the widget and without a room of its own
    page.locator("[data-chat-widget-toggle]").click()
    row = page.locator(f"#chat-widget-panel [data-chat-row][data-chat-id='{chat_id}']")
    until_socket_speaks(page, f"/ws/chat/{chat_id}/", row.click)


# --- the unread divider and "Jump to latest" -----------------------------------------


@pytest.mark.parametrize("where", ["room", "widget"])
def test_a_room_opens_at_the_unread_divider_and_jumps_to_the_latest(server, open_as, where):
    uma_name, vic_name = f"uma{where}", f"vic{where}"
    direct_chat(server, uma_name, vic_name, [f"Old news {n}" for n in range(15)])  # uma's own: read
    chat_id = direct_chat(server, vic_name, uma_name, [f"Unread {n}" for n in range(20)])
    uma, vic = open_as(uma_name), open_as(vic_name)
    if where == "room":
        goto_with_socket(uma, room_path(chat_id), f"/ws/chat/{chat_id}/")
        scope = uma.locator("main")
    else:
        open_widget_room(uma, chat_id)
        scope = uma.locator("#chat-widget-panel")

    divider = scope.locator("[data-unread-divider]")
    expect(divider).to_have_text("New messages")
    expect(divider).to_be_in_viewport()
    # Just above the first unread message, which is in view too.
    first_unread = scope.locator("[data-unread-divider] ~ .bubble").first
    expect(first_unread.locator(".bubble-body")).to_have_text("Unread 0")
    expect(first_unread).to_be_in_viewport()
    jump = scope.get_by_role("button", name=re.compile("Jump to latest"))
    expect(jump).to_have_text(re.compile(r"20 new messages"))
    shoot(uma, f"unread-divider-{where}")

    goto_with_socket(vic, room_path(chat_id), f"/ws/chat/{chat_id}/")
    send(vic, "Fresh from Vic")
    expect(scope.locator(".bubble-body").last).to_have_text("Fresh from Vic")
    expect(jump).to_have_text(re.compile(r"21 new messages"))
    expect(divider).to_be_in_viewport()  # arriving messages leave the reader where they were

    jump.focus()
    uma.keyboard.press("Enter")
    expect(scope.locator(".bubble").last).to_be_in_viewport()
    expect(jump).to_be_hidden()
    expect(scope.locator("[data-message-input]")).to_be_focused()
    # At the bottom, new messages scroll into view with no button.
    send(vic, "One more")
    expect(scope.locator(".bubble").last).to_be_in_viewport()
    expect(scope.locator(".bubble-body").last).to_have_text("One more")
    expect(jump).to_be_hidden()
    expect(divider).to_have_count(1)  # it stayed put


def test_scrolling_up_and_back_down_shows_and_hides_jump_to_latest(server, open_as):
    chat_id = direct_chat(server, "wyn", "xiu", [f"History {n}" for n in range(30)])
    wyn, xiu = open_as("wyn", viewport=PHONE), open_as("xiu")
    goto_with_socket(wyn, room_path(chat_id), f"/ws/chat/{chat_id}/")
    jump = wyn.get_by_role("button", name=re.compile("Jump to latest"))
    expect(wyn.locator("main [data-unread-divider]")).to_have_count(0)  # nothing unread: at the bottom
    expect(wyn.locator("main .bubble").last).to_be_in_viewport()

    wyn.locator("main [data-message-list]").evaluate("list => { list.scrollTop = 0; }")
    goto_with_socket(xiu, room_path(chat_id), f"/ws/chat/{chat_id}/")
    send(xiu, "While you were up there")
    expect(jump).to_have_text(re.compile(r"1 new message\b"))
    expect(jump).to_be_in_viewport()
    shoot(wyn, "jump-to-latest-phone")

    wyn.locator("main [data-message-list]").evaluate("list => { list.scrollTop = list.scrollHeight; }")
    expect(jump).to_be_hidden()


# --- mute ----------------------------------------------------------------------------


def test_muting_a_chat_silences_the_badge_in_every_tab_but_keeps_its_row_count(server, open_as):
    chat_id = direct_chat(server, "yara", "zed", ["Before the mute"])
    zed, yara_inbox = open_as("zed"), open_as("yara")
    goto_with_socket(yara_inbox, "/chat/", "/ws/chat/inbox/")
    badge = yara_inbox.locator(".navbar [data-total-unread]")
    expect(badge).to_be_hidden()  # her own message

    yara_info = yara_inbox.context.new_page()  # a second tab of hers
    yara_info.goto(f"/chat/{chat_id}/info/")
    yara_info.get_by_role("button", name="Mute chat").click()
    expect(yara_info.get_by_text("Chat muted.")).to_be_visible()
    expect(yara_info.get_by_role("button", name="Unmute chat")).to_be_visible()

    row = yara_inbox.locator(f"[data-chat-row][data-chat-id='{chat_id}']")
    expect(row).to_have_attribute("data-muted", "")  # live, in the other tab
    expect(row).to_contain_text("(muted)")

    goto_with_socket(zed, room_path(chat_id), f"/ws/chat/{chat_id}/")
    send(zed, "Are you ignoring me?")
    expect(row.locator("[data-chat-preview]")).to_contain_text("Are you ignoring me?")
    expect(row.locator("[data-chat-unread]")).to_have_text("1")
    expect(badge).to_be_hidden()
    shoot(yara_inbox, "muted-chat-row")

    yara_info.get_by_role("button", name="Unmute chat").click()
    expect(badge).to_have_text("1")  # unmuted: its unread count is back in the total
    expect(row).not_to_have_attribute("data-muted", "")


def test_muting_from_the_widget_info_view(server, open_as):
    chat_id = direct_chat(server, "abe", "bea", ["Hi Bea"])
    abe = open_as("abe")
    open_widget_room(abe, chat_id)
    panel = abe.locator("#chat-widget-panel")
    panel.get_by_role("button", name="Info").click()
    panel.get_by_role("button", name="Mute chat").click()
    expect(panel.get_by_role("button", name="Unmute chat")).to_be_visible()
    expect(panel.get_by_text("Muted: new messages here add nothing to your unread badge.")).to_be_visible()


# --- block ---------------------------------------------------------------------------


def test_a_blocked_person_is_refused_in_the_open_room_and_for_a_new_chat(server, open_as):
    chat_id = direct_chat(server, "cal", "dee", ["Hi Dee"])
    cal, dee = open_as("cal"), open_as("dee")
    goto_with_socket(dee, room_path(chat_id), f"/ws/chat/{chat_id}/")  # open before the block

    cal.goto(f"/chat/{chat_id}/info/")
    cal.get_by_role("button", name="Block Dee").click()
    dialog = cal.get_by_role("dialog")
    expect(dialog).to_contain_text("Neither of you can send messages in this chat")
    dialog.get_by_role("button", name="Block Dee").click()
    expect(cal.get_by_text("You blocked Dee.")).to_be_visible()
    expect(cal.get_by_role("button", name="Unblock Dee")).to_be_visible()

    box = dee.locator("main [data-message-input]")
    box.fill("Why the silence?")
    box.press("Enter")
    expect(dee.locator("main [data-send-error]")).to_have_text("You can’t send messages to this person.")
    expect(box).to_have_value("Why the silence?")  # given back, not lost
    expect(dee.locator("main .bubble-body")).to_have_text(["Hi Dee"])
    shoot(dee, "blocked-send-refused")

    # With the socket down the message goes over HTTP: refused the same way, with a 403.
    dee.evaluate("document.querySelector('main [data-chat-room]').chatRoom.socket.stop()")
    with dee.expect_response(lambda response: response.url.endswith("/send/")) as answer:
        box.press("Enter")
    assert answer.value.status == 403
    expect(dee.locator("main [data-send-error]")).to_have_text("You can’t send messages to this person.")
    expect(box).to_have_value("Why the silence?")

    dee.goto("/chat/new/")
    dee.get_by_label("Their e-mail").fill("cal@example.com")
    dee.get_by_role("button", name="Start chat").click()
    expect(dee.get_by_text("You can’t start a chat with this person.")).to_be_visible()

    cal.get_by_role("button", name="Unblock Dee").click()
    expect(cal.get_by_text("You unblocked Dee.")).to_be_visible()
    goto_with_socket(dee, room_path(chat_id), f"/ws/chat/{chat_id}/")
    send(dee, "Thanks for unblocking")
    expect(dee.locator("main .bubble-body").last).to_have_text("Thanks for unblocking")


def test_a_blocked_persons_group_messages_are_collapsed_for_the_blocker_only(server, open_as):
    server.set_up(users=["eve", "fay", "gus"])
    group_id = server.shell(GROUP_SCRIPT, OWNER="eve", MEMBERS=["fay", "gus"], NAME="Choir")["chat_id"]
    eve, fay, gus = open_as("eve"), open_as("fay"), open_as("gus")
    for page in (eve, fay, gus):
        goto_with_socket(page, room_path(group_id), f"/ws/chat/{group_id}/")
    send(fay, "Before the block")

    eve_info = eve.context.new_page()  # blocking in another tab: the open room follows live
    eve_info.set_viewport_size(PHONE)
    eve_info.goto(f"/chat/{group_id}/info/")
    expect(eve_info.get_by_role("button", name="Block Gus")).to_be_in_viewport()
    shoot(eve_info, "group-info-block-buttons-phone")
    eve_info.get_by_role("button", name="Block Fay").click()
    eve_info.get_by_role("dialog").get_by_role("button", name="Block").click()
    expect(eve_info.get_by_text("You blocked Fay.")).to_be_visible()

    toggles = eve.locator("main .blocked-toggle")
    expect(toggles).to_have_count(1)
    send(fay, "After the block")
    expect(toggles).to_have_count(2)
    expect(eve.locator("main .bubble-body", has_text="After the block")).to_be_hidden()
    expect(gus.locator("main .bubble-body", has_text="After the block")).to_be_visible()
    expect(gus.locator("main .blocked-toggle")).to_have_count(0)
    shoot(eve, "blocked-collapsed")

    toggles.last.focus()
    eve.keyboard.press("Enter")
    expect(toggles.last).to_have_attribute("aria-expanded", "true")
    expect(eve.locator("main .bubble-body", has_text="After the block")).to_be_visible()

    eve.reload()  # collapsed by the server-rendered page as well
    expect(eve.locator("main .blocked-toggle")).to_have_count(2)
    expect(eve.locator("main .bubble-body", has_text="Before the block")).to_be_hidden()
