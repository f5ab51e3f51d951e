"""ASGI entry point: Django for HTTP, Channels for the chat websockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Initialise Django (apps, models) before importing anything that touches the ORM.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import WebsocketDenier  # noqa: E402
from django.urls import re_path  # noqa: E402

import chat.routing  # noqa: E402
from chat.origins import SameOriginValidator  # noqa: E402
from chat.realtime.sessions import SocketSessionMiddlewareStack  # noqa: E402
from chat.realtime.shutdown import Lifespan  # noqa: E402
from config.collector import tune_after_startup  # noqa: E402

websocket_urlpatterns = [
    *chat.routing.websocket_urlpatterns,
    # Any other path is refused at the handshake (403), not answered with a server error.
    re_path(r"", WebsocketDenier.as_asgi()),
]

# Sockets get the session (as Channels' SessionMiddlewareStack gives it, without its wrapper
# around every frame they send: chat/realtime/sessions.py); the chat's consumers load the user from it themselves, as
# Channels' AuthMiddleware would, in the one trip to the database thread their handshake
# makes anyway (chat/realtime/handshakes.py). A consumer of your own that reads
# scope["user"] wraps its route in channels.auth.AuthMiddleware.
# "lifespan": a process that stops sends the events and inbox counts its sockets' last work
# left waiting (chat/realtime/shutdown.py).
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": SameOriginValidator(SocketSessionMiddlewareStack(URLRouter(websocket_urlpatterns))),
        "lifespan": Lifespan(),
    }
)

# Loaded: from here on the process serves, and its garbage collector is tuned for that.
tune_after_startup()
