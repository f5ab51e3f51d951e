"""Counters of the chat's live path in this server process, for whatever exports them.

Plain integers with no dependency, so the app stays self-contained: a project reads them
(this one serves them at /metrics in Prometheus format, see ops/metrics.py). They count
what happened in this process since it started; several processes each count their own.

- `open_sockets[<consumer class>]`: websockets open now (a gauge);
- `totals[<name>]`: counts that only grow (see the names below).
"""

from __future__ import annotations

from collections import Counter

# The names in `totals`.
MESSAGES_SENT = "messages_sent"  # messages stored by a send (over a socket or HTTP); retries not counted
CATCH_UP_FETCHES = "catch_up_fetches"  # messages/?after=<id>: a room filling what it missed
FRAMES_DROPPED = "frames_dropped"  # client frames over the per-user frame budget, not handled
SOCKETS_DROPPED = "sockets_dropped"  # room sockets let go because a delivery to them failed
SOCKETS_CLOSED_LAYER_LOST = "sockets_closed_layer_lost"  # closed with 4011: the channel layer failed
SOCKETS_CLOSED_TOO_SLOW = "sockets_closed_too_slow"  # closed with 4008: fell too far behind reading
LATE_MESSAGES_READ = "late_messages_read"  # read by a room hub that waited too long for their events
SENDS_BUSY = "sends_busy"  # socket sends answered "busy", HTTP sends 503, past capacity: nothing stored

open_sockets: Counter[str] = Counter()
totals: Counter[str] = Counter()


def socket_opened(kind: str) -> None:
    open_sockets[kind] += 1


def socket_closed(kind: str) -> None:
    open_sockets[kind] -= 1


def count(name: str, amount: int = 1) -> None:
    totals[name] += amount
