"""The operations endpoints, answered before every other middleware."""

from __future__ import annotations

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed

from ops.health import healthz, readyz
from ops.metrics import metrics

ENDPOINTS = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics}


class OperationsEndpointsMiddleware:
    """/healthz, /readyz and /metrics, first in MIDDLEWARE.

    Probes and scrapers come from the private network to each process's own port: over
    plain HTTP, with the machine's address as Host, without cookies. Answered here, they
    skip the HTTPS redirect, the ALLOWED_HOSTS check (nothing in their answers is built
    from Host), sessions, CSRF and the page headers, and touch no database unless /readyz
    asks it something.
    """

    sync_capable = False
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        endpoint = ENDPOINTS.get(request.path_info)
        if endpoint is None:
            return await self.get_response(request)
        if request.method not in {"GET", "HEAD"}:
            return HttpResponseNotAllowed(["GET", "HEAD"])
        return await endpoint(request)
