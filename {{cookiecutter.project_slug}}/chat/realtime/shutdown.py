"""A stopping server process sends what its sockets' last work still owes other people.

uvicorn stops a process in this order: it stops accepting, closes every socket (1012),
waits for their clean-up (the read marks they still held are written), then sends the
application the ASGI lifespan's shutdown, and only after that cancels whatever still runs
and closes the event loop. Until then, events wait their turn in the `EventQueue`, and a
busy chat's inbox counts wait up to a second in `InboxFanout` and `InboxMailbox`. The queued
events and the fan-outs held back were lost with the loop (the mailbox's sender sends what
it holds when cancelled): other people's badges kept the old counts until their chat's next
message. `Lifespan` sends all of it at the shutdown message, each step within its bound.
Sockets still open after GRACEFUL_TIMEOUT are cancelled before it, and what their clean-up
sends later is not waited for.
"""

from __future__ import annotations

import asyncio
import logging

from chat.realtime.loop import EventQueue, note_serving_loop
from chat.realtime.mailbox import InboxFanout, InboxMailbox

logger = logging.getLogger(__name__)

# Bounds on the sends at shutdown, each step its own (a layer that is down retries for longer):
# the clients of a process that stops without them catch up from the database when they next
# reconnect or sync. In all, well within the 10 s gunicorn gives a stopping worker's clean-up.
SHUTDOWN_STEP_SECONDS = {"events": 1.5, "fan-outs": 1.5, "inbox counts": 1.5}


async def send_what_is_waiting() -> None:
    """The events handed over (they may hold inbox counts back), the inbox fan-outs held back,
    and the inbox updates waiting: the last step whatever became of the others."""
    try:
        await within("events", EventQueue.for_running_loop().finished())
        await within("fan-outs", InboxFanout.for_running_loop().run_all_now())
    finally:
        await within("inbox counts", InboxMailbox.for_running_loop().send_all_now())


async def within(step: str, work) -> None:
    try:
        await asyncio.wait_for(work, SHUTDOWN_STEP_SECONDS[step])
    except TimeoutError:
        logger.warning("Sending the %s waiting at shutdown took over %g s; left", step, SHUTDOWN_STEP_SECONDS[step])
    except Exception:  # a layer or database that is down
        logger.exception("Sending the %s waiting at shutdown failed", step)


class Lifespan:
    """The ASGI lifespan protocol for the chat: at startup, the loop is noted as the one
    serving (before any socket has opened, the chat's HTTP sends are stored in groups with
    the sockets' on it); at shutdown, `send_what_is_waiting`.

    Route "lifespan" to it in the project's ProtocolTypeRouter (config/asgi.py) and run the
    server with its lifespan on (config/gunicorn.py). A server without lifespan support
    (daphne, `runserver`) notes its loop at the first socket, and stops as before.
    """

    async def __call__(self, scope, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                note_serving_loop()  # HTTP sends join the sockets' (sends.store_from_a_request)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send_what_is_waiting()
                await send({"type": "lifespan.shutdown.complete"})
                return
