"""Project-wide pages for what went wrong, and the icon every page asks for."""

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse
from django.views.defaults import server_error

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
    """Rendered with no context processors: it must not need the database or a session."""
    response = server_error(rf.get("/"))

    assert response.status_code == 500
    assert "Something went wrong" in response.content.decode()


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
