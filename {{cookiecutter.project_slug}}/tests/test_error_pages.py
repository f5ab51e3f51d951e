"""Project-wide pages for what went wrong, and the icon every page asks for."""

import contextlib

import pytest
from django.contrib.staticfiles import finders
from django.db import connection
from django.test import Client
from django.urls import reverse

from chat.tests.database_faults import (
    every_pooled_connection_taken,
    hold_sqlite_write_lock,
    needs_connection_pool,
    release_lock,
)
from config.errors import server_error

pytestmark = pytest.mark.django_db


def test_favicon_ico_leads_to_the_shipped_icon(client):
    response = client.get("/favicon.ico")

    assert response.status_code == 302
    assert response["Location"].endswith("favicon.svg")
    assert finders.find("favicon.svg")


def test_every_page_links_its_icon(client):
    content = client.get(reverse("login")).content.decode()

    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in content


def test_an_unknown_address_gets_the_project_404_page(client):
    response = client.get("/no/such/page/")

    assert response.status_code == 404
    assert "Page not found" in response.content.decode()


def test_logout_typed_into_the_address_bar_gets_a_405_page(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("erin", "erin@example.com", "pw"))

    response = client.get(reverse("logout"))

    assert response.status_code == 405
    assert response["Allow"] == "POST, OPTIONS"
    assert "not a page you can open" in response.content.decode()


def test_the_500_page_stands_alone(rf):
    """Rendered with no context processors: it must not need the database or a session.
    (The handler answers a 500 for anything but a database it could not reach.)"""
    response = server_error(rf.get("/"))

    assert response.status_code == 500
    assert "Something went wrong" in response.content.decode()


def test_an_error_of_a_database_that_answers_is_still_a_500(rf):
    """A missing table (a `migrate` not run) is no "busy, try again": it would never end."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table_here")
    except Exception:  # SQLite: OperationalError; PostgreSQL: ProgrammingError
        response = server_error(rf.get("/"))

    assert response.status_code == 500
    assert "Retry-After" not in response
    assert_never_kept(response)


def assert_never_kept(response) -> None:
    """Marked as every answer of the chat's views is: never stored, varying with htmx's headers
    (a chat view's error is re-raised to this handler, which monitoring then sees)."""
    assert "no-store" in response["Cache-Control"]
    assert {"HX-Request", "HX-Target"} <= {name.strip() for name in response["Vary"].split(",")}


@pytest.mark.django_db(transaction=True)
def test_the_busy_page_links_back_to_this_site_only(rf):
    """A request line naming another host (`GET //example.org/...`) gets no link there."""
    with database_busy():
        try:
            with connection.cursor() as cursor:
                cursor.execute(BUSY_STATEMENT[connection.vendor])
        except Exception:
            request = rf.get("/")
            request.path = "//example.org/login/"  # as a server passes it on (RequestFactory would not)
            response = server_error(request)

    assert response.status_code == 503
    assert '<a href="/%2Fexample.org/login/">Try again</a>' in response.content.decode()
    assert_never_kept(response)


def test_a_form_sent_without_a_valid_csrf_token_gets_a_page_saying_what_to_do(django_user_model):
    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.create_user("erin", "erin@example.com", "pw"))

    response = client.post(reverse("chat:new_group"), {"name": "Late", "members": "x@example.com"})

    assert response.status_code == 403
    assert "reload the page and send it again" in response.content.decode()


def test_the_admins_logout_typed_into_the_address_bar_gets_the_405_page(admin_client):
    response = admin_client.get(reverse("admin:logout"))

    assert response.status_code == 405
    assert "POST" in response["Allow"]
    assert "not a page you can open" in response.content.decode()


def test_head_on_a_chat_page_is_answered_like_get(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("finn", "finn@example.com", "pw"))

    response = client.head(reverse("chat:list"))

    assert response.status_code == 200


# A statement that needs what `database_busy` takes away: a write, or a connection.
BUSY_STATEMENT = {"sqlite": "UPDATE chat_chat SET name = name", "postgresql": "SELECT 1"}


@contextlib.contextmanager
def database_busy():
    """The database cannot answer for a moment: every pooled PostgreSQL connection is taken,
    or another connection holds SQLite's one writer lock."""
    if connection.vendor == "sqlite":
        locker = hold_sqlite_write_lock()
        try:
            yield
        finally:
            release_lock(locker)
    elif connection.settings_dict.get("OPTIONS", {}).get("pool"):
        with every_pooled_connection_taken():
            yield
    else:
        pytest.skip("PostgreSQL without the connection pool: nothing to take")


# Committed rows, as a server sees them: another connection takes the lock or the pool.
@pytest.mark.django_db(transaction=True)
def test_a_login_while_the_database_is_busy_is_a_503_to_retry_and_the_retry_logs_in(django_user_model, caplog):
    """The login reads the person and writes their session: with the database busy past its
    timeout that fails, as any page outside the chat might. The answer is the busy page with
    Retry-After, never a 500, and the same form sent again once it is free logs in."""
    django_user_model.objects.create_user("erin", "erin@example.com", "pw")
    browser = Client(raise_request_exception=False)
    form = {"username": "erin", "password": "pw"}
    with database_busy():
        busy = browser.post(reverse("login"), form)

    assert (busy.status_code, busy["Retry-After"]) == (503, "1")
    page = busy.content.decode()
    assert "The server is busy. Try again in a moment." in page
    assert "Try again</a>" not in page  # a POST: the page links back to the start instead
    assert '<a href="/">' in page
    assert [record.status_code for record in caplog.records if record.name == "django.request"] == [503]

    retried = browser.post(reverse("login"), form)
    assert (retried.status_code, retried["Location"]) == (302, reverse("chat:list"))


@needs_connection_pool
@pytest.mark.django_db(transaction=True)
def test_an_admin_page_while_every_pooled_connection_is_taken_is_a_503_linking_to_itself(admin_user):
    """Its first read, the session's, waits the pool's timeout for a connection."""
    browser = Client(raise_request_exception=False)
    browser.force_login(admin_user)
    with every_pooled_connection_taken():
        busy = browser.get(reverse("admin:index"))

    assert (busy.status_code, busy["Retry-After"]) == (503, "1")
    assert f'<a href="{reverse("admin:index")}">Try again</a>' in busy.content.decode()
    assert browser.get(reverse("admin:index")).status_code == 200
