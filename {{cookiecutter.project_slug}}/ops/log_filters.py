"""Probe requests out of the access logs: a load balancer asks /readyz every few seconds.

The filter goes on each app server's access logger itself (not through LOGGING, which
would replace the handlers gunicorn or uvicorn gave those loggers):
- "django.channels.server": `manage.py runserver` (Daphne);
- "uvicorn.access" and "gunicorn.access": uvicorn and gunicorn, when their access log is on.
Daphne's own command line writes its access log to stdout without `logging`: run it with
`--access-log /dev/null` (the proxy in front keeps the access log) or `-v 0`.
/readyz logs a change of readiness itself, once, at WARNING (health.py).
"""

from __future__ import annotations

import logging
import re

PROBE_PATHS = ("/healthz", "/readyz", "/metrics")
ACCESS_LOGGERS = ("django.channels.server", "uvicorn.access", "gunicorn.access")

# "GET /readyz HTTP/1.1" (uvicorn, gunicorn) or "HTTP GET /readyz 200" (runserver).
PROBE_REQUEST = re.compile(r"\b(?:GET|HEAD) (?:" + "|".join(map(re.escape, PROBE_PATHS)) + r")(?=[\s?\"]|$)")


class SkipProbeRequests(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not PROBE_REQUEST.search(record.getMessage())


def keep_probes_out_of_access_logs() -> None:
    for name in ACCESS_LOGGERS:
        access_logger = logging.getLogger(name)
        if not any(isinstance(existing, SkipProbeRequests) for existing in access_logger.filters):
            access_logger.addFilter(SkipProbeRequests())
