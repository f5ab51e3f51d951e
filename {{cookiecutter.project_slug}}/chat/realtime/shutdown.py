"""A stopping server process sends what its sockets' last work still owes other people.

uvicorn stops a process in this order: it stops accepting, closes every socket (1012),
waits for their clean-up (the read marks they still held are written), then sends the
application the ASGI lifespan's shutdown, and only after that cancels whatever still runs
and closes the event loop. Until then, events wait their turn in the `EventQueue`, and a
busy chat's inbox counts wait up to a second in `InboxFanout` and `InboxMailbox`. Cancelled,
they were lost: other people's badges kept the old counts until their chat's next message.
`Lifespan` sends all of it at the shutdown message, within SHUTDOWN_SEND_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging

from chat.realtime.loop import EventQueue
from chat.realtime.mailbox import InboxFanout, InboxMailbox

logger = logging.getLogger(__name__)

# Bound on the sends at shutdown (a layer that is down retries for longer): the clients of a
# process that stops without them catch up from the database when they next reconnect or sync.
SHUTDOWN_SEND_SECONDS = 5.0


async def send_what_is_waiting() -> None:
    await EventQueue.for_running_loop().finished()  # its events may hold inbox counts back
    await InboxFanout.for_running_loop().run_all_now()
    await InboxMailbox.for_running_loop().send_all_now()


class Lifespan:
    """The ASGI lifespan protocol for the chat: at shutdown, `send_what_is_waiting`.

    Route "lifespan" to it in the project's ProtocolTypeRouter (config/asgi.py) and run the
    server with its lifespan on (config/gunicorn.py). A server without lifespan support
    (daphne, `runserver`) stops as before.
    """

    async def __call__(self, scope, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await asyncio.wait_for(send_what_is_waiting(), SHUTDOWN_SEND_SECONDS)
                except Exception:  # a layer that is down or slow: see SHUTDOWN_SEND_SECONDS
                    logger.exception("Sending the events and inbox counts waiting at shutdown failed")
                await send({"type": "lifespan.shutdown.complete"})
                return
