"""Which pages may open a websocket: the same origins Django's CSRF check accepts for a POST.

A browser sends cookies with a websocket handshake from any site, so a socket must check
where the page that opens it came from. Channels' `AllowedHostsOriginValidator` compares
host names only: `http://example.com:9999` or `https://example.com` would pass a server
on `http://example.com:8000`. Here an origin passes when it is exactly the request's own
(scheme, host and port, the scheme read as `request.is_secure()` reads it, including
`SECURE_PROXY_SSL_HEADER`) with a host in ALLOWED_HOSTS, or one of CSRF_TRUSTED_ORIGINS
(`https://*.example.com` covers subdomains). Without an Origin header it is refused.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import is_same_domain, split_domain_port, validate_host


class SameOriginValidator:
    """ASGI middleware: pass websockets from an allowed origin, refuse the others (HTTP 403)."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            raise ValueError("SameOriginValidator is for websocket connections only")
        headers = dict(scope.get("headers", []))
        origin = headers.get(b"origin", b"").decode("latin1")
        if origin and origin_allowed(origin, own_origin(scope, headers)):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


def own_origin(scope, headers: dict[bytes, bytes]) -> str | None:
    """The origin of the page this server would serve at this Host, or None for a host not allowed."""
    host = headers.get(b"host", b"").decode("latin1")
    domain, _ = split_domain_port(host)
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:  # as Django's request.get_host()
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    if not domain or not validate_host(domain, allowed_hosts):
        return None
    return f"{request_scheme(scope, headers)}://{host}"


def request_scheme(scope, headers: dict[bytes, bytes]) -> str:
    """The request's scheme, trusting the proxy's header only when SECURE_PROXY_SSL_HEADER says so."""
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, secure_value = proxy_header
        value = headers.get(name.removeprefix("HTTP_").lower().replace("_", "-").encode())
        if value is not None:
            return "https" if value.decode("latin1").split(",")[0].strip() == secure_value else "http"
    return "https" if scope.get("scheme") in {"wss", "https"} else "http"


def origin_allowed(origin: str, own: str | None) -> bool:
    if origin == own or origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        pattern = urlsplit(trusted)
        wildcard = "*" in pattern.netloc and pattern.scheme == parsed.scheme
        if wildcard and is_same_domain(parsed.netloc, pattern.netloc.partition("*")[2]):
            return True
    return False
