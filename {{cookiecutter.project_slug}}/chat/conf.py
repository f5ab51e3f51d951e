"""The chat app's settings, each overridable in the host project's settings.

Read at call time (not import time) so `override_settings` in tests takes effect.
"""

from typing import Any

from django.conf import settings

DEFAULTS = {
    "CHAT_PAGE_SIZE": 50,
    "CHAT_INBOX_PAGE_SIZE": 50,
    "CHAT_MAX_MESSAGE_LENGTH": 4000,
    "CHAT_GROUP_NAME_MAX_LENGTH": 100,
    "CHAT_GROUP_MAX_MEMBERS": 256,
    "CHAT_MAX_MEMBERS_PER_REQUEST": 50,
    # The largest frame a socket reads; None: room for a send of CHAT_MAX_MESSAGE_LENGTH
    # characters however its client escapes them (chat.realtime.consumers.max_frame_bytes).
    "CHAT_WS_MAX_FRAME_BYTES": None,
    # A chat POST bigger than this is refused unread (413): the largest form, a message of
    # CHAT_MAX_MESSAGE_LENGTH characters, percent-encoded (12 bytes for an emoji), fits.
    # Raise it with a longer CHAT_MAX_MESSAGE_LENGTH.
    "CHAT_MAX_REQUEST_BYTES": 64 * 1024,
    # Open sockets (rooms and inboxes together) one user may hold on one server process;
    # a tab holds one or two. Past it a socket is closed with 4429.
    "CHAT_MAX_SOCKETS_PER_USER": 30,
    # Seconds after sending during which people may edit their own message; 0: always.
    "CHAT_EDIT_WINDOW_SECONDS": 900,
    # The emoji people may react with, in the order the message menu offers them.
    "CHAT_REACTIONS": ("👍", "❤️", "😂", "😮", "😢", "🎉"),
}


def chat_setting(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])
