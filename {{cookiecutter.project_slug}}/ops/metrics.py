"""/metrics: this process's counters in Prometheus' text format, for a scraper with the token.

Per process: each server process counts its own sockets and messages (chat/metrics.py)
and its own CPU, memory and open files. Scrape every process on its own address, not the
load balancer in front of them, and sum in Prometheus. With several workers behind one
port (gunicorn -w N), a scrape reaches one worker at random: give each worker a port of
its own, or set up prometheus_client's multiprocess mode, which this project does not.

METRICS_TOKEN unset: 404, as if there were no such page. Set: the scraper sends
`Authorization: Bearer <METRICS_TOKEN>`; without it 401, with another token 403.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers
from django.utils.crypto import constant_time_compare
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from chat import metrics as chat_metrics
from ops.layer_drops import count_layer_drops

TOTALS = {
    chat_metrics.MESSAGES_SENT: "Messages stored by a send (socket or HTTP); retried sends not counted.",
    chat_metrics.CATCH_UP_FETCHES: "Rooms fetching the messages they missed (messages/?after=).",
    chat_metrics.FRAMES_DROPPED: "Client frames dropped unhandled: over the per-user frame budget.",
    chat_metrics.SENDS_BUSY: "Socket sends answered busy (over capacity or the database busy); the client resends.",
    chat_metrics.LATE_MESSAGES_READ: "Room messages whose events came late to this process: read and handed in order.",
}
SOCKETS_CLOSED = {
    "delivery_failed": chat_metrics.SOCKETS_DROPPED,
    "channel_layer_lost": chat_metrics.SOCKETS_CLOSED_LAYER_LOST,
    "too_slow": chat_metrics.SOCKETS_CLOSED_TOO_SLOW,
}


class ChatCollector(Collector):
    """Reads the chat's plain counters at each scrape."""

    def collect(self):
        sockets = GaugeMetricFamily("chat_open_sockets", "Websockets open in this process.", labels=["consumer"])
        for consumer, value in sorted(chat_metrics.open_sockets.items()):
            sockets.add_metric([consumer], value)
        yield sockets
        for name, description in TOTALS.items():
            yield CounterMetricFamily(f"chat_{name}", description, value=chat_metrics.totals[name])
        closed = CounterMetricFamily(
            "chat_sockets_closed_by_server",
            "Sockets the server let go: a delivery failed, the channel layer failed (4011), or too slow (4008).",
            labels=["reason"],
        )
        for reason, name in SOCKETS_CLOSED.items():
            closed.add_metric([reason], chat_metrics.totals[name])
        yield closed
        yield CounterMetricFamily(
            "channel_layer_messages_dropped",
            "Group messages the Redis channel layer dropped: the receiving channel was full (a slow consumer).",
            value=count_layer_drops().dropped,
        )


registry = CollectorRegistry(auto_describe=True)
for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR, ChatCollector()):
    registry.register(collector)


def plain(text: str, status: int) -> HttpResponse:
    response = HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")
    add_never_cache_headers(response)
    return response


async def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if not token:
        return plain("Not found.\n", 404)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        response = plain("Send the metrics token: Authorization: Bearer <METRICS_TOKEN>.\n", 401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if not constant_time_compare(given.strip(), token):
        return plain("Wrong metrics token.\n", 403)
    response = plain(generate_latest(registry).decode(), 200)
    response["Content-Type"] = CONTENT_TYPE_LATEST
    return response
