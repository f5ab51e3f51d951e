"""In a real browser: long messages, live renames, error pages, the icon, right-to-left
text, the error line under the message box, and date dividers.

Fixtures and helpers come from test_browser.py (one served default project per module).
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import test_browser
from test_browser import DESKTOP, expect, goto_with_socket, room_path, send, shoot, until_socket_speaks

pytestmark = pytest.mark.slow

# The served project, the browser and logged-in pages, as test_browser.py makes them.
server, browser, open_as = test_browser.server, test_browser.browser, test_browser.open_as

MAX_LENGTH = 4000  # CHAT_MAX_MESSAGE_LENGTH of the served project
HEBREW = "שלום, מה שלומך היום?"
VIEWER_ZONE = ZoneInfo("Asia/Tokyo")  # the served project's TIME_ZONE is UTC

# Runs in `manage.py shell`: a group of OWNER with MEMBERS; prints its id.
GROUP_SCRIPT = """
from django.contrib.auth import get_user_model
from chat import services
User = get_user_model()
members = [User.objects.get(username=name) for name in MEMBERS]
chat = services.create_group_chat(creator=User.objects.get(username=OWNER), name=NAME, members=members)
print(json.dumps({"chat_id": chat.pk}))
"""

# Runs in `manage.py shell`: messages from SENDER in CHAT_ID sent at the ISO times in AT.
BACKDATED_SCRIPT = """
from datetime import datetime
from django.contrib.auth import get_user_model
from chat import services
from chat.models import Chat, Message
sender = get_user_model().objects.get(username=SENDER)
chat = Chat.objects.get(pk=CHAT_ID)
for n, at in enumerate(AT):
    message = services.send_message(chat=chat, sender=sender, body=f"Message {n}")
    Message.objects.filter(pk=message.pk).update(created_at=datetime.fromisoformat(at))
print(json.dumps({}))
"""


def direct_chat(server, a: str, b: str, bodies: list[str]) -> int:
    return server.set_up(users=[a, b], chats=[(a, b, bodies)])["chats"][f"{a}:{b}"]


def open_widget_room(page, chat_id: int) -> None:
    page.goto("/chat/new/")  # a page with the widget and without a room of its own
    page.locator("[data-chat-widget-toggle]").click()
    row = page.locator(f"#chat-widget-panel [data-chat-row][data-chat-id='{chat_id}']")
    until_socket_speaks(page, f"/ws/chat/{chat_id}/", row.click)


# --- long messages -------------------------------------------------------------------


@pytest.mark.parametrize("where", ["room", "widget"])
def test_an_over_long_message_is_counted_and_refused_whole_never_cut(server, open_as, where):
    chat_id = direct_chat(server, f"lee-{where}", f"kim-{where}", ["Hi"])
    page = open_as(f"lee-{where}")
    scope = "main" if where == "room" else "#chat-widget-panel"
    if where == "room":
        goto_with_socket(page, room_path(chat_id), f"/ws/chat/{chat_id}/")
    else:
        open_widget_room(page, chat_id)
    box = page.locator(f"{scope} [data-message-input]")
    counter = page.locator(f"{scope} .length-counter")

    box.fill("x" * 100)
    expect(counter).to_be_hidden()  # far from the limit: no counter
    box.fill("x" * 3700)
    expect(counter).to_have_text(f"3700 / {MAX_LENGTH}")
    box.fill("x" * 5000)  # a paste past the limit stays whole
    assert len(box.input_value()) == 5000
    expect(counter).to_have_text(f"5000 / {MAX_LENGTH}: 1000 too many")
    box.press("Enter")
    expect(page.locator(f"{scope} [data-send-error]")).to_have_text(
        f"At most {MAX_LENGTH} characters; this has 5000. Shorten it by 1000."
    )
    shoot(page, f"message-too-long-{where}")
    page.locator(f"{scope} form[data-message-form] button[type=submit]").click()  # the button too
    assert len(box.input_value()) == 5000, "the message was cut or cleared"
    expect(page.locator(f"{scope} .bubble-body")).to_have_text(["Hi"])

    box.fill("x" * MAX_LENGTH)  # shortened to the limit: the error goes and it sends whole
    expect(page.locator(f"{scope} [data-send-error]")).to_be_hidden()
    box.press("Enter")
    expect(box).to_have_value("")
    expect(page.locator(f"{scope} .bubble-body").last).to_have_text("x" * MAX_LENGTH)


def test_a_pasted_long_group_name_is_kept_whole_and_refused_with_a_counter(server, open_as):
    server.set_up(users=["nora", "omar"])
    nora = open_as("nora")
    nora.get_by_role("button", name="New group").click()
    dialog = nora.get_by_role("dialog", name="New group")
    name = dialog.get_by_label("Group name")
    name.fill("n" * 150)
    assert len(name.input_value()) == 150, "the browser cut the pasted name"
    expect(dialog.locator(".length-counter")).to_have_text("150 / 100: 50 too many")
    dialog.get_by_label("Members").fill("omar@example.com")
    dialog.get_by_role("button", name="Create group").click()
    assert name.evaluate("field => field.validity.customError"), "the form may be sent with a name too long"
    expect(nora).to_have_url(re.compile(r"/chat/$"))


# --- live rename ---------------------------------------------------------------------


def test_a_rename_shows_live_in_open_rooms_widget_headers_and_lists(server, open_as):
    server.set_up(users=["rosa", "saul", "tina"])
    chat_id = server.shell(GROUP_SCRIPT, OWNER="rosa", MEMBERS=["saul", "tina"], NAME="Book club")["chat_id"]
    saul, tina = open_as("saul"), open_as("tina")
    goto_with_socket(saul, room_path(chat_id), f"/ws/chat/{chat_id}/")
    open_widget_room(tina, chat_id)
    tina_list = open_as("tina")  # a second tab on the inbox
    goto_with_socket(tina_list, "/chat/", "/ws/chat/inbox/")

    rosa = open_as("rosa")
    rosa.goto(room_path(chat_id) + "edit/")
    rosa.get_by_label("Group name").fill("Poetry night")
    rosa.get_by_role("button", name="Save name").click()
    expect(rosa.get_by_text("Group renamed.")).to_be_visible()

    expect(saul.locator("main .room-title")).to_have_text("Poetry night")
    expect(saul.locator("main .room-header .avatar")).to_have_text("PN")
    expect(saul).to_have_title("Poetry night")
    expect(tina.locator("#chat-widget-panel .room-title")).to_have_text("Poetry night")
    expect(tina.locator("#chat-widget-panel .room-header .avatar")).to_have_text("PN")
    expect(tina_list.locator(f"main [data-chat-row][data-chat-id='{chat_id}'] .chat-row-title")).to_have_text(
        "Poetry night"
    )


# --- error pages and the icon --------------------------------------------------------


def test_a_removed_member_opening_the_room_is_told_why_with_a_way_back(server, open_as):
    server.set_up(users=["uma", "vic"])
    chat_id = server.shell(GROUP_SCRIPT, OWNER="uma", MEMBERS=["vic"], NAME="Choir")["chat_id"]
    uma = open_as("uma")
    uma.goto(room_path(chat_id) + "edit/")
    uma.get_by_role("button", name="Remove Vic").click()
    uma.get_by_role("dialog", name="Remove Vic from the group?").get_by_role("button", name="Remove").click()
    expect(uma.get_by_text("Vic was removed from the group.")).to_be_visible()

    vic = open_as("vic")
    response = vic.goto(room_path(chat_id))
    assert response.status == 404
    expect(vic.get_by_role("heading", name="You are no longer a member of this chat")).to_be_visible()
    vic.get_by_role("link", name="Back to chats").click()
    expect(vic).to_have_url(re.compile(r"/chat/$"))


def test_every_page_has_an_icon_and_loads_without_a_failed_request(server, open_as):
    """Headless Chromium fetches no icon itself, so the test follows what a browser would:
    the page's <link rel="icon">, or /favicon.ico on a page without one (the admin)."""
    chat_id = direct_chat(server, "wes", "xia", ["Hello"])
    wes = open_as("wes")
    failed = []
    wes.on("response", lambda response: response.status >= 400 and failed.append(f"{response.status} {response.url}"))
    for path in ("/chat/", room_path(chat_id), "/chat/new/", "/admin/login/"):
        wes.goto(path)
        wes.wait_for_load_state("networkidle")
        href = wes.evaluate("document.querySelector('link[rel~=icon]')?.href") or "/favicon.ico"
        icon = wes.request.get(href)
        assert icon.ok, f"{path}: its icon {href} is a {icon.status}"
        assert icon.headers["content-type"].startswith("image/"), f"{path}: {href} is not an image"
    assert failed == []


# --- right-to-left text --------------------------------------------------------------


def direction(locator) -> str:
    return locator.evaluate("element => getComputedStyle(element).direction")


def test_right_to_left_text_reads_right_to_left_in_rooms_lists_and_widget(server, open_as):
    chat_id = direct_chat(server, "yael", "zack", ["Hi Yael"])
    yael, zack = open_as("yael"), open_as("zack")
    goto_with_socket(zack, "/chat/", "/ws/chat/inbox/")
    goto_with_socket(yael, room_path(chat_id), f"/ws/chat/{chat_id}/")
    send(yael, HEBREW)
    for reload in (False, True):  # the live preview, then the one the server renders
        if reload:
            zack.reload()
        preview = zack.locator(f"main [data-chat-row][data-chat-id='{chat_id}'] [data-chat-preview]")
        expect(preview).to_contain_text(HEBREW)
        assert direction(preview) == "rtl", "a preview reads in its message's direction, whoever sent it"

    goto_with_socket(zack, room_path(chat_id), f"/ws/chat/{chat_id}/")
    send(yael, HEBREW + " 2")
    for page in (yael, zack):  # bubbles rendered with the page, from the POST and from the socket
        for text in (HEBREW, HEBREW + " 2"):
            body = page.locator("main .bubble-body", has_text=text).last
            expect(body).to_be_visible()
            assert direction(body) == "rtl"
        assert direction(page.locator("main .bubble-body", has_text="Hi Yael")) == "ltr"
    yael.goto("/chat/new/")
    yael.locator("[data-chat-widget-toggle]").click()
    yael.locator(f"#chat-widget-panel [data-chat-row][data-chat-id='{chat_id}']").click()
    expect(yael.locator("#chat-widget-panel .bubble-body", has_text=HEBREW).first).to_be_visible()
    assert direction(yael.locator("#chat-widget-panel .bubble-body", has_text=HEBREW).first) == "rtl"
    yael.locator("#chat-widget-panel [data-message-input]").fill(HEBREW)
    assert direction(yael.locator("#chat-widget-panel [data-message-input]")) == "rtl"


# --- the error line under the message box --------------------------------------------


def test_an_error_under_the_message_box_keeps_the_last_message_in_view(server, open_as):
    longest = server.longest_chat("alice")
    alice = open_as("alice")
    goto_with_socket(alice, room_path(longest["chat_id"]), f"/ws/chat/{longest['chat_id']}/")
    message_list = alice.locator("main [data-message-list]")
    assert message_list.evaluate("list => list.scrollHeight > list.clientHeight"), "the room does not scroll"

    alice.locator("main [data-message-input]").fill("   ")  # only spaces: the server says no
    alice.locator("main form[data-message-form] button[type=submit]").click()
    expect(alice.locator("main [data-send-error]")).to_have_text("Write a message before sending.")

    last = alice.locator("main [data-message-list] [data-message-id]").last
    expect(last).to_be_in_viewport(ratio=1)
    bottom = last.evaluate("el => el.getBoundingClientRect().bottom")
    assert bottom <= message_list.evaluate("list => list.getBoundingClientRect().bottom") + 0.5


# --- date dividers -------------------------------------------------------------------


def day_label(day, today) -> str:
    if day == today:
        return "Today"
    if day == today - timedelta(days=1):
        return "Yesterday"
    label = f"{day:%a} {day.day} {day:%b}"
    return label if day.year == today.year else f"{label} {day.year}"


def test_date_dividers_in_the_viewers_time_zone_across_pages_and_midnight(server, browser, open_as):
    chat_id = direct_chat(server, "ada", "ben", [])
    today = datetime.now(VIEWER_ZONE).date()
    yesterday, two_days_ago = today - timedelta(days=1), today - timedelta(days=2)

    def at(day, hour, minute):
        return datetime.combine(day, time(hour, minute), VIEWER_ZONE)

    # One message two days ago, then 25 yesterday up to 23:50: the first page (20) is all
    # yesterday, and the older page joins it in the middle of yesterday.
    sent = [at(two_days_ago, 12, 18)] + [at(yesterday, 10, 0) + timedelta(minutes=33 * n) for n in range(24)]
    sent.append(at(yesterday, 23, 50))
    # Sent by ada herself: with unread messages her room would open on a page long enough
    # to reach its "New messages" divider, all 26 at once.
    server.shell(BACKDATED_SCRIPT, SENDER="ada", CHAT_ID=chat_id, AT=[moment.isoformat() for moment in sent])

    ada = open_as("ada")
    context = browser.new_context(viewport=DESKTOP, base_url=server.base_url, timezone_id=str(VIEWER_ZONE))
    context.add_cookies(ada.context.cookies())
    page = context.new_page()
    page.clock.set_fixed_time(at(yesterday, 23, 55))  # the page opens five minutes before midnight
    goto_with_socket(page, room_path(chat_id), f"/ws/chat/{chat_id}/")
    dividers = page.locator("main [data-day-divider]")
    expect(dividers).to_have_text(["Today"])
    expect(page.locator("main .bubble-time").last).to_have_text("23:50")  # Tokyo's time, not UTC's

    page.clock.set_fixed_time(datetime.now(VIEWER_ZONE))  # midnight passes; then a message comes in
    ben = open_as("ben")
    goto_with_socket(ben, room_path(chat_id), f"/ws/chat/{chat_id}/")
    send(ben, "After midnight")
    expect(page.locator("main .bubble-body").last).to_have_text("After midnight")
    expect(dividers).to_have_text(["Yesterday", "Today"])

    page.get_by_role("button", name="Load older messages").click()
    expect(page.locator("main [data-message-list] [data-message-id]")).to_have_count(len(sent) + 1)
    expect(dividers).to_have_text([day_label(two_days_ago, today), "Yesterday", "Today"])
    first_of_each_day = dividers.evaluate_all("els => els.map(el => el.nextElementSibling.textContent)")
    assert ["Message 0" in text for text in first_of_each_day] == [True, False, False]
    assert "Message 1" in first_of_each_day[1] and "After midnight" in first_of_each_day[2]
    page.locator("main [data-message-list]").evaluate("list => { list.scrollTop = 0; }")
    shoot(page, "room-date-dividers")
    context.close()
