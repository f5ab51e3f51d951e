"""In a real browser, with two or three people: replies and their quotes, the typing
indicator, and @mentions (autocomplete, highlight, the inbox mark), in the full room and
in the widget.

Shares the served project and the Chromium of test_browser (its fixtures are imported).
"""

from __future__ import annotations

import re

import pytest
import test_browser
from test_browser import PAGE_SIZE, PHONE, goto_with_socket, room_path, send, shoot, until_socket_speaks

pytestmark = pytest.mark.slow

# test_browser's fixtures: one served project and one Chromium per module.
server, browser, open_as = test_browser.server, test_browser.browser, test_browser.open_as

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips or fails
    expect = None

# Runs in `manage.py shell`: a group of USERS (the first is its admin) named NAME; prints its id.
GROUP_SCRIPT = """
from django.contrib.auth import get_user_model
from chat import services
users = [get_user_model().objects.get(username=name) for name in USERS]
chat = services.create_group_chat(creator=users[0], name=NAME, members=users[1:])
print(json.dumps(chat.pk))
"""

# Runs in `manage.py shell`: SENDER answers the oldest message of CHAT_ID with BODY;
# prints the original's id.
REPLY_TO_OLDEST_SCRIPT = """
from django.contrib.auth import get_user_model
from chat import services
from chat.models import Message
original = Message.objects.filter(chat_id=CHAT_ID).order_by("id").first()
sender = get_user_model().objects.get(username=SENDER)
services.send_message(chat=original.chat, sender=sender, body=BODY, reply_to_id=original.pk)
print(json.dumps(original.pk))
"""


def make_group(server, users: list[str], name: str) -> int:
    server.set_up(users=users)
    return server.shell(GROUP_SCRIPT, USERS=users, NAME=name)


def open_widget_room(page, chat_id: int, title: str):
    """Open the floating widget on a page without a room, then the chat in it; returns the panel."""
    goto_with_socket(page, "/chat/new/", "/ws/chat/inbox/")
    page.locator("[data-chat-widget-toggle]").click()
    panel = page.locator("#chat-widget-panel")
    row = panel.locator("[data-chat-row]", has_text=title)
    until_socket_speaks(page, f"/ws/chat/{chat_id}/", row.click)
    return panel


def test_a_reply_quote_jumps_to_an_older_message_and_replies_arrive_live(server, open_as):
    bodies = [f"Message {n}" for n in range(1, 2 * PAGE_SIZE + 6)]
    chat_id = server.set_up(users=["rhea", "sol"], chats=[("rhea", "sol", bodies)])["chats"]["rhea:sol"]
    original_id = server.shell(REPLY_TO_OLDEST_SCRIPT, CHAT_ID=chat_id, SENDER="sol", BODY="Back to the very first")
    rhea, sol = open_as("rhea"), open_as("sol")
    goto_with_socket(rhea, room_path(chat_id), f"/ws/chat/{chat_id}/")
    original = rhea.locator(f"main #message-{original_id}")
    expect(original).to_have_count(0)  # two pages back

    reply = rhea.locator("main .bubble", has_text="Back to the very first")
    quote = reply.locator("[data-reply-quote]")
    expect(quote).to_contain_text("Rhea")
    expect(quote).to_contain_text("Message 1")
    quote.click()

    expect(original).to_be_focused()
    expect(original).to_be_in_viewport()
    expect(original.locator(".bubble-body")).to_have_text("Message 1")
    expect(rhea.locator("main [data-message-list] [data-message-id]")).to_have_count(len(bodies) + 1)
    shoot(rhea, "reply-jumped-to-original")

    # A reply made in the page, seen live by the other person with its quote.
    goto_with_socket(sol, room_path(chat_id), f"/ws/chat/{chat_id}/")
    rhea.locator("main .bubble", has_text="Message 2").first.get_by_role("button", name="Reply to Rhea").click()
    bar = rhea.locator("main [data-reply-bar]")
    expect(bar).to_be_visible()
    expect(bar).to_contain_text("Message 2")
    expect(rhea.locator("main [data-message-input]")).to_be_focused()
    rhea.keyboard.press("Escape")  # changed her mind
    expect(bar).to_be_hidden()
    reply_button = reply.get_by_role("button", name="Reply to Sol")
    reply_button.focus()
    rhea.keyboard.press("Enter")
    expect(bar).to_contain_text("Back to the very first")
    send(rhea, "Yes, that one")
    expect(bar).to_be_hidden()

    live = sol.locator("main .bubble", has_text="Yes, that one")
    expect(live.locator("[data-reply-quote]")).to_contain_text("Sol")
    expect(live.locator("[data-reply-quote]")).to_contain_text("Back to the very first")
    mine = rhea.locator("main .bubble", has_text="Yes, that one")
    expect(mine.locator("[data-reply-quote]")).to_contain_text("Back to the very first")
    shoot(sol, "reply-quote")

    # The original rendered again as deleted for everyone (its body gone), as a live update
    # swaps a bubble: the quotes of it on the page say so at once.
    rhea.locator(f"main #message-{original_id}").evaluate(
        """bubble => {
            const again = bubble.cloneNode(true);
            again.querySelector(".bubble-body").textContent = "";
            bubble.replaceWith(again);
        }"""
    )
    quote_of_original = rhea.locator(f'main [data-reply-quote][data-reply-to="{original_id}"]')
    expect(quote_of_original).to_have_text(re.compile(r"Message deleted"))
    expect(quote_of_original).not_to_contain_text("Message 1")


def test_the_typing_indicator_appears_for_the_others_and_expires(server, open_as):
    chat_id = make_group(server, ["tia", "uma", "vic"], "Typists")
    tia, uma, vic = open_as("tia"), open_as("uma"), open_as("vic", viewport=PHONE)
    goto_with_socket(tia, room_path(chat_id), f"/ws/chat/{chat_id}/")
    goto_with_socket(vic, room_path(chat_id), f"/ws/chat/{chat_id}/")
    panel = open_widget_room(uma, chat_id, "Typists")
    uma_line = panel.locator("[data-typing-indicator]")
    vic_line = vic.locator("main [data-typing-indicator]")

    tia.locator("main [data-message-input]").press_sequentially("Hello every")
    expect(uma_line).to_have_text("Tia is typing…")
    expect(vic_line).to_have_text("Tia is typing…")
    shoot(vic, "typing-phone")
    expect(uma_line).to_have_text("")  # she stopped: it expires on its own
    expect(tia.locator("main [data-typing-indicator]")).to_have_text("")  # never herself

    tia.locator("main [data-message-input]").press_sequentially("one")
    vic.locator("main [data-message-input]").press_sequentially("Hi")
    expect(uma_line).to_have_text(re.compile(r"^(Tia and Vic|Vic and Tia) are typing…$"))
    expect(tia.locator("main [data-typing-indicator]")).to_have_text("Vic is typing…")
    tia.locator("main [data-message-input]").press("Enter")
    expect(panel.locator(".bubble-body").last).to_have_text("Hello everyone")
    expect(uma_line).not_to_contain_text("Tia")


def test_a_mention_is_autocompleted_highlighted_and_marked_in_the_inbox(server, open_as):
    chat_id = make_group(server, ["wes", "xia", "yan"], "Lunch plans")
    wes, xia, yan = open_as("wes"), open_as("xia"), open_as("yan")
    for page in (xia, yan):
        goto_with_socket(page, "/chat/", "/ws/chat/inbox/")
    goto_with_socket(wes, room_path(chat_id), f"/ws/chat/{chat_id}/")
    box = wes.locator("main [data-message-input]")
    suggestions = wes.get_by_role("listbox", name="People to mention")

    box.press_sequentially("Hi @")
    expect(suggestions.get_by_role("option")).to_have_text(["Xia@xia", "Yan@yan"])
    box.press("Escape")
    expect(suggestions).to_be_hidden()
    expect(box).to_have_value("Hi @")
    box.press_sequentially("y")
    expect(suggestions.get_by_role("option")).to_have_text(["Yan@yan"])
    box.press("Backspace")
    expect(suggestions.get_by_role("option")).to_have_count(2)
    box.press("ArrowDown")
    box.press("ArrowUp")
    expect(suggestions.get_by_role("option", selected=True)).to_have_text("Xia@xia")
    expect(box).to_have_attribute("aria-expanded", "true")
    shoot(wes, "mention-autocomplete")
    box.press("Enter")  # picks; does not send
    expect(box).to_have_value("Hi @Xia ")
    expect(suggestions).to_be_hidden()
    box.press_sequentially("lunch at noon?")
    box.press("Enter")
    expect(box).to_have_value("")

    xia_row = xia.locator("main [data-chat-row]", has_text="Lunch plans")
    expect(xia_row.locator("[data-chat-mention]")).to_be_visible()
    expect(yan.locator("main [data-chat-row]", has_text="Lunch plans").locator("[data-chat-unread]")).to_have_text("1")
    expect(yan.locator("main [data-chat-row]", has_text="Lunch plans").locator("[data-chat-mention]")).to_be_hidden()
    shoot(xia, "mention-inbox-mark")

    until_socket_speaks(xia, f"/ws/chat/{chat_id}/", xia_row.click)
    expect(xia.locator("main .bubble .mention--me")).to_have_text("@Xia")
    panel = open_widget_room(yan, chat_id, "Lunch plans")
    expect(panel.locator(".bubble .mention")).to_have_text("@Xia")
    expect(panel.locator(".bubble .mention--me")).to_have_count(0)
    expect(wes.locator("main .bubble .mention")).to_have_text("@Xia")

    goto_with_socket(xia, "/chat/", "/ws/chat/inbox/")
    expect(xia.locator("main [data-chat-row]", has_text="Lunch plans").locator("[data-chat-mention]")).to_be_hidden()

    # Live, for a person reading the room in the widget: the mention of them stands out;
    # and the widget's box suggests and completes names too (Tab picks).
    send(wes, "@Yan and you?")
    expect(panel.locator(".bubble .mention--me")).to_have_text("@Yan")
    widget_box = panel.locator("[data-message-input]")
    widget_box.press_sequentially("@w")
    expect(panel.get_by_role("listbox", name="People to mention").get_by_role("option")).to_have_text(["Wes@wes"])
    widget_box.press("Tab")
    expect(widget_box).to_have_value("@Wes ")
    widget_box.press_sequentially("sure")
    widget_box.press("Enter")
    expect(wes.locator("main .bubble .mention--me")).to_have_text("@Wes")


# Runs in the page: the typing module on its own, fed frames as a room feeds it.
TYPING_MODULE_SCRIPT = """
async () => {
  const { TypingIndicator, typingText } = await import("/static/js/components/chat/typing-indicator.js");
  const line = document.createElement("p");
  const sent = [];
  const socket = { isOpen: () => true, send: (frame) => sent.push(frame) };
  const input = document.createElement("textarea");
  const typing = new TypingIndicator({ line, input, socket });
  const seen = [];
  typing.onTyping({ user_id: 1, name: "Ann" });
  seen.push(line.textContent);
  typing.onTyping({ user_id: 2, name: "Bo" });
  seen.push(line.textContent);
  typing.onTyping({ user_id: 3, name: "Cy" });
  seen.push(line.textContent);
  typing.onMessage({ sender_id: 3 });
  typing.onMessage({ sender_id: 1 });
  seen.push(line.textContent);
  for (const text of ["H", "He", "Hel"]) {
    input.value = text;
    input.dispatchEvent(new Event("input"));
  }
  typing.onSent();
  input.value = "Next";
  input.dispatchEvent(new Event("input"));
  typing.stop();
  return { seen, signals: sent.length, none: typingText([]) };
}
"""


def test_the_typing_line_names_typists_forgets_a_sender_at_once_and_signals_sparingly(server, open_as):
    server.set_up(users=["zed"])
    zed = open_as("zed")
    result = zed.evaluate(TYPING_MODULE_SCRIPT)
    assert result["seen"] == [
        "Ann is typing…",
        "Ann and Bo are typing…",
        "3 people are typing…",
        "Bo is typing…",  # Cy's and Ann's messages arrived: gone at once, not after the expiry
    ]
    # Three keystrokes are one signal; after a send the next keystroke signals again.
    assert result["signals"] == 2
    assert result["none"] == ""
