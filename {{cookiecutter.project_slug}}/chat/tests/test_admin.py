"""The admin lists, filters and searches chats, memberships and messages."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chat import services
from chat.models import Chat, Message


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


def chat_lock_before_any_delete(statements: list[str]) -> str | None:
    """How the first statement locking a chat's row locked it ("FOR UPDATE", "FOR NO KEY
    UPDATE"), if it came before the first DELETE: as every send and change of the chat
    locks it first. None if no lock came first."""
    first_delete = next(i for i, sql in enumerate(statements) if sql.startswith("DELETE"))
    for sql in statements[:first_delete]:
        if 'FROM "chat_chat"' in sql and " FOR " in sql:
            return "FOR " + sql.rpartition(" FOR ")[2]
    return None


@pytest.mark.parametrize("how", ["its page", "the list's action"])
@pytest.mark.parametrize(("model", "lock"), [("chat", "FOR UPDATE"), ("message", "FOR NO KEY UPDATE")])
def test_deletes_from_the_admin_lock_the_chat_before_deleting_anything(admin_client, group_chat, bob, model, lock, how):
    """A chat is locked as its row's deletion locks it; a message's chat as a change locks it."""
    message = services.send_message(chat=group_chat, sender=bob, body="soon gone")
    pk = group_chat.pk if model == "chat" else message.pk
    if how == "its page":
        url, form = reverse(f"admin:chat_{model}_delete", args=[pk]), {"post": "yes"}
    else:
        url = reverse(f"admin:chat_{model}_changelist")
        form = {"action": "delete_selected", "_selected_action": [pk], "post": "yes"}

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.post(url, form)

    assert response.status_code == 302
    if connection.vendor == "postgresql":  # SQLite has no row locks: its one writer takes the turns
        assert chat_lock_before_any_delete([q["sql"] for q in queries.captured_queries]) == lock
    assert not Message.objects.filter(pk=message.pk).exists()
    assert Chat.objects.filter(pk=group_chat.pk).exists() == (model == "message")


def test_a_chat_deleted_from_the_admin_closes_its_rooms_as_a_groups_admin_deleting_it_does(
    admin_client, group_chat, monkeypatch
):
    revoked = []
    monkeypatch.setattr(services, "revoke_access", lambda **access: revoked.append(access))
    admin_client.post(reverse("admin:chat_chat_delete", args=[group_chat.pk]), {"post": "yes"})
    [access] = revoked
    assert (access["chat_id"], access["deleted"]) == (group_chat.pk, True)
    assert len(access["user_ids"]) == 3
