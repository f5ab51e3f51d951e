"""The production server: gunicorn running one uvicorn worker (`make serve-prod`, deploy/start.sh).

    gunicorn -c python:config.gunicorn config.asgi:application

One app process per port, bound to ${HOST:-127.0.0.1}:${PORT:-8000}: scale out with more
ports behind the proxy rather than more workers on one, so every process is a unit a
proxy can route around while it restarts.

On SIGTERM the worker stops accepting, closes its websockets with 1012 (service restart:
the pages reconnect at once, to another process behind the proxy, and catch up), lets
in-flight requests finish, writes the read marks it still holds and sends the events and
inbox counts still waiting; whatever is still running after GRACEFUL_TIMEOUT seconds is
cancelled, and gunicorn kills the worker a few seconds later if it has not exited by then.
"""

import logging
import os

from uvicorn_worker import UvicornWorker


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = 1
worker_class = "config.gunicorn.ChatUvicornWorker"
# Requests and sockets get this long to finish; gunicorn's own kill comes 10 s later, so
# the worker's clean-up (read marks, the events and inbox counts still waiting, at most
# 4.5 s: chat/realtime/shutdown.py; leaving groups) runs before it.
GRACEFUL_TIMEOUT = int(os.environ.get("GRACEFUL_TIMEOUT", "10"))
graceful_timeout = GRACEFUL_TIMEOUT + 10
# The server's own messages (start, stop, signals) to stderr at the project's LOG_LEVEL; one
# line per request and per websocket opened only with ACCESS_LOG=true.
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "INFO").lower()
accesslog = "-" if env_flag("ACCESS_LOG") else None
# Several processes on one host would share the default control socket path; restarts go
# through signals (systemd, the container runtime) instead.
control_socket_disable = True


class ChatUvicornWorker(UvicornWorker):
    """uvicorn's worker with the lifespan protocol (at shutdown the chat sends what its
    sockets' last work left waiting: chat/realtime/shutdown.py), the sans-I/O websockets
    implementation without compression, and a bounded graceful shutdown.

    The client's address and scheme come from nginx's X-Forwarded-* headers only behind the
    proxy (BEHIND_TLS_PROXY=true, from FORWARDED_ALLOW_IPS, 127.0.0.1 by default): on a port
    clients reach directly they could claim any address and dodge the per-address limits.
    """

    CONFIG_KWARGS = {
        **UvicornWorker.CONFIG_KWARGS,
        "lifespan": "on",
        "ws": "websockets-sansio",
        # As daphne's (make run): a frame over it closes its socket (1009), unread. Frames up
        # to it are read, and those over CHAT_WS_MAX_FRAME_BYTES get an error frame. uvicorn's
        # own 16 MiB let each socket make the process hold that much for one frame.
        "ws_max_size": 1024 * 1024,
        # No permessage-deflate, which every browser offers and uvicorn accepts by default:
        # each socket would keep its own zlib streams (an idle socket 64 KiB instead of 28)
        # and compress every frame again, though a room's frame is encoded once for all its
        # sockets. Daphne (make run) does not compress either; nor do Socket.IO or Phoenix
        # by default, for the same reasons.
        "ws_per_message_deflate": False,
        "proxy_headers": env_flag("BEHIND_TLS_PROXY"),
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = GRACEFUL_TIMEOUT
        logging.getLogger("uvicorn.error").addFilter(client_faults_without_traceback)
        if not env_flag("ACCESS_LOG"):
            logging.getLogger("uvicorn.error").addFilter(leave_out_socket_opens)


def leave_out_socket_opens(record: logging.LogRecord) -> bool:
    """The lines uvicorn (and the websockets library, through uvicorn's logger) write for each
    websocket are access log lines: after a restart thousands of sockets reopen at once, and
    the error log would be nothing else."""
    message = str(record.msg)
    return not (message.startswith('%s - "WebSocket %s"') or message in {"connection open", "connection closed"})


# What uvicorn logs with a traceback, at ERROR, when a client sends a text frame that is not
# UTF-8 (the socket is closed with 1007, as it should be): any logged-in client could fill the
# error log, and an error tracker, with them at will.
CLIENT_FAULTS = {"Invalid UTF-8 sequence received from client."}


def client_faults_without_traceback(record: logging.LogRecord) -> bool:
    """A client's fault, kept as one warning line without the traceback."""
    if str(record.msg) in CLIENT_FAULTS:
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True
