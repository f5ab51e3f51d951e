"""What the project answers when a view, or a middleware around it, raised (handler500)."""

import sys

from django.db import OperationalError
from django.http import HttpResponse
from django.template.loader import render_to_string
from django.utils.http import escape_leading_slashes
from django.views.defaults import server_error as page_for_a_server_error

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
    if not database_busy(sys.exc_info()[1]):
        return page_for_a_server_error(request)
    again = escape_leading_slashes(request.get_full_path()) if request.method in ("GET", "HEAD") else None
    response = HttpResponse(render_to_string("503.html", {"again": again}), status=503)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


# PostgreSQL's codes for a server that is shutting down, starting up or out of connections
# (57P01, 57P02, 57P03, 53300), and the class of lost or refused connections (08).
POSTGRESQL_UNAVAILABLE = {"57P01", "57P02", "57P03", "53300"}
SQLITE_BUSY = ("database is locked", "database table is locked")
# What PostgreSQL says when it refuses a connection for a while ("the database system is
# starting up", "... shutting down", "... in recovery mode"; too many clients), as against
# a wrong password or a database that does not exist.
POSTGRESQL_REFUSING_FOR_NOW = ("the database system is", "too many clients", "remaining connection slots")


def database_busy(exc: BaseException | None) -> bool:
    """Whether a database error means "try again in a moment": no pooled connection free in
    time, SQLite's writer lock held past its timeout, PostgreSQL restarting or out of
    connections. Not a missing table, a wrong password or a database that does not exist:
    those stay 500s, which monitoring sees, rather than a "busy" that never ends."""
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    if type(cause).__name__ == "PoolTimeout":  # psycopg_pool's, when the pool is on
        return True
    if any(text in str(exc) for text in SQLITE_BUSY):
        return True
    sqlstate = getattr(cause, "sqlstate", "")
    if sqlstate is None:  # psycopg could not connect: nobody answered, or the server said why
        text = str(cause)
        return "FATAL" not in text or any(reason in text for reason in POSTGRESQL_REFUSING_FOR_NOW)
    return sqlstate in POSTGRESQL_UNAVAILABLE or sqlstate.startswith("08")
