"""How the chat answers what it cannot do: pages that say why, never a bare status."""

import re

import pytest
from django.db import connection
from django.urls import reverse

from chat import services
from chat.models import Chat, Message

HTMX = {"HX-Request": "true"}


def main_of(response) -> str:
    """The page's <main>: the navbar differs per person and the CSRF token per request.
    (A project without a 404 template of its own serves Django's, which has no <main>.)"""
    content = response.content.decode()
    found = re.search(r"<main.*?</main>", content, re.S)
    return found.group(0) if found else content


@pytest.mark.parametrize(
    ("leave", "reason"),
    [
        (lambda chat, admin, member: services.remove_member(chat=chat, actor=admin, user=member), "removed you"),
        (lambda chat, admin, member: services.leave_group(chat=chat, user=member), "You left this group"),
    ],
    ids=["removed", "left"],
)
@pytest.mark.parametrize("url_name", ["chat:room", "chat:info", "chat:widget_room"])
def test_a_former_member_is_told_they_are_no_longer_a_member(client, alice, bob, group_chat, url_name, leave, reason):
    leave(group_chat, alice, bob)
    client.force_login(bob)

    response = client.get(reverse(url_name, args=[group_chat.pk]))

    content = response.content.decode()
    assert response.status_code == 404
    assert "You are no longer a member of this chat" in content
    assert reason in content
    assert f'href="{reverse("chat:list")}"' in content
    assert "Book club" not in content  # not even its name, which may have changed since


def test_someone_never_in_the_chat_gets_the_same_404_as_for_a_chat_that_does_not_exist(client, dave, group_chat):
    client.force_login(dave)

    stranger = client.get(reverse("chat:room", args=[group_chat.pk]))
    missing = client.get(reverse("chat:room", args=[999_999]))

    assert stranger.status_code == missing.status_code == 404
    assert main_of(stranger) == main_of(missing)
    assert "no longer a member" not in stranger.content.decode()


def test_a_member_added_back_opens_the_room_again(client, alice, bob, group_chat):
    services.remove_member(chat=group_chat, actor=alice, user=bob)
    services.add_members(chat=group_chat, actor=alice, users=[bob])
    client.force_login(bob)

    assert client.get(reverse("chat:room", args=[group_chat.pk])).status_code == 200


def test_a_former_member_of_a_deleted_group_gets_the_plain_404(client, alice, bob, group_chat):
    url = reverse("chat:room", args=[group_chat.pk])
    services.leave_group(chat=group_chat, user=bob)
    services.delete_group(chat=group_chat, actor=alice)
    client.force_login(bob)

    response = client.get(url)

    assert response.status_code == 404
    assert "no longer a member" not in response.content.decode()


@pytest.mark.parametrize("url_name", ["chat:send", "chat:leave", "chat:delete", "chat:delete_group"])
def test_get_on_a_post_only_address_is_a_405_page_with_a_way_back(alice_client, group_chat, url_name):
    response = alice_client.get(reverse(url_name, args=[group_chat.pk]))

    content = response.content.decode()
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert "not a page you can open" in content
    assert f'href="{reverse("chat:list")}"' in content


def test_a_too_long_group_name_is_an_error_on_the_rename_form(alice_client, group_chat):
    response = alice_client.post(reverse("chat:edit", args=[group_chat.pk]), {"action": "rename", "name": "x" * 101})

    content = response.content.decode()
    assert response.status_code == 400
    assert "Save name" in content  # the edit page with its form, not the error page
    assert "That did not work" not in content
    assert "at most 100 characters" in content
    group_chat.refresh_from_db()
    assert group_chat.name == "Book club"


def test_a_group_name_past_the_column_is_refused_whatever_the_setting(alice_client, alice, bob, settings):
    settings.CHAT_GROUP_NAME_MAX_LENGTH = 500

    response = alice_client.post(reverse("chat:new_group"), {"name": "x" * 150, "members": "bob@example.com"})

    assert response.status_code == 400
    assert "at most 100 characters" in response.content.decode()
    assert not Chat.objects.exists()


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["page", "htmx"])
def test_a_too_long_message_is_refused_whole_never_cut(alice_client, direct_chat, settings, headers):
    settings.CHAT_MAX_MESSAGE_LENGTH = 4000

    response = alice_client.post(reverse("chat:send", args=[direct_chat.pk]), {"body": "x" * 5000}, headers=headers)

    assert response.status_code == 400
    assert "at most 4000 characters; this one has 5000" in response.content.decode()
    assert not Message.objects.exists()


@pytest.mark.parametrize("field", ["body", "client_id"])
def test_a_null_character_is_refused_with_the_forms_error(alice_client, direct_chat, field):
    form = {"body": "hello", "client_id": "c-1"} | {field: "a\x00b"}

    response = alice_client.post(reverse("chat:send", args=[direct_chat.pk]), form, headers=HTMX)

    assert response.status_code == 400
    assert response["HX-Retarget"] == f"#send-error-{direct_chat.pk}"
    assert "Null characters are not allowed." in response.content.decode()
    assert not Message.objects.exists()


def test_line_breaks_count_once_against_the_limit(alice_client, direct_chat, settings):
    """Browsers post a textarea's line breaks as CRLF; the counter on the page counts one."""
    settings.CHAT_MAX_MESSAGE_LENGTH = 10

    response = alice_client.post(reverse("chat:send", args=[direct_chat.pk]), {"body": "ab\r\ncd\r\nef"}, headers=HTMX)

    assert response.status_code == 200
    assert Message.objects.get().body == "ab\ncd\nef"


def test_group_name_fields_have_no_maxlength_that_would_cut_a_paste(alice_client, group_chat):
    for url in (reverse("chat:list"), reverse("chat:edit", args=[group_chat.pk])):
        content = alice_client.get(url).content.decode()
        field = re.search(r'<input[^>]*name="name"[^>]*>', content).group(0)
        assert "maxlength" not in field
        assert 'data-max-length="100"' in field


def test_a_database_error_that_is_not_busy_is_a_500_not_a_busy_page(client, alice, group_chat):
    """A table missing (a `migrate` not run; on SQLite an OperationalError, as a busy
    database is) is a 500, which monitoring sees: a 503 "busy, try again" would never end."""
    client.force_login(alice)
    client.raise_request_exception = False
    with connection.cursor() as cursor:  # undone with the test's transaction
        cursor.execute(f"ALTER TABLE {Message._meta.db_table} RENAME TO chat_message_gone")

    response = client.get(reverse("chat:room", args=[group_chat.pk]))

    assert response.status_code == 500
    assert "Retry-After" not in response
