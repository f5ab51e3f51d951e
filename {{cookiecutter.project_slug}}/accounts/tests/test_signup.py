"""Signing up, logging in and out through the pages in templates/registration/."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-Unusual-passphrase-42"


def signup_data(**overrides):
    return {"username": "erin", "email": "erin@example.com", "password1": PASSWORD, "password2": PASSWORD} | overrides


def test_signup_page_shows_the_form(client):
    response = client.get(reverse("signup"))

    content = response.content.decode()
    assert response.status_code == 200
    for field in ("username", "email", "password1", "password2"):
        assert f'name="{field}"' in content


def test_signing_up_creates_the_account_logs_in_and_opens_the_inbox(client):
    response = client.post(reverse("signup"), signup_data())

    user = get_user_model().objects.get(username="erin")
    assert response["Location"] == reverse("chat:list")
    assert user.email == "erin@example.com"
    assert client.get(reverse("chat:list")).context["user"] == user


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"email": ""}, "This field is required."),
        ({"email": "not-an-email"}, "Enter a valid email address."),
        ({"password2": "something-else-entirely"}, "didn’t match"),
    ],
)
def test_signup_with_bad_input_shows_the_error_and_creates_nobody(client, overrides, error):
    response = client.post(reverse("signup"), signup_data(**overrides))

    assert response.status_code == 200
    assert error in response.content.decode()
    assert not get_user_model().objects.exists()


def test_an_email_can_only_have_one_account(client):
    get_user_model().objects.create_user(username="first", email="Erin@Example.com", password=PASSWORD)

    response = client.post(reverse("signup"), signup_data())

    assert "An account with this e-mail already exists." in response.content.decode()
    assert not get_user_model().objects.filter(username="erin").exists()


def test_login_page_logs_in_and_follows_next(client):
    get_user_model().objects.create_user(username="erin", email="erin@example.com", password=PASSWORD)

    page = client.get(reverse("login") + "?next=/chat/new/")
    response = client.post(reverse("login"), {"username": "erin", "password": PASSWORD, "next": "/chat/new/"})

    assert 'value="/chat/new/"' in page.content.decode()
    assert response["Location"] == "/chat/new/"


def test_wrong_password_shows_an_error(client):
    get_user_model().objects.create_user(username="erin", email="erin@example.com", password=PASSWORD)

    response = client.post(reverse("login"), {"username": "erin", "password": "wrong"})

    assert response.status_code == 200
    assert "Please enter a correct" in response.content.decode()


def test_logout_is_a_post_and_returns_to_login(client):
    user = get_user_model().objects.create_user(username="erin", email="erin@example.com", password=PASSWORD)
    client.force_login(user)

    response = client.post(reverse("logout"))

    assert response["Location"] == reverse("login")
    assert client.get(reverse("chat:list")).status_code == 302


def test_anonymous_pages_link_to_login_and_signup_without_chat_widgets(client):
    content = client.get(reverse("login")).content.decode()

    assert reverse("signup") in content
    assert "data-chat-widget-toggle" not in content
    assert "data-total-unread" not in content
