"""In a real browser, two people in one chat: an edit and a delete for everyone seen live
by the other, reactions toggled from both sides (one of them on a phone), and a report
that reaches the admin, where a staff member deletes the message for everyone.

Shares the served project and the Chromium of test_browser (its fixtures are imported).
"""

from __future__ import annotations

import json
import re

import pytest
import test_browser
from test_browser import (
    PHONE,
    goto_with_socket,
    greeting_after_each,
    room_path,
    shoot,
    slow_catch_ups,
    until_socket_speaks,
)

pytestmark = pytest.mark.slow

# test_browser's fixtures: one served project and one Chromium per module.
server, browser, open_as = test_browser.server, test_browser.browser, test_browser.open_as

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips or fails
    expect = None

THUMBS = "👍"

# Runs in `manage.py shell`: the bodies stored in a chat, oldest first.
BODIES_SCRIPT = """
from chat.models import Message
print(json.dumps(list(Message.objects.filter(chat_id=CHAT_ID).order_by("id").values_list("body", flat=True))))
"""

# Runs in `manage.py shell`: makes USERNAME site staff with every permission.
STAFF_SCRIPT = """
from django.contrib.auth import get_user_model
get_user_model().objects.filter(username=USERNAME).update(is_staff=True, is_superuser=True)
print(json.dumps(True))
"""


# Runs in `manage.py shell`, outside the server: an edit whose frame no open room hears.
EDIT_UNHEARD_SCRIPT = """
from chat import services
from chat.models import Message
message = Message.objects.get(chat_id=CHAT_ID, body=BODY)
print(json.dumps(services.edit_message(message=message, user=message.sender, body=NEW_BODY).change_seq))
"""


def open_chat(server, open_as, sender: str, other: str, bodies: list[str], other_viewport=None):
    """Both people in their direct chat's room, with `bodies` sent by `sender` before."""
    chat_id = server.set_up(users=[sender, other], chats=[(sender, other, bodies)])["chats"][f"{sender}:{other}"]
    pages = open_as(sender), open_as(other, **({"viewport": other_viewport} if other_viewport else {}))
    for page in pages:
        goto_with_socket(page, room_path(chat_id), f"/ws/chat/{chat_id}/")
    return chat_id, pages


def bubble(page, text: str, scope: str = "main"):
    return page.locator(f"{scope} [data-message-id]", has_text=text)


def open_menu(page, text: str, scope: str = "main"):
    """The message's actions menu, opened from the keyboard."""
    message = bubble(page, text, scope)
    message.locator("[data-message-actions]").focus()
    page.keyboard.press("Enter")
    expect(message.locator(".bubble-menu")).to_be_visible()
    return message


def test_an_edit_and_a_delete_for_everyone_are_seen_live_by_the_other_person(server, open_as):
    chat_id, (gus, hal) = open_chat(server, open_as, "gus", "hal", ["first try", "regrettable"])

    # The other person's menu offers a report, not an edit or a delete.
    theirs = open_menu(hal, "first try")
    expect(theirs.get_by_role("link", name="Report")).to_be_visible()
    expect(theirs.get_by_role("link", name="Edit")).to_be_hidden()
    expect(theirs.get_by_role("link", name="Delete for everyone")).to_be_hidden()
    hal.keyboard.press("Escape")
    expect(theirs.locator(".bubble-menu")).to_have_count(0)
    expect(theirs.locator("[data-message-actions]")).to_be_focused()

    mine = open_menu(gus, "first try")
    mine.get_by_role("link", name="Edit").click()
    box = gus.locator("main [data-edit-input]")
    expect(box).to_be_focused()
    box.fill("second try")
    box.press("Enter")

    expect(hal.locator("main .bubble-body")).to_have_text(["second try", "regrettable"])
    expect(bubble(hal, "second try").locator(".bubble-edited")).to_have_text("edited")
    expect(bubble(gus, "second try").locator(".bubble-edited")).to_be_visible()
    expect(bubble(gus, "second try").locator("[data-message-actions]")).to_be_focused()  # back on its button

    open_menu(gus, "regrettable").get_by_role("link", name="Delete for everyone").click()
    dialog = gus.locator("main [data-message-dialog]")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Delete for everyone").click()

    expect(hal.locator("main .bubble-body")).to_have_text(["second try", "This message was deleted."])
    expect(gus.locator("main .bubble-body")).to_have_text(["second try", "This message was deleted."])
    expect(dialog).to_be_hidden()
    assert server.shell(BODIES_SCRIPT, CHAT_ID=chat_id) == ["second try", ""]
    shoot(hal, "message-changes-edited-and-deleted")


def test_an_edit_saved_before_htmx_settles_its_form_is_still_saved_in_place(server, open_as):
    """The browser focuses the edit box as soon as it is swapped in; htmx wires its form up
    only when the swap settles. Enter pressed in between must not post the form as a page."""
    chat_id, (pam, _) = open_chat(server, open_as, "pam", "rex", ["quick fix"])
    pam.evaluate("window.htmx.config.defaultSettleDelay = 1500; window.stillTheSamePage = true")

    open_menu(pam, "quick fix").get_by_role("link", name="Edit").click()
    box = pam.locator("main [data-edit-input]")
    box.fill("quicker fix")  # well within the 1.5 s the swap takes to settle
    box.press("Enter")

    expect(bubble(pam, "quicker fix").locator(".bubble-edited")).to_be_visible()
    expect(bubble(pam, "quicker fix").locator("[data-message-actions]")).to_be_focused()
    assert pam.evaluate("window.stillTheSamePage === true")  # no page load: the room stayed
    assert server.shell(BODIES_SCRIPT, CHAT_ID=chat_id) == ["quicker fix"]


def test_reactions_toggled_from_both_sides_show_counts_and_who_live(server, open_as):
    _, (ivy, jon) = open_chat(server, open_as, "ivy", "jon", ["react to me"], other_viewport=PHONE)

    menu = open_menu(ivy, "react to me")
    expect(menu.get_by_role("button", name=f"React with {THUMBS}")).to_be_focused()  # the menu's first control
    ivy.keyboard.press("Enter")
    expect(menu.locator("[data-message-actions]")).to_be_focused()  # the menu closed, the keyboard on its button
    expect(menu.locator(".bubble-menu")).to_have_count(0)
    ivy_chip, jon_chip = (page.locator("main [data-reaction]") for page in (ivy, jon))
    expect(jon_chip).to_have_attribute("aria-label", f"{THUMBS} 1")
    expect(jon_chip).to_have_attribute("aria-pressed", "false")
    expect(ivy_chip).to_have_attribute("aria-pressed", "true")

    jon_chip.click()  # on the phone: joins in
    for chip in (ivy_chip, jon_chip):
        expect(chip).to_have_attribute("aria-label", f"{THUMBS} 2")
    expect(jon_chip).to_have_attribute("aria-pressed", "true")

    ivy_chip.focus()  # who reacted shows on keyboard focus (and on hover)
    expect(ivy.locator("main .reaction-who")).to_have_text("Ivy, Jon")
    ivy.keyboard.press("Enter")  # and takes hers back
    for chip in (ivy_chip, jon_chip):
        expect(chip).to_have_attribute("aria-label", f"{THUMBS} 1")
    expect(ivy_chip).to_have_attribute("aria-pressed", "false")
    expect(jon_chip).to_have_attribute("aria-pressed", "true")
    expect(ivy_chip).to_be_focused()  # the swap kept the keyboard where it was
    shoot(jon, "message-changes-reactions-phone")


def test_a_tab_that_has_not_heard_of_a_reaction_yet_does_not_undo_it(server, open_as):
    """The page's reaction buttons send what the viewer wants (`on`), as their page shows
    it. A second tab that has not heard of the first tab's reaction yet, picking the same
    one, asks for it to be there: it stays, where a toggle would have taken it back."""
    chat_id, (kit, _) = open_chat(server, open_as, "kit", "lee", ["react once"])
    behind = open_as("kit")

    def without_reaction_frames(ws):
        upstream = ws.connect_to_server()
        upstream.on_message(lambda message: None if '"chat.reacted"' in message else ws.send(message))

    behind.route_web_socket(re.compile(r".*/ws/chat/\d+/(\?|$)"), without_reaction_frames)
    goto_with_socket(behind, room_path(chat_id), f"/ws/chat/{chat_id}/")
    posted = []
    behind.on("request", lambda request: "/react/" in request.url and posted.append(request.post_data))

    open_menu(kit, "react once").get_by_role("button", name=f"React with {THUMBS}").click()
    expect(kit.locator("main [data-reaction]")).to_have_attribute("aria-label", f"{THUMBS} 1")
    open_menu(behind, "react once").get_by_role("button", name=f"React with {THUMBS}").click()
    behind_chip = behind.locator("main [data-reaction]")
    expect(behind_chip).to_have_attribute("aria-label", f"{THUMBS} 1")  # the answer: there, once
    expect(behind_chip).to_have_attribute("aria-pressed", "true")
    assert len(posted) == 1 and "on=true" in posted[0], posted

    behind_chip.click()  # shown pressed now: taken back
    expect(behind_chip).to_have_count(0)
    assert "on=false" in posted[-1], posted
    kit.reload()
    expect(kit.locator("main [data-message-id]", has_text="react once")).to_be_visible()
    expect(kit.locator("main [data-reaction]")).to_have_count(0)


def test_changes_that_cross_on_their_way_are_shown_in_order_without_a_fetch(server, open_as):
    """Changes made on two server processes can reach a page in the wrong order. The page
    waits a moment for the one it skipped instead of fetching at once (every page of a
    busy room would, each time), and shows the newest version of the bubble."""
    chat_id = server.set_up(users=["ned", "ola"], chats=[("ned", "ola", ["cross me"])])["chats"]["ned:ola"]
    ned, ola = open_as("ned"), open_as("ola")
    held, fetches = [], []

    def relay(ws):
        """Ola's room socket, its first change frame held until the second has gone."""
        upstream = ws.connect_to_server()

        def from_server(message):
            frame = json.loads(message)
            if frame.get("type") == "chat.reacted" and frame["change_seq"] == 1:
                held.append(message)
                return
            ws.send(message)
            if frame.get("type") == "chat.reacted" and held:
                ws.send(held.pop())

        upstream.on_message(from_server)

    ola.route_web_socket(re.compile(r".*/ws/chat/\d+/(\?|$)"), relay)
    ola.on("request", lambda request: "changed_since" in request.url and fetches.append(request.url))
    for page in (ned, ola):
        goto_with_socket(page, room_path(chat_id), f"/ws/chat/{chat_id}/")

    open_menu(ned, "cross me").get_by_role("button", name=f"React with {THUMBS}").click()
    ned_chip = ned.locator("main [data-reaction]")
    expect(ned_chip).to_have_attribute("aria-label", f"{THUMBS} 1")
    ned_chip.click()  # taken back: change 2, which reaches Ola first
    expect(ned_chip).to_have_count(0)
    open_menu(ned, "cross me").get_by_role("button", name="React with ❤️").click()  # change 3, in order

    expect(ola.locator("main [data-reaction]")).to_have_attribute("aria-label", "❤️ 1")
    ola.wait_for_timeout(600)  # past the wait for a skipped change (events keep coming meanwhile)
    assert fetches == []
    expect(ola.locator("main [data-reaction]")).to_have_count(1)


def test_a_greeting_behind_while_a_change_waits_out_the_reorder_grace_fetches_the_changes_once(server, open_as):
    """A change frame that skips one waits a moment for it, then the page fetches the changes.
    A fetch that starts meanwhile (a greeting whose change cursor is ahead) brings them
    already: the grace's timer must not ask again."""
    chat_id = server.set_up(users=["uma", "vic"], chats=[("uma", "vic", ["typo hre"])])["chats"]["uma:vic"]
    uma, vic = open_as("uma"), open_as("vic")
    newest = {}
    greeting_after_each(
        vic, chat_id, "chat.reacted", lambda frame: {"last_message_id": newest["id"], "change_seq": frame["change_seq"]}
    )
    queries = slow_catch_ups(vic, chat_id, "changed_since")
    for page in (uma, vic):
        goto_with_socket(page, room_path(chat_id), f"/ws/chat/{chat_id}/")
    newest["id"] = int(bubble(vic, "typo hre").get_attribute("data-message-id"))

    assert server.shell(EDIT_UNHEARD_SCRIPT, CHAT_ID=chat_id, BODY="typo hre", NEW_BODY="typo here") == 1
    open_menu(uma, "typo hre").get_by_role("button", name=f"React with {THUMBS}").click()  # change 2, live

    expect(bubble(vic, "typo here").locator("[data-reaction]")).to_have_attribute("aria-label", f"{THUMBS} 1")
    vic.wait_for_timeout(2500)  # past the grace and one more slow answer, had one been asked for
    assert queries == ["changed_since=0"]


def test_a_report_reaches_the_admin_where_staff_delete_the_message_for_everyone(server, open_as):
    chat_id, (kai, lou) = open_chat(server, open_as, "kai", "lou", ["rude words"])
    server.set_up(users=["mod"])
    server.shell(STAFF_SCRIPT, USERNAME="mod")

    open_menu(lou, "rude words").get_by_role("link", name="Report").click()
    dialog = lou.locator("main [data-message-dialog]")
    dialog.get_by_label("Harassment or abuse").check()
    dialog.get_by_label("Anything the staff should know (optional)").fill("not the first time")
    dialog.get_by_role("button", name="Send report").click()
    expect(dialog.get_by_role("status")).to_contain_text("Report sent")
    dialog.get_by_role("link", name="Close").click()
    expect(dialog).to_be_hidden()

    staff = open_as("mod")
    staff.goto("/admin/chat/report/")
    row = staff.locator("#result_list tbody tr", has_text="rude words")
    expect(row).to_contain_text("Harassment or abuse")
    row.get_by_role("link").first.click()
    expect(staff.locator(".field-message_in_context")).to_contain_text("◀ reported")
    expect(staff.locator(".field-details")).to_contain_text("not the first time")

    staff.goto("/admin/chat/report/")
    staff.locator("#result_list tbody tr", has_text="rude words").locator("input[name=_selected_action]").check()
    staff.select_option("select[name=action]", "delete_messages_for_everyone")
    staff.locator("button[name=index]").click()
    expect(staff.locator(".messagelist")).to_contain_text("1 message(s) deleted for everyone.")

    for page in (kai, lou):
        expect(page.locator("main .bubble-body")).to_have_text(["This message was deleted."])
    assert server.shell(BODIES_SCRIPT, CHAT_ID=chat_id) == [""]


def test_in_the_widget_changes_go_both_ways_and_a_missed_change_comes_back(server, open_as):
    chat_id, (mia, nat) = open_chat(server, open_as, "mia", "nat", ["react here", "typo hre"])
    goto_with_socket(nat, "/chat/new/", "/ws/chat/inbox/")  # nat reads in the widget
    nat.locator("[data-chat-widget-toggle]").click()
    panel = "#chat-widget-panel"
    row = nat.locator(f"{panel} [data-chat-row]", has_text="Mia")
    until_socket_speaks(nat, f"/ws/chat/{chat_id}/", row.click)
    expect(nat.locator(f"{panel} .bubble-body")).to_have_text(["react here", "typo hre"])

    # An edit neither page hears of: the next change's cursor skips a number, and both catch up.
    assert server.shell(EDIT_UNHEARD_SCRIPT, CHAT_ID=chat_id, BODY="typo hre", NEW_BODY="typo here") == 1
    open_menu(nat, "react here", scope=panel).get_by_role("button", name=f"React with {THUMBS}").click()

    for page, scope in ((mia, "main"), (nat, panel)):
        expect(page.locator(f"{scope} .bubble-body")).to_have_text(["react here", "typo here"])
        expect(page.locator(f"{scope} [data-reaction]")).to_have_attribute("aria-label", f"{THUMBS} 1")
        expect(bubble(page, "typo here", scope).locator(".bubble-edited")).to_be_visible()

    open_menu(mia, "typo here").get_by_role("link", name="Delete for everyone").click()
    mia.locator("main [data-message-dialog]").get_by_role("button", name="Delete for everyone").click()
    expect(nat.locator(f"{panel} .bubble-body")).to_have_text(["react here", "This message was deleted."])
    shoot(nat, "message-changes-widget")
