"""The admin lists, filters and searches chats, memberships and messages."""

import pytest
from django.urls import reverse

from chat import services


@pytest.fixture
def admin_client_with_chats(admin_client, alice, bob, direct_chat, group_chat):
    services.send_message(chat=direct_chat, sender=alice, body="hello from alice")
    services.send_message(chat=group_chat, sender=bob, body="hello book club")
    return admin_client


@pytest.mark.parametrize("model", ["chat", "membership", "message"])
@pytest.mark.parametrize("query", ["", "?q=alice", "?q=book", "?q=nothing-matches"])
def test_admin_changelists_search_without_errors(admin_client_with_chats, model, query):
    response = admin_client_with_chats.get(reverse(f"admin:chat_{model}_changelist") + query)

    assert response.status_code == 200


def test_admin_finds_messages_by_body(admin_client_with_chats):
    response = admin_client_with_chats.get(reverse("admin:chat_message_changelist") + "?q=book+club")

    content = response.content.decode()
    assert "hello book club" in content
    assert "hello from alice" not in content


def test_admin_filters_chats_by_kind(admin_client_with_chats, group_chat, direct_chat):
    response = admin_client_with_chats.get(reverse("admin:chat_chat_changelist") + "?kind__exact=group")

    assert list(response.context["cl"].result_list) == [group_chat]


def test_admin_chat_page_shows_its_members_inline(admin_client_with_chats, group_chat):
    response = admin_client_with_chats.get(reverse("admin:chat_chat_change", args=[group_chat.pk]))

    assert response.status_code == 200
    assert response.content.decode().count('name="memberships-') > 3
