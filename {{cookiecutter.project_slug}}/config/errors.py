"""What the project answers when a view, or a middleware around it, raised (handler500)."""

import sys

from django.http import HttpResponse
from django.template.loader import render_to_string
from django.utils.cache import add_never_cache_headers, patch_vary_headers
from django.utils.http import escape_leading_slashes
from django.views.defaults import server_error as page_for_a_server_error

from chat.realtime.database import database_busy
from chat.views import DATABASE_RETRY_AFTER_SECONDS


def server_error(request) -> HttpResponse:
    """The 500 page, unless the database could not be reached in time: then a 503 with
    Retry-After: trying again in a moment is what helps, and clients that honour it do.

    That happens under overload or during a restart (every pooled connection in use past the
    pool's timeout, SQLite's one writer lock held past its busy timeout, PostgreSQL
    restarting), on any page: the login, the sign-up, the admin. The chat's views answer it
    themselves; this covers the rest of the project and what fails around a view (saving the
    session). Django logs it as an error with its traceback, as any 500: it is rare, and
    where it is not, the pool or the database needs attention. Rendered without the
    database or a session, as the 500 page is. (With DEBUG on, Django shows its own page.)"""
    if database_busy(sys.exc_info()[1]):
        again = escape_leading_slashes(request.get_full_path()) if request.method in ("GET", "HEAD") else None
        response = HttpResponse(render_to_string("503.html", {"again": again}), status=503)
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    else:
        response = page_for_a_server_error(request)
    return never_kept(response)


def never_kept(response: HttpResponse) -> HttpResponse:
    """Marked as the chat's own answers are: never stored (an error is of its moment, and a
    browser that kept it would show it again on Back), and varying with the htmx headers, so
    that no cache hands a page's request what a fragment's got, or the reverse."""
    add_never_cache_headers(response)
    patch_vary_headers(response, ["HX-Request", "HX-Target"])
    return response
