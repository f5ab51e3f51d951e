"""The benchmark server: the project's application plus a reference relay consumer.

`RelayConsumer` is the Channels tutorial's chat: receive a frame, `group_send` it to the
room, send each group event back out. It authorizes nothing and stores nothing, which
makes it the floor our consumers are measured against. Both share the channel layer and
the process, so the comparison is like for like; each has its own websocket stack, as it
is served: the relay the tutorial's (Channels' session middleware, its user loaded by
Channels' AuthMiddleware), ours the project's (config/asgi.py: the session without
Channels' wrapper around every frame sent, the user loaded in the socket's own handshake).

With BENCH_TRACEMALLOC=<frames> (benchmarks.settings), GET /bench/tracemalloc/ reports the
allocations since the previous such GET: where idle sockets' memory goes.

    gunicorn -c python:config.gunicorn --bind 127.0.0.1:8001 benchmarks.relay_asgi:application
"""

import gc
import json
import os
import tracemalloc

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

# Initialise Django (apps, models) before importing anything that touches the ORM.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddleware  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from channels.sessions import SessionMiddlewareStack  # noqa: E402
from django.urls import path  # noqa: E402

import chat.routing  # noqa: E402
from chat.realtime.sessions import SocketSessionMiddlewareStack  # noqa: E402
from chat.realtime.shutdown import Lifespan  # noqa: E402
from config.collector import tune_after_startup  # noqa: E402


class RelayConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.room_group_name = f"bench.relay.{self.scope['url_route']['kwargs']['room']}"
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        message = json.loads(text_data)["message"]
        await self.channel_layer.group_send(self.room_group_name, {"type": "relay.message", "message": message})

    async def relay_message(self, event):
        await self.send(text_data=json.dumps({"message": event["message"]}))


RELAY_PATH = "/ws/bench/relay/"
relay_stack = SessionMiddlewareStack(  # the tutorial's AuthMiddlewareStack
    URLRouter([path(f"{RELAY_PATH[1:]}<slug:room>/", AuthMiddleware(RelayConsumer.as_asgi()))])
)
chat_stack = SocketSessionMiddlewareStack(URLRouter(chat.routing.websocket_urlpatterns))  # as config/asgi.py


async def relay_or_chat(scope, receive, send):
    stack = relay_stack if scope["path"].startswith(RELAY_PATH) else chat_stack
    return await stack(scope, receive, send)


class AllocationsSince:
    """GET /bench/tracemalloc/ with BENCH_TRACEMALLOC set: the top allocations since the
    previous GET (the first GET only takes the snapshot), as text, grouped by traceback."""

    path = "/bench/tracemalloc/"

    def __init__(self, app):
        self.app, self.previous = app, None

    async def __call__(self, scope, receive, send):
        if scope["path"] != self.path or not tracemalloc.is_tracing():
            return await self.app(scope, receive, send)
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        text = (
            "snapshot taken\n" if self.previous is None else self.top(snapshot.compare_to(self.previous, "traceback"))
        )
        self.previous = snapshot
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": text.encode()})

    @staticmethod
    def top(differences, count: int = 25, frames: int = 6) -> str:
        """The biggest growths, each with the innermost `frames` of its traceback."""
        lines = [f"total {sum(d.size_diff for d in differences) / 1024:+,.0f} KiB"]
        for difference in differences[:count]:
            lines.append(f"{difference.size_diff / 1024:+,.1f} KiB in {difference.count_diff:+,} blocks")
            innermost = list(reversed(difference.traceback))[:frames]
            lines += [f"    {short_path(frame.filename)}:{frame.lineno}" for frame in innermost]
        return "\n".join(lines) + "\n"


def short_path(filename: str) -> str:
    return filename.split("site-packages/")[-1].removeprefix(os.getcwd() + "/")


application = ProtocolTypeRouter(
    {
        "http": AllocationsSince(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(relay_or_chat),
        "lifespan": Lifespan(),  # as config/asgi.py
    }
)

tune_after_startup()  # as config/asgi.py does
