"""Signing up (confirmed by a link mailed to the address), logging in and out, through the
pages in templates/registration/."""

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import MD5PasswordHasher
from django.core import mail
from django.core.management import call_command
from django.urls import reverse

from accounts.models import PendingSignup
from chat.management.commands.seed_chat_data import DEMO_PASSWORD

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-Unusual-passphrase-42"
CONFIRM_LINK = re.compile(r"http://testserver(/accounts/signup/confirm/[^/\s]+/)")


def signup_data(**overrides):
    return {"username": "erin", "email": "erin@example.com", "password1": PASSWORD, "password2": PASSWORD} | overrides


def confirm_path(message) -> str:
    return CONFIRM_LINK.search(message.body).group(1)


def sign_up(client, **overrides):
    """Sign up; the confirmation link's path from the mail it sent."""
    response = client.post(reverse("signup"), signup_data(**overrides))
    assert response["Location"] == reverse("signup_sent")
    return confirm_path(mail.outbox[-1])


def test_signup_page_shows_the_form(client):
    response = client.get(reverse("signup"))

    content = response.content.decode()
    assert response.status_code == 200
    for field in ("username", "email", "password1", "password2"):
        assert f'name="{field}"' in content


def test_signing_up_mails_a_link_and_creates_nobody_yet(client):
    response = client.post(reverse("signup"), signup_data(), follow=True)

    assert "Check your e-mail" in response.content.decode()
    assert not get_user_model().objects.exists()
    assert [message.to for message in mail.outbox] == [["erin@example.com"]]
    assert '"erin"' in mail.outbox[0].body
    assert confirm_path(mail.outbox[0])


def test_the_link_and_the_password_create_the_account_log_in_and_open_the_inbox(client):
    path = sign_up(client)

    page = client.get(path)
    response = client.post(path, {"password": PASSWORD})

    user = get_user_model().objects.get(username="erin")
    assert page.status_code == 200
    assert "erin@example.com" in page.content.decode()
    assert response["Location"] == reverse("chat:list")
    assert user.email == "erin@example.com"
    assert user.check_password(PASSWORD)
    assert client.get(reverse("chat:list")).context["user"] == user
    assert not PendingSignup.objects.exists()


def test_the_link_without_the_sign_ups_password_creates_nothing(client):
    path = sign_up(client)

    response = client.post(path, {"password": "the-address-owner-guessing"})

    assert response.status_code == 400
    assert "not the password you chose" in response.content.decode()
    assert not get_user_model().objects.exists()


@pytest.mark.parametrize(
    "tamper", [lambda path: path.replace("/confirm/", "/confirm/x"), lambda path: path[:-3] + "A/"]
)
def test_a_forged_link_is_refused(client, tamper):
    path = sign_up(client)

    response = client.post(tamper(path), {"password": PASSWORD})

    assert response.status_code == 400
    assert "invalid, used or expired" in response.content.decode()
    assert not get_user_model().objects.exists()


def test_an_expired_link_is_refused(client, settings):
    path = sign_up(client)
    settings.ACCOUNT_SIGNUP_LINK_MAX_AGE = -1

    response = client.post(path, {"password": PASSWORD})

    assert response.status_code == 400
    assert not get_user_model().objects.exists()


def test_a_used_link_is_refused(client):
    path = sign_up(client)
    client.post(path, {"password": PASSWORD})
    client.post(reverse("logout"))

    assert client.get(path).status_code == 400


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


def test_signing_up_with_a_taken_address_answers_the_same_and_mails_the_owner(client):
    get_user_model().objects.create_user(username="first", email="Erin@Example.com", password=PASSWORD)

    response = client.post(reverse("signup"), signup_data(), follow=True)

    assert "Check your e-mail" in response.content.decode()
    assert "already" not in response.content.decode()
    assert [message.to for message in mail.outbox] == [["erin@example.com"]]
    assert mail.outbox[0].subject == "You already have an account"
    assert '"first"' in mail.outbox[0].body
    assert not CONFIRM_LINK.search(mail.outbox[0].body)
    assert not get_user_model().objects.filter(username="erin").exists()


class CountingHasher(MD5PasswordHasher):
    """The tests' fast hasher, counting the passwords it hashes."""

    hashed = 0

    def encode(self, password, salt):
        CountingHasher.hashed += 1
        return super().encode(password, salt)


@pytest.mark.parametrize("has_account", [False, True], ids=["new-address", "taken-address"])
def test_signing_up_hashes_the_password_whether_or_not_the_address_has_an_account(client, settings, has_account):
    """Hashing is the slow part of a sign-up: doing it on one path only would tell who has
    an account by how long the answer takes."""
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    if has_account:
        get_user_model().objects.create_user(username="first", email="erin@example.com", password=PASSWORD)
    CountingHasher.hashed = 0

    response = client.post(reverse("signup"), signup_data())

    assert response["Location"] == reverse("signup_sent")
    assert CountingHasher.hashed == 1


def test_a_strangers_sign_up_with_your_address_does_not_block_yours(client):
    sign_up(client, username="squatter", email="ERIN@example.com")
    owners_link = sign_up(client)

    response = client.post(owners_link, {"password": PASSWORD})

    assert response["Location"] == reverse("chat:list")
    assert list(get_user_model().objects.values_list("username", "email")) == [("erin", "erin@example.com")]
    assert not PendingSignup.objects.exists()  # the stranger's link is dead too


def test_the_other_links_die_with_the_first_account(client):
    first, second = sign_up(client), sign_up(client, username="erin2", email="Erin@Example.com")
    client.post(first, {"password": PASSWORD})
    client.post(reverse("logout"))

    response = client.post(second, {"password": PASSWORD})

    assert response.status_code == 400
    assert get_user_model().objects.count() == 1


def test_confirming_an_address_that_got_an_account_meanwhile_is_a_form_error(client):
    path = sign_up(client)
    get_user_model().objects.create_user(username="made-by-admin", email="ERIN@example.com", password=PASSWORD)

    response = client.post(path, {"password": PASSWORD})

    assert response.status_code == 400
    assert "An account with this e-mail already exists; log in instead." in response.content.decode()
    assert get_user_model().objects.count() == 1


def test_confirming_a_username_taken_meanwhile_is_a_form_error(client):
    first, second = sign_up(client), sign_up(client, email="other@example.com")
    client.post(first, {"password": PASSWORD})
    client.post(reverse("logout"))

    response = client.post(second, {"password": PASSWORD})

    assert response.status_code == 400
    assert "took the username" in response.content.decode()
    assert get_user_model().objects.count() == 1


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


def test_demo_users_log_in_without_confirming_anything(client, settings):
    settings.DEBUG = True
    call_command("seed_chat_data", "--quiet", stdout=StringIO())

    response = client.post(reverse("login"), {"username": "alice", "password": DEMO_PASSWORD})

    assert response["Location"] == reverse("chat:list")
