"""In a real browser: the production server restarts gracefully under an open room.

The default project is served by its production server (gunicorn with the uvicorn worker,
config/gunicorn.py). SIGTERM closes the room's socket with 1012 (service restart); the page
keeps reconnecting until the server is back, then shows what was sent meanwhile, fetching
only what the reopened socket's greeting (`chat.sync`) says it missed.

Uses test_browser's Chromium and `open_as` (imported), with a server of its own.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest
import test_browser
from baking import clean_env
from served_project import ServedProject, tooling
from test_browser import REOPENED_WITHIN_MS, goto_with_socket, room_path

pytestmark = pytest.mark.slow

browser, open_as = test_browser.browser, test_browser.open_as

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips or fails
    expect = None

SERVICE_RESTART = 1012
# chat-websocket.js: after a 1012 a socket that cannot connect tries again within this long
# (for 30 s), instead of backing off towards 15 s; the margin covers a busy test machine.
RESTART_RETRY_MS = 2000
RETRY_MARGIN_MS = 700
# Every close code the page's sockets saw, in window.closeCodes, the type of every frame
# they received, in window.frameTypes, and the URL (and time) of every socket the page
# opened, in window.socketUrls and window.socketTimes (test instrumentation only).
RECORD_SOCKETS = """
window.closeCodes = [];
window.frameTypes = [];
window.socketUrls = [];
window.socketTimes = [];
const PageWebSocket = window.WebSocket;
window.WebSocket = class extends PageWebSocket {
  constructor(...args) {
    super(...args);
    window.socketUrls.push(String(args[0]));
    window.socketTimes.push([String(args[0]), performance.now()]);
    this.addEventListener("close", (event) => window.closeCodes.push(event.code));
    this.addEventListener("message", (event) => window.frameTypes.push(JSON.parse(event.data).type));
  }
};
"""


class ProductionServedProject(ServedProject):
    """The baked project served as `make serve-prod` serves it, restartable with SIGTERM."""

    def start(self) -> None:
        python = str(self.venv / "bin" / "python")
        command = tooling.server_command(
            "gunicorn", python=python, port=self.port, application="config.asgi:application"
        )
        with self.log.open("a") as log_file:
            self.process = subprocess.Popen(
                command, cwd=self.path, env=clean_env(**self.env), stdout=log_file, stderr=subprocess.STDOUT
            )
        self.wait_until_serving()

    def terminate(self) -> int:
        """SIGTERM, as a deploy sends it; the exit status once the server has stopped by itself."""
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=30)
        self.process = None
        return status


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    project = ProductionServedProject(tmp_path_factory.mktemp("browser-restart"))
    project.manage("migrate", "--verbosity", "0")
    project.start()
    yield project
    project.stop()


def test_room_reconnects_after_a_graceful_restart_and_shows_what_it_missed(server, open_as):
    ids = server.set_up(users=["vera", "walt"], chats=[("vera", "walt", ["Before the deploy"])])
    chat_id = ids["chats"]["vera:walt"]
    walt = open_as("walt")
    walt.add_init_script(RECORD_SOCKETS)
    goto_with_socket(walt, room_path(chat_id), f"/ws/chat/{chat_id}/")
    expect(walt.locator("main .bubble-body")).to_have_text(["Before the deploy"])
    # Stored from outside the server: the open room hears nothing of it, only a catch-up shows it.
    server.send(sender="vera", receiver="walt", bodies=["Sent while the server restarted"])

    assert server.terminate() == 0
    walt.wait_for_function(f"window.closeCodes.includes({SERVICE_RESTART})")
    hint = walt.locator("main [data-connection-status]")
    expect(hint).to_be_visible()
    expect(hint).to_have_text(re.compile("reconnecting", re.IGNORECASE))
    server.start()

    expect(hint).to_be_hidden(timeout=REOPENED_WITHIN_MS)
    expect(walt.locator("main .bubble-body")).to_have_text(["Before the deploy", "Sent while the server restarted"])


# Runs in `manage.py shell`, outside the server: an edit no open room hears of.
EDIT_SCRIPT = """
from chat import services
from chat.models import Message
message = Message.objects.get(chat_id=CHAT_ID, body=BODY)
print(json.dumps(services.edit_message(message=message, user=message.sender, body=NEW_BODY).change_seq))
"""


def test_a_reopened_room_gets_what_it_missed_with_its_greeting_and_fetches_only_the_rest(server, open_as):
    ids = server.set_up(users=["xena", "yuri"], chats=[("xena", "yuri", ["Written before the deploy"])])
    chat_id = ids["chats"]["xena:yuri"]
    yuri = open_as("yuri")
    yuri.add_init_script(RECORD_SOCKETS)
    fetched = []
    yuri.on("request", lambda request: fetched.append(request.url) if "/messages/" in request.url else None)
    goto_with_socket(yuri, room_path(chat_id), f"/ws/chat/{chat_id}/")
    greetings = "window.frameTypes.filter((type) => type === 'chat.sync').length"
    yuri.wait_for_function(f"{greetings} === 1")
    assert fetched == []  # the page was rendered with the room's newest message: nothing to fetch

    assert server.terminate() == 0
    edit = {"CHAT_ID": chat_id, "BODY": "Written before the deploy", "NEW_BODY": "Edited during the deploy"}
    server.shell(EDIT_SCRIPT, **edit)
    server.send(sender="xena", receiver="yuri", bodies=["Sent during the deploy", "And another"])
    hint = yuri.locator("main [data-connection-status]")
    expect(hint).to_be_visible()
    server.start()

    expect(hint).to_be_hidden(timeout=REOPENED_WITHIN_MS)
    expect(yuri.locator("main .bubble-body")).to_have_text(
        ["Edited during the deploy", "Sent during the deploy", "And another"]
    )
    assert yuri.evaluate(greetings) == 2
    first_id = min(
        int(id_)
        for id_ in yuri.locator("main [data-message-id]").evaluate_all("els => els.map(e => e.dataset.messageId)")
    )
    # The reopened socket asked after the message the page showed, and its greeting brought the
    # two new ones; only the edit (the greeting's change cursor was ahead) was fetched. (The
    # inbox socket reconnects beside it, with its own jitter: either may open last.)
    room_socket_urls = [url for url in yuri.evaluate("window.socketUrls") if f"/ws/chat/{chat_id}/" in url]
    assert room_socket_urls[-1].endswith(f"/ws/chat/{chat_id}/?after={first_id}")
    assert [url.partition("?")[2] for url in fetched] == ["changed_since=0"]


def test_a_page_keeps_trying_every_couple_of_seconds_while_the_restarted_server_is_down(server, open_as):
    """A single process restarting: no other one takes the socket, and the page keeps trying
    at most RESTART_RETRY_MS apart, so it is back within seconds of the server. Backing off as
    after any other failure, it would be waiting 4, 8, then up to 15 s by now."""
    ids = server.set_up(users=["zack", "abby"], chats=[("zack", "abby", ["Before a slow deploy"])])
    chat_id = ids["chats"]["zack:abby"]
    abby = open_as("abby")
    abby.add_init_script(RECORD_SOCKETS)
    goto_with_socket(abby, room_path(chat_id), f"/ws/chat/{chat_id}/")

    assert server.terminate() == 0
    abby.wait_for_function(f"window.closeCodes.includes({SERVICE_RESTART})")
    restarted_at = abby.evaluate("performance.now()")
    time.sleep(12)  # past where the backoff would wait 4, then 8 s
    down_until = abby.evaluate("performance.now()")
    room_sockets = [(url, at) for url, at in abby.evaluate("window.socketTimes") if f"/ws/chat/{chat_id}/" in url]
    tries = [at for _, at in room_sockets if at > restarted_at]
    gaps = [later - earlier for earlier, later in zip([restarted_at, *tries], [*tries, down_until], strict=True)]
    assert len(tries) >= 5, tries
    assert max(gaps) < RESTART_RETRY_MS + RETRY_MARGIN_MS, [round(gap) for gap in gaps]

    server.send(sender="zack", receiver="abby", bodies=["Sent while it was down"])
    server.start()
    expect(abby.locator("main [data-connection-status]")).to_be_hidden(timeout=REOPENED_WITHIN_MS)
    expect(abby.locator("main .bubble-body")).to_have_text(["Before a slow deploy", "Sent while it was down"])
