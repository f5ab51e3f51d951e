"""In a real browser: the pages run under their Content-Security-Policy, and logging out
in one tab closes the sockets of the session's other tabs.

Uses the served project and the fixtures of test_browser.py (one daphne, DEBUG on, so
django-htmx's debug script runs too).
"""

from __future__ import annotations

import time

import pytest
from test_browser import browser, goto_with_socket, open_as, room_path, send, server  # noqa: F401

pytestmark = pytest.mark.slow

# Collects the page's CSP violation reports; an init script runs before the page's own.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  const where = `${event.sourceFile}:${event.lineNumber}`;
  window.cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"} at ${where}`);
});
"""


def test_main_pages_run_without_a_content_security_policy_violation(server, open_as):  # noqa: F811
    ids = server.set_up(users=["csp_cleo", "csp_dan"], chats=[("csp_dan", "csp_cleo", ["Hi <b>Cleo</b>"])])
    chat_id = ids["chats"]["csp_dan:csp_cleo"]
    cleo = open_as("csp_cleo")
    cleo.add_init_script(RECORD_VIOLATIONS)
    console = []
    cleo.on("console", lambda message: console.append(message.text))
    seen = {}

    def visit(path: str, socket_path: str | None = None) -> None:
        if socket_path:
            goto_with_socket(cleo, path, socket_path)
        else:
            cleo.goto(path)
        seen[path] = cleo.evaluate("window.cspViolations")

    visit("/chat/", "/ws/chat/inbox/")
    cleo.get_by_role("button", name="New chat").click()
    cleo.get_by_role("dialog", name="New chat").get_by_label("Their e-mail").fill("csp_dan@example.com")
    cleo.get_by_text("Found: Csp_Dan").wait_for()
    seen["/chat/ (new chat dialog)"] = cleo.evaluate("window.cspViolations")
    visit(room_path(chat_id), f"/ws/chat/{chat_id}/")
    send(cleo, "Reply under the policy")
    cleo.locator("main .bubble-body", has_text="Reply under the policy").wait_for()
    seen[room_path(chat_id) + " (sent)"] = cleo.evaluate("window.cspViolations")
    visit("/chat/new/")
    widget = cleo.locator("[data-chat-widget-toggle]")
    if widget.count():
        widget.click()
        cleo.locator("#chat-widget-panel [data-chat-row]").first.wait_for()
        seen["/chat/new/ (widget)"] = cleo.evaluate("window.cspViolations")
    visit("/admin/login/")
    visit("/accounts/signup/")
    visit("/accounts/login/")

    assert all(violations == [] for violations in seen.values()), seen
    assert not [text for text in console if "Content Security Policy" in text], console


def test_logging_out_in_one_tab_closes_the_room_socket_of_another(server, open_as):  # noqa: F811
    ids = server.set_up(users=["out_eli", "out_fay"], chats=[("out_fay", "out_eli", ["Still there?"])])
    chat_id = ids["chats"]["out_fay:out_eli"]
    first_tab = open_as("out_eli")
    second_tab = first_tab.context.new_page()
    closed = []

    def watch(ws):
        if f"/ws/chat/{chat_id}/?" in ws.url or ws.url.endswith(f"/ws/chat/{chat_id}/"):
            ws.on("close", lambda _: closed.append(ws.url))

    second_tab.on("websocket", watch)
    goto_with_socket(second_tab, room_path(chat_id), f"/ws/chat/{chat_id}/")

    first_tab.get_by_role("button", name="Log out").click()
    first_tab.wait_for_url("**/accounts/login/")

    deadline = time.monotonic() + 15
    while not closed:
        assert time.monotonic() < deadline, "the other tab's room socket stayed open after logging out"
        second_tab.wait_for_timeout(50)  # lets Playwright deliver events; a poll, not a fixed wait
