"""The session of a socket: Channels' session middleware, without its wrapper around `send`.

Channels' `SessionMiddlewareStack` wraps the socket's `send`, and every frame the socket
sends then reads the session's state twice, through a lazy object, to decide whether to
save it. It saves only when an HTTP response starts, which a socket never sends, so for a
socket that work is spent on nothing: in a room of a hundred getting a hundred messages a
second, 4 to 5% of the server process (py-spy). `SocketSessionMiddlewareStack` puts the same
session in `scope["session"]`, read from the same cookie, and hands `send` on untouched.

As with Channels' stack, nothing saves a socket's session: code of yours that changes it
saves it itself. Channels' `AuthMiddleware` works on top of either.
"""

from importlib import import_module

from channels.sessions import CookieMiddleware
from django.conf import settings


class SocketSessionMiddleware:
    """`scope["session"]`: the session of the cookie named SESSION_COOKIE_NAME, loaded when
    first read (the chat's handshakes load those of the sockets opening together in one
    query). Needs `CookieMiddleware` above it; a session already in the scope is kept."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if "session" not in scope:
            session_key = scope["cookies"].get(settings.SESSION_COOKIE_NAME)
            store = import_module(settings.SESSION_ENGINE).SessionStore
            scope = {**scope, "session": store(session_key)}
        return await self.inner(scope, receive, send)


def SocketSessionMiddlewareStack(inner):  # noqa: N802 - named as Channels' stacks are
    return CookieMiddleware(SocketSessionMiddleware(inner))
